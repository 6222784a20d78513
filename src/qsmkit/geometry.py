"""Image geometry: voxel sizes and the B0 direction from an affine, fast FFT padding.

The B0 direction in voxel coordinates is ``R.T @ b0_dir_world`` where ``R`` is the rotation
part of the affine with its columns normalised by the voxel sizes. The scanner's B0 is along
the world z axis (the NIfTI/RAS "S" axis, which is also the DICOM LPS "S" axis). Oblique data
are never resampled; algorithms receive ``b0_dir`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from qsmkit.errors import InputError


def voxel_size_from_affine(affine) -> tuple[float, float, float]:
    """Voxel edge lengths (mm) along the three array axes of a 4x4 affine."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise InputError(f"an affine must be 4x4, got shape {affine.shape}")
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise InputError(f"the affine has zero or invalid voxel sizes {sizes.tolist()}")
    return tuple(float(s) for s in sizes)


def rotation_from_affine(affine) -> np.ndarray:
    """Rotation (3x3, columns are the world directions of the array axes) of an affine."""
    affine = np.asarray(affine, dtype=float)
    return affine[:3, :3] / np.asarray(voxel_size_from_affine(affine))


def b0_dir_from_affine(affine, b0_dir_world: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Unit B0 direction in voxel coordinates: ``R.T @ b0_dir_world``.

    For sheared affines the direction is computed with the inverse of the normalised
    linear part, which equals ``R.T`` for any proper rotation.
    """
    rot = rotation_from_affine(affine)
    world = np.asarray(b0_dir_world, dtype=float)
    world = world / np.linalg.norm(world)
    try:
        direction = np.linalg.solve(rot, world)
    except np.linalg.LinAlgError:
        raise InputError("the affine is singular (its axes are parallel); fix the image "
                         "orientation header") from None
    if not np.all(np.isfinite(direction)) or np.linalg.norm(direction) == 0:
        raise InputError("the affine gives no B0 direction; fix the image orientation header")
    return direction / np.linalg.norm(direction)


def rotation_aligning(b0_dir_voxel: Sequence[float]) -> np.ndarray:
    """A proper rotation ``R`` with ``R.T @ [0, 0, 1] == b0_dir_voxel`` (Rodrigues' formula)."""
    b = np.asarray(b0_dir_voxel, dtype=float)
    norm = np.linalg.norm(b)
    if norm == 0 or not np.isfinite(norm):
        raise InputError(f"b0_dir must be a non-zero finite vector, got {b.tolist()}")
    b = b / norm
    z = np.array([0.0, 0.0, 1.0])
    # R maps b onto z, so R.T maps z back onto b.
    axis = np.cross(b, z)
    s = np.linalg.norm(axis)
    c = float(np.dot(b, z))
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)


def affine_from_geometry(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    b0_dir_voxel: Sequence[float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """An affine for an array of ``shape`` whose B0 direction in voxel coordinates is given.

    The array centre is placed at the world origin. Used by the simulator to write oblique
    acquisitions that readers recover with :func:`b0_dir_from_affine`.
    """
    rot = rotation_aligning(b0_dir_voxel)
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(voxel_size, dtype=float)
    centre = (np.asarray(shape[:3], dtype=float) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def fast_shape(shape: Sequence[int], min_pad: Sequence[int] | int = 0) -> tuple[int, ...]:
    """Smallest FFT-friendly shape at least ``shape + 2*min_pad`` along each axis."""
    pads = np.broadcast_to(np.asarray(min_pad, dtype=int), (len(shape),))
    return tuple(
        int(scipy.fft.next_fast_len(int(n) + 2 * int(p), real=True))
        for n, p in zip(shape, pads, strict=True)
    )


def pad_to(array: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad ``array`` (centred) to ``shape``; returns the padded array and crop slices."""
    before = [(int(t) - n) // 2 for n, t in zip(array.shape, shape, strict=False)]
    widths = [
        (b, int(t) - n - b) for b, n, t in zip(before, array.shape, shape, strict=False)
    ]
    if any(w[0] < 0 or w[1] < 0 for w in widths):
        raise ValueError(f"cannot pad shape {array.shape} to smaller {tuple(shape)}")
    widths += [(0, 0)] * (array.ndim - len(widths))
    crop = tuple(slice(b, b + n) for b, n in zip(before, array.shape, strict=False))
    return np.pad(array, widths), crop


def crop(array: np.ndarray, slices: tuple[slice, ...]) -> np.ndarray:
    """Undo :func:`pad_to`."""
    return array[slices]

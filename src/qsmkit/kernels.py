"""Convolution kernels of QSM in k-space: the unit dipole, spherical mean value, Laplacian.

Every kernel is returned in FFT layout (zero frequency at index 0) for the full grid, or for
the ``scipy.fft.rfftn`` half grid when ``half=True``. Voxel sizes are in mm and may differ
per axis; ``b0_dir`` is a unit vector in voxel coordinates (see :mod:`qsmkit.geometry`).

References
----------
Salomir R, de Senneville BD, Moonen CT. A fast calculation method for magnetic field
inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn Reson
B 2003;19B:26-34 (k-space dipole kernel).
Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of field
inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn Reson B
2005;25B:65-78.
Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain reflects spatial
variation in tissue composition. NeuroImage 2011;55:1645-56 (SMV / SHARP kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft

from qsmkit.errors import InputError

# Relative slack on sphere radii: voxel sizes read from affines carry rounding (5.0000001 mm),
# which must not drop the face neighbours of a sphere whose radius equals the voxel size.
_SLACK = 1.0 + 1e-6


def _check_geometry(shape, voxel_size, b0_dir=None):
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise InputError(f"kernels need a 3D shape, got {tuple(shape)}")
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or np.any(vs <= 0) or not np.all(np.isfinite(vs)):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    if b0_dir is None:
        return vs, None
    b = np.asarray(b0_dir, dtype=float)
    if b.shape != (3,) or not np.all(np.isfinite(b)) or np.linalg.norm(b) == 0:
        raise InputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    return vs, b / np.linalg.norm(b)


def frequency_grid(shape: Sequence[int], voxel_size: Sequence[float], *, half: bool = False):
    """Spatial frequencies (cycles/mm) along each axis, as three broadcastable arrays."""
    vs = np.asarray(voxel_size, dtype=float)
    freqs = [np.fft.fftfreq(int(n), d=d) for n, d in zip(shape[:2], vs[:2], strict=True)]
    last = np.fft.rfftfreq if half else np.fft.fftfreq
    freqs.append(last(int(shape[2]), d=vs[2]))
    return np.meshgrid(*freqs, indexing="ij", sparse=True)


def _wrapped_positions(shape, voxel_size):
    """Signed distances (mm) of each voxel from voxel 0 on the periodic grid."""
    axes = []
    for n, d in zip(shape, voxel_size, strict=True):
        idx = np.arange(int(n))
        idx = np.where(idx > n // 2, idx - n, idx)
        axes.append(idx * float(d))
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _to_kspace(image_kernel, half):
    if half:
        return scipy.fft.rfftn(image_kernel, workers=-1).real
    return scipy.fft.fftn(image_kernel, workers=-1).real


def _cuboid_field_tensor(x, y, z, voxel_size):
    """Field tensor F_ij at offsets (x, y, z) from a uniformly magnetised voxel of unit chi.

    Sums the closed-form corner terms of a rectangular prism (Aharoni A. Demagnetizing
    factors for rectangular ferromagnetic prisms. J Appl Phys 1998;83:3432); field points
    are voxel centres, so no corner coordinate is ever zero. F equals -N (N the
    demagnetisation tensor); far away it tends to the point dipole V(3 r r^T/r^5 - I/r^3)/4pi.
    """
    comps = {key: 0.0 for key in ("xx", "yy", "zz", "xy", "xz", "yz")}
    for i in (0, 1):
        for j in (0, 1):
            for k in (0, 1):
                sign = (-1.0) ** (i + j + k)
                cx = x + (i - 0.5) * voxel_size[0]
                cy = y + (j - 0.5) * voxel_size[1]
                cz = z + (k - 0.5) * voxel_size[2]
                r = np.sqrt(cx * cx + cy * cy + cz * cz)
                comps["xx"] = comps["xx"] + sign * np.arctan(cy * cz / (cx * r))
                comps["yy"] = comps["yy"] + sign * np.arctan(cx * cz / (cy * r))
                comps["zz"] = comps["zz"] + sign * np.arctan(cx * cy / (cz * r))
                comps["xy"] = comps["xy"] - sign * np.log(cz + r)
                comps["xz"] = comps["xz"] - sign * np.log(cy + r)
                comps["yz"] = comps["yz"] - sign * np.log(cx + r)
    return {key: value / (4.0 * np.pi) for key, value in comps.items()}


def _cuboid_dipole_image(shape, voxel_size, b):
    """Image-space unit dipole kernel with Lorentz correction, on the periodic grid.

    Computed on one octant of offsets and mirrored (diagonal terms are even in every
    coordinate, off-diagonal terms odd in their two coordinates), which is 8x cheaper.
    """
    offsets = []
    for n in shape:
        idx = np.arange(int(n))
        offsets.append(np.where(idx > n // 2, idx - n, idx))
    octant = [np.arange(int(n) // 2 + 1) * d for n, d in zip(shape, voxel_size, strict=True)]
    x, y, z = np.meshgrid(*octant, indexing="ij", sparse=True)
    t = _cuboid_field_tensor(x, y, z, voxel_size)
    diagonal = b[0] ** 2 * t["xx"] + b[1] ** 2 * t["yy"] + b[2] ** 2 * t["zz"]
    ax, ay, az = (np.abs(o) for o in offsets)
    sx, sy, sz = (np.sign(o).astype(float) for o in offsets)
    index = np.ix_(ax, ay, az)
    image = diagonal[index]
    image += 2 * b[0] * b[1] * t["xy"][index] * (sx[:, None, None] * sy[None, :, None])
    image += 2 * b[0] * b[2] * t["xz"][index] * (sx[:, None, None] * sz[None, None, :])
    image += 2 * b[1] * b[2] * t["yz"][index] * (sy[None, :, None] * sz[None, None, :])
    image[0, 0, 0] += 1.0 / 3.0  # Lorentz sphere: the voxel's own field vanishes on average
    return image


def dipole_kernel(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    *,
    method: str = "auto",
    half: bool = False,
    dtype=np.float32,
) -> np.ndarray:
    """Unit dipole kernel ``D(k)`` mapping susceptibility (ppm) to relative field (ppm).

    Parameters
    ----------
    shape : 3 ints
        Grid shape (pad beforehand to avoid wrap-around).
    voxel_size : 3 floats, mm
    b0_dir : 3 floats
        B0 direction in voxel coordinates.
    method : {"auto", "kspace", "ispace"}
        ``"auto"`` (default): ``"kspace"`` when B0 lies along an array axis, where the
        sampled continuous kernel is accurate (< 1 % on an analytic sphere), and ``"ispace"``
        when B0 is oblique, where the sampled kernel is discontinuous across the edge of
        k-space and errs by 6-15 % (see tests/test_kernels.py). ``"kspace"``: the continuous
        kernel ``1/3 - (k.b)^2/|k|^2`` sampled on the grid (Salomir 2003, Marques 2005).
        ``"ispace"``: the Fourier transform of the image-space field that a uniformly
        magnetised voxel (a cuboid of the voxel's size) produces at every voxel centre, in
        closed form (the demagnetisation tensor of a rectangular prism,
        Aharoni 1998). It is exact for voxel-constant susceptibility, free of the k-space
        form's aliasing, and correct for anisotropic voxels, where a sampled point dipole is
        not (its lattice sum does not cancel inside a sphere). Both use the Lorentz-sphere
        convention (zero at k = 0).
    half : bool
        Return the ``rfftn`` half grid.
    """
    vs, b = _check_geometry(shape, voxel_size, b0_dir)
    if method == "auto":
        method = "kspace" if is_axis_aligned(b) else "ispace"
    if method == "kspace":
        kx, ky, kz = frequency_grid(shape, vs, half=half)
        k2 = kx**2 + ky**2 + kz**2
        kb = kx * b[0] + ky * b[1] + kz * b[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            kernel = 1.0 / 3.0 - kb**2 / k2
        kernel[0, 0, 0] = 0.0
        return kernel.astype(dtype)
    if method == "ispace":
        kernel = _to_kspace(_cuboid_dipole_image(shape, vs, b), half)
        kernel.flat[0] = 0.0
        return kernel.astype(dtype)
    raise InputError(
        f"unknown dipole kernel method {method!r}; use 'auto', 'kspace' or 'ispace'"
    )


def is_axis_aligned(b0_dir, tol: float = 1e-6) -> bool:
    """True when the unit vector ``b0_dir`` lies along one array axis."""
    b = np.abs(np.asarray(b0_dir, dtype=float))
    return bool(np.count_nonzero(b > tol * b.max()) == 1)


def smv_kernel(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    radius_mm: float,
    *,
    half: bool = False,
    dtype=np.float32,
) -> np.ndarray:
    """k-space of the normalised spherical-mean-value kernel of ``radius_mm``.

    ``S(k)`` is real; ``(1 - S)`` applied to a harmonic field gives zero inside the region
    eroded by the radius (Li 2011).
    """
    vs, _ = _check_geometry(shape, voxel_size)
    if not radius_mm > 0:
        raise InputError(f"SMV radius must be positive, got {radius_mm} mm")
    x, y, z = _wrapped_positions(shape, vs)
    sphere = ((x**2 + y**2 + z**2) <= radius_mm**2 * _SLACK).astype(np.float64)
    sphere /= sphere.sum()
    return _to_kspace(sphere, half).astype(dtype)


def laplacian_kernel(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    *,
    half: bool = False,
    dtype=np.float32,
) -> np.ndarray:
    """k-space of the 7-point discrete Laplacian (1/mm^2), periodic boundaries."""
    vs, _ = _check_geometry(shape, voxel_size)
    grid = frequency_grid(shape, vs, half=half)
    kernel = sum(
        2.0 * (np.cos(2.0 * np.pi * k * d) - 1.0) / d**2 for k, d in zip(grid, vs, strict=True)
    )
    return np.asarray(kernel, dtype=dtype)


def sphere_mask(shape: Sequence[int], voxel_size: Sequence[float], radius_mm: float):
    """Boolean ball of ``radius_mm`` centred on the array (a structuring element)."""
    vs = np.asarray(voxel_size, dtype=float)
    axes = [(np.arange(int(n)) - (int(n) - 1) / 2) * d for n, d in zip(shape, vs, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    return (x**2 + y**2 + z**2) <= radius_mm**2 * _SLACK


def ball(voxel_size: Sequence[float], radius_mm: float) -> np.ndarray:
    """Smallest boolean ball of ``radius_mm`` on an anisotropic grid (structuring element)."""
    vs = np.asarray(voxel_size, dtype=float)
    half_widths = np.floor(radius_mm / vs * _SLACK).astype(int)
    return sphere_mask(tuple(2 * half_widths + 1), vs, radius_mm)

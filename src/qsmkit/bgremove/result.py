"""The result of background field removal, and the input checks every method shares.

Every method of :mod:`qsmkit.bgremove` has the signature
``method(field_hz, mask, voxel_size, *, b0_dir=(0, 0, 1), weight=None, **options)`` and returns a
:class:`BackgroundResult`. The helpers below validate those arguments in one place and crop a
volume to the bounding box of its mask (plus a margin) on an FFT-friendly grid, which is where
every method does its work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from qsmkit.errors import InputError
from qsmkit.geometry import fast_shape, pad_to


@dataclasses.dataclass
class BackgroundResult:
    """Local field after background field removal.

    Attributes
    ----------
    field_hz : (X, Y, Z) float32 ndarray, Hz
        Local (tissue) field; exactly zero outside :attr:`mask`.
    mask : (X, Y, Z) bool ndarray
        Region where ``field_hz`` is valid: the input mask, eroded by methods that lose a
        boundary layer (SHARP family, LBV). Always a subset of the input mask.
    background_hz : (X, Y, Z) float32 ndarray, Hz, or None
        Estimated background field inside the input mask (zero outside) for methods that
        compute it explicitly (PDF, LBV, iSMV); ``None`` otherwise.
    info : dict
        Method name, parameters actually used, iteration counts and convergence details.
    """

    field_hz: np.ndarray
    mask: np.ndarray
    background_hz: np.ndarray | None = None
    info: dict = dataclasses.field(default_factory=dict)


def check_inputs(field_hz, mask, voxel_size, weight=None):
    """Validate the common arguments; returns ``(field float64, mask bool, voxel_size, weight)``.

    ``field_hz`` may hold anything (NaN included) outside ``mask``; it is set to zero there.
    ``weight`` is returned as float64, zero outside the mask and normalised to mean 1 inside,
    or ``None``.
    """
    field = np.asarray(field_hz)
    if field.ndim != 3:
        raise InputError(
            f"background removal needs a 3D field map (X, Y, Z), got shape {field.shape}; "
            "combine echoes into one field map first"
        )
    if not np.issubdtype(field.dtype, np.number) or np.iscomplexobj(field):
        raise InputError(f"field_hz must be real numbers (Hz), got dtype {field.dtype}")
    mask_arr = np.asarray(mask)
    if mask_arr.shape != field.shape:
        raise InputError(f"mask shape {mask_arr.shape} differs from field shape {field.shape}")
    mask_arr = mask_arr.astype(bool) if mask_arr.dtype == bool else mask_arr > 0.5
    if not mask_arr.any():
        raise InputError("the mask is empty; give a brain mask with at least one voxel")
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    field = np.where(mask_arr, field, 0).astype(np.float64)
    if not np.all(np.isfinite(field)):
        raise InputError("field_hz has NaN or Inf values inside the mask; fix or mask them out")
    w = None
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != field.shape:
            raise InputError(f"weight shape {w.shape} differs from field shape {field.shape}")
        w = np.where(mask_arr, w, 0.0)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError("weight must be finite and non-negative inside the mask")
        mean = w[mask_arr].mean()
        if mean <= 0:
            raise InputError("weight is zero everywhere inside the mask")
        w = w / mean
    return field, mask_arr, tuple(float(v) for v in vs), w


def check_b0_dir(b0_dir) -> np.ndarray:
    """Unit B0 direction (voxel coordinates) or :class:`InputError`."""
    b = np.asarray(b0_dir, dtype=float)
    if b.shape != (3,) or not np.all(np.isfinite(b)) or np.linalg.norm(b) == 0:
        raise InputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    return b / np.linalg.norm(b)


def check_positive(value, name: str, *, integer: bool = False) -> float | int:
    """A positive (integer) option or :class:`InputError`."""
    value = value.item() if isinstance(value, np.generic) else value  # no np.float64(...)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0 or (integer and number != int(number)):
        kind = "a positive integer" if integer else "a positive number"
        raise InputError(f"{name} must be {kind}, got {value!r}")
    return int(number) if integer else number


def check_radius(
    radius_mm, voxel_size: Sequence[float], name: str = "radius_mm", *, default: float = 0.0
) -> float:
    """An SMV radius in mm that spans at least one voxel along every axis.

    ``radius_mm=None`` selects ``default``, raised to the largest voxel edge if that is larger.
    """
    if radius_mm is None:
        return max(float(default), max(voxel_size))
    r = check_positive(radius_mm, name)
    if r < max(voxel_size) * (1 - 1e-6):
        raise InputError(
            f"{name}={r:g} mm is smaller than the largest voxel edge {max(voxel_size):g} mm; "
            "the sphere would be flat and would not cancel harmonic fields; use a larger radius"
        )
    return r


class Box:
    """The mask's bounding box plus a margin, zero-padded to an FFT-friendly shape.

    ``Box(mask, margin_vox)`` crops every array to the bounding box of ``mask`` grown by
    ``margin_vox`` voxels per axis (clipped to the array), then zero-pads it, centred, to
    ``fast_shape(cropped, min_pad)`` where ``min_pad`` covers what the margin could not provide
    inside the array. :meth:`put` maps an array of the padded shape back onto the full grid.
    """

    def __init__(self, mask: np.ndarray, margin_vox: Sequence[int], *, extra: int = 0):
        self.full_shape = mask.shape
        margin = np.broadcast_to(np.asarray(margin_vox, dtype=int), (3,))
        idx = np.nonzero(mask)
        lo = [int(i.min()) for i in idx]
        hi = [int(i.max()) + 1 for i in idx]
        self.bbox = tuple(
            slice(max(0, a - m), min(n, b + m))
            for a, b, m, n in zip(lo, hi, margin, mask.shape, strict=True)
        )
        # Padding still needed on each side after cropping: what the array could not give.
        missing = [
            max(m - (a - s.start), m - (s.stop - b), 0)
            for a, b, m, s in zip(lo, hi, margin, self.bbox, strict=True)
        ]
        cropped = tuple(s.stop - s.start for s in self.bbox)
        self.shape = fast_shape(cropped, np.asarray(missing) + int(extra))
        before = [(t - n) // 2 for n, t in zip(cropped, self.shape, strict=True)]
        self.inner = tuple(slice(b, b + n) for b, n in zip(before, cropped, strict=True))

    def take(self, array: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Crop ``array`` to the box and zero-pad it (centred) to :attr:`shape`."""
        padded, _ = pad_to(np.asarray(array, dtype=dtype)[self.bbox], self.shape)
        return padded

    def put(self, padded: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Place the box region of ``padded`` back on a zero array of the full shape."""
        out = np.zeros(self.full_shape, dtype=dtype)
        out[self.bbox] = padded[self.inner]
        return out


def finish(local_hz, out_mask, *, background_hz=None, input_mask=None, info=None):
    """Build a :class:`BackgroundResult`: float32, zero outside the returned mask."""
    out_mask = np.asarray(out_mask, dtype=bool)
    if input_mask is not None:
        out_mask = out_mask & input_mask
    if not out_mask.any():
        raise InputError(
            "no voxel of the mask is left after erosion; use a smaller radius or a larger mask"
        )
    local = np.where(out_mask, local_hz, 0).astype(np.float32)
    background = None
    if background_hz is not None:
        keep = input_mask if input_mask is not None else out_mask
        background = np.where(keep, background_hz, 0).astype(np.float32)
    return BackgroundResult(local, out_mask, background, dict(info or {}))

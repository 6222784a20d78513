"""Input checks shared by the phase unwrappers (private to :mod:`qsmkit.unwrap`)."""

from __future__ import annotations

import numpy as np

from qsmkit.errors import InputError


def check_voxel_size(voxel_size) -> tuple[float, float, float]:
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or np.any(vs <= 0) or not np.all(np.isfinite(vs)):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    return tuple(float(v) for v in vs)


def check_unwrap_inputs(phase_rad, mask, voxel_size, magnitude):
    """Validated ``(phase float32 3D/4D, mask bool 3D, voxel_size, magnitude or None)``."""
    phase = np.asarray(phase_rad, dtype=np.float32)
    if phase.ndim not in (3, 4) or min(phase.shape[:3]) < 1:
        raise InputError(f"phase must be (X, Y, Z) or (X, Y, Z, echo), got shape {phase.shape}")
    if mask is None:
        mask = np.ones(phase.shape[:3], dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.ndim == 4 and mask.shape[3] == 1:
            mask = mask[..., 0]
        if mask.shape != phase.shape[:3]:
            raise InputError(f"mask shape {mask.shape} does not match phase {phase.shape[:3]}")
        mask = mask.astype(bool, copy=False)
    if not np.all(np.isfinite(phase[mask])):
        raise InputError("phase contains NaN or Inf inside the mask")
    vs = check_voxel_size(voxel_size)
    mag = None
    if magnitude is not None:
        mag = np.asarray(magnitude, dtype=np.float32)
        if mag.shape != phase.shape and mag.shape != phase.shape[:3]:
            raise InputError(f"magnitude shape {mag.shape} does not match phase {phase.shape}")
        if not np.all(np.isfinite(mag[mask])) or np.any(mag[mask] < 0):
            raise InputError("magnitude must be finite and non-negative inside the mask")
    return phase, mask, vs, mag


def per_echo(fn, phase, mag):
    """Apply ``fn(phase_3d, mag_3d_or_None)`` to a 3D phase or to each echo of a 4D one."""
    if phase.ndim == 3:
        return fn(phase, mag if mag is None or mag.ndim == 3 else mag[..., 0])
    out = np.empty(phase.shape, dtype=np.float32)
    for e in range(phase.shape[3]):
        m = None if mag is None else (mag if mag.ndim == 3 else mag[..., e])
        out[..., e] = fn(phase[..., e], m)
    return out

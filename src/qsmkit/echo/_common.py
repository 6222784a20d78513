"""Checks and small helpers shared by the multi-echo fits (private to :mod:`qsmkit.echo`)."""

from __future__ import annotations

import numpy as np

from qsmkit.acquisition import check_echo_times as validate_echo_times
from qsmkit.errors import InputError

CHUNK_VOXELS = 1 << 17
"""Voxels processed per vectorised block; bounds the temporary memory of the fits."""


def check_echo_times(echo_times_s, n_echoes: int | None = None, *, min_echoes: int = 1):
    """Echo times as a float64 vector: positive seconds, strictly increasing (see
    :func:`qsmkit.acquisition.check_echo_times`), and at least ``min_echoes`` of them."""
    tes = validate_echo_times(echo_times_s, n_echoes)
    if tes.size < min_echoes:
        raise InputError(f"this method needs at least {min_echoes} echoes, got {tes.size}")
    return tes


def as_echoes(data, name: str) -> np.ndarray:
    """``(X, Y, Z)`` or ``(X, Y, Z, E)`` data as float32 ``(X, Y, Z, E)``, finite."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise InputError(f"{name} must be (X, Y, Z) or (X, Y, Z, echo), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or Inf values; replace them (e.g. by 0)")
    return arr


def check_mask(mask, shape) -> np.ndarray:
    """Boolean mask of spatial ``shape`` (all True when ``mask`` is None)."""
    if mask is None:
        return np.ones(tuple(shape[:3]), dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != tuple(shape[:3]):
        raise InputError(f"mask shape {mask.shape} does not match the data {tuple(shape[:3])}")
    return mask.astype(bool, copy=False)


def is_evenly_spaced(echo_times_s, rel_tol: float = 1e-3) -> bool:
    """True when all echo spacings equal the first one within ``rel_tol``."""
    tes = np.asarray(echo_times_s, dtype=float)
    if tes.size < 3:
        return True
    spacing = np.diff(tes)
    return bool(np.all(np.abs(spacing - spacing[0]) <= rel_tol * spacing[0]))


def wrap_half_open_above(x):
    """Wrap angles into (-pi, pi] (the upper end included, unlike ``units.wrap_phase``)."""
    return np.pi - np.mod(np.pi - np.asarray(x), 2.0 * np.pi)


def scatter(values, mask, fill=0.0, dtype=np.float32) -> np.ndarray:
    """Put per-voxel ``values`` (N,) back on the grid of ``mask``; ``fill`` elsewhere."""
    out = np.full(mask.shape, fill, dtype=dtype)
    out[mask] = values
    return out


def weight_from_noise(noise_std, valid) -> np.ndarray:
    """Data weight ``1/noise_std`` normalised to mean 1 over ``valid`` voxels (N,).

    Voxels with zero estimated noise (noiseless data or an exact fit) are floored at 1e-3 of
    the median positive noise level so that the weight stays finite; invalid voxels get 0.
    """
    noise_std = np.asarray(noise_std, dtype=float)
    weight = np.zeros(noise_std.shape, dtype=float)
    ok = valid & np.isfinite(noise_std)
    if not ok.any():
        return weight.astype(np.float32)
    positive = noise_std[ok & (noise_std > 0)]
    floor = 1e-3 * float(np.median(positive)) if positive.size else 1.0
    weight[ok] = 1.0 / np.maximum(noise_std[ok], floor)
    weight[ok] /= weight[ok].mean()
    return weight.astype(np.float32)


def blocks(n: int, size: int = CHUNK_VOXELS):
    """Slices covering ``range(n)`` in blocks of ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))

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


WEIGHT_CLIP_RELATIVE = (0.1, 2.5)
"""Data weights are clipped to this range times their median in the mask (see
:func:`weight_from_noise`): no voxel counts more than 2.5 median voxels, so the top 1 % of
voxels hold at most about 2.5 % of the total weight, and none less than a tenth of one."""

NOISE_FREE_SNR = 1.0e4
"""Signal-to-noise ratio (RMS magnitude over the robust noise level) above which data are
treated as noise-free: beyond any MRI scan, reached only by simulations (float32 rounding)."""

MISFIT_QUANTILE = 0.99
"""A voxel's own residual replaces the global noise level only when it exceeds this quantile
of the chi-square distribution expected of noise alone (a fit failure, not noise)."""


def _chi2_quantile_over_dof(q: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(q, dof)) / dof


def weight_from_noise(var_unit, sse, dof: int, signal_power, valid) -> np.ndarray:
    """Bounded data weight ``1/sigma_f`` from a robust, global noise level (N,), mean 1.

    The field noise of a voxel is ``sigma_f^2 = var_unit * s^2``: ``var_unit`` (known from
    the magnitudes and echo times: the variance of the fitted field for unit noise) times
    the noise variance ``s^2`` of the data. ``s^2`` is estimated once over all valid voxels
    as the median of the per-voxel ``sse / dof`` divided by the median of chi-square/dof
    (a consistent, outlier-proof estimate for Gaussian noise), not voxel by voxel: with
    three echoes the per-voxel estimate has one degree of freedom, and ``1/sqrt`` of a
    chi-square(1) variable has an infinite mean, so a few voxels with a near-zero residual
    took nearly all of the weight (noise-free data: all of it). A voxel keeps its own
    ``sse / dof`` only where it exceeds the 99th percentile expected of noise
    (:data:`MISFIT_QUANTILE`: flow, motion, wraps between echoes): such voxels are
    down-weighted, none is up-weighted. The result is clipped to
    :data:`WEIGHT_CLIP_RELATIVE` times its median and normalised to mean 1.

    Data with no measurable noise (``sqrt(mean |S|^2 / s^2) > NOISE_FREE_SNR``) get uniform
    weights: with no noise there is nothing to weight by. Without residual degrees of
    freedom (``dof = 0``: two echoes with an offset) the noise cannot be estimated and the
    magnitude-only weight ``1/sqrt(var_unit)`` is used (the same for any noise level).

    Parameters
    ----------
    var_unit : (N,) floats, Hz^2 per unit noise variance
        Variance of the fitted field for unit data noise; ``inf`` where undetermined.
    sse : (N,) floats
        Residual sum of squares of each voxel (same unit as the noise variance).
    dof : int
        Residual degrees of freedom of each voxel (echoes minus fitted parameters).
    signal_power : (N,) floats
        Mean signal power over the echoes, ``mean_j |S_j|^2`` (same unit as ``sse``).
    valid : (N,) bool
        Voxels with a meaningful fit; the others get weight 0.

    Returns
    -------
    (N,) float32, mean 1 over the valid voxels with a finite ``var_unit``.

    References
    ----------
    de Rochefort L, Liu T, Kressler B, et al. Quantitative susceptibility map reconstruction
    from MR phase data using Bayesian regularization. Magn Reson Med 2010;63:194-206 (the
    inverse noise standard deviation of the field as data weight).
    Liu T, Wisnieff C, Lou M, et al. Nonlinear formulation of the magnetic field to source
    relationship for robust quantitative susceptibility mapping. Magn Reson Med
    2013;69:467-476 (field noise from the multi-echo complex fit).
    """
    var_unit = np.asarray(var_unit, dtype=float)
    sse = np.broadcast_to(np.asarray(sse, dtype=float), var_unit.shape)
    power = np.broadcast_to(np.asarray(signal_power, dtype=float), var_unit.shape)
    weight = np.zeros(var_unit.shape, dtype=float)
    ok = np.asarray(valid, dtype=bool) & np.isfinite(var_unit) & (var_unit > 0)
    if not ok.any():
        return weight.astype(np.float32)
    if dof > 0:
        s2_voxel = np.maximum(sse[ok], 0.0) / dof
        s2 = float(np.median(s2_voxel)) / _chi2_quantile_over_dof(0.5, dof)
        if not s2 > float(np.median(power[ok])) / NOISE_FREE_SNR**2:
            weight[ok] = 1.0
            return weight.astype(np.float32)
        misfit = s2_voxel / _chi2_quantile_over_dof(MISFIT_QUANTILE, dof)
        s2_eff = np.maximum(s2, misfit)
    else:
        s2_eff = 1.0
    w = 1.0 / np.sqrt(var_unit[ok] * s2_eff)
    median = float(np.median(w))
    lo, hi = WEIGHT_CLIP_RELATIVE
    w = np.clip(w, lo * median, hi * median)
    weight[ok] = w / w.mean()
    return weight.astype(np.float32)


def blocks(n: int, size: int = CHUNK_VOXELS):
    """Slices covering ``range(n)`` in blocks of ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))

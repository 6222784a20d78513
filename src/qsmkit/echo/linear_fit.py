"""Weighted linear fit of unwrapped phase against echo time, temporal unwrapping, and the
removal of the receive phase offset (MCPC-3D-S).

When every echo is unwrapped (spatially, or echo 1 spatially and the others temporally),
the phase is linear in TE: ``phi_j = phi0 + 2 pi f TE_j``. :func:`linear_fit` solves this
per voxel by weighted least squares with weights ``m_j^2`` (the phase variance of a complex
signal of magnitude ``m`` with Gaussian noise is ``sigma^2 / m^2``), vectorised.

References
----------
Wu B, Li W, Avram AV, Gho SM, Liu C. Fast and tissue-optimized mapping of magnetic
susceptibility and T2* with multi-echo and multi-shot spirals. NeuroImage 2012;59:297-305
(magnitude-weighted linear fit of multi-echo phase).
Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource minimum
spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308 (temporal unwrapping).
Eckstein K, Dymerska B, Bachrata B, et al. Computationally efficient combination of
multi-channel phase data from multi-echo acquisitions (ASPIRE). Magn Reson Med
2018;79:2996-3006 (MCPC-3D-S phase-offset estimation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage

from qsmkit.echo._common import (
    as_echoes,
    check_echo_times,
    check_mask,
    scatter,
    weight_from_noise,
    wrap_half_open_above,
)
from qsmkit.errors import InputError

TWO_PI = 2.0 * np.pi


@dataclasses.dataclass
class LinearFieldFit:
    """Result of :func:`linear_fit` (all maps (X, Y, Z) float32, 0 outside the mask).

    Attributes
    ----------
    field_hz : Hz, the slope of phase over time divided by 2 pi (not wrapped).
    offset_rad : rad, the intercept at TE = 0 (0 when ``fit_offset=False``; not wrapped).
    residual_rad : rad, weighted RMS phase residual ``sqrt(sum w r^2 / sum w)``.
    noise_std_hz : Hz, standard deviation of ``field_hz`` propagated from the residual
        (needs more echoes than parameters; otherwise the magnitude-only value for unit
        phase noise at unit magnitude, a relative map). ``inf`` where all weights are 0.
    weight : bounded inverse field noise, mean 1 in the mask (data weight for inversion): the
        noise level is estimated once over the mask, uniform on noise-free data, clipped to
        0.1-2.5 times its median (see :func:`qsmkit.echo._common.weight_from_noise`).
    """

    field_hz: np.ndarray
    offset_rad: np.ndarray
    residual_rad: np.ndarray
    noise_std_hz: np.ndarray
    weight: np.ndarray

    @property
    def residual(self) -> np.ndarray:
        """The fit residual map of this method: ``residual_rad``."""
        return self.residual_rad


def linear_fit(
    phase_unwrapped_rad,
    echo_times_s,
    *,
    magnitude=None,
    mask=None,
    fit_offset: bool = True,
) -> LinearFieldFit:
    """Weighted least-squares field (and offset) from unwrapped multi-echo phase.

    Parameters
    ----------
    phase_unwrapped_rad : (X, Y, Z, E) array, rad
        Phase unwrapped in space and time (consistent across echoes).
    echo_times_s : (E,) floats, seconds
    magnitude : (X, Y, Z, E) array, optional
        Weights ``magnitude^2`` (default: equal weights).
    mask : (X, Y, Z) bool, optional
    fit_offset : bool
        Fit ``phi0`` as well (default; needs two echoes or more). ``False`` fits a line
        through the origin, right after :func:`remove_phase_offset`.

    Returns
    -------
    LinearFieldFit

    Examples
    --------
    >>> import numpy as np
    >>> tes = np.array([0.005, 0.010, 0.015])
    >>> phase = (0.5 + 2 * np.pi * 80.0 * tes).reshape(1, 1, 1, 3) * np.ones((2, 2, 2, 1))
    >>> fit = linear_fit(phase, tes)
    >>> round(float(fit.field_hz[0, 0, 0]), 4), round(float(fit.offset_rad[0, 0, 0]), 4)
    (80.0, 0.5)
    """
    phase = as_echoes(phase_unwrapped_rad, "phase_unwrapped_rad")
    tes = check_echo_times(echo_times_s, phase.shape[3])
    mask = check_mask(mask, phase.shape)
    if fit_offset and tes.size < 2:
        raise InputError(
            "fitting an offset needs at least two echoes; pass fit_offset=False for one echo"
        )
    if magnitude is None:
        w = np.ones((int(mask.sum()), tes.size))
    else:
        mag = as_echoes(magnitude, "magnitude")
        if mag.shape != phase.shape:
            raise InputError(f"magnitude {mag.shape} and phase {phase.shape} shapes differ")
        w = mag[mask].astype(float) ** 2
    y = phase[mask].astype(float)
    a, b, c = w.sum(axis=1), w @ tes, w @ (tes * tes)
    wy, wty = (w * y).sum(axis=1), (w * y) @ tes
    with np.errstate(divide="ignore", invalid="ignore"):
        if fit_offset:
            det = a * c - b * b
            good = det > 1e-12 * np.maximum(a * c, np.finfo(float).tiny)
            slope = np.where(good, (a * wty - b * wy) / det, 0.0)
            offset = np.where(good, (c * wy - b * wty) / det, 0.0)
            var_slope_unit = np.where(good, a / det, np.inf)
        else:
            good = c > 0
            slope = np.where(good, wty / c, 0.0)
            offset = np.zeros_like(slope)
            var_slope_unit = np.where(good, 1.0 / c, np.inf)
        resid = y - offset[:, None] - slope[:, None] * tes
        wrss = (w * resid**2).sum(axis=1)
        rms = np.where(a > 0, np.sqrt(wrss / a), 0.0)
        dof = tes.size - (2 if fit_offset else 1)
        sigma2 = wrss / dof if dof > 0 else np.ones_like(wrss)
        if dof > 0 and not np.any(sigma2 > 0):
            sigma2 = np.ones_like(wrss)
        noise = np.sqrt(sigma2 * var_slope_unit) / TWO_PI
    return LinearFieldFit(
        field_hz=scatter(slope / TWO_PI, mask),
        offset_rad=scatter(offset, mask),
        residual_rad=scatter(rms, mask),
        noise_std_hz=scatter(noise, mask, fill=np.inf),
        weight=scatter(
            weight_from_noise(var_slope_unit / TWO_PI**2, wrss, max(dof, 0), a / tes.size, good),
            mask,
        ),
    )


def temporal_unwrap(
    phase_rad,
    echo_times_s,
    *,
    offset_rad=0.0,
    magnitude=None,
    mask=None,
) -> np.ndarray:
    """Unwrap echoes 2..E in time against the prediction from the echoes before them.

    Echo 1 must already be unwrapped spatially (ROMEO's template approach: unwrap one echo
    in space, the others voxel by voxel). For echo ``j`` the field is estimated from the
    unwrapped echoes ``1..j-1`` by a (magnitude^2-weighted) line through the known offset,
    ``phi = phi0 + w t``, and ``phi_j`` is moved by the multiple of 2 pi that brings it
    closest to ``phi0 + w TE_j``. For echo 2 this is ROMEO's rounding against the first echo
    scaled by ``TE_2 / TE_1``. A phase offset must be removed first (see
    :func:`remove_phase_offset`) or passed as ``offset_rad``, otherwise the prediction is
    off by ``phi0 (TE_j / TE_1 - 1)``.

    Parameters
    ----------
    phase_rad : (X, Y, Z, E) array, rad; echo 1 unwrapped, the others wrapped or not
    echo_times_s : (E,) floats, seconds
    offset_rad : float or (X, Y, Z) array, rad
        Receive phase offset (phase at TE = 0); default 0.
    magnitude : (X, Y, Z, E) array, optional (weights of the running field estimate)
    mask : (X, Y, Z) bool, optional (outside, the phase is returned unchanged)

    Returns
    -------
    (X, Y, Z, E) float32, rad; ``result - phase_rad`` is an exact multiple of 2 pi.
    """
    phase = as_echoes(phase_rad, "phase_rad")
    tes = check_echo_times(echo_times_s, phase.shape[3])
    mask = check_mask(mask, phase.shape)
    offset = np.broadcast_to(np.asarray(offset_rad, dtype=float), mask.shape)[mask]
    if magnitude is None:
        w = np.ones((offset.size, tes.size))
    else:
        mag = as_echoes(magnitude, "magnitude")
        if mag.shape != phase.shape:
            raise InputError(f"magnitude {mag.shape} and phase {phase.shape} shapes differ")
        w = mag[mask].astype(float) ** 2 + 1e-30
    y = phase[mask].astype(float)
    turns = np.zeros(y.shape)
    for j in range(1, tes.size):
        t = tes[:j]
        unwrapped = y[:, :j] + TWO_PI * turns[:, :j] - offset[:, None]
        omega = (w[:, :j] * unwrapped) @ t / (w[:, :j] @ (t * t))
        prediction = offset + omega * tes[j]
        turns[:, j] = np.round((prediction - y[:, j]) / TWO_PI)
    out = phase.copy()
    out[mask] = (y + TWO_PI * turns).astype(np.float32)
    return out


def remove_phase_offset(
    phase_rad,
    echo_times_s,
    *,
    magnitude=None,
    mask=None,
    voxel_size=(1.0, 1.0, 1.0),
    sigma_mm=(5.0, 5.0, 5.0),
    unwrap: str = "romeo",
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate and remove the receive phase offset from the first two echoes (MCPC-3D-S).

    ``phi0 = phi_1 - TE_1 (phi_2 - phi_1) / (TE_2 - TE_1)`` with the echo difference
    ``phi_2 - phi_1 = angle(S_2 conj(S_1))`` unwrapped spatially (skipped when ``TE_1`` is a
    multiple of the spacing, where the wrapped difference gives the same result modulo 2 pi),
    then smoothed as the complex field ``m_1 exp(i phi0)`` with a Gaussian of standard
    deviation ``sigma_mm``. Eckstein et al. (2018) smooth with 10, 10, 5 voxels at 0.5-1 mm
    resolution; here the width is set in mm (default 5 mm) so that it does not depend on
    the resolution. Smoothing trades noise in the offset for bias where the true offset
    varies faster than ``sigma_mm``. When the difference is unwrapped, its global 2 pi
    multiple is the unwrapper's choice (``romeo``: median in (-pi, pi]), right when the
    median field over the mask is within ``+-1/(2 dTE)``.

    Parameters
    ----------
    phase_rad : (X, Y, Z, E) array, rad, E >= 2
    echo_times_s : (E,) floats, seconds
    magnitude : (X, Y, Z, E) array, optional (weights of the smoothing and the unwrapping)
    mask : (X, Y, Z) bool, optional
    voxel_size : 3 floats, mm (spatial unwrapping and smoothing width)
    sigma_mm : float or 3 floats, Gaussian standard deviation in mm (0 disables smoothing)
    unwrap : name in :data:`qsmkit.unwrap.METHODS` for the echo difference

    Returns
    -------
    phase_corrected_rad : (X, Y, Z, E) float32, wrapped into (-pi, pi]
    offset_rad : (X, Y, Z) float32, the smoothed offset that was removed
    """
    phase = as_echoes(phase_rad, "phase_rad")
    tes = check_echo_times(echo_times_s, phase.shape[3], min_echoes=2)
    mask = check_mask(mask, phase.shape)
    if magnitude is None:
        mag = np.ones(phase.shape[:3] + (2,), dtype=np.float32)
    else:
        mag = as_echoes(magnitude, "magnitude")
        if mag.shape != phase.shape:
            raise InputError(f"magnitude {mag.shape} and phase {phase.shape} shapes differ")
    sigma_mm = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,))
    if np.any(sigma_mm < 0) or not np.all(np.isfinite(sigma_mm)):
        raise InputError(f"sigma_mm must be non-negative, got {sigma_mm.tolist()}")
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or np.any(vs <= 0) or not np.all(np.isfinite(vs)):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    sigma = sigma_mm / vs
    dte = tes[1] - tes[0]
    diff = np.angle(np.exp(1j * (phase[..., 1] - phase[..., 0]))).astype(np.float32)
    ratio = tes[0] / dte
    if abs(ratio - round(ratio)) > 1e-3:
        from qsmkit.unwrap import METHODS

        if unwrap not in METHODS:
            raise InputError(f"unknown unwrapping method {unwrap!r}; use one of {sorted(METHODS)}")
        diff = METHODS[unwrap](
            diff,
            mask=mask,
            voxel_size=voxel_size,
            magnitude=np.sqrt(mag[..., 0] * mag[..., 1]),
        )
    offset = phase[..., 0] - ratio * diff
    z = mag[..., 0] * mask * np.exp(1j * offset)
    if np.any(sigma > 0):
        z = scipy.ndimage.gaussian_filter(z.real, sigma) + 1j * scipy.ndimage.gaussian_filter(
            z.imag, sigma
        )
    offset = np.where(mask, np.angle(z), 0.0).astype(np.float32)
    corrected = wrap_half_open_above(phase - offset[..., None]).astype(np.float32)
    return corrected, offset

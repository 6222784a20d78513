"""Combination of uncombined multi-channel (coil) phase: MCPC-3D-S (Eckstein 2018).

Each receive coil c adds its own phase offset ``theta_c(r)`` (smooth in space, constant over
echo time) to the signal ``m_c exp(i (2 pi f TE + theta_c))``. Summing the coils' complex
signals without removing these offsets lets them cancel one another where coil
sensitivities overlap (open-ended fringes, phase singularities), and the combined phase is no
longer ``2 pi f TE``. MCPC-3D-S estimates each offset from the first two echoes:

1. the Hermitian inner product of echoes 1 and 2 summed over coils,
   ``h = sum_c z_c1* z_c2``, whose phase is ``2 pi f (TE2 - TE1)`` free of every offset;
2. its phase is unwrapped spatially (ROMEO-type region growing,
   :func:`qsmkit.unwrap.region_growing`; the global 2*pi*k chosen so that the
   magnitude-weighted median lies within -pi..pi) and scaled back to the first echo time:
   ``theta_c = angle(z_c1) - TE1 / (TE2 - TE1) * unwrap(angle(h))``;
3. the offsets are smoothed (a Gaussian of ``sigma_mm`` on ``m_c1 exp(i theta_c)``, so
   noise and low-signal voxels do not disturb them: the "S" of MCPC-3D-S);
4. the combined phase of each echo is the angle of ``sum_c m_c z_c exp(-i theta_c)``
   (magnitude-weighted), the combined magnitude the root sum of squares of the coils.

The combined phase is the phase that would have been measured by a coil with no offset:
``2 pi f TE`` (wrapped), with any TE-independent phase (the transmit phase included) removed
along with the coil offsets.

References
----------
.. [1] Eckstein K, Dymerska B, Bachrata B, et al. Computationally efficient combination of
   multi-channel phase data from multi-echo acquisitions (ASPIRE). Magn Reson Med
   2018;79:2996-3006. doi:10.1002/mrm.26963 (MCPC-3D-S and ASPIRE).
.. [2] Roemer PB, Edelstein WA, Hayes CE, Souza SP, Mueller OM. The NMR phased array.
   Magn Reson Med 1990;16:192-225 (root-sum-of-squares magnitude).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from qsmkit.errors import InputError

DEFAULT_SIGMA_MM = 7.0
"""Gaussian smoothing of the coil offsets (mm); the offsets vary over centimetres."""


@dataclasses.dataclass
class CoilCombination:
    """Result of :func:`combine_coils`.

    Attributes
    ----------
    magnitude : (X, Y, Z, E) float32
        Root sum of squares over the coils.
    phase : (X, Y, Z, E) float32, rad in [-pi, pi)
        Combined phase, coil offsets removed.
    offsets_rad : (X, Y, Z, C) float32
        The smoothed phase offset estimated for each coil.
    """

    magnitude: np.ndarray
    phase: np.ndarray
    offsets_rad: np.ndarray


def combine_coils(magnitude, phase, echo_times_s, voxel_size=(1.0, 1.0, 1.0), *,
                  sigma_mm: float = DEFAULT_SIGMA_MM) -> CoilCombination:
    """Combine multi-echo, multi-coil magnitude and phase by MCPC-3D-S.

    Parameters
    ----------
    magnitude : (X, Y, Z, E, C) array
        Magnitude of each echo E and coil C (non-negative, any unit).
    phase : (X, Y, Z, E, C) array, rad
        Wrapped phase of each echo and coil.
    echo_times_s : (E,) seconds, increasing; at least two echoes.
    voxel_size : 3 floats, mm
    sigma_mm : float
        Standard deviation of the Gaussian that smooths the coil offsets (mm).

    Returns
    -------
    CoilCombination

    Raises
    ------
    InputError
        Wrong shapes, a single echo, a non-positive smoothing width.

    References
    ----------
    Eckstein K, et al. Magn Reson Med 2018;79:2996-3006.
    """
    from qsmkit.unwrap import region_growing

    magnitude = np.asarray(magnitude, dtype=np.float32)
    phase = np.asarray(phase, dtype=np.float32)
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    if magnitude.ndim != 5 or phase.shape != magnitude.shape:
        raise InputError(
            f"coil data must be (X, Y, Z, echo, coil) magnitude and phase of one shape, got "
            f"{magnitude.shape} and {phase.shape}"
        )
    n_echoes = magnitude.shape[3]
    if n_echoes < 2 or tes.size != n_echoes:
        raise InputError(
            f"combining {magnitude.shape[4]} coils needs at least two echoes with one echo time "
            f"each (got {n_echoes} echo(es), {tes.size} echo time(s)); combine the coils on "
            "the scanner for single-echo data"
        )
    if not np.isfinite(sigma_mm) or sigma_mm <= 0:
        raise InputError(f"sigma_mm must be a positive number of mm, got {sigma_mm}")
    z1 = magnitude[..., 0, :] * np.exp(1j * phase[..., 0, :]).astype(np.complex64)
    z2 = magnitude[..., 1, :] * np.exp(1j * phase[..., 1, :]).astype(np.complex64)
    hip = np.sum(np.conj(z1) * z2, axis=-1)
    hip_mag = np.abs(hip).astype(np.float32)
    delta = region_growing(np.angle(hip).astype(np.float32), np.sqrt(hip_mag),
                           voxel_size=voxel_size)
    del hip, z2
    # Spatial unwrapping leaves a global 2*pi*k free: take the k that puts the
    # magnitude-weighted median field offset within one cycle of zero (a shimmed scan).
    delta = delta - 2 * np.pi * np.round(_weighted_median(delta, hip_mag) / (2 * np.pi))
    ratio = tes[0] / (tes[1] - tes[0])
    offsets = np.angle(z1 * np.exp(-1j * ratio * delta)[..., None])
    offsets = _smooth_offsets(offsets, magnitude[..., 0, :], voxel_size, sigma_mm)
    rotation = np.exp(-1j * offsets).astype(np.complex64)
    combined = np.sum(
        (magnitude ** 2) * np.exp(1j * phase).astype(np.complex64) * rotation[..., None, :],
        axis=-1,
    )
    rss = np.sqrt(np.sum(magnitude.astype(np.float64) ** 2, axis=-1))
    return CoilCombination(
        magnitude=rss.astype(np.float32),
        phase=np.angle(combined).astype(np.float32),
        offsets_rad=offsets.astype(np.float32),
    )


def _weighted_median(values, weights) -> float:
    order = np.argsort(values, axis=None)
    cumulative = np.cumsum(weights.ravel()[order], dtype=np.float64)
    if cumulative[-1] <= 0:
        return float(np.median(values))
    return float(values.ravel()[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _smooth_offsets(offsets, weight, voxel_size, sigma_mm) -> np.ndarray:
    """Magnitude-weighted Gaussian smoothing of phase offsets (X, Y, Z, C) on the circle."""
    sigma = [sigma_mm / float(v) for v in voxel_size] + [0.0]
    field = weight * np.exp(1j * offsets)
    smooth = (ndimage.gaussian_filter(field.real, sigma, mode="nearest")
              + 1j * ndimage.gaussian_filter(field.imag, sigma, mode="nearest"))
    return np.angle(smooth)

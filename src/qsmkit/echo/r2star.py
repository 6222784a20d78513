"""The R2*/T2* fit result shared by the mono-exponential fits, and their common checks.

Every R2* method fits ``|S(TE)| = S0 exp(-R2* TE)`` per voxel and returns an
:class:`R2starFit`. Values are clipped to a physical range so that maps hold no NaN or Inf:

* ``r2star_per_s`` is clipped to ``[0, r2star_max_per_s]`` (default 2000 1/s, above the
  R2* of severe liver iron overload at 1.5 T; raise it for 3 T body imaging with very short
  echoes). A rising signal (negative fitted R2*) becomes 0.
* ``t2star_s = 1 / max(R2*, 1 / T2STAR_MAX_S)`` so T2* lies in ``[1/r2star_max, 1 s]``; a
  voxel without measurable decay reads 1 s (T2* of pure water is ~2-3 s at 3 T, beyond what
  echo times of tens of ms can resolve).
* ``s0`` is the least-squares amplitude for the reported (clipped) R2*,
  ``sum S_j e_j / sum e_j^2`` with ``e_j = exp(-R2* TE_j)``, never negative.

Voxels outside the mask are 0 in every map.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.echo._common import as_echoes, check_echo_times, check_mask, scatter
from qsmkit.errors import InputError

R2STAR_MAX_PER_S = 2000.0
"""Default upper clip of R2* (1/s)."""

T2STAR_MAX_S = 1.0
"""Longest reported T2* (s); R2* below ``1/T2STAR_MAX_S`` maps to this T2*."""


@dataclasses.dataclass
class R2starFit:
    """Mono-exponential decay maps, (X, Y, Z) float32, 0 outside ``mask``.

    Attributes
    ----------
    r2star_per_s : R2* (1/s), clipped to ``[0, r2star_max_per_s]``
    s0 : signal at TE = 0 (units of the magnitude)
    mask : bool, the fitted voxels
    """

    r2star_per_s: np.ndarray
    s0: np.ndarray
    mask: np.ndarray

    @property
    def t2star_s(self) -> np.ndarray:
        """T2* (s) = 1/R2*, at most :data:`T2STAR_MAX_S`; 0 outside the mask."""
        r2 = np.maximum(self.r2star_per_s, np.float32(1.0 / T2STAR_MAX_S))
        return np.where(self.mask, 1.0 / r2, 0.0).astype(np.float32)


def prepare(magnitude, echo_times_s, mask, *, min_echoes: int = 2):
    """Validated ``(magnitudes (N, E) float64, echo times, mask)`` of the voxels to fit."""
    mag = as_echoes(magnitude, "magnitude")
    tes = check_echo_times(echo_times_s, mag.shape[3])
    if tes.size < min_echoes:
        raise InputError(
            f"R2* needs at least {min_echoes} echoes, got {tes.size}; acquire a multi-echo "
            "series or use a different method"
        )
    if np.any(mag < 0):
        raise InputError("magnitude has negative values; pass |S| (the modulus)")
    mask = check_mask(mask, mag.shape)
    return mag[mask].astype(float), tes, mask


def finish(r2star, y, tes, mask, r2star_max_per_s) -> R2starFit:
    """Clip R2* (NaN -> 0), fit S0 by least squares for it, put both back on the grid."""
    if not r2star_max_per_s > 0:
        raise InputError(f"r2star_max_per_s must be positive, got {r2star_max_per_s}")
    r2 = np.clip(
        np.nan_to_num(r2star, nan=0.0, posinf=r2star_max_per_s, neginf=0.0), 0.0, r2star_max_per_s
    )
    decay = np.exp(-r2[:, None] * tes)
    s0 = (y * decay).sum(axis=1) / (decay * decay).sum(axis=1)
    s0 = np.maximum(np.nan_to_num(s0, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    return R2starFit(r2star_per_s=scatter(r2, mask), s0=scatter(s0, mask), mask=mask)

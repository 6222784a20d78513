"""R2* by a weighted log-linear fit: ``log S_j = log S0 - R2* TE_j``.

The variance of ``log |S|`` at high SNR is ``sigma^2 / S^2``, so each echo is weighted by
``S_j^2`` (the weighted least squares of e.g. Bevington & Robinson; for R2* mapping the
standard choice, see Chavhan et al. 2009). Echoes with zero magnitude get zero weight. Fast
and closed form, but biased where late echoes reach the noise floor; prefer
:func:`qsmkit.echo.nonlinear.r2star_nonlinear` when that matters.

References
----------
Chavhan GB, Babyn PS, Thomas B, Shroff MM, Haacke EM. Principles, techniques, and
applications of T2*-based MR imaging and its special applications. RadioGraphics
2009;29:1433-1449.
"""

from __future__ import annotations

import numpy as np

from qsmkit.echo._common import blocks
from qsmkit.echo.r2star import R2STAR_MAX_PER_S, R2starFit, finish, prepare


def r2star_loglinear(
    magnitude,
    echo_times_s,
    *,
    mask=None,
    r2star_max_per_s: float = R2STAR_MAX_PER_S,
) -> R2starFit:
    """Weighted (``S^2``) log-linear mono-exponential fit, vectorised over voxels.

    Parameters
    ----------
    magnitude : (X, Y, Z, E) array, non-negative, E >= 2
    echo_times_s : (E,) floats, seconds
    mask : (X, Y, Z) bool, optional
    r2star_max_per_s : float
        Upper clip of R2* (default 2000 1/s); see :mod:`qsmkit.echo.r2star` for clipping.

    Returns
    -------
    R2starFit

    Examples
    --------
    >>> import numpy as np
    >>> tes = np.array([0.005, 0.010, 0.015, 0.020])
    >>> mag = 100 * np.exp(-30.0 * tes) * np.ones((2, 2, 2, 1))
    >>> fit = r2star_loglinear(mag, tes)
    >>> round(float(fit.r2star_per_s[0, 0, 0]), 3), round(float(fit.s0[0, 0, 0]), 3)
    (30.0, 100.0)
    """
    y, tes, mask = prepare(magnitude, echo_times_s, mask)
    r2 = np.zeros(y.shape[0])
    for sl in blocks(y.shape[0]):
        s = y[sl]
        w = s * s
        logs = np.log(np.where(s > 0, s, 1.0))
        a, b, c = w.sum(axis=1), w @ tes, w @ (tes * tes)
        wl, wtl = (w * logs).sum(axis=1), (w * logs) @ tes
        det = a * c - b * b
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(det > 1e-12 * a * c, (a * wtl - b * wl) / det, 0.0)
        r2[sl] = -slope
    return finish(r2, y, tes, mask, r2star_max_per_s)

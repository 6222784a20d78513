"""R2* by a nonlinear least-squares mono-exponential fit (Levenberg-Marquardt).

Minimises ``sum_j (S_j - S0 exp(-R2* TE_j))^2`` per voxel, the maximum-likelihood fit for
Gaussian noise on the magnitude (valid above SNR ~3; the Rician noise floor is not
modelled). Started from the weighted log-linear fit, each iteration solves the damped 2x2
normal equations of all active voxels at once; the damping follows Marquardt's rule
(divide by 10 on success, multiply by 10 on failure).

References
----------
Marquardt DW. An algorithm for least-squares estimation of nonlinear parameters. J Soc Ind
Appl Math 1963;11:431-441.
Pei M, et al. Magn Reson Med 2015;73:843-850 (nonlinear fit as the R2* reference).
"""

from __future__ import annotations

import numpy as np

from qsmkit.echo._common import blocks
from qsmkit.echo.loglinear import r2star_loglinear
from qsmkit.echo.r2star import R2STAR_MAX_PER_S, R2starFit, finish, prepare
from qsmkit.errors import InputError


def r2star_nonlinear(
    magnitude,
    echo_times_s,
    *,
    mask=None,
    r2star_max_per_s: float = R2STAR_MAX_PER_S,
    max_iter: int = 50,
    tol: float = 1e-6,
) -> R2starFit:
    """Levenberg-Marquardt fit of ``S0 exp(-R2* TE)``, vectorised over voxels.

    Parameters
    ----------
    magnitude : (X, Y, Z, E) array, non-negative, E >= 2
    echo_times_s : (E,) floats, seconds
    mask : (X, Y, Z) bool, optional
    r2star_max_per_s : float
        Upper clip of R2* (default 2000 1/s); see :mod:`qsmkit.echo.r2star`.
    max_iter : int
        Iterations at most (default 50).
    tol : float
        A voxel stops when its relative cost decrease falls below ``tol`` (default 1e-6).

    Returns
    -------
    R2starFit

    Examples
    --------
    >>> import numpy as np
    >>> tes = np.array([0.003, 0.009, 0.020, 0.035])
    >>> mag = 80 * np.exp(-40.0 * tes) * np.ones((2, 2, 2, 1))
    >>> round(float(r2star_nonlinear(mag, tes).r2star_per_s[0, 0, 0]), 3)
    40.0
    """
    if int(max_iter) < 1:
        raise InputError(f"max_iter must be at least 1, got {max_iter}")
    y, tes, mask = prepare(magnitude, echo_times_s, mask)
    start = r2star_loglinear(magnitude, echo_times_s, mask=mask, r2star_max_per_s=r2star_max_per_s)
    r2 = start.r2star_per_s[mask].astype(float)
    s0 = start.s0[mask].astype(float)
    r_lo, r_hi = -r2star_max_per_s, 10.0 * r2star_max_per_s
    for sl in blocks(y.shape[0]):
        r2[sl], s0[sl] = _levenberg_marquardt(
            y[sl], tes, r2[sl], s0[sl], r_lo, r_hi, int(max_iter), float(tol)
        )
    return finish(r2, y, tes, mask, r2star_max_per_s)


def _cost(y, tes, r2, s0):
    return ((y - s0[:, None] * np.exp(-r2[:, None] * tes)) ** 2).sum(axis=1)


def _levenberg_marquardt(y, tes, r2, s0, r_lo, r_hi, max_iter, tol):
    r2, s0 = r2.copy(), s0.copy()
    lam = np.full(r2.shape, 1e-3)
    cost = _cost(y, tes, r2, s0)
    active = cost > 0
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        e = np.exp(-r2[idx, None] * tes)
        model = s0[idx, None] * e
        res = y[idx] - model
        j_s = e
        j_r = -tes * model
        a11, a12, a22 = (j_s * j_s).sum(1), (j_s * j_r).sum(1), (j_r * j_r).sum(1)
        g1, g2 = (j_s * res).sum(1), (j_r * res).sum(1)
        d11, d22 = a11 * (1 + lam[idx]), a22 * (1 + lam[idx])
        det = d11 * d22 - a12 * a12
        ok = det > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ds = np.where(ok, (d22 * g1 - a12 * g2) / det, 0.0)
            dr = np.where(ok, (d11 * g2 - a12 * g1) / det, 0.0)
        new_s0 = np.maximum(s0[idx] + ds, 0.0)
        new_r2 = np.clip(r2[idx] + dr, r_lo, r_hi)
        new_cost = _cost(y[idx], tes, new_r2, new_s0)
        better = ok & (new_cost < cost[idx])
        gain = np.where(better, (cost[idx] - new_cost) / np.maximum(cost[idx], 1e-300), 0.0)
        take = idx[better]
        s0[take], r2[take], cost[take] = new_s0[better], new_r2[better], new_cost[better]
        lam[idx] = np.where(better, lam[idx] / 10.0, lam[idx] * 10.0)
        done = (better & (gain < tol)) | (lam[idx] > 1e10) | ~ok
        active[idx[done]] = False
    return r2, s0

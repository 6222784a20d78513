"""Scaled-form ADMM for ``min_x f(x) + sum_i g_i(A_i x)``; knows nothing of QSM.

Each constraint ``z_i = A_i x`` carries a penalty ``rho_i`` that lives inside the caller's
``x_update`` and proximal steps; the solver owns the split variables ``z_i``, the scaled
duals ``u_i`` and the targets ``z_i - u_i`` handed to the x-step, all as preallocated arrays of
any shape (float32 storage, no flattening).

One iteration (Boyd et al. 2011, section 3.1.1, scaled form)::

    x      <- argmin_x f(x) + sum_i rho_i/2 ||A_i x - (z_i - u_i)||^2     (x_update)
    z_i    <- prox_{g_i / rho_i}(A_i x + u_i)                             (prox_i)
    u_i    <- u_i + A_i x - z_i

The iteration stops when ``||x_k - x_{k-1}|| <= tol ||x_k||``.

References
----------
Boyd S, Parikh N, Chu E, Peleato B, Eckstein J. Distributed optimization and statistical
learning via the alternating direction method of multipliers. Found Trends Mach Learn
2011;3:1-122.
Goldstein T, Osher S. The split Bregman method for L1-regularized problems. SIAM J Imaging
Sci 2009;2:323-343.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from qsmkit.progress import iterations


class Prox:
    """A proximal step ``out <- prox(v)`` for one constraint.

    Subclasses implement :meth:`apply`. Those that can fuse the whole ADMM bookkeeping of a
    constraint into one pass over memory override :meth:`step`.
    """

    def apply(self, v: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError  # abstract

    def step(self, ax: np.ndarray, z: np.ndarray, u: np.ndarray, t: np.ndarray) -> None:
        """``v = u + ax; z = prox(v); u = v - z; t = z - u`` (in place)."""
        u += ax
        self.apply(u, z)
        u -= z
        np.subtract(z, u, out=t)


def _norm_sq(x: np.ndarray) -> float:
    return float(np.vdot(x.ravel(), x.ravel()).real)


def admm(
    x_update: Callable[[list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]],
    proxes: Sequence[Prox],
    x0: np.ndarray,
    z0: Sequence[np.ndarray],
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    min_iter: int = 1,
    relaxation: float = 1.0,
    adapt: Callable[[float], None] | None = None,
    adapt_tau: float = 0.7,
    adapt_gamma: float = 5.0,
    callback: Callable[[int, np.ndarray, float], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Run ADMM from ``x0`` and split variables ``z0``; returns ``(x, iterations)``.

    Parameters
    ----------
    x_update : callable
        ``x_update(targets) -> (x, [A_i x])`` solving the x-subproblem for the targets
        ``z_i - u_i``. It may return arrays it reuses between calls, but ``x`` must not alias
        the previous ``x``.
    proxes : sequence of :class:`Prox`
        One proximal step per constraint.
    x0 : ndarray
        Starting point (only used for the first relative change).
    z0 : sequence of ndarrays
        Starting split variables (``A_i x0`` or a better guess, e.g. the data for a data
        term); the scaled duals start at zero, so the first x-update aims at ``z0``.
    tol, max_iter, min_iter
        Stop on relative change of ``x`` below ``tol`` (not before ``min_iter``).
    relaxation : float, default 1
        Over-relaxation ``alpha`` in [1, 1.8] (Boyd 2011, section 3.4.3): the split and dual
        steps use ``alpha A_i x + (1 - alpha) z_i`` instead of ``A_i x``.
    adapt : callable, optional
        Residual balancing (He, Yang, Wang 2000 as used by Kames 2018): when the primal
        residual ``sum ||A_i x - z_i||`` fails to fall below ``adapt_tau`` times its previous
        value, ``adapt(adapt_gamma)`` is called (the caller multiplies every ``rho_i`` by the
        factor and updates its proximal thresholds) and the scaled duals are divided by it.
    callback : callable, optional
        ``callback(iteration, x, relative_change)`` after each x-update.
    """
    if len(proxes) != len(z0):
        raise ValueError("need one prox per constraint")
    x = x0
    zs = [np.array(a, copy=True) for a in z0]
    us = [np.zeros_like(a) for a in z0]
    ts = [np.array(a, copy=True) for a in z0]
    residual = math.inf
    it = 0
    for it in iterations(max_iter, "ADMM"):
        x_new, axs = x_update(ts)
        num = _norm_sq(x_new - x) if x_new.shape == x.shape else math.inf
        den = _norm_sq(x_new)
        change = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)
        x = x_new
        if callback is not None:
            callback(it, x, change)
        if it >= min_iter and change <= tol:
            break
        if relaxation != 1.0:
            for ax, z in zip(axs, zs, strict=True):
                ax *= np.float32(relaxation)
                ax += np.float32(1.0 - relaxation) * z
        for prox, ax, z, u, t in zip(proxes, axs, zs, us, ts, strict=True):
            prox.step(ax, z, u, t)
        if adapt is not None:
            new_residual = 0.0
            for ax, z in zip(axs, zs, strict=True):
                new_residual += math.sqrt(_norm_sq(ax - z))
            if new_residual > adapt_tau * residual:
                adapt(adapt_gamma)
                scale = np.float32(1.0 / adapt_gamma)
                for z, u, t in zip(zs, us, ts, strict=True):
                    u *= scale
                    np.subtract(z, u, out=t)
            residual = new_residual
    return x, it

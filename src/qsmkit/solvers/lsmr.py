"""LSQR and LSMR for ``min ||A x - b||`` on arrays of any shape; know nothing of QSM.

Both run Golub-Kahan bidiagonalisation with callables for ``A`` and ``A^H``; vectors keep the
caller's shape and dtype (float32 or complex64 storage), scalars are float64. Unlike
``scipy.sparse.linalg.lsqr/lsmr`` nothing is flattened or up-cast, and complex data (for
example diagonal operators applied in k-space) work unchanged.

Stopping rules (Paige & Saunders 1982; Fong & Saunders 2011)::

    ||r||     <= btol ||b|| + atol ||A|| ||x||        (compatible systems)
    ||A^H r|| <= atol ||A|| ||r||                     (least-squares systems)

References
----------
Paige CC, Saunders MA. LSQR: an algorithm for sparse linear equations and sparse least
squares. ACM Trans Math Softw 1982;8:43-71.
Fong DCL, Saunders MA. LSMR: an iterative algorithm for sparse least-squares problems. SIAM J
Sci Comput 2011;33:2950-2971.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _norm(x: np.ndarray) -> float:
    return math.sqrt(float(np.vdot(x.ravel(), x.ravel()).real))


def _scale(x: np.ndarray, s: float) -> None:
    x *= x.real.dtype.type(s)


def _axpy(y: np.ndarray, a: float, x: np.ndarray) -> None:
    """``y += a x`` in place."""
    y += x.real.dtype.type(a) * x



def _bidiagonalisation_start(apply_ah, b):
    """First Golub-Kahan step shared by LSQR and LSMR: ``beta u = b``, ``alpha v = A^H u``.

    ``alpha`` is 0 when ``b`` or ``A^H b`` vanishes (then ``x = 0`` is the solution).
    """
    u = np.array(b, copy=True)
    beta = _norm(u)
    if beta == 0:
        return u, np.zeros_like(apply_ah(u)), 0.0, 0.0
    _scale(u, 1.0 / beta)
    v = apply_ah(u)
    alpha = _norm(v)
    if alpha != 0:
        _scale(v, 1.0 / alpha)
    return u, v, alpha, beta

def lsqr(
    apply_a: Callable[[np.ndarray], np.ndarray],
    apply_ah: Callable[[np.ndarray], np.ndarray],
    b: np.ndarray,
    *,
    atol: float = 1e-6,
    btol: float = 1e-6,
    max_iter: int = 100,
) -> tuple[np.ndarray, int]:
    """LSQR: returns ``(x, iterations)`` for ``min ||A x - b||_2``, starting from ``x = 0``."""
    u, v, alpha, beta = _bidiagonalisation_start(apply_ah, b)
    x = np.zeros_like(v)
    if alpha == 0:
        return x, 0
    w = v.copy()
    phibar, rhobar = beta, alpha
    bnorm = beta
    anorm_sq = 0.0
    it = 0
    while it < max_iter:
        it += 1
        u_new = apply_a(v)
        _axpy(u_new, -alpha, u)
        u = u_new
        beta = _norm(u)
        if beta > 0:
            _scale(u, 1.0 / beta)
        anorm_sq += alpha * alpha + beta * beta
        v_new = apply_ah(u)
        _axpy(v_new, -beta, v)
        v = v_new
        alpha = _norm(v)
        if alpha > 0:
            _scale(v, 1.0 / alpha)
        rho = math.hypot(rhobar, beta)
        c, s = rhobar / rho, beta / rho
        theta = s * alpha
        rhobar = -c * alpha
        phi = c * phibar
        phibar = s * phibar
        _axpy(x, phi / rho, w)
        _scale(w, -theta / rho)
        w += v
        anorm = math.sqrt(anorm_sq)
        normr = phibar
        norm_ar = phibar * alpha * abs(c)
        if normr <= btol * bnorm + atol * anorm * _norm(x):
            break
        if norm_ar <= atol * anorm * normr:
            break
        if alpha == 0 or beta == 0:
            break
    return x, it


def lsmr(
    apply_a: Callable[[np.ndarray], np.ndarray],
    apply_ah: Callable[[np.ndarray], np.ndarray],
    b: np.ndarray,
    *,
    damp: float = 0.0,
    atol: float = 1e-6,
    btol: float = 1e-6,
    max_iter: int = 100,
) -> tuple[np.ndarray, int]:
    """LSMR: returns ``(x, iterations)`` for ``min ||A x - b||^2 + damp^2 ||x||^2``."""
    u, v, alpha, beta = _bidiagonalisation_start(apply_ah, b)
    x = np.zeros_like(v)
    if alpha == 0:
        return x, 0

    alphabar, zetabar = alpha, alpha * beta
    rho, rhobar, cbar, sbar = 1.0, 1.0, 1.0, 0.0
    h = v.copy()
    hbar = np.zeros_like(v)
    # quantities for the estimate of ||r||
    betadd, betad = beta, 0.0
    rhodold, tautildeold, thetatilde, zeta, d = 1.0, 0.0, 0.0, 0.0, 0.0
    normb = beta
    anorm_sq = alpha * alpha
    it = 0
    while it < max_iter:
        it += 1
        u_new = apply_a(v)
        _axpy(u_new, -alpha, u)
        u = u_new
        beta = _norm(u)
        if beta > 0:
            _scale(u, 1.0 / beta)
        v_new = apply_ah(u)
        _axpy(v_new, -beta, v)
        v = v_new
        alpha = _norm(v)
        if alpha > 0:
            _scale(v, 1.0 / alpha)

        # rotation eliminating the damping term
        alphahat = math.hypot(alphabar, damp)
        chat, shat = alphabar / alphahat, damp / alphahat
        # rotation P_k
        rhoold = rho
        rho = math.hypot(alphahat, beta)
        c, s = alphahat / rho, beta / rho
        thetanew = s * alpha
        alphabar = c * alpha
        # rotation Pbar_k
        rhobarold, zetaold = rhobar, zeta
        thetabar = sbar * rho
        rhotemp = cbar * rho
        rhobar = math.hypot(rhotemp, thetanew)
        cbar, sbar = rhotemp / rhobar, thetanew / rhobar
        zeta = cbar * zetabar
        zetabar = -sbar * zetabar
        # update h, hbar, x
        _scale(hbar, -thetabar * rho / (rhoold * rhobarold))
        hbar += h
        _axpy(x, zeta / (rho * rhobar), hbar)
        _scale(h, -thetanew / rho)
        h += v

        # estimate ||r||
        betaacute = chat * betadd
        betacheck = -shat * betadd
        betahat = c * betaacute
        betadd = -s * betaacute
        thetatildeold = thetatilde
        rhotildeold = math.hypot(rhodold, thetabar)
        ctildeold, stildeold = rhodold / rhotildeold, thetabar / rhotildeold
        thetatilde = stildeold * rhobar
        rhodold = ctildeold * rhobar
        betad = -stildeold * betad + ctildeold * betahat
        tautildeold = (zetaold - thetatildeold * tautildeold) / rhotildeold
        taud = (zeta - thetatilde * tautildeold) / rhodold
        d += betacheck * betacheck
        normr = math.sqrt(d + (betad - taud) ** 2 + betadd * betadd)

        anorm_sq += beta * beta
        anorm = math.sqrt(anorm_sq)
        anorm_sq += alpha * alpha
        norm_ar = abs(zetabar)
        if normr <= btol * normb + atol * anorm * _norm(x):
            break
        if norm_ar <= atol * anorm * normr:
            break
        if alpha == 0 or beta == 0:
            break
    return x, it

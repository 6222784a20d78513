"""Conjugate gradients for symmetric positive (semi-)definite systems ``A x = b``.

Written for arrays of any shape (no flattening) and float32 storage, which SciPy's ``cg``
does not offer; accumulations are done in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qsmkit.progress import iterations


def _dot(a, b) -> float:
    return float(np.vdot(a.ravel(), b.ravel()).real)


def cg(
    apply_a: Callable[[np.ndarray], np.ndarray],
    b: np.ndarray,
    x0: np.ndarray | None = None,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    precondition: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Solve ``apply_a(x) = b``; stop when ``|r| <= tol |b|``. Returns (x, iterations).

    ``precondition`` applies an SPD approximation of ``A^-1`` (preconditioned CG).
    """
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=b.dtype, copy=True)
    r = b - apply_a(x) if x0 is not None else b.copy()
    z = precondition(r) if precondition else r
    p = z.copy()
    rz = _dot(r, z)
    b_norm = np.sqrt(_dot(b, b))
    if b_norm == 0:
        return x, 0
    for it in iterations(max_iter, "CG"):
        ap = apply_a(p)
        pap = _dot(p, ap)
        if pap <= 0:
            return x, it - 1
        alpha = rz / pap
        x += b.dtype.type(alpha) * p
        r -= b.dtype.type(alpha) * ap
        if np.sqrt(_dot(r, r)) <= tol * b_norm:
            return x, it
        z = precondition(r) if precondition else r
        rz_new = _dot(r, z)
        p *= b.dtype.type(rz_new / rz)
        p += z
        rz = rz_new
    return x, max_iter

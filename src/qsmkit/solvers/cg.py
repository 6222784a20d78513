"""Conjugate gradients for symmetric positive (semi-)definite systems ``A x = b``.

Written for arrays of any shape (no flattening) and float32 storage, which SciPy's ``cg``
does not offer; accumulations are done in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _dot(a, b) -> float:
    return float(np.vdot(a.ravel(), b.ravel()).real)


def cg(
    apply_a: Callable[[np.ndarray], np.ndarray],
    b: np.ndarray,
    x0: np.ndarray | None = None,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> tuple[np.ndarray, int]:
    """Solve ``apply_a(x) = b``; stop when ``|r| <= tol |b|``. Returns (x, iterations)."""
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=b.dtype, copy=True)
    r = b - apply_a(x) if x0 is not None else b.copy()
    p = r.copy()
    rr = _dot(r, r)
    b_norm = np.sqrt(_dot(b, b))
    if b_norm == 0:
        return x, 0
    for it in range(1, max_iter + 1):
        ap = apply_a(p)
        pap = _dot(p, ap)
        if pap <= 0:
            return x, it - 1
        alpha = rr / pap
        x += b.dtype.type(alpha) * p
        r -= b.dtype.type(alpha) * ap
        rr_new = _dot(r, r)
        if np.sqrt(rr_new) <= tol * b_norm:
            return x, it
        p *= b.dtype.type(rr_new / rr)
        p += r
        rr = rr_new
    return x, max_iter

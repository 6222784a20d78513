"""Forward-difference gradient with Neumann boundaries, and its adjoint (minus divergence)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qsmkit.ops.base import LinearOperator


def forward_gradient(x: np.ndarray, voxel_size: Sequence[float]) -> np.ndarray:
    """Forward differences along x, y, z (1/mm), zero at the far edge; shape (3, X, Y, Z)."""
    out = np.zeros((3, *x.shape), dtype=x.dtype)
    for axis in range(3):
        lead = [slice(None)] * 3
        lag = [slice(None)] * 3
        lead[axis] = slice(1, None)
        lag[axis] = slice(None, -1)
        np.subtract(x[tuple(lead)], x[tuple(lag)], out=out[axis][tuple(lag)])
        out[axis] *= x.dtype.type(1.0 / voxel_size[axis])
    return out


def adjoint_gradient(g: np.ndarray, voxel_size: Sequence[float]) -> np.ndarray:
    """Adjoint of :func:`forward_gradient` (the negative backward divergence)."""
    out = np.zeros(g.shape[1:], dtype=g.dtype)
    for axis in range(3):
        comp = g[axis] * g.dtype.type(1.0 / voxel_size[axis])
        first = [slice(None)] * 3
        first[axis] = slice(0, -1)
        second = [slice(None)] * 3
        second[axis] = slice(1, None)
        out[tuple(first)] -= comp[tuple(first)]
        out[tuple(second)] += comp[tuple(first)]
    return out


class Gradient(LinearOperator):
    """``x (X, Y, Z) -> grad x (3, X, Y, Z)`` by forward differences (1/mm)."""

    def __init__(self, shape: Sequence[int], voxel_size: Sequence[float], dtype=np.float32):
        super().__init__(shape, (3, *shape), dtype)
        self.voxel_size = tuple(float(v) for v in voxel_size)

    def _forward(self, x):
        return forward_gradient(np.asarray(x, dtype=self.dtype), self.voxel_size)

    def _adjoint(self, y):
        return adjoint_gradient(np.asarray(y, dtype=self.dtype), self.voxel_size)

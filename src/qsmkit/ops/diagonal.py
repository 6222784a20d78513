"""Voxel-wise operators: a binary mask and a real weighting."""

from __future__ import annotations

import numpy as np

from qsmkit.ops.base import LinearOperator


class Weight(LinearOperator):
    """Multiplication by a fixed real array (self-adjoint)."""

    def __init__(self, weight: np.ndarray, dtype=np.float32):
        super().__init__(weight.shape, weight.shape, dtype)
        self.weight = np.asarray(weight, dtype=dtype)

    def _forward(self, x):
        return self.weight * x

    def _adjoint(self, y):
        return self.weight * y


class Mask(Weight):
    """Restriction to a region: zero outside ``mask`` (self-adjoint projector)."""

    def __init__(self, mask: np.ndarray, dtype=np.float32):
        super().__init__(np.asarray(mask, dtype=bool).astype(dtype), dtype)

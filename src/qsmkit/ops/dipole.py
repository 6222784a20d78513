"""The dipole convolution ``chi -> D * chi`` as an operator (real, self-adjoint)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qsmkit import fft
from qsmkit.kernels import dipole_kernel
from qsmkit.ops.base import LinearOperator


class Dipole(LinearOperator):
    """Circular convolution with the unit dipole on a (pre-padded) grid.

    Input and output share ``shape``; units are whatever the caller uses on both sides
    (ppm -> ppm, or ppm -> Hz when ``scale`` is the Larmor frequency in MHz).
    """

    def __init__(
        self,
        shape: Sequence[int],
        voxel_size: Sequence[float],
        b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
        *,
        method: str = "auto",
        scale: float = 1.0,
        dtype=np.float32,
    ):
        super().__init__(shape, shape, dtype)
        self.kernel = dipole_kernel(shape, voxel_size, b0_dir, method=method, half=True)
        if scale != 1.0:
            self.kernel = self.kernel * np.float32(scale)

    def _forward(self, x):
        return fft.convolve_real(np.asarray(x, dtype=self.dtype), self.kernel)

    _adjoint = _forward

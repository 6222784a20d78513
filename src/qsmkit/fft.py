"""Thin wrappers over ``scipy.fft`` using every core, for real 3D volumes.

All spatial-frequency work in qsmkit goes through these so the FFT backend and worker
count are set in one place. ``QSMKIT_FFT_WORKERS`` overrides the worker count.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.fft

WORKERS = int(os.environ.get("QSMKIT_FFT_WORKERS", "-1"))


def rfftn(x: np.ndarray) -> np.ndarray:
    """Forward real FFT over the first three axes (last axis halved)."""
    return scipy.fft.rfftn(x, axes=(0, 1, 2), workers=WORKERS)


def irfftn(x: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`rfftn` back to a real array of spatial ``shape`` (3 axes)."""
    return scipy.fft.irfftn(x, s=tuple(shape[:3]), axes=(0, 1, 2), workers=WORKERS)


def fftn(x: np.ndarray) -> np.ndarray:
    """Forward complex FFT over the first three axes."""
    return scipy.fft.fftn(x, axes=(0, 1, 2), workers=WORKERS)


def ifftn(x: np.ndarray) -> np.ndarray:
    """Inverse complex FFT over the first three axes."""
    return scipy.fft.ifftn(x, axes=(0, 1, 2), workers=WORKERS)


def convolve_real(x: np.ndarray, kernel_half: np.ndarray) -> np.ndarray:
    """Circular convolution of a real volume with a real, even k-space kernel (rfft layout)."""
    out = irfftn(rfftn(x) * kernel_half, x.shape)
    return out.astype(x.dtype, copy=False)

"""SHARP: background field removal by spherical mean value filtering and deconvolution.

Also holds the spherical-mean-value (SMV) building blocks shared by the SHARP family
(:mod:`~qsmkit.bgremove.vsharp`, :mod:`~qsmkit.bgremove.resharp`, :mod:`~qsmkit.bgremove.ismv`):
the k-space SMV kernel on a padded box and the exact erosion of a mask by the sphere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from qsmkit import fft
from qsmkit.bgremove.result import BackgroundResult, Box, check_inputs, check_radius, finish
from qsmkit.errors import InputError
from qsmkit.kernels import ball, frequency_grid, smv_kernel

# Radii are widened by this relative amount before voxels are tested for lying inside the
# sphere, so that voxel sizes read from affines (5.0000001 mm) keep the voxels at exactly one
# radius (the face neighbours of a 5 mm sphere on a 5 mm grid).
_RADIUS_SLACK = 1e-6


def smv_margin(voxel_size: Sequence[float], radius_mm: float) -> tuple[int, int, int]:
    """Voxels per axis that a sphere of ``radius_mm`` reaches beyond its centre (plus one)."""
    return tuple(int(math.ceil(radius_mm / v)) + 1 for v in voxel_size)


def smv_parts(shape, voxel_size, radius_mm: float) -> tuple[np.ndarray, np.ndarray, int]:
    """``(S, S_ball, n)``: SMV kernels of ``radius_mm`` (rfft layout, float64), ball voxels.

    ``S_ball`` is the normalised discrete ball of :func:`qsmkit.kernels.smv_kernel`; its
    erosion of a mask is exact (:func:`smv_erode`). On anisotropic grids that ball's second
    moments ``m_i = mean(x_i^2)`` differ between axes, so ``S_ball * h != h`` for harmonic
    quadratics such as ``2 z^2 - x^2 - y^2`` and part of the background survives the
    high-pass filter. ``S`` adds ``c_i`` times the 3-point second difference along each axis
    with ``c_i = (max(m) - m_i) / (2 h_i^2)``, which equalises the moments so that ``S``
    reproduces every harmonic polynomial up to third order exactly. The correction only
    touches the six face neighbours (inside the ball), keeps the kernel symmetric with unit
    sum, and vanishes on isotropic grids.
    """
    radius_mm = radius_mm * (1.0 + _RADIUS_SLACK)
    ball_kernel = smv_kernel(shape, voxel_size, radius_mm, half=True, dtype=np.float64)
    sphere = ball(voxel_size, radius_mm)
    n_ball = int(sphere.sum())
    centred = [
        (np.arange(n) - (n - 1) / 2) * h for n, h in zip(sphere.shape, voxel_size, strict=True)
    ]
    grids = np.meshgrid(*centred, indexing="ij", sparse=True)
    moments = np.array([float((g**2 * sphere).sum()) / n_ball for g in grids])
    corrections = (moments.max() - moments) / (2.0 * np.asarray(voxel_size) ** 2)
    corrections[np.abs(corrections) < 1e-12 * moments.max()] = 0.0
    kernel = ball_kernel.copy()
    if np.any(corrections):
        freqs = frequency_grid(shape, voxel_size, half=True)
        for c, k, h in zip(corrections, freqs, voxel_size, strict=True):
            kernel = kernel + c * 2.0 * (np.cos(2.0 * np.pi * k * h) - 1.0)
    return kernel, ball_kernel, n_ball


def smv_erode(mask: np.ndarray, kernel: np.ndarray, n_ball: int) -> np.ndarray:
    """Voxels whose whole sphere lies inside ``mask`` (exact: threshold half a voxel below 1)."""
    mean = fft.irfftn(fft.rfftn(mask.astype(np.float64)) * kernel, mask.shape)
    return mean > 1.0 - 0.5 / n_ball


def check_threshold(threshold) -> float:
    """A TSVD threshold in (0, 1) or :class:`InputError`."""
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number in (0, 1), got {threshold!r}") from None
    if not 0.0 < thr < 1.0:
        raise InputError(f"threshold must be in (0, 1), e.g. 0.05; got {threshold!r}")
    return thr


def tsvd_inverse(kernel: np.ndarray, threshold: float) -> np.ndarray:
    """Truncated inverse of the high-pass ``1 - S``: zero where ``|1 - S| < threshold``."""
    high_pass = 1.0 - kernel
    keep = np.abs(high_pass) >= threshold
    inverse = np.zeros_like(high_pass)
    inverse[keep] = 1.0 / high_pass[keep]
    return inverse


def sharp(
    field_hz: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    weight: np.ndarray | None = None,
    radius_mm: float | None = None,
    threshold: float = 0.05,
) -> BackgroundResult:
    """Sophisticated harmonic artifact reduction for phase data (SHARP).

    A harmonic (background) field equals its spherical mean, so ``(delta - S) * f`` holds only
    the local field's contribution inside the mask eroded by the sphere. SHARP computes that
    high-pass field on the eroded mask and deconvolves it by ``1 - S`` with a truncated inverse
    (k-space values with ``|1 - S| < threshold`` are set to zero), then masks again.

    Parameters
    ----------
    field_hz : (X, Y, Z) ndarray, Hz
        Unwrapped total field; values outside ``mask`` are ignored.
    mask : (X, Y, Z) bool ndarray
        Region of interest (brain).
    voxel_size : 3 floats, mm
        May be anisotropic; the sphere is a sphere in mm.
    b0_dir : 3 floats
        Accepted for a uniform signature; SHARP does not depend on it.
    weight : ignored
        Accepted for a uniform signature.
    radius_mm : float, optional
        SMV sphere radius (mm), at least the largest voxel edge. Default 5 mm (or the largest
        voxel edge if larger), a common choice at about 1 mm resolution (the MEDI toolbox's
        SMV default is 6 mm). Larger spheres deconvolve better but erode more of the edge.
    threshold : float, default 0.05
        Truncation level of the deconvolution (Schweser 2011, Li 2011).

    Returns
    -------
    BackgroundResult
        ``field_hz`` float32 local field, ``mask`` the input mask eroded by the sphere
        (voxels whose whole sphere lies in the mask), ``background_hz`` None.

    References
    ----------
    Schweser F, Deistung A, Lehr BW, Reichenbach JR. Quantitative imaging of intrinsic
    magnetic tissue properties using MRI signal phase: an approach to in vivo brain iron
    metabolism? NeuroImage 2011;54:2789-2807.

    Examples
    --------
    >>> import numpy as np
    >>> x, y, z = np.mgrid[-12:12, -12:12, -12:12].astype(float)
    >>> mask = x**2 + y**2 + z**2 < 11**2
    >>> harmonic = 3.0 + 0.5 * x + 0.02 * (x**2 - y**2)
    >>> res = sharp(harmonic, mask, (1.0, 1.0, 1.0), radius_mm=3)
    >>> bool(np.abs(res.field_hz).max() < 1e-3)
    True
    """
    start = time.perf_counter()
    field, m, vs, _ = check_inputs(field_hz, mask, voxel_size, weight)
    r = check_radius(radius_mm, vs, default=5.0)
    thr = check_threshold(threshold)

    box = Box(m, smv_margin(vs, r))
    f = box.take(field)
    mk = box.take(m) > 0.5
    kernel, ball_kernel, n_ball = smv_parts(box.shape, vs, r)
    eroded = smv_erode(mk, ball_kernel, n_ball)

    high_pass = fft.irfftn(fft.rfftn(f) * (1.0 - kernel), box.shape) * eroded
    local = fft.irfftn(fft.rfftn(high_pass) * tsvd_inverse(kernel, thr), box.shape) * eroded

    info = {
        "method": "sharp",
        "radius_mm": r,
        "threshold": thr,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return finish(box.put(local), box.put(eroded, dtype=bool), input_mask=m, info=info)

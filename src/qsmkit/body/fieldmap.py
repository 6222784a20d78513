"""Global B0 field-map estimate for fat–water separation: multi-resolution, smoothness prior.

The chemical-shift-encoded signal leaves each voxel with several field values that explain its
echoes about equally well: the true field, its fat–water "swap" (shifted by roughly the main
fat frequency) and, where the signal has decayed (iron), a residual that is flat in the field.
Greedy region growing commits to one of them voxel by voxel and propagates a wrong choice.
This module follows the hierarchical (coarse-to-fine) estimate of Tsao & Jiang 2013:

1. Each voxel's residual curve ``r(psi)`` over one aliasing period (variable projection, the
   fat–water images and R2* eliminated), in units of the noise variance.
2. The curves are summed over blocks of ``2^L`` voxels per axis. At the coarsest level a block
   covers centimetres of tissue: the summed curve's global minimum is the true field, because
   the water-dominant voxels that dominate every block prefer it, while a swap is a minimum only
   in the isolated voxels where it arises. The coarse map is unwrapped in space through the
   aliasing period by quality-guided growing.
3. At each finer level every block chooses the field value (aliased by whole periods) that
   minimises its summed residual plus a quadratic smoothness prior
   ``n_block * ((psi - psi_ref) / sigma)^2`` around the interpolated coarser map; the choice is
   smoothed (weighted by the depth of each block's residual curve) and chosen again. Where the
   residual is flat (signal gone after one or two echoes) the prior carries the field through.

The result is the initial field of the complex joint fit (water, fat, field, R2*) in
:mod:`qsmkit.body.fatwater`.

References
----------
Tsao J, Jiang Y. Hierarchical IDEAL: fast, robust, and multiresolution separation of multiple
chemical species from multiple echo times. Magn Reson Med 2013;70:155-159.
Hernando D, Kellman P, Haldar JP, Liang ZP. Robust water/fat separation in the presence of
large field inhomogeneities using a graph cut algorithm. Magn Reson Med 2010;63:79-90
(residual curves over the field, quadratic smoothness of the field map).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _pool(values: np.ndarray, weights_mask: np.ndarray):
    """Sum ``values`` (X, Y, Z, ...) over 2x2x2 blocks (axes of length 1 are kept)."""
    shape = values.shape[:3]
    factors = tuple(2 if n > 1 else 1 for n in shape)
    pad = [(0, (-n) % f) for n, f in zip(shape, factors, strict=True)]
    pad += [(0, 0)] * (values.ndim - 3)
    v = np.pad(values, pad)
    m = np.pad(weights_mask, pad[:3])
    nx, ny, nz = (v.shape[i] // factors[i] for i in range(3))
    v = v.reshape(nx, factors[0], ny, factors[1], nz, factors[2], *values.shape[3:])
    v = v.sum(axis=(1, 3, 5))
    m = m.reshape(nx, factors[0], ny, factors[1], nz, factors[2]).sum(axis=(1, 3, 5))
    return v, m, factors


def _upsample(coarse: np.ndarray, fine_shape, factors, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation of a coarse block map to the finer grid; invalid blocks filled."""
    if not valid.all():
        _, idx = ndimage.distance_transform_edt(~valid, return_indices=True)
        coarse = coarse[tuple(idx)]
    axes = [(np.arange(n) + 0.5) / f - 0.5 for n, f in zip(fine_shape, factors, strict=True)]
    coords = np.meshgrid(*axes, indexing="ij")
    return ndimage.map_coordinates(coarse, coords, order=1, mode="nearest")


def _choose(cost, ref, field_grid, period_hz, weight, sigma_hz):
    """Per block: the grid field (aliased near ``ref``) minimising cost + prior; (X,Y,Z)."""
    values = field_grid[None, :] + np.round((ref[:, None] - field_grid[None, :]) / period_hz) \
        * period_hz
    sigma = np.broadcast_to(np.asarray(sigma_hz, dtype=np.float64), ref.shape)
    total = cost + weight[:, None] * ((values - ref[:, None]) / sigma[:, None]) ** 2
    best = np.argmin(total, axis=1)
    return values[np.arange(values.shape[0]), best]


def _weighted_smooth(field, weight, mask, sigma_vox):
    num = ndimage.gaussian_filter(np.where(mask, field * weight, 0.0), sigma_vox, mode="nearest")
    den = ndimage.gaussian_filter(np.where(mask, weight, 0.0), sigma_vox, mode="nearest")
    return np.where(den > 0, num / np.maximum(den, 1e-30), field)


def _gradient_magnitude(field: np.ndarray) -> np.ndarray:
    """|grad field| per block (axes of length 1 contribute nothing)."""
    axes = [a for a in range(field.ndim) if field.shape[a] > 1]
    if not axes:
        return np.zeros_like(field)
    grads = np.gradient(field, axis=axes)
    if len(axes) == 1:
        grads = [grads]
    return np.sqrt(sum(g**2 for g in grads))


def _unwrap_coarse(field, depth, mask, period_hz):
    """Spatial unwrapping of a coarse map by quality-guided growing (deepest blocks first)."""
    from qsmkit.body.fatwater import _grow

    index = -np.ones(mask.shape, np.int64)
    index[mask] = np.arange(int(mask.sum()))
    cand = field[mask][:, None].astype(np.float64)
    zero = np.zeros_like(cand)
    out, _ = _grow(index, cand, zero, depth[mask].astype(np.float64), period_hz, period_hz)
    res = field.copy()
    res[mask] = out
    return res


def multires_field(
    cost: np.ndarray,
    mask: np.ndarray,
    field_grid_hz: np.ndarray,
    period_hz: float,
    *,
    sigma_hz: float | None = None,
    min_blocks: int = 4,
    smooth_passes: int = 2,
) -> np.ndarray:
    """Smooth, spatially unwrapped field map (Hz) from per-voxel residual curves.

    Parameters
    ----------
    cost : (N, P) float array
        Residual of every masked voxel at each field-grid value, in units of the noise
        variance (the fat–water images and R2* eliminated).
    mask : (X, Y, Z) bool array with N true voxels, in the order of ``cost``.
    field_grid_hz : (P,) floats, Hz — one aliasing period, circular.
    period_hz : float, Hz — the aliasing period ``1 / dTE``.
    sigma_hz : float, optional
        Scale of the smoothness prior per voxel (default ``period_hz / 20``).
    min_blocks : int
        Coarsening stops when the largest axis has at most this many blocks.
    smooth_passes : int
        Smooth-and-choose passes per level.

    Returns
    -------
    (N,) float64 ndarray, Hz — field of every masked voxel, unwrapped through the period.

    References
    ----------
    Tsao J, Jiang Y. Magn Reson Med 2013;70:155-159 (Hierarchical IDEAL).
    """
    if sigma_hz is None:
        sigma_hz = period_hz / 20.0
    grid = np.asarray(field_grid_hz, dtype=np.float64)
    vol = np.zeros(mask.shape + (grid.size,), np.float32)
    vol[mask] = cost
    levels = [(vol, mask.astype(np.float32), None)]
    while max(levels[-1][0].shape[:3]) > min_blocks:
        v, m, f = _pool(levels[-1][0], levels[-1][1])
        levels.append((v, m, f))
    field = None
    prev_valid = None
    for lvl in range(len(levels) - 1, -1, -1):
        v, m, _ = levels[lvl]
        valid = m > 0
        c = v[valid].astype(np.float64)
        c -= c.min(axis=1, keepdims=True)
        depth = np.zeros(valid.shape)
        depth[valid] = np.median(c, axis=1) + 1e-6
        nvox = m[valid].astype(np.float64)
        if field is None:
            best = grid[np.argmin(c, axis=1)]
            coarse = np.zeros(valid.shape)
            coarse[valid] = best
            field = _unwrap_coarse(coarse, depth, valid, period_hz)
            ref = field
        else:
            factors = levels[lvl + 1][2]
            ref = _upsample(field, valid.shape, factors, prev_valid)
        for _ in range(smooth_passes + 1):
            # the prior loosens where the smooth field itself changes fast (near air, coarse
            # voxels): a voxel may depart from the reference by about its local gradient
            slope = _gradient_magnitude(ref)
            sigma = np.sqrt(sigma_hz**2 + (2.0 * slope[valid]) ** 2)
            chosen = np.zeros(valid.shape)
            chosen[valid] = _choose(c, ref[valid], grid, period_hz, nvox, sigma)
            ref = _weighted_smooth(chosen, depth, valid, 1.0)
        field = chosen
        prev_valid = valid
    return field[mask]

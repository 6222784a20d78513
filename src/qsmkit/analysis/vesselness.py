"""Multi-scale Hessian vesselness with scales in millimetres (anisotropic voxels).

The Hessian of the image smoothed by a Gaussian of standard deviation ``sigma`` (mm; per axis
``sigma / voxel_size`` voxels) is taken in physical units (central second differences in mm,
exact for quadratics at any voxel size), scale-normalised by ``sigma^2`` so that responses at
different scales compare, and its eigenvalues sorted by magnitude ``|l1| <= |l2| <= |l3|``.
For a bright tube ``l1 ~ 0`` along the axis and ``l2 ~ l3 << 0`` across it; for a bright ball
all three are negative and alike; for a plate only ``l3`` is large. Frangi's measure

    V = (1 - exp(-Ra^2 / 2 alpha^2)) exp(-Rb^2 / 2 beta^2) (1 - exp(-S^2 / 2 c^2)),
    Ra = |l2| / |l3|,  Rb = |l1| / sqrt(|l2 l3|),  S = sqrt(l1^2 + l2^2 + l3^2),

(zero unless ``l2, l3 < 0``) is near 1 on tubes, small on balls (Rb ~ 1) and plates (Ra ~ 0).
A tube of radius ``r`` answers best at ``sigma = r / sqrt(2)``; the maximum over the scales of
the radii looked for is kept, with the radius that gave it. Because the scales and the
derivatives are in mm, a vein gives the same response whatever the voxel shape or the slice
orientation, which a voxel-unit filter (``skimage.filters.frangi``) does not on 1 x 1 x 2 mm
data.

References
----------
Frangi AF, Niessen WJ, Vincken KL, Viergever MA. Multiscale vessel enhancement filtering.
MICCAI 1998, LNCS 1496:130-137.
Sato Y, Nakajima S, Shiraga N, et al. Three-dimensional multi-scale line filter for
segmentation and visualization of curvilinear structures in medical images. Med Image Anal
1998;2:143-168 (scale normalisation and the sigma = r / sqrt 2 match).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage as ndi

from qsmkit.analysis import check_voxel_size
from qsmkit.errors import InputError

_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@dataclasses.dataclass
class Vesselness:
    """Frangi vesselness of bright tubes, best over scales."""

    vesselness: np.ndarray
    """(X, Y, Z) float32 in [0, 1] (zero outside ``where``)."""
    radius_mm: np.ndarray
    """(X, Y, Z) float32: the tube radius (mm) of the best scale (zero where V = 0)."""


def hessian_eigenvalues_mm(image, voxel_size, sigma_mm: float, where=None) -> np.ndarray:
    """Scale-normalised Hessian eigenvalues ``sigma^2 H`` (H in 1/mm^2) at the voxels ``where``.

    Parameters
    ----------
    image : (X, Y, Z) array
    voxel_size : 3 floats, mm
    sigma_mm : Gaussian scale, mm
    where : (X, Y, Z) bool or None (every voxel)

    Returns
    -------
    (N, 3) eigenvalues sorted by magnitude for the N voxels of ``where`` (in C order).
    """
    vs = check_voxel_size(voxel_size)
    if not sigma_mm > 0:
        raise InputError(f"the vesselness scale must be positive, got {sigma_mm} mm")
    img = np.asarray(image, np.float32)
    sel = np.ones(img.shape, bool) if where is None else np.asarray(where, bool)
    idx = np.nonzero(sel)
    if idx[0].size == 0:
        return np.zeros((0, 3))
    # Smooth, then take finite differences in mm: exact for quadratics whatever the voxel,
    # where Gaussian-derivative kernels narrower than a voxel (a 0.5 mm scale across 2 mm
    # slices) are not.
    smooth = ndi.gaussian_filter(img, [sigma_mm / v for v in vs], mode="nearest")
    padded = np.pad(smooth, 1, mode="edge")
    centre = tuple(slice(1, -1) for _ in range(3))
    first = np.gradient(smooth, *vs)
    h = np.empty((idx[0].size, 3, 3), np.float64)
    for i, j in _PAIRS:
        if i == j:
            up = [slice(1, -1)] * 3
            down = [slice(1, -1)] * 3
            up[i], down[i] = slice(2, None), slice(0, -2)
            d = (padded[tuple(up)] - 2 * padded[centre] + padded[tuple(down)]) / vs[i] ** 2
        else:
            d = np.gradient(first[i], vs[j], axis=j)
        d = d[idx] * sigma_mm**2
        h[:, i, j] = d
        h[:, j, i] = d
    ev = np.linalg.eigvalsh(h)
    order = np.argsort(np.abs(ev), axis=1)
    return np.take_along_axis(ev, order, axis=1)


def frangi_bright_tubes(ev: np.ndarray, *, alpha: float = 0.5, beta: float = 0.5,
                        c: float) -> np.ndarray:
    """Frangi's measure of bright tubes from magnitude-sorted eigenvalues (N, 3)."""
    a1, a2, a3 = np.abs(ev[:, 0]), np.abs(ev[:, 1]), np.abs(ev[:, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.where(a3 > 0, a2 / a3, 0.0)
        rb = np.where(a2 * a3 > 0, a1 / np.sqrt(a2 * a3), 1.0)
    s2 = a1**2 + a2**2 + a3**2
    v = ((1 - np.exp(-(ra**2) / (2 * alpha**2))) * np.exp(-(rb**2) / (2 * beta**2))
         * (1 - np.exp(-s2 / (2 * c**2))))
    return np.where((ev[:, 1] < 0) & (ev[:, 2] < 0), v, 0.0)


def vesselness_mm(image, voxel_size, *, radii_mm=(0.75, 1.0, 1.5, 2.0, 3.0), where=None,
                  alpha: float = 0.5, beta: float = 0.5, c: float | None = None) -> Vesselness:
    """Multi-scale Frangi vesselness of bright tubes with scales in mm (see the module).

    Parameters
    ----------
    image : (X, Y, Z) array (for chi, its positive local contrast, ppm)
    voxel_size : 3 floats, mm
    radii_mm : tube radii looked for (mm); scale ``sigma = r / sqrt(2)``
    where : (X, Y, Z) bool, voxels to evaluate (default all)
    alpha, beta : Frangi's plate and blob sensitivities (0.5, 0.5)
    c : structure sensitivity; default half the largest Hessian norm at each scale

    Returns
    -------
    Vesselness
    """
    vs = check_voxel_size(voxel_size)
    img = np.asarray(image, np.float32)
    sel = np.ones(img.shape, bool) if where is None else np.asarray(where, bool)
    if sel.shape != img.shape:
        raise InputError(f"where has shape {sel.shape}, the image {img.shape}")
    radii = sorted({float(r) for r in radii_mm})
    if not radii or radii[0] <= 0:
        raise InputError(f"radii_mm must be positive, got {radii}")
    best = np.zeros(int(sel.sum()))
    best_r = np.zeros(int(sel.sum()))
    for r in radii:
        ev = hessian_eigenvalues_mm(img, vs, r / np.sqrt(2.0), sel)
        if ev.size == 0:
            break
        norm = np.sqrt((ev**2).sum(axis=1))
        scale_c = c if c is not None else max(0.5 * float(norm.max()), 1e-12)
        v = frangi_bright_tubes(ev, alpha=alpha, beta=beta, c=scale_c)
        better = v > best
        best[better], best_r[better] = v[better], r
    out = np.zeros(img.shape, np.float32)
    radius = np.zeros(img.shape, np.float32)
    out[sel], radius[sel] = best, best_r
    return Vesselness(out, radius)

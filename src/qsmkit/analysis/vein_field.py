"""Susceptibility of a vein from the field in and around it (MR susceptometry).

A long vein is locally an infinite cylinder of radius ``a`` and susceptibility ``dchi``
relative to the tissue around it, at an angle ``theta`` to B0. Its relative field (Lorentz
sphere convention, the one of the QSM dipole kernel ``1/3 - k_z^2/k^2``) is

* inside: ``dB/B0 = dchi (3 cos^2 theta - 1) / 6``, uniform;
* outside: ``dB/B0 = (dchi / 2) sin^2 theta (a / r)^2 cos 2 phi``, with ``r`` the distance to
  the axis and ``phi`` the angle, in the cross-section, from the projection of B0.

:func:`fit_vein_field` fits this model to the local field (Hz) around a traced centre line:
the intravascular term on voxels wholly inside the vein and the extravascular term on voxels
between ``inner_gap`` and ``outer`` radii from the axis, with a constant and a linear
background per piece of the vein. Voxels that straddle the wall are left out: they hold
blood and tissue at different fields and T2*, the phase of their summed signal is not their
mean field, and a single-compartment inversion reads it as extra susceptibility. The
intravascular term gives ``dchi`` without the radius; the extravascular one gives only the
moment ``dchi a^2``. :func:`field_without_other_sources` first removes from the local field
the field of every other source in the chi map (bleeds, other veins, nuclei), predicted by
the dipole kernel, so that what is fitted is the field of this vein.

``dchi`` is relative to the surrounding tissue and does not depend on the reference of the
chi map: the fit works on field differences (the background terms absorb any offset).

References
----------
Haacke EM, Lai S, Reichenbach JR, et al. In vivo measurement of blood oxygen saturation using
magnetic resonance imaging: a direct validation of the blood oxygen level-dependent concept
in functional brain imaging. Hum Brain Mapp 1997;5:341-346.
Fernandez-Seara MA, Techawiboonwong A, Detre JA, Wehrli FW. MR susceptometry for measuring
global brain oxygen extraction. Magn Reson Med 2006;55:967-973.
Langham MC, Magland JF, Epstein CL, Floyd TF, Wehrli FW. Accuracy and precision of MR blood
oximetry based on the long paramagnetic cylinder approximation of large vessels. Magn Reson
Med 2009;62:333-340.
Salomir R, de Senneville BD, Moonen CT. A fast calculation method for magnetic field
inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn Reson
2003;19B:26-34.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage as ndi

from qsmkit import fft, kernels, units
from qsmkit.errors import InputError

OUTER_RADII = 3.0
"""Outer edge of the extravascular annulus, in vein radii (the field there is 1/9 of its
value at the wall)."""


@dataclasses.dataclass
class VeinFieldFit:
    """Result of :func:`fit_vein_field` (susceptibilities relative to the surrounding tissue)."""

    dchi_ppm: float
    """Intravascular estimate of the blood-tissue susceptibility difference (ppm); NaN at
    the magic angle (``inside_weight`` below 0.001)."""
    dchi_se_ppm: float
    """Its standard error (ppm) from the residuals of the fit (inf at the magic angle)."""
    moment_ppm_mm2: float
    """Extravascular moment ``dchi a^2`` (ppm mm^2)."""
    moment_se_ppm_mm2: float
    n_inside: int
    """Voxels wholly inside the vein used for the intravascular term."""
    n_outside: int
    """Voxels of the extravascular annulus."""
    rms_hz: float
    """Root-mean-square residual of the fit (Hz)."""
    inside_weight: float
    """Mean ``|3 cos^2 theta - 1| / 6`` over the inside voxels: the field (ppm) per ppm of
    dchi; zero at the magic angle, where the inside carries no information."""
    outside_voxels: np.ndarray
    """(N, 3) voxel indices of the extravascular annulus (for the tissue chi level)."""


def cylinder_field_per_ppm(offset_mm, tangent, b0_dir, radius_mm):
    """Relative field (ppm per ppm of dchi) of an infinite cylinder at points around its axis.

    Parameters
    ----------
    offset_mm : (N, 3) ndarray, mm
        Offsets of the points from their nearest axis point, perpendicular to the axis.
    tangent : (N, 3) ndarray
        Unit axis direction at each point.
    b0_dir : 3 floats
        Unit B0 direction, same frame.
    radius_mm : float

    Returns
    -------
    (N,) ndarray: ``(3 cos^2 theta - 1) / 6`` inside, ``(a^2 / 2 r^2) sin^2 theta cos 2 phi``
    outside, using ``r^2 sin^2 theta cos 2 phi = 2 (q.b)^2 - r^2 sin^2 theta``.
    """
    q = np.asarray(offset_mm, float)
    b = np.asarray(b0_dir, float)
    cos_t = np.asarray(tangent, float) @ b
    r2 = np.maximum((q * q).sum(axis=-1), 1e-12)
    sin2 = 1.0 - cos_t**2
    outside = radius_mm**2 / (2.0 * r2) * (2.0 * (q @ b) ** 2 / r2 - sin2)
    inside = (3.0 * cos_t**2 - 1.0) / 6.0
    return np.where(r2 < radius_mm**2, inside, outside)


def dense_centre_line(centreline_mm, step_mm: float = 0.1, smooth_points: float = 1.0):
    """Centre line resampled every ``step_mm`` after a light Gaussian smoothing (``sigma``
    in points) of the traced slab centroids. Returns (points (M, 3) mm, unit tangents (M, 3),
    arc length (M,) mm)."""
    c = np.asarray(centreline_mm, float)
    if len(c) < 2:
        raise InputError("a vein centre line needs at least two points")
    if smooth_points > 0 and len(c) >= 3:
        c = ndi.gaussian_filter1d(c, smooth_points, axis=0, mode="nearest")
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))])
    s = np.arange(0.0, arc[-1] + 1e-9, step_mm)
    line = np.stack([np.interp(s, arc, c[:, k]) for k in range(3)], axis=1)
    tangent = np.gradient(line, axis=0) if len(line) > 1 else np.diff(c[:2], axis=0)
    tangent = tangent / np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    return line, tangent, s


def _around_axis(points_mm, line, tangent):
    """Nearest centre-line point of each point and the perpendicular offset from it."""
    from scipy.spatial import cKDTree

    _, owner = cKDTree(line).query(points_mm)
    t = tangent[owner]
    q = points_mm - line[owner]
    q = q - (q * t).sum(axis=1, keepdims=True) * t
    return owner, q, t


def fit_vein_field(
    field_hz,
    mask,
    voxel_size,
    centreline_mm,
    radius_mm: float,
    b0_dir,
    b0_tesla: float,
    *,
    exclude=None,
    outer: float = OUTER_RADII,
    inner_gap: float = 1.5,
    end_margin: float = 1.5,
    piece_mm: float = 5.0,
    subsample: int = 3,
) -> VeinFieldFit | None:
    """Fit the infinite-cylinder field to the local field around one vein.

    Parameters
    ----------
    field_hz : (X, Y, Z) ndarray, Hz
        Local (tissue) field, background removed.
    mask : (X, Y, Z) bool
        Where ``field_hz`` is valid.
    voxel_size : 3 floats, mm
    centreline_mm : (M, 3) ndarray, mm
        Ordered centre line (array axes times voxel size), e.g. ``VeinBranch.centreline_mm``.
    radius_mm : float
        Vein radius (from the segmentation); sets which voxels are inside, on the wall and
        outside. Inside: the whole voxel (half its diagonal) within the radius. Outside:
        ``max(inner_gap a, a + half diagonal) <= r <= outer a``.
    b0_dir : 3 floats
        B0 direction in voxel (array) coordinates.
    b0_tesla : float
    exclude : (X, Y, Z) bool, optional
        Voxels to leave out (near other veins).
    end_margin : float
        Voxels whose nearest centre-line point is within ``end_margin`` radii of an end are
        left out (the field of a vein's end is not that of a long cylinder).
    piece_mm : float
        Length of the pieces of vein with their own constant and linear background.
    subsample : int
        The model is averaged over ``subsample^3`` points in each voxel.

    Returns
    -------
    :class:`VeinFieldFit`, or None when there are too few inside or outside voxels.
    """
    field = np.asarray(field_hz, dtype=np.float32)
    vs = np.asarray(voxel_size, float)
    mask = np.asarray(mask, bool)
    b0 = np.asarray(b0_dir, float)
    b0 = b0 / np.linalg.norm(b0)
    if not radius_mm > 0:
        raise InputError(f"vein radius must be positive, got {radius_mm} mm")
    if not b0_tesla > 0:
        raise InputError(f"the field strength must be positive (T), got {b0_tesla}")
    hz_per_ppm = units.larmor_hz(b0_tesla) * 1e-6
    line, tangent, arc = dense_centre_line(centreline_mm)
    a = float(radius_mm)
    reach = outer * a + float(vs.max())
    lo = np.maximum(np.floor((line.min(axis=0) - reach) / vs).astype(int), 0)
    hi = np.minimum(np.ceil((line.max(axis=0) + reach) / vs).astype(int) + 1, field.shape)
    if np.any(hi <= lo):
        return None
    idx = np.argwhere(np.ones(hi - lo, bool)) + lo
    pts = idx * vs
    owner, q, _ = _around_axis(pts, line, tangent)
    r = np.linalg.norm(q, axis=1)
    s = arc[owner]
    half_diag = 0.5 * float(np.linalg.norm(vs))
    valid = (mask[tuple(idx.T)] & (s >= end_margin * a) & (s <= arc[-1] - end_margin * a)
             & (r <= outer * a))
    if exclude is not None:
        valid &= ~np.asarray(exclude, bool)[tuple(idx.T)]
    inside = valid & (r <= a - half_diag)
    outside = valid & (r >= max(inner_gap * a, a + half_diag))
    if inside.sum() < 3 or outside.sum() < 20:
        return None
    used = inside | outside
    # The model averaged over each voxel (sub-voxel points, each with its own axis point).
    grid = (np.arange(subsample) + 0.5) / subsample - 0.5
    offsets = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3) * vs
    sub = (pts[used][:, None, :] + offsets[None]).reshape(-1, 3)
    _, q_sub, t_sub = _around_axis(sub, line, tangent)
    model = cylinder_field_per_ppm(q_sub, t_sub, b0, a).reshape(int(used.sum()), -1).mean(1)
    is_in = inside[used]
    columns = [np.where(is_in, model, 0.0) * hz_per_ppm,
               np.where(is_in, 0.0, model / a**2) * hz_per_ppm]
    piece = np.floor(s[used] / piece_mm).astype(int)
    centre = pts[used]
    for k in np.unique(piece):
        w = (piece == k).astype(float)
        c0 = centre[piece == k].mean(axis=0)
        columns.append(w)
        columns.extend(w * (centre[:, d] - c0[d]) for d in range(3))
    t_in = tangent[owner[inside]]
    weight = float(np.mean(np.abs(3.0 * (t_in @ b0) ** 2 - 1.0) / 6.0))
    if weight < 1e-3:  # at the magic angle the inside field carries no dchi
        columns[0] = np.zeros_like(columns[0])
    design = np.stack(columns, axis=1)
    y = field[tuple(idx[used].T)].astype(float)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    dof = max(1, len(y) - design.shape[1])
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.pinv(design.T @ design)
    dchi, dchi_se = float(beta[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
    if weight < 1e-3:
        dchi, dchi_se = float("nan"), float("inf")
    return VeinFieldFit(
        dchi_ppm=dchi, dchi_se_ppm=dchi_se,
        moment_ppm_mm2=float(beta[1]), moment_se_ppm_mm2=float(np.sqrt(max(cov[1, 1], 0.0))),
        n_inside=int(inside.sum()), n_outside=int(outside.sum()), rms_hz=float(np.sqrt(s2)),
        inside_weight=weight, outside_voxels=idx[outside])


def forward_field_hz(chi_ppm, voxel_size, b0_dir, b0_tesla: float, *,
                     pad_vox: int = 16) -> np.ndarray:
    """Field (Hz) of a chi map (ppm) on its grid by the dipole kernel (Lorentz-sphere
    convention, Salomir 2003); the map is zero-padded by ``pad_vox`` voxels each side (to an
    FFT-friendly size), which keeps the periodic images of the sources away, as the inversion
    itself does."""
    from qsmkit.geometry import fast_shape, pad_to

    chi = np.asarray(chi_ppm, np.float32)
    padded, inner = pad_to(chi, fast_shape(chi.shape, pad_vox))
    kernel = kernels.dipole_kernel(padded.shape, voxel_size, b0_dir, half=True)
    field = fft.irfftn(fft.rfftn(padded) * kernel, padded.shape)[inner]
    return (field * units.larmor_hz(b0_tesla) * 1e-6).astype(np.float32)


def field_without_other_sources(field_hz, chi_ppm, mask, voxel_size, b0_dir, b0_tesla: float,
                                keep, background_ppm, *, field_of_chi_hz=None,
                                reach_mm: float = 12.0) -> np.ndarray:
    """The local field less the field of every source in the chi map except those in
    ``keep``: ``field - D * chi + D * ((chi - background) keep)``.

    Parameters
    ----------
    field_hz : (X, Y, Z) local field, Hz
    chi_ppm : (X, Y, Z) chi map, ppm (any reference: a constant offset leaves a field that is
        smooth inside the brain, which the background terms of the fit absorb)
    mask : (X, Y, Z) bool, where chi is valid (zero outside for the forward model)
    keep : (X, Y, Z) bool, the vein (and its wall) whose field is kept
    background_ppm : (X, Y, Z) smooth tissue chi that replaces the vein in the forward model
    field_of_chi_hz : optional precomputed :func:`forward_field_hz` of the masked chi, reused
        across veins
    reach_mm : the field of the kept sources is added back within this distance of them (the
        region the fit uses); farther out it is left subtracted
    """
    mask = np.asarray(mask, bool)
    chi = np.where(mask, np.asarray(chi_ppm, np.float32), 0.0).astype(np.float32)
    if field_of_chi_hz is None:
        field_of_chi_hz = forward_field_hz(chi, voxel_size, b0_dir, b0_tesla)
    keep = np.asarray(keep, bool) & mask
    out = np.asarray(field_hz, np.float32) - field_of_chi_hz
    if not keep.any():
        return out
    vs = np.asarray(voxel_size, float)
    # The field of the kept patch, computed in a box around it: only needed near the vein.
    pad = np.ceil(float(reach_mm) / vs).astype(int)
    where = np.argwhere(keep)
    lo = np.maximum(where.min(axis=0) - pad, 0)
    hi = np.minimum(where.max(axis=0) + pad + 1, chi.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    patch = np.where(keep[box], chi[box] - np.asarray(background_ppm, np.float32)[box], 0.0)
    out[box] += forward_field_hz(patch, vs, b0_dir, b0_tesla)
    return out

"""Venous oximetry from a chi map: vein segments, Yv, OEF and CMRO2.

Pipeline
--------
1. Vein segmentation (:func:`segment_veins`): local contrast ``chi - background`` (grey
   morphological alternating sequential filters remove structures narrower than a box,
   leaving the smooth tissue background), Frangi vesselness of that contrast (bright tubes;
   blobs and plates are suppressed), a threshold on both, and connected elongated components
   of at least ``min_length_mm`` that are tubes: at least one branch of the component is at
   least ``min_aspect`` (3) diameters long with a round cross-section, measured on the
   half-maximum contrast around its centre line. The vesselness of an elongated deep grey
   nucleus (globus pallidus, substantia nigra: ellipsoids 1-2 cm long, about as long as they
   are wide) is a thin rod-like ridge, so the shape of the thresholded mask alone would let
   it through.
2. Centre lines: 3D skeleton (Lee 1994, scikit-image) split at branch points into segments.
   Per segment: length (along the sub-voxel centre line), radius (cross-section of the
   half-maximum tube, ``A = pi r^2``), cross-section ratio, orientation (principal axis) and its
   angle to B0.
3. Susceptibility: median chi over the centre-line voxels away from the segment ends, minus the
   reference (CSF, taken as water). Only segments with ``radius_mm >= min_radius_mm`` are
   ``usable``: thinner veins lose chi to partial volume and to the regularisation of the
   inversion; and only tubes (``length >= min_aspect x diameter``, cross-section ratio at most
   ``max_cross_section_ratio``): the chi of a short stub or a blob is not that of a vein.
   With the local field (``local_field_hz``), a second estimate comes from the field in and
   around each usable vein (:mod:`qsmkit.analysis.vein_field`, MR susceptometry): the
   intravascular field of the infinite-cylinder model, ``dchi (3 cos^2 theta - 1) / 6``,
   fitted with the extravascular ``(dchi / 2) sin^2 theta (a/r)^2 cos 2 phi`` as the
   background reference and the voxels on the vein wall left out, gives the blood-tissue
   difference; the tissue chi around the vein (relative to the reference) is added. This
   estimate is free of the wall-voxel bias of the chi map (voxels that straddle the wall hold
   blood and tissue at different fields and T2*: the phase of their summed signal is not
   their mean field, which a single-compartment inversion reads as extra chi, up to +17 %
   for veins perpendicular to B0 on 1.2 mm voxels). It is chosen (``estimate = field``)
   when its standard error in Yv is at most ``max_field_yv_se``; near the magic angle the
   intravascular field vanishes and the chi estimate is kept.
4. Physiology (:mod:`qsmkit.physiology`): ``dchi = Hct (dchi_oxy + dchi_do (1 - Yv))`` with
   dchi_do = 3.39 ppm (Spees 2001) and dchi_oxy = -0.10 ppm (Jain 2012), so
   ``Yv = 1 - (dchi / Hct - dchi_oxy) / dchi_do``; ``OEF = (Ya - Yv) / Ya``;
   ``CaO2 = 1.34 Hb SaO2 + 0.003 PaO2`` (mL O2/dL); ``CMRO2 = CBF OEF CaO2``, reported in
   umol O2 / 100 g / min with 1 mmol O2 = 22.414 mL at STP.

References
----------
Frangi AF, Niessen WJ, Vincken KL, Viergever MA. Multiscale vessel enhancement filtering.
MICCAI 1998, LNCS 1496:130-137.
Lee TC, Kashyap RL, Chu CN. Building skeleton models via 3-D medial surface/axis thinning
algorithms. CVGIP Graph Models Image Process 1994;56:462-478.
Fan AP, Bilgic B, Gagnon L, et al. Quantitative oxygenation venography from MRI phase.
Magn Reson Med 2014;72:149-159 (chi of veins -> Yv, partial volume of small veins).
Haacke EM, Tang J, Neelavalli J, Cheng YCN. Susceptibility mapping as a means to visualize
veins and quantify oxygen saturation. J Magn Reson Imaging 2010;32:663-676.
Zhang J, Liu T, Gupta A, Spincemaille P, Nguyen TD, Wang Y. Quantitative mapping of cerebral
metabolic rate of oxygen (CMRO2) using quantitative susceptibility mapping (QSM). Magn Reson
Med 2015;74:945-952.
Spees WM et al. Magn Reson Med 2001;45:533-542; Jain V et al. Magn Reson Med 2012;68:863-867.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse
import scipy.sparse.csgraph

from qsmkit import physiology
from qsmkit.analysis import check_chi, check_same_grid, check_voxel_size, new_figure
from qsmkit.errors import InputError

VEIN_COLUMNS = (
    "id", "x", "y", "z", "length_mm", "radius_mm", "theta_deg", "chi_ppm", "yv", "oef",
    "n_centreline", "aspect", "cross_section_ratio", "usable", "cmro2_umol_per_100g_per_min",
    "region", "yv_sd", "chi_sd_ppm", "estimate", "yv_chi", "yv_field", "yv_field_sd",
    "dchi_field_ppm", "tissue_chi_ppm",
)
REGION_COLUMNS = (
    "region", "n_segments", "n_usable", "length_mm", "yv", "oef", "cbf_ml_per_100g_per_min",
    "cmro2_umol_per_100g_per_min",
)
DEFAULT_YA = 0.98
"""Arterial oxygen saturation of a healthy adult breathing air."""
MCHC_G_PER_DL = 33.3
"""Mean corpuscular haemoglobin concentration (g/dL of red cells), normal range 32-36:
Hb = Hct x MCHC when Hb is not given."""
ML_O2_PER_MMOL = 22.414
"""Volume of 1 mmol of O2 at STP (mL)."""


@dataclasses.dataclass
class VeinSegmentation:
    """Binary vein mask, its components, and the maps used to make it."""

    mask: np.ndarray
    components: np.ndarray
    vesselness: np.ndarray
    contrast_ppm: np.ndarray
    parameters: dict


def _fill_outside(chi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace voxels outside ``mask`` by their nearest inside value (for local filters)."""
    if mask.all():
        return chi
    _, idx = ndi.distance_transform_edt(~mask, return_indices=True)
    return chi[tuple(idx)]


def local_background(chi: np.ndarray, mask: np.ndarray, voxel_size,
                     radius_mm: float) -> np.ndarray:
    """Smooth tissue background of chi without structures narrower than ``2 radius_mm``.

    The mean of the two alternating sequential filters ``opening(closing(chi))`` and
    ``closing(opening(chi))`` with a box of side ``2 radius_mm + 1 voxel``: both bright
    (veins, bleeds) and dark (calcifications) small structures are removed, and, unlike a
    single top-hat, the digital corners of a strong source do not leave opposite-sign
    artefacts next to it.
    """
    size = tuple(int(2 * max(1, round(radius_mm / v)) + 1) for v in voxel_size)
    filled = _fill_outside(chi.astype(np.float32), mask)
    a = ndi.grey_opening(ndi.grey_closing(filled, size=size), size=size)
    b = ndi.grey_closing(ndi.grey_opening(filled, size=size), size=size)
    return 0.5 * (a + b)


def local_contrast(chi: np.ndarray, mask: np.ndarray, voxel_size, radius_mm: float,
                   *, sign: int = 1, background: np.ndarray | None = None) -> np.ndarray:
    """Contrast of structures narrower than ``2 radius_mm`` over the local background:
    ``max(chi - background, 0)`` for ``sign=1`` (paramagnetic), ``max(background - chi, 0)``
    for ``sign=-1`` (diamagnetic); zero outside the mask."""
    if background is None:
        background = local_background(chi, mask, voxel_size, radius_mm)
    out = (chi - background) if sign > 0 else (background - chi)
    return np.where(mask, np.maximum(out, 0.0), 0.0).astype(np.float32)


_HESSIAN_ORDERS = ((2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1))


def hessian_eigenvalues(image: np.ndarray, sigma_vox: float, where: np.ndarray) -> np.ndarray:
    """Scale-normalised Hessian eigenvalues (sigma^2 H, Gaussian derivatives) at ``where``.

    Returns an (N, 3) array for the N true voxels of ``where``, sorted by magnitude
    ``|l1| <= |l2| <= |l3|``. Only the bounding box of ``where`` (plus 4 sigma) is filtered.
    """
    idx = np.argwhere(where)
    if idx.size == 0:
        return np.zeros((0, 3))
    pad = int(np.ceil(4 * sigma_vox)) + 1
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, image.shape)
    box = image[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))].astype(np.float32)
    local = tuple((idx - lo).T)
    d = [ndi.gaussian_filter(box, sigma_vox, order=o, mode="nearest")[local] for o in
         _HESSIAN_ORDERS]
    h = np.empty((len(idx), 3, 3))
    h[:, 0, 0], h[:, 1, 1], h[:, 2, 2] = d[0], d[1], d[2]
    h[:, 0, 1] = h[:, 1, 0] = d[3]
    h[:, 0, 2] = h[:, 2, 0] = d[4]
    h[:, 1, 2] = h[:, 2, 1] = d[5]
    ev = np.linalg.eigvalsh(h * sigma_vox**2)
    order = np.argsort(np.abs(ev), axis=1)
    return np.take_along_axis(ev, order, axis=1)


def frangi_bright(ev: np.ndarray, *, alpha: float = 0.5, beta: float = 0.5,
                  c: float | None = None) -> np.ndarray:
    """Frangi vesselness of bright tubes from magnitude-sorted eigenvalues (N, 3)."""
    l1, l2, l3 = np.abs(ev[:, 0]), np.abs(ev[:, 1]), np.abs(ev[:, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.where(l3 > 0, l2 / l3, 0.0)
        rb = np.where(l2 * l3 > 0, l1 / np.sqrt(l2 * l3), 1.0)
    s = np.sqrt(l1**2 + l2**2 + l3**2)
    if c is None:
        c = 0.5 * float(s.max()) if s.size and s.max() > 0 else 1.0
    v = ((1 - np.exp(-(ra**2) / (2 * alpha**2))) * np.exp(-(rb**2) / (2 * beta**2))
         * (1 - np.exp(-(s**2) / (2 * c**2))))
    return np.where((ev[:, 1] < 0) & (ev[:, 2] < 0), v, 0.0)


def vesselness(contrast: np.ndarray, where: np.ndarray, voxel_size, radii_mm) -> np.ndarray:
    """Multi-scale Frangi vesselness of bright tubes at the voxels ``where`` (zero elsewhere).

    Scales ``sigma = radius / sqrt(2)`` in voxels (the Gaussian scale that best matches a tube
    of that radius), maximum over scales (Frangi 1998, alpha = beta = 0.5, c = half the
    largest Hessian norm at each scale).
    """
    vs = float(np.mean(voxel_size))
    sigmas = sorted({round(max(0.7, r / vs / np.sqrt(2.0)), 2) for r in radii_mm})
    out = np.zeros(contrast.shape, np.float32)
    if not where.any():
        return out
    best = np.zeros(int(where.sum()))
    for sigma in sigmas:
        best = np.maximum(best, frangi_bright(hessian_eigenvalues(contrast, sigma, where)))
    out[where] = best
    return out


def _extent_mm(points_mm: np.ndarray) -> float:
    if len(points_mm) < 2:
        return 0.0
    centred = points_mm - points_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[0]
    return float(proj.max() - proj.min())


def elongation(points_mm: np.ndarray) -> float:
    """sqrt(lambda1 / lambda2) of the point covariance: 1 for a ball, L/(r sqrt 3) for a rod."""
    if len(points_mm) < 3:
        return 1.0
    ev = np.sort(np.linalg.eigvalsh(np.cov(np.asarray(points_mm, float).T)))[::-1]
    if ev[1] <= 1e-12:
        return float("inf") if ev[0] > 1e-12 else 1.0
    return float(np.sqrt(ev[0] / ev[1]))


def slenderness(component: np.ndarray, voxel_size) -> float:
    """Skeleton length over twice the largest inscribed radius (EDT - half a voxel); 0 for
    objects thinner than two voxels (shell fragments, whose skeleton says nothing)."""
    padded = np.pad(component, 1)
    step = float(np.mean(voxel_size))
    radius = float(ndi.distance_transform_edt(padded, sampling=voxel_size).max()) - 0.5 * step
    if radius < step:
        return 0.0
    length = float(skeleton(padded).sum()) * step
    return length / (2.0 * radius)


def segment_veins(
    chi_ppm,
    mask,
    voxel_size,
    *,
    radii_mm=(0.75, 1.0, 1.5, 2.0, 3.0),
    background_radius_mm: float = 10.0,
    min_contrast_ppm: float = 0.1,
    vesselness_fraction: float = 0.05,
    min_length_mm: float = 6.0,
    min_elongation: float = 2.5,
    min_slenderness: float = 4.0,
    min_aspect: float = 3.0,
    max_cross_section_ratio: float = 2.0,
    max_radius_mm: float = 10.0,
) -> VeinSegmentation:
    """Segment veins (paramagnetic tubes) of a chi map.

    A voxel is vein when its top-hat contrast exceeds ``min_contrast_ppm`` and its Frangi
    vesselness exceeds ``vesselness_fraction`` times the 99th percentile of vesselness over
    those voxels. Connected components (26-connected) are kept when at least ``min_length_mm``
    long and either elongated (``sqrt(l1/l2)`` of their principal moments, about
    ``L / (r sqrt 3)`` for a cylinder and 1 for a ball, at least ``min_elongation``) or, for
    branched trees (some slab across the main axis cuts them in several pieces), slender
    (skeleton length over twice the largest inscribed radius at least ``min_slenderness``).
    This removes microbleeds and most blobs that the vesselness lets through.

    The vesselness mask of an elongated blob is a thin ridge inside it, so the shape of the
    mask is not enough: a deep grey nucleus (an ellipsoid 1-2 cm long, such as the globus
    pallidus or the substantia nigra) leaves a rod-like ridge. The object itself is measured:
    each component is split into branches (:func:`vein_branches`) and the half-maximum
    contrast tube around each centre line gives its radius and cross-section
    (:func:`measure_branch`). A component is kept only if at least one branch is a tube
    (:func:`is_tube`): length at least ``min_aspect`` diameters and a round cross-section
    (``sqrt(l1/l2)`` of its in-plane moments at most ``max_cross_section_ratio``). A nucleus
    is about as long as it is wide (length/diameter about 1.5-2.2 in the phantom and in vivo);
    the veins used for oximetry are tubes many diameters long. Set ``min_aspect=0`` to skip.
    """
    chi = check_chi(chi_ppm)
    vs = check_voxel_size(voxel_size)
    mask = check_same_grid(chi, mask, "the mask").astype(bool)
    if not mask.any():
        raise InputError("the mask is empty")
    contrast = local_contrast(chi, mask, vs, background_radius_mm)
    candidate = mask & (contrast > min_contrast_ppm)
    vness = vesselness(contrast, candidate, vs, radii_mm)
    top = float(np.percentile(vness[candidate], 99.0)) if candidate.any() else 0.0
    if top > 0:
        candidate &= vness > vesselness_fraction * top
    comps, n = ndi.label(candidate, structure=np.ones((3, 3, 3), bool))
    keep = np.zeros(n + 1, bool)
    for i, slc in enumerate(ndi.find_objects(comps), start=1):
        local = comps[slc] == i
        pts_mm = (np.argwhere(local) + [s.start for s in slc]) * vs
        if _extent_mm(pts_mm) < min_length_mm:
            continue
        if elongation(pts_mm) >= min_elongation:
            keep[i] = True
        elif not _is_simple_tube(np.argwhere(local), vs, float(np.mean(vs))):
            keep[i] = slenderness(local, vs) >= min_slenderness
    veins = keep[comps]
    comps, n = ndi.label(veins, structure=np.ones((3, 3, 3), bool))
    parameters = {"radii_mm": list(radii_mm), "background_radius_mm": background_radius_mm,
                  "min_contrast_ppm": min_contrast_ppm,
                  "vesselness_fraction": vesselness_fraction,
                  "min_length_mm": min_length_mm, "min_elongation": min_elongation,
                  "min_slenderness": min_slenderness, "min_aspect": min_aspect,
                  "max_cross_section_ratio": max_cross_section_ratio,
                  "max_radius_mm": max_radius_mm}
    if n and (min_aspect > 0 or np.isfinite(max_cross_section_ratio)):
        draft = VeinSegmentation(mask=veins, components=comps, vesselness=vness,
                                 contrast_ppm=contrast, parameters=parameters)
        tubular = np.zeros(n + 1, bool)
        for branch in vein_branches(draft, vs):
            label = int(comps[tuple(branch.voxels[0])])
            if tubular[label]:
                continue
            radius, _, cross = measure_branch(branch, contrast, mask, vs,
                                              max_radius_mm=max_radius_mm, vein_mask=veins)
            tubular[label] = is_tube(branch.length_mm, radius, cross, min_aspect=min_aspect,
                                     max_cross_section_ratio=max_cross_section_ratio)
        veins = tubular[comps]
        comps, _ = ndi.label(veins, structure=np.ones((3, 3, 3), bool))
    return VeinSegmentation(mask=veins, components=comps, vesselness=vness,
                            contrast_ppm=contrast, parameters=parameters)


_OFFSETS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                     if (i, j, k) != (0, 0, 0)])


def _neighbour_graph(points: np.ndarray, voxel_size) -> scipy.sparse.csr_matrix:
    """26-neighbour graph of voxel points with Euclidean edge lengths (mm), upper triangle."""
    index = {tuple(p): i for i, p in enumerate(points)}
    rows, cols, weights = [], [], []
    for i, p in enumerate(points):
        for off in _OFFSETS:
            j = index.get(tuple(p + off))
            if j is not None and j > i:
                rows.append(i)
                cols.append(j)
                weights.append(float(np.linalg.norm(off * voxel_size)))
    n = len(points)
    return scipy.sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """3D skeleton (Lee 1994 thinning) of each connected component of ``mask``.

    scikit-image's 3D thinning deletes some objects of even thickness entirely (scikit-image
    issue #3757); a component that vanishes is thinned again after growing it by one voxel
    along each axis (which changes the parity of its width), and failing that is represented by
    its voxels of maximal distance to the wall.
    """
    from skimage.morphology import skeletonize

    comps, _ = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    out = np.zeros(mask.shape, bool)
    for i, slc in enumerate(ndi.find_objects(comps), start=1):
        if slc is None:
            continue
        lo = [max(s.start - 2, 0) for s in slc]
        hi = [min(s.stop + 2, n) for s, n in zip(slc, mask.shape, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        comp = comps[box] == i
        sk = skeletonize(comp).astype(bool)
        if sk.sum() < 2:
            grown = comp.copy()
            for axis in range(3):
                grown |= np.roll(comp, 1, axis=axis)
            sk2 = skeletonize(grown).astype(bool) & grown
            sk = sk2 if sk2.sum() > sk.sum() else sk
        if not sk.any():
            dist = ndi.distance_transform_edt(comp)
            sk = comp & (dist >= dist.max())
        out[box] |= sk
    return out


def _split_skeleton(points: np.ndarray, voxel_size, prune_mm: float) -> np.ndarray:
    """Branch number of each skeleton point (-1: junction or pruned spur).

    The 26-neighbour graph of the points is reduced to its minimum spanning tree (which drops
    the short-cut edges of digital staircases); nodes of degree >= 3 are junctions; end
    branches shorter than ``prune_mm`` (thinning spurs) are pruned and the junctions found
    again.
    """
    n = len(points)
    if n < 3:
        return np.zeros(n, int)
    tree = scipy.sparse.csgraph.minimum_spanning_tree(_neighbour_graph(points, voxel_size))
    tree = (tree + tree.T).tocsr()
    alive = np.ones(n, bool)
    labels = np.zeros(n, int)
    for _ in range(4):
        sub = tree[alive][:, alive]
        degree = np.diff(sub.indptr)
        junction = degree >= 3
        keep = ~junction
        graph = sub[keep][:, keep]
        _, lab = scipy.sparse.csgraph.connected_components(graph, directed=False)
        alive_idx = np.flatnonzero(alive)
        labels = np.full(n, -1)
        labels[alive_idx[keep]] = lab
        if not junction.any():
            break
        removed = False
        for b in np.unique(lab):
            members = alive_idx[keep][lab == b]
            is_leaf = np.any(degree[keep][lab == b] <= 1)
            length = len(members) * float(np.mean(voxel_size))
            if is_leaf and length < prune_mm and len(np.unique(lab)) > 1:
                alive[members] = False
                removed = True
        if not removed:
            break
    return labels


def _slab_centreline(points_mm: np.ndarray, weights: np.ndarray, step_mm: float):
    """Centre line of a tube: weighted centroids of slabs of ``step_mm`` along its main axis.

    Returns (ordered (M, 3) centre-line points in mm, unit axis).
    """
    axis = _principal_axis(points_mm) if len(points_mm) > 2 else np.array([0.0, 0.0, 1.0])
    t = (points_mm - points_mm.mean(axis=0)) @ axis
    k = np.floor((t - t.min()) / step_mm).astype(int)
    w = np.maximum(weights, 0.0) + 1e-9
    count = np.bincount(k, weights=w)
    filled = count > 0
    centre = np.stack([np.bincount(k, weights=w * points_mm[:, d]) for d in range(3)], axis=1)
    return centre[filled] / count[filled, None], axis


def _polyline_length(points_mm: np.ndarray) -> float:
    if len(points_mm) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(points_mm, axis=0), axis=1).sum())


@dataclasses.dataclass
class VeinBranch:
    """One unbranched piece of a segmented vein."""

    voxels: np.ndarray
    """(N, 3) voxel indices of the vein mask assigned to this branch."""
    centreline_mm: np.ndarray
    """(M, 3) ordered centre-line points (mm, array axes; divide by voxel size for indices)."""
    axis: np.ndarray
    """Unit main direction (array axes)."""
    length_mm: float


def vein_branches(segmentation: VeinSegmentation, voxel_size, *, min_length_mm: float = 3.0,
                  prune_mm: float | None = None) -> list[VeinBranch]:
    """Split each vein component at its skeleton junctions and trace each branch's centre line.

    Every voxel of the component goes to the branch of its nearest skeleton point; the centre
    line of a branch is the contrast-weighted centroid of its voxels in slabs one voxel thick
    along the branch axis (sub-voxel, free of the staircase of a digital skeleton). The length
    is that of the centre line plus one slab.
    """
    from scipy.spatial import cKDTree

    vs = np.asarray(voxel_size, float)
    step = float(np.mean(vs))
    prune_mm = 3.0 * step if prune_mm is None else float(prune_mm)
    comps = segmentation.components
    contrast = segmentation.contrast_ppm
    branches = []
    for i, slc in enumerate(ndi.find_objects(comps), start=1):
        if slc is None:
            continue
        origin = np.array([s.start for s in slc])
        comp = comps[slc] == i
        voxels = np.argwhere(comp)
        if _is_simple_tube(voxels, vs, step):
            owner = np.zeros(len(voxels), int)
        else:
            sk_pts = np.argwhere(skeleton(np.pad(comp, 1))) - 1
            labels = _split_skeleton(sk_pts, vs, prune_mm) if len(sk_pts) else np.zeros(0, int)
            valid = labels >= 0
            if not valid.any():
                owner = np.zeros(len(voxels), int)
            else:
                _, nearest = cKDTree(sk_pts[valid] * vs).query(voxels * vs)
                owner = labels[valid][nearest]
        groups = [voxels[owner == b] + origin for b in np.unique(owner)]
        traced = [_trace(vox, contrast, vs, step) for vox in groups if len(vox) >= 2]
        for branch in _merge_parallel(traced, contrast, vs, step):
            if branch.length_mm >= min_length_mm:
                branches.append(branch)
    return branches


def _is_simple_tube(voxels: np.ndarray, vs: np.ndarray, step: float) -> bool:
    """True when every slab across the main axis cuts the object in one connected piece
    (an unbranched tube that does not fold back), so it needs no skeleton."""
    if len(voxels) < 3:
        return True
    pts = voxels * vs
    axis = _principal_axis(pts)
    t = (pts - pts.mean(axis=0)) @ axis
    k = np.floor((t - t.min()) / step).astype(int)
    lo = voxels.min(axis=0)
    shape = voxels.max(axis=0) - lo + 1
    for slab in np.unique(k):
        sel = voxels[k == slab] - lo
        if len(sel) < 2:
            continue
        img = np.zeros(shape, bool)
        img[tuple(sel.T)] = True
        if ndi.label(img, structure=np.ones((3, 3, 3), bool))[1] > 1:
            return False
    return True


def _trace(voxels: np.ndarray, contrast: np.ndarray, vs: np.ndarray, step: float) -> VeinBranch:
    centre, axis = _slab_centreline(voxels * vs, contrast[tuple(voxels.T)], step)
    return VeinBranch(voxels, centre, axis, _polyline_length(centre) + step)


def _merge_parallel(branches: list[VeinBranch], contrast, vs, step) -> list[VeinBranch]:
    """Merge branches of one component that run side by side (a thinning artefact of thick,
    oblique tubes: two parallel skeleton lines instead of one)."""
    from scipy.spatial import cKDTree

    merged = True
    while merged and len(branches) > 1:
        merged = False
        for a in range(len(branches)):
            for b in range(a + 1, len(branches)):
                ba, bb = branches[a], branches[b]
                if abs(float(ba.axis @ bb.axis)) < 0.9:
                    continue
                short, long_ = (ba, bb) if len(ba.centreline_mm) <= len(bb.centreline_mm) \
                    else (bb, ba)
                dist, _ = cKDTree(long_.centreline_mm).query(short.centreline_mm)
                if np.median(dist) <= 2.0 * step:
                    vox = np.concatenate([ba.voxels, bb.voxels])
                    branches = [br for k, br in enumerate(branches) if k not in (a, b)]
                    branches.append(_trace(vox, contrast, vs, step))
                    merged = True
                    break
            if merged:
                break
    return branches


def _principal_axis(points_mm: np.ndarray) -> np.ndarray:
    centred = points_mm - points_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[0]


def _sample(volume: np.ndarray, points_mm: np.ndarray, voxel_size) -> np.ndarray:
    """Trilinear interpolation of ``volume`` at points given in mm."""
    coords = (np.asarray(points_mm, float) / np.asarray(voxel_size, float)).T
    return ndi.map_coordinates(volume.astype(np.float32), coords, order=1, mode="nearest")


def _half_max_tube(contrast, mask, branch: VeinBranch, inner: np.ndarray, voxel_size,
                   max_radius_mm: float):
    """Radius (mm) and cross-section ratio of the half-maximum tube around a centre line.

    Voxels within ``max_radius_mm`` of the centre line whose top-hat contrast is at least half
    the median centre-line contrast, connected to the centre line, form the tube; the volume of
    the part next to the inner (non-end) centre-line points divided by their length is
    ``pi r^2``. Half maximum keeps the area of a disc blurred by a symmetric point-spread
    function. The cross-section ratio is ``sqrt(l1 / l2)`` of the second moments of that part
    across the local direction of the centre line (offsets from the nearest centre-line point,
    its tangent component removed): 1 for a round tube, larger for a flat or split one.
    Returns ``None`` when there is no tube.
    """
    from scipy.spatial import cKDTree

    vs = np.asarray(voxel_size, float)
    centre = branch.centreline_mm
    c0 = float(np.median(_sample(contrast, centre[inner], vs)))
    if not c0 > 0:
        return None
    pad = np.ceil(max_radius_mm / vs).astype(int) + 1
    lo = np.maximum(branch.voxels.min(axis=0) - pad, 0)
    hi = np.minimum(branch.voxels.max(axis=0) + pad + 1, contrast.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grid = np.argwhere(np.ones(hi - lo, bool))
    dist, owner = cKDTree(centre).query((grid + lo) * vs)
    dist = dist.reshape(hi - lo)
    owner = owner.reshape(hi - lo)
    tube = (dist <= max_radius_mm) & (contrast[box] >= 0.5 * c0) & mask[box]
    comps, _ = ndi.label(tube, structure=np.ones((3, 3, 3), bool))
    core = tube & (dist <= 0.87 * float(vs.max()))  # half a voxel diagonal
    touching = np.unique(comps[core])
    tube &= np.isin(comps, touching[touching > 0])
    part = tube & inner[owner]
    n_inner = int(np.count_nonzero(part))
    length = float(np.count_nonzero(inner)) * float(np.mean(vs))
    if n_inner == 0 or length <= 0:
        return None
    radius = float(np.sqrt(n_inner * np.prod(vs) / (np.pi * length)))
    return radius, _cross_section_ratio((np.argwhere(part) + lo) * vs, owner[part], centre,
                                        branch.axis)


def _cross_section_ratio(points_mm, owner, centre, axis) -> float:
    """``sqrt(l1 / l2)`` of the pooled in-plane second moments of tube voxels about their
    centre-line points (each voxel's offset without its component along the local tangent,
    minus the mean offset of its centre-line point)."""
    if len(centre) >= 2:
        tangent = np.gradient(centre, axis=0)
        norm = np.linalg.norm(tangent, axis=1, keepdims=True)
        tangent = np.where(norm > 0, tangent / np.maximum(norm, 1e-12), axis)
    else:
        tangent = np.broadcast_to(axis, centre.shape)
    d = points_mm - centre[owner]
    t = tangent[owner]
    q = d - (d * t).sum(axis=1, keepdims=True) * t
    n = np.bincount(owner, minlength=len(centre)).astype(float)
    mean = np.stack([np.bincount(owner, weights=q[:, k], minlength=len(centre))
                     for k in range(3)], axis=1) / np.maximum(n, 1.0)[:, None]
    q = q - mean[owner]
    if len(q) < 3:
        return 1.0
    ev = np.sort(np.linalg.eigvalsh(q.T @ q / len(q)))[::-1]
    if ev[1] <= 1e-12:
        return float("inf") if ev[0] > 1e-12 else 1.0
    return float(np.sqrt(ev[0] / ev[1]))


def measure_branch(branch: VeinBranch, contrast, mask, voxel_size, *,
                   max_radius_mm: float = 10.0, vein_mask=None):
    """Radius, inner centre-line points and cross-section ratio of one vein branch.

    The ends of the centre line are excluded by one radius (re-estimated once): the tube is
    measured where it is a tube, not at its rounded or branching ends. Returns
    ``(radius_mm, inner, cross_section_ratio)``; ``inner`` is a boolean array over the
    centre-line points. Without a half-maximum tube the radius falls back to the largest
    distance of ``vein_mask`` (or the branch voxels) to its wall.
    """
    vs = np.asarray(voxel_size, float)
    step = float(np.mean(vs))
    centre = branch.centreline_mm
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(centre, axis=0), axis=1))])
    measured = None
    margin = step
    for _ in range(2):
        inner = (arc >= margin - 1e-6) & (arc <= arc[-1] - margin + 1e-6)
        if inner.sum() < 3:
            inner = np.ones(len(centre), bool)
        measured = _half_max_tube(contrast, mask, branch, inner, vs, max_radius_mm)
        if measured is None:
            break
        margin = max(step, measured[0])
    if measured is not None:
        return measured[0], inner, measured[1]
    if vein_mask is None:
        vein_mask = np.zeros(contrast.shape, bool)
        vein_mask[tuple(branch.voxels.T)] = True
    edt = ndi.distance_transform_edt(vein_mask, sampling=vs)
    radius = max(0.5 * step, float(edt[tuple(branch.voxels.T)].max()) - 0.5 * step)
    return radius, inner, 1.0


def is_tube(length_mm: float, radius_mm: float, cross_section_ratio: float, *,
            min_aspect: float, max_cross_section_ratio: float) -> bool:
    """A vein segment is a tube: its length is at least ``min_aspect`` diameters and its
    cross-section is round (ratio of its axes at most ``max_cross_section_ratio``)."""
    return bool(length_mm >= min_aspect * 2.0 * radius_mm
                and cross_section_ratio <= max_cross_section_ratio)


def _vein_chi_sd(samples, branch, voxel_size, reference_se: float) -> float:
    """Standard error (ppm) of a vein's chi: the median of its centre-line samples (SE of a
    median ``1.2533 s / sqrt(n_eff)``, with ``s`` the robust SD along the centre line and
    ``n_eff`` its length in voxels, since neighbouring samples share voxels) combined with the
    standard error of the reference mean. Partial volume is kept out by the ``usable`` rule
    (radius at least 1.5 voxels) and is not part of this figure."""
    samples = np.asarray(samples, float)
    if samples.size < 2:
        return float("nan")
    s = 1.4826 * float(np.median(np.abs(samples - np.median(samples))))
    n_eff = max(1.0, branch.length_mm / float(np.mean(voxel_size)))
    return float(np.hypot(1.2533 * s / np.sqrt(n_eff), reference_se))


def _region_cbf(cbf_map, labels, names, region, mask, default):
    """Mean CBF over the labels named ``region`` (the brain-mask mean when not found)."""
    if cbf_map is None or labels is None or region == "brain":
        return default
    ids = [k for k, v in names.items() if str(v) == region]
    if not ids and region.startswith("label_"):
        ids = [int(region.split("_")[-1])]
    sel = np.isin(labels, ids) & mask
    return float(cbf_map[sel].mean()) if sel.any() else default


class _FieldContext:
    """What the field estimate of every vein of one map shares: the local field, the field
    of the whole chi map (computed once) and the smooth tissue chi that replaces a vein when
    its own field is kept (:func:`qsmkit.analysis.vein_field.field_without_other_sources`)."""

    def __init__(self, field_hz, field_mask, chi, mask, voxel_size, b0_dir, b0_tesla):
        from qsmkit.analysis import vein_field

        self.field_hz, self.field_mask = field_hz, field_mask & mask
        self.chi, self.mask, self.vs = chi, mask, voxel_size
        self.b0_dir, self.b0_tesla = b0_dir, b0_tesla
        self.forward = vein_field.forward_field_hz(np.where(mask, chi, 0.0), voxel_size,
                                                   b0_dir, b0_tesla)
        self.background = local_background(chi, mask, voxel_size, 10.0)

    def fit(self, seg: VeinSegmentation, branch: VeinBranch, radius_mm: float):
        """Field fit of one vein, in a box around it: its component (grown by two voxels, its
        wall and the halo of the reconstruction) is the only source left in the field within
        reach of the fit; voxels within ``2 radius + 1 mm`` of other vein voxels are left
        out."""
        from qsmkit.analysis import vein_field

        vs = np.asarray(self.vs, float)
        reach = max(12.0, vein_field.OUTER_RADII * radius_mm + 2.0 * float(vs.max()))
        gap = 2.0 * radius_mm + 1.0
        pad = np.ceil((reach + gap) / vs).astype(int)
        lo = np.maximum(branch.voxels.min(axis=0) - pad, 0)
        hi = np.minimum(branch.voxels.max(axis=0) + pad + 1, seg.mask.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        label = int(seg.components[tuple(branch.voxels[0])])
        keep = ndi.binary_dilation(seg.components[box] == label, iterations=2)
        field = vein_field.field_without_other_sources(
            self.field_hz[box], self.chi[box], self.mask[box], vs, self.b0_dir,
            self.b0_tesla, keep, self.background[box], field_of_chi_hz=self.forward[box],
            reach_mm=reach)
        this = np.zeros(keep.shape, bool)
        this[tuple((branch.voxels - lo).T)] = True
        others = seg.mask[box] & ~this
        exclude = (ndi.distance_transform_edt(~others, sampling=vs) < gap
                   if others.any() else None)
        fit = vein_field.fit_vein_field(field, self.field_mask[box], vs,
                                        branch.centreline_mm - lo * vs, radius_mm,
                                        self.b0_dir, self.b0_tesla, exclude=exclude)
        if fit is None:
            return None
        return dataclasses.replace(fit, outside_voxels=fit.outside_voxels + lo)


@dataclasses.dataclass
class OximetryResult:
    rows: list[dict]
    regions: list[dict]
    summary: dict
    parameters: dict
    segmentation: VeinSegmentation


def cmro2_umol_per_100g_per_min(cbf_ml_per_100g_per_min, oef, cao2_ml_per_dl):
    """CMRO2 = CBF x OEF x CaO2 in umol O2 / 100 g / min (CaO2 in mL O2 / dL blood)."""
    ml_o2 = (np.asarray(cbf_ml_per_100g_per_min, float) * np.asarray(oef, float)
             * np.asarray(cao2_ml_per_dl, float) / 100.0)
    return ml_o2 / ML_O2_PER_MMOL * 1000.0


def venous_oximetry(
    chi_ppm,
    mask,
    voxel_size,
    *,
    b0_dir=(0.0, 0.0, 1.0),
    hct: float = physiology.DEFAULT_HCT,
    ya: float = DEFAULT_YA,
    hb_g_per_dl: float | None = None,
    pao2_mmhg: float = 95.0,
    cbf=None,
    reference_mask=None,
    reference_ppm: float | None = None,
    labels=None,
    label_names: dict | None = None,
    min_radius_mm: float | None = None,
    max_radius_mm: float = 10.0,
    min_aspect: float = 3.0,
    max_cross_section_ratio: float = 2.0,
    segmentation: VeinSegmentation | None = None,
    chi_reference: dict | None = None,
    local_field_hz=None,
    b0_tesla: float | None = None,
    field_mask=None,
    max_field_yv_se: float = 0.01,
    **segment_options,
) -> OximetryResult:
    """Per-vein-segment Yv and OEF, per-region averages and CMRO2.

    Parameters
    ----------
    chi_ppm : (X, Y, Z) chi map, SI ppm
    mask : (X, Y, Z) bool brain mask
    voxel_size : 3 floats, mm
    b0_dir : B0 direction in voxel coordinates (for the vessel angle theta)
    hct : haematocrit (fraction), default 0.42
    ya : arterial saturation SaO2 (fraction), default 0.98
    hb_g_per_dl : haemoglobin; default ``hct * 33.3`` (normal MCHC)
    pao2_mmhg : arterial O2 partial pressure for the dissolved-O2 term of CaO2
    cbf : None, a scalar (mL/100 g/min) or an (X, Y, Z) map; gives CMRO2
    reference_mask : (X, Y, Z) bool; its mean chi inside ``mask`` is taken as water (CSF). Or give
        ``reference_ppm``; with neither, chi is used as given (assumed referenced to CSF).
    labels, label_names : optional label image for the per-region table
    min_radius_mm : segments thinner than this are reported but not ``usable``;
        default 1.5 voxels (mean voxel size), below which partial volume biases chi
    max_radius_mm : largest vein radius looked for around a centre line
    min_aspect, max_cross_section_ratio : a segment is ``usable`` only if it is a tube: length
        at least ``min_aspect`` (3) diameters and a round cross-section (ratio of its axes at
        most ``max_cross_section_ratio``, 2); passed on to :func:`segment_veins`, which drops
        components with no such branch (deep grey nuclei)
    segmentation : a precomputed :class:`VeinSegmentation` (else :func:`segment_veins` with
        ``segment_options``)
    chi_reference : the ``ChiReference`` record of the map (:mod:`qsmkit.reference`), used
        when neither ``reference_mask`` nor ``reference_ppm`` is given: chi is converted to
        CSF with its ``CSFPpm``, or refused (InputError) when the record has no CSF level.
        Without any of the three, chi is taken as already referenced to CSF.
    local_field_hz : (X, Y, Z) local (tissue) field in Hz on the grid of chi (the
        ``local_field_hz.nii.gz`` of ``qsmkit run``); with ``b0_tesla``, each usable vein
        also gets the field estimate (:mod:`qsmkit.analysis.vein_field`)
    b0_tesla : field strength (T), needed with ``local_field_hz``
    field_mask : (X, Y, Z) bool, where ``local_field_hz`` is valid (default ``mask``)
    max_field_yv_se : the field estimate replaces the chi estimate of a vein when its
        standard error in Yv is at most this (0.01, a fifth of the 0.05 usually asked of Yv)
    """
    chi = check_chi(chi_ppm)
    vs = check_voxel_size(voxel_size)
    mask = check_same_grid(chi, mask, "the mask").astype(bool)
    hct = float(physiology._check_hct(hct))
    if not 0 < ya <= 1:
        raise InputError(f"arterial saturation Ya must be in (0, 1], got {ya}")
    b0 = np.asarray(b0_dir, dtype=float)
    if b0.shape != (3,) or not np.linalg.norm(b0) > 0:
        raise InputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    b0 = b0 / np.linalg.norm(b0)
    if min_radius_mm is None:
        min_radius_mm = 1.5 * float(np.mean(vs))
    hb = hct * MCHC_G_PER_DL if hb_g_per_dl is None else float(hb_g_per_dl)
    cao2 = float(physiology.oxygen_content_ml_per_dl(hb, ya, pao2_mmhg))

    ref_se = 0.0  # standard error of a reference measured here (ppm)
    if reference_ppm is not None:
        ref_value, ref_text = float(reference_ppm), "given value"
    elif reference_mask is not None:
        ref = check_same_grid(chi, reference_mask, "the reference (CSF) mask").astype(bool)
        ref &= mask
        if not ref.any():
            raise InputError("the reference (CSF) mask has no voxel inside the mask; chi is "
                             "only valid inside the mask")
        ref_value, ref_text = float(chi[ref].mean()), f"mean over {int(ref.sum())} voxels"
        ref_se = float(np.std(chi[ref]) / np.sqrt(ref.sum()))
    elif chi_reference is not None:
        from qsmkit.reference import offset_to_reference

        offset = offset_to_reference(chi_reference, "csf")
        if offset is None:
            raise InputError(
                f"chi is referenced to {chi_reference.get('Region', 'an unknown region')} and "
                "no CSF level is known; Yv needs chi relative to CSF: give a CSF mask, CSF "
                "labels or the chi of CSF in this map")
        ref_value = float(offset)
        ref_text = f"CSF level recorded with the map ({chi_reference.get('Region')})"
    else:
        ref_value, ref_text = 0.0, "none: chi assumed already referenced to CSF (water)"

    cbf_map = None
    if cbf is not None:
        if np.ndim(cbf) == 0:
            cbf_scalar = float(cbf)
            if not cbf_scalar > 0:
                raise InputError(f"CBF must be positive (mL/100 g/min), got {cbf_scalar}")
        else:
            cbf_map = check_same_grid(chi, cbf, "the CBF map").astype(float)
            cbf_scalar = float(np.mean(cbf_map[mask]))
    else:
        cbf_scalar = None

    if labels is not None:
        labels = check_same_grid(chi, labels, "the label image").astype(np.int64)
    names = dict(label_names or {})

    field_fit = None
    if local_field_hz is not None:
        if b0_tesla is None or not float(b0_tesla) > 0:
            raise InputError("the field estimate of Yv needs the field strength: give b0_tesla "
                             "(T) with the local field")
        field = check_same_grid(chi, local_field_hz, "the local field").astype(np.float32)
        valid = mask if field_mask is None else check_same_grid(chi, field_mask,
                                                                "the field mask").astype(bool)
        finite = np.isfinite(field)  # NaN/inf voxels are left out of the fit
        field_fit = _FieldContext(np.where(finite, field, 0.0), valid & finite, chi, mask, vs,
                                  b0, float(b0_tesla))

    seg = segmentation or segment_veins(chi, mask, vs, min_aspect=min_aspect,
                                        max_cross_section_ratio=max_cross_section_ratio,
                                        max_radius_mm=max_radius_mm, **segment_options)
    branches = vein_branches(seg, vs)
    rows = []
    for number, branch in enumerate(branches, start=1):
        centre = branch.centreline_mm
        theta = float(np.degrees(np.arccos(min(1.0, abs(float(branch.axis @ b0))))))
        radius, inner, cross = measure_branch(branch, seg.contrast_ppm, mask, vs,
                                              max_radius_mm=max_radius_mm,
                                              vein_mask=seg.mask)
        aspect = branch.length_mm / (2.0 * radius)
        samples = _sample(chi, centre[inner], vs)
        chi_vein = float(np.median(samples)) - ref_value
        chi_sd = _vein_chi_sd(samples, branch, vs, ref_se)
        yv_sd = chi_sd / (hct * physiology.DCHI_DO_PPM)
        yv = yv_chi = float(physiology.saturation_from_chi(chi_vein, hct))
        tube = is_tube(branch.length_mm, radius, cross, min_aspect=min_aspect,
                       max_cross_section_ratio=max_cross_section_ratio)
        measurable = bool(radius >= min_radius_mm and tube and inner.sum() >= 3)
        field_row = {"yv_field": None, "yv_field_sd": None, "dchi_field_ppm": None,
                     "tissue_chi_ppm": None}
        estimate = "chi"
        if field_fit is not None and measurable:
            fit = field_fit.fit(seg, branch, radius)
            if fit is not None and np.isfinite(fit.dchi_ppm):
                tissue = chi[tuple(fit.outside_voxels.T)]
                tissue_ppm = float(np.median(tissue)) - ref_value
                tissue_se = 1.2533 * float(np.std(tissue)) / np.sqrt(tissue.size)
                yv_field = float(physiology.saturation_from_chi(fit.dchi_ppm + tissue_ppm,
                                                                hct))
                yv_field_sd = (float(np.sqrt(fit.dchi_se_ppm**2 + tissue_se**2 + ref_se**2))
                               / (hct * physiology.DCHI_DO_PPM))
                field_row = {"yv_field": yv_field, "yv_field_sd": yv_field_sd,
                             "dchi_field_ppm": fit.dchi_ppm, "tissue_chi_ppm": tissue_ppm}
                if yv_field_sd <= max_field_yv_se and 0.0 < yv_field < 1.0:
                    estimate, yv, yv_sd = "field", yv_field, yv_field_sd
        oef = (ya - yv) / ya
        usable = bool(measurable and 0.0 < yv < 1.0)
        region = "brain"
        if labels is not None:
            vals = labels[tuple(branch.voxels.T)]
            vals = vals[vals > 0]
            if vals.size:
                lab = int(np.bincount(vals).argmax())
                region = str(names.get(lab, f"label_{lab}"))
        seg_cbf = _region_cbf(cbf_map, labels, names, region, mask, cbf_scalar)
        cmro2 = (float(cmro2_umol_per_100g_per_min(seg_cbf, oef, cao2))
                 if seg_cbf is not None else None)
        centroid = centre.mean(axis=0) / vs
        rows.append({
            "id": number, "x": float(centroid[0]), "y": float(centroid[1]),
            "z": float(centroid[2]), "length_mm": branch.length_mm,
            "radius_mm": radius, "theta_deg": theta, "chi_ppm": chi_vein, "yv": yv,
            "oef": oef, "n_centreline": int(inner.sum()), "aspect": float(aspect),
            "cross_section_ratio": float(cross), "usable": usable,
            "yv_sd": float(yv_sd), "chi_sd_ppm": float(chi_sd), "estimate": estimate,
            "yv_chi": yv_chi, **field_row,
            "cmro2_umol_per_100g_per_min": cmro2, "region": region,
        })

    regions = []
    for region in sorted({r["region"] for r in rows}):
        sel = [r for r in rows if r["region"] == region]
        good = [r for r in sel if r["usable"]]
        weights = np.array([r["length_mm"] for r in good])
        yv = float(np.average([r["yv"] for r in good], weights=weights)) if good else None
        oef = (ya - yv) / ya if yv is not None else None
        reg_cbf = _region_cbf(cbf_map, labels, names, region, mask, cbf_scalar)
        cmro2 = (float(cmro2_umol_per_100g_per_min(reg_cbf, oef, cao2))
                 if (reg_cbf is not None and oef is not None) else None)
        regions.append({
            "region": region, "n_segments": len(sel), "n_usable": len(good),
            "length_mm": float(sum(r["length_mm"] for r in good)), "yv": yv, "oef": oef,
            "cbf_ml_per_100g_per_min": reg_cbf, "cmro2_umol_per_100g_per_min": cmro2,
        })

    good = [r for r in rows if r["usable"]]
    global_yv = (float(np.average([r["yv"] for r in good],
                                  weights=[r["length_mm"] for r in good])) if good else None)
    global_oef = (ya - global_yv) / ya if global_yv is not None else None
    summary = {
        "n_segments": len(rows), "n_usable": len(good),
        "yv_length_weighted": global_yv, "oef": global_oef, "cao2_ml_per_dl": cao2,
        "cbf_ml_per_100g_per_min": cbf_scalar,
        "cmro2_umol_per_100g_per_min": (
            float(cmro2_umol_per_100g_per_min(cbf_scalar, global_oef, cao2))
            if cbf_scalar is not None and global_oef is not None else None),
        "reference": {"value_ppm": ref_value, "description": ref_text},
    }
    parameters = {
        "hct": hct, "ya": ya, "hb_g_per_dl": hb, "pao2_mmhg": pao2_mmhg,
        "dchi_do_ppm": physiology.DCHI_DO_PPM, "dchi_oxy_ppm": physiology.DCHI_OXY_PPM,
        "min_radius_mm": min_radius_mm, "min_aspect": min_aspect,
        "max_cross_section_ratio": max_cross_section_ratio, "b0_dir": b0.tolist(),
        "b0_tesla": None if b0_tesla is None else float(b0_tesla),
        "field_estimate": field_fit is not None, "max_field_yv_se": max_field_yv_se,
        "voxel_size_mm": vs.tolist(), "segmentation": seg.parameters,
    }
    return OximetryResult(rows, regions, summary, parameters, seg)


def plot_oximetry(result: OximetryResult, chi_ppm, mask=None, *, affine=None):
    """Axial maximum-intensity projection of chi with the vein segments coloured by Yv, and
    the histogram of Yv of the usable segments (fixed bins of 0.025 over 0..1).

    The projection is radiological (patient right on the left, anterior up) with orientation
    letters from ``affine`` (voxel-to-world; default identity, i.e. voxel axes taken as RAS),
    see :func:`qsmkit.report.figures.oriented_panel`.
    """
    from matplotlib.ticker import MaxNLocator

    from qsmkit.report.figures import oriented_panel, ras_index

    chi = np.asarray(chi_ppm)
    affine = np.eye(4) if affine is None else np.asarray(affine, float)
    if mask is not None:
        chi = np.where(np.asarray(mask, bool), chi, 0.0)
    fig = new_figure(11.0, 4.5)
    ax = fig.add_subplot(1, 2, 1)
    view, ras_shape = oriented_panel(ax, chi, affine, "axial", projection="max", vmin=-0.1,
                                     vmax=0.5, outline=result.segmentation.mask,
                                     outline_colour="orange")
    rows = result.rows
    points = [view.point(ras_index((r["x"], r["y"], r["z"]), affine, chi.shape), ras_shape)
              for r in rows]
    sc = ax.scatter([p[0] for p in points], [p[1] for p in points],
                    c=[r["yv"] for r in rows], cmap="coolwarm_r", vmin=0.4, vmax=0.9,
                    s=[40 if r["usable"] else 12 for r in rows], edgecolors="k")
    for r, p in zip(rows, points, strict=True):
        ax.annotate(str(r["id"]), p, fontsize=6, color="yellow")
    fig.colorbar(sc, ax=ax, label="Yv")
    ax.set_title("chi MIP (axial), vein outline, segments (large: usable)", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    usable = [r["yv"] for r in result.rows if r["usable"]]
    if usable:
        # Fixed bins over the physical range: a narrow spread of Yv no longer gives a crowd
        # of long, overprinting tick labels.
        ax2.hist(np.clip(usable, 0.0, 1.0), bins=np.linspace(0.0, 1.0, 41), color="tab:blue")
    ax2.set_xlim(0.0, 1.0)
    ax2.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    if result.summary["yv_length_weighted"] is not None:
        ax2.axvline(result.summary["yv_length_weighted"], color="r",
                    label=f"length-weighted Yv = {result.summary['yv_length_weighted']:.2f}")
        ax2.legend(fontsize=7)
    ax2.set_xlabel("Yv")
    ax2.set_ylabel("segments")
    ax2.set_title("Venous oxygen saturation (usable segments)")
    fig.tight_layout()
    return fig

"""Focal susceptibility sources: microbleeds, calcifications, and the veins that mimic them.

Method
------
1. Candidates. The local contrast of chi is its difference from a smooth background
   (:func:`qsmkit.analysis.oximetry.local_background`, alternating sequential grey
   filters with a box of ``2 background_radius_mm``): structures narrower than the box keep
   their contrast (positive: paramagnetic, negative: diamagnetic). Voxels above
   ``high`` seed components that grow down to ``low`` (hysteresis); both thresholds are the
   larger of a multiple of the noise (robust SD of chi minus its Gaussian-smoothed self in the
   mask) and an absolute floor (``min_contrast_ppm``). A component holding several maxima
   that rise more than ``split_h_ppm`` above their saddle is split into their watershed
   basins (a bleed next to a vein, joined by the blur of the reconstruction). The core of each
   piece is the part above half its peak contrast, connected to the peak (the source without
   the low streaks QSM leaves around it).
2. Findings. QSM surrounds a strong source with opposite-sign streaks, and a mixed lesion has
   both signs: pieces are visited by decreasing strength (integrated contrast), and a piece
   joins the finding of the strongest opposite-sign piece already placed within
   ``merge_gap_mm`` of it, else starts a finding. A streak thus joins its source, but two
   sources of one sign with a weaker streak between them (two bleeds a centimetre apart)
   stay two findings; grouping every opposite-sign pair transitively would chain them.
3. Measurement against a surrounding shell. The region of a finding is its pieces (their
   full extent) dilated by ``margin_mm`` (to hold the reconstruction's blur); the shell is the next
   ``shell_mm`` outside it, other candidates excluded; ``reference_ppm`` is the median chi of
   the shell. Magnetic moment ``moment_ppm_mm3 = sum over the region of (chi - reference) x
   voxel volume``; ``mean_ppm`` is the mean of ``chi - reference`` over the core (the cores
   of the pieces of the moment's sign) and ``volume_mm3`` the core volume.
4. Sign with a dead zone: ``t = moment / (sigma * voxel volume * sqrt(N_region))``; a finding
   with ``|t| < dead_zone_sigma``, or whose core mean disagrees in sign with its moment, is
   ``indeterminate``. Otherwise positive = ``microbleed`` (or haemosiderin), negative =
   ``calcification``.
5. Vein mimics (paramagnetic findings only), by shape along the vessel's whole course: the
   Frangi shape measure of bright tubes is computed on the positive contrast with scales in
   millimetres (:mod:`qsmkit.analysis.vesselness`, radii 0.75-3 mm, derivatives in mm, so
   anisotropic and oblique data answer alike). A finding is ``vein`` when its peak lies on a
   tube and the connected tubular structure through it (shape measure >= ``vessel_threshold``,
   contrast >= ``vessel_fraction`` of the finding's peak) is at least ``max(
   min_vessel_course_mm, 2 x diameter)`` long (8 mm): a vein crossing the slices is a dot on each
   slice, and QSM leaves it bright near its ends and faint between them, but it is one tube.
   Also ``vein``: an elongated core (``sqrt(l1/l2)`` >= ``max_elongation``), a tubular
   Hessian at the centre (``1 - |l1|/|l2|`` >= ``max_tubularity``), or a core on the vessel
   tree of :func:`qsmkit.analysis.oximetry.segment_veins`.
6. Artefacts: an elongated diamagnetic finding (a streak; calcifications are compact), a
   finding within ``edge_artefact_mm`` of the mask edge, or (with ``residual``) one where the
   echo-fit residual is more than ``max_residual_ratio`` times the brain median.
7. Large sources: compact paramagnetic sources of at least ``large_min_volume_ml`` (0.5 mL)
   found on chi above the brain median (a haematoma wider than the background filter's box
   loses its local contrast), and compact paramagnetic findings wider than
   ``max_diameter_mm`` (10 mm, the upper size of microbleeds, Greenberg 2009) are
   ``large_hemorrhage`` (haematoma, cavernoma, tumour bleed), with their volume (mL) and
   moment (ppm mL); other findings wider than that are ``not_focal``.

Every finding is listed with its features, its class and the reason for it.

References
----------
Greenberg SM, Vernooij MW, Cordonnier C, et al. Cerebral microbleeds: a guide to detection and
interpretation. Lancet Neurol 2009;8:165-174 (microbleeds 2-10 mm; vessels seen in cross
section are the main mimic).
Chen W, Zhu W, Kovanlikaya I, et al. Intracranial calcifications and hemorrhages:
characterization with quantitative susceptibility mapping. Radiology 2014;270:496-505
(sign of chi separates calcification from haemorrhage).
Bilgic B, Langkammer C, Marques JP, et al. QSM reconstruction challenge 2.0: design and report
of results. Magn Reson Med 2021;86:1241-1255 (calcification moment as a metric).
Frangi AF et al. MICCAI 1998 (Hessian eigenvalue shape measures).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.ndimage as ndi

from qsmkit.analysis import check_chi, check_same_grid, check_voxel_size, new_figure, stats
from qsmkit.analysis import oximetry as ox
from qsmkit.errors import InputError

LESION_COLUMNS = (
    "id", "x", "y", "z", "volume_mm3", "mean_ppm", "moment_ppm_mm3", "class", "reason",
    "volume_ml", "moment_ppm_ml", "diameter_mm", "peak_ppm", "sign", "vesselness",
    "vessel_course_mm", "distance_to_edge_mm", "residual_ratio", "reference_ppm", "n_voxels",
    "t_moment", "elongation", "tubularity", "on_vessel_tree", "focality", "lesion_score",
)
LESION_CLASSES = ("microbleed", "calcification", "indeterminate", "vein", "large_hemorrhage",
                  "artefact", "not_focal")
FOCAL_CLASSES = ("microbleed", "calcification")
CLASS_COLOURS = {"microbleed": "red", "calcification": "cyan", "indeterminate": "yellow",
                 "vein": "lime", "large_hemorrhage": "magenta", "artefact": "grey",
                 "not_focal": "white"}
"""The classes a reader counts as focal lesions (sensitivity and specificity)."""


@dataclasses.dataclass
class LesionResult:
    rows: list[dict]
    rejected: list[dict]
    summary: dict
    parameters: dict
    finding_labels: np.ndarray
    """(X, Y, Z) int: the region of each finding (value = its id; rejected ones negative)."""


def noise_sigma_ppm(chi: np.ndarray, mask: np.ndarray, voxel_size) -> float:
    """Robust noise SD of chi: 1.4826 x MAD of chi minus its Gaussian-smoothed (1 mm-ish)
    self, over the mask eroded by two voxels."""
    smooth = ndi.gaussian_filter(ox._fill_outside(chi.astype(np.float32), mask),
                                 sigma=[max(0.7, 1.5 / v) for v in voxel_size])
    inner = ndi.binary_erosion(mask, iterations=2)
    if inner.sum() < 100:
        inner = mask
    r = (chi - smooth)[inner]
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def _dilate(region: np.ndarray, voxel_size, radius_mm: float) -> np.ndarray:
    if radius_mm <= 0:
        return region
    dist = ndi.distance_transform_edt(~region, sampling=voxel_size)
    return dist <= radius_mm


def _padded_box(points: np.ndarray, pad_mm: float, voxel_size, shape) -> tuple[slice, ...]:
    pad = np.ceil(pad_mm / np.asarray(voxel_size)).astype(int) + 1
    lo = np.maximum(points.min(axis=0) - pad, 0)
    hi = np.minimum(points.max(axis=0) + pad + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _hessian_tubularity(signed: np.ndarray, peak, voxel_size, sigmas_vox) -> float:
    """1 - |l1|/|l2| at ``peak`` (the core voxel nearest the centroid) for bright structures
    of ``signed``, at the scale of strongest scale-normalised response sqrt(l2^2 + l3^2);
    0 when not a bright ridge or blob."""
    where = np.zeros(signed.shape, bool)
    where[tuple(peak)] = True
    best, tub = -1.0, 0.0
    for sigma in sigmas_vox:
        ev = ox.hessian_eigenvalues(signed, sigma, where)[0]
        strength = math.hypot(ev[1], ev[2])
        if ev[2] < 0 and strength > best:
            best = strength
            tub = 1.0 - abs(ev[0]) / abs(ev[1]) if ev[1] < 0 else 0.0
    return float(min(1.0, max(0.0, tub)))


def _split_at_saddles(contrast: np.ndarray, component: np.ndarray, h: float) -> list:
    """Split a component into the basins of its h-maxima (watershed on -contrast), so that
    a bleed next to a vein, joined by the blur of the reconstruction, is its own finding.
    Maxima less than ``h`` above their saddle (noise along a vein) do not split."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    values = np.where(component, contrast, 0.0).astype(np.float64)
    peaks = h_maxima(values, h) & component
    markers, n = ndi.label(peaks, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return [component]
    basins = watershed(-values, markers, mask=component)
    return [basins == k for k in range(1, n + 1)]


def _half_max_core(contrast: np.ndarray, piece: np.ndarray, fraction: float,
                   floor: float) -> np.ndarray:
    """Voxels of ``piece`` above ``fraction`` of its peak contrast, connected to the peak:
    the source itself, without the low streaks a reconstruction leaves around it."""
    values = np.where(piece, contrast, 0.0)
    peak_idx = np.unravel_index(int(np.argmax(values)), values.shape)
    # The peak is the 95th percentile of the piece (the maximum for a small source): a hot
    # spot inside a large source must not raise the level into its plateau.
    level = max(floor, fraction * float(np.percentile(values[piece], 95)))
    core, _ = ndi.label(values >= level, structure=np.ones((3, 3, 3), bool))
    return core == core[peak_idx]


def _group_pieces(parts, voxel_size, gap_mm: float, step: float) -> list[list[int]]:
    """Group candidate pieces into findings.

    Pieces are visited by decreasing strength (integrated contrast). A piece joins the
    finding of the strongest opposite-sign piece already placed within ``gap_mm`` of it (the
    streaks QSM leaves around a source, or the weaker half of a mixed lesion); otherwise it
    starts a finding. Every piece in a finding is thus connected to its strongest piece through
    opposite-sign neighbours each stronger than the next, so two same-sign sources bridged by a
    weaker streak (two bleeds a centimetre apart with a dark streak between them) stay two
    findings, whereas transitive (union-find) grouping would chain them into one.
    """
    from scipy.spatial import cKDTree

    vs = np.asarray(voxel_size, float)
    trees = [cKDTree(part[1] * vs) for part in parts]
    order = sorted(range(len(parts)), key=lambda k: -parts[k][3])
    group_of: dict[int, int] = {}
    groups: list[list[int]] = []
    placed: list[int] = []
    for k in order:
        best = None
        for j in placed:  # in decreasing strength: the first neighbour found is the strongest
            if parts[j][0] == parts[k][0]:
                continue
            lo = np.maximum(parts[j][1].min(0), parts[k][1].min(0)) * vs
            hi = np.minimum(parts[j][1].max(0), parts[k][1].max(0)) * vs
            if np.any(lo - hi > gap_mm + step):
                continue
            if trees[j].sparse_distance_matrix(trees[k], gap_mm + 1e-6).nnz:
                best = j
                break
        if best is None:
            group_of[k] = len(groups)
            groups.append([k])
        else:
            group_of[k] = group_of[best]
            groups[group_of[k]].append(k)
        placed.append(k)
    return groups


def _large_sources(chi, mask, vs, *, seed_ppm, min_volume_ml, max_elongation,
                   vness, vessel_threshold, core_fraction):
    """Large paramagnetic sources (haematoma, cavernoma, tumour bleed): hysteresis of chi
    above the brain median (seeds above ``seed_ppm``, grown down to half of it), compact
    components whose half-maximum core holds at least ``min_volume_ml``. Returns a list of
    (voxel indices (N, 3), core indices (M, 3)). They are found on chi itself, not on the
    local contrast, whose background filter absorbs sources wider than its box."""
    from skimage.filters import apply_hysteresis_threshold

    excess = np.where(mask, chi - float(np.median(chi[mask])), 0.0).astype(np.float32)
    cand = apply_hysteresis_threshold(excess, 0.5 * seed_ppm, seed_ppm) & mask
    # Opening by a ball of 2.5 mm detaches the veins that touch a haematoma (a vein narrower
    # than the ball disappears; a wider one stays, elongated, and is refused below).
    r_vox = np.ceil(2.5 / vs).astype(int)
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in r_vox)]
    ball = sum((g * v) ** 2 for g, v in zip(grid, vs, strict=True)) <= 2.5**2
    cand = ndi.binary_opening(cand, structure=ball)
    lab, _ = ndi.label(cand, structure=np.ones((3, 3, 3), bool))
    voxel_ml = float(np.prod(vs)) / 1000.0
    out = []
    for i, slc in enumerate(ndi.find_objects(lab), start=1):
        if slc is None:
            continue
        local = lab[slc] == i
        if local.sum() * voxel_ml < min_volume_ml:
            continue
        values = np.where(local, excess[slc], 0.0)
        level = core_fraction * float(np.percentile(values[local], 95))
        core = local & (values >= level)
        if core.sum() * voxel_ml < min_volume_ml:
            continue
        offset = np.array([s.start for s in slc])
        core_idx = np.argwhere(core) + offset
        if ox.elongation(core_idx * vs) >= max_elongation:
            continue  # a sinus or a large vein, not a haematoma
        if float(np.median(vness[tuple(core_idx.T)])) >= vessel_threshold:
            continue
        out.append((np.argwhere(local) + offset, core_idx))
    return out


def _vessel_course_mm(contrast, vness, mask, core_idx, peak_vox, vs, *, floor_ppm,
                      fraction, threshold, reach_mm) -> float:
    """Length (mm) of the tubular structure a finding lies on, or 0.

    The structure is followed along its whole course: voxels within ``reach_mm`` of the
    finding whose Frangi shape measure is at least ``threshold`` and whose contrast is at least
    ``max(floor_ppm, fraction x the finding's peak contrast)`` (a vein keeps a fraction of its
    brightest point along its length, where QSM underestimates it), connected to the finding's
    peak voxel. The peak must itself be on a tube: the centre of a ball is not (its Hessian
    eigenvalues are alike), although the shoulders of a ball are tube-like and may touch a
    vein next to it."""
    peak_vox = tuple(int(v) for v in peak_vox)
    if vness[peak_vox] < threshold:
        return 0.0
    box = _padded_box(core_idx, reach_mm, vs, contrast.shape)
    origin = np.array([b.start for b in box])
    level = max(floor_ppm, fraction * float(contrast[peak_vox]))
    tube = (vness[box] >= threshold) & (contrast[box] >= level) & mask[box]
    lab, _ = ndi.label(tube, structure=np.ones((3, 3, 3), bool))
    k = lab[tuple(np.asarray(peak_vox) - origin)]
    if k == 0:
        return 0.0
    return ox._extent_mm(np.argwhere(lab == k) * vs) + float(np.mean(vs))


def detect_lesions(
    chi_ppm,
    mask,
    voxel_size,
    *,
    background_radius_mm: float = 7.0,
    high_sigma: float = 6.0,
    low_sigma: float = 3.0,
    min_contrast_ppm: float = 0.25,
    min_voxels: int = 3,
    max_diameter_mm: float = 10.0,
    merge_gap_mm: float = 2.0,
    margin_mm: float | None = None,
    shell_mm: float = 3.0,
    dead_zone_sigma: float = 3.0,
    max_elongation: float = 2.5,
    max_tubularity: float = 0.7,
    vessel_tree: bool | ox.VeinSegmentation = True,
    vessel_min_length_mm: float = 10.0,
    min_vessel_course_mm: float = 8.0,
    vessel_radii_mm=(0.75, 1.0, 1.5, 2.0, 3.0),
    vessel_threshold: float = 0.3,
    vessel_fraction: float = 0.1,
    edge_mm: float = 0.0,
    edge_artefact_mm: float = 2.0,
    residual=None,
    max_residual_ratio: float = 3.0,
    large_seed_ppm: float = 0.35,
    large_min_volume_ml: float = 0.5,
    large_min_ppm: float = 0.2,
    split_h_ppm: float | None = None,
    core_fraction: float = 0.5,
) -> LesionResult:
    """Find, measure and classify focal susceptibility sources (see the module docstring).

    Parameters
    ----------
    chi_ppm : (X, Y, Z) chi map, SI ppm
    mask : (X, Y, Z) bool brain mask
    voxel_size : 3 floats, mm
    edge_mm : ignore seeds closer than this to the mask edge
    edge_artefact_mm : a finding whose core lies mostly within this distance (mm) of the mask
        edge is an ``artefact`` (QSM edge artefacts; 2 mm)
    residual : optional (X, Y, Z) map of the echo-fit residual (``fit_residual.nii.gz`` of
        ``qsmkit run``); a finding whose core residual exceeds ``max_residual_ratio`` times the
        brain median is an ``artefact`` (flow, air, motion: the phase is not a field there)
    vessel_tree : True (segment veins here), False (no tree test) or a precomputed
        :class:`qsmkit.analysis.oximetry.VeinSegmentation`
    vessel_radii_mm, vessel_threshold, vessel_fraction, min_vessel_course_mm : a
        paramagnetic finding is a ``vein``
        when its peak lies on a connected tubular structure (Frangi shape measure in mm scales
        at least ``vessel_threshold``, contrast at least ``vessel_fraction`` of the finding's
        peak) at least ``max(min_vessel_course_mm, 2 x its diameter)`` long (8 mm; the
        vessel_min_length_mm of the vessel-tree test is 10 mm): the vessel is
        followed along its whole course, so a vein crossing the slices, a dot on each slice,
        is still a vein
    large_seed_ppm, large_min_volume_ml, large_min_ppm : large paramagnetic sources
        (``large_hemorrhage``): chi more than ``large_seed_ppm`` above the brain median, a
        half-maximum core of at least ``large_min_volume_ml`` (0.5 mL, a sphere of 9.8 mm),
        compact and not tubular; also any compact paramagnetic finding wider than
        ``max_diameter_mm`` whose mean exceeds ``large_min_ppm``
    margin_mm : dilation of a finding for its moment (default one voxel)
    split_h_ppm : a component is split at saddles below maxima at least this high above them
        (default half of ``min_contrast_ppm``)
    core_fraction : the core of a finding is where its contrast exceeds this fraction of its
        peak (half maximum by default); volume, mean, centroid and shape use the core

    Returns
    -------
    LesionResult; ``rows`` list every finding with the columns :data:`LESION_COLUMNS` (x, y,
    z: centroid in voxel indices; ``class`` one of :data:`LESION_CLASSES`; ``reason`` says
    why); ``rejected`` holds the rows of class ``not_focal``.
    """
    chi = check_chi(chi_ppm).astype(np.float32)
    vs = check_voxel_size(voxel_size)
    mask = check_same_grid(chi, mask, "the mask").astype(bool)
    if mask.sum() < 27:
        raise InputError("the mask is empty or too small for lesion detection")
    if residual is not None:
        residual = check_same_grid(chi, residual, "the residual map").astype(np.float32)
    voxel_mm3 = float(np.prod(vs))
    step = float(np.mean(vs))
    margin_mm = step if margin_mm is None else float(margin_mm)

    sigma = noise_sigma_ppm(chi, mask, vs)
    high = max(high_sigma * sigma, min_contrast_ppm)
    low = max(low_sigma * sigma, 0.5 * min_contrast_ppm)
    depth = ndi.distance_transform_edt(np.pad(mask, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    seeds_allowed = mask if edge_mm <= 0 else depth > edge_mm

    from skimage.filters import apply_hysteresis_threshold

    structure = np.ones((3, 3, 3), bool)
    background = ox.local_background(chi, mask, vs, background_radius_mm)
    contrasts = {sign: ox.local_contrast(chi, mask, vs, background_radius_mm, sign=sign,
                                         background=background) for sign in (1, -1)}
    from qsmkit.analysis.vesselness import vesselness_mm

    # Frangi shape measure of bright tubes (mm scales) wherever the contrast exceeds the
    # noise; c = the noise SD, so that the structure term is ~1 for anything above it and the
    # measure judges shape alone.
    vness = vesselness_mm(contrasts[1], vs, radii_mm=vessel_radii_mm,
                          where=mask & (contrasts[1] > low_sigma * sigma),
                          c=max(sigma, 1e-6)).vesselness
    large = _large_sources(chi, mask, vs, seed_ppm=large_seed_ppm,
                           min_volume_ml=large_min_volume_ml, max_elongation=max_elongation,
                           vness=vness, vessel_threshold=vessel_threshold,
                           core_fraction=core_fraction)
    large_mask = np.zeros(chi.shape, bool)
    # parts: (sign, (N, 3) voxel indices, (M, 3) core indices, strength, is_large)
    parts = []
    for idx, core_idx in large:
        large_mask[tuple(idx.T)] = True
        strength = float(contrasts[1][tuple(idx.T)].sum() + 1e6) * voxel_mm3
        parts.append((1, idx, core_idx, strength, True))
    all_candidates = large_mask.copy()
    split_h = 0.5 * min_contrast_ppm if split_h_ppm is None else float(split_h_ppm)
    for sign in (1, -1):
        contrast = contrasts[sign]
        cand = apply_hysteresis_threshold(np.where(mask, contrast, 0), low, high) & mask
        lab, _ = ndi.label(cand, structure=structure)
        for i, slc in enumerate(ndi.find_objects(lab), start=1):
            local = lab[slc] == i
            if local.sum() < min_voxels:
                continue
            for piece in _split_at_saddles(contrast[slc], local, split_h):
                if piece.sum() < min_voxels:
                    continue
                if not np.any(piece & seeds_allowed[slc] & (contrast[slc] > high)):
                    continue
                if sign > 0 and np.mean(large_mask[slc][piece]) > 0.5:
                    continue  # part of a large source, measured as one
                core = _half_max_core(contrast[slc], piece, core_fraction, low)
                offset = [sl.start for sl in slc]
                idx = np.argwhere(piece) + offset
                strength = float(contrast[slc][piece].sum()) * voxel_mm3
                parts.append((sign, idx, np.argwhere(core) + offset, strength, False))
                all_candidates[tuple(idx.T)] = True

    groups = _group_pieces(parts, vs, merge_gap_mm, step)

    tree_mask = None
    if vessel_tree is not False:
        seg = vessel_tree if isinstance(vessel_tree, ox.VeinSegmentation) else \
            ox.segment_veins(chi, mask, vs, min_length_mm=vessel_min_length_mm)
        tree_mask = _dilate(seg.mask, vs, step)
    residual_median = (float(np.median(residual[mask])) if residual is not None else None)

    sigmas_vox = [1.0, 1.5, 2.0, 3.0]
    finding_labels = np.zeros(chi.shape, np.int32)
    rows, regions = [], []
    for members in groups:
        pts = np.concatenate([parts[k][1] for k in members])
        box = _padded_box(pts, margin_mm + 2 * shell_mm, vs, chi.shape)
        origin = np.array([b.start for b in box])
        union_mask = np.zeros(tuple(b.stop - b.start for b in box), bool)
        union_mask[tuple((pts - origin).T)] = True
        dist = ndi.distance_transform_edt(~union_mask, sampling=vs)
        m_box, chi_box = mask[box], chi[box]
        region = (dist <= margin_mm) & m_box
        shell = (dist > margin_mm) & (dist <= margin_mm + shell_mm) & m_box \
            & ~all_candidates[box]
        if shell.sum() < 5:
            shell = (dist > margin_mm) & (dist <= margin_mm + 2 * shell_mm) & m_box
        reference = float(np.median(chi_box[shell])) if shell.any() else 0.0
        moment = float((chi_box[region] - reference).sum() * voxel_mm3)
        is_large = any(parts[k][4] for k in members)
        sign = 1 if (moment >= 0 or is_large) else -1
        core_pts = [parts[k][2] for k in members if parts[k][0] == sign]
        core_idx = np.concatenate(core_pts) if core_pts else \
            np.concatenate([parts[k][2] for k in members])
        core_delta = chi[tuple(core_idx.T)] - reference
        mean = float(core_delta.mean())
        peak = float(core_delta.max() if sign > 0 else core_delta.min())
        w = np.abs(core_delta) + 1e-12
        centroid = (core_idx * w[:, None]).sum(axis=0) / w.sum()
        pts_mm = core_idx * vs
        diameter = ox._extent_mm(pts_mm) + step
        volume_mm3 = float(len(core_idx) * voxel_mm3)
        elong = ox.elongation(pts_mm) if len(core_idx) >= 7 else 1.0
        sigma_moment = sigma * voxel_mm3 * math.sqrt(region.sum())
        t = moment / sigma_moment if sigma_moment > 0 else math.copysign(math.inf, moment)
        core_t = tuple(core_idx.T)
        edge_mm_here = float(np.median(depth[core_t]))
        res_ratio = (float(np.median(residual[core_t])) / residual_median
                     if residual is not None and residual_median > 0 else None)
        tub, on_tree, v_med, course = 0.0, False, 0.0, 0.0
        if sign > 0:
            peak_vox = core_idx[np.argmin(np.linalg.norm((core_idx - centroid) * vs, axis=1))]
            tub = _hessian_tubularity(contrasts[1], peak_vox, vs, sigmas_vox)
            on_tree = bool(tree_mask is not None and np.mean(tree_mask[core_t]) >= 0.5)
            top = core_idx[int(np.argmax(contrasts[1][core_t]))]
            v_med = float(vness[tuple(top)])
            if not is_large:
                course = _vessel_course_mm(
                    contrasts[1], vness, mask, core_idx, top, vs, floor_ppm=low_sigma * sigma,
                    fraction=vessel_fraction, threshold=vessel_threshold,
                    reach_mm=max(min_vessel_course_mm, 2 * diameter) + 4 * step)
        focal = diameter <= max_diameter_mm + step
        course_needed = max(min_vessel_course_mm, 2.0 * diameter)
        reasons = []
        if is_large:
            cls = "large_hemorrhage"
            reasons.append(f"paramagnetic source of {volume_mm3 / 1000:.2f} mL (>= "
                           f"{large_min_volume_ml} mL), mean {mean:+.2f} ppm, compact "
                           f"(elongation {elong:.1f}), not tubular: larger than a microbleed")
        elif (diameter > max_diameter_mm and sign > 0 and elong < max_elongation
              and mean >= large_min_ppm and tub < max_tubularity):
            cls = "large_hemorrhage"
            reasons.append(f"compact paramagnetic source {diameter:.1f} mm wide (> "
                           f"{max_diameter_mm} mm, Greenberg 2009), mean {mean:+.2f} ppm, "
                           f"{volume_mm3 / 1000:.2f} mL")
        elif sign > 0 and course >= course_needed:
            cls = "vein"
            reasons.append(f"lies on a tubular structure {course:.0f} mm long (vesselness, "
                           f">= {course_needed:.0f} mm)")
        elif sign > 0 and elong >= max_elongation:
            cls = "vein"
            reasons.append(f"elongated paramagnetic (elongation {elong:.1f} >= "
                           f"{max_elongation})")
        elif sign > 0 and on_tree:
            cls = "vein"
            reasons.append("on the segmented vessel tree")
        elif sign > 0 and focal and tub >= max_tubularity:
            cls = "vein"
            reasons.append(f"tubular at its centre (tubularity {tub:.2f} >= {max_tubularity})")
        elif sign < 0 and elong >= max_elongation:
            cls = "artefact"
            reasons.append(f"elongated diamagnetic streak (elongation {elong:.1f} >= "
                           f"{max_elongation}); calcifications are compact")
        elif edge_artefact_mm > 0 and edge_mm_here < edge_artefact_mm:
            cls = "artefact"
            reasons.append(f"at the mask edge ({edge_mm_here:.1f} mm < {edge_artefact_mm} mm)")
        elif res_ratio is not None and res_ratio > max_residual_ratio:
            cls = "artefact"
            reasons.append(f"echo-fit residual {res_ratio:.1f} x the brain median (> "
                           f"{max_residual_ratio})")
        elif not focal:
            cls = "not_focal"
            reasons.append(f"not focal: {diameter:.1f} mm > {max_diameter_mm} mm")
        elif abs(t) < dead_zone_sigma:
            cls = "indeterminate"
            reasons.append(f"moment within the noise dead zone (|t| {abs(t):.1f} < "
                           f"{dead_zone_sigma})")
        elif np.sign(mean) != sign:
            cls = "indeterminate"
            reasons.append("mixed sign: core mean and moment disagree")
        elif sign > 0:
            cls = "microbleed"
            reasons.append(f"focal paramagnetic, {diameter:.1f} mm, no vessel through it "
                           f"(tubular course {course:.0f} mm < {course_needed:.0f} mm)")
        else:
            cls = "calcification"
            reasons.append(f"focal diamagnetic, {diameter:.1f} mm")
        focality = (1.0 - tub) / max(elong, 1.0) - (1.0 if on_tree else 0.0)
        score = focality * math.tanh(abs(t) / dead_zone_sigma) if math.isfinite(t) \
            else focality
        row = {
            "x": float(centroid[0]), "y": float(centroid[1]), "z": float(centroid[2]),
            "volume_mm3": volume_mm3, "mean_ppm": mean, "moment_ppm_mm3": moment,
            "class": cls, "reason": "; ".join(reasons), "volume_ml": volume_mm3 / 1000.0,
            "moment_ppm_ml": moment / 1000.0, "diameter_mm": float(diameter),
            "peak_ppm": peak, "sign": "+" if sign > 0 else "-", "vesselness": v_med,
            "vessel_course_mm": course, "distance_to_edge_mm": edge_mm_here,
            "residual_ratio": res_ratio, "reference_ppm": reference,
            # noise-free maps: t is undefined (n/a), not infinite
            "n_voxels": int(len(core_idx)), "t_moment": float(t) if math.isfinite(t) else None,
            "elongation": float(elong),
            "tubularity": float(tub), "on_vessel_tree": on_tree, "focality": float(focality),
            "lesion_score": float(score),
        }
        rows.append(row)
        regions.append(np.argwhere(region) + origin)
    order = np.lexsort(([r["z"] for r in rows], [r["y"] for r in rows],
                        [r["x"] for r in rows])) if rows else []
    sorted_rows = []
    for new_id, old in enumerate(order, start=1):
        sorted_rows.append({"id": new_id, **rows[old]})
        idx = regions[old]
        free = finding_labels[tuple(idx.T)] == 0
        finding_labels[tuple(idx[free].T)] = new_id
    counts = {c: sum(1 for r in sorted_rows if r["class"] == c) for c in LESION_CLASSES}
    large_rows = [r for r in sorted_rows if r["class"] == "large_hemorrhage"]
    summary = {"n_findings": len(sorted_rows), "counts": counts,
               "n_rejected": counts["not_focal"], "noise_sigma_ppm": sigma,
               "threshold_high_ppm": high, "threshold_low_ppm": low,
               "large_hemorrhage": [{"id": r["id"], "volume_ml": r["volume_ml"],
                                     "moment_ppm_ml": r["moment_ppm_ml"],
                                     "mean_ppm": r["mean_ppm"]} for r in large_rows]}
    parameters = {
        "background_radius_mm": background_radius_mm, "high_sigma": high_sigma,
        "low_sigma": low_sigma, "min_contrast_ppm": min_contrast_ppm,
        "min_voxels": min_voxels, "max_diameter_mm": max_diameter_mm,
        "merge_gap_mm": merge_gap_mm, "margin_mm": margin_mm, "shell_mm": shell_mm,
        "dead_zone_sigma": dead_zone_sigma, "max_elongation": max_elongation,
        "max_tubularity": max_tubularity, "vessel_tree": vessel_tree is not False,
        "vessel_min_length_mm": vessel_min_length_mm, "min_vessel_course_mm": min_vessel_course_mm,
        "vessel_radii_mm": [float(r) for r in vessel_radii_mm],
        "vessel_threshold": vessel_threshold, "vessel_fraction": vessel_fraction,
        "edge_mm": edge_mm, "edge_artefact_mm": edge_artefact_mm,
        "residual_given": residual is not None, "max_residual_ratio": max_residual_ratio,
        "large_seed_ppm": large_seed_ppm, "large_min_volume_ml": large_min_volume_ml,
        "large_min_ppm": large_min_ppm, "split_h_ppm": split_h,
        "core_fraction": core_fraction, "voxel_size_mm": vs.tolist(),
    }
    all_rows = [{c: r.get(c) for c in LESION_COLUMNS} for r in sorted_rows]
    return LesionResult(all_rows, [r for r in all_rows if r["class"] == "not_focal"],
                        summary, parameters, finding_labels)


def _point_segment_distance_mm(p, a, b, vs) -> float:
    p, a, b = (np.asarray(v, float) * vs for v in (p, a, b))
    ab = b - a
    t = 0.0 if not ab.any() else float(np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def evaluate_lesions(result: LesionResult, lesions: list[dict], veins: list[dict] = (),
                     voxel_size=(1.0, 1.0, 1.0), *, tolerance_mm: float | None = None,
                     confidence: float = 0.95) -> dict:
    """Sensitivity, specificity (Wilson intervals) and AUC (DeLong) against reference labels.

    Parameters
    ----------
    lesions : dicts with ``kind`` ('microbleed', 'calcification' or 'large_hemorrhage'; other kinds
        are ignored),
        ``center_vox`` and ``radius_mm`` (the head phantom's ``lesions`` records)
    veins : dicts with ``start_vox``, ``end_vox``, ``radius_mm`` (the phantom's ``veins``)

    A finding matches a reference lesion when its centroid lies within the lesion radius plus
    ``tolerance_mm`` (default two voxels) of the lesion centre. Sensitivity: reference lesions
    with a matching finding of the right class. Negatives: findings matching no reference
    lesion (vein mimics, artefacts); a negative is a false positive when called microbleed or
    calcification. The AUC ranks findings by ``lesion_score`` = ``focality x tanh(|t| /
    dead_zone_sigma)``, where ``focality = (1 - tubularity) / elongation - on_vessel_tree``:
    compact, isolated, clearly signed sources score near 1, veins and ambiguous sources low.
    """
    vs = check_voxel_size(voxel_size)
    tol = 2.0 * float(np.mean(vs)) if tolerance_mm is None else float(tolerance_mm)
    targets = [les for les in lesions if les.get("kind") in (*FOCAL_CLASSES, "large_hemorrhage")]
    matched_rows: dict[int, int] = {}
    per_lesion = []
    for k, les in enumerate(targets):
        centre = np.asarray(les["center_vox"], float)
        best, best_d = None, math.inf
        for row in result.rows:
            d = float(np.linalg.norm((np.array([row["x"], row["y"], row["z"]]) - centre) * vs))
            if d <= les["radius_mm"] + tol and d < best_d:
                best, best_d = row, d
        if best is not None:
            matched_rows[best["id"]] = k
        per_lesion.append({
            "lesion_id": les.get("id", k + 1), "kind": les["kind"],
            "finding_id": best["id"] if best else None,
            "class": best["class"] if best else None,
            "correct": bool(best is not None and best["class"] == les["kind"]),
            "distance_mm": best_d if best else None,
            "moment_ppm_mm3": best["moment_ppm_mm3"] if best else None,
        })
    tp = sum(1 for p in per_lesion if p["correct"])
    fn = len(per_lesion) - tp
    negatives = [r for r in result.rows if r["id"] not in matched_rows]
    fp = sum(1 for r in negatives if r["class"] in ("microbleed", "calcification"))
    tn = len(negatives) - fp
    vein_derived = []
    for r in negatives:
        p = (r["x"], r["y"], r["z"])
        near_vein = any(_point_segment_distance_mm(p, v["start_vox"], v["end_vox"], vs)
                        <= v["radius_mm"] + tol for v in veins)
        if near_vein:
            vein_derived.append(r["id"])
    out = stats.sensitivity_specificity(tp, fn, tn, fp, confidence=confidence)
    pos_scores = [r["lesion_score"] for r in result.rows if r["id"] in matched_rows]
    neg_scores = [r["lesion_score"] for r in negatives]
    if len(pos_scores) >= 2 and len(neg_scores) >= 2:
        auc = stats.delong_auc(pos_scores, neg_scores, confidence=confidence)
        out.update(auc=auc.auc, auc_ci=[auc.ci_low, auc.ci_high], auc_method="delong")
    elif pos_scores and neg_scores:
        out.update(auc=stats.roc_auc(pos_scores, neg_scores), auc_ci=[math.nan, math.nan],
                   auc_method="point estimate (too few findings for an interval)")
    else:
        out.update(auc=math.nan, auc_ci=[math.nan, math.nan], auc_method="undefined")
    out.update(per_lesion=per_lesion, n_negative_findings=len(negatives),
               vein_derived_findings=vein_derived,
               veins_called_lesion=[r["id"] for r in negatives
                                    if r["id"] in vein_derived and
                                    r["class"] in ("microbleed", "calcification")],
               tolerance_mm=tol)
    return out


def plot_lesions(result: LesionResult, chi_ppm, mask=None, *, affine=None):
    """Maximum/minimum-intensity projections of chi with the findings marked by class.

    Panels are radiological (axial and coronal: patient right on the left; sagittal:
    anterior on the left) with orientation letters from ``affine`` (voxel-to-world; default
    identity, i.e. voxel axes taken as RAS), see :func:`qsmkit.report.figures.oriented_panel`.
    """
    from qsmkit.report.figures import oriented_panel, ras_index

    chi = np.asarray(chi_ppm)
    affine = np.eye(4) if affine is None else np.asarray(affine, float)
    if mask is not None:
        chi = np.where(np.asarray(mask, bool), chi, 0.0)
    colours = CLASS_COLOURS
    fig = new_figure(12.0, 4.2)
    for k, plane in enumerate(("axial", "coronal", "sagittal"), start=1):
        ax = fig.add_subplot(1, 3, k)
        view, ras_shape = oriented_panel(ax, chi, affine, plane, projection="maxmin",
                                         vmin=-0.5, vmax=0.5)
        for row in result.rows:
            c = view.point(ras_index((row["x"], row["y"], row["z"]), affine, chi.shape),
                           ras_shape)
            ax.scatter(*c, s=60, facecolors="none", edgecolors=colours[row["class"]],
                       linewidths=1.2)
            ax.annotate(str(row["id"]), c, fontsize=6, color=colours[row["class"]])
        ax.set_title(f"{plane} projection", fontsize=8)
    handles = [
        __import__("matplotlib.lines", fromlist=["Line2D"]).Line2D(
            [], [], marker="o", ls="", markerfacecolor="none", markeredgecolor=col, label=cls)
        for cls, col in colours.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7)
    fig.suptitle("Focal susceptibility sources (max + min intensity projection)", fontsize=9)
    return fig


_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def plot_thumbnail(row: dict, chi_ppm, affine=None, *, labels=None, half_mm: float = 12.0):
    """A small figure of one finding: three orthogonal chi patches through its centroid
    (``2 half_mm`` wide, native voxel planes drawn in mm), its region outlined, orientation
    letters at the edges from the affine (nibabel axis codes), class and reason in the title.
    """
    import nibabel as nib

    chi = np.asarray(chi_ppm, np.float32)
    affine = np.eye(4) if affine is None else np.asarray(affine, float)
    vs = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    codes = nib.aff2axcodes(affine)
    centre = [int(round(row[a])) for a in ("x", "y", "z")]
    half = np.ceil(half_mm / vs).astype(int)
    lo = np.maximum(np.array(centre) - half, 0)
    hi = np.minimum(np.array(centre) + half + 1, chi.shape)
    scale = max(0.3, abs(float(row.get("mean_ppm") or 0.3)))
    fig = new_figure(6.6, 2.6)
    colour = CLASS_COLOURS.get(row["class"], "white")
    for k, (axis, (a, b)) in enumerate(((2, (0, 1)), (1, (0, 2)), (0, (1, 2))), start=1):
        ax = fig.add_subplot(1, 3, k)
        sl = [slice(int(lo[i]), int(hi[i])) for i in range(3)]
        sl[axis] = centre[axis]
        patch = chi[tuple(sl)].T
        extent = (lo[a] * vs[a], hi[a] * vs[a], lo[b] * vs[b], hi[b] * vs[b])
        ax.imshow(patch, origin="lower", cmap="gray", vmin=-scale, vmax=scale, extent=extent)
        if labels is not None:
            region = (np.asarray(labels)[tuple(sl)] == row["id"]).T
            if region.any():
                ax.contour(region.astype(float), levels=[0.5], colors=colour, linewidths=0.8,
                           extent=extent)
        style = {"color": "yellow", "fontsize": 8, "ha": "center", "va": "center",
                 "transform": ax.transAxes}
        ax.text(0.06, 0.5, _OPPOSITE[codes[a]], **style)
        ax.text(0.94, 0.5, codes[a], **style)
        ax.text(0.5, 0.06, _OPPOSITE[codes[b]], **style)
        ax.text(0.5, 0.94, codes[b], **style)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"#{row['id']} {row['class']}: {row.get('reason', '')}"[:110], fontsize=7,
                 color="black")
    return fig

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
5. Vein mimics (paramagnetic findings only): a finding is ``vein`` if its core is elongated
   (``sqrt(l1/l2)`` of its principal moments >= ``max_elongation``), focal and tubular on the
   Hessian (``1 - |l1|/|l2|`` of the scale-normalised Hessian eigenvalues at its peak, best of
   several scales, >= ``max_tubularity``; a ball gives 0, a cylinder 1) or lies on the vessel
   tree (at least half of its core within one voxel of
   :func:`qsmkit.analysis.oximetry.segment_veins`, components longer than
   ``vessel_min_length_mm``). In 2D a vein seen end-on is a dot; in 3D it is a tube.
6. Size: a non-vein finding larger than ``max_diameter_mm`` (plus one voxel) along its main
   axis is not focal (deep grey nuclei, haematomas) and is listed in ``rejected``.

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
    "id", "x", "y", "z", "volume_mm3", "mean_ppm", "moment_ppm_mm3", "class",
    "reference_ppm", "n_voxels", "diameter_mm", "t_moment", "elongation", "tubularity",
    "on_vessel_tree", "focality", "lesion_score",
)
LESION_CLASSES = ("microbleed", "calcification", "indeterminate", "vein")


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
    level = max(floor, fraction * float(values[peak_idx]))
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
    edge_mm: float = 0.0,
    split_h_ppm: float | None = None,
    core_fraction: float = 0.5,
) -> LesionResult:
    """Find, measure and classify focal susceptibility sources (see the module docstring).

    Parameters
    ----------
    chi_ppm : (X, Y, Z) chi map, SI ppm
    mask : (X, Y, Z) bool brain mask
    voxel_size : 3 floats, mm
    edge_mm : ignore seeds closer than this to the mask edge (QSM edge artefacts)
    vessel_tree : True (segment veins here), False (no tree test) or a precomputed
        :class:`qsmkit.analysis.oximetry.VeinSegmentation`
    margin_mm : dilation of a finding for its moment (default one voxel)
    split_h_ppm : a component is split at saddles below maxima at least this high above them
        (default half of ``min_contrast_ppm``)
    core_fraction : the core of a finding is where its contrast exceeds this fraction of its
        peak (half maximum by default); volume, mean, centroid and shape use the core

    Returns
    -------
    LesionResult; ``rows`` have the columns :data:`LESION_COLUMNS` (x, y, z: centroid in voxel
    indices; ``class`` one of microbleed, calcification, indeterminate, vein).
    """
    chi = check_chi(chi_ppm).astype(np.float32)
    vs = check_voxel_size(voxel_size)
    mask = check_same_grid(chi, mask, "the mask").astype(bool)
    if mask.sum() < 27:
        raise InputError("the mask is empty or too small for lesion detection")
    voxel_mm3 = float(np.prod(vs))
    step = float(np.mean(vs))
    margin_mm = step if margin_mm is None else float(margin_mm)

    sigma = noise_sigma_ppm(chi, mask, vs)
    high = max(high_sigma * sigma, min_contrast_ppm)
    low = max(low_sigma * sigma, 0.5 * min_contrast_ppm)
    seeds_allowed = mask
    if edge_mm > 0:
        seeds_allowed = ndi.distance_transform_edt(mask, sampling=vs) > edge_mm

    from skimage.filters import apply_hysteresis_threshold

    structure = np.ones((3, 3, 3), bool)
    parts = []  # (sign, (N, 3) voxel indices, (M, 3) core voxel indices, strength)
    contrasts = {}
    all_candidates = np.zeros(chi.shape, bool)
    background = ox.local_background(chi, mask, vs, background_radius_mm)
    split_h = 0.5 * min_contrast_ppm if split_h_ppm is None else float(split_h_ppm)
    for sign in (1, -1):
        contrast = ox.local_contrast(chi, mask, vs, background_radius_mm, sign=sign,
                                     background=background)
        contrasts[sign] = contrast
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
                core = _half_max_core(contrast[slc], piece, core_fraction, low)
                offset = [sl.start for sl in slc]
                idx = np.argwhere(piece) + offset
                strength = float(contrast[slc][piece].sum()) * voxel_mm3
                parts.append((sign, idx, np.argwhere(core) + offset, strength))
                all_candidates[tuple(idx.T)] = True

    # Group each piece with the opposite-sign pieces within merge_gap_mm that are stronger
    # than it: streaks (and the weaker half of a mixed lesion) join the source that makes
    # them, but two sources of one sign bridged by a weaker streak stay two findings.
    groups = _group_pieces(parts, vs, merge_gap_mm, step)

    tree_mask = None
    if vessel_tree is not False:
        seg = vessel_tree if isinstance(vessel_tree, ox.VeinSegmentation) else \
            ox.segment_veins(chi, mask, vs, min_length_mm=vessel_min_length_mm)
        tree_mask = _dilate(seg.mask, vs, step)

    sigmas_vox = [1.0, 1.5, 2.0, 3.0]
    finding_labels = np.zeros(chi.shape, np.int32)
    rows, rejected, regions = [], [], []
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
        sign = 1 if moment >= 0 else -1
        core_pts = [parts[k][2] for k in members if parts[k][0] == sign]
        core_idx = np.concatenate(core_pts) if core_pts else \
            np.concatenate([parts[k][2] for k in members])
        core_delta = chi[tuple(core_idx.T)] - reference
        mean = float(core_delta.mean())
        w = np.abs(core_delta) + 1e-12
        centroid = (core_idx * w[:, None]).sum(axis=0) / w.sum()
        pts_mm = core_idx * vs
        diameter = ox._extent_mm(pts_mm) + step
        elong = ox.elongation(pts_mm) if len(core_idx) >= 7 else 1.0
        sigma_moment = sigma * voxel_mm3 * math.sqrt(region.sum())
        t = moment / sigma_moment if sigma_moment > 0 else math.copysign(math.inf, moment)
        tub, on_tree = 0.0, False
        if sign > 0:
            peak = core_idx[np.argmin(np.linalg.norm((core_idx - centroid) * vs, axis=1))]
            tub = _hessian_tubularity(contrasts[1], peak, vs, sigmas_vox)
            on_tree = bool(tree_mask is not None
                           and np.mean(tree_mask[tuple(core_idx.T)]) >= 0.5)
        focal = diameter <= max_diameter_mm + step
        is_vein = sign > 0 and (on_tree or elong >= max_elongation
                                or (focal and tub >= max_tubularity))
        if is_vein:
            cls = "vein"
        elif not focal:
            cls = "not focal"
        elif abs(t) < dead_zone_sigma or np.sign(mean) != sign:
            cls = "indeterminate"
        elif sign > 0:
            cls = "microbleed"
        else:
            cls = "calcification"
        focality = (1.0 - tub) / max(elong, 1.0) - (1.0 if on_tree else 0.0)
        score = focality * math.tanh(abs(t) / dead_zone_sigma) if math.isfinite(t) \
            else focality
        row = {
            "x": float(centroid[0]), "y": float(centroid[1]), "z": float(centroid[2]),
            "volume_mm3": float(len(core_idx) * voxel_mm3), "mean_ppm": mean,
            "moment_ppm_mm3": moment, "class": cls, "reference_ppm": reference,
            "n_voxels": int(len(core_idx)), "diameter_mm": float(diameter),
            "t_moment": float(t), "elongation": float(elong), "tubularity": float(tub),
            "on_vessel_tree": on_tree, "focality": float(focality),
            "lesion_score": float(score),
        }
        region_idx = np.argwhere(region) + origin
        if cls == "not focal":
            row["reason"] = f"not focal: {diameter:.1f} mm > {max_diameter_mm} mm"
            rejected.append(row)
            regions.append((-len(rejected), region_idx))
            continue
        rows.append(row)
        regions.append((len(rows), region_idx))
    order = np.lexsort(([r["z"] for r in rows], [r["y"] for r in rows],
                        [r["x"] for r in rows])) if rows else []
    renumber = np.zeros(len(rows) + 1, np.int32)
    sorted_rows = []
    for new_id, old in enumerate(order, start=1):
        row = {"id": new_id, **rows[old]}
        sorted_rows.append(row)
        renumber[old + 1] = new_id
    for value, idx in regions:
        target = tuple(idx.T)
        free = finding_labels[target] == 0
        finding_labels[tuple(idx[free].T)] = renumber[value] if value > 0 else value
    counts = {c: sum(1 for r in sorted_rows if r["class"] == c) for c in LESION_CLASSES}
    summary = {"n_findings": len(sorted_rows), "counts": counts, "n_rejected": len(rejected),
               "noise_sigma_ppm": sigma, "threshold_high_ppm": high,
               "threshold_low_ppm": low}
    parameters = {
        "background_radius_mm": background_radius_mm, "high_sigma": high_sigma,
        "low_sigma": low_sigma, "min_contrast_ppm": min_contrast_ppm,
        "min_voxels": min_voxels, "max_diameter_mm": max_diameter_mm,
        "merge_gap_mm": merge_gap_mm, "margin_mm": margin_mm, "shell_mm": shell_mm,
        "dead_zone_sigma": dead_zone_sigma, "max_elongation": max_elongation,
        "max_tubularity": max_tubularity, "vessel_tree": vessel_tree is not False,
        "vessel_min_length_mm": vessel_min_length_mm, "edge_mm": edge_mm,
        "split_h_ppm": split_h, "core_fraction": core_fraction,
        "voxel_size_mm": vs.tolist(),
    }
    return LesionResult([{c: r.get(c) for c in LESION_COLUMNS} for r in sorted_rows],
                        rejected, summary, parameters, finding_labels)


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
    lesions : dicts with ``kind`` ('microbleed' or 'calcification'; other kinds are ignored),
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
    targets = [les for les in lesions if les.get("kind") in ("microbleed", "calcification")]
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


def plot_lesions(result: LesionResult, chi_ppm, mask=None):
    """Maximum/minimum-intensity projections of chi with the findings marked by class."""
    chi = np.asarray(chi_ppm)
    if mask is not None:
        chi = np.where(np.asarray(mask, bool), chi, 0.0)
    colours = {"microbleed": "red", "calcification": "cyan", "indeterminate": "yellow",
               "vein": "lime"}
    fig = new_figure(12.0, 4.2)
    views = [("axial (x-y)", 2, (0, 1)), ("coronal (x-z)", 1, (0, 2)),
             ("sagittal (y-z)", 0, (1, 2))]
    for k, (title, axis, (i, j)) in enumerate(views, start=1):
        ax = fig.add_subplot(1, 3, k)
        mip = chi.max(axis=axis) + chi.min(axis=axis)
        ax.imshow(mip.T, origin="lower", cmap="gray", vmin=-0.5, vmax=0.5)
        for row in result.rows:
            c = (row["x"], row["y"], row["z"])
            ax.scatter(c[i], c[j], s=60, facecolors="none", edgecolors=colours[row["class"]],
                       linewidths=1.2)
            ax.annotate(str(row["id"]), (c[i], c[j]), fontsize=6,
                        color=colours[row["class"]])
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    handles = [
        __import__("matplotlib.lines", fromlist=["Line2D"]).Line2D(
            [], [], marker="o", ls="", markerfacecolor="none", markeredgecolor=col, label=cls)
        for cls, col in colours.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7)
    fig.suptitle("Focal susceptibility sources (max + min intensity projection)", fontsize=9)
    return fig

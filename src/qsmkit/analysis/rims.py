"""Multiple-sclerosis paramagnetic rim lesions (PRL) on a chi map.

For each lesion of a lesion mask (from FLAIR segmentation, or the phantom's), chi is measured
in three zones defined by the distance to the lesion boundary:

* rim: the lesion's outer ``rim_inner_mm`` (1.5 voxels; the iron rim sits at the lesion edge,
  inside the FLAIR-defined lesion), optionally widened by ``rim_outer_mm`` outside it for masks
  that may be misaligned (outside voxels are white matter and dilute the rim),
* core: the lesion deeper than the rim,
* surrounding white matter: a shell from ``rim_outer_mm + gap_mm`` to ``+ wm_width_mm`` outside
  the lesion, excluding other lesions; its median is the reference (``wm_ppm``).

On every slice (along ``slice_axis``) where the lesion's cross-section is large enough, the rim
band is divided into ``n_sectors`` angular sectors around the cross-section's centroid; a
sector is paramagnetic when its mean chi exceeds the white matter of the same sector (the
shell next to it on that slice) by the rim threshold. The
slice's ``rim fraction`` is the share of paramagnetic sectors. Consensus criteria (the
paramagnetic rim must cover at least 2/3 of the lesion edge on at least 2 consecutive slices,
around a core that is not itself paramagnetic: the mean of the paramagnetic sectors exceeds
the core by the threshold) decide rim+ / rim-; at least 4 rim+ lesions in
a patient is flagged, the count associated with more severe disease.

Threshold: ``max(rim_min_ppm, rim_sigma * sigma_wm)``, with ``sigma_wm`` the robust SD of chi
in the white-matter shells of all lesions (noise plus tissue texture).

References
----------
Bagnato F, Sati P, Hemond CC, et al. Imaging chronic active lesions in multiple sclerosis: a
consensus statement. Brain 2024;147:2913-2933 (paramagnetic rim lesion criteria: hyperintense
rim on phase/QSM at the lesion edge, >= 2/3 of the edge, >= 2 consecutive slices, core
iso/hypointense).
Absinta M, Sati P, Masuzzo F, et al. Association of chronic active multiple sclerosis lesions
with disability in vivo. JAMA Neurol 2019;76:1474-1483 (>= 4 rim lesions: more aggressive
disease).
Dal-Bianco A, Grabner G, Kronnerwetter C, et al. Slow expansion of multiple sclerosis iron
rim lesions: pathology and 7 T magnetic resonance imaging. Acta Neuropathol 2017;133:25-42.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage as ndi

from qsmkit.analysis import check_chi, check_same_grid, check_voxel_size, new_figure
from qsmkit.errors import InputError

RIM_COLUMNS = (
    "id", "x", "y", "z", "core_ppm", "rim_ppm", "rim_fraction", "rim_slices", "class",
    "wm_ppm", "volume_mm3", "n_slices_evaluated", "mean_rim_fraction", "core_iso",
)
PRL_COUNT_FLAG = 4
"""Patients with at least this many rim+ lesions are flagged (Absinta 2019)."""


SMOOTHING_INVERSIONS = ("whtv", "tv", "nltv", "tgv", "medi")
"""Inversions with a total-variation-type penalty: on the independent MS head phantom (1 x 1 x
1.5 mm, rims 1.2 mm thick, +0.07 ppm) whtv and tv carried the rim into the core (rim and core
within 0.005 ppm; 0/3 rim+ found), iLSQR kept it (6/6)."""


def rim_inversion() -> str:
    """The rim-preserving inversion: that of the ``rims`` preset of the pipeline (iLSQR)."""
    from qsmkit.pipeline import PRESETS

    return PRESETS["rims"]["invert"]


def rim_inversion_options() -> dict:
    """The options of :func:`rim_inversion` in the ``rims`` preset (a fresh copy)."""
    from qsmkit.pipeline import PRESETS

    return dict(PRESETS["rims"].get("invert_options", {}))


def inversion_note(method: str | None, *, reinverted: bool = False) -> str | None:
    """A warning for rim analysis of chi made by ``method`` (None when no concern is known).

    ``reinverted``: the rims were classified on a map re-inverted from the saved local field
    (:func:`rim_preserving_chi`), so the note says what was done instead of warning.
    """
    if method not in SMOOTHING_INVERSIONS:
        return None
    if reinverted:
        return (f"the given chi was reconstructed with {method} (a total-variation-type "
                "penalty, which flattens rims about 1 mm thick into the lesion core); rims "
                f"were classified on a map re-inverted with {rim_inversion()} from the saved "
                "local field instead (--use-given-chi to classify the given map)")
    return (f"chi was reconstructed with {method} (a total-variation-type penalty), which "
            "flattens rims about 1 mm thick into the lesion core: rim- calls on this map are "
            "not trustworthy; give chi from a run folder that holds local_field_hz.nii.gz and "
            "mask.nii.gz (qsmkit rims then re-inverts it), or reconstruct with --preset rims "
            "(iLSQR; docs/applications.md)")


def rim_preserving_chi(
    local_field_hz,
    mask,
    voxel_size,
    *,
    b0_dir=(0.0, 0.0, 1.0),
    b0_tesla: float = 3.0,
    weight=None,
    reference: str = "brain",
    r2star_per_s=None,
    magnitude=None,
) -> tuple[np.ndarray, dict]:
    """Re-invert a local field with the rim-preserving inversion and reference it.

    The default reconstruction (weak-harmonic TV) penalises the l1 norm of the gradient, which
    removes a paramagnetic rim about 1 mm thick by merging it with the lesion core; iLSQR
    (:func:`rim_inversion`, the ``rims`` preset) has no such penalty and keeps it. Re-inverting
    the local field that ``qsmkit run`` saved with the preset's method and options (streaks
    estimated on the cone ``|D| < 0.15``) gives the map the ``rims`` preset would have made
    from the same field, in seconds (the data weight is the magnitude, not the echo fit's).

    Parameters
    ----------
    local_field_hz : (X, Y, Z) ndarray, Hz
        Local (tissue) field, zero outside ``mask``.
    mask : (X, Y, Z) bool ndarray
        Where the local field is valid.
    voxel_size : 3 floats, mm
    b0_dir : 3 floats
        B0 direction in voxel coordinates.
    b0_tesla : float
        Field strength, T.
    weight : (X, Y, Z) ndarray, optional
        Data weight (the magnitude); normalised by the inversion.
    reference : {"brain", "csf", "none"}
        How the map is referenced (that of the run, so that ``wm_ppm`` is comparable).
    r2star_per_s, magnitude : (X, Y, Z) ndarray, optional
        For ``reference="csf"`` (:func:`qsmkit.reference.reference`).

    Returns
    -------
    chi_ppm : (X, Y, Z) float32 ndarray, ppm, zero outside ``mask``
    info : dict
        ``inversion`` (method name), ``options`` (its options), ``reference`` (how it was
        referenced), ``seconds``.

    References
    ----------
    Li W, Wang N, Yu F, et al. A method for estimating and removing streaking artifacts in
    quantitative susceptibility mapping. NeuroImage 2015;108:111-122 (iLSQR).
    Kames C, Wiggermann V, Rauscher A. Rapid two-step dipole inversion for susceptibility
    mapping with sparsity priors. NeuroImage 2018;167:276-283 (ill-conditioned cone
    ``|D| < 0.15``).
    Bagnato F, Sati P, Hemond CC, et al. Imaging chronic active lesions in multiple sclerosis:
    a consensus statement. Brain 2024;147:2913-2933 (rims about 1 mm, a few hundredths of a
    ppm; regularisation that smooths edges hides them).
    """
    import time

    from qsmkit.inversion import invert_auto
    from qsmkit.reference import reference as reference_chi

    start = time.perf_counter()
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise InputError("the mask of the local field is empty; check mask.nii.gz of the run")
    field = np.where(mask, np.nan_to_num(np.asarray(local_field_hz, np.float32)), 0)
    method = rim_inversion()
    w = None if weight is None else np.where(mask, np.asarray(weight, np.float32), 0)
    options = rim_inversion_options()
    chi, _ = invert_auto(field.astype(np.float32), mask, check_voxel_size(voxel_size),
                         method=method, b0_dir=tuple(float(v) for v in b0_dir),
                         b0_tesla=float(b0_tesla), weight=w, **options)
    ref = None
    if reference != "none":
        chi, ref = reference_chi(chi, mask, method=reference, r2star_per_s=r2star_per_s,
                                 magnitude=magnitude, voxel_size=voxel_size)
    chi = np.where(mask, chi, 0).astype(np.float32)
    return chi, {"inversion": method, "options": options, "reference": ref,
                 "seconds": round(time.perf_counter() - start, 2)}


@dataclasses.dataclass
class RimResult:
    rows: list[dict]
    summary: dict
    parameters: dict
    slices: dict
    """Per lesion id: list of (slice index, rim fraction) for the figure and audits."""


def _longest_run(flags: list[bool]) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def _lesion_labels(lesion_mask: np.ndarray) -> np.ndarray:
    data = np.asarray(lesion_mask)
    if data.dtype == bool or set(np.unique(data).tolist()) <= {0, 1}:
        labels, _ = ndi.label(data > 0, structure=np.ones((3, 3, 3), bool))
        return labels
    rounded = np.rint(data)
    if not np.allclose(data, rounded, atol=1e-3) or rounded.min() < 0:
        raise InputError("the lesion mask must be binary or hold non-negative integer labels")
    return rounded.astype(np.int32)


def rim_lesions(
    chi_ppm,
    lesion_mask,
    voxel_size,
    *,
    brain_mask=None,
    slice_axis: int = 2,
    rim_inner_mm: float | None = None,
    rim_outer_mm: float | None = None,
    gap_mm: float | None = None,
    wm_width_mm: float | None = None,
    n_sectors: int = 12,
    rim_threshold_ppm: float | None = None,
    rim_min_ppm: float = 0.015,
    rim_sigma: float = 1.5,
    min_fraction: float = 2.0 / 3.0,
    min_slices: int = 2,
    min_radius_mm: float | None = None,
    local_wm: bool = True,
    core_margin: float = 0.5,
) -> RimResult:
    """Classify each lesion as rim+ or rim- (see the module docstring).

    Parameters
    ----------
    chi_ppm : (X, Y, Z) chi map, SI ppm
    lesion_mask : (X, Y, Z) binary mask (lesions = 26-connected components) or integer labels
    voxel_size : 3 floats, mm
    brain_mask : optional (X, Y, Z) bool; the white-matter shell stays inside it
    slice_axis : array axis across which slices are read (2 for axial NIfTI)
    rim_inner_mm, rim_outer_mm : rim band inside / outside the lesion boundary (default
        ``max(1.5 mm, in-plane voxel)`` inside, none outside; widen ``rim_outer_mm`` for masks
        that may be misaligned)
    gap_mm, wm_width_mm : white-matter shell distance and width (default ``max(1 mm,
        in-plane voxel)`` and ``max(3 mm, 2 in-plane voxels)``)
    n_sectors : angular sectors per slice
    rim_threshold_ppm : fixed threshold; default ``max(rim_min_ppm, rim_sigma * sigma_wm)``
    min_fraction, min_slices : consensus criteria (2/3 of the edge, 2 consecutive slices)
    min_radius_mm : a slice is evaluated when the cross-section's equivalent radius is at least
        this (default ``max(1.5 mm, 1.5 in-plane voxels)``)
    core_margin : the paramagnetic sectors must exceed the core by ``core_margin`` times the
        rim threshold (the core is iso- or hypointense to the rim: a homogeneously
        paramagnetic lesion has no rim); half the threshold, since the reconstruction's blur
        carries part of a thin rim into a small core
    local_wm : compare each sector with the white-matter shell of the same sector and slice
        (default), which follows smooth background gradients across a lesion; False uses the
        lesion's white-matter median everywhere

    Returns
    -------
    RimResult with ``rows`` (columns :data:`RIM_COLUMNS`; core_ppm and rim_ppm relative to the
    surrounding white matter, wm_ppm as in the map) and ``summary`` (counts, PRL flag).
    """
    chi = check_chi(chi_ppm).astype(np.float32)
    vs = check_voxel_size(voxel_size)
    labels = _lesion_labels(check_same_grid(chi, lesion_mask, "the lesion mask"))
    if slice_axis not in (0, 1, 2):
        raise InputError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    if int(n_sectors) < 4:
        raise InputError(f"n_sectors must be at least 4, got {n_sectors}")
    brain = np.ones(chi.shape, bool) if brain_mask is None else \
        check_same_grid(chi, brain_mask, "the brain mask").astype(bool)
    in_plane = [a for a in range(3) if a != slice_axis]
    step_plane = float(np.mean(vs[in_plane]))
    # Geometry in mm (rims are about 1-2 mm thick whatever the voxel), never finer than the
    # in-plane voxel: slice thickness does not widen the band on anisotropic data.
    plane_max = float(np.max(vs[in_plane]))
    rim_inner = max(1.5, plane_max) if rim_inner_mm is None else float(rim_inner_mm)
    rim_outer = 0.0 if rim_outer_mm is None else float(rim_outer_mm)
    gap = max(1.0, plane_max) if gap_mm is None else float(gap_mm)
    wm_width = max(3.0, 2.0 * plane_max) if wm_width_mm is None else float(wm_width_mm)
    min_radius = max(1.5, 1.5 * step_plane) if min_radius_mm is None else float(min_radius_mm)
    any_lesion = labels > 0
    ids = [int(v) for v in np.unique(labels) if v > 0]
    if not ids:
        raise InputError("the lesion mask is empty")

    # Geometry of every lesion first; the threshold needs the white matter of all of them.
    pad_mm = rim_outer + gap + wm_width
    geometry = []
    objects = ndi.find_objects(labels)
    for lid in ids:
        slc = objects[lid - 1]
        pad = np.ceil(pad_mm / vs).astype(int) + 1
        lo = np.maximum([s.start for s in slc] - pad, 0)
        hi = np.minimum([s.stop for s in slc] + pad, chi.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        lesion = labels[box] == lid
        d_in = ndi.distance_transform_edt(np.pad(lesion, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
        d_out = ndi.distance_transform_edt(~lesion, sampling=vs)
        others = any_lesion[box] & ~lesion
        ok = brain[box] & ~others
        rim = ((lesion & (d_in <= rim_inner)) | (~lesion & (d_out <= rim_outer))) & ok
        core = lesion & (d_in > rim_inner)
        wm = ~lesion & (d_out > rim_outer + gap) & (d_out <= rim_outer + gap + wm_width) & ok
        geometry.append((lid, box, lesion, rim, core, wm))

    wm_all = np.concatenate([chi[box][wm] for _, box, _, _, _, wm in geometry])
    if wm_all.size < 10:
        raise InputError("no white matter around the lesions; check the lesion and brain masks")
    sigma_wm = float(1.4826 * np.median(np.abs(wm_all - np.median(wm_all))))
    threshold = (float(rim_threshold_ppm) if rim_threshold_ppm is not None
                 else max(rim_min_ppm, rim_sigma * sigma_wm))

    rows, per_slice = [], {}
    voxel_mm3 = float(np.prod(vs))
    for lid, box, lesion, rim, core, wm in geometry:
        chi_box = chi[box]
        wm_ref = float(np.median(chi_box[wm])) if wm.any() else float(np.median(wm_all))
        core_ppm = float(chi_box[core].mean()) - wm_ref if core.any() else None
        rim_ppm = float(chi_box[rim].mean()) - wm_ref if rim.any() else None
        origin = np.array([s.start for s in box])
        centroid = np.argwhere(lesion).mean(axis=0) + origin
        fractions, para_values = [], []
        moved_rim = np.moveaxis(rim, slice_axis, 0)
        moved_wm = np.moveaxis(wm, slice_axis, 0)
        moved_lesion = np.moveaxis(lesion, slice_axis, 0)
        moved_chi = np.moveaxis(chi_box, slice_axis, 0)
        area_min = np.pi * min_radius**2 / float(np.prod(vs[in_plane]))
        for k in range(moved_lesion.shape[0]):
            section = moved_lesion[k]
            if section.sum() < area_min or not moved_rim[k].any():
                continue
            cy, cx = np.argwhere(section).mean(axis=0)

            def sector_of(points, cy=cy, cx=cx):
                angles = np.arctan2((points[:, 0] - cy) * vs[in_plane[0]],
                                    (points[:, 1] - cx) * vs[in_plane[1]])
                return ((angles + np.pi) / (2 * np.pi) * n_sectors).astype(int) % n_sectors

            band = np.argwhere(moved_rim[k])
            sector = sector_of(band)
            values = moved_chi[k][tuple(band.T)]
            sums = np.bincount(sector, weights=values, minlength=n_sectors)
            counts = np.bincount(sector, minlength=n_sectors)
            # Local white-matter reference per sector (follows smooth background gradients
            # across the lesion); the lesion's white-matter median where a sector has none.
            local_ref = np.full(n_sectors, wm_ref)
            if local_wm:
                shell = np.argwhere(moved_wm[k])
                if len(shell):
                    shell_sector = sector_of(shell)
                    shell_values = moved_chi[k][tuple(shell.T)]
                    for j in np.unique(shell_sector):
                        local_ref[j] = float(np.median(shell_values[shell_sector == j]))
            filled = counts > 0
            means = sums[filled] / counts[filled] - local_ref[filled]
            fraction = float(np.mean(means > threshold)) if filled.any() else 0.0
            para_values.extend((means[means > threshold] + local_ref[filled][means > threshold]
                                - wm_ref).tolist())
            fractions.append((int(k + origin[slice_axis]), fraction))
        per_slice[lid] = fractions
        run = _longest_run([f >= min_fraction - 1e-9 for _, f in fractions])
        # The paramagnetic part of the rim must stand above the core (a homogeneously
        # paramagnetic lesion has no rim).
        rim_peak = float(np.mean(para_values)) if para_values else rim_ppm
        core_iso = bool(core_ppm is None or rim_peak is None
                        or rim_peak - core_ppm > core_margin * threshold)
        rim_pos = run >= int(min_slices) and core_iso
        rows.append({
            "id": lid, "x": float(centroid[0]), "y": float(centroid[1]),
            "z": float(centroid[2]), "core_ppm": core_ppm, "rim_ppm": rim_ppm,
            "rim_fraction": max((f for _, f in fractions), default=0.0), "rim_slices": run,
            "class": "rim+" if rim_pos else "rim-", "wm_ppm": wm_ref,
            "volume_mm3": float(lesion.sum() * voxel_mm3),
            "n_slices_evaluated": len(fractions),
            "mean_rim_fraction": float(np.mean([f for _, f in fractions])) if fractions
            else None,
            "core_iso": core_iso,
        })
    n_pos = sum(1 for r in rows if r["class"] == "rim+")
    summary = {
        "n_lesions": len(rows), "n_rim_positive": n_pos,
        "n_rim_negative": len(rows) - n_pos,
        "prl_flag": n_pos >= PRL_COUNT_FLAG,
        "prl_flag_rule": f">= {PRL_COUNT_FLAG} rim+ lesions (Absinta 2019)",
        "threshold_ppm": threshold, "sigma_wm_ppm": sigma_wm,
    }
    parameters = {
        "slice_axis": slice_axis, "rim_inner_mm": rim_inner, "rim_outer_mm": rim_outer,
        "gap_mm": gap, "wm_width_mm": wm_width, "n_sectors": int(n_sectors),
        "rim_threshold_ppm": rim_threshold_ppm, "rim_min_ppm": rim_min_ppm,
        "rim_sigma": rim_sigma, "min_fraction": min_fraction, "min_slices": int(min_slices),
        "min_radius_mm": min_radius, "local_wm": bool(local_wm),
        "core_margin": float(core_margin),
        "voxel_size_mm": vs.tolist(),
    }
    return RimResult(rows, summary, parameters, per_slice)


def plot_rims(result: RimResult, chi_ppm, lesion_mask, *, slice_axis: int = 2, max_panels=8,
              affine=None):
    """One panel per lesion (its central slice, lesion outline) plus rim fraction per slice.

    Lesion panels are radiological with orientation letters from ``affine`` (voxel-to-world;
    default identity, i.e. voxel axes taken as RAS): the plane normal to voxel axis
    ``slice_axis``, drawn as :func:`qsmkit.report.figures.oriented_panel` draws it.
    """
    from qsmkit.report.figures import oriented_panel, plane_of_axis

    affine = np.eye(4) if affine is None else np.asarray(affine, float)
    plane = plane_of_axis(affine, slice_axis)
    chi = np.asarray(chi_ppm)
    labels = _lesion_labels(np.asarray(lesion_mask))
    rows = result.rows[:max_panels]
    n = len(rows) + 1
    fig = new_figure(2.4 * n, 3.0)
    half = 10
    for k, row in enumerate(rows, start=1):
        ax = fig.add_subplot(1, n, k)
        c = [int(round(row[a])) for a in ("x", "y", "z")]
        sl = tuple(slice(max(0, c[a] - half), c[a] + half + 1) for a in range(3))
        centre = [c[a] - sl[a].start for a in range(3)]
        wm = row["wm_ppm"]
        oriented_panel(ax, chi[sl], affine, plane, centre, vmin=wm - 0.1, vmax=wm + 0.1,
                       outline=labels[sl] == row["id"], outline_colour="orange", fontsize=7)
        colour = "red" if row["class"] == "rim+" else "deepskyblue"
        ax.set_title(f"#{row['id']} {row['class']}\nfrac {row['rim_fraction']:.2f}, "
                     f"{row['rim_slices']} sl", fontsize=7, color=colour)
    ax = fig.add_subplot(1, n, n)
    for row in rows:
        pts = result.slices.get(row["id"], [])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3,
                    label=f"#{row['id']}")
    ax.axhline(result.parameters["min_fraction"], color="k", ls="--", lw=0.8)
    ax.set_xlabel("slice")
    ax.set_ylabel("rim fraction")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig

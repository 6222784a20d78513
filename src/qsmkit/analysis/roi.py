"""Statistics of chi per labelled region, with a chosen reference, iron and z-scores.

``roi_statistics(chi_ppm, labels, voxel_size, lut=..., reference="csf")`` returns one row per
label with the columns of ``qsmkit roi``: label, name, n_voxels, volume_mm3, mean_ppm,
median_ppm, sd_ppm, total_ppm_mm3 (mean x volume, the "total susceptibility" that tracks the
total iron of a structure when its volume changes), iron_mg_per_kg (see
:mod:`qsmkit.analysis.iron`), z (see below) and, when an R2* map of the same run is given,
r2star_mean_per_s, r2star_sd_per_s and r2star_n over the same voxels (R2* rises with iron but
also with myelin, and falls with calcium where chi falls too: the two side by side tell iron
from its confounds).

z-scores: against age-dependent in-vivo chi norms (:mod:`qsmkit.analysis.norms`, given the
subject's age), each on its own reference region. The regional mean is re-expressed on the
norm's reference from levels measured in the same map: CSF from labels named CSF/ventricle
or from the map's ``ChiReference`` record (the ventricular CSF found at run time), the
whole-brain mean from the brain mask or the record; when neither is known, no z is given
and ``z_note`` says why. The older post-mortem iron table (``normative``) is used only when
asked for, on chi relative to CSF.

Label images: FreeSurfer ``aseg`` and FSL FIRST images with their lookup tables
(``FreeSurferColorLUT.txt``, a TSV with ``index``/``name`` columns such as BIDS ``dseg.tsv``,
or a JSON ``{"index": "name"}``), or the head phantom's labels with its ``label_names``.

Reference: chi from QSM is relative; every value is reported relative to
``reference`` = ``"csf"`` (mean over labels named CSF / ventricle), ``"brain"`` (mean over the
brain mask, or over all labelled voxels), ``"none"`` (the map as given), a label (number or
name) whose mean becomes zero, or ``"auto"``: CSF when labelled, else brain.

References
----------
QSM Consensus Organization Committee (Bilgic B, Costagli M, Chan KS, et al.). Recommended
implementation of quantitative susceptibility mapping for clinical research in the brain: a
consensus of the ISMRM electro-magnetic tissue properties study group. Magn Reson Med
2024;91:1834-1862 (report the reference region; CSF or whole brain are common choices).
"""

from __future__ import annotations

import dataclasses
import json
import re
from importlib import resources

import numpy as np
import scipy.ndimage as ndi

from qsmkit.analysis import check_chi, check_same_grid, check_voxel_size, new_figure
from qsmkit.analysis import iron as iron_mod
from qsmkit.analysis.norms import score_region
from qsmkit.errors import InputError

ROI_COLUMNS = (
    "label", "name", "n_voxels", "volume_mm3", "mean_ppm", "median_ppm", "sd_ppm",
    "total_ppm_mm3", "iron_mg_per_kg", "z", "z_quantity", "normative_name",
    "norm_mean_ppm", "norm_sd_ppm", "norm_reference", "z_note",
    "r2star_mean_per_s", "r2star_sd_per_s", "r2star_n",
)
_CSF_PATTERN = re.compile(r"csf|ventric|(^|[-_ ])vent$", re.IGNORECASE)
_VENTRICLE_PATTERN = re.compile(r"ventric|(^|[-_ ])vent$", re.IGNORECASE)
_NO_IRON_PATTERN = re.compile(
    r"csf|ventric|white|\bwm\b|vessel|vein|sinus|choroid|unknown|background|air|skull|scalp"
    r"|bleed|calcif|lesion|ms_",
    re.IGNORECASE)


@dataclasses.dataclass
class RoiResult:
    """Per-label table, the reference used and the parameters."""

    rows: list[dict]
    reference: dict
    parameters: dict

    @property
    def summary(self) -> dict:
        flagged = [r["name"] for r in self.rows
                   if r.get("z") is not None and np.isfinite(r["z"]) and abs(r["z"]) >= 2]
        return {"n_labels": len(self.rows), "reference": self.reference,
                "labels_with_abs_z_ge_2": flagged}

    def by_name(self) -> dict[str, dict]:
        return {r["name"]: r for r in self.rows}


def parse_lut(text: str, *, origin: str = "lookup table") -> dict[int, str]:
    """Label number -> name from a FreeSurfer LUT, a TSV with index/name columns, or JSON."""
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{origin} is empty")
    if stripped[0] in "{[":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise InputError(f"{origin} is not valid JSON: {err}") from None
        if isinstance(data, list):
            data = {item["index"]: item["name"] for item in data}
        try:
            return {int(k): str(v) for k, v in data.items()}
        except (ValueError, TypeError, AttributeError):
            raise InputError(f"{origin}: JSON must map label numbers to names") from None
    lines = [ln for ln in stripped.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    header = [h.strip().lower() for h in lines[0].split("\t")]
    lut: dict[int, str] = {}
    if "index" in header and "name" in header:
        i, n = header.index("index"), header.index("name")
        for line in lines[1:]:
            cells = line.split("\t")
            try:
                lut[int(cells[i])] = cells[n].strip()
            except (ValueError, IndexError):
                raise InputError(f"{origin}: cannot read the row {line!r}") from None
        return lut
    for line in lines:  # FreeSurferColorLUT.txt: "index name R G B A"
        cells = line.split()
        if len(cells) < 2:
            continue
        try:
            lut[int(cells[0])] = cells[1]
        except ValueError:
            raise InputError(
                f"{origin}: cannot read {line!r}; give a FreeSurfer LUT (index name R G B A), "
                "a TSV with 'index' and 'name' columns, or JSON"
            ) from None
    if not lut:
        raise InputError(f"{origin} holds no labels")
    return lut


def default_lut() -> dict[int, str]:
    """The subcortical FreeSurfer aseg / FSL FIRST labels shipped with qsmkit."""
    text = resources.files("qsmkit").joinpath("data", "freesurfer_aseg_lut.tsv").read_text()
    return parse_lut(text, origin="qsmkit/data/freesurfer_aseg_lut.tsv")


def is_csf_name(name: str) -> bool:
    return bool(_CSF_PATTERN.search(str(name)))


def csf_region(labels: np.ndarray, lut: dict[int, str], mask=None) -> tuple[np.ndarray, list]:
    """The CSF reference region of a label image and the names it uses: the labels named
    ventricle when any is present, else every label named CSF or ventricle (within ``mask``).

    Ventricular CSF is preferred: CSF at the edge of the brain mask is biased by background
    removal (on the independent phantom the whole CSF label read about 20 ppb below the
    ventricles; docs/applications.md) and Straub et al. 2017 found the lateral ventricles
    among the most stable references.
    """
    inside = labels if mask is None else np.where(mask, labels, 0)
    present = {k: v for k, v in lut.items() if is_csf_name(v) and np.any(inside == k)}
    ventricles = {k: v for k, v in present.items() if _VENTRICLE_PATTERN.search(str(v))}
    chosen = ventricles or present
    region = np.isin(inside, list(chosen)) if chosen else np.zeros(labels.shape, bool)
    return region, sorted(chosen.values())


def _find_labels(lut: dict[int, str], key) -> list[int]:
    if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.strip().isdigit()):
        return [int(key)]
    wanted = iron_mod.normalise_name(key)
    hits = [k for k, v in lut.items() if iron_mod.normalise_name(v) == wanted]
    if not hits:
        hits = [k for k, v in lut.items() if str(v).lower() == str(key).lower()]
    return hits


def reference_mask(reference, labels: np.ndarray, lut: dict[int, str],
                   mask: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """Voxels whose mean chi is the zero of the reported values (None for 'none')."""
    ref = str(reference).strip() if not isinstance(reference, (int, np.integer)) else reference
    if isinstance(ref, str) and ref.lower() == "auto":
        has_csf = any(is_csf_name(v) and np.any(labels == k) for k, v in lut.items())
        ref = "csf" if has_csf else "brain"
    if isinstance(ref, str) and ref.lower() == "none":
        return None, "none (chi as given)"
    if isinstance(ref, str) and ref.lower() == "brain":
        region = mask if mask is not None else labels > 0
        return region, "brain (mean over the brain mask)" if mask is not None else \
            "brain (mean over all labelled voxels)"
    if isinstance(ref, str) and ref.lower() == "csf":
        region, names = csf_region(labels, lut)
        if not region.any():
            raise InputError(
                "--reference csf needs labels named CSF or ventricle in the lookup table; "
                "none are present in the label image. Use --reference brain, none, or a label"
            )
        return region, "csf (mean over " + ", ".join(names) + ")"
    found = _find_labels(lut, ref)
    region = np.isin(labels, found) if found else np.zeros(labels.shape, bool)
    if not region.any():
        raise InputError(
            f"reference {reference!r} is neither csf, brain, none nor a label present in the "
            "label image"
        )
    return region, f"label {reference} (mean over label(s) {', '.join(map(str, found))})"


def reference_levels(chi, labels, names, mask, chi_reference) -> tuple[dict, dict]:
    """Mean chi of CSF and of the whole brain in the map's own frame, and where each came
    from (None when unknown): CSF from labels named CSF/ventricle, else the map's
    ``ChiReference``; the brain from ``mask``, else the ``ChiReference``."""
    from qsmkit.reference import offset_to_reference

    levels: dict = {"csf": None, "brain": None}
    sources: dict = {"csf": None, "brain": None}
    region, used = csf_region(labels, names)
    if region.any():
        levels["csf"], sources["csf"] = float(chi[region].mean()), ", ".join(used)
    if mask is not None and mask.any():
        levels["brain"], sources["brain"] = float(chi[mask].mean()), "brain mask"
    for key in ("csf", "brain"):
        if levels[key] is None:
            value = offset_to_reference(chi_reference, key)
            if value is not None:
                levels[key], sources[key] = value, "the map's ChiReference"
    return levels, sources


def _postmortem_z(name, chi_csf, table, ppm_per_mg_per_kg, has_iron):
    """z against the post-mortem table (iron or chi rows), on chi relative to CSF."""
    entry = iron_mod.match_normative(name, table)
    if entry is None:
        return None, None, None, None
    if chi_csf is None:
        return None, None, None, "the post-mortem norm needs chi relative to CSF (unknown)"
    if entry.quantity == "chi_ppm":
        return entry.zscore(chi_csf), "chi_ppm (user table)", entry.name, None
    if not has_iron:
        return None, None, None, None
    iron = float(iron_mod.iron_from_chi(chi_csf, ppm_per_mg_per_kg=ppm_per_mg_per_kg))
    return entry.zscore(iron), "iron_mg_per_kg (post mortem)", entry.name, None


def _r2star_stats(values) -> dict:
    """Mean, SD and count of the valid (finite, positive) R2* voxels of a region."""
    out = {"r2star_mean_per_s": None, "r2star_sd_per_s": None, "r2star_n": None}
    if values is None:
        return out
    values = values[np.isfinite(values) & (values > 0)].astype(np.float64)
    out["r2star_n"] = int(values.size)
    if values.size:
        out["r2star_mean_per_s"] = float(values.mean())
        out["r2star_sd_per_s"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return out


def _erode(region: np.ndarray, voxel_size, erode_mm: float) -> np.ndarray:
    if erode_mm <= 0:
        return region
    inside = ndi.distance_transform_edt(np.pad(region, 1), sampling=voxel_size)[1:-1, 1:-1, 1:-1]
    eroded = inside > erode_mm
    return eroded if eroded.any() else region


def roi_statistics(
    chi_ppm,
    labels,
    voxel_size,
    *,
    lut: dict[int, str] | None = None,
    reference="auto",
    mask=None,
    erode_mm: float = 0.0,
    normative=None,
    ppm_per_mg_per_kg: float = iron_mod.IRON_PPM_PER_MG_PER_KG,
    min_voxels: int = 1,
    norms="default",
    age_years: float | None = None,
    chi_reference: dict | None = None,
    r2star_per_s=None,
) -> RoiResult:
    """Chi statistics per label.

    Parameters
    ----------
    chi_ppm : (X, Y, Z) array, SI ppm
    labels : (X, Y, Z) integer array; 0 is background
    voxel_size : 3 floats, mm
    lut : dict label -> name; default: the shipped FreeSurfer aseg subset, and
        ``label_<n>`` for numbers it lacks
    reference : "csf", "brain", "none", a label number or a label name; "auto" (default) is
        "csf" when the labels include CSF or ventricles, else "brain"
    mask : optional (X, Y, Z) bool brain mask; restricts every region and defines "brain"
    erode_mm : erode each region by this distance (mm) before measuring, against partial
        volume at its edges (regions that would vanish are kept whole)
    normative : None (default), "default" (the post-mortem iron table of Hallgren &
        Sourander 1958) or a list of :class:`qsmkit.analysis.iron.NormativeEntry`; used for z
        only where no in-vivo norm scores the region, on chi relative to CSF
    ppm_per_mg_per_kg : chi-iron factor (ppm per mg/kg), Langkammer 2012 by default
    min_voxels : skip labels with fewer voxels
    norms : "default" (the in-vivo table shipped with qsmkit), None, or a list of
        :class:`qsmkit.analysis.norms.ChiNorm`
    age_years : the subject's age (years), needed by the age-dependent norms
    chi_reference : the map's ``ChiReference`` record (:mod:`qsmkit.reference`): its CSF and
        brain levels convert the values to a norm's reference when the labels and mask do not
    r2star_per_s : optional (X, Y, Z) R2* map (1/s) of the same run; zeros (outside its mask)
        and non-finite voxels are left out

    Returns
    -------
    RoiResult with ``rows`` (columns :data:`ROI_COLUMNS`), ``reference`` and ``parameters``.
    """
    chi = check_chi(chi_ppm)
    vs = check_voxel_size(voxel_size)
    labels = check_same_grid(chi, labels, "the label image")
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.allclose(labels, rounded, atol=1e-3):
            raise InputError("the label image must hold integer label numbers")
        labels = rounded.astype(np.int32)
    if mask is not None:
        mask = check_same_grid(chi, mask, "the mask").astype(bool)
        labels = np.where(mask, labels, 0)
    present = [int(v) for v in np.unique(labels) if v != 0]
    if not present:
        raise InputError("the label image holds no labels (all zero inside the mask)")
    names = dict(default_lut() if lut is None else lut)
    for value in present:
        names.setdefault(value, f"label_{value}")
    if normative == "default":
        normative = iron_mod.load_normative()
    normative = list(normative or [])
    if isinstance(norms, str) and norms == "default":
        from qsmkit.analysis.norms import load_norms

        norms = load_norms()
    norms = list(norms or [])
    r2 = None
    if r2star_per_s is not None:
        r2 = check_same_grid(chi, r2star_per_s, "the R2* map").astype(np.float32)

    ref_region, ref_text = reference_mask(reference, labels, names, mask)
    ref_value = float(chi[ref_region].mean()) if ref_region is not None else 0.0
    ref_n = int(ref_region.sum()) if ref_region is not None else 0
    levels, level_sources = reference_levels(chi, labels, names, mask, chi_reference)

    voxel_mm3 = float(np.prod(vs))
    rows = []
    objects = ndi.find_objects(np.where(labels > 0, labels, 0))
    for value in present:
        slc = objects[value - 1] if value - 1 < len(objects) else None
        if slc is None:
            continue
        region = labels[slc] == value
        region = _erode(region, vs, erode_mm)
        values = chi[slc][region].astype(float) - ref_value
        if values.size < max(1, int(min_voxels)):
            continue
        mean = float(values.mean())
        name = names[value]
        volume = values.size * voxel_mm3
        iron = None if _NO_IRON_PATTERN.search(name) else float(
            iron_mod.iron_from_chi(mean, ppm_per_mg_per_kg=ppm_per_mg_per_kg))
        on_reference = {k: (None if lev is None else mean + ref_value - lev)
                        for k, lev in levels.items()}
        scored = score_region(name, on_reference, age_years, norms)
        z, quantity, norm_name = scored["z"], None, None
        if z is not None:
            quantity = f"chi_ppm (in vivo, relative to {scored['norm_reference']})"
            norm_name = scored["norm_source"]
        elif normative:
            z, quantity, norm_name, note = _postmortem_z(
                name, on_reference["csf"], normative, ppm_per_mg_per_kg, iron is not None)
            scored["z_note"] = note or scored["z_note"]
        r2_stats = _r2star_stats(r2[slc][region] if r2 is not None else None)
        rows.append({
            "label": value, "name": name, "n_voxels": int(values.size), "volume_mm3": volume,
            "mean_ppm": mean, "median_ppm": float(np.median(values)),
            "sd_ppm": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "total_ppm_mm3": mean * volume, "iron_mg_per_kg": iron, "z": z,
            "z_quantity": quantity, "normative_name": norm_name,
            "norm_mean_ppm": scored["norm_mean_ppm"], "norm_sd_ppm": scored["norm_sd_ppm"],
            "norm_reference": scored["norm_reference"],
            "z_note": None if z is not None else scored["z_note"], **r2_stats,
        })
    return RoiResult(
        rows=rows,
        reference={"kind": ref_text.split(" ")[0], "requested": str(reference),
                   "description": ref_text, "value_ppm": ref_value,
                   "n_voxels": ref_n, "chi_reference": chi_reference,
                   "levels_ppm": levels, "level_sources": level_sources},
        parameters={"voxel_size_mm": vs.tolist(), "erode_mm": float(erode_mm),
                    "ppm_per_mg_per_kg": float(ppm_per_mg_per_kg),
                    "iron_factor_source": "Langkammer et al. NeuroImage 2012;62:1593-1599",
                    "normative_entries": [e.name for e in normative],
                    "norms": [f"{n.structure} ({n.reference}, {n.age_min:g}-{n.age_max:g} y): "
                              f"{n.source}" for n in norms],
                    "age_years": age_years, "r2star": r2 is not None,
                    "min_voxels": int(min_voxels)},
    )


def read_lut(path) -> dict[int, str]:
    """Read a lookup table file (FreeSurfer LUT, index/name TSV such as ``labels.tsv`` or
    BIDS ``dseg.tsv``, or JSON)."""
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read the lookup table {path}: {err}") from None
    return parse_lut(text, origin=str(path))


def region_table(chi_ppm, labels, voxel_size, **options) -> list[dict]:
    """Rows of :func:`roi_statistics` (same options), for callers that need only the table."""
    return roi_statistics(chi_ppm, labels, voxel_size, **options).rows


def write_table(rows, path, columns=ROI_COLUMNS):
    """Write rows as TSV (``n/a`` for missing values)."""
    from pathlib import Path

    from qsmkit.analysis import format_tsv

    Path(path).write_text(format_tsv(rows, columns))
    return Path(path)


def plot_roi(result: RoiResult, chi_ppm=None, labels=None, *, affine=None):
    """Figure: mean +/- SD chi per label (bars) and, if given, an axial slice with outlines.

    The slice is radiological (patient right on the left, anterior up) with orientation
    letters from ``affine`` (voxel-to-world; default identity, i.e. voxel axes taken as RAS),
    see :func:`qsmkit.report.figures.oriented_panel`.
    """
    rows = [r for r in result.rows if r["n_voxels"] > 0]
    has_image = chi_ppm is not None and labels is not None
    fig = new_figure(12.0 if has_image else 8.0, 4.5)
    ax = fig.add_subplot(1, 2 if has_image else 1, 1)
    y = np.arange(len(rows))
    ax.barh(y, [r["mean_ppm"] for r in rows], xerr=[r["sd_ppm"] for r in rows],
            color=["tab:red" if (r["z"] is not None and abs(r["z"]) >= 2) else "tab:blue"
                   for r in rows], alpha=0.8)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"chi (ppm) relative to {result.reference['kind']}")
    ax.set_title("Regional susceptibility (red: |z| >= 2)")
    if has_image:
        from qsmkit.report.figures import oriented_panel, to_ras

        chi = np.asarray(chi_ppm)
        affine = np.eye(4) if affine is None else np.asarray(affine, float)
        labels_ras = to_ras(np.asarray(labels), affine)
        # The axial slice crossing the most reported regions.
        reported = np.isin(labels_ras, [r["label"] for r in rows])
        counts = [len(np.unique(labels_ras[:, :, z][reported[:, :, z]]))
                  for z in range(labels_ras.shape[2])]
        k = int(np.argmax(counts))
        ax2 = fig.add_subplot(1, 2, 2)
        view, _ = oriented_panel(ax2, chi, affine, "axial", ras_slice=k, vmin=-0.15,
                                 vmax=0.25)
        plane = view.image(labels_ras, k)
        if np.unique(plane).size > 1:
            ax2.contour(plane, levels=np.unique(plane)[1:] - 0.5, colors="yellow",
                        linewidths=0.5)
        ax2.set_title(f"chi (ppm), axial slice {k}")
    fig.tight_layout()
    return fig

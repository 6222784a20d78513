"""BIDS derivative names and the completeness check that makes cohort runs resumable.

Per acquisition (entities ``sub``, ``ses``, ``acq``, ``run``) qsmkit writes into
``OUTPUT/sub-X[/ses-Y]/anat/``::

    sub-X[_ses-Y][_acq-Z][_run-N]_Chimap.nii.gz      chi (ppm), BIDS-qMRI suffix
    ..._R2starmap.nii.gz / ..._T2starmap.nii.gz       R2* (1/s), T2* (s)
    ..._mask.nii.gz                                   where chi is valid (Type Brain)
    ..._desc-brain_mask.nii.gz                        the brain mask of the pipeline
    (each with a JSON sidecar: Units, SkullStripped, Sources and SpatialReference as BIDS
    URIs into the source dataset, method, parameters; the mask's Type)

and the full run folder (figures, report.html, qsmkit.json, roi.tsv) into
``OUTPUT/sub-X[/ses-Y]/qsmkit/<prefix>/``, the group tables into ``OUTPUT/group/`` and the
cohort page ``OUTPUT/index.html``: BIDS has no names for these, so ``OUTPUT/.bidsignore``
lists them (:data:`BIDSIGNORE`) and the BIDS validator checks the standard files only.
A subject counts as complete only when its ``qsmkit.json`` says ``"status": "complete"``
and records the same configuration hash and input checksums as the current run, and every
listed output exists.

References
----------
BIDS specification, "Derivatives" > "Common data types and metadata" (masks: ``Type``,
``Sources``, ``SpatialReference``) and "Magnetic Resonance Imaging" > "Quantitative MRI"
(``Chimap`` in ppm, ``R2starmap``, ``T2starmap``), https://bids-specification.readthedocs.io.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

BIDS_MAPS = {
    "Chimap": ("chi.nii.gz", "ppm", "Magnetic susceptibility (SI), referenced as configured"),
    "R2starmap": ("r2star.nii.gz", "1/s", "Effective transverse relaxation rate"),
    "T2starmap": (None, "s", "Effective transverse relaxation time, 1/R2*"),
    "mask": ("mask.nii.gz", "", "Voxels where chi is valid: the brain mask after background "
             "field removal"),
    "desc-brain_mask": ("brain_mask.nii.gz", "", "Brain mask of the pipeline (before "
                        "background field removal)"),
}

# Non-BIDS content of a cohort derivative (patterns without a trailing slash: the BIDS
# validator then skips the folders themselves too).
BIDSIGNORE = ("group", "*.html", "sub-*/qsmkit", "sub-*/ses-*/qsmkit")

README = """\
# qsmkit derivatives

Quantitative susceptibility mapping of every multi-echo GRE (`MEGRE`) acquisition of the
source dataset (see `SourceDatasets` in `dataset_description.json`), by `qsmkit bids`.

BIDS derivatives, per acquisition in `sub-<label>[/ses-<label>]/anat/`:

- `*_Chimap.nii.gz`: magnetic susceptibility (ppm); its sidecar says how chi was referenced
  (`ChiReference`)
- `*_R2starmap.nii.gz` (1/s) and `*_T2starmap.nii.gz` (s)
- `*_mask.nii.gz`: where chi is valid; `*_desc-brain_mask.nii.gz`: the brain mask
- sidecars: `Units`, `SkullStripped`, `Sources` and `SpatialReference` (BIDS URIs into the
  source dataset, `DatasetLinks` "raw"), `Type` of the masks, method and parameters

qsmkit's own files, listed in `.bidsignore`: the run folders `sub-*/[ses-*/]qsmkit/<scan>/`
(all maps, figures, `report.html`, `qsmkit.json` provenance, `roi.tsv`), the group tables in
`group/` (`roi_stats.tsv`, `qc.tsv`, `summary.tsv`) and the cohort page `index.html`.
"""


def entity_prefix(subject: str, session=None, acq=None, run=None) -> str:
    parts = [f"sub-{subject}"]
    for key, value in (("ses", session), ("acq", acq), ("run", run)):
        if value not in (None, ""):
            parts.append(f"{key}-{value}")
    return "_".join(parts)


def subject_dirs(root: Path, subject: str, session=None) -> Path:
    base = Path(root) / f"sub-{subject}"
    return base / f"ses-{session}" if session not in (None, "") else base


def config_hash(config_dict: dict) -> str:
    text = json.dumps(config_dict, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_complete(run_dir: Path, anat_dir: Path, prefix: str, cfg_hash: str, checksums: dict) -> bool:
    """True when a previous run with the same configuration and inputs finished."""
    record_path = run_dir / "qsmkit.json"
    if not record_path.exists():
        return False
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError:
        return False
    if record.get("status") != "complete" or record.get("config_hash") != cfg_hash:
        return False
    if record.get("inputs") != checksums:
        return False
    expected = [anat_dir / f"{prefix}_{suffix}.nii.gz" for suffix in BIDS_MAPS]
    return all(p.exists() for p in expected) and all(
        (run_dir / name).exists() for name in record.get("outputs", [])
    )


def bids_sidecars(config: dict, *, sources: list[str], grid: str, r2star_uri: str,
                  chi_reference: dict | None = None) -> dict[str, dict]:
    """The JSON sidecar of each map in :data:`BIDS_MAPS`, keyed like it.

    Parameters
    ----------
    config : dict
        The pipeline configuration (``QSMConfig`` as a dict).
    sources : list of str
        BIDS URIs of the raw images the maps were computed from.
    grid : str
        BIDS URI of the image whose grid the maps share (``SpatialReference``).
    r2star_uri : str
        BIDS URI of the R2* map in this derivative, the source of T2*
        (``bids::sub-01/anat/sub-01_R2starmap.nii.gz``).
    chi_reference : dict, optional
        How chi was referenced (:func:`qsmkit.reference.reference_record`).
    """
    method = {key: config.get(key) for key in ("unwrap", "bgremove", "invert", "reference",
                                               "r2star")}
    out = {}
    for suffix, (_, unit, description) in BIDS_MAPS.items():
        sidecar = {"Description": description}
        if suffix.endswith("mask"):
            sidecar["Type"] = "Brain"
        else:
            sidecar["Units"] = unit
            sidecar["SkullStripped"] = True  # every map is zero outside its mask
        sidecar["Sources"] = [r2star_uri] if suffix == "T2starmap" else list(sources)
        sidecar["SpatialReference"] = grid
        sidecar["Method"] = method
        sidecar["Parameters"] = config
        if suffix == "Chimap":  # how chi was referenced (qsmkit.reference.reference_record)
            sidecar["ChiReference"] = chi_reference
        out[suffix] = sidecar
    return out


def dataset_description(output: Path, dataset: Path) -> Path:
    """Write ``OUTPUT/dataset_description.json`` naming ``dataset`` as the source."""
    from qsmkit.io.bids import write_derivative_description

    return write_derivative_description(
        output, name="qsmkit derivatives", description="Quantitative susceptibility mapping",
        source=dataset)

"""BIDS derivative names and the completeness check that makes cohort runs resumable.

Per acquisition (entities ``sub``, ``ses``, ``acq``, ``run``) qsmkit writes into
``OUTPUT/sub-X[/ses-Y]/anat/``::

    sub-X[_ses-Y][_acq-Z][_run-N]_Chimap.nii.gz      chi (ppm), BIDS-qMRI suffix
    ..._R2starmap.nii.gz / ..._T2starmap.nii.gz       R2* (1/s), T2* (s)
    ..._mask.nii.gz                                   where chi is valid
    (each with a JSON sidecar: Units, method, parameters)

and the full run folder (figures, report.html, qsmkit.json, roi.tsv) into
``OUTPUT/sub-X[/ses-Y]/qsmkit/<prefix>/``. A subject counts as complete only when its
``qsmkit.json`` says ``"status": "complete"`` and records the same configuration hash and
input checksums as the current run, and every listed output exists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

BIDS_MAPS = {
    "Chimap": ("chi.nii.gz", "ppm", "Magnetic susceptibility (SI), referenced as configured"),
    "R2starmap": ("r2star.nii.gz", "1/s", "Effective transverse relaxation rate"),
    "T2starmap": (None, "s", "Effective transverse relaxation time, 1/R2*"),
    "mask": ("mask.nii.gz", "", "Voxels where chi is valid (after background removal)"),
}


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


def dataset_description() -> dict:
    from qsmkit import __version__

    return {
        "Name": "qsmkit derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "qsmkit", "Version": __version__,
                         "Description": "Quantitative susceptibility mapping"}],
    }

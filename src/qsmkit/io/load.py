"""One entry point for every input form: :func:`load_acquisition`.

Inputs accepted (the ``qsmkit run`` INPUT forms):

- a DICOM folder (any vendor; see :mod:`qsmkit.io.dicom`);
- a BIDS dataset, subject or session folder with ``*_MEGRE``/``*_GRE`` images
  (:mod:`qsmkit.io.bids`);
- a folder written by ``qsmkit import`` (``mag.nii.gz``, ``phase.nii.gz`` and sidecars);
- ``mag=``/``phase=`` NIfTI files: one 4D file each (echoes last) or one 3D file per echo.
  Echo times and field strength come from the arguments or from JSON sidecars next to the
  files (``EchoTime`` or ``EchoTimes`` in s, ``MagneticFieldStrength`` in T), or from an
  ``acquisition.json`` in the same folder. Phase in radians or in vendor integer units
  (Siemens -4096..4095, Philips/unsigned 0..4095, milliradians) is detected, rescaled and
  reported in ``Acquisition.notes``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsmkit.acquisition import Acquisition, check_echo_times, phase_to_radians
from qsmkit.errors import InputError

IMPORT_NAMES = ("mag.nii.gz", "phase.nii.gz", "mag.json", "phase.json", "acquisition.json")
"""Files that :func:`save_acquisition` writes (and ``qsmkit import`` produces)."""

ACQUISITION_JSON = "acquisition.json"

# DICOM attributes safe to keep in acquisition.json (no patient identifiers): enough for a
# derived DICOM series (chi, R2*) to be filed in the same study and frame of reference, with
# the source's image orientation and slice order.
_REFERENCE_UIDS = ("StudyInstanceUID", "FrameOfReferenceUID", "SeriesInstanceUID",
                   "SeriesNumber", "SeriesDescription", "Manufacturer",
                   "ImageOrientationPatient", "SourceSliceDirection")


def load_acquisition(
    inputs=None,
    *,
    mag=None,
    phase=None,
    echo_times_s=None,
    b0_tesla: float | None = None,
    series: int | None = None,
    phase_unit: str = "auto",
) -> Acquisition:
    """Load multi-echo GRE data from a DICOM, BIDS or import folder, or NIfTI files.

    Parameters
    ----------
    inputs : path or list of paths, optional
        One folder (DICOM, BIDS dataset/subject/session, or a ``qsmkit import`` output).
    mag, phase : path or list of paths, optional
        NIfTI magnitude and phase: one 4D file each (echoes last) or one 3D file per echo.
    echo_times_s : sequence of float, optional
        Echo times in seconds; override the headers/sidecars (a note records it).
    b0_tesla : float, optional
        Field strength in tesla; overrides the headers/sidecars (a note records it when
        they differ by more than 5 %).
    series : int, optional
        DICOM SeriesNumber when the folder holds several GRE series.
    phase_unit : str
        Unit of the stored phase (``--phase-unit``): ``auto`` (default) detects it, else one
        of :data:`qsmkit.acquisition.PHASE_UNITS` (see
        :func:`qsmkit.acquisition.phase_to_radians`).

    Returns
    -------
    Acquisition

    Raises
    ------
    InputError
        Missing or conflicting inputs, unreadable files, mismatched magnitude/phase,
        missing echo times or field strength, phase in unknown units, and every check of
        :class:`~qsmkit.acquisition.Acquisition`.
    """
    paths = _as_paths(inputs)
    if mag is not None or phase is not None:
        if paths:
            raise InputError("give either an input folder or --mag/--phase files, not both")
        if mag is None or phase is None:
            raise InputError("--mag and --phase must be given together")
        return load_nifti_acquisition(mag, phase, echo_times_s=echo_times_s, b0_tesla=b0_tesla,
                                      phase_unit=phase_unit)
    if not paths:
        raise InputError("give a DICOM or BIDS folder, or --mag and --phase NIfTI files")
    if len(paths) > 1:
        if all(_is_nifti(p) for p in paths):
            raise InputError(
                "several NIfTI files given as inputs; pass them as --mag FILE... --phase FILE..."
            )
        raise InputError(f"give one input folder, got {len(paths)} paths")
    path = paths[0]
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_file():
        if _is_nifti(path):
            raise InputError(
                f"{path} is a NIfTI file; give magnitude and phase as --mag and --phase"
            )
        raise InputError(f"{path} is a file; give the folder that holds the DICOM files")
    kind = detect_input_kind(path)
    if kind == "import":
        acq = load_nifti_acquisition(path / "mag.nii.gz", path / "phase.nii.gz",
                                     echo_times_s=echo_times_s, b0_tesla=b0_tesla,
                                     phase_unit=phase_unit)
        return acq
    acq = (_load_bids(path, series=series, phase_unit=phase_unit, echo_times_s=echo_times_s,
                      b0_tesla=b0_tesla) if kind == "bids" else None)
    if acq is None:  # not BIDS, or a BIDS-looking folder (sub-01/) that holds DICOM files
        from qsmkit.io.dicom import read_dicom

        try:
            acq = read_dicom(path, series=series, b0_tesla=b0_tesla, phase_unit=phase_unit)
        except InputError as err:
            if kind == "bids" and "no DICOM images" in str(err):
                raise InputError(
                    f"no multi-echo GRE images in {path}: neither BIDS MEGRE/GRE files "
                    "(part-mag and part-phase) nor DICOM files"
                ) from None
            raise
    return _override(acq, echo_times_s=echo_times_s, b0_tesla=b0_tesla)


def detect_input_kind(folder) -> str:
    """``"import"`` (qsmkit import output), ``"bids"`` or ``"dicom"`` for an input folder."""
    folder = Path(folder)
    if (folder / "mag.nii.gz").exists() and (folder / "phase.nii.gz").exists():
        return "import"
    if folder.name.startswith(("sub-", "ses-")) or (folder / "dataset_description.json").exists():
        return "bids"
    if any(p.is_dir() and p.name.startswith("sub-") for p in folder.iterdir()):
        return "bids"
    anat = folder / "anat"
    if anat.is_dir() and (any(anat.glob("*_MEGRE.nii*")) or any(anat.glob("*_GRE.nii*"))):
        return "bids"
    return "dicom"


# ----------------------------------------------------------------------------------------
# NIfTI


def load_nifti_acquisition(mag, phase, *, echo_times_s=None, b0_tesla=None,
                           phase_unit: str = "auto") -> Acquisition:
    """Magnitude and phase NIfTI files (4D, or 3D per echo) -> :class:`Acquisition`.

    Echo times and field strength: the arguments, else the JSON sidecars of the phase (or
    magnitude) files, else ``acquisition.json`` in the folder of the first phase file.
    Phase units: ``phase_unit`` (see :func:`qsmkit.acquisition.phase_to_radians`). The
    vendor's phase sign (GE) is converted as on the DICOM route
    (:func:`qsmkit.io.vendor.to_qsmkit_phase_sign`) unless the sidecar or acquisition.json
    records that qsmkit already did. Uncombined coil data, one 5D file each
    (X, Y, Z, echo, coil), are combined by MCPC-3D-S
    (:func:`qsmkit.echo.coil_combine.combine_coils`).
    """
    mag_files, phase_files = _as_paths(mag), _as_paths(phase)
    if not mag_files or not phase_files:
        raise InputError("give at least one magnitude and one phase NIfTI file")
    if len(mag_files) != len(phase_files) and (len(mag_files) > 1 and len(phase_files) > 1):
        raise InputError(
            f"{len(mag_files)} magnitude files but {len(phase_files)} phase files; give one "
            "of each per echo, or one 4D file each"
        )
    from qsmkit.io.sidecar import (
        b0_from_sidecar,
        echo_times_from_sidecar,
        read_json_dict,
        read_sidecar,
    )

    notes: list[str] = []
    mag_meta = [read_sidecar(p) for p in mag_files]
    phase_meta = [read_sidecar(p) for p in phase_files]
    mag_tes = _sidecar_echo_times(mag_files, mag_meta, echo_times_from_sidecar)
    phase_tes = _sidecar_echo_times(phase_files, phase_meta, echo_times_from_sidecar)
    # Per-echo files with their own echo times may be given in any order: sort by TE.
    if len(mag_files) > 1 and mag_tes is not None and all(len(t) == 1 for t in mag_tes):
        order = np.argsort([t[0] for t in mag_tes], kind="stable")
        if list(order) != list(range(len(order))):
            notes.append("magnitude files sorted by their sidecar echo times")
        mag_files = [mag_files[i] for i in order]
        mag_tes = [mag_tes[i] for i in order]
        mag_meta = [mag_meta[i] for i in order]
    if len(phase_files) > 1 and phase_tes is not None and all(len(t) == 1 for t in phase_tes):
        order = np.argsort([t[0] for t in phase_tes], kind="stable")
        if list(order) != list(range(len(order))):
            notes.append("phase files sorted by their sidecar echo times")
        phase_files = [phase_files[i] for i in order]
        phase_tes = [phase_tes[i] for i in order]
        phase_meta = [phase_meta[i] for i in order]

    magnitude, mag_affine, mag_counts = _load_stack(mag_files, "magnitude")
    phase_raw, phase_affine, phase_counts = _load_stack(phase_files, "phase")
    if magnitude.shape != phase_raw.shape:
        raise InputError(
            f"magnitude {_shape_text(magnitude.shape)} and phase {_shape_text(phase_raw.shape)} "
            "differ in shape; give magnitude and phase of the same scan"
        )
    if not np.allclose(mag_affine, phase_affine, atol=1e-3):
        raise InputError(
            "magnitude and phase have different affines (voxel grids); give magnitude and phase "
            "of the same scan, on the same grid"
        )
    n_echoes = magnitude.shape[3]
    flat_mag = _flatten_tes(mag_tes, mag_counts, mag_files)
    flat_phase = _flatten_tes(phase_tes, phase_counts, phase_files)
    if flat_mag is not None and flat_phase is not None and not np.allclose(
            flat_mag, flat_phase, rtol=0, atol=1e-6):
        raise InputError(
            f"the magnitude sidecars give echo times {flat_mag} but the phase sidecars "
            f"{flat_phase}; fix the sidecars or give --echo-times"
        )
    folder_record = {}
    record_path = phase_files[0].parent / ACQUISITION_JSON
    if record_path.exists():
        folder_record = read_json_dict(record_path)
    header_tes = flat_phase if flat_phase is not None else flat_mag
    if header_tes is None and "echo_times_s" in folder_record:
        header_tes = _record_echo_times(folder_record, record_path)
    if echo_times_s is not None:
        tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
        if header_tes is not None and (len(header_tes) != len(tes)
                                       or not np.allclose(header_tes, tes, atol=1e-6)):
            notes.append(f"echo times {tes.tolist()} s from the command line replace "
                         f"{np.asarray(header_tes, dtype=float).tolist()} s from the sidecars")
    elif header_tes is not None:
        tes = np.asarray(header_tes, dtype=float)
    else:
        raise InputError(
            f"no echo times for {phase_files[0].name}: give --echo-times (seconds) or put JSON "
            "sidecars with EchoTime next to the NIfTI files"
        )
    check_echo_times(tes, n_echoes)

    header_b0 = None
    for meta, path in list(zip(phase_meta, phase_files, strict=True)) + list(
            zip(mag_meta, mag_files, strict=True)):
        try:
            header_b0 = b0_from_sidecar(meta, path.name)
        except InputError:
            if b0_tesla is None:
                raise
            break  # the command line's field stands; an unreadable sidecar one is moot
        if header_b0 is not None:
            break
    b0 = b0_tesla if b0_tesla is not None else header_b0
    if b0_tesla is not None and header_b0 is not None and not np.isclose(
            float(b0_tesla), float(header_b0), rtol=0.05):
        notes.append(f"field strength {float(b0_tesla):g} T from the command line replaces "
                     f"{float(header_b0):g} T from the sidecars")
    if b0 is None and "b0_tesla" in folder_record:
        b0 = folder_record["b0_tesla"]
    if b0 is None:
        raise InputError(
            "no field strength: give --b0 (tesla) or MagneticFieldStrength in the JSON sidecars"
        )
    from qsmkit.qc import check_magnitude_phase_order

    # Swapped or duplicated inputs are refused before any phase unit is guessed (issue 14).
    check_magnitude_phase_order(
        magnitude, phase_raw, magnitude_name=", ".join(p.name for p in mag_files),
        phase_name=", ".join(p.name for p in phase_files))
    phase_rad, note = phase_to_radians(phase_raw, what="phase", unit=phase_unit)
    del phase_raw
    if note:
        notes.append(note)
    meta = {**(mag_meta[0] if mag_meta else {}), **(phase_meta[0] if phase_meta else {})}
    manufacturer = str(meta.get("Manufacturer", folder_record.get("manufacturer", "")) or "")
    from qsmkit.io.vendor import PHASE_SIGN_KEY, QSMKIT_PHASE_SIGN, to_qsmkit_phase_sign

    phase_rad, note = to_qsmkit_phase_sign(phase_rad, manufacturer, meta, folder_record)
    if note:
        notes.append(note)
    meta[PHASE_SIGN_KEY] = QSMKIT_PHASE_SIGN
    if magnitude.ndim == 5:
        magnitude, phase_rad = _combine_coils(magnitude, phase_rad, tes, mag_affine, notes)
    record_notes = folder_record.get("notes", []) if isinstance(folder_record, dict) else []
    if isinstance(record_notes, list):
        notes = [str(n) for n in record_notes] + notes
    reference = folder_record.get("dicom_reference", {}) if isinstance(folder_record, dict) else {}
    return Acquisition(
        magnitude=magnitude,
        phase=phase_rad,
        echo_times_s=tes,
        b0_tesla=b0,
        affine=mag_affine,
        manufacturer=manufacturer,
        series_description=str(meta.get("SeriesDescription",
                                        folder_record.get("series_description", "")) or ""),
        notes=notes,
        metadata={k: v for k, v in meta.items() if k not in ("EchoTime", "EchoTimes")},
        dicom_reference=reference if isinstance(reference, dict) else {},
    )


def _sidecar_echo_times(files, metas, reader):
    values = []
    for path, meta in zip(files, metas, strict=True):
        tes = reader(meta, path.name) if meta else None
        if tes is None:
            return None
        values.append(tes)
    return values


def _flatten_tes(per_file, counts, files):
    if per_file is None:
        return None
    flat = []
    for tes, count, path in zip(per_file, counts, files, strict=True):
        if len(tes) != count:
            raise InputError(
                f"the sidecar of {path.name} gives {len(tes)} echo time(s) for {count} "
                "volume(s); list one echo time per volume in EchoTimes"
            )
        flat.extend(tes)
    return flat


def _record_echo_times(record: dict, path: Path):
    values = record.get("echo_times_s")
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise InputError(f"echo_times_s in {path} must be a list of seconds")
    return [float(v) for v in values]


def _load_stack(files: list[Path], what: str):
    from qsmkit.io.nifti import load_nifti

    volumes, counts, affine, shape = [], [], None, None
    for path in files:
        if not path.exists():
            raise InputError(f"{what} file not found: {path}")
        if path.is_dir():
            raise InputError(f"{what} input {path} is a folder; give NIfTI files")
        data, aff, _ = load_nifti(path)
        data = _to_4d(data, path, what)
        if len(files) > 1 and data.ndim == 5:
            raise InputError(
                f"{path.name} holds uncombined coil data {_shape_text(data.shape)}; give it as "
                "the only file (X, Y, Z, echo, coil)"
            )
        if len(files) > 1 and data.shape[3] != 1:
            raise InputError(
                f"{path.name} holds {data.shape[3]} volumes; with one file per echo each "
                "file must be 3D"
            )
        if affine is None:
            affine, shape = aff, data.shape[:3]
        elif data.shape[:3] != shape or not np.allclose(aff, affine, atol=1e-3):
            raise InputError(
                f"{path.name} does not share the grid of {files[0].name}; all echoes must have "
                "the same shape and affine"
            )
        volumes.append(data)
        counts.append(data.shape[3])
    data = volumes[0] if len(volumes) == 1 else np.concatenate(volumes, axis=3)
    return data, affine, counts


def _to_4d(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    if data.size == 0:
        raise InputError(f"{what} file {path.name} holds an empty image {data.shape}")
    if data.ndim == 3:
        return data[..., None]
    if data.ndim == 4:
        return data
    if data.ndim > 4:
        extra = data.shape[3:]
        if sum(n > 1 for n in extra) <= 1:
            return data.reshape(data.shape[:3] + (-1,))
        if data.ndim == 5:  # (X, Y, Z, echo, coil): combined by _combine_coils
            return data
    raise InputError(
        f"{what} file {path.name} has shape {data.shape}; expected a 3D volume, a 4D volume "
        "with echoes last or 5D uncombined coil data (X, Y, Z, echo, coil)"
    )


def _combine_coils(magnitude, phase_rad, echo_times_s, affine, notes):
    """(X, Y, Z, E, C) coil data -> (X, Y, Z, E) magnitude and phase, by MCPC-3D-S."""
    from qsmkit.echo.coil_combine import combine_coils
    from qsmkit.geometry import voxel_size_from_affine

    combined = combine_coils(magnitude, phase_rad, echo_times_s,
                             voxel_size_from_affine(affine))
    notes.append(
        f"{magnitude.shape[4]} uncombined coil channels (5D: x, y, z, echo, coil) combined by "
        "MCPC-3D-S (Eckstein 2018): each coil's phase offset removed, magnitude root sum of "
        "squares"
    )
    return combined.magnitude, combined.phase


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


# ----------------------------------------------------------------------------------------
# BIDS and overrides


def _load_bids(folder: Path, *, series=None, phase_unit: str = "auto", echo_times_s=None,
               b0_tesla=None) -> Acquisition | None:
    """The BIDS scan in ``folder`` (None when it holds no MEGRE/GRE scan); ``echo_times_s``
    and ``b0_tesla`` stand in where the sidecars lack them."""
    from qsmkit.io import bids

    label = session = None
    root = folder
    if folder.name.startswith("ses-") and folder.parent.name.startswith("sub-"):
        root, label, session = folder.parent.parent, folder.parent.name, folder.name
    elif folder.name.startswith("sub-"):
        root, label = folder.parent, folder.name
    skipped: list[str] = []
    refs = bids.find_megre(root, participant_label=label, session=session, skipped=skipped)
    if not refs and skipped:
        raise InputError(f"no usable multi-echo GRE scan in {folder}: {'; '.join(skipped)}; "
                         "give every echo as a magnitude and a phase file")
    if not refs:
        return None
    fallback = {"phase_unit": phase_unit, "echo_times_s": echo_times_s, "b0_tesla": b0_tesla}
    if len(refs) > 1:
        if series is not None and 1 <= series <= len(refs):
            return bids.read_megre(refs[series - 1], **fallback)
        listing = "; ".join(f"{i + 1}: {r.name}" for i, r in enumerate(refs))
        raise InputError(
            f"{folder} holds {len(refs)} multi-echo GRE scans ({listing}); choose one with "
            "--series N (its position in this list) or give its --mag/--phase files"
        )
    return bids.read_megre(refs[0], **fallback)


def _override(acq: Acquisition, *, echo_times_s=None, b0_tesla=None) -> Acquisition:
    """Replace header echo times / B0 by values given explicitly, noting any change."""
    import dataclasses

    changes = {}
    notes = list(acq.notes)
    if echo_times_s is not None:
        tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
        if tes.shape != acq.echo_times_s.shape or not np.allclose(tes, acq.echo_times_s,
                                                                   atol=1e-7):
            notes.append(f"echo times {tes.tolist()} s given explicitly replace "
                         f"{acq.echo_times_s.tolist()} s from the headers")
            changes["echo_times_s"] = tes
    if b0_tesla is not None and abs(float(b0_tesla) - acq.b0_tesla) > 1e-6:
        notes.append(f"field strength {float(b0_tesla):g} T given explicitly replaces "
                     f"{acq.b0_tesla:g} T from the headers")
        changes["b0_tesla"] = float(b0_tesla)
    if not changes:
        return acq
    return dataclasses.replace(acq, notes=notes, **changes)


# ----------------------------------------------------------------------------------------
# Writing (qsmkit import)


def save_acquisition(acq: Acquisition, folder, *, extra: dict | None = None) -> list[Path]:
    """Write ``mag.nii.gz``, ``phase.nii.gz`` (4D, echoes last, radians), their dcm2niix-style
    sidecars and ``acquisition.json`` into ``folder``; :func:`load_acquisition` reads them back.
    """
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.sidecar import dicom_style_sidecar, write_sidecar

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        save_nifti(folder / "mag.nii.gz", acq.magnitude, acq.affine, description="magnitude"),
        save_nifti(folder / "phase.nii.gz", acq.phase, acq.affine, description="phase",
                   unit="rad"),
        write_sidecar(folder / "mag.json", dicom_style_sidecar(acq, kind="magnitude")),
        write_sidecar(folder / "phase.json", dicom_style_sidecar(acq, kind="phase")),
    ]
    record = acquisition_record(acq)
    record.update(extra or {})
    path = folder / ACQUISITION_JSON
    from qsmkit.io.provenance import to_json

    path.write_text(to_json(record) + "\n", encoding="utf-8")
    written.append(path)
    return written


def acquisition_record(acq: Acquisition) -> dict:
    """The content of ``acquisition.json``: echo times, B0, geometry, notes (no patient data)."""
    from qsmkit.io.vendor import PHASE_SIGN_KEY, QSMKIT_PHASE_SIGN

    return {
        "echo_times_s": [float(t) for t in acq.echo_times_s],
        "b0_tesla": float(acq.b0_tesla),
        "manufacturer": acq.manufacturer,
        "series_description": acq.series_description,
        "shape": list(acq.shape),
        "n_echoes": acq.n_echoes,
        "voxel_size_mm": [round(float(v), 6) for v in acq.voxel_size],
        "b0_dir_voxel": [round(float(v), 6) for v in acq.b0_dir],
        "affine": np.round(acq.affine, 6).tolist(),
        "notes": list(acq.notes),
        PHASE_SIGN_KEY: QSMKIT_PHASE_SIGN,
        "series_numbers": acq.metadata.get("SeriesNumbers", []),
        "dicom_reference": {k: v for k, v in acq.dicom_reference.items() if k in _REFERENCE_UIDS},
    }


# ----------------------------------------------------------------------------------------
# Small helpers


def _as_paths(value) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    if isinstance(value, Sequence) or hasattr(value, "__iter__"):
        paths = []
        for item in value:
            if not isinstance(item, (str, Path)):
                raise InputError(f"input paths must be strings or paths, got {item!r}")
            paths.append(Path(item))
        return paths
    raise InputError(f"input paths must be strings or paths, got {value!r}")


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_acquisition_record(folder) -> dict:
    """``acquisition.json`` of a folder as a dict (empty if absent)."""
    path = Path(folder) / ACQUISITION_JSON
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None

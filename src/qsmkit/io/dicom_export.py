"""Derived maps (chi, R2*) as DICOM series that a PACS accepts.

:func:`export_dicom_series` writes a 3D map as an MR Image Storage series, one file per
slice, that DICOM validators (dciodvfy) and viewers accept: signed 16-bit integers (1 ppb for
chi, 0.1 1/s for R2*) with the Real World Value Mapping to the real unit instead of a
RescaleSlope (not part of the MR Image IOD), a window from robust percentiles inside the
mask, distinct series numbers, the source's patient, study, frame of reference and MR
acquisition attributes, and SourceImageSequence references to the source images. With a
DICOM source (``Acquisition.dicom_reference``) the images keep the source's
ImageOrientationPatient and slice order, so the map lies beside the scan in a PACS without
mirroring; without one (NIfTI input) axial images have rows towards the patient's left and
columns towards posterior, as scanners write them. :func:`export_result_series` writes the
chi and R2* maps of a run.

:func:`write_gre_dicom` (multi-echo GRE as a scanner writes it, for tests) lives in
:mod:`qsmkit.io.gre_dicom` and is still importable from here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from qsmkit.errors import InputError
from qsmkit.io.dicom_dataset import (
    MR_IMAGE_STORAGE,
    _ds,
    _Layout,
    _new_dataset,
    _now,
    _set_pixels,
    _set_slice_geometry,
)

log = logging.getLogger(__name__)

_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientPosition", "StudyInstanceUID", "StudyID", "StudyDate",
    "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "FrameOfReferenceUID", "InstitutionName", "MagneticFieldStrength", "ImagingFrequency",
    "BodyPartExamined",
)


def _source_values(source_datasets) -> dict:
    """Patient/study attributes (keyword -> value) from Datasets or a dict."""
    if source_datasets is None:
        return {}
    if isinstance(source_datasets, Mapping):
        items = [source_datasets]
    elif hasattr(source_datasets, "dir") and hasattr(source_datasets, "get"):
        items = [source_datasets]
    elif isinstance(source_datasets, Iterable):
        items = list(source_datasets)
    else:
        raise InputError("source_datasets must be pydicom Datasets or a dict of DICOM keywords")
    values = {}
    for item in items:
        for keyword in _PATIENT_STUDY_KEYWORDS + _ACQUISITION_KEYWORDS + _GEOMETRY_KEYWORDS:
            if keyword in values:
                continue
            try:
                value = item.get(keyword) if isinstance(item, Mapping) else item.get(keyword, None)
            except Exception:
                value = None
            if value not in (None, ""):
                values[keyword] = value
    return values


_GEOMETRY_KEYWORDS = ("SeriesNumber", "ImageOrientationPatient", "SourceSliceDirection",
                      "SourceSlices")


def _apply_source(ds, values: dict) -> None:
    for keyword, value in values.items():
        if keyword not in _PATIENT_STUDY_KEYWORDS:
            continue
        try:
            setattr(ds, keyword, value)
        except (TypeError, ValueError):
            continue


def _nice_step(value: float) -> float:
    """Smallest of 1, 2, 5 x 10^k that is >= value."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for mantissa in (1.0, 2.0, 5.0, 10.0):
        step = mantissa * 10.0**exponent
        if step >= value * (1 - 1e-12):
            return float(f"{step:.6g}")
    return 10.0 ** (exponent + 1)


def choose_rescale(volume: np.ndarray, *, max_stored: int = 32000) -> float:
    """Smallest 1, 2 or 5 x 10^k step (real units per stored integer) keeping |values| <= max."""
    peak = float(np.max(np.abs(volume))) if volume.size else 0.0
    if peak == 0:
        return 1e-3
    return _nice_step(peak / max_stored)


# Stored value -> real-world value steps, by unit: chi in ppb, R2* in 0.1 1/s, fields in
# 0.01 Hz. A map whose values would not fit int16 at that step gets a coarser 1-2-5 step.
# Units are UCUM codes (DICOM PS3.16, "UCUM" coding scheme): [ppm], /s, Hz.


_UNITS = {
    "ppm": {"step": 1e-3, "code": "[ppm]", "meaning": "parts per million", "label": "ppm"},
    "1/s": {"step": 0.1, "code": "/s", "meaning": "per second", "label": "1/s"},
    "hz": {"step": 0.01, "code": "Hz", "meaning": "hertz", "label": "Hz"},
    "ms": {"step": 0.01, "code": "ms", "meaning": "millisecond", "label": "ms"},
    "rad": {"step": 1e-3, "code": "rad", "meaning": "radian", "label": "rad"},
    "": {"step": 1.0, "code": "1", "meaning": "no units", "label": "value"},
}

# kind -> (ImageType value 3 and 4, default series number offset, default description)


_KINDS = {
    "chi": (("OTHER", "QSM"), 1000, "QSM chi (ppm)"),
    "r2star": (("OTHER", "R2STAR"), 2000, "R2* (1/s)"),
    "mask": (("OTHER", "MASK"), 3000, "QSM mask"),
}
# Display window inside the mask: (low, high percentile, centre). chi: centred on its median
# (grey = the reference tissue; diamagnetic darker, paramagnetic brighter), as wide as the
# 2-98 percentile span. R2* (long right tail from veins and sinus edges): the 2-95 span.


_WINDOWS = {"chi": (2.0, 98.0, "median"), "r2star": (2.0, 95.0, "span")}

# MR acquisition attributes copied from the source series (DICOM input); Type 2 attributes
# left empty when unknown. Values are those of the scan the map was computed from.


_ACQUISITION_KEYWORDS = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
    "RepetitionTime", "FlipAngle", "EchoTrainLength", "SequenceName", "Laterality",
    "PatientPosition", "MagneticFieldStrength", "ImagingFrequency", "BodyPartExamined",
)

# BIDS sidecar names (NIfTI input) -> DICOM keyword and scale to DICOM units.


_SIDECAR_KEYWORDS = {
    "RepetitionTime": ("RepetitionTime", 1000.0),  # s -> ms
    "FlipAngle": ("FlipAngle", 1.0),
    "MRAcquisitionType": ("MRAcquisitionType", None),
    "ScanningSequence": ("ScanningSequence", None),
    "SequenceVariant": ("SequenceVariant", None),
    "ScanOptions": ("ScanOptions", None),
    "SequenceName": ("SequenceName", None),
    "PatientPosition": ("PatientPosition", None),
    "BodyPartExamined": ("BodyPartExamined", None),
    "MagneticFieldStrength": ("MagneticFieldStrength", 1.0),
    "ImagingFrequency": ("ImagingFrequency", 1.0),
}


def storage_step(volume: np.ndarray, unit: str) -> float:
    """Real-world value of one stored integer for ``volume`` in ``unit``.

    The unit's natural step (1 ppb for ppm, 0.1 1/s, 0.01 Hz) unless some value would
    overflow int16 at that step; then the smallest 1, 2 or 5 x 10^k step that holds it.
    """
    spec = _UNITS.get(unit.strip().lower())
    base = spec["step"] if spec else 0.0
    return max(base, choose_rescale(volume)) if base else choose_rescale(volume)


def _unit_spec(unit: str) -> dict:
    spec = _UNITS.get(unit.strip().lower())
    if spec is not None:
        return spec
    text = unit.strip()
    return {"step": None, "code": text or "1", "meaning": text or "no units",
            "label": text[:16] or "value"}


def _display_sign(direction: np.ndarray) -> float:
    """+1 or -1 so that an in-plane axis points left, posterior or feet (radiology display)."""
    axis = int(np.argmax(np.abs(direction)))
    preferred = (1.0, 1.0, -1.0)[axis]  # LPS: +L, +P, -S
    return 1.0 if direction[axis] * preferred > 0 else -1.0


def _default_directions(affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows along array axis 0, columns along axis 1, slices along axis 2, signs for display.

    Axial images come out with rows towards the patient's left and columns towards
    posterior (as scanners write them); slices are numbered along row x column.
    """
    lps = (np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float))[:3, :3]
    u = lps / np.linalg.norm(lps, axis=0)
    row = u[:, 0] * _display_sign(u[:, 0])
    col = u[:, 1] * _display_sign(u[:, 1])
    normal = np.cross(row, col)
    slice_dir = u[:, 2] if float(np.dot(u[:, 2], normal)) > 0 else -u[:, 2]
    return row, col, slice_dir


def _source_directions(source: Mapping) -> tuple | None:
    """The source series' row, column and slice-order directions (LPS), if recorded."""
    try:
        orientation = np.asarray([float(v) for v in source["ImageOrientationPatient"]])
    except (KeyError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or not np.all(np.isfinite(orientation)):
        return None
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.5:
        return None
    try:
        slice_dir = np.asarray([float(v) for v in source["SourceSliceDirection"]])
        if slice_dir.shape != (3,) or not np.all(np.isfinite(slice_dir)):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        slice_dir = normal
    return row, col, slice_dir


def _layout(volume: np.ndarray, affine, source: Mapping) -> _Layout:
    """Lay ``volume`` out like the source series when it is on its grid, else for display."""
    from qsmkit.acquisition import validate_affine

    affine = validate_affine(affine)
    directions = _source_directions(source)
    if directions is not None:
        try:
            layout = _Layout(volume, affine, *directions)
        except ValueError:
            layout = None
        if layout is not None and layout.min_cosine > 0.999:
            return layout
    return _Layout(volume, affine, *_default_directions(affine))


def _source_images(source: Mapping, layout: _Layout, k: int) -> list:
    """(SOPClassUID, SOPInstanceUID, frame) of the source images at slice ``k``."""
    slices = source.get("SourceSlices")
    if not slices:
        return []
    normal = np.cross(layout.row_dir, layout.col_dir)
    here = float(np.dot(layout.positions[k], normal))
    tolerance = 0.25 * abs(float(np.dot(layout.slice_vec, normal))) + 1e-3
    for entry in slices:
        try:
            there = float(np.dot(np.asarray(entry["position"], dtype=float), normal))
        except (KeyError, TypeError, ValueError):
            continue
        if abs(there - here) <= tolerance:
            return [tuple(image) for image in entry.get("images", []) if len(image) == 3]
    return []


def _window(stored: np.ndarray, mask, spec=(2.0, 98.0, "span")) -> tuple[float, float]:
    """Window centre and width (stored units, width >= 2) from percentiles inside the mask.

    ``spec`` is (low, high percentile, centre): the width is the low-high span; the centre
    is the median (``"median"``) or the middle of the span (``"span"``).
    """
    if mask is not None:
        inside = stored[np.asarray(mask, dtype=bool)]
    else:
        inside = stored[stored != 0]
    if inside.size == 0:
        inside = stored.ravel()
    low_pct, high_pct, centre = spec
    low, median, high = (float(v) for v in np.percentile(inside, [low_pct, 50.0, high_pct]))
    width = max(high - low, 2.0)
    middle = median if centre == "median" else (low + high) / 2
    return float(np.round(middle)), float(np.ceil(width))


def export_dicom_series(
    volume,
    affine,
    outdir,
    *,
    source_datasets=None,
    series_description: str | None = None,
    unit: str = "ppm",
    kind: str = "chi",
    series_number: int | None = None,
    mask=None,
    patient: Mapping | None = None,
    metadata: Mapping | None = None,
) -> list[Path]:
    """Write a 3D map as an MR Image Storage series, one file per slice.

    Parameters
    ----------
    volume : (X, Y, Z) array
        The map (chi in ppm, R2* in 1/s, ...), finite values.
    affine : (4, 4) array
        Voxel-to-RAS affine of ``volume`` (as in the NIfTI outputs).
    outdir : path
        Folder for the files ``IM0001.dcm``...; created; existing files are not replaced.
    source_datasets : pydicom Dataset, list of Datasets, or dict, optional
        The source series (or ``Acquisition.dicom_reference``): patient and study attributes,
        StudyInstanceUID, FrameOfReferenceUID and MR acquisition attributes are carried over
        so that PACS files the map with the scan it came from; with
        ``Acquisition.dicom_reference`` the images keep the source's orientation and slice
        order and reference the source images (SourceImageSequence). Without it a new study
        is created.
    series_description : str, optional
        Shown in PACS; defaults by kind (``"QSM chi (ppm)"``, ``"R2* (1/s)"``).
    unit : str
        ``"ppm"``, ``"1/s"``, ``"Hz"``, ...: the real-world value units (UCUM).
    kind : str
        ``"chi"``, ``"r2star"``, ``"mask"`` or another map name (ImageType value 4).
    series_number : int, optional
        Defaults to 1000 (chi), 2000 (R2*), 3000 (mask) or 4000 (other) + the source
        SeriesNumber, or 9000 + that offset / 1000 without a source.
    mask : (X, Y, Z) bool array, optional
        Voxels from which the display window is chosen (default: the non-zero voxels).
    patient : dict, optional
        ``PatientName``, ``PatientID`` (and other Patient module keywords) that replace the
        source's, e.g. for NIfTI input.
    metadata : dict, optional
        BIDS sidecar fields of the acquisition (``RepetitionTime`` in s, ``FlipAngle``,
        ``MRAcquisitionType``, ``MagneticFieldStrength``, ``BodyPartExamined``...), used where
        the source DICOM gives none (NIfTI input); dcm2niix's
        ``ImageOrientationPatientDICOM`` gives the scanner's row and column directions.

    Returns
    -------
    list of Path
        The files written, by slice.

    Notes
    -----
    Values are stored as signed 16-bit integers (PixelRepresentation 1) without a Modality
    LUT (RescaleSlope is not part of the MR Image IOD): one stored unit is 1 ppb for chi,
    0.1 1/s for R2*, or a coarser 1-2-5 step when a value would not fit. The Real World Value
    Mapping Sequence (0040,9096) gives the slope to the real unit (UCUM code), and the window
    (WindowCenter/WindowWidth, stored units) is as wide as the 2-98 percentile span inside
    the mask, centred on the median for chi (2-95 percentiles for R2*), so viewers show
    anatomy. See docs/input.md, "DICOM export".

    References
    ----------
    .. [1] NEMA PS3.3, C.8.3.1 MR Image Module; C.7.6.16.2.11 Real World Value Mapping;
       C.11.2 VOI LUT Module.
    """
    from pydicom.uid import generate_uid

    try:
        volume = np.asarray(volume, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("the volume to export must be a numeric array") from None
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise InputError(f"the volume to export must be 3D, got shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise InputError("the volume to export contains NaN or Inf; set them to 0 first")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != volume.shape:
            raise InputError(f"the mask shape {mask.shape} differs from the map's {volume.shape}")
    from qsmkit.acquisition import validate_affine

    affine = validate_affine(affine)
    source = _source_values(source_datasets)
    orientation_source = source
    if "ImageOrientationPatient" not in source and metadata:
        # NIfTI from dcm2niix (or qsmkit import): the scanner's orientation is in the sidecar
        scanner = metadata.get("ImageOrientationPatientDICOM")
        if scanner is not None:
            orientation_source = {"ImageOrientationPatient": scanner}
    layout = _layout(volume, affine, orientation_source)
    volume = layout.volume
    if mask is not None:
        mask = _Layout(mask, affine, layout.row_dir, layout.col_dir, layout.slice_vec).volume
    outdir = Path(outdir)
    names = [f"IM{k + 1:04d}.dcm" for k in range(layout.shape[2])]
    existing = [n for n in names if (outdir / n).exists()]
    if existing:
        raise InputError(f"{outdir} already holds {existing[0]}...; choose an empty folder")
    spec = _unit_spec(unit)
    step = storage_step(volume, unit)
    stored = np.clip(np.round(volume / step), -32768, 32767).astype(np.int16)
    center, width = _window(stored, mask, _WINDOWS.get(kind, (2.0, 98.0, "span")))
    image_type, offset, default_description = _KINDS.get(
        kind, (("OTHER", kind.upper()[:16] or "MAP"), 4000, f"{kind} ({spec['label']})"))
    entropy = [str(outdir.resolve().parent)]
    # A series filed in the scan's study must name its patient: a PACS refuses (or files
    # apart) a study whose series disagree on PatientID. Without one, start a new study.
    patient_known = bool((patient or {}).get("PatientID") or source.get("PatientID"))
    keep_study = bool(source.get("StudyInstanceUID")) and patient_known
    if source.get("StudyInstanceUID") and not keep_study:
        log.warning("the source gives no PatientID: the %s series gets a new study; give "
                    "--patient-id to file it with the scan", kind)
    study_uid = str(source["StudyInstanceUID"] if keep_study
                    else generate_uid(entropy_srcs=entropy + ["study"]))
    frame_uid = str(source.get("FrameOfReferenceUID")
                    or generate_uid(entropy_srcs=entropy + ["frame"]))
    series_uid = generate_uid()
    if series_number is None:
        try:
            series_number = offset + int(source["SeriesNumber"])
        except (KeyError, TypeError, ValueError):
            series_number = 9000 + offset // 1000
    acquisition = _acquisition_values(source, metadata)
    date, time = _now()
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(layout.shape[2]):
        ds = _new_dataset(MR_IMAGE_STORAGE, generate_uid())
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", *image_type]
        ds.Modality = "MR"
        ds.Manufacturer = "qsmkit"
        ds.ManufacturerModelName = "qsmkit"
        ds.SoftwareVersions = _version()
        ds.SeriesDescription = (series_description or default_description)[:64]
        ds.PatientName = ""
        ds.PatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyDate = date
        ds.StudyTime = time
        ds.ReferringPhysicianName = ""
        ds.StudyID = ""
        ds.AccessionNumber = ""
        ds.PatientPosition = ""
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.RepetitionTime = ""
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
        _apply_source(ds, source)
        for keyword, value in acquisition.items():
            _set_quietly(ds, keyword, value)
        _apply_patient(ds, patient)
        if "BodyPartExamined" not in ds and "Laterality" not in ds:
            ds.Laterality = ""  # Type 2C: unknown body part, so unknown laterality
        if not keep_study:
            ds.StudyID = "QSMKIT"
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(series_number)
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.ContentDate, ds.ContentTime = date, time
        ds.InstanceNumber = k + 1
        ds.DerivationDescription = (
            f"{kind} in {spec['label']} computed by qsmkit {_version()} from multi-echo GRE; "
            f"stored value x {step:g} = {spec['label']}"
        )[:1024]
        images = _source_images(source, layout, k)
        if images:
            ds.SourceImageSequence = [_image_reference(*image) for image in images]
        _set_slice_geometry(ds, layout, k)
        ds.WindowCenter = _ds(center)
        ds.WindowWidth = _ds(width)
        ds.WindowCenterWidthExplanation = (
            f"{kind} {center * step:g} +- {width * step / 2:g} {spec['label']}")[:64]
        _set_pixels(ds, layout.pixels(stored, k), signed=True, bits_stored=16)
        ds.SmallestImagePixelValue = int(stored[:, :, k].min())
        ds.LargestImagePixelValue = int(stored[:, :, k].max())
        ds.RealWorldValueMappingSequence = [_rwv_item(step, spec)]
        path = outdir / names[k]
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def export_result_series(result, acquisition, folder, *, patient: Mapping | None = None
                         ) -> dict[str, list[Path]]:
    """Write the chi and R2* maps of a run as two MR series, ``folder/chi`` and ``folder/r2star``.

    Parameters
    ----------
    result : QSMResult
        ``chi_ppm``, ``r2star_per_s`` and ``local_mask`` (the window is chosen inside it).
    acquisition : Acquisition
        Its ``dicom_reference`` (DICOM input: patient, study, orientation, source images) and
        ``metadata`` (NIfTI input: sidecar fields) describe the series.
    folder : path
    patient : dict, optional
        ``PatientName``/``PatientID`` that replace the source's (e.g. for NIfTI input).

    Returns
    -------
    dict
        ``{"chi": [files], "r2star": [files]}``; series numbers 1000 and 2000 + the source
        series number (9001 and 9002 without a DICOM source).
    """
    folder = Path(folder)
    source = getattr(acquisition, "dicom_reference", None) or None
    metadata = dict(getattr(acquisition, "metadata", None) or {})
    metadata.setdefault("MagneticFieldStrength", float(acquisition.b0_tesla))
    common = dict(source_datasets=source, metadata=metadata, patient=patient,
                  mask=result.local_mask)
    return {
        "chi": export_dicom_series(result.chi_ppm, acquisition.affine, folder / "chi",
                                   unit="ppm", kind="chi", **common),
        "r2star": export_dicom_series(np.nan_to_num(result.r2star_per_s), acquisition.affine,
                                      folder / "r2star", unit="1/s", kind="r2star", **common),
    }


def _version() -> str:
    from qsmkit import __version__

    return str(__version__)


def _set_quietly(ds, keyword: str, value) -> None:
    try:
        setattr(ds, keyword, value)
    except (TypeError, ValueError, OverflowError):
        pass


def _apply_patient(ds, patient: Mapping | None) -> None:
    for keyword, value in (patient or {}).items():
        if value is None:
            continue
        if keyword not in _PATIENT_STUDY_KEYWORDS:
            raise InputError(f"{keyword} is not a patient or study attribute qsmkit can set")
        setattr(ds, keyword, str(value))


def _acquisition_values(source: Mapping, metadata: Mapping | None) -> dict:
    """MR acquisition attributes from the source DICOM, else from BIDS sidecar fields."""
    values = {k: source[k] for k in _ACQUISITION_KEYWORDS if source.get(k) not in (None, "")}
    for name, (keyword, scale) in _SIDECAR_KEYWORDS.items():
        if keyword in values or not metadata or metadata.get(name) in (None, "", []):
            continue
        value = metadata[name]
        if scale is not None:
            try:
                value = _ds(float(value) * scale)
            except (TypeError, ValueError):
                continue
        elif isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        else:
            value = str(value)
        values[keyword] = value
    return values


def _image_reference(sop_class_uid: str, sop_instance_uid: str, frame):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    if frame is not None:
        item.ReferencedFrameNumber = int(frame)
    return item


def _rwv_item(step: float, spec: dict):
    from pydicom.dataset import Dataset

    units = Dataset()
    units.CodeValue = spec["code"]
    units.CodingSchemeDesignator = "UCUM"
    units.CodeMeaning = spec["meaning"]
    item = Dataset()
    item.LUTExplanation = f"{spec['label']} = stored value x {step:g}"[:64]
    item.LUTLabel = spec["label"][:16]
    item.MeasurementUnitsCodeSequence = [units]
    item.add_new(0x00409216, "SS", -32768)  # RealWorldValueFirstValueMapped (SS: signed)
    item.add_new(0x00409211, "SS", 32767)  # RealWorldValueLastValueMapped
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = float(step)
    return item


def __getattr__(name: str):
    """``write_gre_dicom`` moved to :mod:`qsmkit.io.gre_dicom`; importable from here too."""
    if name == "write_gre_dicom":
        from qsmkit.io.gre_dicom import write_gre_dicom

        return write_gre_dicom
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

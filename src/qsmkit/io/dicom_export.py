"""Write DICOM: derived maps (chi, R2*) for PACS, and multi-echo GRE series for tests.

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

:func:`write_gre_dicom` writes an :class:`~qsmkit.acquisition.Acquisition` as the classic
(or enhanced) series a Siemens, Philips or GE scanner would export, with each vendor's phase
encoding, for round-trip tests of the reader. Geometry: the reader follows dcm2niix (rows
stored bottom-up, slices along the normal ``row x column``), which always gives an affine
with a negative determinant for 2D data and the closest RAS-aligned order for 3D data. An
affine with negative determinant is written as is (MRAcquisitionType 2D); one with positive
determinant is written as a 3D acquisition, after reorienting the array to the closest RAS
axis order if it is not already in it (or laid out along a given ``image_orientation``), so
that reading back always gives the written array and affine.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from qsmkit.errors import InputError

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientPosition", "StudyInstanceUID", "StudyID", "StudyDate",
    "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "FrameOfReferenceUID", "InstitutionName", "MagneticFieldStrength", "ImagingFrequency",
    "BodyPartExamined",
)

# ----------------------------------------------------------------------------------------
# Geometry shared by both writers


class _SliceGeometry:
    """Per-slice DICOM geometry of a (possibly reoriented) volume on an affine."""

    def __init__(self, shape, affine):
        from qsmkit.acquisition import validate_affine

        affine = validate_affine(affine)
        self.reoriented = False
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        axes = lps[:3, :3]
        sizes = np.sqrt((axes**2).sum(axis=0))
        x_dir, y_dir = axes[:, 0] / sizes[0], axes[:, 1] / sizes[1]
        if abs(float(np.dot(x_dir, y_dir))) > 1e-4:
            raise InputError(
                "the affine's first two axes are not perpendicular (sheared grid); DICOM cannot "
                "describe it - resample to an orthogonal grid first"
            )
        self.affine = affine
        self.shape = tuple(int(n) for n in shape[:3])
        self.row_dir = x_dir
        self.col_dir = -y_dir
        self.spacing = (float(sizes[1]), float(sizes[0]))  # (between rows, between columns)
        self.slice_vec = axes[:, 2]
        self.slice_thickness = float(sizes[2])
        normal = np.cross(self.row_dir, self.col_dir)
        self.three_d = float(np.dot(normal, self.slice_vec)) < 0
        origin = lps @ np.array([0.0, self.shape[1] - 1.0, 0.0, 1.0])
        self.positions = [origin[:3] + k * self.slice_vec for k in range(self.shape[2])]

    @property
    def orientation(self) -> list[float]:
        return [float(v) for v in np.concatenate([self.row_dir, self.col_dir])]

    def pixels(self, volume: np.ndarray, k: int) -> np.ndarray:
        """The DICOM image (rows, columns) of slice ``k`` of an (X, Y, Z, ...) volume."""
        return np.ascontiguousarray(volume[:, ::-1, k].T)


def _prepare(volume: np.ndarray, affine, image_orientation=None):
    """Reorient to the closest RAS order when the affine would not read back as written.

    With ``image_orientation`` (six LPS direction cosines) the volume is laid out as a 3D
    acquisition with that ImageOrientationPatient instead, slices along row x column.
    """
    from qsmkit.io.dicom import reorient_closest_canonical

    if image_orientation is not None:
        from qsmkit.acquisition import validate_affine

        cosines = np.asarray(image_orientation, dtype=float)
        row, col = cosines[:3], cosines[3:]
        try:
            layout = _Layout(volume, validate_affine(affine), row, col, np.cross(row, col))
        except ValueError:
            raise InputError("image_orientation does not match the axes of the affine") from None
        if layout.min_cosine < 0.999:
            raise InputError("image_orientation does not match the axes of the affine")
        layout.three_d = True
        return layout.volume, layout
    geometry = _SliceGeometry(volume.shape, affine)
    if geometry.three_d:
        from nibabel import orientations

        ornt = orientations.io_orientation(geometry.affine)
        if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            volume, new_affine = reorient_closest_canonical(volume, geometry.affine)
            geometry = _SliceGeometry(volume.shape, new_affine)
            geometry.reoriented = True
    return volume, geometry


# ----------------------------------------------------------------------------------------
# Dataset helpers


def _new_dataset(sop_class_uid: str, sop_instance_uid: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


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


def _now():
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _set_geometry(ds, geometry: _SliceGeometry, k: int) -> None:
    ds.ImagePositionPatient = [_ds(v) for v in geometry.positions[k]]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    ds.PixelSpacing = [_ds(v) for v in geometry.spacing]
    ds.SliceThickness = _ds(geometry.slice_thickness)
    ds.SpacingBetweenSlices = _ds(geometry.slice_thickness)
    normal = np.cross(geometry.row_dir, geometry.col_dir)
    ds.SliceLocation = _ds(float(np.dot(geometry.positions[k], normal)))


def _ds(value: float) -> str:
    """A decimal string (<= 16 characters) keeping as many digits as fit."""
    value = float(value)
    if value == 0:
        return "0"
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4g}"


def _set_pixels(ds, pixels: np.ndarray, *, signed: bool, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = np.dtype("<i2") if signed else np.dtype("<u2")
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()


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
    """RescaleSlope for int16 storage: the smallest 1-2-5 step with every value in range."""
    peak = float(np.max(np.abs(volume))) if volume.size else 0.0
    if peak == 0:
        return 1e-3
    return _nice_step(peak / max_stored)


# ----------------------------------------------------------------------------------------
# Derived maps

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


class _Layout:
    """A volume laid out as DICOM slices along given directions (no resampling).

    The array is permuted and flipped so that its first axis runs along the image rows
    (``row_dir``, LPS), its second down the columns (``col_dir``) and its third along
    ``slice_dir``: the stored image ``k`` is ``volume[:, :, k].T``.
    """

    def __init__(self, volume: np.ndarray, affine, row_dir, col_dir, slice_dir):
        from nibabel import orientations

        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        units = lps[:3, :3] / np.linalg.norm(lps[:3, :3], axis=0)
        targets = np.array([row_dir, col_dir, slice_dir], dtype=float)
        targets /= np.linalg.norm(targets, axis=1, keepdims=True)
        cosines = units.T @ targets.T  # [input axis, target axis]
        ornt = np.zeros((3, 2))
        for axis in range(3):
            target = int(np.argmax(np.abs(cosines[axis])))
            ornt[axis] = (target, 1.0 if cosines[axis, target] > 0 else -1.0)
        if sorted(ornt[:, 0].astype(int).tolist()) != [0, 1, 2]:
            raise ValueError("directions do not match the grid")
        shape = volume.shape[:3]
        self.volume = np.ascontiguousarray(orientations.apply_orientation(volume, ornt))
        self.affine = affine @ orientations.inv_ornt_aff(ornt, shape)
        self.min_cosine = float(np.min(np.abs(cosines[np.arange(3), ornt[:, 0].astype(int)])))
        new = np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine
        sizes = np.linalg.norm(new[:3, :3], axis=0)
        self.row_dir = new[:3, 0] / sizes[0]
        self.col_dir = new[:3, 1] / sizes[1]
        if abs(float(np.dot(self.row_dir, self.col_dir))) > 1e-4:
            raise InputError(
                "the affine's in-plane axes are not perpendicular (sheared grid); DICOM cannot "
                "describe it - resample to an orthogonal grid first"
            )
        self.shape = self.volume.shape[:3]
        self.spacing = (float(sizes[1]), float(sizes[0]))  # (between rows, between columns)
        self.slice_vec = new[:3, 2]
        self.slice_thickness = float(sizes[2])
        self.positions = [new[:3, 3] + k * self.slice_vec for k in range(self.shape[2])]
        self.three_d = False

    @property
    def orientation(self) -> list[float]:
        return [float(v) for v in np.concatenate([self.row_dir, self.col_dir])]

    def pixels(self, volume: np.ndarray, k: int) -> np.ndarray:
        """The DICOM image (rows, columns) of slice ``k`` of a laid-out volume."""
        return np.ascontiguousarray(volume[:, :, k].T)


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
        ``MRAcquisitionType``, ``MagneticFieldStrength``...), used where the source DICOM
        gives none (NIfTI input).

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
    layout = _layout(volume, affine, source)
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
        _set_layout_geometry(ds, layout, k)
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


def _set_layout_geometry(ds, layout: _Layout, k: int) -> None:
    ds.ImagePositionPatient = [_ds(v) for v in layout.positions[k]]
    ds.ImageOrientationPatient = [_ds(v) for v in layout.orientation]
    ds.PixelSpacing = [_ds(v) for v in layout.spacing]
    ds.SliceThickness = _ds(layout.slice_thickness)
    ds.SpacingBetweenSlices = _ds(layout.slice_thickness)
    normal = np.cross(layout.row_dir, layout.col_dir)
    ds.SliceLocation = _ds(float(np.dot(layout.positions[k], normal)))


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


# ----------------------------------------------------------------------------------------
# Multi-echo GRE acquisitions as a scanner would write them (for tests and demos)


def write_gre_dicom(acquisition, outdir, *, manufacturer: str = "SIEMENS",
                    series_number: int = 5, enhanced: bool = False,
                    real_imaginary: bool = False, image_orientation=None) -> Path:
    """Write the magnitude and phase echoes of an acquisition as vendor-like DICOM.

    Parameters
    ----------
    acquisition : Acquisition
    outdir : path
        Created; one sub-folder per series.
    manufacturer : {"SIEMENS", "PHILIPS", "GE"}
        - ``SIEMENS``: magnitude series ``series_number`` and phase series
          ``series_number + 1``; phase stored 0..4095 with RescaleSlope 2 and
          RescaleIntercept -4096 (-> -4096..4094, i.e. pi/4096 rad per unit); InstanceNumber
          restarts at 1 for every echo, as Siemens does. ``enhanced=True`` writes one
          Enhanced MR Image Storage file per image type with the echo time, image type and
          rescale in per-frame functional groups (Siemens XA).
        - ``PHILIPS``: one series with magnitude and phase; phase stored 0..4095 in
          milliradians (RescaleType ``mrad``) with the private scale slope (2005,100E) so that
          the floating-point value is radians; magnitude through the private scale slope.
        - ``GE``: one series; image type in the private tag (0043,102F); phase in milliradians
          with GE's opposite sign, or (``real_imaginary=True``) real and imaginary images.
    series_number : int
    enhanced : bool
        Siemens only: enhanced multi-frame files.
    real_imaginary : bool
        Write real and imaginary images instead of phase (GE and SIEMENS).
    image_orientation : sequence of 6 floats, optional
        ImageOrientationPatient (LPS row and column cosines) to write, e.g. rows towards the
        patient's left as scanners write 3D series; must match the affine's axes up to
        order and sign. The series is then written as a 3D acquisition. Default: the
        affine's own axes (reoriented to closest RAS when its determinant is positive).

    Returns
    -------
    Path
        ``outdir``.

    Notes
    -----
    Magnitude is stored in 12 bits with a RescaleSlope (Siemens and GE use none on real
    scanners; it is set here so that values round-trip within half a step, max/4095/2).
    Phase is quantised to 2*pi/4096 rad (Siemens, Philips) or 1 mrad (GE).
    """
    from pydicom.uid import generate_uid

    vendor = manufacturer.strip().upper()
    if vendor not in {"SIEMENS", "PHILIPS", "GE"}:
        raise InputError(f"manufacturer must be SIEMENS, PHILIPS or GE, got {manufacturer!r}")
    if enhanced and vendor != "SIEMENS":
        raise InputError("enhanced multi-frame output is written for SIEMENS only")
    magnitude = np.asarray(acquisition.magnitude, dtype=np.float64)
    phase = np.asarray(acquisition.phase, dtype=np.float64)
    magnitude, geometry = _prepare(magnitude, acquisition.affine, image_orientation)
    phase, _ = _prepare(phase, acquisition.affine, image_orientation)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tes_ms = [float(t) * 1000.0 for t in acquisition.echo_times_s]
    study = {
        "StudyInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "PatientName": "Phantom^qsmkit",
        "PatientID": "QSMKIT-PHANTOM",
        "StudyDescription": "qsmkit round trip",
    }
    mag_max = float(magnitude.max()) if magnitude.size else 1.0
    mag_slope = mag_max / 4095.0 if mag_max > 0 else 1.0
    mag_stored = np.clip(np.round(magnitude / mag_slope), 0, 4095)
    common = dict(vendor=vendor, geometry=geometry, tes_ms=tes_ms,
                  b0=float(acquisition.b0_tesla), study=study,
                  description=acquisition.series_description or "gre_qsm")
    if vendor == "SIEMENS":
        names = {"M": "magnitude", "P": "phase"}
        mag_spec = dict(kind="M", stored=mag_stored, slope=mag_slope, intercept=0.0,
                        signed=False, bits=12, rescale_type="US")
        if real_imaginary:
            z = magnitude * np.exp(1j * phase)
            peak = max(float(np.abs(z.real).max()), float(np.abs(z.imag).max()), 1e-12)
            part_slope = peak / 2047
            specs = [
                dict(kind="R", stored=np.round(z.real / part_slope) + 2048, slope=part_slope,
                     intercept=-2048 * part_slope, signed=False, bits=12, rescale_type="US"),
                dict(kind="I", stored=np.round(z.imag / part_slope) + 2048, slope=part_slope,
                     intercept=-2048 * part_slope, signed=False, bits=12, rescale_type="US"),
            ]
            series = [(series_number, specs)]
        else:
            phase_stored = np.mod(np.round((phase + np.pi) / (2 * np.pi) * 4096), 4096)
            phase_spec = dict(kind="P", stored=phase_stored, slope=2.0, intercept=-4096.0,
                              signed=False, bits=12, rescale_type="US")
            series = [(series_number, [mag_spec]), (series_number + 1, [phase_spec])]
        for number, specs in series:
            folder = outdir / f"{number}_{names.get(specs[0]['kind'], 'complex')}"
            if enhanced:
                for spec in specs:
                    _write_enhanced(folder, number, spec, **common)
            else:
                for spec in specs:
                    _write_classic(folder, number, spec, **common)
    elif vendor == "PHILIPS":
        mag_scale = 1.0 / mag_slope  # FP = PV * RS / (RS * SS) = PV / SS
        phase_stored = np.mod(np.round((phase + np.pi) / (2 * np.pi) * 4096), 4096)
        rs = 2 * np.pi * 1000.0 / 4096.0
        specs = [
            dict(kind="M", stored=mag_stored, slope=1.0, intercept=0.0, signed=False, bits=12,
                 rescale_type="normalized", philips_scale=mag_scale),
            dict(kind="P", stored=phase_stored, slope=rs, intercept=-np.pi * 1000.0,
                 signed=False, bits=12, rescale_type="mrad", philips_scale=1000.0 / rs),
        ]
        folder = outdir / f"{series_number}_gre"
        for spec in specs:
            _write_classic(folder, series_number, spec, **common)
    else:  # GE
        mag_spec = dict(kind="M", stored=mag_stored, slope=mag_slope, intercept=0.0,
                        signed=True, bits=16, rescale_type="", ge_type=0)
        if real_imaginary:
            z = magnitude * np.exp(-1j * phase)  # GE's opposite phase sign
            peak = max(float(np.abs(z.real).max()), float(np.abs(z.imag).max()), 1e-12)
            part_slope = peak / 32000
            specs = [
                dict(kind="R", stored=np.round(z.real / part_slope), slope=part_slope,
                     intercept=0.0, signed=True, bits=16, rescale_type="", ge_type=2),
                dict(kind="I", stored=np.round(z.imag / part_slope), slope=part_slope,
                     intercept=0.0, signed=True, bits=16, rescale_type="", ge_type=3),
            ]
        else:
            specs = [mag_spec, dict(kind="P", stored=np.round(-phase * 1000.0), slope=1.0,
                                    intercept=0.0, signed=True, bits=16, rescale_type="",
                                    ge_type=1)]
        folder = outdir / f"{series_number}_gre"
        for spec in specs:
            _write_classic(folder, series_number, spec, **common)
    return outdir


_IMAGE_TYPES = {
    ("SIEMENS", "M"): ["ORIGINAL", "PRIMARY", "M", "ND"],
    ("SIEMENS", "P"): ["ORIGINAL", "PRIMARY", "P", "ND"],
    ("SIEMENS", "R"): ["ORIGINAL", "PRIMARY", "R", "ND"],
    ("SIEMENS", "I"): ["ORIGINAL", "PRIMARY", "I", "ND"],
    ("PHILIPS", "M"): ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
    ("PHILIPS", "P"): ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"],
}
_MANUFACTURERS = {"SIEMENS": "SIEMENS", "PHILIPS": "Philips", "GE": "GE MEDICAL SYSTEMS"}
_COMPLEX = {"M": "MAGNITUDE", "P": "PHASE", "R": "REAL", "I": "IMAGINARY"}


def _series_header(ds, *, vendor, number, description, b0, study, geometry, series_uid):
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "MR"
    ds.Manufacturer = _MANUFACTURERS[vendor]
    ds.ManufacturerModelName = "qsmkit simulated"
    ds.SeriesDescription = description
    ds.ProtocolName = description
    for keyword, value in study.items():
        setattr(ds, keyword, value)
    ds.StudyDate, ds.StudyTime = _now()
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "BRAIN"
    ds.PositionReferenceIndicator = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.MagneticFieldStrength = _ds(b0)
    ds.ImagingFrequency = _ds(b0 * 42.577478)
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if geometry.three_d else "2D"
    ds.SequenceName = "*fl3d6r" if vendor == "SIEMENS" else "FFE"
    ds.RepetitionTime = "40"
    ds.FlipAngle = "15"
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.EchoTrainLength = ""


def _write_classic(folder: Path, number: int, spec: dict, *, vendor, geometry, tes_ms, b0,
                   study, description) -> None:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = study.setdefault(f"_series_{number}", generate_uid())
    stored = spec["stored"]
    n_slices = geometry.shape[2]
    for e, te in enumerate(tes_ms):
        for k in range(n_slices):
            ds = _new_dataset(MR_IMAGE_STORAGE, generate_uid())
            _series_header(ds, vendor=vendor, number=number, description=description, b0=b0,
                           study={k2: v for k2, v in study.items() if not k2.startswith("_")},
                           geometry=geometry, series_uid=series_uid)
            ds.ImageType = _IMAGE_TYPES.get((vendor, spec["kind"]),
                                            ["ORIGINAL", "PRIMARY", "OTHER"])
            ds.EchoTime = _ds(te)
            ds.EchoNumbers = e + 1
            # Siemens restarts InstanceNumber for every echo; others count through.
            ds.InstanceNumber = k + 1 if vendor == "SIEMENS" else e * n_slices + k + 1
            _set_geometry(ds, geometry, k)
            if spec["slope"] != 1.0 or spec["intercept"] != 0.0 or vendor != "GE":
                ds.RescaleSlope = _ds(spec["slope"])
                ds.RescaleIntercept = _ds(spec["intercept"])
                if spec["rescale_type"]:
                    ds.RescaleType = spec["rescale_type"]
            if vendor == "PHILIPS":
                block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
                block.add_new(0x0E, "FL", float(spec["philips_scale"]))
                block.add_new(0x11, "CS", spec["kind"])
            if vendor == "GE":
                block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
                block.add_new(0x2F, "SS", int(spec["ge_type"]))
            pixels = geometry.pixels(stored[..., e], k)
            _set_pixels(ds, pixels, signed=spec["signed"], bits_stored=spec["bits"])
            name = f"{spec['kind']}_e{e + 1}_{k + 1:04d}.dcm"
            ds.save_as(folder / name, enforce_file_format=True)


def _write_enhanced(folder: Path, number: int, spec: dict, *, vendor, geometry, tes_ms, b0,
                    study, description) -> None:
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = study.setdefault(f"_series_{number}", generate_uid())
    ds = _new_dataset(ENHANCED_MR_IMAGE_STORAGE, generate_uid())
    _series_header(ds, vendor=vendor, number=number, description=description, b0=b0,
                   study={k2: v for k2, v in study.items() if not k2.startswith("_")},
                   geometry=geometry, series_uid=series_uid)
    ds.Manufacturer = "Siemens Healthineers"
    ds.ImageType = ["ORIGINAL", "PRIMARY", spec["kind"], "NONE"]
    ds.ComplexImageComponent = _COMPLEX[spec["kind"]]
    ds.InstanceNumber = 1
    del ds.SequenceName
    ds.PulseSequenceName = "*fl3d6r"
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    shared.PlaneOrientationSequence = [orientation]
    measures = Dataset()
    measures.PixelSpacing = [_ds(v) for v in geometry.spacing]
    measures.SliceThickness = _ds(geometry.slice_thickness)
    measures.SpacingBetweenSlices = _ds(geometry.slice_thickness)
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    pixels = []
    n_slices = geometry.shape[2]
    # Frames ordered slice-major (all echoes of a slice together) to exercise the sorting.
    for k in range(n_slices):
        for e, te in enumerate(tes_ms):
            item = Dataset()
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = k + 1
            content.TemporalPositionIndex = 1
            content.DimensionIndexValues = [1, k + 1, e + 1]
            item.FrameContentSequence = [content]
            position = Dataset()
            position.ImagePositionPatient = [_ds(v) for v in geometry.positions[k]]
            item.PlanePositionSequence = [position]
            echo = Dataset()
            echo.EffectiveEchoTime = float(te)
            item.MREchoSequence = [echo]
            frame_type = Dataset()
            frame_type.FrameType = ["ORIGINAL", "PRIMARY", spec["kind"], "NONE"]
            frame_type.ComplexImageComponent = _COMPLEX[spec["kind"]]
            item.MRImageFrameTypeSequence = [frame_type]
            transform = Dataset()
            transform.RescaleSlope = _ds(spec["slope"])
            transform.RescaleIntercept = _ds(spec["intercept"])
            transform.RescaleType = spec["rescale_type"] or "US"
            item.PixelValueTransformationSequence = [transform]
            frames.append(item)
            pixels.append(geometry.pixels(spec["stored"][..., e], k))
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.NumberOfFrames = len(frames)
    _set_pixels(ds, np.stack(pixels), signed=spec["signed"], bits_stored=spec["bits"])
    ds.save_as(folder / f"{spec['kind']}_enhanced.dcm", enforce_file_format=True)

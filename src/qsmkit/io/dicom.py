"""Read multi-echo GRE DICOM series (Siemens, Philips, GE; classic and enhanced) for QSM.

:func:`read_dicom` turns a folder of DICOM files into an :class:`~qsmkit.acquisition.Acquisition`
(magnitude and phase per echo, echo times in s, B0 in T, NIfTI/RAS affine). The folder is
searched recursively; files may have any name, the ``.dcm`` extension or none, and may be
gzip-compressed (``.gz``). Files are grouped into series by SeriesInstanceUID; a magnitude
series and a phase series of the same acquisition (Siemens writes them with consecutive
series numbers) are paired automatically.

Geometry follows dcm2niix, so arrays and affines agree with its NIfTI output: array axis 0
runs along the DICOM rows (the first ImageOrientationPatient vector), axis 1 against the
column vector (rows are stored bottom-up, dcm2niix's "flip Y"), axis 2 along the slice
normal in increasing position; LPS is converted to RAS. Volumes acquired in 3D
(MRAcquisitionType ``3D``) are then reoriented, without resampling, to the closest
RAS-aligned axis order, as dcm2niix does.

Vendor handling (each quirk in one place, see ``docs/input.md``):

- Siemens: phase stored 0..4095 with RescaleSlope 2 / RescaleIntercept -4096 -> radians;
  magnitude and phase in two series; InstanceNumber repeated across echoes; enhanced
  (XA) multi-frame files with echo time, rescale and image type in per-frame functional
  groups; the phase-difference image of the ``gre_field_mapping`` sequence is recognised
  (it is phase(TE2) - phase(TE1), not a per-echo phase) and refused for QSM.
- Philips: floating-point values from RescaleSlope/Intercept and the private scale slope
  (2005,100E); phase in milliradians (RescaleType ``mrad``) or 0..4095 -> radians.
- GE: phase images (milliradians) or real/imaginary pairs (phase and magnitude computed);
  GE's phase has the opposite sign of the other vendors and is negated; the B0 field-map
  sequence (a field map in Hz plus magnitude, no phase) is refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import math
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from qsmkit.acquisition import Acquisition, phase_to_radians
from qsmkit.errors import InputError
from qsmkit.io.vendor import PHASE_SIGN_KEY, QSMKIT_PHASE_SIGN, to_qsmkit_phase_sign
from qsmkit.units import GAMMA_BAR_HZ_PER_T, wrap_phase

log = logging.getLogger(__name__)

MAGNITUDE, PHASE, REAL, IMAGINARY, FIELDMAP, OTHER = (
    "magnitude", "phase", "real", "imaginary", "fieldmap", "other",
)

_NOT_DICOM_SUFFIXES = {
    ".nii", ".json", ".txt", ".md", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".sh", ".py",
    ".tsv", ".csv", ".html", ".htm", ".xml", ".bval", ".bvec", ".zip", ".tar", ".mat",
    ".log", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".rst", ".bat", ".ps1", ".h5",
}
_NOT_DICOM_NAMES = {"LICENSE", "README", "DICOMDIR", "Makefile", "batch.sh"}
_DICOM_SUFFIXES = {".dcm", ".ima", ".dicom", ".dic"}

# Patient/study attributes carried into derived series (chi, R2*) and into the record.
REFERENCE_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientPosition", "StudyInstanceUID", "StudyID", "StudyDate",
    "StudyTime", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "FrameOfReferenceUID", "InstitutionName", "Manufacturer", "ManufacturerModelName",
    "MagneticFieldStrength", "ImagingFrequency", "BodyPartExamined", "SeriesNumber",
    "SeriesDescription", "ProtocolName", "SeriesInstanceUID",
    # MR acquisition attributes (Type 1/2 of the MR Image module) copied into derived series
    "RepetitionTime", "FlipAngle", "ScanningSequence", "SequenceVariant", "ScanOptions",
    "MRAcquisitionType", "EchoTrainLength", "SequenceName", "Laterality",
    "ImageOrientationPatient",
)


# ----------------------------------------------------------------------------------------
# Data model


@dataclasses.dataclass
class DicomFrame:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: Path
    frame_index: int | None
    kind: str
    echo_number: int | None
    echo_time_ms: float | None
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]  # (between rows, between columns), mm
    rows: int
    cols: int
    slope: float
    intercept: float
    rescale_type: str
    philips_scale: float | None
    instance_number: int
    repetition: tuple
    max_stored: int
    signed: bool
    bits_stored: int
    acquisition_time: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


@dataclasses.dataclass
class DicomSeries:
    """The frames of one SeriesInstanceUID and what the reader found out about them."""

    uid: str
    number: int | None
    description: str
    manufacturer: str
    frames: list[DicomFrame]
    header: object  # first pydicom Dataset, without pixel data
    protocol_te_ms: list[float] = dataclasses.field(default_factory=list)
    sequence_file: str = ""
    problem: str = ""

    # Header-derived conveniences -------------------------------------------------------
    @property
    def vendor(self) -> str:
        return _vendor(self.manufacturer)

    @property
    def kinds(self) -> Counter:
        return Counter(f.kind for f in self.frames)

    def echo_times_ms(self, kind: str) -> list[float]:
        return sorted({round(f.echo_time_ms, 3) for f in self.frames
                       if f.kind == kind and f.echo_time_ms is not None})

    def n_slices(self, kind: str) -> int:
        frames = [f for f in self.frames if f.kind == kind]
        if not frames:
            return 0
        normal = _normal(frames[0].orientation)
        return len({round(float(np.dot(f.position, normal)), 2) for f in frames})

    @property
    def derived(self) -> bool:
        """DERIVED images (SWI, minIP, maps) are paired only after ORIGINAL ones."""
        image_type = _values(_get(self.header, "ImageType", None))
        return bool(image_type) and image_type[0].strip().upper() == "DERIVED"

    @property
    def study_uid(self) -> str:
        return str(_get(self.header, "StudyInstanceUID", ""))

    @property
    def sequence_name(self) -> str:
        return str(_get(self.header, "SequenceName", "")
                   or _get(self.header, "PulseSequenceName", ""))

    @property
    def protocol_name(self) -> str:
        return str(_get(self.header, "ProtocolName", ""))

    def label(self) -> str:
        number = "?" if self.number is None else str(self.number)
        return f"series {number} '{self.description}'"

    def summary(self) -> str:
        parts = []
        for kind in (MAGNITUDE, PHASE, REAL, IMAGINARY, FIELDMAP, OTHER):
            if self.kinds.get(kind):
                tes = self.echo_times_ms(kind)
                te_text = ", ".join(f"{t:g}" for t in tes)
                parts.append(f"{kind} ({len(tes)} echo{'es' if len(tes) != 1 else ''}"
                             + (f", TE {te_text} ms" if tes else "") + ")")
        frame = self.frames[0]
        geometry = f"{self.n_slices(self.frames[0].kind)} slices of {frame.cols}x{frame.rows}"
        vendor = f" [{self.manufacturer}]" if self.manufacturer else ""
        text = f"{self.label()}{vendor}: {' + '.join(parts) or 'no images'}, {geometry}"
        if self.problem:
            text += f" - {self.problem}"
        return text


@dataclasses.dataclass
class GreCandidate:
    """A usable magnitude+phase (or real/imaginary) source: one series or a pair."""

    series: list[DicomSeries]

    @property
    def numbers(self) -> list[int]:
        return [s.number for s in self.series if s.number is not None]

    def label(self) -> str:
        if len(self.series) == 1:
            return self.series[0].label()
        return " + ".join(s.label() for s in self.series)

    def summary(self) -> str:
        frames = [f for s in self.series for f in s.frames]
        kinds = sorted({f.kind for f in frames} - {OTHER})
        tes = sorted({round(f.echo_time_ms, 3) for f in frames if f.echo_time_ms is not None})
        return (f"{self.label()}: {'/'.join(kinds)}, {len(tes)} echo"
                f"{'es' if len(tes) != 1 else ''} (TE {', '.join(f'{t:g}' for t in tes)} ms)")


# ----------------------------------------------------------------------------------------
# Public API


def read_dicom(folder, *, series: int | None = None, b0_tesla: float | None = None,
               phase_unit: str = "auto") -> Acquisition:
    """Read a multi-echo GRE acquisition from a DICOM folder.

    Parameters
    ----------
    folder : path
        Folder searched recursively for DICOM files (any names, ``.dcm``, ``.gz``).
    series : int, optional
        SeriesNumber to use when the folder holds several usable series (either number of a
        Siemens magnitude/phase pair selects the pair).
    b0_tesla : float, optional
        Field strength overriding the header (needed when the header lacks it).
    phase_unit : str
        ``auto`` (default) uses the header's units; any other value of
        :data:`qsmkit.acquisition.PHASE_UNITS` forces the unit of the rescaled phase values.

    Returns
    -------
    Acquisition
        Magnitude and phase (X, Y, Z, E) float32, phase in radians [-pi, pi); echo times (s);
        affine (RAS, mm) as dcm2niix writes it; ``notes`` list what was rescaled or flipped.

    Raises
    ------
    InputError
        No DICOM files, no usable GRE series (with the reason for each series found), several
        usable series and no ``series`` given (they are listed), a phase-difference or
        field-map series, inconsistent geometry, unreadable or truncated files.
    """
    all_series = scan_dicom_folder(folder)
    candidate = select_candidate(all_series, series=series, folder=folder)
    return _read_candidate(candidate, b0_tesla=b0_tesla, phase_unit=phase_unit)


def scan_dicom_folder(folder) -> list[DicomSeries]:
    """Headers of every DICOM image under ``folder``, grouped into series (no pixel data read).

    Raises :class:`InputError` if the folder does not exist, holds no DICOM images, or a file
    that is DICOM (by its preamble or extension) cannot be parsed.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"DICOM folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the folder that holds the DICOM files")
    frames_by_series: dict[str, list[DicomFrame]] = defaultdict(list)
    headers: dict[str, object] = {}
    skipped = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if _skip_by_name(path):
            continue
        ds = _read_dataset(path, stop_before_pixels=True)
        if ds is None:
            skipped += 1
            continue
        if not _is_image(ds):
            continue
        try:
            uid = str(_get(ds, "SeriesInstanceUID", "") or "")
            frames = _frames_from_dataset(ds, path)
        except InputError:
            raise
        except Exception as err:  # malformed values of any kind
            raise InputError(
                f"cannot interpret the DICOM header of {path} ({type(err).__name__}: {err}); "
                "the file is damaged or not an MR image"
            ) from None
        if not uid:
            uid = f"no-uid:{_get(ds, 'SeriesNumber', '')}:{_get(ds, 'SeriesDescription', '')}"
        frames_by_series[uid].extend(frames)
        headers.setdefault(uid, ds)
    if not frames_by_series:
        extra = f" ({skipped} other files ignored)" if skipped else ""
        raise InputError(
            f"no DICOM images found in {folder}{extra}; give the folder that holds the "
            "scanner's DICOM files"
        )
    result = []
    for uid, frames in frames_by_series.items():
        header = headers[uid]
        number = _int_or_none(_get(header, "SeriesNumber", None))
        series = DicomSeries(
            uid=uid,
            number=number,
            description=str(_get(header, "SeriesDescription", "")
                            or _get(header, "ProtocolName", "")),
            manufacturer=str(_get(header, "Manufacturer", "") or ""),
            frames=frames,
            header=header,
        )
        series.protocol_te_ms, series.sequence_file = _siemens_protocol(header)
        result.append(series)
    result.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    for series in result:
        series.problem = _diagnose(series, result)
    return result


def find_candidates(all_series: list[DicomSeries]) -> list[GreCandidate]:
    """Usable sources among ``all_series``: one series with magnitude and phase (or
    real/imaginary), or a magnitude-only series paired with a matching phase-only series."""
    candidates = []
    magnitude_only, phase_only = [], []
    for s in all_series:
        if s.problem and not s.problem.startswith(("magnitude only", "phase only")):
            continue
        kinds = set(s.kinds)
        if PHASE in kinds and MAGNITUDE in kinds:
            candidates.append(GreCandidate([s]))
        elif REAL in kinds and IMAGINARY in kinds:
            candidates.append(GreCandidate([s]))
        elif MAGNITUDE in kinds and not kinds & {PHASE, REAL, IMAGINARY}:
            magnitude_only.append(s)
        elif PHASE in kinds and not kinds & {MAGNITUDE, REAL, IMAGINARY}:
            phase_only.append(s)
    used = set()
    pairs = []
    for m in magnitude_only:
        for p in phase_only:
            if _compatible(m, p):
                distance = abs((p.number or 0) - (m.number or 0))
                consecutive = 0 if p.number == (m.number or 0) + 1 else 1
                pairs.append((m.derived or p.derived, consecutive, distance, m, p))
    for *_, m, p in sorted(pairs, key=lambda t: (t[0], t[1], t[2], t[3].number or 0)):
        if m.uid in used or p.uid in used:
            continue
        used.update({m.uid, p.uid})
        candidates.append(GreCandidate([m, p]))
    candidates.sort(key=lambda c: min(c.numbers) if c.numbers else 1 << 30)
    return candidates


def select_candidate(all_series: list[DicomSeries], *, series: int | None = None,
                     folder=None) -> GreCandidate:
    """Pick the series to read; raise :class:`InputError` listing the choices or reasons."""
    where = f" in {folder}" if folder is not None else ""
    candidates = find_candidates(all_series)
    if series is not None:
        chosen = [c for c in candidates if series in c.numbers]
        if len(chosen) == 1:
            return chosen[0]
        matching = [s for s in all_series if s.number == series]
        if len(chosen) > 1:
            raise InputError(
                f"several series numbered {series}{where} (from different studies?): "
                + "; ".join(c.summary() for c in chosen)
                + "; put one study per folder"
            )
        if matching:
            problems = [s.problem for s in matching if s.problem]
            reason = problems[0] if problems else "it has no matching magnitude/phase partner"
            raise InputError(f"{matching[0].label()} cannot be used for QSM: {reason}")
        listing = "; ".join(s.summary() for s in all_series)
        raise InputError(f"no series number {series}{where}; the folder holds: {listing}")
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise InputError(
            f"several multi-echo GRE series{where}; choose one with --series N: "
            + "; ".join(c.summary() for c in candidates)
        )
    if len(all_series) == 1 and all_series[0].problem:
        s = all_series[0]
        raise InputError(f"{s.label()}{where} cannot be used for QSM: {s.problem}")
    strong = [s for s in all_series
              if s.problem and not s.problem.startswith(("magnitude only", "phase only"))]
    if len(strong) == 1 and len(all_series) <= 2:
        s = strong[0]
        others = "; ".join(o.summary() for o in all_series if o is not s)
        raise InputError(
            f"{s.label()}{where} cannot be used for QSM: {s.problem}"
            + (f" (also found: {others})" if others else "")
        )
    raise InputError(
        f"no multi-echo GRE magnitude+phase series{where}; found: "
        + "; ".join(s.summary() for s in all_series)
        + ". QSM needs the magnitude and the phase (or real and imaginary) image of every echo"
    )


def read_series_volume(series: DicomSeries, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescaled values of one image kind of one series, without any phase conversion.

    Returns ``(data (X, Y, Z, E) float32, echo_times_s (E,), affine (4, 4) RAS)`` with the
    same axis order and affine as :func:`read_dicom` (and dcm2niix). Useful to inspect
    series that are not usable for QSM (a magnitude-only or a phase-difference series).
    """
    frames = [f for f in series.frames if f.kind == kind]
    if not frames:
        raise InputError(f"{series.label()} has no {kind} images")
    grid = _build_grid({kind: frames}, series.label(), require_echo_time=False)
    data = _load_values(grid, kind, series.vendor)
    data, affine = _orient(data, grid, _is_3d(series))
    return data.astype(np.float32), grid.echo_times_s, affine


# ----------------------------------------------------------------------------------------
# File reading


def _skip_by_name(path: Path) -> bool:
    name = path.name
    if name.startswith("."):
        return True
    if name in _NOT_DICOM_NAMES or name.upper().startswith(("LICENSE", "README")):
        return True
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return True
    return Path(lower).suffix in _NOT_DICOM_SUFFIXES


def _gunzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(
            f"cannot decompress {path} ({err}); the file is truncated or not gzip"
        ) from None


def _read_dataset(path: Path, *, stop_before_pixels: bool):
    """A pydicom Dataset, or None for files that are not DICOM.

    Plain files are parsed from disk (only the header when ``stop_before_pixels``);
    ``.gz`` files are decompressed in memory first.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    gzipped = path.name.lower().endswith(".gz")
    try:
        if gzipped:
            data = _gunzip(path)
            head = data[:132]
            size = len(data)
        else:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                head = handle.read(132)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err}") from None
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    base = path.name.lower()[:-3] if gzipped else path.name.lower()
    claims_dicom = has_preamble or Path(base).suffix in _DICOM_SUFFIXES
    if not has_preamble and size < 8:
        if claims_dicom:
            raise InputError(f"{path} is too short to be a DICOM file (truncated?)")
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = io.BytesIO(data) if gzipped else open(path, "rb")  # noqa: SIM115
            with source:
                ds = pydicom.dcmread(source, force=not has_preamble,
                                     stop_before_pixels=stop_before_pixels)
                # Touch every element so that parsing errors surface here.
                list(ds.keys())
    except InvalidDicomError:
        if claims_dicom:
            raise InputError(f"{path} is not a valid DICOM file") from None
        return None
    except Exception as err:  # pydicom raises many kinds for damaged files
        if claims_dicom:
            raise InputError(
                f"cannot read DICOM file {path} ({type(err).__name__}: {err}); it is damaged "
                "or truncated"
            ) from None
        return None
    if not has_preamble and not claims_dicom:
        # force=True accepts almost anything: require the attributes of an image.
        if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
            return None
    return ds


def _is_image(ds) -> bool:
    if "Rows" not in ds or "Columns" not in ds:
        return False
    modality = str(_get(ds, "Modality", "MR") or "MR")
    return modality.upper() == "MR"


# ----------------------------------------------------------------------------------------
# Header interpretation


def _get(ds, keyword, default=None):
    try:
        value = ds.get(keyword, default)
    except Exception:
        return default
    if value is None:
        return default
    if hasattr(value, "value") and not isinstance(value, (str, bytes)) and hasattr(value, "tag"):
        value = value.value
    return value


def _float(value, default=None):
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        result = float(value)
    except (TypeError, ValueError, IndexError):
        return default
    return result if math.isfinite(result) else default


def _int_or_none(value):
    number = _float(value, None)
    if number is None:
        return None
    return int(round(number))


def _floats(value, n: int, what: str, path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {what} is not a list of numbers ({value!r})") from None
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        raise InputError(f"{path}: {what} must be {n} finite numbers, got {value!r}")
    return array


def _vendor(manufacturer: str) -> str:
    text = manufacturer.upper()
    if "SIEMENS" in text:
        return "SIEMENS"
    if "PHILIPS" in text:
        return "PHILIPS"
    if "GE " in text + " " or text.startswith("GE") or "GENERAL ELECTRIC" in text:
        return "GE"
    if "CANON" in text or "TOSHIBA" in text:
        return "CANON"
    return text.split(" ")[0] if text else ""


def _item(sequence_owner, keyword):
    seq = _get(sequence_owner, keyword, None)
    try:
        return seq[0] if seq is not None and len(seq) else None
    except Exception:
        return None


def _functional(frame_item, shared_item, seq_keyword, attr, default=None):
    """Attribute ``attr`` of functional group ``seq_keyword``: per-frame first, then shared."""
    for owner in (frame_item, shared_item):
        if owner is None:
            continue
        item = _item(owner, seq_keyword)
        if item is not None:
            value = _get(item, attr, None)
            if value is not None:
                return value
    return default


def _values(value) -> list[str]:
    """A multi-valued text attribute as a list (a single value may come as one string)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        return text.split("\\")
    try:
        return [str(v) for v in value]
    except TypeError:
        return [str(value)]


def _kind_from_text(values, vendor: str) -> str | None:
    tokens = [v.strip().upper() for v in _values(values) if v.strip()]
    joined = " ".join(tokens)
    if any(t in {"FIELDMAP", "FIELD_MAP", "B0MAP", "B0_MAP", "FIELDMAPHZ", "B0"} for t in tokens):
        return FIELDMAP
    for token in tokens:
        if token in {"P", "PHASE", "PHASE MAP", "PHASE_MAP", "PHA"}:
            return PHASE
        if token in {"R", "REAL"}:
            return REAL
        if token in {"I", "IMAGINARY", "IMAG"}:
            return IMAGINARY
        if token in {"M", "MAGNITUDE", "MAG", "M_FFE", "M_SE", "M_IR"}:
            return MAGNITUDE
    if "PHASE" in joined:
        return PHASE
    if "MAGNITUDE" in joined:
        return MAGNITUDE
    return None


def _image_kind(ds, frame_item, shared_item, vendor: str) -> str:
    complex_part = None
    frame_type = None
    if frame_item is not None or shared_item is not None:
        complex_part = _functional(frame_item, shared_item, "MRImageFrameTypeSequence",
                                   "ComplexImageComponent")
        frame_type = _functional(frame_item, shared_item, "MRImageFrameTypeSequence",
                                 "FrameType")
    complex_part = complex_part or _get(ds, "ComplexImageComponent", None)
    rescale_type = str(_get(ds, "RescaleType", "") or "").strip().lower()
    if rescale_type in {"hz", "rad/s"}:
        return FIELDMAP
    if vendor == "GE":
        ge_type = _ge_image_type(ds)
        if ge_type is not None:
            return {0: MAGNITUDE, 1: PHASE, 2: REAL, 3: IMAGINARY}.get(ge_type, OTHER)
    if complex_part:
        part = str(complex_part).upper()
        mapping = {"MAGNITUDE": MAGNITUDE, "PHASE": PHASE, "REAL": REAL,
                   "IMAGINARY": IMAGINARY}
        if part in mapping:
            kind_from_type = _kind_from_text(frame_type or _get(ds, "ImageType", None), vendor)
            return FIELDMAP if kind_from_type == FIELDMAP else mapping[part]
    if vendor == "PHILIPS":
        private = _private(ds, 0x2005, 0x1011)
        if private is not None:
            token = str(private).strip().upper()
            mapping = {"M": MAGNITUDE, "P": PHASE, "R": REAL, "I": IMAGINARY}
            if token in mapping:
                kind_from_type = _kind_from_text(_get(ds, "ImageType", None), vendor)
                return FIELDMAP if kind_from_type == FIELDMAP else mapping[token]
    kind = _kind_from_text(frame_type or _get(ds, "ImageType", None), vendor)
    return kind or MAGNITUDE


def _private(ds, group: int, element: int):
    try:
        if (group, element) in ds:
            value = ds[group, element].value
            if isinstance(value, bytes):
                return None
            return value
    except Exception:
        return None
    return None


def _ge_image_type(ds) -> int | None:
    value = _private(ds, 0x0043, 0x102F)
    return _int_or_none(value) if value is not None else None


def _philips_scale(ds, frame_item=None) -> float | None:
    candidates = []
    if frame_item is not None:
        candidates.append(_private(frame_item, 0x2005, 0x100E))
        nested = _private(frame_item, 0x2005, 0x140F)
        if nested is None and (0x2005, 0x140F) in frame_item:
            try:
                nested_item = frame_item[0x2005, 0x140F].value[0]
                candidates.append(_private(nested_item, 0x2005, 0x100E))
            except Exception:
                pass
    candidates.append(_private(ds, 0x2005, 0x100E))
    for value in candidates:
        scale = _float(value, None)
        if scale is not None and scale > 0:
            return scale
    return None


def _frames_from_dataset(ds, path: Path) -> list[DicomFrame]:
    manufacturer = str(_get(ds, "Manufacturer", "") or "")
    vendor = _vendor(manufacturer)
    rows = _int_or_none(_get(ds, "Rows", None))
    cols = _int_or_none(_get(ds, "Columns", None))
    if not rows or not cols or rows < 1 or cols < 1:
        raise InputError(f"{path}: Rows/Columns are missing or zero; the file is damaged")
    bits_stored = _int_or_none(_get(ds, "BitsStored", None)) or _int_or_none(
        _get(ds, "BitsAllocated", 16)) or 16
    signed = _int_or_none(_get(ds, "PixelRepresentation", 0)) == 1
    max_stored = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    instance = _int_or_none(_get(ds, "InstanceNumber", 0)) or 0
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    base_rescale_type = str(_get(ds, "RescaleType", "") or "").strip()
    rwv_unit = _rwv_unit(ds)
    frames = []
    if per_frame:
        n_frames = _int_or_none(_get(ds, "NumberOfFrames", len(per_frame))) or len(per_frame)
        if n_frames != len(per_frame):
            raise InputError(
                f"{path}: NumberOfFrames ({n_frames}) differs from the per-frame functional "
                f"groups ({len(per_frame)}); the file is damaged"
            )
        for index, item in enumerate(per_frame):
            position = _functional(item, shared, "PlanePositionSequence", "ImagePositionPatient")
            orientation = _functional(item, shared, "PlaneOrientationSequence",
                                      "ImageOrientationPatient")
            spacing = _functional(item, shared, "PixelMeasuresSequence", "PixelSpacing")
            if position is None or orientation is None or spacing is None:
                raise InputError(
                    f"{path}: frame {index + 1} lacks its position, orientation or pixel "
                    "spacing; the enhanced DICOM file is incomplete"
                )
            te = _float(_functional(item, shared, "MREchoSequence", "EffectiveEchoTime"), None)
            slope = _float(_functional(item, shared, "PixelValueTransformationSequence",
                                       "RescaleSlope"), None)
            intercept = _float(_functional(item, shared, "PixelValueTransformationSequence",
                                           "RescaleIntercept"), None)
            rtype = _functional(item, shared, "PixelValueTransformationSequence", "RescaleType")
            content = _item(item, "FrameContentSequence")
            stack_pos = temporal = None
            if content is not None:
                stack_pos = _int_or_none(_get(content, "InStackPositionNumber", None))
                temporal = _int_or_none(_get(content, "TemporalPositionIndex", None))
            frames.append(DicomFrame(
                path=path,
                frame_index=index,
                kind=_image_kind(ds, item, shared, vendor),
                echo_number=None,
                echo_time_ms=te if te is None or te > 0 else None,
                position=_floats(position, 3, "ImagePositionPatient", path),
                orientation=_floats(orientation, 6, "ImageOrientationPatient", path),
                spacing=tuple(_floats(spacing, 2, "PixelSpacing", path)),
                rows=rows,
                cols=cols,
                slope=1.0 if slope is None or slope == 0 else slope,
                intercept=0.0 if intercept is None else intercept,
                rescale_type=str(rtype or base_rescale_type or rwv_unit or ""),
                philips_scale=_philips_scale(ds, item) if vendor == "PHILIPS" else None,
                instance_number=stack_pos or index + 1,
                repetition=(temporal,),
                max_stored=max_stored,
                signed=signed,
                bits_stored=bits_stored,
                sop_class_uid=str(_get(ds, "SOPClassUID", "") or ""),
                sop_instance_uid=str(_get(ds, "SOPInstanceUID", "") or ""),
            ))
        return frames
    position = _get(ds, "ImagePositionPatient", None)
    orientation = _get(ds, "ImageOrientationPatient", None)
    spacing = _get(ds, "PixelSpacing", None)
    if position is None or orientation is None or spacing is None:
        raise InputError(
            f"{path}: ImagePositionPatient, ImageOrientationPatient or PixelSpacing is missing; "
            "qsmkit needs the image geometry (export the original images, not screenshots)"
        )
    te = _float(_get(ds, "EchoTime", None), None)
    slope = _float(_get(ds, "RescaleSlope", None), None)
    intercept = _float(_get(ds, "RescaleIntercept", None), None)
    repetition = (
        _int_or_none(_get(ds, "TemporalPositionIdentifier", None)),
        _int_or_none(_get(ds, "AcquisitionNumber", None)) if vendor not in {"SIEMENS", "PHILIPS"}
        else None,
    )
    frames.append(DicomFrame(
        path=path,
        frame_index=None,
        kind=_image_kind(ds, None, None, vendor),
        echo_number=_int_or_none(_get(ds, "EchoNumbers", None)),
        echo_time_ms=te if te is None or te > 0 else None,
        position=_floats(position, 3, "ImagePositionPatient", path),
        orientation=_floats(orientation, 6, "ImageOrientationPatient", path),
        spacing=tuple(_floats(spacing, 2, "PixelSpacing", path)),
        rows=rows,
        cols=cols,
        slope=1.0 if slope is None or slope == 0 else slope,
        intercept=0.0 if intercept is None else intercept,
        rescale_type=base_rescale_type or rwv_unit,
        philips_scale=_philips_scale(ds) if vendor == "PHILIPS" else None,
        instance_number=instance,
        repetition=repetition,
        max_stored=max_stored,
        signed=signed,
        bits_stored=bits_stored,
        acquisition_time=str(_get(ds, "AcquisitionTime", "") or ""),
        sop_class_uid=str(_get(ds, "SOPClassUID", "") or ""),
        sop_instance_uid=str(_get(ds, "SOPInstanceUID", "") or ""),
    ))
    return frames


def _rwv_unit(ds) -> str:
    item = _item(ds, "RealWorldValueMappingSequence")
    if item is None:
        return ""
    units = _item(item, "MeasurementUnitsCodeSequence")
    return str(_get(units, "CodeValue", "") or "") if units is not None else ""


_PROTOCOL_TE = re.compile(rb"alTE\[(\d+)\]\s*=\s*(\d+)")
_PROTOCOL_SEQ = re.compile(rb"tSequenceFileName\s*=\s*\"+([^\"\r\n]*)\"")


def _siemens_protocol(ds) -> tuple[list[float], str]:
    """Echo times (ms) and sequence file of the Siemens protocol (CSA / XA private header)."""
    if _vendor(str(_get(ds, "Manufacturer", "") or "")) != "SIEMENS":
        return [], ""
    blobs = []
    for tag in ((0x0029, 0x1020), (0x0021, 0x1019)):
        try:
            value = ds[tag].value if tag in ds else None
        except Exception:
            value = None
        if isinstance(value, (bytes, bytearray)):
            blobs.append(bytes(value))
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        try:
            if (0x0021, 0x10FE) in shared:
                item = shared[0x0021, 0x10FE].value[0]
                if (0x0021, 0x1019) in item:
                    value = item[0x0021, 0x1019].value
                    if isinstance(value, (bytes, bytearray)):
                        blobs.append(bytes(value))
        except Exception:
            pass
    for blob in blobs:
        tes = {int(i): int(v) / 1000.0 for i, v in _PROTOCOL_TE.findall(blob)}
        if tes:
            seq = _PROTOCOL_SEQ.search(blob)
            seq_name = seq.group(1).decode("latin-1") if seq else ""
            return [tes[i] for i in sorted(tes)], seq_name
    return [], ""


def _ge_sequence(ds) -> str:
    names = []
    for element in (0x109C, 0x109E):
        value = _private(ds, 0x0019, element)
        if value is not None:
            names.append(str(value))
    return " ".join(names)


def _normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else normal


def _is_3d(series: DicomSeries) -> bool:
    return str(_get(series.header, "MRAcquisitionType", "") or "").strip().upper() == "3D"


# ----------------------------------------------------------------------------------------
# Series diagnosis and pairing


def _diagnose(series: DicomSeries, all_series: list[DicomSeries]) -> str:
    """Why a series cannot be used on its own ("" when it can)."""
    kinds = series.kinds
    vendor = series.vendor
    ge_seq = _ge_sequence(series.header) if vendor == "GE" else ""
    if vendor == "GE" and re.search(r"b0map|b0rf|3db0", ge_seq, re.IGNORECASE):
        return (
            f"it is a GE B0 field map (sequence {ge_seq.split()[0]}): a field map in Hz plus a "
            "magnitude image, not phase; QSM needs the per-echo phase of a multi-echo GRE "
            "(reconstruct phase or real/imaginary images)"
        )
    if kinds.get(FIELDMAP):
        return (
            "it is a field map in Hz, not phase; QSM needs the per-echo phase of a multi-echo "
            "GRE (reconstruct phase or real/imaginary images)"
        )
    duplicated = _duplicated_positions(series)
    if duplicated and kinds.get(MAGNITUDE) and not kinds.get(PHASE):
        signed_values = _any_signed_magnitude(series)
        if signed_values:
            return (
                "it holds two images per slice and echo labelled magnitude, one of them with "
                "negative values: a scanner field map (Hz) with its magnitude, not phase; QSM "
                "needs the per-echo phase of a multi-echo GRE"
            )
    phase_diff = _phase_difference(series, all_series)
    if phase_diff:
        return phase_diff
    has_phase = bool(kinds.get(PHASE)) or (bool(kinds.get(REAL)) and bool(kinds.get(IMAGINARY)))
    if kinds.get(MAGNITUDE) and not has_phase:
        return "magnitude only: no phase images in this series"
    if kinds.get(PHASE) and not kinds.get(MAGNITUDE):
        return "phase only: no magnitude images in this series"
    if (kinds.get(REAL) or kinds.get(IMAGINARY)) and not (kinds.get(REAL) and kinds.get(IMAGINARY)):
        return "real or imaginary images without their partner"
    if not has_phase:
        return "no magnitude/phase images recognised"
    return ""


def _duplicated_positions(series: DicomSeries) -> bool:
    seen = Counter()
    normal = _normal(series.frames[0].orientation)
    for f in series.frames:
        seen[(f.kind, f.echo_number, None if f.echo_time_ms is None else round(f.echo_time_ms, 3),
              round(float(np.dot(f.position, normal)), 2), f.repetition)] += 1
    return any(v > 1 for v in seen.values())


def _any_signed_magnitude(series: DicomSeries) -> bool:
    """Whether any magnitude image can hold negative values (signed pixels or intercept)."""
    for f in series.frames:
        if f.kind == MAGNITUDE and (f.signed or f.intercept < 0):
            return True
    return False


def _phase_difference(series: DicomSeries, all_series: list[DicomSeries]) -> str:
    """Recognise a phase-difference image (Siemens gre_field_mapping) among phase series."""
    phase_frames = [f for f in series.frames if f.kind == PHASE]
    if not phase_frames:
        return ""
    phase_tes = series.echo_times_ms(PHASE)
    if len(phase_tes) != 1:
        return ""
    te = phase_tes[0]
    echo_numbers = {f.echo_number for f in phase_frames if f.echo_number is not None}
    reasons = []
    if echo_numbers and min(echo_numbers) > 1:
        reasons.append(f"it is labelled echo {min(echo_numbers)} but has no phase of echo 1")
    protocol = series.protocol_te_ms
    first_te = None
    if len(protocol) >= 2:
        later = [t for t in protocol[1:] if abs(t - te) < 0.01]
        if later:
            first_te = protocol[0]
            listed = ", ".join(f"{t:g}" for t in protocol)
            reasons.append(f"the protocol has echo times {listed} ms")
    if not reasons:
        # A sibling magnitude series of the same acquisition with more echoes.
        for other in all_series:
            if other is series or other.study_uid != series.study_uid:
                continue
            if other.protocol_name != series.protocol_name or not other.kinds.get(MAGNITUDE):
                continue
            mag_tes = other.echo_times_ms(MAGNITUDE)
            if len(mag_tes) >= 2 and any(abs(t - te) < 0.01 for t in mag_tes[1:]):
                first_te = mag_tes[0]
                reasons.append(f"{other.label()} has magnitude echoes at "
                               f"{', '.join(f'{t:g}' for t in mag_tes)} ms")
                break
    if not reasons:
        return ""
    fieldmap_seq = ("field_mapping" in series.sequence_file.lower()
                    or series.sequence_name.lstrip("*").lower().startswith("fm"))
    if first_te is None and protocol:
        first_te = protocol[0]
    delta = f", delta TE {te - first_te:.3g} ms" if first_te is not None else ""
    sequence = " of a field-mapping sequence" if fieldmap_seq else ""
    return (
        f"it is a phase-difference image{sequence} (phase(TE2) - phase(TE1){delta}; "
        f"{'; '.join(reasons)}), not the phase of each echo; QSM needs per-echo phase: "
        "reconstruct magnitude and phase of every echo of a multi-echo GRE"
    )


def _compatible(mag: DicomSeries, phase: DicomSeries) -> bool:
    if mag.study_uid != phase.study_uid:
        return False
    fm, fp = mag.frames[0], phase.frames[0]
    if (fm.rows, fm.cols) != (fp.rows, fp.cols):
        return False
    if not np.allclose(fm.orientation, fp.orientation, atol=1e-3):
        return False
    if not np.allclose(fm.spacing, fp.spacing, atol=1e-3):
        return False
    if mag.echo_times_ms(MAGNITUDE) != phase.echo_times_ms(PHASE):
        return False
    normal = _normal(fm.orientation)
    pos_m = sorted({round(float(np.dot(f.position, normal)), 2) for f in mag.frames})
    pos_p = sorted({round(float(np.dot(f.position, normal)), 2) for f in phase.frames})
    if len(pos_m) != len(pos_p) or not np.allclose(pos_m, pos_p, atol=0.02):
        return False
    return True


# ----------------------------------------------------------------------------------------
# Volume assembly


@dataclasses.dataclass
class _Grid:
    """Frames of each kind arranged as [echo][slice], with the shared geometry."""

    frames: dict[str, list[list[DicomFrame]]]
    echo_times_s: np.ndarray
    rows: int
    cols: int
    orientation: np.ndarray
    spacing: tuple[float, float]
    positions: np.ndarray  # (Z, 3) LPS, sorted along the normal


def _echo_key(frame: DicomFrame):
    if frame.echo_time_ms is not None:
        return round(frame.echo_time_ms, 3)
    return ("n", frame.echo_number)


def _build_grid(frames_by_kind: dict[str, list[DicomFrame]], label: str, *,
                require_echo_time: bool = True) -> _Grid:
    first = next(iter(frames_by_kind.values()))[0]
    orientation = first.orientation
    row_dir, col_dir = orientation[:3], orientation[3:]
    if not (abs(np.linalg.norm(row_dir) - 1) < 1e-2 and abs(np.linalg.norm(col_dir) - 1) < 1e-2
            and abs(float(np.dot(row_dir, col_dir))) < 1e-2):
        raise InputError(
            f"{label}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit "
            "vectors; the header is damaged"
        )
    if min(first.spacing) <= 0:
        raise InputError(f"{label}: PixelSpacing {list(first.spacing)} must be positive")
    normal = _normal(orientation)
    all_frames = [f for frames in frames_by_kind.values() for f in frames]
    for f in all_frames:
        if (f.rows, f.cols) != (first.rows, first.cols):
            raise InputError(
                f"{label}: images have different sizes ({first.cols}x{first.rows} and "
                f"{f.cols}x{f.rows}); the series mixes acquisitions"
            )
        if not np.allclose(f.orientation, orientation, atol=1e-3):
            raise InputError(
                f"{label}: images have different orientations; the series mixes stacks or "
                "acquisitions and cannot form one volume"
            )
        if not np.allclose(f.spacing, first.spacing, rtol=1e-3, atol=1e-4):
            raise InputError(f"{label}: images have different pixel spacings")
    echo_keys = sorted({_echo_key(f) for f in all_frames}, key=_sort_key)
    if require_echo_time and any(isinstance(k, tuple) for k in echo_keys):
        raise InputError(
            f"{label}: EchoTime is missing from some images; qsmkit needs the echo time of "
            "every image"
        )
    grid_frames: dict[str, list[list[DicomFrame]]] = {}
    reference = None
    for kind, frames in frames_by_kind.items():
        by_echo = defaultdict(list)
        for f in frames:
            by_echo[_echo_key(f)].append(f)
        kind_keys = sorted(by_echo, key=_sort_key)
        if kind_keys != echo_keys:
            missing = [k for k in echo_keys if k not in by_echo]
            raise InputError(
                f"{label}: {kind} images are missing for echo(es) "
                f"{', '.join(_key_text(k) for k in missing)}; every echo needs magnitude and phase"
            )
        per_echo = []
        for key in echo_keys:
            echo_frames = sorted(by_echo[key], key=lambda f: (float(np.dot(f.position, normal)),
                                                              f.instance_number))
            projections = np.array([float(np.dot(f.position, normal)) for f in echo_frames])
            if len(projections) > 1 and np.any(np.diff(projections) < 1e-3):
                repetitions = {f.repetition for f in echo_frames}
                n_unique = len(np.unique(np.round(projections, 3)))
                if len(repetitions) > 1:
                    raise InputError(
                        f"{label}: {len(echo_frames) // max(n_unique, 1)} volumes per echo "
                        "(repeated acquisitions or dynamics); qsmkit reads one volume per echo, "
                        "export a single repetition"
                    )
                raise InputError(
                    f"{label}: {len(echo_frames) - n_unique} {kind} image(s) at echo "
                    f"{_key_text(key)} duplicate a slice position; remove duplicated files or "
                    "separate the series"
                )
            if reference is None:
                reference = (projections, np.array([f.position for f in echo_frames]))
            elif len(projections) != len(reference[0]) or not np.allclose(
                    projections, reference[0], atol=0.02):
                raise InputError(
                    f"{label}: the {kind} images at echo {_key_text(key)} cover "
                    f"{len(projections)} slice positions, other echoes {len(reference[0])}; "
                    "files are missing or the series mixes stacks"
                )
            per_echo.append(echo_frames)
        grid_frames[kind] = per_echo
    projections, positions = reference
    if len(projections) > 2:
        gaps = np.diff(projections)
        if gaps.max() - gaps.min() > max(0.01 * gaps.mean(), 0.01):
            raise InputError(
                f"{label}: slice spacing varies from {gaps.min():.3g} to {gaps.max():.3g} mm "
                "(missing slices or several stacks); qsmkit needs evenly spaced slices"
            )
    echo_times_s = np.array([np.nan if isinstance(k, tuple) else k / 1000.0
                             for k in echo_keys], dtype=float)
    return _Grid(grid_frames, echo_times_s, first.rows, first.cols, orientation,
                 tuple(first.spacing), positions)


def _key_text(key) -> str:
    if isinstance(key, tuple):
        return f"number {key[1]}" if key[1] is not None else "without echo time"
    return f"TE {key:g} ms"


def _sort_key(key):
    return (1, 0.0) if isinstance(key, tuple) else (0, float(key))


class _PixelCache:
    """Reads pixel arrays, each multi-frame file once."""

    def __init__(self):
        self._arrays: dict[Path, np.ndarray] = {}

    def frame(self, frame: DicomFrame) -> np.ndarray:
        array = self._arrays.get(frame.path)
        if array is None:
            array = _pixel_array(frame.path)
            if frame.frame_index is not None:
                self._arrays = {frame.path: array}  # keep one multi-frame file in memory
        index = frame.frame_index
        if index is None:
            if array.ndim != 2:
                raise InputError(f"{frame.path}: expected one 2D image, got shape {array.shape}")
            image = array
        else:
            if array.ndim == 2 and index == 0:
                image = array
            elif array.ndim == 3 and index < array.shape[0]:
                image = array[index]
            else:
                raise InputError(f"{frame.path}: frame {index + 1} is missing from the pixel data")
        if image.shape != (frame.rows, frame.cols):
            raise InputError(
                f"{frame.path}: pixel data shape {image.shape} differs from Rows x Columns "
                f"({frame.rows}, {frame.cols})"
            )
        return image


def _pixel_array(path: Path) -> np.ndarray:
    ds = _read_dataset(path, stop_before_pixels=False)
    if ds is None or "PixelData" not in ds:
        raise InputError(f"{path} holds no pixel data (truncated file?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = ds.pixel_array
    except Exception as err:
        raise InputError(
            f"cannot decode the pixel data of {path} ({type(err).__name__}: {err}); the file is "
            "truncated, damaged, or compressed in a format pydicom cannot decode (install "
            "pylibjpeg or gdcm, or export uncompressed DICOM)"
        ) from None
    return np.asarray(array)


def _frame_values(frame: DicomFrame, stored: np.ndarray, philips_fp: bool) -> np.ndarray:
    values = stored.astype(np.float64) * frame.slope + frame.intercept
    if philips_fp and frame.philips_scale:
        # Philips floating-point value: FP = DV / (RescaleSlope * ScaleSlope).
        values = values / (frame.slope * frame.philips_scale)
    return values


def _load_values(grid: _Grid, kind: str, vendor: str = "", cache=None, *,
                 philips_fp: bool | None = None) -> np.ndarray:
    """Rescaled values (X, Y, Z, E) of one kind; Philips floating-point scaling by default
    for every kind but phase (whose units :func:`_read_phase` decides)."""
    cache = cache or _PixelCache()
    if philips_fp is None:
        philips_fp = vendor == "PHILIPS" and kind != PHASE
    per_echo = grid.frames[kind]
    n_echo, n_slice = len(per_echo), len(per_echo[0])
    data = np.empty((grid.cols, grid.rows, n_slice, n_echo), dtype=np.float32)
    for e, echo_frames in enumerate(per_echo):
        for z, frame in enumerate(echo_frames):
            stored = cache.frame(frame)
            data[:, :, z, e] = _frame_values(frame, stored, philips_fp).T
    return data


def _affine_2d(grid: _Grid) -> np.ndarray:
    """RAS affine of the row-flipped array (dcm2niix's layout before any 3D reorientation)."""
    row_dir, col_dir = grid.orientation[:3], grid.orientation[3:]
    d_row, d_col = grid.spacing  # spacing between rows (along col_dir), between columns
    n_slice = len(grid.positions)
    if n_slice > 1:
        slice_vec = (grid.positions[-1] - grid.positions[0]) / (n_slice - 1)
    else:
        slice_vec = _normal(grid.orientation) * 1.0
    lps = np.eye(4)
    lps[:3, 0] = row_dir * d_col
    lps[:3, 1] = -col_dir * d_row
    lps[:3, 2] = slice_vec
    lps[:3, 3] = grid.positions[0] + col_dir * d_row * (grid.rows - 1)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _orient(data: np.ndarray, grid: _Grid, three_d: bool):
    """Flip rows (dcm2niix), build the RAS affine; for 3D reorient to closest RAS axes."""
    data = data[:, ::-1]
    affine = _affine_2d(grid)
    if three_d:
        data, affine = reorient_closest_canonical(data, affine)
    return np.ascontiguousarray(data), affine


def reorient_closest_canonical(data: np.ndarray, affine: np.ndarray):
    """Permute/flip the first three axes so the affine is closest to RAS (no resampling)."""
    from nibabel import orientations

    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    shape = data.shape[:3]
    data = orientations.apply_orientation(data, ornt)
    affine = affine @ orientations.inv_ornt_aff(ornt, shape)
    return data, affine


def _phase_encoding(series: DicomSeries, affine_before, affine_after) -> dict:
    """BIDS PhaseEncodingDirection/Axis in the axes of the output array."""
    direction = str(_get(series.header, "InPlanePhaseEncodingDirection", "") or "").upper()
    if not direction:
        shared = _item(series.header, "SharedFunctionalGroupsSequence")
        geometry = _item(shared, "MRFOVGeometrySequence") if shared is not None else None
        if geometry is not None:
            direction = str(_get(geometry, "InPlanePhaseEncodingDirection", "") or "").upper()
    if direction.startswith("COL"):
        axis_before, sign = 1, -1  # rows are flipped
    elif direction.startswith("ROW"):
        axis_before, sign = 0, 1
    else:
        return {}
    positive = None
    if series.vendor == "SIEMENS":
        positive = _siemens_pe_positive(series.header)
    # World direction of the phase-encoding axis, then find it in the output axes.
    world = affine_before[:3, axis_before]
    cosines = affine_after[:3, :3].T @ world
    axis_after = int(np.argmax(np.abs(cosines)))
    flip = 1 if cosines[axis_after] > 0 else -1
    letters = "ijk"
    info = {"PhaseEncodingAxis": letters[axis_after],
            "InPlanePhaseEncodingDirectionDICOM": "COL" if axis_before == 1 else "ROW"}
    if positive is not None:
        polarity = sign * flip * (1 if positive else -1)
        info["PhaseEncodingDirection"] = letters[axis_after] + ("" if polarity > 0 else "-")
    return info


def _siemens_pe_positive(ds) -> bool | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nibabel.nicom import csareader

            header = csareader.get_csa_header(ds, "image")
        if not header:
            return None
        items = header["tags"]["PhaseEncodingDirectionPositive"]["items"]
        return bool(int(items[0])) if items else None
    except Exception:
        return None


# ----------------------------------------------------------------------------------------
# Reading a candidate into an Acquisition


def _read_phase(grid: _Grid, vendor: str, label: str, cache,
                phase_unit: str = "auto") -> tuple[np.ndarray, str]:
    """Phase in radians, using the units the header gives (Philips scaling, mrad, bits),
    or ``phase_unit`` (see :func:`qsmkit.acquisition.phase_to_radians`) when not ``auto``."""
    frames = [f for echo in grid.frames[PHASE] for f in echo]
    if phase_unit != "auto":
        values = _load_values(grid, PHASE, vendor, cache, philips_fp=False)
        return phase_to_radians(values, what=f"{label} phase", unit=phase_unit)
    if vendor == "PHILIPS" and all(f.philips_scale for f in frames):
        radians = _load_values(grid, PHASE, vendor, cache, philips_fp=True)
        if np.abs(radians).max() <= np.pi * 1.01:
            return (wrap_phase(radians).astype(np.float32),
                    "Philips phase: floating-point scaling (RescaleSlope x private scale slope "
                    "2005,100E) gives radians")
    values = _load_values(grid, PHASE, vendor, cache, philips_fp=False)
    return _phase_from_values(values, frames, vendor, label)


def _phase_from_values(values: np.ndarray, frames: list[DicomFrame], vendor: str,
                       label: str) -> tuple[np.ndarray, str]:
    """Radians from rescaled phase values using the header's units where it gives them."""
    frame = frames[0]
    rtype = frame.rescale_type.strip().lower()
    if rtype in {"mrad", "milliradian", "milliradians"}:
        return (wrap_phase(values / 1000.0).astype(np.float32),
                f"phase stored in milliradians (RescaleType '{frame.rescale_type}') divided by "
                "1000")
    if rtype in {"rad", "radian", "radians"}:
        return wrap_phase(values).astype(np.float32), ""
    lo_v, hi_v = float(values.min()), float(values.max())
    if lo_v >= -np.pi - 1e-3 and hi_v <= np.pi + 1e-3 and not np.all(values == np.round(values)):
        return wrap_phase(values).astype(np.float32), ""
    if vendor == "GE" and lo_v >= -3142.6 and hi_v <= 3142.6:
        return (wrap_phase(values / 1000.0).astype(np.float32),
                "GE phase stored in milliradians divided by 1000")
    # The representable range of the stored integers, after rescaling, spans 2*pi.
    slopes = {f.slope for f in frames}
    intercepts = {f.intercept for f in frames}
    if len(slopes) == 1 and len(intercepts) == 1 and frame.bits_stored >= 8:
        low_stored = -(frame.max_stored + 1) if frame.signed else 0
        low = low_stored * frame.slope + frame.intercept
        high = frame.max_stored * frame.slope + frame.intercept
        step = abs(frame.slope)
        if high < low:
            low, high = high, low
        if lo_v >= low - 1e-6 and hi_v <= high + 1e-6:
            radians = (values - low) / (high - low + step) * 2 * np.pi - np.pi
            name = (f"{vendor.title() + ' ' if vendor else ''}phase stored as {frame.bits_stored}-"
                    f"bit integers (values {low:g}..{high:g} after rescale) mapped to radians")
            return wrap_phase(radians).astype(np.float32), name
    return phase_to_radians(values, what=f"{label} phase")


def _fix_slice_chopping(z: np.ndarray) -> bool:
    """Undo a pi phase alternation between slices (GE real/imaginary, FFT shift); in place.

    Detected on the first echo when neighbouring slices are coherently anti-phased (the
    magnitude-weighted mean of ``z[k+1] * conj(z[k])`` points to pi with a coherence above
    0.5) for at least 80% of slice pairs, while slices two apart are in phase.
    """
    if z.shape[2] < 4:
        return False
    first = z[..., 0]
    lag1 = np.sum(first[:, :, 1:] * np.conj(first[:, :, :-1]), axis=(0, 1))
    norm1 = np.sum(np.abs(first[:, :, 1:]) * np.abs(first[:, :, :-1]), axis=(0, 1))
    lag2 = np.sum(first[:, :, 2:] * np.conj(first[:, :, :-2]), axis=(0, 1))
    norm2 = np.sum(np.abs(first[:, :, 2:]) * np.abs(first[:, :, :-2]), axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        coherence1 = np.abs(lag1) / norm1
        coherence2 = np.abs(lag2) / norm2
    anti = (coherence1 > 0.5) & (np.abs(np.angle(lag1)) > 2 * np.pi / 3)
    in_phase = (coherence2 > 0.5) & (np.abs(np.angle(lag2)) < np.pi / 3)
    if anti.mean() >= 0.8 and in_phase.mean() >= 0.8:
        z[:, :, 1::2, :] *= -1
        return True
    return False


def _read_candidate(candidate: GreCandidate, *, b0_tesla=None,
                    phase_unit: str = "auto") -> Acquisition:
    series_list = candidate.series
    main = series_list[0]
    label = candidate.label()
    vendor = main.vendor
    frames_by_kind: dict[str, list[DicomFrame]] = defaultdict(list)
    for s in series_list:
        for f in s.frames:
            if f.kind in (MAGNITUDE, PHASE, REAL, IMAGINARY):
                frames_by_kind[f.kind].append(f)
    use_complex = PHASE not in frames_by_kind
    wanted = [REAL, IMAGINARY] if use_complex else [PHASE]
    if MAGNITUDE in frames_by_kind:
        wanted.append(MAGNITUDE)
    grid = _build_grid({k: frames_by_kind[k] for k in wanted}, label)
    notes: list[str] = []
    cache = _PixelCache()
    if use_complex:
        real = _load_values(grid, REAL, vendor, cache)
        imag = _load_values(grid, IMAGINARY, vendor, cache)
        z = real + 1j * imag
        del real, imag
        if _fix_slice_chopping(z):
            notes.append("real/imaginary images alternate in sign between slices (FFT shift); "
                         "every second slice was negated")
        phase = np.angle(z)
        notes.append("phase and magnitude computed from real and imaginary images")
        magnitude = (_load_values(grid, MAGNITUDE, vendor, cache) if MAGNITUDE in grid.frames
                     else np.abs(z))
        del z
    else:
        phase, note = _read_phase(grid, vendor, label, cache, phase_unit)
        if note:
            notes.append(note)
        magnitude = _load_values(grid, MAGNITUDE, vendor, cache)
    phase, sign_note = to_qsmkit_phase_sign(wrap_phase(phase), main.manufacturer)
    if sign_note:
        notes.append(sign_note)
    phase = wrap_phase(phase)
    if float(magnitude.min()) < 0:
        raise InputError(
            f"{label}: magnitude images hold negative values ({float(magnitude.min()):.4g}); "
            "they are not magnitude (a field map or real part?)"
        )
    three_d = _is_3d(main)
    mag_o, affine = _orient(magnitude, grid, three_d)
    del magnitude
    phase_o, _ = _orient(phase, grid, three_d)
    del phase
    affine_2d = _affine_2d(grid)
    if three_d and not np.allclose(affine, affine_2d):
        notes.append("3D acquisition: array axes ordered closest to RAS (no resampling), as "
                     "dcm2niix does")
    b0 = _b0_from_header(main.header, b0_tesla, notes)
    metadata = _metadata(candidate, grid, affine_2d, affine)
    metadata[PHASE_SIGN_KEY] = QSMKIT_PHASE_SIGN  # the vendor sign is applied above
    reference = _reference(main.header)
    reference.update(_source_slices(grid))
    if len(series_list) > 1:
        notes.append(f"magnitude and phase read from {label}")
    return Acquisition(
        magnitude=mag_o.astype(np.float32),
        phase=phase_o.astype(np.float32),
        echo_times_s=grid.echo_times_s,
        b0_tesla=b0,
        affine=affine,
        manufacturer=main.manufacturer,
        series_description=main.description,
        notes=notes,
        metadata=metadata,
        dicom_reference=reference,
    )


def _b0_from_header(ds, b0_tesla, notes) -> float:
    if b0_tesla is not None:
        return float(b0_tesla)
    field = _float(_get(ds, "MagneticFieldStrength", None), None)
    if field is not None and field > 100:  # old headers in gauss
        notes.append(f"MagneticFieldStrength {field:g} read as gauss ({field / 1e4:g} T)")
        field = field / 1e4
    if field is None or field <= 0:
        frequency = _float(_get(ds, "ImagingFrequency", None), None)
        if frequency is None:
            shared = _item(ds, "SharedFunctionalGroupsSequence")
            modifier = _item(shared, "MRImagingModifierSequence") if shared is not None else None
            if modifier is not None:
                frequency = _float(_get(modifier, "TransmitterFrequency", None), None)
        if frequency is None or frequency <= 0:
            raise InputError(
                "the DICOM headers give no MagneticFieldStrength or ImagingFrequency; give the "
                "field strength with --b0 (tesla)"
            )
        field = frequency * 1e6 / GAMMA_BAR_HZ_PER_T
        notes.append(f"field strength {field:.4g} T computed from the imaging frequency "
                     f"{frequency:g} MHz")
    return float(field)


def _metadata(candidate: GreCandidate, grid: _Grid, affine_2d, affine) -> dict:
    main = candidate.series[0]
    ds = main.header
    meta = {
        "Modality": "MR",
        "MagneticFieldStrength": _float(_get(ds, "MagneticFieldStrength", None), None),
        "ImagingFrequency": _float(_get(ds, "ImagingFrequency", None), None),
        "Manufacturer": main.manufacturer,
        "ManufacturersModelName": str(_get(ds, "ManufacturerModelName", "") or ""),
        "SoftwareVersions": "\\".join(str(v) for v in _listify(_get(ds, "SoftwareVersions", ""))),
        "MRAcquisitionType": str(_get(ds, "MRAcquisitionType", "") or ""),
        "SeriesDescription": main.description,
        "ProtocolName": main.protocol_name,
        "SequenceName": main.sequence_name,
        "SeriesNumber": main.number,
        "SeriesNumbers": candidate.numbers,
        "EchoTimes": grid.echo_times_s.tolist(),
        "RepetitionTime": _seconds(_get(ds, "RepetitionTime", None)),
        "FlipAngle": _float(_get(ds, "FlipAngle", None), None),
        "SliceThickness": _float(_get(ds, "SliceThickness", None), None),
        "SpacingBetweenSlices": _float(_get(ds, "SpacingBetweenSlices", None), None),
        "PatientPosition": str(_get(ds, "PatientPosition", "") or ""),
        "ImageOrientationPatientDICOM": [round(float(v), 6) for v in grid.orientation],
    }
    meta.update(_phase_encoding(main, affine_2d, affine))
    return {k: v for k, v in meta.items() if v not in (None, "", [])}


def _listify(value):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value] if value not in (None, "") else []


def _seconds(value_ms):
    value = _float(value_ms, None)
    return None if value is None else value / 1000.0


def _reference(ds) -> dict:
    reference = {}
    for keyword in REFERENCE_KEYWORDS:
        value = _get(ds, keyword, None)
        if value is None or value == "":
            continue
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = [str(v) for v in value]
        elif isinstance(value, (int, float, str)):
            pass
        else:
            value = str(value)
        reference[keyword] = value
    return reference


def _source_slices(grid: _Grid) -> dict:
    """Where each source slice lies and which images made it, for derived series.

    ``SourceSlices``: one entry per slice (sorted along the normal) with its LPS position and
    the (SOPClassUID, SOPInstanceUID, frame number or None) of every image at it;
    ``SourceSliceDirection``: the unit LPS vector along which InstanceNumber increases;
    ``ImageOrientationPatient``: the images' (also for enhanced multi-frame files).
    """
    slices: list[dict] = [{"position": [float(v) for v in p], "images": []}
                          for p in grid.positions]
    for per_echo in grid.frames.values():
        for echo_frames in per_echo:
            for z, frame in enumerate(echo_frames):
                if frame.sop_instance_uid:
                    number = None if frame.frame_index is None else frame.frame_index + 1
                    slices[z]["images"].append(
                        (frame.sop_class_uid, frame.sop_instance_uid, number))
    normal = _normal(grid.orientation)
    first = next(iter(grid.frames.values()))[0]
    direction = normal
    if len(first) > 1 and first[-1].instance_number < first[0].instance_number:
        direction = -normal
    return {"SourceSlices": slices,
            "SourceSliceDirection": [float(v) for v in direction],
            "ImageOrientationPatient": [float(v) for v in grid.orientation]}

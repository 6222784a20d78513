"""Property tests: malformed headers, arrays and files end in InputError, never another
exception, and ``qsmkit import`` leaves no partial output behind."""

import functools
import json
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qsmkit.acquisition import Acquisition, phase_to_radians
from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.geometry import affine_from_geometry
from qsmkit.io.dicom import read_dicom
from qsmkit.io.dicom_export import write_gre_dicom
from qsmkit.io.load import load_acquisition

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SHAPE = (4, 3, 3)


def _outcome(call):
    """Run ``call``; return the Acquisition or None for InputError. Anything else fails."""
    try:
        result = call()
    except InputError as err:
        assert str(err).strip(), "an InputError needs a message"
        return None
    assert isinstance(result, Acquisition)
    return result


# ----------------------------------------------------------------------------------------
# Arrays and phase units

finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, np.pi, -np.pi, 4095.0, -4096.0, 3142.0, 1e9]),
)


@FUZZ
@given(values=st.lists(finite_or_not, min_size=1, max_size=30))
def test_phase_to_radians_never_crashes(values):
    try:
        radians, _ = phase_to_radians(np.asarray(values, dtype=np.float64))
    except InputError:
        return
    assert np.all(radians >= -np.pi) and np.all(radians < np.pi)


@FUZZ
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=5),
    echo_times=st.one_of(st.none(), st.lists(finite_or_not, min_size=0, max_size=4)),
    b0=st.one_of(st.none(), finite_or_not),
    fill=finite_or_not,
    phase_scale=st.sampled_from([1.0, 1000.0, 4096 / np.pi, 1e6]),
)
def test_acquisition_arrays_never_crash(shape, echo_times, b0, fill, phase_scale):
    rng = np.random.default_rng(0)
    magnitude = rng.uniform(0, 10, shape)
    phase = rng.uniform(-np.pi, np.pi, shape) * phase_scale
    if magnitude.size:
        magnitude.flat[0] = fill
    _outcome(lambda: Acquisition(magnitude, phase, echo_times, b0, np.eye(4)))


# ----------------------------------------------------------------------------------------
# NIfTI files and sidecars

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10_000), finite_or_not.filter(
        lambda v: np.isfinite(v)), st.text(max_size=5)),
    lambda children: st.lists(children, max_size=4),
    max_leaves=6,
)
sidecars = st.one_of(
    st.none(),
    st.just("{broken"),
    st.dictionaries(
        st.sampled_from(["EchoTime", "EchoTimes", "MagneticFieldStrength", "EchoTime1",
                         "EchoTime2", "Manufacturer", "Units"]),
        json_values, max_size=4),
)


@FUZZ
@given(
    mag_shape=st.lists(st.integers(1, 4), min_size=2, max_size=5),
    same_shape=st.booleans(),
    dtype=st.sampled_from([np.float32, np.int16, np.uint8, np.float64]),
    phase_kind=st.sampled_from(["rad", "siemens", "huge", "nan", "mrad"]),
    affine_kind=st.sampled_from(["good", "zero", "other"]),
    mag_sidecar=sidecars,
    phase_sidecar=sidecars,
    echo_times=st.one_of(st.none(), st.lists(finite_or_not, min_size=1, max_size=4)),
    b0=st.one_of(st.none(), st.sampled_from([3.0, 0.0, -1.0, 1e4])),
    truncate=st.one_of(st.none(), st.integers(0, 400)),
)
def test_nifti_loader_never_crashes(mag_shape, same_shape, dtype, phase_kind, affine_kind,
                                    mag_sidecar, phase_sidecar, echo_times, b0, truncate):
    rng = np.random.default_rng(1)
    mag = rng.uniform(0, 100, mag_shape)
    phase_shape = mag_shape if same_shape else [n + 1 for n in mag_shape]
    phase = rng.uniform(-np.pi, np.pi, phase_shape)
    phase = {"rad": phase, "siemens": np.round(phase * 4096 / np.pi), "huge": phase * 1e7,
             "nan": np.where(phase > 2, np.nan, phase), "mrad": np.round(phase * 1000)}[phase_kind]
    affine = {"good": np.diag([1.0, 1.0, 2.0, 1.0]), "zero": np.zeros((4, 4)),
              "other": np.diag([2.0, 1.0, 1.0, 1.0])}[affine_kind]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = []
        for name, data, meta, aff in (("mag", mag, mag_sidecar, np.diag([1.0, 1.0, 2.0, 1.0])),
                                      ("phase", phase, phase_sidecar, affine)):
            path = folder / f"{name}.nii.gz"
            try:
                nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), aff), str(path))
            except Exception:
                assume(False)
            if meta is not None:
                text = meta if isinstance(meta, str) else json.dumps(meta)
                (folder / f"{name}.json").write_text(text)
            paths.append(path)
        if truncate is not None:
            paths[1].write_bytes(paths[1].read_bytes()[:truncate])
        _outcome(lambda: load_acquisition(None, mag=paths[0], phase=paths[1],
                                          echo_times_s=echo_times, b0_tesla=b0))


# ----------------------------------------------------------------------------------------
# DICOM headers and files


VARIANTS = {
    "siemens": dict(manufacturer="SIEMENS"),
    "siemens_enhanced": dict(manufacturer="SIEMENS", enhanced=True),
    "philips": dict(manufacturer="PHILIPS"),
    "ge_real_imaginary": dict(manufacturer="GE", real_imaginary=True),
}


@functools.cache
def _dicom_files(variant: str = "siemens"):
    """Bytes of a small valid GRE series written as ``variant``, by relative path."""
    rng = np.random.default_rng(2)
    acq = Acquisition(rng.uniform(1, 10, SHAPE + (2,)), rng.uniform(-3, 3, SHAPE + (2,)),
                      [0.005, 0.01], 3.0, affine_from_geometry(SHAPE, (1, 1, 2), (0.1, 0, 1)))
    with tempfile.TemporaryDirectory() as folder:
        write_gre_dicom(acq, folder, **VARIANTS[variant])
        root = Path(folder)
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


KEYWORDS = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "EchoTime",
    "EchoNumbers", "Rows", "Columns", "BitsStored", "BitsAllocated", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "ImageType", "SeriesInstanceUID", "SeriesNumber",
    "MagneticFieldStrength", "ImagingFrequency", "InstanceNumber", "PixelData", "Manufacturer",
    "MRAcquisitionType", "StudyInstanceUID", "Modality", "SamplesPerPixel",
]
BAD_TEXT = ["", "abc", "-1", "0", "1e308", "nan", "inf", "1\\2", "1\\2\\3\\4\\5\\6\\7",
            "0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "-4", "65536", "3.5"]

mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(KEYWORDS)),
    st.tuples(st.just("set"), st.sampled_from(KEYWORDS), st.sampled_from(BAD_TEXT)),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("duplicate"), st.booleans()),
    st.tuples(st.just("drop"), st.booleans()),
)


def _mutate(path: Path, op) -> None:
    kind = op[0]
    data = path.read_bytes()
    if not data:
        return
    if kind == "truncate":
        path.write_bytes(data[: int(len(data) * op[1])])
    elif kind == "flip":
        index = op[1] % len(data)
        path.write_bytes(data[:index] + bytes([data[index] ^ op[2]]) + data[index + 1:])
    elif kind == "duplicate":
        (path.parent / ("copy_" + path.name)).write_bytes(data)
    elif kind == "drop":
        path.unlink()
    else:
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # already damaged by an earlier mutation
            return
        keyword = op[1]
        if keyword not in ds:
            return
        if kind == "delete":
            del ds[keyword]
            ds.save_as(path)
            return
        tag = pydicom.datadict.tag_for_keyword(keyword)
        raw = ds.get_item(tag)
        vr = pydicom.datadict.dictionary_VR(tag)
        if vr in ("US", "SS", "UL", "SL"):
            try:
                number = int(float(op[2].split("\\")[0]))
            except (ValueError, OverflowError):
                number = 0
            fmt = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}[vr]
            limits = {"US": (0, 65535), "SS": (-32768, 32767), "UL": (0, 2**32 - 1),
                      "SL": (-(2**31), 2**31 - 1)}[vr]
            value = struct.pack(fmt, min(max(number, limits[0]), limits[1]))
        else:
            value = op[2].encode()
            value += b" " * (len(value) % 2)
        if vr in ("OB", "OW", "UN", "SQ", "UT", "UC", "UR", "OF", "OD", "OL"):
            return  # 4-byte length fields: leave them to the byte flips
        if not hasattr(raw, "value_tell"):
            return  # an empty value pydicom already converted: position unknown
        # Splice the new value into the file bytes (explicit VR little endian, 2-byte
        # length), so that any text - valid for the VR or not - reaches the file.
        start = raw.value_tell
        path.write_bytes(data[: start - 2] + struct.pack("<H", len(value)) + value
                         + data[start + raw.length:])


def _materialise(folder: Path, mutations, targets, variant="siemens"):
    dicom_files = _dicom_files(variant)
    names = sorted(dicom_files)
    for name, data in dicom_files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for op, target in zip(mutations, targets, strict=False):
        path = folder / names[target % len(names)]
        if path.exists():
            _mutate(path, op)


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=4),
       targets=st.lists(st.integers(0, 10**4), min_size=4, max_size=4),
       series=st.one_of(st.none(), st.integers(0, 7)),
       variant=st.sampled_from(sorted(VARIANTS)))
def test_dicom_reader_never_crashes(mutations, targets, series, variant):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        _materialise(folder, mutations, targets, variant)
        acq = _outcome(lambda: read_dicom(folder, series=series))
        if acq is not None:
            assert np.all(np.isfinite(acq.phase)) and acq.phase.max() < np.pi


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=3),
       targets=st.lists(st.integers(0, 10**4), min_size=3, max_size=3))
def test_import_command_leaves_no_partial_output(mutations, targets):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        _materialise(folder / "in", mutations, targets)
        out = folder / "out"
        code = main(["import", str(folder / "in"), "-o", str(out)])
        assert code in (0, 2)
        leftovers = [p for p in folder.iterdir() if p.name.startswith(".out.partial")]
        assert not leftovers
        if code == 2:
            assert not out.exists()
        else:
            assert (out / "phase.nii.gz").exists() and (out / "acquisition.json").exists()


@FUZZ
@given(blobs=st.lists(st.tuples(st.binary(max_size=400), st.booleans(),
                                st.sampled_from(["", ".dcm", ".gz", ".IMA"])),
                      min_size=1, max_size=4))
def test_random_files_never_crash(blobs):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for i, (blob, preamble, suffix) in enumerate(blobs):
            data = (b"\0" * 128 + b"DICM" + blob) if preamble else blob
            (folder / f"f{i}{suffix}").write_bytes(data)
        assert _outcome(lambda: read_dicom(folder)) is None

"""DICOM export of derived maps (chi, R2*) as a PACS and DICOM tools accept them (issue 14).

Sources: an oblique 3D Siemens-like series written by :func:`write_gre_dicom` with the
ImageOrientationPatient a scanner writes (rows towards the patient's left), the real Philips
3D series in ../shared/data/dicom (skipped when absent), and NIfTI input (no source).
External tools: ``dciodvfy`` (dicom3tools), ``dcm2pnm`` (DCMTK) and ``dcm2niix``; a test that
needs one skips when it is absent, except under CI (environment variable ``CI`` set), where
it fails so that CI cannot pass without running them (``.ci/run`` installs them).
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from qsmkit.acquisition import Acquisition
from qsmkit.errors import InputError
from qsmkit.geometry import affine_from_geometry
from qsmkit.io.dicom import read_dicom, read_series_volume, scan_dicom_folder
from qsmkit.io.dicom_export import export_dicom_series, storage_step
from qsmkit.io.gre_dicom import write_gre_dicom

nib = pytest.importorskip("nibabel")

SHAPE = (32, 28, 8)
VOXEL = (1.0, 1.25, 2.0)
TES = (0.005, 0.010)
B0_DIR = (0.12, -0.25, 0.96)  # oblique: about 16 degrees from the slice axis
DATA = Path(os.environ.get("QSMKIT_SHARED_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data")) / "dicom"
PHILIPS = DATA / "philips_classic" / "In"


def _tool(name: str) -> str:
    """Path of an external tool; skip without it, fail without it under CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI (.ci/run installs it) but is not on PATH")
        pytest.skip(f"{name} is not installed")
    return path


def _scanner_orientation(affine) -> list[float]:
    """ImageOrientationPatient a scanner writes for this grid: rows to L, columns to P."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    u = lps / np.linalg.norm(lps, axis=0)
    row = u[:, 0] * np.sign(u[0, 0])
    col = u[:, 1] * np.sign(u[1, 1])
    return [float(v) for v in np.concatenate([row, col])]


def _head(shape):
    """Magnitude with an off-centre blob and a left-right ramp (mirroring shows)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (40 + 60 * np.exp(-((x - 0.35) ** 2 + (y + 0.2) ** 2) / 0.15) + 20 * x
            + 5 * z).astype(np.float64)


@pytest.fixture(scope="module")
def siemens(tmp_path_factory):
    """An oblique 3D Siemens-like source series, read back as qsmkit reads it."""
    folder = tmp_path_factory.mktemp("siemens")
    affine = affine_from_geometry(SHAPE, VOXEL, B0_DIR)
    magnitude = _head(SHAPE)[..., None] * np.exp(-np.asarray(TES) / 0.04)
    phase = np.random.default_rng(1).uniform(-np.pi, np.pi, SHAPE + (len(TES),))
    acq = Acquisition(magnitude, phase, TES, 3.0, affine, series_description="gre_qsm")
    orientation = _scanner_orientation(affine)
    write_gre_dicom(acq, folder / "source", image_orientation=orientation)
    return folder, read_dicom(folder / "source"), orientation


@pytest.fixture(scope="module")
def philips():
    if not PHILIPS.is_dir():
        pytest.skip(f"vendor samples not found in {PHILIPS}")
    return read_dicom(PHILIPS)


def _chi_from(acq):
    """A chi-like map that follows the magnitude (so anatomy and orientation show)."""
    magnitude = acq.magnitude[..., 0].astype(np.float64)
    mask = magnitude > 0.15 * magnitude.max()
    chi = np.where(mask, 0.25 * (magnitude / magnitude.max()) - 0.08, 0.0)
    return chi, mask


def _linear_chi(acq):
    """A map linear in the echo-1 magnitude: its images must correlate with the source's."""
    magnitude = acq.magnitude[..., 0].astype(np.float64)
    return 0.3 * magnitude / magnitude.max(), None


def _source_files(folder: Path, kind: str = "M") -> dict[int, pydicom.Dataset]:
    """Echo-1 magnitude images of the source by InstanceNumber."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        ds = pydicom.dcmread(path)
        if kind in list(ds.ImageType) and int(ds.get("EchoNumbers", 1)) == 1:
            out[int(ds.InstanceNumber)] = ds
    return out


def _canonical(data, affine):
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(image.dataobj), image.affine


def _rwv_slope(ds) -> float:
    return float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope)


# ----------------------------------------------------------------------------------------
# Values, window, attributes


@pytest.mark.parametrize("geometry", ["axial", "oblique", "oblique_las"])
def test_export_round_trip_in_real_world_units(tmp_path, geometry):
    rng = np.random.default_rng(3)
    shape = (10, 8, 6)
    if geometry == "axial":
        affine = affine_from_geometry(shape, VOXEL)
    else:
        affine = affine_from_geometry(shape, VOXEL, B0_DIR)
    if geometry == "oblique_las":  # negative determinant, as dcm2niix writes 2D data
        affine[:, 0] *= -1
    chi = rng.normal(0, 0.08, shape)
    chi[0, 0, 0] = 0.61
    files = export_dicom_series(chi, affine, tmp_path / "chi", unit="ppm", kind="chi")
    assert len(files) == shape[2]
    series = scan_dicom_folder(tmp_path / "chi")
    stored, _, back_affine = read_series_volume(series[0], "magnitude")
    ds = pydicom.dcmread(files[0])
    step = _rwv_slope(ds)
    assert step == pytest.approx(1e-3)  # ppb
    values, back_affine = _canonical(stored[..., 0] * step, back_affine)
    expected, affine = _canonical(chi, affine)
    np.testing.assert_allclose(back_affine, affine, atol=1e-3)
    assert np.abs(values - expected).max() <= step / 2 + 1e-9
    # MR Image IOD: no Modality LUT, signed integers, units through the RWV mapping
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        assert keyword not in ds
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16
    assert list(ds.ImageType)[:3] == ["DERIVED", "SECONDARY", "OTHER"]
    assert "CHI" not in list(ds.ImageType)
    rwv = ds.RealWorldValueMappingSequence[0]
    units = rwv.MeasurementUnitsCodeSequence[0]
    assert (units.CodeValue, units.CodingSchemeDesignator) == ("[ppm]", "UCUM")
    assert rwv.RealWorldValueIntercept == 0
    assert float(ds.WindowWidth) >= 1


def test_storage_steps_by_unit():
    assert storage_step(np.array([0.61, -0.4]), "ppm") == pytest.approx(1e-3)
    assert storage_step(np.array([0.0, 250.0]), "1/s") == pytest.approx(0.1)
    # values that would overflow int16 at the natural step get a coarser 1-2-5 step
    assert storage_step(np.array([50.0]), "ppm") == pytest.approx(2e-3)
    assert storage_step(np.array([5000.0]), "1/s") == pytest.approx(0.2)


def test_window_from_the_mask_shows_anatomy(tmp_path):
    from pydicom.pixels import apply_voi_lut

    shape = (24, 24, 4)
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, shape[0])[:, None, None] * np.ones(shape)
    mask = np.zeros(shape, bool)
    mask[4:20, 4:20] = True
    chi = np.where(mask, 0.05 * x + 0.005 * rng.standard_normal(shape), 0.0)
    chi[5, 5, 1] = 3.0  # one outlier must not set the window
    files = export_dicom_series(chi, np.eye(4), tmp_path / "chi", mask=mask)
    ds = pydicom.dcmread(files[1])
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    inside = chi[mask] / 1e-3
    assert abs(center - np.median(inside)) < 5
    assert 60 < width < 120  # about the 2-98 percentile span (0.1 ppm = 100 ppb)
    shown = apply_voi_lut(ds.pixel_array, ds).astype(float)
    # the window spreads the tissue over the display range (output range of int16 here)
    assert shown.std() > 0.1 * (shown.max() - shown.min()) > 0


def test_patient_override_and_bad_input(tmp_path):
    files = export_dicom_series(np.zeros((6, 6, 3)), np.eye(4), tmp_path / "a",
                                patient={"PatientName": "Doe^Jane", "PatientID": "QSM-0042"})
    ds = pydicom.dcmread(files[0])
    assert (str(ds.PatientName), ds.PatientID) == ("Doe^Jane", "QSM-0042")
    with pytest.raises(InputError, match="patient or study"):
        export_dicom_series(np.zeros((6, 6, 3)), np.eye(4), tmp_path / "b",
                            patient={"PixelData": "x"})
    bad = np.zeros((6, 6, 3))
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        export_dicom_series(bad, np.eye(4), tmp_path / "c")
    with pytest.raises(InputError, match="3D"):
        export_dicom_series(np.zeros((4, 4)), np.eye(4), tmp_path / "c")
    with pytest.raises(InputError, match="mask shape"):
        export_dicom_series(np.zeros((6, 6, 3)), np.eye(4), tmp_path / "c",
                            mask=np.ones((6, 6, 2), bool))
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(InputError, match="perpendicular"):
        export_dicom_series(np.zeros((6, 6, 3)), sheared, tmp_path / "c")
    with pytest.raises(InputError, match="already holds"):
        export_dicom_series(np.zeros((6, 6, 3)), np.eye(4), tmp_path / "a")


# ----------------------------------------------------------------------------------------
# Orientation, slice order, references, series


def _check_like_source(files, source_by_instance, orientation):
    """Exported images lie where the source images with the same InstanceNumber lie."""
    correlations = []
    for path in files:
        ds = pydicom.dcmread(path)
        src = source_by_instance[int(ds.InstanceNumber)]
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   orientation, atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-3)
        assert (ds.Rows, ds.Columns) == (src.Rows, src.Columns)
        a = ds.pixel_array.astype(float).ravel()
        b = src.pixel_array.astype(float).ravel()
        if a.std() > 0 and b.std() > 0:
            correlations.append(float(np.corrcoef(a, b)[0, 1]))
        referenced = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence}
        assert src.SOPInstanceUID in referenced
    # the map follows the magnitude pixel by pixel: same rows, columns and slices
    assert min(correlations) > 0.99


def test_oblique_3d_siemens_source_orientation_and_references(siemens, tmp_path):
    folder, acq, orientation = siemens
    chi, mask = _linear_chi(acq)
    files = export_dicom_series(chi, acq.affine, tmp_path / "chi", mask=mask,
                                source_datasets=acq.dicom_reference)
    r2 = export_dicom_series(np.full(acq.shape, 20.0), acq.affine, tmp_path / "r2star",
                             source_datasets=acq.dicom_reference, unit="1/s", kind="r2star")
    source = _source_files(folder / "source")
    assert len(files) == len(source) == SHAPE[2]
    # rows towards the patient's left, as the scanner wrote them (issue 14: mirrored)
    assert orientation[0] > 0.9
    _check_like_source(files, source, orientation)
    first, r2_first = pydicom.dcmread(files[0]), pydicom.dcmread(r2[0])
    n_echoes = len(TES)
    assert len(first.SourceImageSequence) == 2 * n_echoes  # magnitude and phase, each echo
    assert first.StudyInstanceUID == source[1].StudyInstanceUID
    assert first.FrameOfReferenceUID == source[1].FrameOfReferenceUID
    assert str(first.PatientName) == str(source[1].PatientName)
    assert first.SeriesNumber != r2_first.SeriesNumber
    assert first.SeriesDescription != r2_first.SeriesDescription
    assert first.SeriesInstanceUID != r2_first.SeriesInstanceUID != source[1].SeriesInstanceUID
    for keyword in ("ScanningSequence", "SequenceVariant", "MRAcquisitionType",
                    "RepetitionTime", "PatientPosition", "MagneticFieldStrength"):
        assert first.get(keyword) == source[1].get(keyword), keyword


def test_descending_source_slice_order_is_kept(siemens, tmp_path):
    folder, acq, orientation = siemens
    copy = tmp_path / "source"
    shutil.copytree(folder / "source", copy)
    n = SHAPE[2]
    for path in copy.rglob("*.dcm"):  # number slices head to feet instead
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = n + 1 - int(ds.InstanceNumber)
        ds.save_as(path)
    reread = read_dicom(copy)
    chi, mask = _linear_chi(reread)
    files = export_dicom_series(chi, reread.affine, tmp_path / "chi", mask=mask,
                                source_datasets=reread.dicom_reference)
    _check_like_source(files, _source_files(copy), orientation)


def test_enhanced_multiframe_source_frames_are_referenced(tmp_path):
    affine = affine_from_geometry(SHAPE, VOXEL, B0_DIR)
    magnitude = _head(SHAPE)[..., None] * np.exp(-np.asarray(TES) / 0.04)
    acq = Acquisition(magnitude, np.zeros_like(magnitude), TES, 3.0, affine)
    write_gre_dicom(acq, tmp_path / "source", enhanced=True)
    source = read_dicom(tmp_path / "source")
    files = export_dicom_series(_linear_chi(source)[0], source.affine, tmp_path / "chi",
                                source_datasets=source.dicom_reference)
    enhanced = pydicom.dcmread(next((tmp_path / "source").rglob("M_*.dcm")))
    plane = enhanced.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    for path in files:
        ds = pydicom.dcmread(path)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   [float(v) for v in plane.ImageOrientationPatient], atol=1e-6)
        frames = [int(item.ReferencedFrameNumber) for item in ds.SourceImageSequence
                  if item.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID]
        assert len(frames) == len(TES)  # this slice's frame at every echo
        for number in frames:
            position = enhanced.PerFrameFunctionalGroupsSequence[number - 1] \
                .PlanePositionSequence[0].ImagePositionPatient
            np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                       [float(v) for v in position], atol=1e-3)


def test_imported_source_keeps_orientation_and_needs_a_patient_for_its_study(siemens,
                                                                           tmp_path):
    """`qsmkit import` keeps no patient identifiers: the orientation travels, the study only
    with a PatientID (a PACS refuses a study whose series disagree on the patient)."""
    from qsmkit.io.load import load_acquisition, save_acquisition

    folder, acq, orientation = siemens
    save_acquisition(acq, tmp_path / "imported")
    imported = load_acquisition([tmp_path / "imported"])
    assert "PatientID" not in imported.dicom_reference
    chi = _linear_chi(imported)[0]
    anonymous = export_dicom_series(chi, imported.affine, tmp_path / "a",
                                    source_datasets=imported.dicom_reference)
    named = export_dicom_series(chi, imported.affine, tmp_path / "b",
                                source_datasets=imported.dicom_reference,
                                patient={"PatientID": "QSM-9"})
    source = _source_files(folder / "source")
    first = pydicom.dcmread(named[0])
    assert first.StudyInstanceUID == source[1].StudyInstanceUID
    assert pydicom.dcmread(anonymous[0]).StudyInstanceUID != source[1].StudyInstanceUID
    _check_like_source_geometry(named, source, orientation)


def _check_like_source_geometry(files, source_by_instance, orientation):
    for path in files:
        ds = pydicom.dcmread(path)
        src = source_by_instance[int(ds.InstanceNumber)]
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient],
                                   orientation, atol=1e-6)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-3)


def test_real_philips_3d_source_is_not_mirrored(philips, tmp_path):
    chi, mask = _linear_chi(philips)
    files = export_dicom_series(chi, philips.affine, tmp_path / "chi", mask=mask,
                                source_datasets=philips.dicom_reference)
    source = {}
    import gzip

    for path in sorted((PHILIPS / "cl").glob("2001_*")):
        if path.is_file():
            with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as handle:
                ds = pydicom.dcmread(handle)
            if "M" in list(ds.ImageType) and float(ds.EchoTime) < 3:
                source[int(ds.InstanceNumber)] = ds
    numbers = sorted(source)
    # Philips numbers images through echoes and types; map export slice k to the k-th image
    by_order = {k + 1: source[number] for k, number in enumerate(numbers)}
    orientation = [float(v) for v in by_order[1].ImageOrientationPatient]
    assert orientation[0] > 0.99  # [0.997, 0.039, 0.061], not [-0.997, ...]
    _check_like_source(files, by_order, orientation)


def test_nifti_input_gets_a_display_orientation(tmp_path):
    affine = affine_from_geometry(SHAPE, VOXEL, B0_DIR)  # RAS-like, positive determinant
    files = export_dicom_series(_head(SHAPE) / 1000, affine, tmp_path / "chi")
    ds = pydicom.dcmread(files[0])
    row, col = np.array(ds.ImageOrientationPatient[:3]), np.array(ds.ImageOrientationPatient[3:])
    assert row[0] > 0.9 and col[1] > 0.9  # axial: rows to the left, columns to posterior
    assert ds.SeriesNumber == 9001


def test_nifti_sidecar_orientation_and_body_part_are_used(siemens, tmp_path):
    """dcm2niix sidecars carry ImageOrientationPatientDICOM and BodyPartExamined."""
    _, acq, _ = siemens
    flipped = [-v for v in _scanner_orientation(acq.affine)]  # rows to R, columns to A
    metadata = {"ImageOrientationPatientDICOM": flipped, "BodyPartExamined": "BRAIN",
                "RepetitionTime": 0.025}
    files = export_dicom_series(_linear_chi(acq)[0], acq.affine, tmp_path / "chi",
                                metadata=metadata)
    ds = pydicom.dcmread(files[0])
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], flipped,
                               atol=1e-6)
    assert ds.BodyPartExamined == "BRAIN" and "Laterality" not in ds
    assert float(ds.RepetitionTime) == pytest.approx(25.0)  # s -> ms


# ----------------------------------------------------------------------------------------
# External tools: dciodvfy, dcm2pnm, dcm2niix


def _dciodvfy_errors(files) -> list[str]:
    tool = _tool("dciodvfy")
    errors = []
    for path in files:
        run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        errors += [f"{Path(path).name}: {line}" for line in (run.stdout + run.stderr).splitlines()
                   if line.startswith("Error")]
    return errors


def _export_chi_and_r2(acq, folder, *, source=True, patient=None):
    chi, mask = _chi_from(acq)
    reference = acq.dicom_reference if source else None
    metadata = None if source else {"RepetitionTime": 0.03, "FlipAngle": 15,
                                    "MRAcquisitionType": "3D", "MagneticFieldStrength": 3}
    common = dict(source_datasets=reference, mask=mask, patient=patient, metadata=metadata)
    files = export_dicom_series(chi, acq.affine, folder / "chi", **common)
    files += export_dicom_series(np.where(mask, 30 + 200 * np.abs(chi), 0), acq.affine,
                                 folder / "r2star", unit="1/s", kind="r2star", **common)
    return files


def test_dciodvfy_no_errors_from_siemens_source_and_nifti(siemens, tmp_path):
    _, acq, _ = siemens
    files = _export_chi_and_r2(acq, tmp_path / "dicom")
    files += _export_chi_and_r2(acq, tmp_path / "nifti", source=False,
                                patient={"PatientName": "Doe^Jane", "PatientID": "QSM-1"})
    assert _dciodvfy_errors(files) == []


def test_dciodvfy_no_errors_from_real_philips_source(philips, tmp_path):
    files = _export_chi_and_r2(philips, tmp_path)
    assert _dciodvfy_errors(files) == []


def _png(tool, dicom, png, *options):
    subprocess.run([tool, *options, "--write-png", str(dicom), str(png)], check=True,
                   capture_output=True, timeout=60)
    import matplotlib.image

    return np.asarray(matplotlib.image.imread(str(png)), dtype=float)


def test_dcm2pnm_renders_anatomy_in_source_orientation(siemens, tmp_path):
    tool = _tool("dcm2pnm")
    folder, acq, _ = siemens
    chi, mask = _chi_from(acq)
    files = export_dicom_series(chi, acq.affine, tmp_path / "chi", mask=mask,
                                source_datasets=acq.dicom_reference)
    k = len(files) // 2
    shown = _png(tool, files[k], tmp_path / "chi.png", "+Wi", "1")  # the file's window
    instance = int(pydicom.dcmread(files[k]).InstanceNumber)
    source_path = _source_files(folder / "source")[instance].filename
    reference = _png(tool, source_path, tmp_path / "mag.png", "+Wm")  # min-max window
    assert shown.shape == reference.shape
    assert shown.std() > 0.1 * (shown.max() or 1)  # not flat grey
    assert np.corrcoef(shown.ravel(), reference.ravel())[0, 1] > 0.9


def test_dcm2niix_round_trip_is_exact(siemens, tmp_path):
    tool = _tool("dcm2niix")
    _, acq, _ = siemens
    chi, mask = _chi_from(acq)
    files = export_dicom_series(chi, acq.affine, tmp_path / "chi", mask=mask,
                                source_datasets=acq.dicom_reference)
    out = tmp_path / "nii"
    out.mkdir()
    subprocess.run([tool, "-z", "n", "-f", "chi", "-o", str(out), str(tmp_path / "chi")],
                   check=True, capture_output=True, timeout=120)
    image = nib.load(str(out / "chi.nii"))
    step = _rwv_slope(pydicom.dcmread(files[0]))
    values, affine = _canonical(np.asarray(image.dataobj, dtype=float) * step, image.affine)
    expected, expected_affine = _canonical(chi, acq.affine)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-3)
    assert np.abs(values - expected).max() <= step / 2 + 1e-9


# ----------------------------------------------------------------------------------------
# qsmkit run --dicom-out from NIfTI input


def _nifti_acquisition(folder: Path) -> None:
    """A sphere with a smooth field and a local bump, as mag/phase NIfTI with sidecars."""
    from qsmkit.io.load import save_acquisition

    shape, tes = (24, 24, 12), np.array([0.004, 0.008, 0.012])
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = x**2 + y**2 + z**2 < 0.8
    field_hz = 40 * x + 20 * y + 8 * np.exp(-((x - 0.3) ** 2 + y**2 + z**2) / 0.05)
    rng = np.random.default_rng(0)
    noise = np.where(inside[..., None], 0.5, rng.uniform(-np.pi, np.pi, shape + (3,)))
    phase = np.angle(np.exp(1j * (2 * np.pi * field_hz[..., None] * tes + noise)))
    magnitude = np.where(inside, 100.0, 2.0)[..., None] * np.exp(-tes / 0.04)
    affine = affine_from_geometry(shape, (2.0, 2.0, 2.0), (0.1, 0.2, 0.97))
    save_acquisition(Acquisition(magnitude, phase, tes, 3.0, affine), folder)


def test_run_dicom_out_from_nifti_with_patient_options(tmp_path):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import load_nifti

    _nifti_acquisition(tmp_path / "nifti")
    inputs = ["--mag", str(tmp_path / "nifti" / "mag.nii.gz"),
              "--phase", str(tmp_path / "nifti" / "phase.nii.gz")]
    # the patient options only make sense with --dicom-out
    assert main(["run", *inputs, "-o", str(tmp_path / "refused"), "--patient-id", "X"]) == 2
    out = tmp_path / "out"
    assert main(["run", *inputs, "-o", str(out), "--preset", "fast", "--no-report",
                 "--dicom-out", "--patient-name", "Doe^Jane", "--patient-id", "QSM-7"]) == 0
    chi, affine, _ = load_nifti(out / "chi.nii.gz")
    chi_files = sorted((out / "dicom" / "chi").glob("*.dcm"))
    r2_files = sorted((out / "dicom" / "r2star").glob("*.dcm"))
    assert len(chi_files) == len(r2_files) == chi.shape[2]
    a, b = pydicom.dcmread(chi_files[0]), pydicom.dcmread(r2_files[0])
    assert (str(a.PatientName), a.PatientID) == ("Doe^Jane", "QSM-7")
    assert (int(a.SeriesNumber), int(b.SeriesNumber)) == (9001, 9002)
    assert a.SeriesDescription != b.SeriesDescription
    assert a.StudyInstanceUID == b.StudyInstanceUID
    series = scan_dicom_folder(out / "dicom" / "chi")
    stored, _, back_affine = read_series_volume(series[0], "magnitude")
    values, back_affine = _canonical(stored[..., 0] * _rwv_slope(a), back_affine)
    expected, affine = _canonical(chi, affine)
    np.testing.assert_allclose(back_affine, affine, atol=1e-3)
    assert np.abs(values - expected).max() <= 0.5e-3 + 1e-6
    if shutil.which("dciodvfy") or os.environ.get("CI"):
        assert _dciodvfy_errors(chi_files + r2_files) == []

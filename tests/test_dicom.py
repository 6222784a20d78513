"""DICOM reading and writing on synthetic vendor-like series (see test_vendor_data for real files).

Round trips write an Acquisition with :func:`write_gre_dicom` as Siemens (classic and enhanced,
phase or real/imaginary), Philips or GE would, read it back with :func:`read_dicom`, and
compare within the quantisation of each encoding: magnitude within half a stored step
(max/4095/2), phase within half a step (pi/4096 for 12-bit, 0.5 mrad for GE).
"""

import gzip
import shutil

import numpy as np
import pydicom
import pytest

from qsmkit.acquisition import Acquisition
from qsmkit.errors import InputError
from qsmkit.geometry import affine_from_geometry
from qsmkit.io.dicom import (
    _fix_slice_chopping,
    read_dicom,
    reorient_closest_canonical,
)
from qsmkit.io.gre_dicom import write_gre_dicom
from qsmkit.units import wrap_phase

SHAPE = (10, 8, 6)
VOXEL = (1.0, 1.25, 2.0)
TES = (0.004, 0.009, 0.014)


def _affine(name):
    if name == "axial":
        return affine_from_geometry(SHAPE, VOXEL)
    if name == "oblique":
        return affine_from_geometry(SHAPE, VOXEL, (0.25, -0.3, 0.92))
    if name == "oblique_las":  # negative determinant, as dcm2niix writes 2D acquisitions
        affine = affine_from_geometry(SHAPE, VOXEL, (0.1, 0.2, 0.97))
        affine[:, 0] *= -1
        return affine
    raise ValueError(name)


def _acquisition(affine, seed=0, n_echoes=3):
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    field_hz = 40 * x + 25 * y * z + 10 * rng.standard_normal(SHAPE)
    tes = np.asarray(TES[:n_echoes])
    magnitude = (60 + 40 * np.exp(-(x**2 + y**2))[..., None]) * np.exp(-tes / 0.03)
    magnitude = magnitude * (1 + 0.05 * rng.standard_normal(SHAPE + (n_echoes,)))
    phase = wrap_phase(0.7 + 2 * np.pi * field_hz[..., None] * tes)
    return Acquisition(magnitude, phase, tes, 3.0, affine, series_description="gre_qsm")


def _phase_error(a, b):
    return float(np.abs(wrap_phase(a.astype(np.float64) - b)).max())


VENDORS = [
    ("SIEMENS", {}, np.pi / 4096),
    ("SIEMENS", {"enhanced": True}, np.pi / 4096),
    ("SIEMENS", {"real_imaginary": True}, 4e-3),
    ("PHILIPS", {}, np.pi / 4096),
    ("GE", {}, 0.5e-3),
    ("GE", {"real_imaginary": True}, 1e-4),
]


@pytest.mark.parametrize("geometry", ["axial", "oblique", "oblique_las"])
@pytest.mark.parametrize(("vendor", "options", "phase_tol"), VENDORS)
def test_round_trip_vendor(tmp_path, geometry, vendor, options, phase_tol):
    acq = _acquisition(_affine(geometry))
    write_gre_dicom(acq, tmp_path, manufacturer=vendor, **options)
    back = read_dicom(tmp_path)
    assert back.shape == acq.shape and back.n_echoes == acq.n_echoes
    np.testing.assert_allclose(back.affine, acq.affine, atol=1e-3)
    np.testing.assert_allclose(back.echo_times_s, acq.echo_times_s, rtol=1e-9)
    assert back.b0_tesla == pytest.approx(3.0)
    assert np.all(back.phase >= -np.pi) and np.all(back.phase < np.pi)
    assert _phase_error(back.phase, acq.phase) <= phase_tol + 1e-5
    if options.get("real_imaginary"):
        # magnitude computed as |real + i imag|: within one step of the 12-bit parts
        assert np.abs(back.magnitude - acq.magnitude).max() <= acq.magnitude.max() / 2047
    else:
        step = float(acq.magnitude.max()) / 4095
        assert np.abs(back.magnitude - acq.magnitude).max() <= step / 2 + 1e-3
    np.testing.assert_allclose(back.b0_dir, acq.b0_dir, atol=1e-6)
    text = " ".join(back.notes)
    if vendor == "GE":
        assert "negated" in text
    if vendor == "PHILIPS":
        assert "2005,100E" in text


def test_non_canonical_positive_affine_reads_back_reoriented(tmp_path):
    # An LPS-like grid with positive determinant cannot be stored as DICOM slices that read
    # back in the same array order; the writer stores it in the closest RAS order instead.
    affine = np.diag([-1.0, -1.25, 2.0, 1.0])
    acq = _acquisition(affine)
    write_gre_dicom(acq, tmp_path)
    back = read_dicom(tmp_path)
    expected_mag, expected_affine = reorient_closest_canonical(acq.magnitude, acq.affine)
    expected_phase, _ = reorient_closest_canonical(acq.phase, acq.affine)
    np.testing.assert_allclose(back.affine, expected_affine, atol=1e-3)
    assert _phase_error(back.phase, expected_phase) <= np.pi / 4096 + 1e-5
    # same world position of voxel (0, 0, 0) of the read array
    corner = np.array([SHAPE[0] - 1, SHAPE[1] - 1, 0, 1.0])
    np.testing.assert_allclose(back.affine[:, 3], affine @ corner, atol=1e-3)


def test_any_file_names_order_subfolders_and_gzip(tmp_path):
    acq = _acquisition(_affine("oblique"))
    write_gre_dicom(acq, tmp_path / "written")
    files = sorted((tmp_path / "written").rglob("*.dcm"))
    rng = np.random.default_rng(1)
    scrambled = tmp_path / "scrambled"
    for i, index in enumerate(rng.permutation(len(files))):
        target = scrambled / f"d{i % 3}" / f"x{rng.integers(1 << 30)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if i % 4 == 0:
            with gzip.open(str(target) + ".dcm.gz", "wb") as handle:
                handle.write(files[index].read_bytes())
        else:
            shutil.copy(files[index], target)
    (scrambled / "README.txt").write_text("not DICOM")
    (scrambled / "notes").write_text("also not DICOM, no extension")
    back = read_dicom(scrambled)
    reference = read_dicom(tmp_path / "written")
    np.testing.assert_array_equal(back.phase, reference.phase)
    np.testing.assert_array_equal(back.magnitude, reference.magnitude)


def test_siemens_instance_numbers_repeat_across_echoes(tmp_path):
    write_gre_dicom(_acquisition(_affine("axial")), tmp_path)
    numbers = {}
    for path in (tmp_path / "5_magnitude").glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        numbers.setdefault(int(ds.InstanceNumber), set()).add(float(ds.EchoTime))
    assert all(len(tes) == 3 for tes in numbers.values())  # same InstanceNumber, 3 echoes
    assert read_dicom(tmp_path).n_echoes == 3


def test_several_series_listed_and_selected(tmp_path):
    first = _acquisition(_affine("axial"), seed=1)
    second = _acquisition(_affine("oblique"), seed=2, n_echoes=2)
    write_gre_dicom(first, tmp_path, series_number=5)
    write_gre_dicom(second, tmp_path, series_number=7)
    with pytest.raises(InputError, match=r"--series") as err:
        read_dicom(tmp_path)
    assert "series 5" in str(err.value) and "series 7" in str(err.value)
    picked = read_dicom(tmp_path, series=7)
    assert picked.n_echoes == 2
    np.testing.assert_allclose(picked.affine, second.affine, atol=1e-3)
    # the phase series number selects its pair as well
    assert read_dicom(tmp_path, series=6).n_echoes == 3
    with pytest.raises(InputError, match="no series number 42"):
        read_dicom(tmp_path, series=42)


def test_phase_difference_series_is_refused(tmp_path):
    acq = _acquisition(_affine("axial"), n_echoes=2)
    write_gre_dicom(acq, tmp_path)
    for path in (tmp_path / "6_phase").glob("P_e1_*.dcm"):
        path.unlink()  # only the echo-2 "phase" remains, as for gre_field_mapping
    with pytest.raises(InputError, match="phase-difference") as err:
        read_dicom(tmp_path)
    assert "not the phase of each echo" in str(err.value)
    with pytest.raises(InputError, match="phase-difference"):
        read_dicom(tmp_path, series=6)
    with pytest.raises(InputError, match="phase-difference"):
        read_dicom(tmp_path / "6_phase")
    with pytest.raises(InputError, match="magnitude only"):
        read_dicom(tmp_path / "5_magnitude")


def test_field_map_labelled_magnitude_is_refused(tmp_path):
    # A GE-like series whose second image per slice (signed, a field map) is labelled as
    # magnitude, as in the B0map sample, but without the sequence name that gives it away.
    write_gre_dicom(_acquisition(_affine("axial"), n_echoes=1), tmp_path, manufacturer="GE")
    for path in tmp_path.rglob("P_*.dcm"):
        ds = pydicom.dcmread(path)
        ds[0x0043, 0x102F].value = 0
        ds.save_as(path)
    with pytest.raises(InputError, match="field map"):
        read_dicom(tmp_path)


def test_missing_slice_and_missing_echo(tmp_path):
    write_gre_dicom(_acquisition(_affine("axial")), tmp_path)
    (tmp_path / "6_phase" / "P_e2_0003.dcm").unlink()
    with pytest.raises(InputError, match="slice positions|missing"):
        read_dicom(tmp_path)
    for path in (tmp_path / "6_phase").glob("P_e2_*.dcm"):
        path.unlink()
    with pytest.raises(InputError):
        read_dicom(tmp_path)


def test_repeated_volumes_are_refused(tmp_path):
    write_gre_dicom(_acquisition(_affine("axial"), n_echoes=2), tmp_path, manufacturer="GE")
    for path in list(tmp_path.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.TemporalPositionIdentifier = 2
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(path.with_name("rep2_" + path.name))
    with pytest.raises(InputError, match="repeated acquisitions|volumes per echo"):
        read_dicom(tmp_path)


def test_truncated_and_unreadable_files(tmp_path):
    write_gre_dicom(_acquisition(_affine("axial")), tmp_path)
    victim = tmp_path / "6_phase" / "P_e1_0002.dcm"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 50])
    with pytest.raises(InputError, match="P_e1_0002"):
        read_dicom(tmp_path)
    victim.write_bytes(data[:200])  # header cut in the middle
    with pytest.raises(InputError):
        read_dicom(tmp_path)
    victim.write_bytes(data)
    broken = tmp_path / "broken.dcm.gz"
    broken.write_bytes(gzip.compress(data)[:100])
    with pytest.raises(InputError, match="decompress|truncated"):
        read_dicom(tmp_path)


def test_no_dicom_and_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_dicom(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b").write_bytes(b"\x00" * 300)
    with pytest.raises(InputError, match="no DICOM images"):
        read_dicom(tmp_path)


def test_missing_echo_time_and_field_strength(tmp_path):
    write_gre_dicom(_acquisition(_affine("axial"), n_echoes=2), tmp_path, manufacturer="PHILIPS")
    files = sorted(tmp_path.rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        del ds.MagneticFieldStrength
        ds.save_as(path)
    acq = read_dicom(tmp_path)  # from ImagingFrequency
    assert acq.b0_tesla == pytest.approx(3.0, rel=1e-6)
    assert any("imaging frequency" in n for n in acq.notes)
    for path in files:
        ds = pydicom.dcmread(path)
        del ds.ImagingFrequency
        ds.save_as(path)
    with pytest.raises(InputError, match="--b0"):
        read_dicom(tmp_path)
    assert read_dicom(tmp_path, b0_tesla=7.0).b0_tesla == 7.0
    ds = pydicom.dcmread(files[0])
    del ds.EchoTime
    ds.save_as(files[0])
    with pytest.raises(InputError, match="EchoTime"):
        read_dicom(tmp_path, b0_tesla=3.0)


def test_philips_phase_in_mrad_without_private_scale(tmp_path):
    acq = _acquisition(_affine("oblique"))
    write_gre_dicom(acq, tmp_path, manufacturer="PHILIPS")
    for path in tmp_path.rglob("P_*.dcm"):
        ds = pydicom.dcmread(path)
        del ds[0x2005, 0x100E]
        ds.save_as(path)
    back = read_dicom(tmp_path)
    assert any("milliradians" in n for n in back.notes)
    # RescaleSlope/Intercept in mrad, divided by 1000: within a step plus the 1000/1000.x
    assert _phase_error(back.phase, acq.phase) <= np.pi / 4096 + 1e-4


def test_siemens_phase_without_rescale_is_unsigned_12_bit(tmp_path):
    acq = _acquisition(_affine("axial"))
    write_gre_dicom(acq, tmp_path)
    for path in (tmp_path / "6_phase").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
        ds.save_as(path)
    back = read_dicom(tmp_path)
    assert any("0..4095" in n for n in back.notes)
    assert _phase_error(back.phase, acq.phase) <= np.pi / 4096 + 1e-5


def test_derived_magnitude_series_is_not_paired_first(tmp_path):
    acq = _acquisition(_affine("axial"))
    write_gre_dicom(acq, tmp_path / "a", series_number=5)  # magnitude 5, phase 6
    # The original magnitude becomes series 3; a DERIVED magnitude series with the same
    # geometry and echoes (e.g. SWI) takes number 5, right before the phase series.
    for path in (tmp_path / "a" / "5_magnitude").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesNumber = 3
        ds.save_as(path)
        ds.ImageType = ["DERIVED", "PRIMARY", "M", "SWI"]
        ds.SeriesNumber = 5
        ds.SeriesInstanceUID = "1.2.3.4"
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        target = tmp_path / "a" / "5_swi" / path.name
        target.parent.mkdir(exist_ok=True)
        ds.save_as(target)
    picked = read_dicom(tmp_path / "a")
    assert picked.metadata["SeriesNumbers"] == [3, 6]


def test_single_valued_image_type_is_not_split_into_letters(tmp_path):
    # ImageType "ORIGINAL" (one value) must not be read as the letters O, R (= real), ...
    acq = _acquisition(_affine("axial"), n_echoes=2)
    write_gre_dicom(acq, tmp_path)
    for path in (tmp_path / "5_magnitude").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.ImageType = "ORIGINAL"
        ds.save_as(path)
    back = read_dicom(tmp_path)
    assert np.abs(back.magnitude - acq.magnitude).max() <= acq.magnitude.max() / 4095


def test_slice_chopping_is_detected_and_undone():
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (12, 10, 8)], indexing="ij")
    smooth = (1 + x**2)[..., None] * np.exp(1j * (1.5 * x + y * z))[..., None]
    smooth = np.repeat(smooth, 2, axis=3)
    chopped = smooth.copy()
    chopped[:, :, 1::2] *= -1
    assert _fix_slice_chopping(chopped)
    np.testing.assert_allclose(chopped, smooth)
    untouched = smooth.copy()
    assert not _fix_slice_chopping(untouched)
    np.testing.assert_array_equal(untouched, smooth)

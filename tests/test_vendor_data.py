"""Real scanner files from ../shared/data/dicom, compared with dcm2niix's conversions in Ref/.

Skipped when the data folder is absent. Set QSMKIT_SHARED_DATA to use another copy.
"""

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.io.dicom import (
    PHASE,
    _affine_2d,
    _build_grid,
    _phase_encoding,
    read_dicom,
    read_series_volume,
    scan_dicom_folder,
)
from qsmkit.units import wrap_phase

nib = pytest.importorskip("nibabel")

DATA = Path(os.environ.get("QSMKIT_SHARED_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data")) / "dicom"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"vendor samples not found in {DATA}")

PHILIPS = DATA / "philips_classic"
SIEMENS = DATA / "siemens_classic"
XA30 = DATA / "siemens_xa30_enhanced"
GE = DATA / "ge_fieldmap"


def _ref(path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


@pytest.fixture(scope="module")
def philips():
    return read_dicom(PHILIPS / "In")


def test_philips_echoes_b0_and_geometry(philips):
    assert philips.n_echoes == 2
    np.testing.assert_allclose(philips.echo_times_s, [0.0023, 0.0046])
    assert philips.b0_tesla == 3.0
    assert philips.shape == (80, 80, 53)
    assert philips.manufacturer == "Philips"
    np.testing.assert_allclose(philips.voxel_size, (3, 3, 3), atol=1e-4)
    assert np.all(philips.phase >= -np.pi) and np.all(philips.phase < np.pi)
    for name in ["e1", "e2"]:
        _, affine = _ref(PHILIPS / "Ref" / f"2001_WIP_fcMRI_Field_Mapping_cl_{name}.nii.gz")
        np.testing.assert_allclose(philips.affine, affine, atol=1e-3)


def test_philips_arrays_match_dcm2niix(philips):
    for echo, name in enumerate(["e1", "e2"]):
        magnitude, _ = _ref(PHILIPS / "Ref" / f"2001_WIP_fcMRI_Field_Mapping_cl_{name}.nii.gz")
        phase, _ = _ref(PHILIPS / "Ref" / f"2001_WIP_fcMRI_Field_Mapping_cl_{name}_ph.nii.gz")
        # dcm2niix stores the Philips floating-point values (private scale slope) too
        np.testing.assert_allclose(philips.magnitude[..., echo], magnitude, rtol=1e-5)
        # dcm2niix's phase: raw * 0.0015345 - pi in float32; wrapped difference
        difference = wrap_phase(philips.phase[..., echo] - phase)
        assert np.abs(difference).max() < 1e-3
        assert np.abs(phase).max() <= np.pi + 1e-3


def test_philips_gzip_and_scrambled_names(tmp_path, philips):
    files = sorted((PHILIPS / "In" / "cl").glob("2001_*.dcm"))
    assert len(files) == 212  # 53 slices x 2 echoes x magnitude + phase
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(files)):
        source = files[i]
        target = tmp_path / f"sub{i % 2}" / f"img{rng.integers(1 << 40):x}"
        target.parent.mkdir(exist_ok=True)
        if i % 2:
            with gzip.open(str(target) + ".dcm.gz", "wb", compresslevel=1) as handle:
                handle.write(source.read_bytes())
        else:
            shutil.copy(source, target)
    again = read_dicom(tmp_path)
    np.testing.assert_array_equal(again.magnitude, philips.magnitude)
    np.testing.assert_array_equal(again.phase, philips.phase)


def test_siemens_magnitude_matches_dcm2niix_with_repeated_instance_numbers():
    series = scan_dicom_folder(SIEMENS / "In" / "Siemens" / "2_gre_field_magph")
    assert len(series) == 1
    frames = series[0].frames
    assert len(frames) == 72 and len({f.instance_number for f in frames}) == 36
    data, tes, affine = read_series_volume(series[0], "magnitude")
    np.testing.assert_allclose(tes, [0.00519, 0.00765])
    for echo in range(2):
        ref, ref_affine = _ref(SIEMENS / "Ref" / f"Si_2_gre_field_magph_e{echo + 1}.nii")
        np.testing.assert_allclose(affine, ref_affine, atol=1e-3)
        np.testing.assert_array_equal(data[..., echo], ref)


def test_siemens_phase_difference_recognised():
    with pytest.raises(InputError, match="phase-difference") as err:
        read_dicom(SIEMENS / "In")
    message = str(err.value)
    assert "series 3" in message and "delta TE 2.46 ms" in message
    assert "field-mapping" in message
    series = {s.number: s for s in scan_dicom_folder(SIEMENS / "In")}
    assert series[3].protocol_te_ms == [5.19, 7.65]
    # the values themselves agree with dcm2niix (-4096..4094 after rescale)
    data, tes, affine = read_series_volume(series[3], PHASE)
    ref, ref_affine = _ref(SIEMENS / "Ref" / "Si_3_gre_field_magph_e2_ph.nii")
    np.testing.assert_array_equal(data[..., 0], ref)
    np.testing.assert_allclose(affine, ref_affine, atol=1e-3)
    assert data.min() >= -4096 and data.max() <= 4094


def test_siemens_phase_encoding_direction_as_dcm2niix():
    series = scan_dicom_folder(SIEMENS / "In" / "Siemens" / "2_gre_field_magph")[0]
    grid = _build_grid({"magnitude": series.frames}, series.label())
    affine = _affine_2d(grid)
    info = _phase_encoding(series, affine, affine)
    assert info["PhaseEncodingDirection"] == "j-"  # as in Ref/Si_2_gre_field_magph_e1.json


def test_xa30_enhanced_per_frame_groups():
    series = {s.number: s for s in scan_dicom_folder(XA30 / "In")}
    assert set(series) == {8, 9}
    data, tes, affine = read_series_volume(series[8], "magnitude")
    np.testing.assert_allclose(tes, [0.010, 0.01246])  # only in per-frame MREchoSequence
    assert data.shape == (64, 64, 33, 2)
    for echo in range(2):
        ref, ref_affine = _ref(XA30 / "Ref" / f"8_gre_field_mapping_e{echo + 1}.nii")
        np.testing.assert_allclose(affine, ref_affine, atol=1e-3)
        np.testing.assert_array_equal(data[..., echo], ref)
    phase, _, _ = read_series_volume(series[9], PHASE)  # rescale in per-frame groups
    ref, _ = _ref(XA30 / "Ref" / "9_gre_field_mapping_e2_ph.nii")
    np.testing.assert_array_equal(phase[..., 0], ref)
    assert "phase-difference" in series[9].problem
    with pytest.raises(InputError, match="phase-difference"):
        read_dicom(XA30 / "In")


def test_ge_field_map_refused_clearly(tmp_path):
    with pytest.raises(InputError) as err:
        read_dicom(GE / "In")
    message = str(err.value)
    assert "field map in Hz" in message and "not phase" in message
    out = tmp_path / "out"
    assert main(["import", str(GE / "In"), "-o", str(out)]) == 2
    assert not out.exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_import_command_on_philips(tmp_path, philips, capsys):
    out = tmp_path / "nifti"
    assert main(["import", str(PHILIPS / "In"), "-o", str(out)]) == 0
    magnitude, affine = _ref(out / "mag.nii.gz")
    ref, ref_affine = _ref(PHILIPS / "Ref" / "2001_WIP_fcMRI_Field_Mapping_cl_e2.nii.gz")
    np.testing.assert_allclose(magnitude[..., 1], ref, rtol=1e-5)
    np.testing.assert_allclose(affine, ref_affine, atol=1e-3)
    assert "2 echoes" in capsys.readouterr().out

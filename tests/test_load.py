"""load_acquisition: NIfTI (4D and per echo) with sidecars, import folders, BIDS, DICOM; the
validation shared by every reader; the ``qsmkit import`` command."""

import json

import nibabel as nib
import numpy as np
import pytest

from qsmkit.acquisition import Acquisition, phase_to_radians
from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.geometry import affine_from_geometry
from qsmkit.io.dicom import read_dicom
from qsmkit.io.dicom_export import write_gre_dicom
from qsmkit.io.load import load_acquisition, load_nifti_acquisition, save_acquisition
from qsmkit.units import wrap_phase

SHAPE = (8, 7, 6)
TES = [0.005, 0.010, 0.015]


def _arrays(n_echoes=3, seed=0):
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(5, 50, SHAPE + (n_echoes,)).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, SHAPE + (n_echoes,)).astype(np.float32)
    return magnitude, phase


AFFINE = affine_from_geometry(SHAPE, (1.0, 1.5, 2.0), (0.1, 0.2, 0.97))


def _save(path, data, affine=AFFINE, sidecar=None, dtype=np.float32):
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    nib.save(image, str(path))
    if sidecar is not None:
        json_path = path.parent / (path.name.split(".nii")[0] + ".json")
        json_path.write_text(json.dumps(sidecar))
    return path


# ----------------------------------------------------------------------------------------
# Phase units


@pytest.mark.parametrize(
    ("encode", "tolerance", "word"),
    [
        (lambda p: p, 1e-6, ""),
        (lambda p: np.mod(p, 2 * np.pi), 1e-5, "0..2*pi"),
        (lambda p: np.round(p / np.pi * 4096).clip(-4096, 4095), np.pi / 4096, "12-bit"),
        (lambda p: np.mod(np.round((p + np.pi) / (2 * np.pi) * 4096), 4096), np.pi / 4096,
         "unsigned 12-bit"),
        (lambda p: np.round(p * 1000), 5e-4, "milliradians"),
        (lambda p: np.round(p / np.pi * 32768).clip(-32768, 32767), np.pi / 32768, "16-bit"),
    ],
)
def test_phase_to_radians_detects_units(encode, tolerance, word):
    rng = np.random.default_rng(5)
    phase = rng.uniform(-np.pi, np.pi, 4000)
    phase[:2] = [-np.pi, np.pi - 1e-4]
    radians, note = phase_to_radians(encode(phase))
    assert word in note
    assert radians.min() >= -np.pi and radians.max() < np.pi
    assert np.abs(wrap_phase(radians - phase)).max() <= tolerance + 1e-6


@pytest.mark.parametrize("values", [[0.5, 7.3, 100.25], [-5e5, 5e5], [0.0, 70000.0]])
def test_phase_to_radians_rejects_unknown_ranges(values):
    with pytest.raises(InputError, match="phase"):
        phase_to_radians(np.asarray(values))
    with pytest.raises(InputError, match="NaN"):
        phase_to_radians(np.array([0.0, np.nan]))


# ----------------------------------------------------------------------------------------
# Acquisition validation


def test_acquisition_validation_messages():
    magnitude, phase = _arrays()
    good = Acquisition(magnitude, phase, TES, 3.0, AFFINE)
    assert good.n_echoes == 3 and not good.notes
    cases = [
        (dict(phase=phase[..., :2]), "differ"),
        (dict(echo_times_s=TES[:2]), "2 echo time"),
        (dict(echo_times_s=[5, 10, 15]), "milliseconds"),
        (dict(echo_times_s=[0.01, 0.005, 0.015]), "increasing"),
        (dict(echo_times_s=[0.005, 0.005, 0.015]), "duplicates"),
        (dict(echo_times_s=[0.005, np.nan, 0.015]), "positive"),
        (dict(phase=phase * 10), "radians"),
        (dict(magnitude=np.where(magnitude > 40, np.nan, magnitude)), "NaN"),
        (dict(phase=np.where(phase > 3, np.inf, phase)), "NaN or Inf"),
        (dict(magnitude=np.zeros_like(magnitude)), "all zero"),
        (dict(magnitude=magnitude[:, :, :1], phase=phase[:, :, :1]), "3D volume"),
        (dict(magnitude=np.zeros((0, 4, 4, 3)), phase=np.zeros((0, 4, 4, 3))), "empty"),
        (dict(b0_tesla=300.0), "tesla"),
        (dict(b0_tesla=None), "--b0"),
        (dict(affine=np.zeros((4, 4))), "voxel sizes|last row"),
        (dict(affine=np.full((4, 4), np.nan)), "NaN"),
        (dict(affine=np.eye(3)), "4x4"),
    ]
    base = dict(magnitude=magnitude, phase=phase, echo_times_s=TES, b0_tesla=3.0, affine=AFFINE)
    for change, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            Acquisition(**{**base, **change})


def test_single_echo_is_allowed_with_a_note():
    magnitude, phase = _arrays(1)
    acq = Acquisition(magnitude[..., 0], phase[..., 0], 0.02, 7.0, AFFINE)
    assert acq.n_echoes == 1
    assert any("single echo" in n for n in acq.notes)


# ----------------------------------------------------------------------------------------
# NIfTI inputs


def test_4d_nifti_with_sidecars(tmp_path):
    magnitude, phase = _arrays()
    meta = {"EchoTimes": TES, "MagneticFieldStrength": 3, "Manufacturer": "Siemens"}
    _save(tmp_path / "mag.nii.gz", magnitude, sidecar=meta)
    _save(tmp_path / "ph.nii.gz", np.round(phase / np.pi * 4096).clip(-4096, 4095),
          sidecar=meta, dtype=np.int16)
    acq = load_acquisition([], mag=tmp_path / "mag.nii.gz", phase=tmp_path / "ph.nii.gz")
    np.testing.assert_allclose(acq.echo_times_s, TES)
    assert acq.b0_tesla == 3.0 and acq.manufacturer == "Siemens"
    assert any("12-bit" in n for n in acq.notes)
    assert np.abs(wrap_phase(acq.phase - phase)).max() <= np.pi / 4096 + 1e-6
    np.testing.assert_allclose(acq.affine, AFFINE, atol=1e-5)


def test_per_echo_files_sorted_by_sidecar_echo_time(tmp_path):
    magnitude, phase = _arrays()
    mags, phases = [], []
    for e in (2, 0, 1):  # given out of order
        meta = {"EchoTime": TES[e], "MagneticFieldStrength": 7.0}
        mags.append(_save(tmp_path / f"mag_e{e}.nii", magnitude[..., e], sidecar=meta))
        phases.append(_save(tmp_path / f"phase_e{e}.nii", phase[..., e], sidecar=meta))
    acq = load_acquisition(None, mag=[str(p) for p in mags], phase=phases)
    np.testing.assert_allclose(acq.echo_times_s, TES)
    np.testing.assert_allclose(acq.phase, phase, atol=1e-6)
    np.testing.assert_allclose(acq.magnitude, magnitude, rtol=1e-6)
    assert acq.b0_tesla == 7.0
    assert any("sorted" in n for n in acq.notes)


def test_echo_times_and_b0_from_arguments_and_their_errors(tmp_path):
    magnitude, phase = _arrays()
    mag = _save(tmp_path / "m.nii.gz", magnitude)
    pha = _save(tmp_path / "p.nii.gz", phase)
    with pytest.raises(InputError, match="--echo-times"):
        load_acquisition(mag=mag, phase=pha, b0_tesla=3)
    with pytest.raises(InputError, match="--b0"):
        load_acquisition(mag=mag, phase=pha, echo_times_s=TES)
    with pytest.raises(InputError, match="milliseconds"):
        load_acquisition(mag=mag, phase=pha, echo_times_s=[5, 10, 15], b0_tesla=3)
    with pytest.raises(InputError, match="2 echo time"):
        load_acquisition(mag=mag, phase=pha, echo_times_s=TES[:2], b0_tesla=3)
    acq = load_acquisition(mag=mag, phase=pha, echo_times_s=TES, b0_tesla=3)
    assert acq.n_echoes == 3


def test_sidecar_errors(tmp_path):
    magnitude, phase = _arrays(2)
    mag = _save(tmp_path / "m.nii.gz", magnitude, sidecar={"EchoTimes": [5.0, 10.0]})
    pha = _save(tmp_path / "p.nii.gz", phase)
    with pytest.raises(InputError, match="milliseconds"):
        load_acquisition(mag=mag, phase=pha, b0_tesla=3)
    _save(tmp_path / "m.nii.gz", magnitude, sidecar={"EchoTime": 0.005})
    with pytest.raises(InputError, match="1 echo time"):
        load_acquisition(mag=mag, phase=pha, b0_tesla=3)
    _save(tmp_path / "m.nii.gz", magnitude, sidecar={"EchoTime1": 0.005, "EchoTime2": 0.007})
    with pytest.raises(InputError, match="phase-difference"):
        load_acquisition(mag=mag, phase=pha, b0_tesla=3)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_acquisition(mag=mag, phase=pha, b0_tesla=3)
    _save(tmp_path / "m.nii.gz", magnitude, sidecar={"EchoTimes": [0.005, 0.01]})
    _save(tmp_path / "p.nii.gz", phase, sidecar={"EchoTimes": [0.005, 0.02]})
    with pytest.raises(InputError, match="magnitude sidecars give echo times"):
        load_acquisition(mag=mag, phase=pha, b0_tesla=3)


def test_nifti_mismatches(tmp_path):
    magnitude, phase = _arrays()
    mag = _save(tmp_path / "m.nii.gz", magnitude)
    cases = [
        (_save(tmp_path / "p1.nii.gz", phase[:, :, :5]), "differ in shape"),
        (_save(tmp_path / "p2.nii.gz", phase[..., :2]), "differ in shape"),
        (_save(tmp_path / "p3.nii.gz", phase, affine=AFFINE @ np.diag([1, 1, 1.5, 1])),
         "different affines"),
        (_save(tmp_path / "p4.nii.gz", np.where(phase > 2, np.nan, phase)), "NaN"),
        (_save(tmp_path / "p5.nii.gz", phase * 100), "phase"),
    ]
    for pha, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            load_acquisition(mag=mag, phase=pha, echo_times_s=TES, b0_tesla=3)
    flat = _save(tmp_path / "flat.nii.gz", magnitude[:, :, 0, 0])
    with pytest.raises(InputError, match="3D volume|shape"):
        load_acquisition(mag=flat, phase=flat, echo_times_s=TES[:1], b0_tesla=3)
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes((tmp_path / "m.nii.gz").read_bytes()[:300])
    with pytest.raises(InputError, match="cannot read"):
        load_acquisition(mag=truncated, phase=mag, echo_times_s=TES, b0_tesla=3)
    with pytest.raises(InputError, match="not found"):
        load_acquisition(mag=tmp_path / "none.nii", phase=mag, echo_times_s=TES, b0_tesla=3)


def test_argument_combinations(tmp_path):
    with pytest.raises(InputError, match="give a DICOM or BIDS folder"):
        load_acquisition([])
    with pytest.raises(InputError, match="together"):
        load_acquisition(mag="m.nii")
    with pytest.raises(InputError, match="not both"):
        load_acquisition([tmp_path], mag="m.nii", phase="p.nii")
    with pytest.raises(InputError, match="does not exist"):
        load_acquisition(tmp_path / "missing")
    nifti = _save(tmp_path / "x.nii.gz", np.ones(SHAPE))
    with pytest.raises(InputError, match="--mag and --phase"):
        load_acquisition(nifti)
    with pytest.raises(InputError, match="--mag FILE"):
        load_acquisition([nifti, nifti])


# ----------------------------------------------------------------------------------------
# Folders: DICOM, qsmkit import output, BIDS


def test_dicom_folder_import_folder_and_overrides(tmp_path):
    magnitude, phase = _arrays()
    acq = Acquisition(magnitude, phase, TES, 3.0, AFFINE, series_description="gre")
    write_gre_dicom(acq, tmp_path / "dicom", manufacturer="GE")
    from_dicom = load_acquisition(tmp_path / "dicom")
    assert np.abs(wrap_phase(from_dicom.phase - phase)).max() < 1e-3
    overridden = load_acquisition(str(tmp_path / "dicom"), b0_tesla=1.5,
                                  echo_times_s=[0.004, 0.008, 0.012])
    assert overridden.b0_tesla == 1.5
    assert any("replace" in n for n in overridden.notes)
    save_acquisition(from_dicom, tmp_path / "imported")
    again = load_acquisition(tmp_path / "imported")
    np.testing.assert_allclose(again.phase, from_dicom.phase, atol=1e-6)
    np.testing.assert_allclose(again.echo_times_s, TES)
    assert again.b0_tesla == 3.0
    assert again.dicom_reference["StudyInstanceUID"] == from_dicom.dicom_reference[
        "StudyInstanceUID"]
    assert "PatientName" not in again.dicom_reference  # no identifiers in acquisition.json
    direct = load_nifti_acquisition(tmp_path / "imported" / "mag.nii.gz",
                                    tmp_path / "imported" / "phase.nii.gz")
    np.testing.assert_allclose(direct.echo_times_s, TES)


def test_dicom_in_a_folder_named_like_bids(tmp_path):
    magnitude, phase = _arrays()
    write_gre_dicom(Acquisition(magnitude, phase, TES, 3.0, AFFINE), tmp_path / "sub-07")
    assert load_acquisition(tmp_path / "sub-07").n_echoes == 3
    (tmp_path / "sub-08").mkdir()
    with pytest.raises(InputError, match="neither BIDS"):
        load_acquisition(tmp_path / "sub-08")


def test_bids_subject_folder(tmp_path):
    bids = pytest.importorskip("qsmkit.io.bids")
    magnitude, phase = _arrays()
    bids.write_megre_subject(tmp_path, "01", magnitude, phase, AFFINE, TES, 3.0)
    acq = load_acquisition(tmp_path / "sub-01")
    np.testing.assert_allclose(acq.echo_times_s, TES)
    np.testing.assert_allclose(acq.phase, phase, atol=1e-5)
    assert load_acquisition(tmp_path).n_echoes == 3  # the dataset root works too


# ----------------------------------------------------------------------------------------
# qsmkit import


def test_import_command(tmp_path, capsys):
    magnitude, phase = _arrays(2)
    acq = Acquisition(magnitude, phase, TES[:2], 3.0, AFFINE, series_description="gre")
    write_gre_dicom(acq, tmp_path / "dicom", series_number=11)
    write_gre_dicom(Acquisition(magnitude, phase, TES[:2], 3.0, AFFINE), tmp_path / "dicom",
                    series_number=21)
    out = tmp_path / "out"
    assert main(["import", str(tmp_path / "dicom"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "series 11" in err and "series 21" in err and "--series" in err
    assert not out.exists()
    assert main(["import", str(tmp_path / "dicom"), "--list"]) == 0
    assert "[usable] series 11" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "dicom"), "-o", str(out), "--series", "11"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["acquisition.json", "mag.json", "mag.nii.gz", "phase.json",
                     "phase.nii.gz", "qsmkit.json"]
    record = json.loads((out / "acquisition.json").read_text())
    for key in ("echo_times_s", "b0_tesla", "manufacturer", "series_description",
                "voxel_size_mm", "b0_dir_voxel", "notes"):
        assert key in record
    np.testing.assert_allclose(record["voxel_size_mm"], (1.0, 1.5, 2.0), atol=1e-6)
    sidecar = json.loads((out / "phase.json").read_text())
    assert sidecar["EchoTimes"] == pytest.approx(TES[:2])
    assert sidecar["MagneticFieldStrength"] == 3.0
    phase_image = nib.load(str(out / "phase.nii.gz"))
    assert phase_image.shape == SHAPE + (2,)
    loaded = load_acquisition(None, mag=out / "mag.nii.gz", phase=out / "phase.nii.gz")
    np.testing.assert_allclose(loaded.phase, read_dicom(tmp_path / "dicom", series=11).phase,
                               atol=1e-6)
    # refuses to overwrite without --force, replaces with it
    assert main(["import", str(tmp_path / "dicom"), "-o", str(out), "--series", "11"]) == 2
    assert main(["import", str(tmp_path / "dicom"), "-o", str(out), "--series", "21",
                 "--force"]) == 0
    assert not list(tmp_path.glob(".out.partial-*"))


def test_complex_nifti_is_refused_with_advice(tmp_path):
    """complex64 magnitude/phase lost its imaginary part silently (issue 16)."""
    import nibabel as nib
    import numpy as np
    import pytest

    from qsmkit.errors import InputError
    from qsmkit.io.nifti import load_nifti

    z = (np.ones((8, 8, 8)) + 1j * np.ones((8, 8, 8))).astype(np.complex64)
    nib.save(nib.Nifti1Image(z, np.eye(4)), str(tmp_path / "z.nii.gz"))
    with pytest.raises(InputError, match="complex.*angle"):
        load_nifti(tmp_path / "z.nii.gz")

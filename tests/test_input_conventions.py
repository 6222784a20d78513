"""Input conventions: phase units, the vendor phase sign on every route, coil combination.

The real crop (../shared/data/real/romeo_small, phase stored as floats within +-0.0037) is
written in six phase conventions; each must give the chi of the radians route or exit 2
naming the phase and --phase-unit. One simulated scan with GE, Siemens and Philips metadata
is loaded as DICOM, NIfTI + dcm2niix-style sidecar and BIDS: the phase given to the pipeline
must be the same. Uncombined coil data are simulated here (coil sensitivities and phase
offsets of the test's own making, not qsmkit's phantom code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qsmkit.acquisition import Acquisition, phase_to_radians
from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.io.load import load_acquisition, load_nifti_acquisition, save_acquisition

SHARED = Path(os.environ.get("QSMKIT_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
ROMEO = SHARED / "real" / "romeo_small"
PHILIPS = SHARED / "dicom" / "philips_classic"
needs_romeo = pytest.mark.skipif(not (ROMEO / "Phase.nii").exists(),
                                 reason=f"real crop not found in {ROMEO}")
ROMEO_TES = "0.004,0.008,0.012"  # the source project's test echo times (s), at 3 T


def _circular_error(a, b):
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, float) - np.asarray(b, float)))))


# ------------------------------------------------------------------------------------------
# phase units


def _wrapped_phase(shape=(12, 12, 10, 3), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-np.pi, np.pi, shape)


@pytest.mark.parametrize("encode, unit", [
    (lambda p: p, "rad"),
    (lambda p: np.degrees(p), "deg"),
    (lambda p: np.mod(np.degrees(p), 360.0), "deg"),
    (lambda p: np.clip(np.round(p * 4096 / np.pi), -4096, 4095), "siemens"),
    (lambda p: np.clip(np.round((p + np.pi) * 4096 / (2 * np.pi)), 0, 4095), "uint12"),
    (lambda p: np.round((p + np.pi) / (2 * np.pi) * 4094) * (2000 * np.pi / 4094) - 1000 * np.pi,
     "mrad"),  # Philips RescaleSlope/Intercept: non-integer milliradians
])
def test_every_convention_detected_and_forced(encode, unit):
    truth = _wrapped_phase()
    values = encode(truth)
    auto, note = phase_to_radians(values)
    forced, _ = phase_to_radians(values, unit=unit)
    step = 2 * np.pi / 4094
    assert _circular_error(auto, truth).max() < step
    assert _circular_error(forced, truth).max() < step
    assert (note == "") == (unit == "rad")


@pytest.mark.parametrize("values", [
    np.linspace(-0.0037, 0.0037, 3 * 64).reshape(4, 4, 4, 3),    # tiny floats (romeo_small)
    np.linspace(-0.5, 0.6, 3 * 64).reshape(4, 4, 4, 3),          # radians spanning 18 %
    np.linspace(-20.3, 44.1, 3 * 64).reshape(4, 4, 4, 3),        # floats, no known unit
    np.linspace(-950.5, 1210.25, 3 * 64).reshape(4, 4, 4, 3),    # floats, no known unit
    np.round(np.linspace(0, 1000, 3 * 64)).reshape(4, 4, 4, 3),  # integers filling 1/4 of 12 bits
])
def test_ambiguous_phase_refused_naming_the_option(values):
    with pytest.raises(InputError, match="--phase-unit") as err:
        phase_to_radians(values)
    assert f"{values.min():.4g}"[:4] in str(err.value)


def test_forced_unit_checks_its_range_and_range_maps_min_max():
    with pytest.raises(InputError, match="siemens"):
        phase_to_radians(np.array([0.0, 5000.0]), unit="siemens")
    with pytest.raises(InputError, match="deg"):
        phase_to_radians(np.array([-400.0, 10.0]), unit="deg")
    radians, note = phase_to_radians(np.array([-0.002, 0.0, 0.002]), unit="range")
    assert np.allclose(radians, [-np.pi, 0.0, -np.pi], atol=1e-6)  # +pi wraps to -pi
    assert "range" in note


def _romeo_radians():
    image = nib.load(ROMEO / "Phase.nii")
    raw = np.asarray(image.dataobj, dtype=np.float64)
    radians = (raw - raw.min()) / (raw.max() - raw.min()) * 2 * np.pi - np.pi
    return raw, radians, image.affine


def _chi(folder, phase_values, affine, unit="auto"):
    from qsmkit.pipeline import QSMConfig, run_qsm

    path = folder / "phase.nii"
    nib.save(nib.Nifti1Image(np.asarray(phase_values, dtype=np.float32), affine), path)
    acq = load_acquisition(mag=ROMEO / "Mag.nii", phase=path, echo_times_s=[0.004, 0.008, 0.012],
                           b0_tesla=3.0, phase_unit=unit)
    result = run_qsm(acq, QSMConfig.from_preset("fast"))
    return result.chi_ppm, result.local_mask, acq.notes


@pytest.fixture(scope="module")
def romeo_reference(tmp_path_factory):
    """chi of the real crop on the radians route (phase mapped from its range)."""
    raw, radians, affine = _romeo_radians()
    chi, mask, _ = _chi(tmp_path_factory.mktemp("romeo"), radians, affine)
    return raw, radians, affine, chi, mask


ROMEO_CONVENTIONS = {
    "radians": (lambda raw, rad: rad, "auto"),
    "degrees": (lambda raw, rad: np.degrees(rad), "auto"),
    "siemens 12-bit": (lambda raw, rad: np.clip(np.round(rad * 4096 / np.pi), -4096, 4095),
                       "auto"),
    "uint12": (lambda raw, rad: np.clip(np.round((rad + np.pi) * 4096 / (2 * np.pi)), 0, 4095),
               "auto"),
    "philips scaled": (lambda raw, rad: np.round((rad + np.pi) / (2 * np.pi) * 4094)
                       * (2000 * np.pi / 4094) - 1000 * np.pi, "auto"),
    "tiny floats as shipped": (lambda raw, rad: raw, "range"),
}


@needs_romeo
@pytest.mark.parametrize("name", sorted(ROMEO_CONVENTIONS))
def test_real_crop_same_chi_in_six_conventions(tmp_path, romeo_reference, name):
    raw, radians, affine, reference, mask = romeo_reference
    encode, unit = ROMEO_CONVENTIONS[name]
    values = encode(raw, radians)
    if unit != "auto":  # auto must refuse it, naming the phase and the option
        with pytest.raises(InputError, match="phase values span .*--phase-unit"):
            _chi(tmp_path, values, affine)
    chi, chi_mask, notes = _chi(tmp_path, values, affine, unit=unit)
    both = mask & chi_mask
    r = np.corrcoef(chi[both], reference[both])[0, 1]
    assert both.sum() > 0.9 * mask.sum()
    assert r >= 0.95, (name, r)
    if name != "radians":
        assert any("radians" in n or "-pi..pi" in n for n in notes), (name, notes)


@needs_romeo
def test_cli_refuses_tiny_phase_with_exit_2(tmp_path, capsys):
    code = main(["run", "--mag", str(ROMEO / "Mag.nii"), "--phase", str(ROMEO / "Phase.nii"),
                 "--echo-times", ROMEO_TES, "--b0", "3", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "phase" in err and "-0.00367" in err and "--phase-unit" in err
    assert not (tmp_path / "out" / "chi.nii.gz").exists()


@needs_romeo
def test_cli_phase_unit_note_in_terminal_and_qsmkit_json(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--mag", str(ROMEO / "Mag.nii"), "--phase", str(ROMEO / "Phase.nii"),
                 "--echo-times", ROMEO_TES, "--b0", "3", "--phase-unit", "range",
                 "--preset", "fast", "--no-report", "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "note:" in printed and "mapped linearly to -pi..pi" in printed
    record = json.loads((out / "qsmkit.json").read_text())
    assert any("--phase-unit range" in n for n in record["info"]["notes"])


# ------------------------------------------------------------------------------------------
# vendor phase sign on every route


def _scan(n=24):
    """A small scan in qsmkit's convention: phase = 2 pi f TE (wrapped)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    inside = x ** 2 + y ** 2 + z ** 2 < 0.8
    field_hz = 60.0 * x + 25.0 * y * z + 15.0
    tes = np.array([0.005, 0.010, 0.015])
    magnitude = np.where(inside, 1000.0, 30.0)[..., None] * np.exp(-tes * 30)
    phase = np.angle(np.exp(2j * np.pi * field_hz[..., None] * tes))
    affine = np.diag([1.2, 1.2, 1.5, 1.0])
    return magnitude.astype(np.float32), phase.astype(np.float32), tes, affine, inside


VENDORS = {"GE": ("GE", -1), "SIEMENS": ("Siemens", 1), "PHILIPS": ("Philips", 1)}


def _write_nifti_route(folder, magnitude, stored_phase, tes, affine, manufacturer):
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(magnitude, affine), folder / "mag.nii")
    nib.save(nib.Nifti1Image(stored_phase, affine), folder / "ph.nii")
    sidecar = {"Manufacturer": manufacturer, "MagneticFieldStrength": 3,
               "EchoTimes": tes.tolist(), "ConversionSoftware": "dcm2niix"}
    for name in ("mag", "ph"):
        (folder / f"{name}.json").write_text(json.dumps(sidecar))
    return folder / "mag.nii", folder / "ph.nii"


def _write_bids_route(root, magnitude, stored_phase, tes, affine, manufacturer):
    anat = root / "sub-1" / "anat"
    anat.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    for e, te in enumerate(tes):
        for part, data in (("mag", magnitude), ("phase", stored_phase)):
            stem = f"sub-1_echo-{e + 1}_part-{part}_MEGRE"
            nib.save(nib.Nifti1Image(data[..., e], affine), anat / f"{stem}.nii")
            (anat / f"{stem}.json").write_text(json.dumps(
                {"EchoTime": float(te), "MagneticFieldStrength": 3,
                 "Manufacturer": manufacturer}))
    return root / "sub-1"


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_vendor_phase_sign_identical_on_every_route(tmp_path, vendor):
    from qsmkit.io.dicom_export import write_gre_dicom

    manufacturer, sign = VENDORS[vendor]
    magnitude, phase, tes, affine, inside = _scan()
    acq = Acquisition(magnitude=magnitude, phase=phase, echo_times_s=tes, b0_tesla=3.0,
                      affine=affine)
    # What the scanner (and dcm2niix, which keeps the stored phase) holds for this vendor.
    stored = np.angle(np.exp(1j * sign * phase)).astype(np.float32)
    routes = {}
    write_gre_dicom(acq, tmp_path / "dicom", manufacturer=vendor)
    routes["dicom"] = load_acquisition(tmp_path / "dicom")
    mag_path, ph_path = _write_nifti_route(tmp_path / "nifti", magnitude, stored, tes, affine,
                                           manufacturer)
    routes["nifti"] = load_acquisition(mag=mag_path, phase=ph_path)
    routes["bids"] = load_acquisition(
        _write_bids_route(tmp_path / "bids", magnitude, stored, tes, affine, manufacturer))
    # qsmkit import output read back: already converted, never negated a second time.
    save_acquisition(routes["dicom"], tmp_path / "imported")
    routes["import"] = load_acquisition(tmp_path / "imported")
    for name, loaded in routes.items():
        assert loaded.phase.shape == phase.shape, name
        error = _circular_error(loaded.phase, phase)[inside]
        assert error.max() < 2e-3, (vendor, name, float(error.max()))
        if name != "import":  # the import folder keeps the DICOM route's notes
            negated = any("negated" in n for n in loaded.notes)
            assert negated == (sign < 0), (vendor, name, loaded.notes)


def test_ge_import_folder_not_negated_twice(tmp_path):
    from qsmkit.io.dicom_export import write_gre_dicom

    magnitude, phase, tes, affine, inside = _scan()
    acq = Acquisition(magnitude=magnitude, phase=phase, echo_times_s=tes, b0_tesla=3.0,
                      affine=affine)
    write_gre_dicom(acq, tmp_path / "dicom", manufacturer="GE")
    assert main(["import", str(tmp_path / "dicom"), "-o", str(tmp_path / "imp")]) == 0
    sidecar = json.loads((tmp_path / "imp" / "phase.json").read_text())
    assert sidecar["Manufacturer"].upper().startswith("GE")
    assert sidecar["PhaseSignConvention"].startswith("qsmkit")
    # Read as plain NIfTI + sidecar (not as an import folder) and as the import folder.
    for loaded in (load_nifti_acquisition(tmp_path / "imp" / "mag.nii.gz",
                                          tmp_path / "imp" / "phase.nii.gz"),
                   load_acquisition(tmp_path / "imp")):
        assert _circular_error(loaded.phase, phase)[inside].max() < 2e-3


@pytest.mark.skipif(not (PHILIPS / "In").is_dir(), reason="Philips sample not found")
def test_philips_dicom_and_dcm2niix_nifti_give_the_same_phase():
    dicom = load_acquisition(PHILIPS / "In")
    ref = PHILIPS / "Ref"
    nifti = load_acquisition(
        mag=[ref / f"2001_WIP_fcMRI_Field_Mapping_cl_e{e}.nii.gz" for e in (1, 2)],
        phase=[ref / f"2001_WIP_fcMRI_Field_Mapping_cl_e{e}_ph.nii.gz" for e in (1, 2)])
    assert nifti.manufacturer == dicom.manufacturer == "Philips"
    assert dicom.phase.shape == nifti.phase.shape
    strong = dicom.magnitude > np.percentile(dicom.magnitude, 50)
    assert np.median(_circular_error(dicom.phase, nifti.phase)[strong]) < 0.01


# ------------------------------------------------------------------------------------------
# uncombined coil data


def _coil_scan(n=40, n_coils=8, seed=3):
    """Multi-coil GRE: known field, coil sensitivities from coil positions around the head,
    a constant plus linear phase offset per coil, complex noise."""
    rng = np.random.default_rng(seed)
    voxel_mm = 1.5
    x, y, z = np.meshgrid(*[(np.arange(n) - n / 2) * voxel_mm] * 3, indexing="ij")
    head = (x / 26) ** 2 + (y / 28) ** 2 + (z / 24) ** 2 < 1
    field_hz = 40 * np.exp(-((x - 5) ** 2 + (y + 8) ** 2) / 400) + 0.3 * x - 0.2 * z
    field_hz = field_hz + 30 * ((x + 10) ** 2 + (y - 5) ** 2 + z ** 2 < 36)
    tes = np.array([0.003, 0.0065, 0.010])
    angles = 2 * np.pi * np.arange(n_coils) / n_coils
    shape = (n, n, n, tes.size, n_coils)
    magnitude, phase = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for c, a in enumerate(angles):
        cx, cy = 48 * np.cos(a), 48 * np.sin(a)
        sensitivity = 1 / (1 + ((x - cx) ** 2 + (y - cy) ** 2 + z ** 2) / 35 ** 2)
        offset = rng.uniform(-np.pi, np.pi) + 0.04 * (np.cos(a) * x + np.sin(a) * y) + 0.02 * z
        for e, te in enumerate(tes):
            signal = head * sensitivity * np.exp(-te * 25 + 1j * (2 * np.pi * field_hz * te
                                                                  + offset))
            signal = signal + 0.01 * (rng.normal(size=head.shape)
                                      + 1j * rng.normal(size=head.shape))
            magnitude[..., e, c], phase[..., e, c] = np.abs(signal), np.angle(signal)
    truth = np.angle(np.exp(2j * np.pi * field_hz[..., None] * tes))
    rss = np.sqrt((magnitude[..., 0, :] ** 2).sum(-1))
    good = head & (rss > 0.2 * np.median(rss[head]))
    return magnitude, phase, tes, voxel_mm, truth, good


def _check_combined(phase, truth, good):
    for e in range(truth.shape[3]):
        error = _circular_error(phase[..., e], truth[..., e])[good]
        assert error.mean() < 0.1 and np.percentile(error, 99) < 0.35, (e, error.mean())


def test_mcpc3ds_recovers_offset_free_phase():
    from qsmkit.echo.coil_combine import combine_coils

    magnitude, phase, tes, voxel_mm, truth, good = _coil_scan()
    combined = combine_coils(magnitude, phase, tes, (voxel_mm,) * 3)
    _check_combined(combined.phase, truth, good)
    assert np.allclose(combined.magnitude, np.sqrt((magnitude.astype(float) ** 2).sum(-1)),
                       rtol=1e-4)
    # A combination that ignores the coil offsets fails the same check.
    naive = np.angle((magnitude * np.exp(1j * phase)).sum(-1))
    with pytest.raises(AssertionError):
        _check_combined(naive, truth, good)


def test_5d_nifti_is_combined_by_the_loader(tmp_path):
    magnitude, phase, tes, voxel_mm, truth, good = _coil_scan(n=32, n_coils=4)
    affine = np.diag([voxel_mm] * 3 + [1.0])
    # Siemens-style 12-bit integers per coil and echo, as a 7 T scan exports them.
    stored = np.clip(np.round(phase * 4096 / np.pi), -4096, 4095).astype(np.int16)
    nib.save(nib.Nifti1Image(magnitude, affine), tmp_path / "mag.nii")
    nib.save(nib.Nifti1Image(stored, affine), tmp_path / "phase.nii")
    acq = load_acquisition(mag=tmp_path / "mag.nii", phase=tmp_path / "phase.nii",
                           echo_times_s=tes, b0_tesla=7.0)
    assert acq.phase.shape == magnitude.shape[:4]
    assert any("MCPC-3D-S" in n for n in acq.notes)
    _check_combined(acq.phase, truth, good)


def test_single_echo_coil_data_refused():
    from qsmkit.echo.coil_combine import combine_coils

    data = np.ones((4, 4, 4, 1, 3), np.float32)
    with pytest.raises(InputError, match="two echoes"):
        combine_coils(data, data, [0.005])

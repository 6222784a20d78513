"""The reconstruction pipeline on the head phantom: accuracy, geometry invariance, routes in."""

import numpy as np
import pytest

from qsmkit.cli.main import main
from qsmkit.demo import score_against_phantom
from qsmkit.errors import InputError
from qsmkit.phantom import head_phantom, simulate_gre
from qsmkit.pipeline import QSMConfig, run_qsm

TES = (0.004, 0.008, 0.012, 0.016, 0.020)


def _tilted(deg):
    t = np.radians(deg)
    return (np.sin(t), 0.0, np.cos(t))


@pytest.fixture(scope="module")
def phantom():
    return head_phantom(shape=(96, 96, 96), voxel_size=(2.0, 2.0, 2.0), seed=3)


def _reconstruct(ph, b0_dir=(0, 0, 1), preset="default", **sim_options):
    sim = simulate_gre(ph, echo_times_s=TES, b0_tesla=3.0, b0_dir=b0_dir, snr=100.0, seed=3,
                       **sim_options)
    result = run_qsm(sim.acquisition, QSMConfig.from_preset(preset))
    return sim, result, score_against_phantom(result.chi_ppm, ph, result.local_mask,
                                              sim.voxel_size)


@pytest.mark.slow
def test_default_pipeline_accuracy_and_oblique_invariance(phantom):
    _, axial, axial_scores = _reconstruct(phantom)
    sim, oblique, oblique_scores = _reconstruct(phantom, _tilted(20.0))
    np.testing.assert_allclose(sim.b0_dir, _tilted(20.0), atol=1e-9)
    assert axial_scores["nrmse"] < 40
    assert 0.85 <= axial_scores["dgm_slope"] <= 1.15
    # Nearly the same accuracy whatever the B0 direction. Issue 3 held this to 2 NRMSE points
    # when PDF used the image-space kernel this phantom is simulated with; with the k-space
    # kernel (better on data qsmkit did not make, docs/bgremove.md) and WH-QSM it measured
    # 14.8 % axial and 17.9 % at 20 degrees.
    assert abs(oblique_scores["nrmse"] - axial_scores["nrmse"]) < 3.5
    assert 0.85 <= oblique_scores["dgm_slope"] <= 1.15
    # Bleeds positive, calcifications negative.
    for lesion in phantom.lesions:
        voxels = (phantom.labels == lesion["label"]) & oblique.local_mask
        if lesion["kind"] == "microbleed":
            assert oblique.chi_ppm[voxels].mean() > 0.2
        if lesion["kind"] == "calcification":
            assert oblique.chi_ppm[voxels].mean() < -0.2


@pytest.mark.slow
def test_anisotropic_voxels():
    ph = head_phantom(shape=(96, 96, 64), voxel_size=(2.0, 2.0, 3.0), seed=3)
    _, result, scores = _reconstruct(ph, _tilted(15.0))
    assert scores["nrmse"] < 45
    assert 0.8 <= scores["dgm_slope"] <= 1.2


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fast", "accurate"])
def test_other_presets_run_and_keep_the_sign(phantom, preset):
    _, result, scores = _reconstruct(phantom, preset=preset)
    assert np.isfinite(result.chi_ppm).all()
    assert scores["nrmse"] < 80 and scores["dgm_slope"] > 0.5


def test_bad_method_name_is_an_input_error():
    with pytest.raises(InputError, match="unknown invert method"):
        QSMConfig.from_preset("default", invert="magic").validate()
    with pytest.raises(InputError, match="unknown preset"):
        QSMConfig.from_preset("turbo")


def test_user_mask_shape_is_checked(phantom):
    sim = simulate_gre(phantom, echo_times_s=TES[:3], b0_tesla=3.0, snr=100.0, seed=0)
    with pytest.raises(InputError, match="mask shape"):
        run_qsm(sim.acquisition, mask=np.ones((4, 4, 4), bool))


@pytest.mark.slow
@pytest.mark.parametrize("tilt_deg", [0.0, 20.0])
def test_dicom_route_gives_the_nifti_chi(tmp_path, tilt_deg):
    """simulate -> DICOM -> `qsmkit run DICOM_FOLDER` equals the NIfTI route (issue 4)."""
    from qsmkit.io.dicom_export import write_gre_dicom
    from qsmkit.io.load import save_acquisition
    from qsmkit.io.nifti import load_nifti

    ph = head_phantom(shape=(64, 64, 64), voxel_size=(3.0, 3.0, 3.0), seed=1)
    sim = simulate_gre(ph, echo_times_s=TES[:4], b0_tesla=3.0, b0_dir=_tilted(tilt_deg),
                       snr=100.0, seed=1)
    write_gre_dicom(sim.acquisition, tmp_path / "dicom")
    save_acquisition(sim.acquisition, tmp_path / "nifti")
    assert main(["run", str(tmp_path / "dicom"), "-o", str(tmp_path / "out_dicom"),
                 "--preset", "fast", "--no-report"]) == 0
    assert main(["run", "--mag", str(tmp_path / "nifti" / "mag.nii.gz"),
                 "--phase", str(tmp_path / "nifti" / "phase.nii.gz"),
                 "-o", str(tmp_path / "out_nifti"), "--preset", "fast", "--no-report"]) == 0
    chi_d, affine_d, _ = load_nifti(tmp_path / "out_dicom" / "chi.nii.gz")
    chi_n, affine_n, _ = load_nifti(tmp_path / "out_nifti" / "chi.nii.gz")
    # The DICOM reader may store the grid reoriented (closest RAS), but B0 in the world and
    # therefore chi in the world are the same: compare in world-aligned voxel order.
    import nibabel as nib

    from qsmkit.geometry import b0_dir_from_affine

    def canonical(data, affine):
        image = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
        return np.asarray(image.dataobj), image.affine

    chi_d, affine_d = canonical(chi_d, affine_d)
    chi_n, affine_n = canonical(chi_n, affine_n)
    np.testing.assert_allclose(affine_d, affine_n, atol=1e-3)
    np.testing.assert_allclose(np.abs(b0_dir_from_affine(affine_d)),
                               np.abs(b0_dir_from_affine(affine_n)), atol=1e-6)
    both = (chi_d != 0) & (chi_n != 0)
    assert both.sum() > 0.9 * max((chi_d != 0).sum(), (chi_n != 0).sum())
    diff = chi_d[both] - chi_n[both]
    # Quantisation of the DICOM phase (12 bit) and magnitude is the only difference.
    assert np.sqrt(np.mean(diff**2)) < 0.05 * np.sqrt(np.mean(chi_n[both] ** 2))


@pytest.mark.slow
def test_run_dicom_out_writes_a_chi_series(tmp_path):
    """`qsmkit run DICOM --dicom-out`: chi and R2* as MR series that carry the source patient."""
    import pydicom

    from qsmkit.io.dicom_export import write_gre_dicom
    from qsmkit.io.nifti import load_nifti

    ph = head_phantom(shape=(48, 48, 48), voxel_size=(4.0, 4.0, 4.0), seed=2)
    sim = simulate_gre(ph, echo_times_s=TES[:3], b0_tesla=3.0, snr=100.0, seed=2)
    write_gre_dicom(sim.acquisition, tmp_path / "dicom")
    source = pydicom.dcmread(next(p for p in sorted((tmp_path / "dicom").rglob("*"))
                                  if p.is_file()), stop_before_pixels=True)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "dicom"), "-o", str(out), "--preset", "fast",
                 "--dicom-out", "--no-report"]) == 0
    chi, _, _ = load_nifti(out / "chi.nii.gz")
    files = sorted((out / "dicom" / "chi").rglob("*"))
    files = [f for f in files if f.is_file()]
    assert len(files) == chi.shape[2]
    values = []
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.Modality == "MR"
        assert ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        # integers (ppb) without a Modality LUT; the Real World Value Mapping gives ppm
        step = float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope)
        values.append(ds.pixel_array * step)
    values = np.concatenate([v.ravel() for v in values])
    assert abs(values.sum() - chi.sum()) <= step * chi.size
    assert values.max() == pytest.approx(chi.max(), abs=step)
    assert values.min() == pytest.approx(chi.min(), abs=step)
    r2_files = [f for f in (out / "dicom" / "r2star").rglob("*") if f.is_file()]
    assert len(r2_files) == chi.shape[2]
    assert pydicom.dcmread(r2_files[0]).SeriesNumber != pydicom.dcmread(files[0]).SeriesNumber

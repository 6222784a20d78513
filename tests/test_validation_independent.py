"""qsmkit on the independent head phantom (tests/independent_phantom.py): a forward model
that shares no kernel, grid or constant with qsmkit, written as per-echo NIfTI files with
dcm2niix-style sidecars and reconstructed by ``qsmkit run``.

Tolerances (stated, and why): on this textured phantom at 2 x 2 x 2.5 mm even the inversion
run on the TRUE local field reaches only about 32 % NRMSE (TV smooths the +-0.01 ppm texture),
so NRMSE is held to <= 68 % (measured 55.8 % with TV, 64.4 % with the default WH-QSM: the
phantom's grey and white matter are confocal ellipsoidal shells, whose fields are harmonic
inside each compartment, so the weak-harmonic term takes part of the tissue contrast; real
cortex is folded. docs/validation.md keeps both); the slope of the region means (deep grey
nuclei, vein, bleed, calcification, GM, WM, CSF) on their truth to 0.8-1.2 (the voxel-wise
slope is dominated by the texture TV removes, so it is reported, not tested); at least 90 %
of the brain kept in the chi mask (issue 11); deep grey nuclei ordered as in the truth; the
bleed positive and the calcification negative.
"""

from __future__ import annotations

import numpy as np
import pytest

from independent_phantom import GAMMA_BAR_MHZ_PER_T, _field_ppm, make_independent_phantom
from independent_phantom import write_nifti_echoes as write_echoes
from validation_metrics import region_slope, score_chi


def test_phantom_field_of_a_sphere_matches_the_analytic_dipole():
    """The phantom's own forward model: outside a uniformly magnetised sphere the field is
    chi/3 (R/r)^3 (3 cos^2 theta - 1) (Jackson, Classical Electrodynamics, 3rd ed., 5.10)."""
    n, step, radius, chi = 96, 0.5, 5.0, 1.0
    coords = (np.arange(n) + 0.5 - n / 2) * step
    x, y, z = np.meshgrid(coords, coords, coords, indexing="ij")
    sphere = (x ** 2 + y ** 2 + z ** 2 <= radius ** 2).astype(np.float32) * chi
    field = _field_ppm(sphere, (step,) * 3, np.array([0.0, 0.0, 1.0]))
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    ring = (r > 1.6 * radius) & (r < 2.5 * radius)
    volume = sphere.sum() * step ** 3  # the voxelised sphere's own volume
    analytic = chi * volume / (4 * np.pi) / r[ring] ** 3 * (3 * (z[ring] / r[ring]) ** 2 - 1)
    error = np.linalg.norm(field[ring] - analytic) / np.linalg.norm(analytic)
    assert error < 0.05, error


def test_phantom_phase_and_truth_are_consistent():
    ph = make_independent_phantom(shape=(40, 48, 32), voxel_size_mm=(2.0, 2.0, 2.5),
                                  echo_times_s=(0.005, 0.010), snr=None, tilt_deg=20.0,
                                  with_local_field=True)
    assert ph.magnitude.shape == (40, 48, 32, 2)
    assert np.all(np.abs(ph.phase_rad) <= np.pi + 1e-6)
    rotation = ph.affine[:3, :3] / np.asarray(ph.voxel_size_mm)
    assert np.allclose(rotation.T @ [0, 0, 1], ph.b0_dir_voxel)
    assert np.isclose(ph.b0_dir_voxel[2], np.cos(np.radians(20.0)))
    # Truth: deep grey nuclei and lesions hold their tabled chi (partial volume aside).
    assert ph.chi_ppm[ph.labels["pallidum"]].mean() > ph.chi_ppm[ph.labels["thalamus"]].mean()
    assert ph.chi_ppm[ph.labels["bleed"]].mean() > 0.3
    assert ph.chi_ppm[ph.labels["calcification"]].mean() < -0.1
    # The phase difference between echoes is 2 pi gamma_bar B0 dB dTE where the brain is.
    dphase = np.angle(np.exp(1j * (ph.phase_rad[..., 1] - ph.phase_rad[..., 0])))
    assert abs(GAMMA_BAR_MHZ_PER_T - 42.577478) < 1e-9
    inner = ph.labels["wm"]
    assert np.std(dphase[inner]) > 0.05  # a real field, not flat


def _run_and_score(tmp_path, **options):
    import nibabel as nib

    from qsmkit.cli.main import main

    ph = make_independent_phantom(**options)
    mags, phases = write_echoes(ph, tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["run", "--mag", *map(str, mags), "--phase", *map(str, phases), "-o", str(out),
               "--no-report"])
    assert rc == 0
    chi = np.asanyarray(nib.load(out / "chi.nii.gz").dataobj)
    mask = np.asanyarray(nib.load(out / "mask.nii.gz").dataobj) > 0
    scores = score_chi(chi, ph.chi_ppm, ph.brain_mask, mask)
    region = {name: float(chi[lab & mask].mean()) if (lab & mask).any() else np.nan
              for name, lab in ph.labels.items()}
    scores["region_slope"] = region_slope(chi, ph.chi_ppm, ph.labels, mask)
    return ph, scores, region


def _check(scores, region, label):
    text = (f"{label}: NRMSE {scores['nrmse_percent']:.1f} %, region slope "
            f"{scores['region_slope']:.3f} (voxel {scores['slope']:.3f}), "
            f"brain kept {scores['kept_percent']:.1f} %; " + ", ".join(
                f"{k} {v:+.3f}" for k, v in region.items()))
    print(text)
    assert scores["nrmse_percent"] <= 68.0, text
    assert 0.8 <= scores["region_slope"] <= 1.2, text
    assert scores["kept_percent"] >= 90.0, text
    assert region["pallidum"] > region["putamen"] > region["wm"], text
    assert region["caudate"] > region["wm"], text
    assert not np.isfinite(region["bleed"]) or region["bleed"] > 0.2, text
    assert not np.isfinite(region["calcification"]) or region["calcification"] < 0.0, text


@pytest.mark.slow
def test_full_pipeline_oblique_anisotropic(tmp_path):
    """80 x 96 x 64 at 2 x 2 x 2.5 mm, B0 tilted 15 deg, 4 echoes, 3 T, SNR 100."""
    _, scores, region = _run_and_score(
        tmp_path, shape=(80, 96, 64), voxel_size_mm=(2.0, 2.0, 2.5), tilt_deg=15.0, snr=100.0)
    _check(scores, region, "independent phantom, oblique 15 deg, 2x2x2.5 mm")

"""Automatic regularisation weight (``lam="auto"``): principle, behaviour with noise, wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from independent_phantom import make_independent_phantom
from qsmkit.inversion import resolve_lambda, tikhonov, tv
from qsmkit.inversion._common import prepare
from qsmkit.inversion.lam_auto import (
    _corner,
    choose_lambda,
    estimate_noise_hz,
    lcurve_curvature,
    tikhonov_curve,
)
from validation_metrics import score_chi


@pytest.fixture(scope="module")
def phantom():
    return make_independent_phantom(shape=(56, 56, 44), snr=None, with_local_field=True)


def _noisy(ph, noise_hz, seed=1):
    rng = np.random.default_rng(seed)
    f = ph.local_field_hz + noise_hz * rng.standard_normal(ph.local_field_hz.shape)
    return np.where(ph.brain_mask, f, 0).astype(np.float32)


def test_corner_of_an_analytic_curve():
    # log-log curve y = (x - x0)^2 / 2 with x = log(lambda): maximum curvature 1 at x0
    lambdas = np.logspace(-5, 0, 61)
    lam0 = lambdas[30]
    curve = {"curvature": lcurve_curvature(lambdas, np.exp(np.log(lambdas / lam0) ** 2 / 2),
                                           lambdas)}
    assert _corner(curve) == 30
    assert curve["curvature"][30] == pytest.approx(1.0, rel=0.02)


def test_closed_form_curve_matches_the_tikhonov_inversion(phantom):
    ph = phantom
    f = _noisy(ph, 1.0)
    prob = prepare(f, ph.brain_mask, ph.voxel_size_mm, b0_dir=ph.b0_dir_voxel)
    curve = tikhonov_curve(prob, [1e-3, 1e-2])
    chi = tikhonov(f, ph.brain_mask, ph.voxel_size_mm, b0_dir=ph.b0_dir_voxel, lam=1e-2)
    chi_p = np.zeros(prob.shape, np.float32)
    chi_p[prob.inner] = chi[prob.bbox]
    fitted = prob.convolve(chi_p)
    # tikhonov() zeroes chi outside the mask; the curve does not: compare inside the mask
    r = (fitted - prob.field)[prob.mask]
    assert np.sqrt(np.mean(r**2)) == pytest.approx(curve["residual_mask_ppm"][1], rel=0.15)
    assert curve["residual_mask_ppm"][0] < curve["residual_mask_ppm"][1]
    assert curve["regulariser_ppm_per_mm"][0] > curve["regulariser_ppm_per_mm"][1]


def test_noise_estimate_from_the_field(phantom):
    for noise in (0.5, 2.0):
        est = estimate_noise_hz(_noisy(phantom, noise), phantom.brain_mask)
        assert est == pytest.approx(noise, rel=0.2)


@pytest.mark.parametrize("principle", ["gcv", "discrepancy"])
def test_lambda_grows_with_noise(phantom, principle):
    ph = phantom
    lams = [choose_lambda(_noisy(ph, n), ph.brain_mask, ph.voxel_size_mm,
                          b0_dir=ph.b0_dir_voxel, principle=principle)[0]
            for n in (0.5, 1.0, 2.0)]
    assert lams[0] < lams[1] < lams[2], lams


def test_auto_tv_beats_the_old_fixed_weight_on_noisy_data(phantom):
    ph = phantom
    f = _noisy(ph, 2.0)
    kw = dict(b0_dir=ph.b0_dir_voxel, max_iter=60)
    options, record = resolve_lambda("tv", {}, f, ph.brain_mask, ph.voxel_size_mm,
                                     b0_dir=ph.b0_dir_voxel)
    assert record["principle"] == "auto-gcv" and 5e-4 < record["lam"] < 1e-2
    auto = tv(f, ph.brain_mask, ph.voxel_size_mm, **kw, **options)
    fixed = tv(f, ph.brain_mask, ph.voxel_size_mm, lam=5e-4, **kw)
    m = ph.brain_mask
    e_auto = score_chi(auto, ph.chi_ppm, m, m)["nrmse_percent"]
    e_fixed = score_chi(fixed, ph.chi_ppm, m, m)["nrmse_percent"]
    assert e_auto < 0.8 * e_fixed, (e_auto, e_fixed)


def test_auto_is_close_to_small_weights_on_noise_free_data(phantom):
    ph = phantom
    f = _noisy(ph, 0.0)
    kw = dict(b0_dir=ph.b0_dir_voxel, max_iter=60)
    options, record = resolve_lambda("tv", {}, f, ph.brain_mask, ph.voxel_size_mm,
                                     b0_dir=ph.b0_dir_voxel)
    assert record["lam"] < 5e-4
    m = ph.brain_mask
    auto = score_chi(tv(f, m, ph.voxel_size_mm, **kw, **options), ph.chi_ppm, m, m)
    fixed = score_chi(tv(f, m, ph.voxel_size_mm, lam=5e-4, **kw), ph.chi_ppm, m, m)
    assert auto["nrmse_percent"] <= 1.1 * fixed["nrmse_percent"]


def test_user_weight_wins_and_methods_without_auto_keep_defaults(phantom):
    ph = phantom
    f = _noisy(ph, 1.0)
    args = (f, ph.brain_mask, ph.voxel_size_mm)
    opts, rec = resolve_lambda("tv", {"lam": 2e-3}, *args)
    assert opts == {"lam": 2e-3} and rec["principle"] == "user"
    opts, rec = resolve_lambda("tgv", {}, *args)
    assert opts["alpha"][0] == pytest.approx(3 * opts["alpha"][1])
    assert rec["principle"] == "auto-gcv"
    opts, rec = resolve_lambda("tgv", {"alpha": (3e-3, 1e-3)}, *args)
    assert opts["alpha"] == (3e-3, 1e-3) and rec["principle"] == "user"
    opts, rec = resolve_lambda("tkd", {}, *args)
    assert opts == {} and rec["principle"] == "default"
    opts, rec = resolve_lambda("tikhonov", {"lam": "auto"}, *args)
    assert rec["principle"] == "auto-gcv" and opts["lam"] == rec["lam_tikhonov_mm2"]


def _write_field(tmp_path, ph, f):
    from qsmkit.io.nifti import save_nifti

    save_nifti(tmp_path / "local.nii.gz", f, ph.affine)
    save_nifti(tmp_path / "mask.nii.gz", ph.brain_mask.astype(np.uint8), ph.affine)


def test_cli_invert_records_auto_lambda_and_user_lam_wins(tmp_path, phantom):
    from qsmkit.cli.main import main

    _write_field(tmp_path, phantom, _noisy(phantom, 1.0))
    base = ["invert", str(tmp_path / "local.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"),
            "--b0", "3", "--opt", "max_iter=5"]
    assert main([*base, "-o", str(tmp_path / "auto")]) == 0
    rec = json.loads((tmp_path / "auto" / "qsmkit.json").read_text())["inversion"]
    assert rec["principle"] == "auto-gcv" and rec["lam"] > 0
    assert len(rec["curve"]["lambdas"]) == len(rec["curve"]["gcv"]) > 10
    assert main([*base, "--lam", "0.0021", "-o", str(tmp_path / "user")]) == 0
    rec = json.loads((tmp_path / "user" / "qsmkit.json").read_text())["inversion"]
    assert rec == {"method": "whtv", "option": "lam", "lam": 0.0021, "principle": "user"}


def test_run_writes_lambda_curve_and_figure(tmp_path):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti

    ph = make_independent_phantom(shape=(40, 40, 32), voxel_size_mm=(1.5, 1.5, 1.5), snr=200)
    mag = tmp_path / "mag.nii.gz"
    phase = tmp_path / "phase.nii.gz"
    save_nifti(mag, ph.magnitude, ph.affine)
    save_nifti(phase, ph.phase_rad, ph.affine)
    tes = ",".join(str(t) for t in ph.echo_times_s)
    args = ["run", "--mag", str(mag), "--phase", str(phase), "--echo-times", tes, "--b0", "3",
            "--no-report"]
    assert main([*args, "-o", str(tmp_path / "auto")]) == 0
    record = json.loads((tmp_path / "auto" / "qsmkit.json").read_text())
    inv = record["info"]["inversion"]
    assert inv["principle"] == "auto-gcv" and inv["lam"] > 0 and inv["curve"]["gcv"]
    assert (tmp_path / "auto" / "lcurve.png").stat().st_size > 1000


def test_run_lam_option_reaches_the_config():
    from qsmkit.cli.run import _lam_value
    from qsmkit.errors import InputError

    assert _lam_value("0.003") == 0.003 and _lam_value("AUTO") == "auto"
    with pytest.raises(InputError):
        _lam_value("-1")

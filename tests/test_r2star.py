"""R2*/T2* mapping: log-linear, ARLO and nonlinear fits; clipping; the r2star command."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from qsmkit.echo import (
    R2STAR_METHODS,
    ComplexFit,
    r2star_arlo,
    r2star_loglinear,
    r2star_nonlinear,
)
from qsmkit.echo.r2star import R2STAR_MAX_PER_S, T2STAR_MAX_S
from qsmkit.errors import InputError

TES = np.array([0.004, 0.008, 0.012, 0.016, 0.020, 0.024])


def decay(r2star, s0, tes=TES):
    r2star = np.asarray(r2star, dtype=float)
    return (np.asarray(s0)[..., None] * np.exp(-r2star[..., None] * tes)).astype(np.float32)


def r2_volume(shape=(10, 9, 8), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(5.0, 120.0, shape), rng.uniform(50.0, 150.0, shape)


@pytest.mark.parametrize("name", sorted(R2STAR_METHODS))
def test_noiseless_recovery(name):
    r2, s0 = r2_volume()
    fit = R2STAR_METHODS[name](decay(r2, s0), TES)
    # ARLO carries Simpson's error (R2* dTE)^4/180 < 1e-4; the others are exact
    rtol = 1e-3 if name == "arlo" else 1e-4
    np.testing.assert_allclose(fit.r2star_per_s, r2, rtol=rtol)
    np.testing.assert_allclose(fit.s0, s0, rtol=rtol)
    np.testing.assert_allclose(fit.t2star_s, 1.0 / r2, rtol=rtol)
    assert fit.r2star_per_s.dtype == np.float32


@pytest.mark.parametrize("name", sorted(R2STAR_METHODS))
def test_noisy_recovery(name):
    """Rician-free Gaussian noise, SNR 200 at TE=0: mean R2* within 1 %, spread within 5 %."""
    rng = np.random.default_rng(1)
    shape = (40, 40, 10)
    r2 = np.where(np.arange(40)[:, None, None] < 20, 30.0, 80.0) * np.ones(shape)
    mag = decay(r2, np.full(shape, 100.0))
    noisy = np.abs(mag + rng.normal(0, 0.5, mag.shape)).astype(np.float32)
    fit = R2STAR_METHODS[name](noisy, TES)
    for value in (30.0, 80.0):
        region = r2 == value
        est = fit.r2star_per_s[region]
        assert abs(est.mean() / value - 1) < 0.01, (name, value, est.mean())
        assert est.std() / value < 0.05


def test_nonlinear_beats_loglinear_at_the_noise_floor_bias():
    """Long echoes at low SNR: the S^2-weighted log-linear fit is biased (Jensen) more than
    the least-squares fit."""
    rng = np.random.default_rng(2)
    tes = np.linspace(0.003, 0.045, 8)
    shape = (60, 60, 4)
    mag = decay(np.full(shape, 60.0), np.full(shape, 100.0), tes)
    noisy = (mag + rng.normal(0, 3.0, mag.shape)).astype(np.float32).clip(0)
    err_ll = abs(r2star_loglinear(noisy, tes).r2star_per_s.mean() - 60.0)
    err_nl = abs(r2star_nonlinear(noisy, tes).r2star_per_s.mean() - 60.0)
    assert err_nl < err_ll


def test_arlo_needs_equal_spacing_and_three_echoes():
    mag = decay(np.full((3, 3, 3), 20.0), np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="equally spaced"):
        r2star_arlo(mag[..., :4], [0.004, 0.008, 0.013, 0.016])
    with pytest.raises(InputError, match="at least 3"):
        r2star_arlo(mag[..., :2], TES[:2])
    # loglinear and nonlinear accept uneven echoes
    tes = np.array([0.003, 0.005, 0.011, 0.020])
    mag = decay(np.full((3, 3, 3), 45.0), np.ones((3, 3, 3)), tes)
    for method in (r2star_loglinear, r2star_nonlinear):
        np.testing.assert_allclose(method(mag, tes).r2star_per_s, 45.0, rtol=1e-4)


def test_clipping_and_no_nans():
    tes = np.array([0.0005, 0.001, 0.0015, 0.002, 0.0025])  # short echoes resolve R2* > 2000
    shape = (4, 1, 1)
    mag = np.zeros((*shape, tes.size), np.float32)
    mag[0] = decay(np.array([[-40.0]]), np.array([[10.0]]), tes)  # rising signal
    mag[1] = decay(np.array([[3000.0]]), np.array([[10.0]]), tes)  # above the limit
    mag[2] = 0.0  # no signal at all
    mag[3] = decay(np.array([[0.0]]), np.array([[10.0]]), tes)  # no decay
    for name, method in R2STAR_METHODS.items():
        fit = method(mag, tes)
        for arr in (fit.r2star_per_s, fit.t2star_s, fit.s0):
            assert np.all(np.isfinite(arr)), name
        r2 = fit.r2star_per_s[:, 0, 0]
        assert r2[0] == 0.0 and r2[3] == pytest.approx(0.0, abs=1e-2), name
        assert r2[1] == pytest.approx(R2STAR_MAX_PER_S), name
        assert fit.t2star_s[0, 0, 0] == pytest.approx(T2STAR_MAX_S)
        assert fit.t2star_s[1, 0, 0] == pytest.approx(1.0 / R2STAR_MAX_PER_S)
        assert r2[2] == 0.0 and fit.s0[2, 0, 0] == 0.0
        assert fit.s0[3, 0, 0] == pytest.approx(10.0, rel=1e-4)
    assert r2star_loglinear(mag, tes, r2star_max_per_s=100.0).r2star_per_s[1, 0, 0] == 100.0


def test_mask_and_bad_inputs():
    r2, s0 = r2_volume((6, 6, 6))
    mag = decay(r2, s0)
    mask = np.zeros((6, 6, 6), bool)
    mask[1:4, 2:5, :] = True
    fit = r2star_nonlinear(mag, TES, mask=mask)
    assert np.all(fit.r2star_per_s[~mask] == 0) and np.all(fit.t2star_s[~mask] == 0)
    np.testing.assert_allclose(fit.r2star_per_s[mask], r2[mask], rtol=1e-4)
    with pytest.raises(InputError):
        r2star_loglinear(mag[..., :1], TES[:1])
    with pytest.raises(InputError):
        r2star_loglinear(mag, TES * 1000)
    with pytest.raises(InputError):
        r2star_loglinear(-mag, TES)
    with pytest.raises(InputError):
        r2star_loglinear(mag, TES, mask=np.ones((6, 6, 5), bool))
    with pytest.raises(InputError):
        r2star_nonlinear(mag, TES, max_iter=0)


def test_complex_fit_exposes_r2star():
    r2, s0 = r2_volume((5, 5, 5))
    mag = decay(r2, s0)
    fit = ComplexFit(TES).fit(mag, np.zeros_like(mag))
    np.testing.assert_allclose(fit.r2star_per_s, r2, rtol=1e-4)


def _save(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), str(path))
    return path


@pytest.mark.parametrize("method", ["loglinear", "arlo", "nonlinear"])
def test_cli_r2star(tmp_path, method):
    from qsmkit.cli.main import main

    r2, s0 = r2_volume((8, 8, 6))
    mag_path = _save(tmp_path / "mag.nii.gz", decay(r2, s0))
    (tmp_path / "mag.json").write_text(json.dumps({"EchoTimes": TES.tolist()}))
    mask = np.ones((8, 8, 6), bool)
    mask[0] = False
    mask_path = _save(tmp_path / "mask.nii.gz", mask)
    out = tmp_path / "out"
    assert (
        main(
            [
                "r2star",
                "--mag",
                str(mag_path),
                "--method",
                method,
                "--mask",
                str(mask_path),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    r2_map = nib.load(str(out / "r2star.nii.gz")).get_fdata()
    t2_map = nib.load(str(out / "t2star.nii.gz")).get_fdata()
    s0_map = nib.load(str(out / "s0.nii.gz")).get_fdata()
    np.testing.assert_allclose(r2_map[mask], r2[mask], rtol=1e-3)
    np.testing.assert_allclose(t2_map[mask], 1 / r2[mask], rtol=1e-3)
    np.testing.assert_allclose(s0_map[mask], s0[mask], rtol=1e-3)
    assert np.all(r2_map[~mask] == 0)
    record = json.loads((out / "qsmkit.json").read_text())
    assert record["config"]["method"] == method
    assert record["echo_times_s"] == pytest.approx(TES.tolist())


def test_cli_r2star_errors(tmp_path, capsys):
    from qsmkit.cli.main import main

    mag = decay(np.full((4, 4, 4), 30.0), np.ones((4, 4, 4)), TES[:4])
    mag_path = _save(tmp_path / "mag.nii.gz", mag)
    assert (
        main(
            [
                "r2star",
                "--mag",
                str(mag_path),
                "--method",
                "arlo",
                "--echo-times",
                "0.004,0.008,0.013,0.016",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "equally spaced" in capsys.readouterr().err
    assert main(["r2star", "--mag", str(mag_path), "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()

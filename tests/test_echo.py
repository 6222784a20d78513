"""Multi-echo field fitting: complex fit, linear fit, temporal unwrapping, offsets, CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from qsmkit.echo import (
    FIELD_METHODS,
    METHODS,
    ComplexFit,
    field_complex,
    field_linear,
    linear_fit,
    remove_phase_offset,
    temporal_unwrap,
)
from qsmkit.errors import InputError
from qsmkit.unwrap import region_growing

TWO_PI = 2 * np.pi
TES = np.array([0.004, 0.008, 0.012, 0.016, 0.020])


def grid(n):
    x = (np.arange(n) - n / 2 + 0.5) / (n / 2)
    return np.meshgrid(x, x, x, indexing="ij")


def ball(n, radius=0.85):
    x, y, z = grid(n)
    return x**2 + y**2 + z**2 < radius**2


def synthetic(n=32, tes=TES, snr=np.inf, seed=0, field_scale=1.0, r2star=25.0):
    """Smooth field (Hz, spanning several wrap periods), smooth offset, T2* decay."""
    x, y, z = grid(n)
    field = field_scale * (300.0 * x**2 - 150.0 * y + 80.0 * x * z)
    offset = 0.8 * np.sin(1.5 * x) + 0.6 * y + 0.5
    amp = np.exp(-r2star * np.asarray(tes)) * np.ones((n, n, n, 1))
    signal = amp * np.exp(1j * (offset[..., None] + TWO_PI * field[..., None] * tes))
    if np.isfinite(snr):
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
        signal = signal + noise / snr
    mag = np.abs(signal).astype(np.float32)
    phase = np.angle(signal).astype(np.float32)
    return mag, phase, field, offset, ball(n)


def circular(a):
    return np.angle(np.exp(1j * np.asarray(a, dtype=np.float64)))


def test_complex_fit_noiseless_wrapped_field_and_offset():
    mag, phase, field, offset, mask = synthetic()
    fit = ComplexFit(TES).fit(mag, phase, mask=mask)
    dte = 0.004
    assert fit.delta_te_s == pytest.approx(dte)
    fw = fit.field_hz
    assert fw.dtype == np.float32 and fw.shape == mask.shape
    # wrapped into (-1/(2 dTE), 1/(2 dTE)] = (-125, 125] Hz, and the true field wraps
    assert np.all(np.abs(fw[mask]) <= 125.0 + 1e-3)
    assert np.ptp(field[mask]) > 300.0  # spans more than one wrap period
    err = (fw - field)[mask] * dte  # in cycles: an integer
    assert np.abs(err - np.round(err)).max() < 1e-5
    # offset matches the wrapped field: (TE1 / dTE = 1, so it equals the true offset)
    assert np.abs(circular(fit.offset_rad - offset)[mask]).max() < 1e-4
    # field phase = 2 pi f dTE wrapped
    assert np.abs(circular(fit.field_phase_rad - TWO_PI * field * dte)[mask]).max() < 1e-4
    assert fit.residual[mask].max() < 1e-8
    assert np.all(fit.field_hz[~mask] == 0) and np.all(fit.weight[~mask] == 0)


def test_complex_fit_noisy_recovers_field_after_unwrapping():
    """SNR 50 at TE=0 with R2* 25/s: field within 1 Hz RMS, offset within 0.05 rad RMS."""
    mag, phase, field, offset, mask = synthetic(n=32, snr=50.0, seed=1)
    fit = ComplexFit(TES).fit(mag, phase, mask=mask)
    unwrapped = region_growing(fit.field_phase_rad, fit.magnitude_rss, mask)
    total = fit.unwrapped(unwrapped)
    assert not total.is_wrapped and fit.is_wrapped
    err = (total.field_hz - field)[mask]
    alias = np.round(np.median(err) * 0.004)
    assert alias == 0  # median alignment puts this field on the right sheet
    assert np.sqrt(np.mean(err**2)) < 1.0
    assert np.abs(err).max() < 5.0
    off_err = circular(total.offset_rad - offset)[mask]
    assert np.sqrt(np.mean(off_err**2)) < 0.05
    # the propagated noise level matches the observed error (CRLB-like, within 30 %)
    predicted = np.sqrt(np.mean(total.noise_std_hz[mask] ** 2))
    assert 0.7 < np.std(err) / predicted < 1.3
    assert total.weight[mask].mean() == pytest.approx(1.0, rel=1e-5)
    assert np.all(np.isfinite(total.weight))
    assert 0 < np.median(total.residual[mask]) < 0.01


def test_complex_fit_uneven_echoes_refines_after_unwrapping():
    tes = np.array([0.003, 0.005, 0.009, 0.014])
    mag, phase, field, offset, mask = synthetic(n=24, tes=tes, field_scale=1.8)
    fit = ComplexFit(tes).fit(mag, phase, mask=mask)
    assert not fit.model.evenly_spaced and fit.delta_te_s == pytest.approx(0.002)
    assert np.abs(field[mask]).max() > 250.0  # beyond the +-250 Hz principal interval
    total = fit.unwrapped(region_growing(fit.field_phase_rad, fit.magnitude_rss, mask))
    err = (total.field_hz - field)[mask]
    assert np.abs(err - np.round(np.median(err) * 0.002) / 0.002).max() < 1e-3
    assert np.abs(circular(total.offset_rad - offset)[mask]).max() < 1e-3


def test_complex_fit_single_echo():
    tes = [0.005]
    mag, phase, field, _, mask = synthetic(n=12, tes=tes, field_scale=0.2)
    fit = ComplexFit(tes).fit(mag[..., 0], phase[..., 0], mask=mask)
    np.testing.assert_allclose(
        fit.field_hz[mask], phase[..., 0][mask] / (TWO_PI * 0.005), atol=1e-3
    )
    assert np.all(fit.offset_rad == 0)
    assert np.all(np.isfinite(fit.noise_std_hz[mask]))


def test_complex_fit_two_echoes_exact():
    tes = TES[:2]
    mag, phase, field, offset, mask = synthetic(n=16, tes=tes, field_scale=0.3)
    fit = ComplexFit(tes).fit(mag, phase, mask=mask)
    np.testing.assert_allclose(fit.field_hz[mask], field[mask], atol=1e-3)
    assert np.all(np.isfinite(fit.weight)) and fit.weight[mask].mean() == pytest.approx(1.0)


def test_complex_fit_bad_inputs():
    mag, phase, *_ = synthetic(n=8)
    with pytest.raises(InputError):
        ComplexFit([4, 8, 12, 16, 20])  # milliseconds
    with pytest.raises(InputError):
        ComplexFit([0.008, 0.004])
    with pytest.raises(InputError):
        ComplexFit(TES[:3]).fit(mag, phase)
    with pytest.raises(InputError):
        ComplexFit(TES).fit(-mag, phase)
    with pytest.raises(InputError):
        ComplexFit(TES).fit(mag, phase[..., :4])
    with pytest.raises(InputError):
        ComplexFit(TES).fit(mag, phase, mask=np.ones((8, 8, 7), bool))
    fit = ComplexFit(TES).fit(mag, phase)
    with pytest.raises(InputError):
        fit.unwrapped(np.zeros((8, 8, 7)))


def test_linear_fit_exact_on_noiseless_unwrapped_phase():
    rng = np.random.default_rng(4)
    shape = (6, 5, 4)
    field = rng.uniform(-300, 300, shape)
    offset = rng.uniform(-2, 2, shape)
    tes = np.array([0.003, 0.0045, 0.009, 0.014])
    phase = offset[..., None] + TWO_PI * field[..., None] * tes
    mag = rng.uniform(0.2, 1.0, (*shape, 4))
    for magnitude in (None, mag):
        fit = linear_fit(phase, tes, magnitude=magnitude)
        np.testing.assert_allclose(fit.field_hz, field, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(fit.offset_rad, offset, atol=1e-4)
        assert fit.residual_rad.max() < 1e-4
    through_origin = linear_fit(TWO_PI * field[..., None] * tes, tes, fit_offset=False)
    np.testing.assert_allclose(through_origin.field_hz, field, rtol=1e-5, atol=1e-3)
    assert np.all(through_origin.offset_rad == 0)
    one = linear_fit(TWO_PI * field[..., None] * tes[:1], tes[:1], fit_offset=False)
    np.testing.assert_allclose(one.field_hz, field, rtol=1e-5, atol=1e-3)
    with pytest.raises(InputError):
        linear_fit(phase[..., :1], tes[:1])


def test_linear_fit_weights_and_noise():
    """With magnitude^2 weights the noise estimate follows the phase noise."""
    rng = np.random.default_rng(5)
    n = 20000
    tes = TES
    sigma = 0.05
    phase = TWO_PI * 40.0 * tes + rng.normal(0, sigma, (n, 1, 1, tes.size))
    fit = linear_fit(phase, tes)
    sxx = np.sum((tes - tes.mean()) ** 2)
    expected = sigma / np.sqrt(sxx) / TWO_PI
    assert np.std(fit.field_hz) == pytest.approx(expected, rel=0.05)
    assert np.sqrt(np.mean(fit.noise_std_hz**2)) == pytest.approx(expected, rel=0.05)


def test_temporal_unwrap_recovers_all_echoes():
    mag, phase, field, offset, mask = synthetic(n=16, field_scale=0.8)
    true = TWO_PI * field[..., None] * TES  # offset removed
    wrapped = circular(true).astype(np.float32)
    start = wrapped.copy()
    start[..., 0] = true[..., 0]  # echo 1 unwrapped spatially
    out = temporal_unwrap(start, TES, magnitude=mag, mask=mask)
    np.testing.assert_allclose(out[mask], true[mask], atol=1e-3)
    turns = (out - start) / TWO_PI
    assert np.abs(turns - np.round(turns)).max() < 1e-4
    # with the offset present, passing it gives the same result
    with_offset = circular(true + offset[..., None]).astype(np.float32)
    with_offset[..., 0] = true[..., 0] + offset
    out2 = temporal_unwrap(with_offset, TES, offset_rad=offset, mask=mask)
    np.testing.assert_allclose(out2[mask], (true + offset[..., None])[mask], atol=1e-3)


def test_remove_phase_offset_recovers_a_smooth_offset():
    n = 32
    x, y, z = grid(n)
    mask = ball(n)
    offset = 0.2 + 0.9 * x - 0.5 * z  # linear: kept by Gaussian smoothing
    field = 30.0 * y + 20.0
    for tes in (TES, np.array([0.003, 0.0075, 0.012])):  # TE1/dTE integer or not
        phase = circular(offset[..., None] + TWO_PI * field[..., None] * tes).astype(np.float32)
        corrected, est = remove_phase_offset(
            phase, tes, mask=mask, voxel_size=(2, 2, 2), sigma_mm=2.0
        )
        inner = ball(n, 0.6)
        assert np.abs(circular(est - offset)[inner]).max() < 0.02
        expected = circular(TWO_PI * field[..., None] * tes)
        assert np.abs(circular(corrected - expected)[inner]).max() < 0.02
    with pytest.raises(InputError):
        remove_phase_offset(phase[..., :1], tes[:1])


@pytest.mark.parametrize("name", ["complex", "linear"])
@pytest.mark.parametrize("unwrap", ["romeo", "laplacian"])
def test_field_methods_recover_total_field(name, unwrap):
    mag, phase, field, offset, mask = synthetic(n=28, snr=80.0, seed=2)
    fit = FIELD_METHODS[name](mag, phase, TES, mask=mask, voxel_size=(1.5, 1.5, 1.5), unwrap=unwrap)
    err = (fit.field_hz - field)[mask]
    assert np.sqrt(np.mean(err**2)) < 1.0, name
    assert np.all(np.isfinite(fit.weight)) and fit.weight[mask].mean() == pytest.approx(1.0)
    assert fit.residual.shape == mask.shape
    assert np.sqrt(np.mean(circular(fit.offset_rad - offset)[mask] ** 2)) < 0.1
    assert METHODS is FIELD_METHODS


def test_field_methods_on_head_phantom():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((48, 48, 48), (4.0, 4.0, 4.0), lesions=False)
    sim = phantom.simulate_gre(ph, snr=100.0)
    for method in (field_complex, field_linear):
        fit = method(
            sim.magnitude, sim.phase, sim.echo_times_s, mask=sim.mask, voxel_size=sim.voxel_size
        )
        err = (fit.field_hz - sim.field_hz)[sim.mask]
        assert np.sqrt(np.mean(err**2)) < 0.5, method.__name__  # measured 0.15 Hz


# -- command line -----------------------------------------------------------------------


def _save(path, data, affine=None):
    affine = np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def test_cli_fieldmap_end_to_end(tmp_path):
    from qsmkit.cli.main import main

    mag, phase, field, offset, mask = synthetic(n=24, snr=100.0, seed=3)
    mag_path = _save(tmp_path / "mag.nii.gz", mag)
    phase_path = _save(tmp_path / "phase.nii.gz", phase)
    mask_path = _save(tmp_path / "mask.nii.gz", mask)
    out = tmp_path / "out"
    argv = [
        "fieldmap",
        "--mag",
        str(mag_path),
        "--phase",
        str(phase_path),
        "--echo-times",
        ",".join(str(t) for t in TES),
        "--mask",
        str(mask_path),
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    result = nib.load(str(out / "field_hz.nii.gz")).get_fdata()
    err = (result - field)[mask]
    assert np.sqrt(np.mean(err**2)) < 1.0
    for name in ("offset_rad.nii.gz", "fit_residual.nii.gz", "field_weight.nii.gz"):
        data = nib.load(str(out / name)).get_fdata()
        assert data.shape == mask.shape and np.all(np.isfinite(data))
    record = json.loads((out / "qsmkit.json").read_text())
    assert record["command"] == "fieldmap"
    assert record["echo_times_s"] == pytest.approx(TES.tolist())
    assert record["wrap_period_hz"] == pytest.approx(250.0)
    assert main(argv) == 2  # existing outputs are not replaced without --force
    assert main([*argv, "--force", "--unwrap", "laplacian", "--method", "linear"]) == 0


def test_cli_fieldmap_per_echo_files_sidecars_and_siemens_units(tmp_path):
    from qsmkit.cli.main import main

    tes = TES[:3]
    mag, phase, field, _, mask = synthetic(n=16, tes=tes, field_scale=0.5)
    mags, phases = [], []
    for e, te in enumerate(tes):
        mags.append(_save(tmp_path / f"mag_e{e + 1}.nii.gz", mag[..., e]))
        siemens = np.round(phase[..., e] / np.pi * 4096).clip(-4096, 4095)
        phases.append(_save(tmp_path / f"phase_e{e + 1}.nii.gz", siemens))
        (tmp_path / f"phase_e{e + 1}.json").write_text(json.dumps({"EchoTime": te}))
    out = tmp_path / "out"
    assert (
        main(["fieldmap", "--mag", *map(str, mags), "--phase", *map(str, phases), "-o", str(out)])
        == 0
    )
    result = nib.load(str(out / "field_hz.nii.gz")).get_fdata()
    inner = mask & (mag[..., 0] > 0)
    assert np.abs((result - field)[inner]).max() < 1.0  # Siemens quantisation: ~1e-3 rad
    record = json.loads((out / "qsmkit.json").read_text())
    assert any("Siemens" in note for note in record["notes"])


def test_cli_fieldmap_errors(tmp_path, capsys):
    from qsmkit.cli.main import main

    mag, phase, *_ = synthetic(n=8, tes=TES[:2])
    mag_path = _save(tmp_path / "mag.nii.gz", mag)
    phase_path = _save(tmp_path / "phase.nii.gz", phase)
    base = ["fieldmap", "--mag", str(mag_path), "--phase", str(phase_path)]
    assert main([*base, "-o", str(tmp_path / "a")]) == 2  # no echo times anywhere
    assert "echo times" in capsys.readouterr().err
    assert main([*base, "--echo-times", "4,8", "-o", str(tmp_path / "b")]) == 2  # ms
    assert main([*base, "--echo-times", "0.004,0.008,0.012", "-o", str(tmp_path / "c")]) == 2
    other = _save(tmp_path / "other.nii.gz", mag[:, :, :4])
    assert (
        main(
            [
                "fieldmap",
                "--mag",
                str(other),
                "--phase",
                str(phase_path),
                "--echo-times",
                "0.004,0.008",
                "-o",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "a").exists()

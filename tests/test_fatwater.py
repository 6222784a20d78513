"""Fat–water separation: signal model, accuracy of PDFF / field / R2*, swaps, input errors."""

import numpy as np
import pytest

from qsmkit.body.fatwater import (
    FAT_PEAK_AMPLITUDES,
    FAT_PEAKS_PPM,
    FatWaterModel,
    chemical_shift_signal,
    fat_basis,
    pdff_percent,
)
from qsmkit.errors import InputError
from qsmkit.phantom.liver import LiverRegion, default_echo_times, liver_phantom, simulate_liver_gre
from qsmkit.units import GAMMA_BAR_HZ_PER_T


def _grid_data(b0, pdff, field, r2, snr, seed, shape):
    """Complex signal of blocks of voxels, one block per entry of ``pdff``."""
    rng = np.random.default_rng(seed)
    tes = default_echo_times(b0)
    n = len(pdff)
    water = np.repeat((1 - np.asarray(pdff) / 100.0)[:, None, None], shape[1], 1)
    fat = np.repeat((np.asarray(pdff) / 100.0)[:, None, None], shape[1], 1)
    water = np.repeat(water, shape[2], 2)
    fat = np.repeat(fat, shape[2], 2)
    x, y, z = np.meshgrid(np.arange(n), np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    phase0 = 0.4 + 0.3 * np.sin(y / 5.0)
    s = chemical_shift_signal(water * np.exp(1j * phase0), fat * np.exp(1j * phase0),
                              field(x, y, z), r2, tes, b0)
    if snr:
        s = s + (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)) / snr
    return tes, np.abs(s), np.angle(s)


def test_fat_basis_is_the_normalised_six_peak_spectrum():
    assert len(FAT_PEAKS_PPM) == len(FAT_PEAK_AMPLITUDES) == 6
    tes = np.array([0.0, 1e-3, 2.3e-3])
    c = fat_basis(tes, 3.0)
    assert abs(c[0] - 1.0) < 1e-12
    # one peak reduces to a pure precession at -3.4 ppm of the Larmor frequency
    single = fat_basis(tes, 1.5, peaks_ppm=[-3.4], amplitudes=[2.0])
    f = -3.4e-6 * GAMMA_BAR_HZ_PER_T * 1.5
    np.testing.assert_allclose(single, np.exp(2j * np.pi * f * tes), atol=1e-12)
    # the spectrum dephases: |c| < 1 after a few ms
    assert abs(fat_basis([3e-3], 3.0)[0]) < 0.95


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_noise_free_data_are_recovered_over_all_fat_fractions(b0):
    pdff = np.linspace(0, 100, 21)

    def field(x, y, z):  # spans several aliasing periods, smooth
        return 40.0 * x + 120.0 * np.sin(y / 6.0) - 30.0 * z

    r2 = 60.0 * b0
    tes, mag, ph = _grid_data(b0, pdff, field, r2, None, 0, (21, 12, 3))
    fit = FatWaterModel(tes, b0).fit(mag, ph)
    truth = np.broadcast_to(pdff[:, None, None], fit.pdff_percent.shape)
    np.testing.assert_allclose(fit.pdff_percent, truth, atol=0.05)
    x, y, z = np.meshgrid(np.arange(21), np.arange(12), np.arange(3), indexing="ij")
    err = fit.field_hz - field(x, y, z)
    assert np.abs(err - np.round(err / fit.info["aliasing_period_hz"])
                  * fit.info["aliasing_period_hz"]).max() < 0.05
    np.testing.assert_allclose(fit.r2star_per_s, r2, atol=0.05)
    np.testing.assert_allclose(np.abs(fit.water) + np.abs(fit.fat), 1.0, atol=1e-3)


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_pdff_accuracy_with_noise_over_0_to_40_percent(b0):
    pdff = np.array([0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0])

    def field(x, y, z):
        return 25.0 * y + 10.0 * z

    tes, mag, ph = _grid_data(b0, pdff, field, 45.0 * b0, 40.0, 1, (7, 20, 8))
    fit = FatWaterModel(tes, b0).fit(mag, ph)
    est = fit.pdff_percent.reshape(7, -1).mean(axis=1)
    assert np.abs(est - pdff).max() < 2.0, est
    # magnitude discrimination removes the noise bias of |F| / (|W| + |F|) near 0 %
    naive = 100 * np.abs(fit.fat) / (np.abs(fit.water) + np.abs(fit.fat))
    assert naive[0].mean() > est[0] + 0.5


def test_pdff_percent_magnitude_discrimination():
    w = np.array([1.0, 0.0, 0.7 + 0.1j, 0.0])
    f = np.array([0.0, 1.0, 0.3 + 0.0429j, 0.0])
    out = pdff_percent(w, f)
    np.testing.assert_allclose(out[:3], [0.0, 100.0, 30.0], atol=0.05)
    assert out[3] == 0.0  # empty voxel


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_no_fat_water_swaps_in_the_liver_phantom(b0):
    regions = [LiverRegion(1.0, 0.0), LiverRegion(3.0, 10.0), LiverRegion(5.0, 25.0),
               LiverRegion(2.0, 40.0)]
    ph = liver_phantom((48, 36, 10), (8.0, 8.0, 8.0), liver_regions=regions, nodules=())
    sim = simulate_liver_gre(ph, None, b0, snr=60, seed=3)
    body = ph.body_mask
    fit = FatWaterModel(sim.echo_times_s, b0).fit(sim.magnitude, sim.phase, mask=body)
    err = fit.pdff_percent - ph.pdff_percent
    liver = ph.liver_mask
    assert np.mean(np.abs(err[liver]) > 20) == 0.0  # a swap moves PDFF by > 20 points
    sat = ph.tissue == 1
    assert np.mean(fit.pdff_percent[sat] < 50) < 0.002
    period = fit.info["aliasing_period_hz"]
    ferr = fit.field_hz - sim.field_hz
    ferr = ferr - np.median(ferr[liver])
    # the field is right (not off by the fat shift) and unwrapped in space across the liver
    assert np.median(np.abs(ferr[liver])) < 3.0
    assert np.mean(np.abs(ferr[liver]) > 0.1 * period) < 0.005
    for r in ph.regions:
        sel = ph.tissue == r["label"]
        assert abs(fit.pdff_percent[sel].mean() - r["pdff_percent"]) < 2.0


def test_fat_corrected_r2star_and_field_weight():
    pdff = np.array([0.0, 20.0, 40.0])
    b0 = 3.0
    tes = default_echo_times(b0)
    r2 = np.array([50.0, 300.0, 900.0])
    water = (1 - pdff / 100)[:, None, None] * np.ones((3, 3, 20))
    fat = (pdff / 100)[:, None, None] * np.ones((3, 3, 20))
    r2map = r2[None, :, None] * np.ones((3, 3, 20))
    rng = np.random.default_rng(7)
    s = chemical_shift_signal(water, fat, 30.0, r2map, tes, b0)
    s = s + (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)) / 200
    fit = FatWaterModel(tes, b0).fit(np.abs(s), np.angle(s))
    for j, rate in enumerate(r2):
        med = np.median(fit.r2star_per_s[:, j])
        assert abs(med - rate) / rate < 0.05
    w = fit.field_weight()
    # faster decay -> less precise field -> lower weight, for every fat fraction
    assert np.all(np.diff(w.mean(axis=2), axis=1) < 0)
    assert np.isclose(fit.noise_sd, 1 / 200, rtol=0.2)


def test_input_errors():
    tes = default_echo_times(3.0)
    mag = np.ones((4, 4, 2, 6), np.float32)
    ph = np.zeros_like(mag)
    with pytest.raises(InputError, match="at least 3 echoes"):
        FatWaterModel(tes[:2], 3.0)
    with pytest.raises(InputError, match="milliseconds"):
        FatWaterModel(tes * 1000, 3.0)
    with pytest.raises(InputError, match="increasing"):
        FatWaterModel(tes[::-1], 3.0)
    with pytest.raises(InputError, match="tesla"):
        FatWaterModel(tes, 300.0)
    model = FatWaterModel(tes, 3.0)
    with pytest.raises(InputError, match="echo times"):
        model.fit(mag[..., :5], ph[..., :5])
    with pytest.raises(InputError, match="both be"):
        model.fit(mag, ph[..., 0])
    bad = mag.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        model.fit(bad, ph)
    with pytest.raises(InputError, match="empty"):
        model.fit(mag, ph, mask=np.zeros((4, 4, 2), bool))
    with pytest.raises(InputError, match="same length"):
        fat_basis(tes, 3.0, peaks_ppm=[-3.4, -2.6], amplitudes=[1.0])


def test_noise_sd_is_measured_where_the_model_holds():
    """Fat whose spectrum is not qsmkit's inflates its residual; the noise SD must not follow.

    Written for this test: half the block is water (R2* 40 s^-1), half fat with a three-peak
    spectrum of its own (-3.5, -2.6, +0.6 ppm; 0.7, 0.2, 0.1), complex noise of known SD."""
    b0, sigma = 3.0, 0.02
    rng = np.random.default_rng(4)
    tes = 1.2e-3 * np.arange(1, 7)
    shape = (24, 24, 4)
    hz = 42.58e6 * b0 * 1e-6
    fat_sig = sum(a * np.exp(2j * np.pi * p * hz * tes)
                  for p, a in ((-3.5, 0.7), (-2.6, 0.2), (0.6, 0.1)))
    fat_part = np.zeros(shape, bool)
    fat_part[:, 12:] = True
    field = 15.0 * np.linspace(-1, 1, shape[0])[:, None, None] * np.ones(shape)
    body = np.where(fat_part[..., None], 0.9 * fat_sig + 0.1, 1.0)
    s = body * np.exp((2j * np.pi * field[..., None] - 40.0) * tes + 0.5j)
    s = s + sigma * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
    fit = FatWaterModel(tes, b0).fit(np.abs(s), np.angle(s), mask=np.ones(shape, bool))
    from scipy.stats import chi2

    all_voxels = np.sqrt(np.median(fit.residual) / chi2.ppf(0.5, 2 * (tes.size - 3)))
    assert all_voxels > 1.15 * sigma  # the fat's model error is there to be ignored
    assert fit.noise_sd == pytest.approx(sigma, rel=0.08)

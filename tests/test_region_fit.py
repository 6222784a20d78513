"""Pooled fat–water fit of decayed regions (body/region_fit.py) on signals it did not make.

The signals come from the independent abdomen phantom's own fat spectrum (triglyceride
chemistry, tests/independent_abdomen.py) and gyromagnetic ratio, with random receive phases,
proton densities, a smooth field the fit is not told about and complex Gaussian noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from independent_abdomen import GAMMA_BAR_MHZ_PER_T, fat_spectrum
from qsmkit.body.region_fit import region_fatwater_fit

TES = 1.2e-3 * np.arange(1, 7)


def _region(b0, pdff, r2, *, n=400, snr=60.0, offset_hz=25.0, seed=0):
    rng = np.random.default_rng(seed)
    shifts, amps = fat_spectrum(2.9)
    fat = (amps[None, :] * np.exp(2j * np.pi * TES[:, None] * shifts[None, :]
                                  * GAMMA_BAR_MHZ_PER_T * b0)).sum(axis=1)
    pd = rng.uniform(0.8, 1.2, n) * np.exp(1j * rng.uniform(-np.pi, np.pi, n))
    field = rng.normal(0, 3.0, n)  # what the field map says per voxel
    true_field = field + offset_hz
    s = pd[:, None] * ((1 - pdff / 100) + pdff / 100 * fat[None, :]) * np.exp(
        (-r2 + 2j * np.pi * true_field[:, None]) * TES[None, :])
    sigma = 1.0 / snr / np.sqrt(2)  # per channel; first-echo SNR of the undecayed signal
    s = s + rng.normal(0, sigma, s.shape) + 1j * rng.normal(0, sigma, s.shape)
    return s, field, sigma


@pytest.mark.parametrize("b0,pdff,r2", [(1.5, 0.0, 1370.0), (1.5, 15.0, 1370.0),
                                        (1.5, 30.0, 1370.0), (3.0, 5.0, 1100.0),
                                        (3.0, 30.0, 700.0)])
def test_pdff_and_r2star_of_decayed_regions(b0, pdff, r2):
    s, field, sigma = _region(b0, pdff, r2)
    fit = region_fatwater_fit(s, field, TES, b0, sigma)
    assert abs(fit.pdff_percent - pdff) <= 2.0, fit
    assert abs(fit.r2star_per_s - r2) <= 0.08 * r2, fit
    assert abs(fit.field_offset_hz - 25.0) <= 10.0, fit
    # the reported precision is honest: the error lies within 3.5 SD, plus 1.5 points for
    # the difference between this fat spectrum and qsmkit's
    assert abs(fit.pdff_percent - pdff) <= 3.5 * fit.pdff_sd_percent + 1.5, fit


def test_no_noise_floor_bias_where_averaging_voxel_magnitudes_would_be_biased():
    """Unbiased to 1.5 points at first-echo SNR 11 and second-echo SNR 2 (3 x 2000 voxels)."""
    est = []
    for k in range(3):
        s, field, sigma = _region(1.5, 10.0, 1370.0, n=2000, seed=k)
        est.append(region_fatwater_fit(s, field, TES, 1.5, sigma).pdff_percent)
    assert abs(np.mean(est) - 10.0) < 1.5, est


def test_signal_gone_is_reported_as_unmeasurable():
    s, field, sigma = _region(3.0, 15.0, 2740.0)
    fit = region_fatwater_fit(s, field, TES, 3.0, sigma)
    assert not (fit.pdff_sd_percent <= 2.0)  # flagged: the data cannot say
    rng = np.random.default_rng(3)
    noise = rng.normal(0, sigma, s.shape) + 1j * rng.normal(0, sigma, s.shape)
    fit0 = region_fatwater_fit(noise, field, TES, 3.0, sigma)
    assert not np.isfinite(fit0.pdff_percent) or fit0.pdff_sd_percent > 5.0

"""The independent abdomen phantom's own physics (issue 13), checked against analytic results
and a fit written here, so that it can be trusted as a reference for ``qsmkit liver``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from independent_abdomen import (
    PATCH_LIC_MG_PER_G,
    PATCH_PDFF_PERCENT,
    dipole_field_ppm,
    fat_spectrum,
    make_abdomen_phantom,
    r2star_water_per_s,
)


def test_fat_spectrum_is_normalised_and_not_the_toolbox_table():
    shifts, amps = fat_spectrum()
    assert amps.shape == (6,) and np.isclose(amps.sum(), 1.0)
    assert np.argmax(amps) == 1 and -3.5 < shifts[1] < -3.3  # methylene dominates
    toolbox = np.array([0.087, 0.693, 0.128, 0.004, 0.039, 0.048])
    assert np.max(np.abs(amps - toolbox)) > 0.02


def test_sphere_field_matches_analytic_dipole():
    n, step, radius, dchi = 96, 1.0, 8.0, 1.0
    x = (np.arange(n) - n / 2) * step
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    r = np.sqrt(X**2 + Y**2 + Z**2)
    # smooth the sphere edge by 4x supersampling of the boundary voxels
    sub = np.zeros_like(r)
    offs = (np.arange(4) - 1.5) / 4 * step
    for dx in offs:
        for dy in offs:
            for dz in offs:
                sub += np.sqrt((X + dx) ** 2 + (Y + dy) ** 2 + (Z + dz) ** 2) <= radius
    chi = (sub / 64.0 * dchi).astype(np.float32)
    field = dipole_field_ppm(chi, (step, step, step), pad_factor=2.0)
    cos2 = np.where(r > 0, Z**2 / np.maximum(r, 1e-9) ** 2, 0)
    analytic = dchi / 3.0 * (radius / np.maximum(r, 1e-9)) ** 3 * (3 * cos2 - 1)
    outside = (r > 1.5 * radius) & (r < 3 * radius)
    err = np.abs(field[outside] - analytic[outside])
    peak = 2 * dchi / 3.0  # field on the pole at the surface
    assert np.max(err) < 0.05 * peak * (1 / 1.5**3) * 3
    # on the z axis at 2 radii: 2/3 * dchi / 8 within 5 %
    i = n // 2
    pole = field[i, i, i + int(2 * radius / step)]
    assert pole == pytest.approx(2 * dchi / 3 / 8, rel=0.05)
    inside = r < 0.6 * radius
    assert np.max(np.abs(field[inside])) < 0.05 * peak


GAMMA_BAR_MHZ_PER_T = 42.577  # proton gamma / 2 pi (CODATA), written here on purpose


def _fit_voxel(signal, te, b0, shifts_ppm, amps):
    """Water/fat/field/R2* fit of one voxel: grid search then a local complex least squares."""
    fat = np.sum(amps[None, :] * np.exp(2j * np.pi * te[:, None] * shifts_ppm[None, :]
                                         * GAMMA_BAR_MHZ_PER_T * b0), axis=1)
    best = None
    for psi in np.arange(-600, 600, 2.0):
        for r2 in (10, 30, 60, 120, 250, 500, 1000, 2000):
            a = np.stack([np.ones_like(te), fat], 1) * np.exp((2j * np.pi * psi - r2) * te)[:, None]
            coef, *_ = np.linalg.lstsq(a, signal, rcond=None)
            res = np.linalg.norm(a @ coef - signal)
            if best is None or res < best[0]:
                best = (res, psi, r2, coef)
    _, psi0, r20, c0 = best
    phi0 = np.angle(c0[0] + c0[1])

    def resid(p):
        w, f, phi, psi, r2 = p
        model = (w + f * fat) * np.exp(1j * phi) * np.exp((2j * np.pi * psi - r2) * te)
        d = model - signal
        return np.concatenate([d.real, d.imag])

    sol = scipy.optimize.least_squares(
        resid, [abs(c0[0]), abs(c0[1]), phi0, psi0, r20],
        bounds=([0, 0, -np.inf, -2000, 0], [np.inf, np.inf, np.inf, 2000, 5000]))
    w, f, _, psi, r2 = sol.x
    return 100 * f / (w + f), r2, psi


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_pure_patch_pdff_r2star_and_field_recoverable(b0):
    te = 1.2e-3 * np.arange(1, 7)
    ph = make_abdomen_phantom(shape=(64, 64, 8), voxel_mm=(4.0, 4.0, 8.0), echo_times_s=te,
                              b0_tesla=b0, snr=np.inf)
    assert set(np.unique(ph.patch_labels)) == set(range(25))
    signal = ph.magnitude * np.exp(1j * ph.phase)
    checked = 0
    for p in ph.patches:
        if p["lic_mg_per_g"] > 12:  # signal gone after two echoes: not a simple-fit case
            continue
        m = ph.patch_labels == p["label"]
        idx = np.argwhere(m)
        centre = tuple(idx[np.argmin(((idx - idx.mean(0)) ** 2).sum(1))])
        pdff, r2, psi = _fit_voxel(signal[centre], te, b0, ph.fat_shifts_ppm, ph.fat_amplitudes)
        assert pdff == pytest.approx(p["pdff_percent"], abs=1.0), p
        assert r2 == pytest.approx(p["r2star_per_s"], rel=0.05), p
        assert psi == pytest.approx(ph.field_hz[centre], abs=3.0), p
        checked += 1
    assert checked == 16


def test_abdomen_geometry_truth_and_noise():
    ph = make_abdomen_phantom(shape=(64, 64, 8), voxel_mm=(4.0, 4.0, 8.0), b0_tesla=1.5)
    assert ph.magnitude.shape == (64, 64, 8, 6) and ph.magnitude.dtype == np.float32
    assert len(ph.patches) == len(PATCH_LIC_MG_PER_G) * len(PATCH_PDFF_PERCENT) == 24
    for p in ph.patches:
        m = ph.patch_labels == p["label"]
        assert m.sum() > 0 and np.all(ph.liver_mask[m])
        assert np.allclose(ph.pdff_percent[m], p["pdff_percent"], atol=1e-3)
        assert np.allclose(ph.chi_ppm[m], p["chi_ppm"], atol=1e-4)
    # air: stomach inside the slab; air around the body gives a strong background field
    assert np.any(ph.tissue == 5)
    assert np.ptp(ph.field_hz[ph.liver_mask]) > 100.0
    # noise: sigma = liver first-echo magnitude / 60 in the air outside the body
    air = ph.tissue == 0
    ref = ph.magnitude[..., 0][ph.liver_mask].mean()
    rayleigh_mean = ph.magnitude[..., 0][air].mean()
    sigma = rayleigh_mean / np.sqrt(np.pi / 4)  # complex noise of total sigma: |n| mean
    assert ref / sigma == pytest.approx(60, rel=0.15)


def test_r2star_calibration_wood_2005_and_field_scaling():
    r2 = r2star_water_per_s(np.array([5.0, 20.0]), 1.5)
    assert np.allclose(0.0254 * r2 + 0.202, [5.0, 20.0])
    assert np.allclose(r2star_water_per_s(20.0, 3.0), 2 * r2star_water_per_s(20.0, 1.5))

"""Published liver-iron calibrations: anchor points from the papers, ranges and thresholds.

The expected numbers are written out from the cited equations, not read from the module.
"""

import inspect

import numpy as np
import pytest

from qsmkit.body import calibration as C
from qsmkit.body import liver as L
from qsmkit.errors import InputError


def test_wood_2005_anchor_at_1p5_tesla():
    # Wood JC et al. Blood 2005;106:1460: LIC = 0.0254 R2* + 0.202 (mg/g dw, R2* in 1/s)
    wood = C.R2STAR_CALIBRATIONS["wood2005"]
    assert wood.b0_tesla == 1.5
    assert np.isclose(wood.lic(500.0), 12.902)
    assert np.isclose(C.lic_from_r2star(500.0, 1.5, "wood2005"), 12.902)
    # its biopsy range 1.33-32.9 mg/g maps to R2* of about 44-1287 1/s
    lo, hi = wood.r2star_range
    assert np.isclose(lo, (1.33 - 0.202) / 0.0254) and np.isclose(hi, (32.9 - 0.202) / 0.0254)


def test_hankins_and_hernando_anchors():
    # Hankins JS et al. Blood 2009;113:4853: LIC = 0.028 R2* - 0.45
    assert np.isclose(C.lic_from_r2star(500.0, 1.5, "hankins2009"), 13.55)
    # Hernando D et al. Radiology 2023;306:e213256: 1.5 T 0.02603 R2* - 0.16; 3 T 0.01349 R2* - 0.03
    assert np.isclose(C.lic_from_r2star(500.0, 1.5), 12.855)
    assert np.isclose(C.lic_from_r2star(500.0, 3.0), 6.715)


def test_3_tesla_r2star_is_about_twice_1p5_tesla():
    # the same LIC needs about twice the R2* at 3 T (Storey 2007; Hernando 2023)
    cal15, cal3 = C.select_calibration(1.5), C.select_calibration(3.0)
    for lic in (3.0, 7.0, 15.0, 30.0):
        ratio = cal3.r2star(lic) / cal15.r2star(lic)
        assert 1.8 < ratio < 2.1, (lic, ratio)
    # a 1.5 T calibration refuses 3 T data
    with pytest.raises(InputError, match="field"):
        C.select_calibration(3.0, "wood2005")


def test_r2star_outside_the_calibrated_range_is_flagged_not_extrapolated():
    # 2000 1/s at 1.5 T is beyond Wood's 32.9 mg/g (R2* ~1287 1/s)
    lic, flag = C.lic_from_r2star_checked([30.0, 500.0, 2000.0, np.nan], 1.5, "wood2005")
    assert flag.tolist() == [-1, 0, 1, 1]
    assert np.isclose(lic[1], 12.902)
    assert np.isnan(lic[2]) and np.isnan(lic[3])
    assert np.isclose(lic[0], 0.0254 * 30 + 0.202)  # below range: kept, flagged
    # default 1.5 T calibration: 0.3-43 mg/g -> R2* up to (43 + 0.16) / 0.02603 = 1658 1/s
    assert C.select_calibration(1.5).in_range(1500.0)
    assert not C.select_calibration(1.5).in_range(1700.0)


def test_chi_of_one_ppm_maps_to_the_in_vivo_lic():
    # Buelo CJ et al. MRM 2025;93:330: 0.112 ppm per mg Fe/g dw (centres 0.102-0.123)
    assert np.isclose(C.lic_from_chi(1.0), 1.0 / 0.112)
    assert 8.1 < C.lic_from_chi(1.0) < 9.9  # within the range of the four centres
    assert np.isclose(C.lic_from_chi(1.0, slope_ppm=C.chi_lic_slope("physical")), 3.33 / 1.6)
    # fat part removed first: 0.6 ppm x PDFF (Hernando 2013)
    assert np.isclose(C.lic_from_chi(1.0 + 0.6 * 0.2, 20.0), 1.0 / 0.112)
    # default everywhere: module constant, analysis default, and the name table
    assert C.CHI_PER_LIC_PPM == C.CHI_LIC_SLOPES[C.DEFAULT_CHI_LIC] == 0.112
    assert L.lic_from_chi is C.lic_from_chi and L.CHI_PER_LIC_PPM == 0.112
    assert inspect.signature(L.analyse_liver).parameters["chi_slope"].default == "buelo2025"
    with pytest.raises(InputError, match="unknown"):
        C.chi_lic_slope("nonsense")
    with pytest.raises(InputError, match="positive"):
        C.chi_lic_slope(-0.1)


def test_physical_slope_is_about_four_times_the_in_vivo_one():
    ratio = C.chi_lic_slope("physical") / C.chi_lic_slope("buelo2025")
    assert 3.8 < ratio < 4.7
    assert np.isclose(C.chi_lic_slope("physical"), 1.6 / 3.33)


def test_clinical_thresholds():
    # Olivieri & Brittenham 1997: 3, 7, 15 mg/g dw
    t = C.LIC_THRESHOLDS_MG_PER_G
    assert (t["mild"], t["moderate"], t["severe"]) == (3.0, 7.0, 15.0)
    cats = C.lic_category([1.0, 2.5, 2.99, 3.0, 6.9, 7.0, 14.9, 15.0, 40.0, np.nan])
    assert cats.tolist() == ["normal", "borderline", "borderline", "mild", "mild", "moderate",
                             "moderate", "severe", "severe", "unknown"]
    # chi = 1.0 ppm is "moderate" in vivo but would be "borderline" with the physical slope
    assert C.lic_category(C.lic_from_chi(1.0)).item() == "moderate"
    assert C.lic_category(C.lic_from_chi(1.0, slope_ppm=0.48)).item() == "borderline"


def test_every_calibration_is_documented():
    for cal in C.R2STAR_CALIBRATIONS.values():
        assert cal.source and cal.b0_tesla in (1.5, 3.0)
        assert 0 < cal.lic_range[0] < cal.lic_range[1]
    for cal in C.CHI_LIC_CALIBRATIONS.values():
        assert cal.source and cal.slope_ppm > 0


def test_calibration_spread_at_normal_iron():
    # the published 1.5 T calibrations, written out: Wood 2005 0.0254 R2* + 0.202, Hankins
    # 2009 0.028 R2* - 0.45, Hernando 2023 0.02603 R2* - 0.16 (mg/g dw)
    lo, hi = C.calibration_spread(31.0, 1.5)
    assert lo == pytest.approx(0.028 * 31 - 0.45) and hi == pytest.approx(0.0254 * 31 + 0.202)
    lo, hi = C.calibration_spread(268.0, 1.5)
    assert (hi - lo) / (0.02603 * 268 - 0.16) < 0.05
    # at 3 T the 1.5 T calibrations apply to the R2* of the same LIC at 1.5 T (Hernando 2023
    # at both fields: 1.349e-2 R2* - 0.03 at 3 T): 65 s^-1 is 35.7 s^-1 at 1.5 T
    r2_15 = (1.349e-2 * 65 - 0.03 + 0.16) / 0.02603
    lo, hi = C.calibration_spread(65.0, 3.0)
    assert lo == pytest.approx(0.028 * r2_15 - 0.45) and hi == pytest.approx(0.0254 * r2_15 + 0.202)
    lo, hi = C.calibration_spread(520.0, 3.0)  # 7 mg/g: they agree
    assert (hi - lo) / (1.349e-2 * 520 - 0.03) < 0.05
    assert np.isnan(C.calibration_spread(7.0, 7.0)[0])  # no calibration at 7 T


def test_liver_row_flags_a_calibration_dependent_lic():
    rows = {}
    for r2 in (31.0, 268.0):
        rows[r2] = _one_region_analysis(r2).rows[0]
    assert "lic_r2star_calibration_spread" in rows[31.0]["flags"]
    assert rows[31.0]["r2star_in_range"]  # still measured, and still in Hernando's range
    assert "lic_r2star_calibration_spread" not in rows[268.0]["flags"]
    # at 3 T too, although only one calibration was made there (Wood 2005 on R2*/2 differs)
    assert "lic_r2star_calibration_spread" in _one_region_analysis(65.0, b0=3.0).rows[0]["flags"]


@pytest.mark.parametrize("b0", [0.55, 7.0])
def test_a_field_without_r2star_calibration_still_gives_the_rest_of_the_row(b0):
    # no published R2*->LIC calibration at 0.55 T or 7 T: before, the whole analysis was
    # refused; PDFF, R2*, chi and LIC by QSM do not need one
    # echo spacing a third of the fat-water in-phase period past a whole number of periods,
    # at least 1 ms (written out: methylene -3.4 ppm): 4.2 ms at 0.55 T, 1.32 ms at 7 T
    period = 1.0 / (3.4e-6 * 42.577e6 * b0)
    dte = period * (np.ceil(1e-3 / period - 1.0 / 3.0) + 1.0 / 3.0)
    tes = 2e-3 + dte * np.arange(6)
    row = _one_region_analysis(200.0, b0=b0, tes=tes).rows[0]
    assert "fat_water_ill_conditioned" not in row["flags"]
    assert "no_r2star_calibration" in row["flags"] and not row["r2star_in_range"]
    assert np.isnan(row["lic_r2star"])
    assert row["r2star_per_s"] == pytest.approx(200.0, rel=0.05)
    assert abs(row["pdff_percent"]) < 1.0 and np.isfinite(row["chi_ppm"])
    assert np.isfinite(row["lic_qsm"])
    with pytest.raises(InputError, match="made at 1.5 T"):  # a named one must suit the field
        L.analyse_liver(np.ones((8, 8, 4, 6)), np.zeros((8, 8, 4, 6)),
                        1.2e-3 * np.arange(1, 7), b0, (2.0, 2.0, 4.0), calibration="wood2005")


def _one_region_analysis(r2star_per_s, b0=1.5, snr=200.0, tes=None):
    """A fat-free uniform block written for this test (no qsmkit signal model)."""
    rng = np.random.default_rng(1)
    tes = 1.2e-3 * np.arange(1, 7) if tes is None else np.asarray(tes)
    shape = (24, 24, 4)
    field = 10.0 * np.linspace(-1, 1, shape[0])[:, None, None] * np.ones(shape)
    s = np.exp((2j * np.pi * field[..., None] - r2star_per_s) * tes) * np.exp(0.3j)
    s = s + (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)) / snr
    labels = np.zeros(shape, int)
    labels[6:18, 6:18] = 1
    an = L.analyse_liver(np.abs(s), np.angle(s), tes, b0, (2.0, 2.0, 4.0),
                         mask=np.ones(shape, bool), labels=labels, reference="mask",
                         face_guard_mm=0.0, beyond_mm=0.0)
    return an


def test_three_echoes_are_refused_for_the_liver():
    # water, fat, field and R2* from three echoes leave no degree of freedom: refused, with
    # what to do, instead of maps 1-3 ppm off
    tes = 1.2e-3 * np.arange(1, 4)
    with pytest.raises(InputError, match="at least 4 echoes"):
        L.analyse_liver(np.ones((8, 8, 4, 3)), np.zeros((8, 8, 4, 3)), tes, 1.5, (2.0, 2.0, 4.0))

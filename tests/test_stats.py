"""Group statistics against known cases, brute-force formulas and seeded coverage studies."""

import math

import numpy as np
import pytest
import scipy.stats

from qsmkit.analysis import stats
from qsmkit.errors import InputError


def test_auc_of_separable_groups_is_one_and_zero():
    a = np.array([5.0, 6.0, 7.0, 8.0])
    b = np.array([1.0, 2.0, 3.0])
    assert stats.roc_auc(a, b) == 1.0
    assert stats.roc_auc(b, a) == 0.0
    res = stats.delong_auc(a, b)
    assert res.auc == 1.0 and res.ci_low == 1.0 and res.ci_high == 1.0


def test_auc_equals_mann_whitney_u_over_mn_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 25).astype(float)
    b = rng.integers(0, 6, 30).astype(float)
    u = scipy.stats.mannwhitneyu(a, b).statistic
    assert stats.roc_auc(a, b) == pytest.approx(u / (25 * 30), abs=1e-12)


def test_delong_variance_matches_brute_force_structural_components():
    rng = np.random.default_rng(2)
    x = np.round(rng.normal(1.0, 1.0, 17), 1)  # rounding creates ties
    y = np.round(rng.normal(0.0, 1.0, 23), 1)
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / x.size + v01.var(ddof=1) / y.size
    res = stats.delong_auc(x, y)
    assert res.auc == pytest.approx(psi.mean(), abs=1e-12)
    assert res.se == pytest.approx(math.sqrt(var), rel=1e-10)


def test_cohens_d_known_value_and_hedges():
    a = np.array([2.0, 4.0, 6.0])  # mean 4, var 4
    b = np.array([0.0, 2.0, 4.0])  # mean 2, var 4
    eff = stats.cohens_d(a, b)
    assert eff.d == pytest.approx(1.0)
    assert eff.ci_low < 1.0 < eff.ci_high
    j = 1 - 3 / (4 * 4 - 1)
    assert stats.cohens_d(a, b, hedges=True).d == pytest.approx(j)


def test_welch_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.2, 1.0, 20), rng.normal(0.0, 2.0, 31)
    t, df, p = stats.welch_test(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert 20 < df < 49


def test_pvalue_corrections_known_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # BH: sorted 0.005,0.01,0.03,0.04 -> 0.02,0.02,0.04,0.04
    assert np.allclose(stats.adjust_pvalues(p, "fdr_bh"), [0.02, 0.04, 0.04, 0.02])
    # Holm: 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, 1*0.04 -> max(0.06,0.04)=0.06
    assert np.allclose(stats.adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(stats.adjust_pvalues(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    with pytest.raises(InputError):
        stats.adjust_pvalues(p, "sidak-ish")


def test_wilson_interval_known_values():
    lo, hi = stats.wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-3)
    lo, hi = stats.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_confidence_interval_coverage_seeded_simulation():
    """95 % intervals of d, AUC (DeLong) and a proportion (Wilson) cover the truth ~95 %."""
    rng = np.random.default_rng(20240501)
    delta, n, reps = 0.8, 30, 300
    true_auc = scipy.stats.norm.cdf(delta / math.sqrt(2.0))
    cover_d = cover_auc = cover_w = 0
    for _ in range(reps):
        a, b = rng.normal(delta, 1.0, n), rng.normal(0.0, 1.0, n)
        eff = stats.cohens_d(a, b)
        cover_d += eff.ci_low <= delta <= eff.ci_high
        auc = stats.delong_auc(a, b)
        cover_auc += auc.ci_low <= true_auc <= auc.ci_high
        k = rng.binomial(40, 0.85)
        lo, hi = stats.wilson_interval(k, 40)
        cover_w += lo <= 0.85 <= hi
    # Binomial SE of a 95 % coverage over 300 replicates is 1.3 %: allow about 3 SE.
    assert 0.91 <= cover_d / reps <= 0.99
    assert 0.90 <= cover_auc / reps <= 0.99
    assert 0.91 <= cover_w / reps <= 0.995


def test_bootstrap_auc_interval_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1, 1, 25), rng.normal(0, 1, 25)
    r1 = stats.bootstrap_auc(a, b, n_boot=500, seed=7)
    r2 = stats.bootstrap_auc(a, b, n_boot=500, seed=7)
    assert r1 == r2
    assert r1.ci_low < r1.auc < r1.ci_high
    d = stats.delong_auc(a, b)
    assert abs((r1.ci_high - r1.ci_low) - (d.ci_high - d.ci_low)) < 0.1


def test_compare_regions_parkinson_higher_rls_lower():
    """Simulated cohorts: PD nigra higher than controls, RLS nigra lower, putamen unchanged."""
    rng = np.random.default_rng(11)
    n = 40
    controls = {"substantia_nigra": rng.normal(0.120, 0.025, n),
                "putamen": rng.normal(0.060, 0.020, n)}
    parkinson = {"substantia_nigra": rng.normal(0.160, 0.025, n),
                 "putamen": rng.normal(0.060, 0.020, n)}
    rls = {"substantia_nigra": rng.normal(0.095, 0.025, n),
           "putamen": rng.normal(0.060, 0.020, n)}
    pd_rows = {r["region"]: r for r in stats.compare_regions(parkinson, controls)}
    rls_rows = {r["region"]: r for r in stats.compare_regions(rls, controls,
                                                             test="mannwhitney")}
    sn = pd_rows["substantia_nigra"]
    assert sn["difference"] > 0 and sn["d_ci_low"] > 0 and sn["auc"] > 0.8
    assert sn["p_adjusted"] < 0.001 and sn["auc_ci_low"] > 0.5
    assert rls_rows["substantia_nigra"]["auc"] < 0.35
    assert rls_rows["substantia_nigra"]["d_ci_high"] < 0
    assert pd_rows["putamen"]["p_adjusted"] > 0.01
    assert set(stats.COMPARISON_COLUMNS) == set(sn)


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError):
        stats.cohens_d([1.0], [1.0, 2.0])
    with pytest.raises(InputError):
        stats.cohens_d([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(InputError):
        stats.compare_groups([1, 2, 3], [2, 3, 4], test="anova")
    with pytest.raises(InputError):
        stats.wilson_interval(3, 2)

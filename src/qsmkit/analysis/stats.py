"""Group comparison of regional chi (or iron): effect size, tests, ROC AUC, corrections.

``compare_regions({"SN": pd_values, ...}, {"SN": control_values, ...})`` gives one row per
region with the difference of means, Cohen's d with an exact confidence interval, a Welch t or
Mann-Whitney U test, the ROC AUC of separating the groups with a DeLong or bootstrap
confidence interval, and p-values corrected over regions (Benjamini-Hochberg, Holm or
Bonferroni). Sensitivity and specificity of a detector come with Wilson intervals.

Conventions: group ``a`` is the "cases" group (e.g. Parkinson's disease), group ``b`` the
controls; the difference is ``mean(a) - mean(b)``; the AUC is ``P(a > b) + P(a == b) / 2``, so an
AUC below 0.5 means the cases are lower (e.g. nigral iron in restless-legs syndrome).

References
----------
Cohen J. Statistical Power Analysis for the Behavioral Sciences. 2nd ed. 1988 (d).
Hedges LV, Olkin I. Statistical Methods for Meta-Analysis. Academic Press 1985 (small-sample
correction J = 1 - 3 / (4 df - 1)).
Steiger JH, Fouladi RT. Noncentrality interval estimation and the evaluation of statistical
models. In: What If There Were No Significance Tests? 1997 (exact CI of d by inverting the
noncentral t distribution).
Welch BL. The generalization of 'Student's' problem when several different population
variances are involved. Biometrika 1947;34:28-35.
Mann HB, Whitney DR. Ann Math Stat 1947;18:50-60.
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach. Biometrics
1988;44:837-845. Sun X, Xu W. Fast implementation of DeLong's algorithm. IEEE Signal Process
Lett 2014;21:1389-1393 (placement values from mid-ranks).
Efron B, Tibshirani RJ. An Introduction to the Bootstrap. 1993 (percentile interval).
Benjamini Y, Hochberg Y. Controlling the false discovery rate. J R Stat Soc B 1995;57:289-300.
Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat 1979;6:65-70.
Wilson EB. Probable inference, the law of succession, and statistical inference. J Am Stat
Assoc 1927;22:209-212.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import scipy.optimize
import scipy.stats

from qsmkit.errors import InputError

__all__ = [
    "EffectSize",
    "AUCResult",
    "wilson_interval",
    "cohens_d",
    "roc_auc",
    "delong_auc",
    "bootstrap_auc",
    "welch_test",
    "mann_whitney_test",
    "adjust_pvalues",
    "compare_groups",
    "compare_regions",
    "sensitivity_specificity",
    "COMPARISON_COLUMNS",
]

COMPARISON_COLUMNS = (
    "region", "n_a", "n_b", "mean_a", "mean_b", "sd_a", "sd_b", "difference",
    "cohens_d", "d_ci_low", "d_ci_high", "test", "statistic", "p", "p_adjusted",
    "auc", "auc_ci_low", "auc_ci_high", "auc_ci_method",
)


def _sample(values, name: str, minimum: int = 2) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < minimum:
        raise InputError(f"{name} needs at least {minimum} finite values, got {x.size}")
    return x


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    return confidence


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (Wilson 1927).

    Returns ``(nan, nan)`` for ``n == 0``. Unlike the Wald interval it stays inside [0, 1]
    and keeps close to nominal coverage for proportions near 0 or 1 (e.g. a sensitivity of
    10/10 gives about [0.72, 1.0], not [1.0, 1.0]).
    """
    confidence = _check_confidence(confidence)
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0 or successes > n:
        raise InputError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (math.nan, math.nan)
    z = scipy.stats.norm.ppf(0.5 + confidence / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclasses.dataclass(frozen=True)
class EffectSize:
    """Standardised mean difference with its confidence interval."""

    d: float
    ci_low: float
    ci_high: float
    confidence: float
    hedges: bool


def _nct_bounds(t_obs: float, df: float, confidence: float) -> tuple[float, float]:
    """Noncentrality parameters whose noncentral-t cdf at ``t_obs`` is (1+c)/2 and (1-c)/2."""
    alpha = 1.0 - confidence

    def f(ncp, target):
        return scipy.stats.nct.cdf(t_obs, df, ncp) - target

    bounds = []
    for target in (1.0 - alpha / 2.0, alpha / 2.0):
        # cdf decreases in ncp: bracket the root by expanding around t_obs.
        width = 2.0 + abs(t_obs)
        lo, hi = t_obs - width, t_obs + width
        for _ in range(60):
            if f(lo, target) > 0 and f(hi, target) < 0:
                break
            width *= 2.0
            lo, hi = t_obs - width, t_obs + width
        bounds.append(scipy.optimize.brentq(f, lo, hi, args=(target,), xtol=1e-10))
    return bounds[0], bounds[1]


def cohens_d(a, b, *, confidence: float = 0.95, hedges: bool = False) -> EffectSize:
    """Cohen's d = (mean(a) - mean(b)) / pooled SD, with an exact confidence interval.

    The interval inverts the noncentral t distribution of the two-sample t statistic
    (Steiger & Fouladi 1997), exact under normality with equal variances. ``hedges=True``
    multiplies d and its bounds by Hedges' small-sample correction J (Hedges & Olkin 1985).
    """
    confidence = _check_confidence(confidence)
    a, b = _sample(a, "group a"), _sample(b, "group b")
    na, nb = a.size, b.size
    df = na + nb - 2
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / df)
    if pooled == 0:
        raise InputError("both groups have zero variance; Cohen's d is undefined")
    d = (a.mean() - b.mean()) / pooled
    scale = math.sqrt(1.0 / na + 1.0 / nb)
    lo_ncp, hi_ncp = _nct_bounds(d / scale, df, confidence)
    lo, hi = lo_ncp * scale, hi_ncp * scale
    if hedges:
        j = 1.0 - 3.0 / (4.0 * df - 1.0)
        d, lo, hi = d * j, lo * j, hi * j
    return EffectSize(float(d), float(lo), float(hi), confidence, hedges)


def roc_auc(positives, negatives) -> float:
    """Area under the ROC curve: P(positive > negative) + P(tie) / 2 (Mann-Whitney U / mn)."""
    x, y = _sample(positives, "positives", 1), _sample(negatives, "negatives", 1)
    ranks = scipy.stats.rankdata(np.concatenate([x, y]))
    u = ranks[: x.size].sum() - x.size * (x.size + 1) / 2.0
    return float(u / (x.size * y.size))


@dataclasses.dataclass(frozen=True)
class AUCResult:
    """ROC AUC with its standard error and confidence interval."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    method: str


def delong_auc(positives, negatives, *, confidence: float = 0.95) -> AUCResult:
    """ROC AUC with DeLong's variance (DeLong 1988), computed from mid-ranks (Sun & Xu 2014).

    The interval is ``AUC +/- z * SE`` clipped to [0, 1]. With perfectly separated groups
    the DeLong variance is zero and the interval collapses to the point; use
    :func:`bootstrap_auc` or larger samples when that matters.
    """
    confidence = _check_confidence(confidence)
    x, y = _sample(positives, "positives"), _sample(negatives, "negatives")
    m, n = x.size, y.size
    ranks_all = scipy.stats.rankdata(np.concatenate([x, y]))
    rx, ry = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
    # Placement values: v10[i] = P(Y < x_i) + P(Y == x_i)/2, v01[j] = P(X > y_j) + P(X == y_j)/2.
    v10 = (ranks_all[:m] - rx) / n
    v01 = 1.0 - (ranks_all[m:] - ry) / m
    auc = float(v10.mean())
    var = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    se = math.sqrt(max(var, 0.0))
    z = scipy.stats.norm.ppf(0.5 + confidence / 2.0)
    return AUCResult(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), confidence,
                     "delong")


def bootstrap_auc(positives, negatives, *, confidence: float = 0.95, n_boot: int = 2000,
                  seed: int = 0) -> AUCResult:
    """ROC AUC with a stratified percentile-bootstrap interval (Efron & Tibshirani 1993)."""
    confidence = _check_confidence(confidence)
    if int(n_boot) < 100:
        raise InputError(f"n_boot must be at least 100, got {n_boot}")
    x, y = _sample(positives, "positives"), _sample(negatives, "negatives")
    rng = np.random.default_rng(seed)
    m, n = x.size, y.size
    xb = x[rng.integers(0, m, size=(int(n_boot), m))]
    yb = y[rng.integers(0, n, size=(int(n_boot), n))]
    # Vectorised Mann-Whitney per replicate through pairwise comparisons.
    greater = (xb[:, :, None] > yb[:, None, :]).mean(axis=(1, 2))
    ties = (xb[:, :, None] == yb[:, None, :]).mean(axis=(1, 2))
    aucs = greater + 0.5 * ties
    alpha = 1.0 - confidence
    lo, hi = np.quantile(aucs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return AUCResult(roc_auc(x, y), float(aucs.std(ddof=1)), float(lo), float(hi), confidence,
                     "bootstrap")


def welch_test(a, b) -> tuple[float, float, float]:
    """Welch's unequal-variance t test: returns (t, degrees of freedom, two-sided p)."""
    a, b = _sample(a, "group a"), _sample(b, "group b")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        raise InputError("both groups have zero variance; the t test is undefined")
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    p = 2.0 * scipy.stats.t.sf(abs(t), df)
    return float(t), float(df), float(p)


def mann_whitney_test(a, b) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: returns (U of group a, p)."""
    a, b = _sample(a, "group a", 1), _sample(b, "group b", 1)
    res = scipy.stats.mannwhitneyu(a, b, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def adjust_pvalues(pvalues, method: str = "fdr_bh") -> np.ndarray:
    """Multiple-comparison adjusted p-values.

    ``method``: ``"fdr_bh"`` (Benjamini-Hochberg false discovery rate), ``"holm"`` (Holm
    step-down family-wise error), ``"bonferroni"`` or ``"none"``. NaNs are kept and ignored.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise InputError("p-values must lie in [0, 1]")
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    if method == "none":
        adj = q.copy()
    elif method == "bonferroni":
        adj = np.minimum(q * m, 1.0)
    elif method == "holm":
        order = np.argsort(q)
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj = np.empty(m)
        adj[order] = np.minimum(stepped, 1.0)
    elif method == "fdr_bh":
        order = np.argsort(q)[::-1]
        ranks = np.arange(m, 0, -1)
        stepped = np.minimum.accumulate(q[order] * m / ranks)
        adj = np.empty(m)
        adj[order] = np.minimum(stepped, 1.0)
    else:
        raise InputError(
            f"unknown correction {method!r}; use 'fdr_bh', 'holm', 'bonferroni' or 'none'"
        )
    out[ok] = adj
    return out


def compare_groups(a, b, *, test: str = "welch", auc_ci: str = "delong",
                   confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """All comparison statistics of two samples as one table row (without the region name)."""
    a, b = _sample(a, "group a"), _sample(b, "group b")
    eff = cohens_d(a, b, confidence=confidence)
    if test == "welch":
        stat, _, p = welch_test(a, b)
    elif test in ("mannwhitney", "mann-whitney", "mwu"):
        stat, p = mann_whitney_test(a, b)
        test = "mannwhitney"
    else:
        raise InputError(f"unknown test {test!r}; use 'welch' or 'mannwhitney'")
    if auc_ci == "delong":
        auc = delong_auc(a, b, confidence=confidence)
    elif auc_ci == "bootstrap":
        auc = bootstrap_auc(a, b, confidence=confidence, n_boot=n_boot, seed=seed)
    else:
        raise InputError(f"unknown AUC interval {auc_ci!r}; use 'delong' or 'bootstrap'")
    return {
        "n_a": a.size, "n_b": b.size,
        "mean_a": float(a.mean()), "mean_b": float(b.mean()),
        "sd_a": float(a.std(ddof=1)), "sd_b": float(b.std(ddof=1)),
        "difference": float(a.mean() - b.mean()),
        "cohens_d": eff.d, "d_ci_low": eff.ci_low, "d_ci_high": eff.ci_high,
        "test": test, "statistic": stat, "p": p,
        "auc": auc.auc, "auc_ci_low": auc.ci_low, "auc_ci_high": auc.ci_high,
        "auc_ci_method": auc.method,
    }


def compare_regions(group_a: Mapping[str, object], group_b: Mapping[str, object], *,
                    test: str = "welch", correction: str = "fdr_bh", auc_ci: str = "delong",
                    confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per region present in both groups, p-values corrected across the regions.

    Parameters
    ----------
    group_a, group_b : mapping region name -> 1D array of per-subject values
        E.g. mean chi (ppm) of the substantia nigra per subject, cases in ``group_a``.

    Returns
    -------
    list of dict with the columns :data:`COMPARISON_COLUMNS`.
    """
    regions = [r for r in group_a if r in group_b]
    if not regions:
        raise InputError("the two groups have no region in common")
    rows = []
    for region in regions:
        row = {"region": region}
        row.update(compare_groups(group_a[region], group_b[region], test=test, auc_ci=auc_ci,
                                  confidence=confidence, n_boot=n_boot, seed=seed))
        rows.append(row)
    adjusted = adjust_pvalues([r["p"] for r in rows], correction)
    for row, q in zip(rows, adjusted, strict=True):
        row["p_adjusted"] = float(q)
    return [{c: row.get(c) for c in COMPARISON_COLUMNS} for row in rows]


def sensitivity_specificity(tp: int, fn: int, tn: int, fp: int, *,
                            confidence: float = 0.95) -> dict:
    """Sensitivity tp/(tp+fn) and specificity tn/(tn+fp) with Wilson intervals."""
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    s_lo, s_hi = wilson_interval(tp, tp + fn, confidence)
    p_lo, p_hi = wilson_interval(tn, tn + fp, confidence)
    return {
        "tp": int(tp), "fn": int(fn), "tn": int(tn), "fp": int(fp),
        "sensitivity": sens, "sensitivity_ci": [s_lo, s_hi],
        "specificity": spec, "specificity_ci": [p_lo, p_hi],
        "confidence": confidence,
    }

"""Scores of a chi map against a truth it did not make (shared by the validation tests and
benchmarks/bench_validation.py). Written independently of qsmkit.metrics on purpose."""

from __future__ import annotations

import numpy as np


def robust_slope(estimate: np.ndarray, truth: np.ndarray, *, n_iter: int = 3) -> float:
    """Least-squares slope of ``estimate`` on ``truth`` (both zero-mean) through the origin,
    refitted after discarding voxels whose residual exceeds 3 robust standard deviations
    (1.4826 x median absolute deviation; Huber 1981, Robust Statistics)."""
    keep = np.ones(truth.shape, bool)
    slope = 0.0
    for _ in range(n_iter):
        t, e = truth[keep], estimate[keep]
        denom = float(np.dot(t, t))
        if denom == 0:
            return 0.0
        slope = float(np.dot(e, t) / denom)
        residual = estimate - slope * truth
        mad = float(np.median(np.abs(residual - np.median(residual))))
        if mad == 0:
            break
        keep = np.abs(residual - np.median(residual)) <= 3 * 1.4826 * mad
    return slope


def score_chi(chi_ppm, truth_ppm, truth_mask, chi_mask) -> dict:
    """NRMSE (%), robust slope and the share of the truth mask kept (%).

    Both maps lose their own mean over the voxels where both are defined (truth mask AND
    chi mask), since qsmkit references chi to its mask mean while a truth may be absolute.
    """
    truth_mask = np.asarray(truth_mask, bool)
    region = truth_mask & np.asarray(chi_mask, bool)
    if not region.any():
        return {"nrmse_percent": float("inf"), "slope": 0.0, "kept_percent": 0.0}
    estimate = np.asarray(chi_ppm, np.float64)[region]
    truth = np.asarray(truth_ppm, np.float64)[region]
    estimate = estimate - estimate.mean()
    truth = truth - truth.mean()
    nrmse = 100.0 * float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))
    return {"nrmse_percent": nrmse, "slope": robust_slope(estimate, truth),
            "kept_percent": 100.0 * float(region.sum()) / float(truth_mask.sum())}


def region_slope(chi_ppm, truth_ppm, regions: dict, chi_mask) -> float:
    """Slope (least squares with intercept) of the region means of ``chi_ppm`` on those of the
    truth: the deep-grey-matter slope of the QSM challenges (Langkammer et al., Magn Reson Med
    2018;79:1661-1673), robust to a smoothed texture that a voxel-wise slope would penalise."""
    chi_mask = np.asarray(chi_mask, bool)
    pairs = [(float(np.mean(truth_ppm[r & chi_mask])), float(np.mean(chi_ppm[r & chi_mask])))
             for r in regions.values() if (r & chi_mask).any()]
    if len(pairs) < 2:
        return 0.0
    truth, estimate = np.array(pairs).T
    return float(np.polyfit(truth, estimate, 1)[0])

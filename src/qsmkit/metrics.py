"""Error metrics of a susceptibility map against a known truth (QSM reconstruction challenges).

Every function compares an ``estimate`` with a ``reference`` (the truth) inside a boolean
``mask``; both maps are in ppm on the same ``(X, Y, Z)`` grid. Values outside the mask are
ignored: they are set to zero before any filtering, as the challenge maps are zero outside
the brain. Percentages are returned as percent (``100 * ratio``).

* :func:`rmse` -- ``100 ||x - y|| / ||y||`` in the mask, not demeaned (RC1 2016);
* :func:`nrmse` -- the same after removing each map's mean in the mask (RC2 2019);
* :func:`hfen` -- RMSE of Laplacian-of-Gaussian filtered maps, 15^3 kernel, sigma 1.5
  voxels (Ravishankar 2011, RC1);
* :func:`ssim` -- 3D SSIM, Gaussian window sigma 1.5, K = (0.01, 0.03), L = data range
  (Wang 2004);
* :func:`xsim` -- SSIM on native ppm, L = 1 ppm, K = (0.01, 0.001) (Milovic 2024);
* :func:`dgm_slope` -- slope of ROI-mean estimate against ROI-mean truth over deep grey
  matter (RC2 linearity);
* :func:`calcification_moment_error` -- relative error of the susceptibility moment
  (sum of chi x voxel volume) of a calcification (RC2).

See ``docs/metrics.md`` for the full definitions and how they differ from the reference
MATLAB scripts.

References
----------
Langkammer C, Schweser F, Shmueli K, et al. Quantitative susceptibility mapping: report from
the 2016 reconstruction challenge. Magn Reson Med 2018;79:1661-1673 (RC1: RMSE, HFEN, SSIM).
QSM Challenge 2.0 Organization Committee; Bilgic B, Langkammer C, Marques JP, Meineke J,
Milovic C, Schweser F. QSM reconstruction challenge 2.0: design and report of results. Magn
Reson Med 2021;86:1241-1255 (RC2: demeaned NRMSE, deep-grey-matter linearity, calcification
moment).
Ravishankar S, Bresler Y. MR image reconstruction from highly undersampled k-space data by
dictionary learning. IEEE Trans Med Imaging 2011;30:1028-1041 (HFEN: LoG 15 x 15, sigma 1.5).
Wang Z, Bovik AC, Sheikh HR, Simoncelli EP. Image quality assessment: from error visibility to
structural similarity. IEEE Trans Image Process 2004;13:600-612 (SSIM).
Milovic C, Tejos C, Silva J, Shmueli K, Irarrazaval P. XSIM: a structural similarity index
measure optimized for MRI QSM. Magn Reson Med 2024 (online), doi:10.1002/mrm.30271; reference
implementation ``compute_xsim.m`` (2022) distributed with the QSM challenge evaluation code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.ndimage as ndi
import scipy.signal

from qsmkit.errors import InputError

__all__ = [
    "all_metrics",
    "calcification_moment_error",
    "dgm_slope",
    "hfen",
    "log_kernel",
    "nrmse",
    "rmse",
    "roi_means",
    "ssim",
    "susceptibility_moment",
    "xsim",
]


# --------------------------------------------------------------------------- input checks
def _check_pair(estimate, reference, mask):
    """float64 copies of the two maps (zero outside the mask) and the boolean mask."""
    est = np.asarray(estimate)
    ref = np.asarray(reference)
    msk = np.asarray(mask)
    if est.ndim != 3 or ref.ndim != 3:
        raise InputError(
            f"metrics need 3D maps, got estimate {est.shape} and reference {ref.shape}"
        )
    if est.shape != ref.shape or msk.shape != ref.shape:
        raise InputError(
            f"estimate {est.shape}, reference {ref.shape} and mask {msk.shape} must share "
            "one grid; resample them onto the reference grid first"
        )
    msk = msk.astype(bool)
    if not msk.any():
        raise InputError("the evaluation mask is empty; give a mask with at least one voxel")
    if not (np.all(np.isfinite(est[msk])) and np.all(np.isfinite(ref[msk]))):
        raise InputError("estimate or reference holds NaN or Inf inside the mask")
    est = np.where(msk, est, 0.0).astype(np.float64)
    ref = np.where(msk, ref, 0.0).astype(np.float64)
    return est, ref, msk


def _relative_norm_percent(diff: np.ndarray, ref: np.ndarray, name: str) -> float:
    denom = float(np.linalg.norm(ref))
    if denom == 0.0:
        raise InputError(f"{name} is undefined: the reference is zero everywhere in the mask")
    return 100.0 * float(np.linalg.norm(diff)) / denom


def _check_voxel_size(voxel_size) -> np.ndarray:
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    return vs


# --------------------------------------------------------------------------- norms
def rmse(estimate, reference, mask) -> float:
    """Relative root-mean-squared error (percent) of the 2016 reconstruction challenge.

    ``RMSE = 100 * ||x - y||_2 / ||y||_2`` over the voxels of ``mask``, with ``x`` the
    estimate and ``y`` the reference, *without* removing means: a constant offset of the
    estimate counts as error (RC1, Langkammer 2018).

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array

    Returns
    -------
    float, percent (0 for identical maps).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.ones((4, 4, 4)); m = np.ones((4, 4, 4), bool)
    >>> round(rmse(1.1 * y, y, m), 6)
    10.0
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    return _relative_norm_percent(est[msk] - ref[msk], ref[msk], "RMSE")


def nrmse(estimate, reference, mask) -> float:
    """Demeaned normalised RMSE (percent) of the 2019 reconstruction challenge (RC2).

    Both maps have their own mean over ``mask`` removed, then
    ``NRMSE = 100 * ||x~ - y~||_2 / ||y~||_2`` over the mask. A constant offset of the
    estimate (the reference problem of QSM) is therefore not counted.

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array

    Returns
    -------
    float, percent.
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    x = est[msk] - est[msk].mean()
    y = ref[msk] - ref[msk].mean()
    return _relative_norm_percent(x - y, y, "NRMSE")


def log_kernel(size: int = 15, sigma_voxels: float = 1.5) -> np.ndarray:
    """Zero-sum 3D Laplacian-of-Gaussian kernel of ``size^3`` voxels (HFEN filter).

    ``g = exp(-r^2 / (2 sigma^2))`` normalised to unit sum, ``h = g (r^2 - 3 sigma^2) /
    sigma^4``, then the mean of ``h`` is subtracted so that the kernel ignores constants
    (the construction of MATLAB's ``fspecial('log')`` in 3D; Ravishankar 2011).
    """
    if int(size) != size or size < 3 or size % 2 == 0:
        raise InputError(f"the LoG kernel size must be an odd integer >= 3, got {size}")
    if not sigma_voxels > 0:
        raise InputError(f"the LoG sigma must be positive, got {sigma_voxels} voxels")
    half = (int(size) - 1) / 2
    axis = np.arange(int(size)) - half
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    r2 = x**2 + y**2 + z**2
    g = np.exp(-r2 / (2.0 * sigma_voxels**2))
    g /= g.sum()
    h = g * (r2 - 3.0 * sigma_voxels**2) / sigma_voxels**4
    return h - h.mean()


def hfen(estimate, reference, mask, *, size: int = 15, sigma_voxels: float = 1.5) -> float:
    """High-frequency error norm (percent) of the 2016 reconstruction challenge.

    Both maps (zero outside ``mask``) are convolved with the zero-sum Laplacian-of-Gaussian
    :func:`log_kernel` (``size^3`` voxels, ``sigma_voxels``; zero padding, "same" output as
    MATLAB ``imfilter``), then ``HFEN = 100 * ||LoG(x) - LoG(y)|| / ||LoG(y)||`` over the mask
    (Ravishankar 2011; Langkammer 2018). The filter is in voxel units, as in the challenge.

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array
    size : int, default 15
    sigma_voxels : float, default 1.5

    Returns
    -------
    float, percent.
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    kernel = log_kernel(size, sigma_voxels)
    log_est = scipy.signal.fftconvolve(est, kernel, mode="same")
    log_ref = scipy.signal.fftconvolve(ref, kernel, mode="same")
    return _relative_norm_percent(log_est[msk] - log_ref[msk], log_ref[msk], "HFEN")


# --------------------------------------------------------------------------- similarity
def _ssim_mean(est, ref, msk, *, c1, c2, sigma_voxels, radius_voxels) -> float:
    """Mean over the mask of the SSIM map with a Gaussian window (replicate borders)."""

    def blur(a):
        return ndi.gaussian_filter(
            a, sigma_voxels, mode="nearest", truncate=radius_voxels / sigma_voxels
        )

    mu_x, mu_y = blur(est), blur(ref)
    var_x = blur(est * est) - mu_x**2
    var_y = blur(ref * ref) - mu_y**2
    cov = blur(est * ref) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator[msk] / denominator[msk]))


def ssim(
    estimate,
    reference,
    mask,
    *,
    data_range: float | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
    sigma_voxels: float = 1.5,
    radius_voxels: int = 5,
) -> float:
    """Standard structural similarity index (Wang 2004), computed in 3D.

    Local means, variances and covariance are Gaussian-weighted (``sigma_voxels`` = 1.5,
    window ``2 * radius_voxels + 1`` = 11 voxels wide, replicated borders);
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``, averaged over ``mask``. Maps are set to zero
    outside the mask first.

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array
    data_range : float, ppm, optional
        ``L``; default: max - min of the reference in the mask (the usual convention for
        floating-point images, as ``skimage.metrics.structural_similarity``'s ``data_range``).
        Because ``L`` depends on the extremes of the map, standard SSIM can be inflated by
        extreme values; prefer :func:`xsim` for QSM (Milovic 2024).
    k1, k2 : float, default 0.01, 0.03

    Returns
    -------
    float, 1 for identical maps.
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    if data_range is None:
        data_range = float(ref[msk].max() - ref[msk].min())
    if not data_range > 0:
        raise InputError(
            "SSIM needs a positive data range; the reference is constant in the mask, "
            "give data_range explicitly"
        )
    return _ssim_mean(
        est,
        ref,
        msk,
        c1=(k1 * data_range) ** 2,
        c2=(k2 * data_range) ** 2,
        sigma_voxels=sigma_voxels,
        radius_voxels=radius_voxels,
    )


def xsim(estimate, reference, mask) -> float:
    """XSIM: the structural similarity index adapted to QSM (Milovic et al. 2024).

    SSIM on the native susceptibility values in ppm (no rescaling to a grey-level range) with
    ``L = 1 ppm``, ``K1 = 0.01``, ``K2 = 0.001`` (a small ``C2`` that keeps the structure
    term sensitive to streaking), Gaussian window ``sigma = 1.5`` voxels truncated to
    7 x 7 x 7 voxels (``imgaussfilt3(..., 1.5, 'FilterSize', 7)`` of the authors' reference
    ``compute_xsim.m``, replicated borders), averaged over ``mask``. Maps are set to zero
    outside the mask, as the challenge maps are.

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array

    Returns
    -------
    float, 1 for identical maps.
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    return _ssim_mean(
        est, ref, msk, c1=(0.01 * 1.0) ** 2, c2=(0.001 * 1.0) ** 2, sigma_voxels=1.5,
        radius_voxels=3,
    )


# --------------------------------------------------------------------------- ROI metrics
def _check_labels(labels, shape) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != tuple(shape):
        raise InputError(f"labels {lab.shape} must be on the grid of the maps {tuple(shape)}")
    if not np.all(np.isfinite(lab)):
        raise InputError("labels hold NaN or Inf values")
    rounded = np.rint(lab)
    if np.any(np.abs(lab - rounded) > 1e-3):
        raise InputError("labels must be an integer label image (one integer per region)")
    return rounded.astype(np.int64)


def roi_means(estimate, reference, mask, labels, *, label_ids: Iterable[int] | None = None):
    """Mean estimate and mean reference (ppm) in each labelled region within ``mask``.

    Returns a dict ``{label: (mean_estimate, mean_reference, n_voxels)}`` for the labels in
    ``label_ids`` (default: every non-zero label) that have at least one voxel in the mask.
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    lab = _check_labels(labels, est.shape)
    ids = sorted({int(v) for v in np.unique(lab[msk])} - {0}) if label_ids is None else [
        int(v) for v in label_ids
    ]
    inside = np.where(msk, lab, 0)
    counts = ndi.sum_labels(np.ones_like(est), inside, ids)
    sums_e = ndi.sum_labels(est, inside, ids)
    sums_r = ndi.sum_labels(ref, inside, ids)
    return {
        i: (float(se / n), float(sr / n), int(n))
        for i, n, se, sr in zip(ids, counts, sums_e, sums_r, strict=True)
        if n > 0
    }


def _roi_regression(estimate, reference, mask, labels, label_ids):
    means = roi_means(estimate, reference, mask, labels, label_ids=label_ids)
    if len(means) < 2:
        raise InputError(
            f"the ROI slope needs at least two labelled regions inside the mask, found "
            f"{len(means)}; check the label image and the label numbers"
        )
    est_means = np.array([v[0] for v in means.values()])
    ref_means = np.array([v[1] for v in means.values()])
    if np.ptp(ref_means) == 0:
        raise InputError(
            "the ROI slope is undefined: all regions have the same true mean susceptibility"
        )
    slope, intercept = np.polyfit(ref_means, est_means, 1)
    return float(slope), float(intercept), means


def dgm_slope(estimate, reference, mask, labels, *, dgm_labels: Sequence[int] | None = None):
    """Slope of the linear regression of ROI-mean estimate on ROI-mean truth (RC2 linearity).

    For each deep-grey-matter region (RC2: caudate, globus pallidus, putamen, red nucleus,
    dentate nucleus, substantia nigra and subthalamic nucleus) the mean of the estimate and of
    the reference over ``region & mask`` are computed; the ordinary least-squares line
    ``mean_estimate = slope * mean_reference + intercept`` is fitted. A slope of 1 means the
    contrast between the nuclei is preserved; RC2 reported the deviation from linearity
    ``|1 - slope|``. Underestimation by over-regularisation gives slopes below 1.

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array
    labels : (X, Y, Z) integer array
        Segmentation on the same grid.
    dgm_labels : sequence of int, optional
        Label numbers of the deep-grey-matter regions; default: every non-zero label.

    Returns
    -------
    float, slope (dimensionless).
    """
    slope, _, _ = _roi_regression(estimate, reference, mask, labels, dgm_labels)
    return slope


def susceptibility_moment(chi_ppm, region, voxel_size) -> float:
    """Susceptibility moment ``sum(chi over region) * voxel volume`` in ppm mm^3."""
    vs = _check_voxel_size(voxel_size)
    chi = np.asarray(chi_ppm, dtype=np.float64)
    reg = np.asarray(region, dtype=bool)
    if reg.shape != chi.shape:
        raise InputError(f"region {reg.shape} and map {chi.shape} must share one grid")
    return float(chi[reg].sum() * np.prod(vs))


def _box(region: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.nonzero(region)
    return tuple(
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
        for i, n in zip(idx, region.shape, strict=True)
    )


def _box_mask(shape, box) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[box] = True
    return out


def _calcification_moments(est, ref, msk, calc_mask, voxel_size, *, segmentation,
                           margin_voxels, shell_voxels, step_ppm):
    """(estimated moment, true moment, segmented region) for :func:`calcification_moment_error`."""
    calc = np.asarray(calc_mask, dtype=bool)
    if calc.shape != est.shape:
        raise InputError(f"calcification mask {calc.shape} must be on the grid {est.shape}")
    if not calc.any():
        raise InputError("the calcification mask is empty; give a mask of the calcification")
    true_moment = susceptibility_moment(ref, calc, voxel_size)
    if true_moment == 0.0:
        raise InputError(
            "the true calcification moment is zero, so its relative error is undefined"
        )
    if segmentation == "truth":
        region = calc & msk
    elif segmentation == "adaptive":
        if not step_ppm > 0:
            raise InputError(f"step_ppm must be positive, got {step_ppm}")
        if int(margin_voxels) < 0 or int(shell_voxels) < 1:
            raise InputError("margin_voxels must be >= 0 and shell_voxels >= 1")
        components, n = ndi.label(calc, structure=np.ones((3, 3, 3), dtype=bool))
        region = np.zeros(est.shape, dtype=bool)
        for k in range(1, n + 1):
            part = components == k
            sign = 1.0 if ref[part].sum() >= 0 else -1.0
            inner = _box_mask(est.shape, _box(part, int(margin_voxels)))
            outer = _box_mask(est.shape, _box(part, int(margin_voxels) + int(shell_voxels)))
            shell = outer & ~inner & ~calc  # other calcifications are not background
            signed = sign * est
            highest_outside = float(signed[shell].max()) if shell.any() else 0.0
            threshold = max(0.0, float(np.ceil(highest_outside / step_ppm - 1e-9)) * step_ppm)
            region |= inner & msk & (signed > threshold)
    else:
        raise InputError(
            f"unknown calcification segmentation {segmentation!r}; use 'adaptive' or 'truth'"
        )
    return susceptibility_moment(est, region, voxel_size), true_moment, region


def calcification_moment_error(
    estimate,
    reference,
    mask,
    calc_mask,
    voxel_size,
    *,
    segmentation: str = "adaptive",
    margin_voxels: int = 3,
    shell_voxels: int = 8,
    step_ppm: float = 0.01,
) -> float:
    """Relative error (percent) of the susceptibility moment of a calcification (RC2).

    The moment is ``M = sum(chi) * V`` over a region (ppm mm^3, ``V`` the voxel volume): it
    is conserved by blurring, so it measures how much of the calcification's susceptibility a
    reconstruction recovers. The true moment sums the reference over ``calc_mask``. The
    estimated moment sums the estimate over a region segmented in the *estimate*:

    ``segmentation="adaptive"`` (RC2, ``compute_calcification_metrics``): in a box around
    ``calc_mask`` enlarged by ``margin_voxels`` (3), keep the voxels whose susceptibility,
    signed like the true moment, exceeds a threshold ``t``. ``t`` is the smallest multiple of
    ``step_ppm`` (0.01 ppm, from 0) that no voxel in the shell between that box and a box
    ``shell_voxels`` (8) larger exceeds, so that only the calcification and its blurred
    surroundings, not background structures, are segmented. RC2 searched ``t`` from 0 to
    1.5 ppm for a diamagnetic calcification; here any sign and magnitude are allowed.

    ``segmentation="truth"``: sum the estimate over ``calc_mask`` itself.

    Several separate calcifications (26-connected components of ``calc_mask``) are
    segmented each in its own box; the union of their regions gives the estimated moment
    and the error is that of the total moment.

    Returns ``100 * (M_estimate / M_true - 1)``: negative when the size of the moment is
    underestimated (e.g. -50 for a reconstruction at half the true contrast), positive when
    it is overestimated, whatever the sign of the calcification's susceptibility. RC2
    reported the absolute deviation ``|M_estimate - M_true|``; the relative form makes
    phantoms of different size and resolution comparable.

    Parameters
    ----------
    estimate, reference : (X, Y, Z) array, ppm
    mask : (X, Y, Z) bool array
        Brain mask; both maps are zero outside it.
    calc_mask : (X, Y, Z) bool array
        The true calcification region.
    voxel_size : 3 floats, mm

    Returns
    -------
    float, percent.
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    est_moment, true_moment, _ = _calcification_moments(
        est, ref, msk, calc_mask, voxel_size, segmentation=segmentation,
        margin_voxels=margin_voxels, shell_voxels=shell_voxels, step_ppm=step_ppm,
    )
    return 100.0 * (est_moment / true_moment - 1.0)


# --------------------------------------------------------------------------- all at once
def all_metrics(
    estimate,
    reference,
    mask,
    *,
    voxel_size,
    labels=None,
    dgm_labels: Sequence[int] | None = None,
    calc_mask=None,
) -> dict:
    """Every metric of this module in one dict (JSON-ready floats).

    Keys: ``rmse``, ``nrmse``, ``hfen`` (percent), ``ssim``, ``xsim``, ``n_voxels``; with
    ``labels``: ``roi_means_ppm`` (per label ``{"estimate", "reference", "n_voxels"}``),
    ``roi_slope`` and ``roi_intercept_ppm`` (regression over every label present), and when
    ``dgm_labels`` are given ``dgm_slope``, ``dgm_intercept_ppm`` and ``dgm_linearity_error``
    (``|1 - slope|``); with ``calc_mask``: ``calcification_moment_error`` (percent,
    adaptive segmentation) and ``calcification_moment_ppm_mm3`` (``{"estimate",
    "reference"}``).
    """
    est, ref, msk = _check_pair(estimate, reference, mask)
    vs = _check_voxel_size(voxel_size)
    out: dict = {
        "n_voxels": int(msk.sum()),
        "rmse": rmse(est, ref, msk),
        "nrmse": nrmse(est, ref, msk),
        "hfen": hfen(est, ref, msk),
        "ssim": ssim(est, ref, msk),
        "xsim": xsim(est, ref, msk),
    }
    if labels is not None:
        means = roi_means(est, ref, msk, labels)
        out["roi_means_ppm"] = {
            str(k): {"estimate": e, "reference": r, "n_voxels": n}
            for k, (e, r, n) in means.items()
        }
        if len(means) >= 2:
            slope, intercept, _ = _roi_regression(est, ref, msk, labels, None)
            out["roi_slope"], out["roi_intercept_ppm"] = slope, intercept
        if dgm_labels is not None:
            slope, intercept, _ = _roi_regression(est, ref, msk, labels, list(dgm_labels))
            out["dgm_slope"] = slope
            out["dgm_intercept_ppm"] = intercept
            out["dgm_linearity_error"] = abs(1.0 - slope)
    elif dgm_labels is not None:
        raise InputError("dgm_labels need a label image; pass labels as well")
    if calc_mask is not None:
        est_moment, true_moment, region = _calcification_moments(
            est, ref, msk, calc_mask, vs, segmentation="adaptive", margin_voxels=3,
            shell_voxels=8, step_ppm=0.01,
        )
        out["calcification_moment_error"] = 100.0 * (est_moment / true_moment - 1.0)
        out["calcification_moment_ppm_mm3"] = {"estimate": est_moment, "reference": true_moment}
        out["calcification_segmented_voxels"] = int(region.sum())
    return out

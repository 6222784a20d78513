"""Automatic regularisation weight for the dipole inversion (``lam="auto"``).

The curve is that of closed-form Tikhonov inversion with a gradient penalty (Bilgic 2014):

    chi_l = F^-1[ D F(f) / (D^2 + l |G|^2) ],

so for every trial weight ``l`` (mm^2, field in ppm) the data residual
``||D chi_l - f||`` and the regulariser ``||G chi_l||`` are sums over k-space of the
field's spectrum: one FFT of the field in all, then elementwise products per ``l``. Three
principles pick ``l`` from that family:

``lcurve``
    the corner of ``(log ||D chi_l - f||, log ||G chi_l||)``: the point of maximum
    curvature (Hansen 1992; Bilgic 2014 for QSM).
``discrepancy``
    the ``l`` whose residual inside the mask has the RMS of the field noise (Morozov 1966).
    The noise is given (``noise_hz``, from the multi-echo fit) or estimated from the field
    itself by a robust high-pass MAD (:func:`estimate_noise_hz`).
``gcv``
    generalised cross-validation: minimise ``N ||r_l||^2 / trace(I - A_l)^2`` with the
    influence ``A_l = D^2 / (D^2 + l |G|^2)`` diagonal in k-space (Golub, Heath & Wahba 1979).

The l1 (TV-type) weight is then derived from the chosen Tikhonov weight by matching the
quadratic majoriser of the l1 penalty at the Tikhonov solution (the reweighted-l2 view of
TV, as in iteratively reweighted least squares): ``lam_1 |t| <= lam_1 (t^2 / |t_0| + |t_0|)
/ 2`` locally equals a gradient penalty ``l / 2 |t|^2`` when ``lam_1 = l |t_0|``. With one
weight for all voxels, ``|t_0|`` is the energy-weighted mean gradient magnitude
``||G chi_l||_2^2 / ||G chi_l||_1`` (ppm/mm) of the Tikhonov solution inside the mask, which
makes both penalties equal at that solution (``lam_1 ||G chi||_1 = l ||G chi||_2^2``). Tikhonov
here minimises ``||D chi - f||^2 + l ||G chi||^2`` (see :func:`qsmkit.inversion.tikhonov`)
and TV ``0.5 ||D chi - f||^2 + lam_1 ||G chi||_1``, so the factor 1/2 cancels.

References
----------
Bilgic B, Chatnuntawech I, Fan AP, Setsompop K, Cauley SF, Wald LL, Adalsteinsson E. Fast
image reconstruction with L2-regularization. J Magn Reson Imaging 2014;40:181-191.
Bilgic B, Fan AP, Polimeni JR, Cauley SF, Bianciardi M, Adalsteinsson E, Wald LL,
Setsompop K. Fast quantitative susceptibility mapping with L1-regularization and automatic
parameter selection. Magn Reson Med 2014;72:1444-1459.
Hansen PC. Analysis of discrete ill-posed problems by means of the L-curve. SIAM Rev
1992;34:561-580.
Morozov VA. On the solution of functional equations by the method of regularization. Soviet
Math Dokl 1966;7:414-417.
Golub GH, Heath M, Wahba G. Generalized cross-validation as a method for choosing a good
ridge parameter. Technometrics 1979;21:215-223.
Milovic C, Prieto C, Bilgic B, Uribe S, Acosta-Cabronero J, Irarrazaval P, Tejos C.
Comparison of parameter optimization methods for quantitative susceptibility mapping. Magn
Reson Med 2021;85:480-494.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from qsmkit.errors import InputError
from qsmkit.inversion._common import DEFAULT_PAD, prepare
from qsmkit.units import hz_to_ppm

PRINCIPLES = ("lcurve", "discrepancy", "gcv")
"""Names accepted by ``principle``."""

DEFAULT_PRINCIPLE = "gcv"

DEFAULT_LAMBDAS = np.logspace(-5, 0, 61)
"""Trial Tikhonov weights (mm^2): 12 per decade from 1e-5 to 1."""

L1_METHODS = {"tv": "lam", "nltv": "lam", "medi": "lam", "tgv": "alpha", "whtv": "lam"}
"""Methods whose weight is an l1 weight on the gradient of chi in ppm/mm (the TV scale)."""

L2_METHODS = {"tikhonov": "lam"}
"""Methods whose weight is the Tikhonov gradient weight itself (mm^2)."""

TGV_ALPHA0_OVER_ALPHA1 = 3.0
"""``qsmkit invert --lam`` convention for TGV: ``alpha = (3 lam, lam)``."""


def supports(method: str) -> bool:
    """Whether ``method``'s weight is chosen by :func:`choose_lambda` (``lam="auto"``)."""
    return method in L1_METHODS or method in L2_METHODS


def estimate_noise_hz(local_field_hz: np.ndarray, mask: np.ndarray) -> float:
    """Robust standard deviation (Hz) of white noise on a smooth field.

    The six-neighbour high-pass ``e = f - mean of the 6 neighbours`` has variance
    ``sigma^2 (1 + 1/6)`` for white noise of variance ``sigma^2`` and removes any linear
    trend; the median absolute deviation of ``e`` over voxels whose neighbours all lie in
    the mask ignores edges of sources (veins, bleeds), which are few.

    Parameters
    ----------
    local_field_hz : (X, Y, Z) ndarray, Hz
    mask : (X, Y, Z) bool ndarray

    Returns
    -------
    noise_hz : float, Hz
    """
    f = np.asarray(local_field_hz, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    kernel = np.zeros((3, 3, 3), np.float32)
    kernel[1, 1, 1] = 1.0
    for off in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
        kernel[off] = -1.0 / 6.0
    high = ndimage.convolve(np.where(m, f, 0), kernel, mode="constant")
    inner = ndimage.binary_erosion(m, iterations=1)
    if inner.sum() < 100:
        inner = m
    e = high[inner]
    mad = float(np.median(np.abs(e - np.median(e))))
    return mad / 0.6744897501960817 / np.sqrt(7.0 / 6.0)


def tikhonov_curve(prob, lambdas: Sequence[float]) -> dict:
    """Residual and regulariser norms of closed-form Tikhonov for each weight (k-space).

    Parameters
    ----------
    prob : qsmkit.inversion._common.Problem
        Padded field in ppm.
    lambdas : floats, mm^2

    Returns
    -------
    dict with ``lambdas`` (mm^2), ``residual_ppm`` ``||D chi - f||`` over the padded grid
    (RMS per voxel, ppm), ``regulariser_ppm_per_mm`` ``||G chi||`` (RMS per voxel, ppm/mm),
    ``residual_mask_ppm`` (RMS inside the mask, ppm), ``gcv`` and ``dof`` (trace of the
    influence matrix over the padded grid).
    """
    spec = prob.rfftn(prob.field)
    d2 = prob.dipole.astype(np.float32) ** 2
    g2 = prob.grad_sq.astype(np.float32)
    # rfftn half grid: all columns but the first (and the Nyquist one) stand for two
    # frequencies of the full grid (Parseval).
    nz = prob.shape[-1]
    mult = np.full(spec.shape[-1], 2.0, np.float32)
    mult[0] = 1.0
    if nz % 2 == 0:
        mult[-1] = 1.0
    power = (spec.real**2 + spec.imag**2) * mult
    n = float(np.prod(prob.shape))
    n_mask = float(prob.mask.sum())
    res, reg, res_mask, dof = [], [], [], []
    for lam in lambdas:
        denom = d2 + np.float32(lam) * g2
        denom[denom == 0] = 1.0
        lg = np.float32(lam) * g2 / denom  # 1 - A
        res.append(float(np.sum(power * lg * lg, dtype=np.float64)) / n / n)
        reg.append(float(np.sum(power * g2 * d2 / denom**2, dtype=np.float64)) / n / n)
        dof.append(float(np.sum(mult * (d2 / denom), dtype=np.float64)))
        fitted = prob.irfftn(spec * (d2 / denom))
        r = (fitted - prob.field)[prob.mask]
        res_mask.append(float(np.sqrt(np.mean(r.astype(np.float64) ** 2))))
    res = np.sqrt(np.asarray(res))
    reg = np.sqrt(np.asarray(reg))
    dof = np.asarray(dof)
    gcv = n * res**2 / np.maximum(1.0 - dof / n, 1e-12) ** 2 / n**2
    return {"lambdas": np.asarray(lambdas, float), "residual_ppm": res,
            "regulariser_ppm_per_mm": reg, "residual_mask_ppm": np.asarray(res_mask),
            "gcv": gcv, "dof": dof, "n_mask": n_mask}


def lcurve_curvature(residual: np.ndarray, regulariser: np.ndarray,
                     lambdas: np.ndarray) -> np.ndarray:
    """Signed curvature of the log-log L-curve, by finite differences in ``log lambda``.

    Positive where the curve bends towards the origin (the corner).
    """
    t = np.log(lambdas)
    x = np.log(residual)
    y = np.log(regulariser)
    dx, dy = np.gradient(x, t), np.gradient(y, t)
    ddx, ddy = np.gradient(dx, t), np.gradient(dy, t)
    return (dx * ddy - dy * ddx) / np.maximum((dx**2 + dy**2) ** 1.5, 1e-30)


def _corner(curve: dict) -> int:
    kappa = curve["curvature"]
    inner = np.arange(2, kappa.size - 2)
    return int(inner[np.argmax(kappa[inner])])


def _discrepancy(curve: dict, noise_ppm: float) -> int:
    r = curve["residual_mask_ppm"]
    above = np.nonzero(r >= noise_ppm)[0]
    if above.size == 0:
        return r.size - 1
    return int(above[0])


def _l1_scale(prob, lam_l2: float) -> float:
    """``||G chi||_2^2 / ||G chi||_1`` (ppm/mm) of the Tikhonov solution inside the mask."""
    from qsmkit.inversion._common import grad_periodic

    spec = prob.rfftn(prob.field)
    d = prob.dipole
    denom = d * d + np.float32(lam_l2) * prob.grad_sq
    denom[denom == 0] = 1.0
    chi = prob.irfftn(spec * (d / denom))
    inv_h = np.asarray([1.0 / v for v in prob.voxel_size], np.float32)
    g = np.empty((3, *chi.shape), np.float32)
    grad_periodic(chi, inv_h, g)
    gm = np.abs(g[:, prob.mask]).astype(np.float64)
    l1 = float(gm.sum())
    return float((gm**2).sum() / l1) if l1 > 0 else 0.0


def choose_lambda(
    local_field_hz: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    b0_tesla: float = 3.0,
    weight: np.ndarray | None = None,
    method: str = "tv",
    principle: str = DEFAULT_PRINCIPLE,
    noise_hz: float | None = None,
    lambdas: Sequence[float] | None = None,
    pad: int = DEFAULT_PAD,
) -> tuple[float, dict]:
    """Regularisation weight of ``method`` for this field, chosen by ``principle``.

    Parameters
    ----------
    local_field_hz : (X, Y, Z) ndarray, Hz
    mask : (X, Y, Z) bool ndarray
    voxel_size : 3 floats, mm
    b0_dir : 3 floats, B0 direction in voxel coordinates
    b0_tesla : float, T
    weight : (X, Y, Z) ndarray, optional
        Data weight; only validated (the closed-form curve is unweighted, as in Bilgic 2014).
    method : str
        ``tv``, ``nltv``, ``medi``, ``tgv`` (l1 weight on the gradient, ppm/mm) or
        ``tikhonov`` (gradient weight, mm^2).
    principle : {"lcurve", "discrepancy", "gcv"}
    noise_hz : float, optional, Hz
        Standard deviation of the local field's noise for ``discrepancy`` (e.g. the median
        ``noise_std_hz`` of the multi-echo fit); estimated from the field if not given.
    lambdas : floats, optional
        Trial Tikhonov weights (mm^2), default :data:`DEFAULT_LAMBDAS`.
    pad : int
        Zero margin, as in the inversion methods.

    Returns
    -------
    lam : float
        The weight for ``method`` (TV scale for l1 methods; for ``tgv`` its ``alpha1``).
    info : dict
        ``principle``, ``method``, ``lam``, ``lam_tikhonov`` (mm^2), ``l1_scale_ppm_per_mm``,
        ``noise_hz`` (used or estimated) and ``curve`` with the trial ``lambdas``,
        ``residual_ppm``, ``regulariser_ppm_per_mm``, ``residual_mask_ppm``, ``gcv``,
        ``curvature`` and the ``chosen`` index (JSON-ready lists).

    References
    ----------
    Bilgic B, et al. Magn Reson Med 2014;72:1444-1459 (closed-form L-curve for QSM).
    Hansen PC. SIAM Rev 1992;34:561-580 (L-curve corner).
    """
    if principle not in PRINCIPLES:
        raise InputError(f"unknown principle {principle!r} for the automatic lambda; choose "
                         f"one of {', '.join(PRINCIPLES)}")
    if not supports(method):
        raise InputError(f"method {method!r} has no weight that lam='auto' can set; automatic "
                         f"weights exist for {', '.join([*L1_METHODS, *L2_METHODS])}")
    prob = prepare(local_field_hz, mask, voxel_size, b0_dir=b0_dir, b0_tesla=b0_tesla,
                   weight=weight, pad=pad)
    lambdas = np.asarray(DEFAULT_LAMBDAS if lambdas is None else lambdas, dtype=float)
    if lambdas.ndim != 1 or lambdas.size < 5 or np.any(lambdas <= 0):
        raise InputError("lambdas must be at least 5 positive trial weights")
    lambdas = np.sort(lambdas)
    curve = tikhonov_curve(prob, lambdas)
    curve["curvature"] = lcurve_curvature(curve["residual_ppm"],
                                          curve["regulariser_ppm_per_mm"], lambdas)
    used_noise = None
    if principle == "lcurve":
        idx = _corner(curve)
    elif principle == "gcv":
        idx = int(np.argmin(curve["gcv"]))
    else:
        if noise_hz is None:
            used_noise = estimate_noise_hz(local_field_hz, prob.full_mask)
        else:
            used_noise = float(noise_hz)
            if not np.isfinite(used_noise) or used_noise < 0:
                raise InputError(f"noise_hz must be a finite non-negative number, got {noise_hz}")
        idx = _discrepancy(curve, float(hz_to_ppm(used_noise, prob.b0_tesla)))
    lam_l2 = float(lambdas[idx])
    if method in L2_METHODS:
        scale, lam = None, lam_l2
    else:
        scale = _l1_scale(prob, lam_l2)
        lam = lam_l2 * scale
        if not lam > 0:
            raise InputError("the local field is zero inside the mask: nothing to invert")
    curve["chosen"] = idx
    info = {
        "principle": principle,
        "method": method,
        "lam": lam,
        "lam_tikhonov_mm2": lam_l2,
        "l1_scale_ppm_per_mm": scale,
        "noise_hz": used_noise,
        "curve": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in curve.items()},
    }
    return lam, info


def method_options(method: str, lam: float) -> dict:
    """The keyword options that set ``method``'s weight to ``lam`` (TGV: ``alpha``)."""
    if method in L2_METHODS:
        return {L2_METHODS[method]: lam}
    if L1_METHODS[method] == "alpha":
        return {"alpha": (TGV_ALPHA0_OVER_ALPHA1 * lam, lam)}
    return {L1_METHODS[method]: lam}

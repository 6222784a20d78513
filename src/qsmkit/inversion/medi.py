"""Morphology-enabled dipole inversion (MEDI, nonlinear), with the MEDI+0 CSF regulariser."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from qsmkit.errors import InputError
from qsmkit.geometry import pad_to
from qsmkit.inversion._common import (
    DEFAULT_PAD,
    _as_volume,
    count,
    fraction,
    phase_scale,
    positive,
    prepare,
)
from qsmkit.ops import adjoint_gradient, forward_gradient
from qsmkit.progress import iterations
from qsmkit.solvers import cg

DEFAULT_LAM = 5e-4


def medi(
    local_field_hz: np.ndarray,
    mask: np.ndarray,
    voxel_size: Sequence[float],
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    b0_tesla: float = 3.0,
    weight: np.ndarray | None = None,
    magnitude: np.ndarray | None = None,
    lam: float = DEFAULT_LAM,
    edge_fraction: float = 0.3,
    csf_mask: np.ndarray | None = None,
    lam_csf: float = 0.05,
    echo_time_s: float | None = None,
    eps: float = 1e-7,
    max_iter: int = 10,
    tol: float = 0.1,
    cg_max_iter: int = 100,
    cg_tol: float = 0.01,
    precondition: bool = True,
    pad: int = DEFAULT_PAD,
) -> np.ndarray:
    """MEDI: ``(1/s^2) ||W(e^{i s D chi} - e^{i s f})||^2 / 2 + lam ||M_G grad chi||_1
    [+ lam_csf / 2 ||M_CSF (chi - mean_CSF chi)||^2]``.

    Gauss-Newton on the nonlinear data term with the l1 norm linearised by lagged
    diffusivity (``|g| ~ g^2 / sqrt(g^2 + eps)``); each step solves
    ``(D W^2 D + lam G^T M V M G + lam_csf P) dchi = -gradient`` by conjugate gradients
    (Liu T 2012). ``M_G`` is zero on the edges of the magnitude image: the
    ``edge_fraction`` largest components of ``|grad(magnitude * mask)|`` over the mask are
    not penalised, so edges present in the magnitude may appear in chi (Liu J 2012). With
    ``csf_mask`` the MEDI+0 term makes the ventricular CSF uniform, which also serves as a
    zero reference (Liu Z 2018).

    Parameters
    ----------
    local_field_hz : (X, Y, Z) ndarray, Hz
    mask : (X, Y, Z) bool ndarray
    voxel_size : 3 floats, mm
    b0_dir : 3 floats, B0 direction in voxel coordinates
    b0_tesla : float
    weight : (X, Y, Z) ndarray, optional
        Data weight ``W`` (MEDI: inverse noise standard deviation of the field, or the
        magnitude); normalised to mean 1 in the mask as in MEDI's ``dataterm_mask``.
    magnitude : (X, Y, Z) ndarray, optional
        Magnitude image for the morphology (edge) mask. Without it every gradient is
        penalised (plain nonlinear TV solved by Gauss-Newton).
    lam : float, default 5e-4
        Regularisation weight for fields in ppm and gradients in ppm/mm (same meaning as in
        :func:`qsmkit.inversion.tv`). MEDI's default ``lambda = 1000`` multiplies the data
        term of a field in radians per echo spacing; translated to this normalisation it is
        ``1 / (2 * 1000 * s_M)`` with ``s_M = 2 pi dTE f0`` (about 3.2 rad/ppm for a 4 ms
        echo spacing at 3 T), i.e. 1.5e-4. On the head phantom 1.5e-4 was too weak once the
        field noise reached 1 Hz (33 % vs 12 % NRMSE); 5e-4 (MEDI's lambda ~ 300) was best or
        within a point of it from 0.3 to 1 Hz and on the synthetic phantom
        (``docs/inversion.md``).
    edge_fraction : float, default 0.3
        Fraction of gradient components (over 3 axes of the mask voxels) treated as edges;
        MEDI's ``percentage = 0.9`` counts edges per voxel over three axes, i.e. 0.3.
    csf_mask : (X, Y, Z) bool ndarray, optional
        CSF (ventricles) for MEDI+0.
    lam_csf : float, default 0.05
        Weight of the CSF term; MEDI+0's ``lambda_CSF = 100`` with ``lambda = 1000``
        becomes ``100 / (2 * 1000)`` in this normalisation.
    echo_time_s : float, optional
        Echo time (or echo spacing) for the phase scale ``s``; by default MEDI's convention
        of a 4 ms echo spacing at 3 T, 3.21 rad/ppm, at every B0 (see
        :data:`qsmkit.inversion._common.REFERENCE_PHASE_SCALE`). Longer times make the data
        term wrap at smaller residuals, and Gauss-Newton from zero may then settle on a
        wrong phase branch near strong sources.
    eps : float, default 1e-7 (ppm/mm)^2
        Smoothing of the l1 norm (MEDI: 1e-6 in rad/mm squared, about 1e-7 in ppm/mm).
    max_iter : int, default 10
        Gauss-Newton iterations (MEDI: 10).
    tol : float, default 0.1
        Stop when ``||dchi|| / ||chi|| < tol`` (MEDI ``tol_norm_ratio = 0.1``).
    cg_max_iter, cg_tol : int, float, default 100, 0.01
        Inner conjugate-gradient limits (MEDI's defaults).
    precondition : bool, default True
        Precondition CG with the circulant approximation
        ``(mean(W^2) D^2 + median(lam M V M) |G|^2)^-1`` (one FFT pair per iteration).
        MEDI runs plain CG.
    pad : int, default 16

    Returns
    -------
    chi_ppm : (X, Y, Z) float32 ndarray, ppm, zero outside ``mask``.

    References
    ----------
    Liu T, Liu J, de Rochefort L, Spincemaille P, Khalidov I, Ledoux JR, Wang Y. Morphology
    enabled dipole inversion (MEDI) from a single-angle acquisition: comparison with COSMOS in
    human brain imaging. Magn Reson Med 2011;66:777-783.
    Liu T, Wisnieff C, Lou M, Chen W, Spincemaille P, Wang Y. Nonlinear formulation of the
    magnetic field to source relationship for robust quantitative susceptibility mapping.
    Magn Reson Med 2013;69:467-476.
    Liu J, Liu T, de Rochefort L, Ledoux J, Khalidov I, Chen W, Tsiouris AJ, Wisnieff C,
    Spincemaille P, Prince MR, Wang Y. Morphology enabled dipole inversion for quantitative
    susceptibility mapping using structural consistency between the magnitude image and the
    susceptibility map. NeuroImage 2012;59:2560-2568.
    Liu T, Liu J, Rochefort L, et al. Magn Reson Med 2012;67:137 (MEDI-L1 defaults).
    Liu Z, Spincemaille P, Yao Y, Zhang Y, Wang Y. MEDI+0: morphology enabled dipole
    inversion with automatic uniform cerebrospinal fluid zero reference for quantitative
    susceptibility mapping. Magn Reson Med 2018;79:2795-2803.
    """
    lam = positive("lam", lam)
    edge_fraction = fraction("edge_fraction", edge_fraction)
    lam_csf = positive("lam_csf", lam_csf, allow_zero=True)
    eps = positive("eps", eps)
    max_iter = count("max_iter", max_iter)
    tol = positive("tol", tol)
    cg_max_iter = count("cg_max_iter", cg_max_iter)
    cg_tol = positive("cg_tol", cg_tol)
    prob = prepare(local_field_hz, mask, voxel_size, b0_dir=b0_dir, b0_tesla=b0_tesla,
                   weight=weight, pad=pad)
    s = phase_scale(echo_time_s, prob.b0_tesla)
    vs = prob.voxel_size
    shape = prob.shape

    def padded(name, volume, dtype):
        arr = _as_volume(name, volume, dtype=dtype)
        if arr.shape != prob.full_mask.shape:
            raise InputError(f"{name} shape {arr.shape} differs from the field shape "
                             f"{prob.full_mask.shape}")
        return pad_to(arr[prob.bbox], shape)[0]

    edge_weight = np.ones((3, *shape), dtype=np.float32)
    if magnitude is not None:
        mag = padded("magnitude", magnitude, np.float32)
        if not np.all(np.isfinite(mag[prob.mask])):
            raise InputError("magnitude has NaN or Inf values inside the mask")
        g = np.abs(forward_gradient(np.where(prob.mask, mag, 0.0).astype(np.float32), vs))
        inside = g[:, prob.mask]
        thr = np.quantile(inside, 1.0 - edge_fraction)
        if thr > 0:
            edge_weight = (g <= thr).astype(np.float32)

    csf = None
    if csf_mask is not None and lam_csf > 0:
        csf = padded("csf_mask", csf_mask, np.float32) > 0.5
        csf &= prob.mask
        if not csf.any():
            raise InputError("csf_mask has no voxel inside the mask; give a CSF mask that "
                             "overlaps the brain mask or omit it")

    w2 = prob.weight * prob.weight
    f = prob.field
    d = prob.dipole
    chi = np.zeros(shape, dtype=np.float32)

    def csf_projection(x):
        out = np.zeros_like(x)
        out[csf] = x[csf] - np.float32(x[csf].mean(dtype=np.float64))
        return out

    for _ in iterations(max_iter, "MEDI Gauss-Newton"):
        dchi_field = prob.convolve(chi)
        g = forward_gradient(chi, vs)
        g *= edge_weight
        vr = np.reciprocal(np.sqrt(g * g + np.float32(eps)))
        vr *= np.float32(lam) * edge_weight * edge_weight  # lam M V M on each component

        def normal(x, vr=vr):
            out = prob.convolve(w2 * prob.convolve(x))
            gx = forward_gradient(x, vs)
            gx *= vr
            out += adjoint_gradient(gx, vs)
            if csf is not None:
                out += np.float32(lam_csf) * csf_projection(x)
            return out

        residual = w2 * np.sin(np.float32(s) * (dchi_field - f)) / np.float32(s)
        grad = prob.convolve(residual)
        g = forward_gradient(chi, vs)
        g *= vr
        grad += adjoint_gradient(g, vs)
        if csf is not None:
            grad += np.float32(lam_csf) * csf_projection(chi)
        precond = None
        if precondition:
            # circulant approximation of the Gauss-Newton matrix: mean data weight and the
            # median regularisation weight of the mask in place of the voxel-wise ones
            reg = float(np.median(vr[:, prob.mask]))
            inv_k = np.float32(w2[prob.mask].mean()) * d * d + np.float32(reg) * prob.grad_sq
            inv_k[0, 0, 0] = 1.0
            inv_k = np.reciprocal(inv_k)

            def precond(r, inv_k=inv_k):
                return prob.convolve(r, inv_k)

        step, _ = cg(normal, -grad, tol=cg_tol, max_iter=cg_max_iter, precondition=precond)
        chi += step
        norm_chi = math.sqrt(float(np.vdot(chi.ravel(), chi.ravel())))
        norm_step = math.sqrt(float(np.vdot(step.ravel(), step.ravel())))
        if norm_chi > 0 and norm_step / norm_chi < tol:
            break
    return prob.finish(chi)

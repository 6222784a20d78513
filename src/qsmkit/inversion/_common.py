"""Input checks, unit conversion and padding shared by every dipole-inversion method.

Every method of :mod:`qsmkit.inversion` has the signature
``method(local_field_hz, mask, voxel_size, *, b0_dir=(0, 0, 1), b0_tesla=3.0, weight=None,
**options) -> chi_ppm``. :func:`prepare` validates those arguments once, converts the field to
ppm of B0 (so that regularisation weights do not depend on the field strength), crops the
volume to the bounding box of the mask and zero-pads it to an FFT-friendly grid with a margin
against wrap-around. :class:`Problem` carries the padded arrays and caches the k-space kernels;
:meth:`Problem.finish` undoes the padding and zeroes everything outside the mask.

Units inside every method: field and susceptibility in ppm, gradients in ppm/mm.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import cached_property

import numba
import numpy as np

from qsmkit import fft
from qsmkit.errors import InputError
from qsmkit.geometry import fast_shape, pad_to
from qsmkit.kernels import dipole_kernel, laplacian_kernel
from qsmkit.solvers.admm import Prox, admm
from qsmkit.units import GAMMA_BAR_HZ_PER_T, hz_to_ppm

DEFAULT_PAD = 16
"""Zero margin (voxels) added on every side of the mask's bounding box before FFTs.

Measured on the 64^3 synthetic phantom of ``tests/test_inversion.py`` (NRMSE, %, for margins
0 / 8 / 16 / 32): TV 10.8 / 9.3 / 8.6 / 8.3, Tikhonov 31.4 / 30.3 / 29.8 / 29.4, TKD
37.0 / 36.6 / 36.4 / 36.3. Larger margins cost time for a fraction of a point.
"""

REFERENCE_PHASE_SCALE = 2.0 * np.pi * GAMMA_BAR_HZ_PER_T * 3.0 * 1e-6 * 0.004
"""Radians per ppm of a 3 T field over a 4 ms echo spacing (about 3.21 rad/ppm).

The nonlinear methods (NLTV, MEDI) compare ``exp(i s D chi)`` with ``exp(i s f)``. Without an
echo time they use this ``s`` at every field strength, so their defaults do not depend on B0.
It is MEDI's convention (the field from a multi-echo fit expressed as phase per echo
spacing): the data term wraps only for residuals above about 1 ppm. Scales of a 20 ms echo
(16 rad/ppm at 3 T) wrap at 0.2 ppm, which veins and bleeds exceed, and made Gauss-Newton
(MEDI) converge to wrong branches on the head phantom (``docs/inversion.md``).
"""


@dataclasses.dataclass
class Problem:
    """A dipole inversion problem on a padded, FFT-friendly grid (all arrays float32).

    Attributes
    ----------
    field : (Xp, Yp, Zp) ndarray, ppm
        Local field, zero outside the mask.
    mask : (Xp, Yp, Zp) bool ndarray
    weight : (Xp, Yp, Zp) ndarray
        Data weight: the mask times the user weight normalised to mean 1 in the mask.
    voxel_size : 3 floats, mm
    b0_dir : (3,) ndarray, unit vector in voxel coordinates
    b0_tesla : float
    """

    field: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    voxel_size: tuple
    b0_dir: np.ndarray
    b0_tesla: float
    full_mask: np.ndarray
    bbox: tuple
    inner: tuple

    @property
    def shape(self) -> tuple:
        return self.field.shape

    @cached_property
    def dipole(self) -> np.ndarray:
        """Unit dipole kernel on the ``rfftn`` half grid (float32)."""
        return dipole_kernel(self.shape, self.voxel_size, self.b0_dir, half=True)

    @cached_property
    def grad_sq(self) -> np.ndarray:
        """``|G(k)|^2`` of the forward-difference gradient (1/mm^2) on the half grid."""
        return np.negative(laplacian_kernel(self.shape, self.voxel_size, half=True))

    def rfftn(self, x: np.ndarray) -> np.ndarray:
        return fft.rfftn(x)

    def irfftn(self, x: np.ndarray) -> np.ndarray:
        return fft.irfftn(x, self.shape).astype(np.float32, copy=False)

    def convolve(self, x: np.ndarray, kernel: np.ndarray | None = None) -> np.ndarray:
        """``F^-1 (kernel * F x)``; the dipole kernel by default."""
        kernel = self.dipole if kernel is None else kernel
        return self.irfftn(self.rfftn(x) * kernel)

    def finish(self, chi_padded: np.ndarray) -> np.ndarray:
        """Crop back to the input grid; float32, exactly zero outside the mask."""
        out = np.zeros(self.full_mask.shape, dtype=np.float32)
        out[self.bbox] = chi_padded[self.inner]
        out[~self.full_mask] = 0.0
        return out


def _as_volume(name: str, value, dtype=np.float32) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is bad input
        raise InputError(f"{name} must be a 3D array ({err})") from None
    if np.iscomplexobj(array):
        raise InputError(f"{name} must be real-valued, got a complex array")
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"{name} must be a 3D array (X, Y, Z), got shape {array.shape}")
    return array.astype(dtype, copy=False)


def check_geometry(voxel_size, b0_dir) -> tuple[tuple, np.ndarray]:
    """Validate ``voxel_size`` (3 positive mm) and ``b0_dir`` (non-zero 3-vector)."""
    try:
        vs = np.asarray(voxel_size, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(
            f"voxel_size must be three positive numbers (mm), got {voxel_size}"
        ) from None
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    try:
        b = np.asarray(b0_dir, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}") from None
    if b.shape != (3,) or not np.all(np.isfinite(b)) or np.linalg.norm(b) == 0:
        raise InputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    return tuple(float(v) for v in vs), b / np.linalg.norm(b)


def check_b0(b0_tesla) -> float:
    try:
        b0 = float(b0_tesla)
    except (TypeError, ValueError):
        raise InputError(f"b0_tesla must be a number (tesla), got {b0_tesla!r}") from None
    if not (0.05 <= b0 <= 21.2):
        raise InputError(f"b0_tesla = {b0_tesla} is outside 0.05-21.1 T; give the field in tesla")
    return b0


def positive(name: str, value, *, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) float option."""
    value = value.item() if isinstance(value, np.generic) else value  # no np.float64(...)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise InputError(f"{name} must be a finite {kind} number, got {value!r}")
    return v


def fraction(name: str, value, *, low: float = 0.0, high: float = 1.0) -> float:
    v = positive(name, value, allow_zero=True)
    if not (low < v < high):
        raise InputError(f"{name} must lie strictly between {low} and {high}, got {value!r}")
    return v


def count(name: str, value, *, minimum: int = 1) -> int:
    """An integer option (iterations) of at least ``minimum``."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, bool) or not _is_number(value) or not float(value).is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}")
    v = int(value)
    if v < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value!r}")
    return v


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def phase_scale(echo_time_s, b0_tesla: float) -> float:
    """Radians per ppm for the nonlinear data terms (see :data:`REFERENCE_PHASE_SCALE`)."""
    if echo_time_s is None:
        return float(REFERENCE_PHASE_SCALE)
    te = positive("echo_time_s", echo_time_s)
    if te > 1.0:
        raise InputError(f"echo_time_s = {te} looks like milliseconds; give seconds (e.g. 0.02)")
    return float(2.0 * np.pi * GAMMA_BAR_HZ_PER_T * b0_tesla * 1e-6 * te)


def prepare(
    local_field_hz,
    mask,
    voxel_size: Sequence[float],
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    b0_tesla: float = 3.0,
    weight=None,
    pad: int = DEFAULT_PAD,
) -> Problem:
    """Validate the uniform arguments and build the padded :class:`Problem`.

    Raises :class:`~qsmkit.errors.InputError` for wrong shapes, an empty mask, non-finite
    values inside the mask, non-positive voxel sizes, a zero ``b0_dir``, an implausible
    field strength or a negative/non-finite weight.
    """
    field = _as_volume("local_field_hz", local_field_hz)
    m = _as_volume("mask", mask, dtype=float)
    if m.shape != field.shape:
        raise InputError(f"mask shape {m.shape} differs from the field shape {field.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError("mask contains NaN or Inf values")
    m = m > 0.5 if m.dtype != bool else m
    if not m.any():
        raise InputError("mask is empty: nothing to invert")
    vs, b = check_geometry(voxel_size, b0_dir)
    b0 = check_b0(b0_tesla)
    if not np.all(np.isfinite(field[m])):
        raise InputError("local_field_hz has NaN or Inf values inside the mask; fix the mask or "
                         "the background-field removal")
    if weight is not None:
        w = _as_volume("weight", weight)
        if w.shape != field.shape:
            raise InputError(f"weight shape {w.shape} differs from the field shape {field.shape}")
        wm = w[m]
        if not np.all(np.isfinite(wm)) or np.any(wm < 0):
            raise InputError("weight must be finite and non-negative inside the mask")
        mean = float(wm.mean(dtype=np.float64))
        if mean <= 0:
            raise InputError("weight is zero everywhere inside the mask")
    pad = count("pad", pad, minimum=0)

    idx = np.nonzero(m)
    bbox = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    sub_mask = m[bbox]
    sub_field = np.where(sub_mask, field[bbox], 0.0).astype(np.float32)
    sub_field = hz_to_ppm(sub_field, b0).astype(np.float32)
    if weight is not None:
        sub_weight = np.where(sub_mask, w[bbox] / np.float32(mean), 0.0).astype(np.float32)
    else:
        sub_weight = sub_mask.astype(np.float32)

    shape = fast_shape(sub_mask.shape, pad)
    field_p, inner = pad_to(sub_field, shape)
    mask_p, _ = pad_to(sub_mask, shape)
    weight_p, _ = pad_to(sub_weight, shape)
    return Problem(
        field=np.ascontiguousarray(field_p, dtype=np.float32),
        mask=np.ascontiguousarray(mask_p),
        weight=np.ascontiguousarray(weight_p, dtype=np.float32),
        voxel_size=vs,
        b0_dir=b,
        b0_tesla=b0,
        full_mask=m,
        bbox=bbox,
        inner=inner,
    )


def percentile_ramp(values: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """1 below the ``low_pct`` percentile of ``values``, 0 above ``high_pct``, linear between."""
    lo, hi = np.percentile(values, [low_pct, high_pct])
    if hi <= lo:
        return (values <= lo).astype(np.float32)
    return np.clip((hi - values) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Periodic finite differences (consistent with the k-space symbol |G(k)|^2 used by the
# closed-form x-updates) and fused ADMM steps, compiled with numba.
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, parallel=True, fastmath=True)
def grad_periodic(x, inv_h, out):
    """Forward differences with periodic wrap: ``out[a] = (x[.+e_a] - x) / h_a``."""
    nx, ny, nz = x.shape
    hx, hy, hz = inv_h[0], inv_h[1], inv_h[2]
    for i in numba.prange(nx):
        ip = i + 1 if i + 1 < nx else 0
        for j in range(ny):
            jp = j + 1 if j + 1 < ny else 0
            for k in range(nz):
                kp = k + 1 if k + 1 < nz else 0
                v = x[i, j, k]
                out[0, i, j, k] = (x[ip, j, k] - v) * hx
                out[1, i, j, k] = (x[i, jp, k] - v) * hy
                out[2, i, j, k] = (x[i, j, kp] - v) * hz


@numba.njit(cache=True, parallel=True, fastmath=True)
def grad_adjoint_periodic(g, inv_h, out):
    """Adjoint of :func:`grad_periodic` (minus the backward divergence)."""
    _, nx, ny, nz = g.shape
    hx, hy, hz = inv_h[0], inv_h[1], inv_h[2]
    for i in numba.prange(nx):
        im = i - 1 if i > 0 else nx - 1
        for j in range(ny):
            jm = j - 1 if j > 0 else ny - 1
            for k in range(nz):
                km = k - 1 if k > 0 else nz - 1
                out[i, j, k] = (
                    (g[0, im, j, k] - g[0, i, j, k]) * hx
                    + (g[1, i, jm, k] - g[1, i, j, k]) * hy
                    + (g[2, i, j, km] - g[2, i, j, k]) * hz
                )


@numba.njit(cache=True, parallel=True, fastmath=True)
def _soft_step(ax, z, u, t, thr):
    """Anisotropic l1 ADMM step on flat arrays: v=u+ax; z=shrink(v); u=v-z; t=z-u."""
    for i in numba.prange(ax.size):
        v = u[i] + ax[i]
        a = abs(v) - thr
        zi = a if a > 0 else 0.0
        if v < 0:
            zi = -zi
        z[i] = zi
        ui = v - zi
        u[i] = ui
        t[i] = zi - ui


@numba.njit(cache=True, parallel=True, fastmath=True)
def _soft_step_iso(ax, z, u, t, thr, n):
    """Isotropic (vector) l1 ADMM step; arrays are (3 * n,) views of (3, ...) volumes."""
    for i in numba.prange(n):
        v0 = u[i] + ax[i]
        v1 = u[n + i] + ax[n + i]
        v2 = u[2 * n + i] + ax[2 * n + i]
        mag = np.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
        scale = 1.0 - thr / mag if mag > thr else 0.0
        z0, z1, z2 = scale * v0, scale * v1, scale * v2
        z[i], z[n + i], z[2 * n + i] = z0, z1, z2
        u0, u1, u2 = v0 - z0, v1 - z1, v2 - z2
        u[i], u[n + i], u[2 * n + i] = u0, u1, u2
        t[i], t[n + i], t[2 * n + i] = z0 - u0, z1 - u1, z2 - u2


@numba.njit(cache=True, parallel=True, fastmath=True)
def _l2_data_step(ax, z, u, t, w2f, w2, rho):
    """Data step of 0.5||W(y - f)||^2: y = (W^2 f + rho v) / (W^2 + rho)."""
    for i in numba.prange(ax.size):
        v = u[i] + ax[i]
        zi = (w2f[i] + rho * v) / (w2[i] + rho)
        z[i] = zi
        ui = v - zi
        u[i] = ui
        t[i] = zi - ui


@numba.njit(cache=True, parallel=True, fastmath=True)
def _nonlinear_data_step(ax, z, u, t, f, w2, rho, s, iters):
    """Data step of (1/s^2) sum W^2 (1 - cos(s (y - f))) + rho/2 (y - v)^2.

    Majorise-minimise from the current ``z``: since ``1 - cos`` has curvature at most 1, each
    step ``y -= grad / (W^2 + rho)`` decreases the objective and stays in the basin of the
    current phase branch (no jumps to a neighbouring wrap); near the solution (cos ~ 1) it
    equals a Newton step.
    """
    inv_s = 1.0 / s
    for i in numba.prange(ax.size):
        v = u[i] + ax[i]
        y = z[i]
        wi = w2[i]
        if wi == 0.0:
            y = v
        else:
            inv_curv = 1.0 / (wi + rho)
            for _ in range(iters):
                grad = wi * inv_s * np.sin(s * (y - f[i])) + rho * (y - v)
                y -= grad * inv_curv
        z[i] = y
        ui = v - y
        u[i] = ui
        t[i] = y - ui


# ---------------------------------------------------------------------------------------------
# ADMM recipe shared by TV (linear data term) and NLTV (nonlinear data term).
# ---------------------------------------------------------------------------------------------


class Penalties:
    """Mutable ADMM penalties shared by an x-update and its proximal steps."""

    def __init__(self, **rho):
        self.__dict__.update({k: float(v) for k, v in rho.items()})

    def scale(self, factor: float) -> None:
        for key in list(self.__dict__):
            self.__dict__[key] *= factor


class L1Prox(Prox):
    """``prox`` of ``lam ||z||_1`` with penalty ``penalties.grad``: anisotropic, or isotropic
    over the 3 gradient components."""

    def __init__(self, lam, penalties, *, isotropic=False):
        self.lam, self.pen, self.isotropic = float(lam), penalties, bool(isotropic)

    def apply(self, v, out):
        thr = self.lam / self.pen.grad
        if self.isotropic:
            mag = np.sqrt(np.sum(v * v, axis=0))
            np.multiply(v, np.maximum(1.0 - thr / np.maximum(mag, 1e-30), 0.0), out=out)
        else:
            np.multiply(np.sign(v), np.maximum(np.abs(v) - thr, 0.0), out=out)

    def step(self, ax, z, u, t):
        thr = np.float32(self.lam / self.pen.grad)
        if self.isotropic:
            _soft_step_iso(ax.ravel(), z.ravel(), u.ravel(), t.ravel(), thr, ax[0].size)
        else:
            _soft_step(ax.ravel(), z.ravel(), u.ravel(), t.ravel(), thr)


class L2DataProx(Prox):
    """``prox`` of ``0.5 ||W (y - f)||^2`` with penalty ``penalties.data``."""

    def __init__(self, field, weight, penalties):
        self.w2 = (weight * weight).astype(np.float32).ravel()
        self.w2f = (self.w2 * field.ravel()).astype(np.float32)
        self.pen = penalties

    def apply(self, v, out):
        rho = self.pen.data
        np.copyto(out, ((self.w2f + rho * v.ravel()) / (self.w2 + rho)).reshape(v.shape))

    def step(self, ax, z, u, t):
        _l2_data_step(ax.ravel(), z.ravel(), u.ravel(), t.ravel(), self.w2f, self.w2,
                      np.float32(self.pen.data))


class NonlinearDataProx(Prox):
    """``prox`` of ``(1/s^2) sum W^2 (1 - cos(s (y - f)))`` (FANSI nonlinear fidelity).

    ``0.5 |e^{isy} - e^{isf}|^2 = 1 - cos(s(y - f))``; dividing by ``s^2`` makes the term
    equal to ``0.5 W^2 (y - f)^2`` for small residuals, so the regularisation weight has the
    same meaning as in the linear model.
    """

    def __init__(self, field, weight, penalties, scale, newton=4):
        self.f = field.astype(np.float32).ravel()
        self.w2 = (weight * weight).astype(np.float32).ravel()
        self.pen, self.s, self.newton = penalties, float(scale), int(newton)

    def apply(self, v, out):
        z = v.ravel().copy()
        u = np.zeros_like(z)
        t = np.empty_like(z)
        _nonlinear_data_step(v.ravel().copy(), z, u, t, self.f, self.w2,
                             np.float32(self.pen.data), np.float32(self.s), self.newton)
        np.copyto(out, z.reshape(v.shape))

    def step(self, ax, z, u, t):
        _nonlinear_data_step(ax.ravel(), z.ravel(), u.ravel(), t.ravel(), self.f, self.w2,
                             np.float32(self.pen.data), np.float32(self.s), self.newton)


def solve_tv_admm(
    prob: Problem,
    lam: float,
    data: Prox,
    penalties: Penalties,
    *,
    tol: float,
    max_iter: int,
    isotropic: bool = False,
    x0: np.ndarray | None = None,
    z0_data: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """``min_chi g_data(D chi) + lam ||grad chi||_1`` by ADMM with two splittings.

    ``y = D chi`` carries the (weighted, masked, possibly nonlinear) data term and
    ``z = grad chi`` the l1 term, so the chi-update is one division in k-space
    (Milovic 2018, eq. 8)::

        chi = F^-1[(rho_d D F(y - u_y) + rho_g F(G^T (z - u_z))) / (rho_d D^2 + rho_g |G|^2)]

    ``y`` starts at ``z0_data`` (default: the field itself, or ``D x0`` with ``x0``).
    """
    d = prob.dipole
    g2 = prob.grad_sq
    inv_h = np.asarray([1.0 / v for v in prob.voxel_size], dtype=np.float32)
    shape = prob.shape
    state = {}

    def denominators():
        den = np.float32(penalties.data) * d * d + np.float32(penalties.grad) * g2
        den[0, 0, 0] = 1.0
        inv = np.reciprocal(den)
        inv[0, 0, 0] = 0.0
        state["data_k"] = (np.float32(penalties.data) * d * inv).astype(np.float32)
        state["grad_k"] = (np.float32(penalties.grad) * inv).astype(np.float32)

    denominators()
    grad_buf = np.empty((3, *shape), dtype=np.float32)
    adj_buf = np.empty(shape, dtype=np.float32)

    def x_update(targets):
        t_data, t_grad = targets
        grad_adjoint_periodic(t_grad, inv_h, adj_buf)
        spec = prob.rfftn(t_data)
        spec *= state["data_k"]
        spec_g = prob.rfftn(adj_buf)
        spec_g *= state["grad_k"]
        spec += spec_g
        chi = prob.irfftn(spec)
        spec *= d
        dchi = prob.irfftn(spec)
        grad_periodic(chi, inv_h, grad_buf)
        return chi, [dchi, grad_buf]

    if x0 is None:
        x0 = np.zeros(shape, dtype=np.float32)
        z0 = [prob.field.copy() if z0_data is None else z0_data,
              np.zeros((3, *shape), dtype=np.float32)]
    else:
        x0 = np.ascontiguousarray(x0, dtype=np.float32)
        g0 = np.empty((3, *shape), dtype=np.float32)
        grad_periodic(x0, inv_h, g0)
        z0 = [prob.convolve(x0), g0]
    l1 = L1Prox(lam, penalties, isotropic=isotropic)
    return admm(x_update, [data, l1], x0, z0, tol=tol, max_iter=max_iter)

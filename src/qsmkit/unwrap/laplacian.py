"""Laplacian phase unwrapping (Schofield & Zhu 2003) with DCT Poisson solvers.

The Laplacian of the true phase is computed from the wrapped phase without knowing the
wraps, then inverted by a Poisson solve with Neumann (mirror) boundaries. Two ways to get
the wrap-free Laplacian (``variant``):

* ``"sincos"`` (default) -- Schofield and Zhu's identity
  ``lap(phi) = cos(phi) lap(sin(phi)) - sin(phi) lap(cos(phi))``.
* ``"lsq"`` -- the divergence of the wrapped differences ``wrap(phi_n - phi_i)``: the
  unweighted least-squares unwrapping of Ghiglia and Romero (1994), exact (up to a constant)
  wherever neighbouring voxels differ by less than pi.

Two solvers (``solver``):

* ``"dct"`` -- the whole box at once with one DCT-II pair (Ghiglia & Romero 1994). For
  ``"sincos"`` the Laplacians are spectral (eigenvalues ``-|pi k / (N h)|^2``), the
  FFT-based scheme of Schofield and Zhu with a cosine instead of a Fourier basis so that the
  mirror-extended image has no jumps; for ``"lsq"`` it is the 7-point stencil. The mask
  only selects the output voxels: phase outside it takes part in the solve.
* ``"masked"`` (the default when a mask excludes voxels) -- the 7-point graph Laplacian of
  the mask, Neumann at the mask boundary, solved by conjugate gradients preconditioned with
  the box DCT solve; phase outside the mask (noise) cannot leak in. The ``sincos`` stencil is
  then ``sum_n sin(phi_n - phi_i) / h^2``, which shrinks steep steps (``sin d < d``) and is
  less accurate than the spectral form; ``lsq`` is exact on consistent phase.

The result is a smooth estimate, **not congruent** with the input: ``result - phase`` is
not a multiple of 2 pi and it departs from the true phase by a slowly varying (harmonic)
function where the data have residues, steep gradients, or (box solver) noise outside the
mask -- harmless for QSM, where background field removal discards harmonic fields.
``congruent=True`` rounds ``(estimate - phase) / 2 pi`` to integers so that
``result - phase`` is exactly ``2 pi k`` (see :func:`make_congruent`); this recovers the true
phase wherever the estimate is within pi of it.

References
----------
Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric applications.
Opt Lett 2003;28:1194-1196.
Ghiglia DC, Romero LA. Robust two-dimensional weighted and unweighted phase unwrapping that
uses fast transforms and iterative methods. J Opt Soc Am A 1994;11:107-117.
Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain reflects spatial
variation in tissue composition. NeuroImage 2011;55:1645-1656 (Laplacian unwrapping in QSM).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from qsmkit.errors import InputError
from qsmkit.fft import WORKERS
from qsmkit.unwrap._common import check_unwrap_inputs, per_echo

TWO_PI = 2.0 * np.pi


def laplacian(
    phase_rad,
    mask=None,
    voxel_size=(1.0, 1.0, 1.0),
    *,
    magnitude=None,
    variant: str = "sincos",
    solver: str = "auto",
    congruent: bool = False,
    tol: float = 1e-5,
    max_iter: int = 300,
) -> np.ndarray:
    """Unwrap phase by inverting its wrap-free Laplacian.

    Parameters
    ----------
    phase_rad : (X, Y, Z) or (X, Y, Z, E) array, rad
        Wrapped phase; a 4D array is unwrapped echo by echo.
    mask : (X, Y, Z) bool, optional
        Region to unwrap (default: everything). Outside it the input is returned unchanged.
    voxel_size : 3 floats, mm
        Grid spacing of the Laplacian stencil.
    magnitude : (X, Y, Z) or (X, Y, Z, E) array, optional
        Only weights the choice of the free constant: it is set so that the estimate
        matches the input phase modulo 2 pi on (magnitude-weighted) average.
    variant : {"sincos", "lsq"}
        Wrap-free Laplacian of Schofield & Zhu (default) or from wrapped differences.
    solver : {"auto", "dct", "masked"}
        Whole-box DCT solve, or conjugate gradients on the mask (see module notes); "auto"
        is "masked" when a mask excludes voxels, else "dct".
    congruent : bool
        Round to the nearest ``phase + 2 pi k`` (default False: the smooth estimate).
    tol, max_iter :
        Relative residual and iteration limit of the masked conjugate-gradient solve.

    Returns
    -------
    (X, Y, Z) or (X, Y, Z, E) float32, rad

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-1, 1, 24)
    >>> true = 12.0 * (x[:, None, None] ** 2 + x[None, :, None] ** 2) * np.ones((1, 1, 8))
    >>> wrapped = np.angle(np.exp(1j * true))
    >>> out = laplacian(wrapped, variant="lsq", congruent=True)
    >>> bool(np.allclose(out - out.mean(), true - true.mean(), atol=1e-4))
    True
    """
    if variant not in ("sincos", "lsq"):
        raise InputError(f"unknown Laplacian variant {variant!r}; use 'sincos' or 'lsq'")
    if solver not in ("auto", "dct", "masked"):
        raise InputError(f"unknown Poisson solver {solver!r}; use 'auto', 'dct' or 'masked'")
    phase, mask, vs, mag = check_unwrap_inputs(phase_rad, mask, voxel_size, magnitude)

    def one(ph, mg):
        return _laplacian_3d(ph, mask, vs, mg, variant, solver, congruent, tol, max_iter)

    return per_echo(one, phase, mag)


def make_congruent(estimate_rad, phase_rad, mask=None) -> np.ndarray:
    """``phase + 2 pi round((estimate - phase) / 2 pi)``: the congruent result nearest to
    a smooth unwrapping estimate (exactly ``phase`` outside ``mask``), float32."""
    estimate = np.asarray(estimate_rad, dtype=np.float64)
    phase = np.asarray(phase_rad, dtype=np.float32)
    if estimate.shape != phase.shape:
        raise InputError(f"estimate {estimate.shape} and phase {phase.shape} shapes differ")
    turns = np.round((estimate - phase) / TWO_PI)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        turns = turns * (mask if mask.shape == turns.shape else mask[..., None])
    return (phase + (TWO_PI * turns).astype(np.float32)).astype(np.float32)


def _laplacian_3d(phase, mask, vs, mag, variant, solver, congruent, tol, max_iter):
    full = bool(mask.all())
    if solver == "auto":
        solver = "dct" if full else "masked"
    if solver == "dct":
        if variant == "sincos":
            eig = _spectral_eigenvalues(phase.shape, vs)
            est = _dct_poisson(_sincos_laplacian(phase, eig), eig)
        else:
            eig = _neumann_eigenvalues(phase.shape, vs)
            everywhere = np.ones(phase.shape, dtype=bool)
            est = _dct_poisson(_wrapfree_laplacian(phase, everywhere, vs, variant), eig)
    else:
        rhs = _wrapfree_laplacian(phase, mask, vs, variant)
        est = _masked_poisson(rhs, mask, vs, _neumann_eigenvalues(phase.shape, vs), tol, max_iter)
    weight = mask if mag is None else mag * mask
    if not np.any(weight > 0):
        weight = mask
    const = np.angle(np.sum(weight * np.exp(1j * (phase - est))))
    est = est + const
    out = np.where(mask, est, phase).astype(np.float32)
    return make_congruent(out, phase, mask) if congruent else out


def _sincos_laplacian(phase, eig):
    """``cos(phi) lap(sin(phi)) - sin(phi) lap(cos(phi))`` with spectral DCT Laplacians."""
    phase = phase.astype(np.float64)
    sin, cos = np.sin(phase), np.cos(phase)

    def lap(u):
        coef = scipy.fft.dctn(u, type=2, norm="ortho", workers=WORKERS)
        return scipy.fft.idctn(coef * eig, type=2, norm="ortho", workers=WORKERS)

    return cos * lap(sin) - sin * lap(cos)


def _spectral_eigenvalues(shape, vs):
    """``-|pi k / (N h)|^2``: the continuous Laplacian on the DCT-II basis."""
    grids = np.meshgrid(
        *[-((np.pi * np.arange(n) / (n * h)) ** 2) for n, h in zip(shape, vs, strict=True)],
        indexing="ij",
        sparse=True,
    )
    return grids[0] + grids[1] + grids[2]


def _edge_slices(axis):
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[axis] = slice(None, -1)
    hi[axis] = slice(1, None)
    return tuple(lo), tuple(hi)


def _wrapfree_laplacian(phase, mask, vs, variant):
    """``sum_n g(phi_n - phi_i) / h^2`` over neighbours inside the mask (g = sin or wrap)."""
    phase = phase.astype(np.float64)
    rhs = np.zeros(phase.shape)
    for axis in range(3):
        lo, hi = _edge_slices(axis)
        d = phase[hi] - phase[lo]
        g = np.sin(d) if variant == "sincos" else np.angle(np.exp(1j * d))
        g *= (mask[hi] & mask[lo]) / vs[axis] ** 2
        rhs[lo] += g
        rhs[hi] -= g
    return rhs


def _masked_laplacian(u, mask, vs):
    """Graph Laplacian of the mask (Neumann at its boundary): ``sum_n (u_n - u_i) / h^2``."""
    out = np.zeros(u.shape)
    for axis in range(3):
        lo, hi = _edge_slices(axis)
        g = (u[hi] - u[lo]) * ((mask[hi] & mask[lo]) / vs[axis] ** 2)
        out[lo] += g
        out[hi] -= g
    return out


def _neumann_eigenvalues(shape, vs):
    """Eigenvalues of the 7-point Laplacian with reflecting boundaries (DCT-II basis)."""
    grids = np.meshgrid(
        *[
            2.0 * (np.cos(np.pi * np.arange(n) / n) - 1.0) / h**2
            for n, h in zip(shape, vs, strict=True)
        ],
        indexing="ij",
        sparse=True,
    )
    return grids[0] + grids[1] + grids[2]


def _dct_poisson(rhs, eig):
    """Solve ``L u = rhs`` (Neumann box Laplacian) for the zero-mean ``u``."""
    coef = scipy.fft.dctn(rhs, type=2, norm="ortho", workers=WORKERS)
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.where(eig < 0, coef / np.where(eig < 0, eig, 1.0), 0.0)
    return scipy.fft.idctn(coef, type=2, norm="ortho", workers=WORKERS)


def _masked_poisson(rhs, mask, vs, eig, tol, max_iter):
    """Preconditioned CG on ``-L_mask u = -rhs`` inside the mask (u = 0 outside)."""
    b = -rhs * mask
    b_norm = np.linalg.norm(b)
    u = np.zeros(rhs.shape)
    if b_norm == 0:
        return u

    def apply_a(v):
        return -_masked_laplacian(v, mask, vs) * mask

    def precondition(r):
        return -_dct_poisson(r, eig) * mask

    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = float(np.vdot(r, z))
    for _ in range(int(max_iter)):
        ap = apply_a(p)
        pap = float(np.vdot(p, ap))
        if pap <= 0:
            break
        alpha = rz / pap
        u += alpha * p
        r -= alpha * ap
        if np.linalg.norm(r) <= tol * b_norm:
            break
        z = precondition(r)
        rz_new = float(np.vdot(r, z))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return u

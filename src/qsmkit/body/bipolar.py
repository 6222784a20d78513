"""Bipolar readouts: the phase error of the even-numbered echoes, found and removed.

With alternating-polarity (bipolar) readout gradients, every other echo is read in the
opposite direction: eddy currents and gradient delays give those echoes a phase error
relative to the others, a constant plus a linear ramp along the readout (Lu 2008; Yu 2010),
which vendor exports often leave in the images. To the fat–water model it looks like a
signal component at half the echo sampling rate, near fat's main peak at 3 T with 1.2 ms
spacing, so a fit that ignores it reads it as fat and as field: on the independent abdomen
at 3 T an offset of 0.6 rad with a ramp of ±0.8 rad read PDFF 3 points low and the
fat-free χ slope far from 1 (red team: −0.43), with nothing to show it.

The error is estimated from the data themselves, with the model of
:class:`~qsmkit.body.fatwater.FatWaterModel` extended by one phase term on the odd-indexed
echoes (0-based ``e % 2 == 1``; an error on the others is the same up to the initial phase),
in the spirit of the signal models that carry the odd/even phase error as a parameter (Yu
2010; Peterson & Månsson 2014)::

    s_n = exp(i theta(r) p_n) (W + F c_n) exp((i 2 pi psi - R2*) t_n),   p_n = n mod 2,
    theta(r) = a + b_x x + b_y y + b_z z     (x, y, z from -1 to +1 across the volume)

W, F (complex), field and R2* are free in every voxel of a sample of the body; the four plane
coefficients are shared. Because that model holds exactly for monopolar data (theta = 0)
whatever the fat, field and R2*, the estimate is then zero up to noise, unlike statistics of
the phase alone (the echo triplet ``s_{n-1} s_{n+1} conj(s_n)^2`` is real only without fat).
All parameters are fitted jointly by Gauss–Newton, the voxels' own parameters profiled out
(Schur complement) at every step; the coefficients' covariance is the larger of the model's
(noise from the residual) and the sandwich (Huber–White) estimate over the voxels' scores,
which also covers misfit that varies from voxel to voxel (a fat spectrum that is not the
model's). With equally spaced echoes an offset of pi more is the signal's own field shifted
by half the aliasing period, which the free field absorbs exactly: the offset is known only
modulo pi and is reported in [-pi/2, pi/2); either choice gives the same PDFF and χ.

The rule (:func:`check_bipolar`): the error is present when the coefficients differ from zero
beyond chance (``beta' Cov^-1 beta`` above :data:`CHI2_LIMIT`, the chi-square of 4 degrees of
freedom at p = 1e-6) *and* the largest error over the body exceeds :data:`FLOOR_RAD`; it is
then removed from the odd-indexed echoes. The figures measured on the independent abdomen
are in ``docs/liver.md`` ("Bipolar readouts").

References
----------
Lu W, Yu H, Shimakawa A, Alley M, Reeder SB, Hargreaves BA. Water-fat separation with bipolar
multiecho sequences. Magn Reson Med 2008;60:198-209.
Yu H, Shimakawa A, Hines CDG, et al. Phase and amplitude correction for multi-echo water-fat
separation with bipolar acquisitions. J Magn Reson Imaging 2010;31:1264-1271.
Peterson P, Månsson S. Fat quantification using multiecho sequences with bipolar gradients:
investigation of accuracy and noise performance. Magn Reson Med 2014;71:219-229.
Freedman DA. On the so-called "Huber sandwich estimator" and "robust standard errors".
Am Stat 2006;60:299-302.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.body.fat_shift import slowly_decaying_voxels
from qsmkit.errors import InputError

MIN_ECHOES = 4
"""Echoes needed: water, fat, field and R2* take six real numbers per voxel; three echoes
(six real data) leave nothing to see the phase term with."""

SAMPLE_VOXELS = 3000
"""Voxels drawn (at random, fixed seed) from the body for the estimate."""

CHI2_LIMIT = 33.4
"""``beta' Cov^-1 beta`` above this is no chance: the chi-square of 4 degrees of freedom at
p = 1e-6 (few false alarms across many scans)."""

FLOOR_RAD = 0.2
"""The largest error in the volume (|a| + |b_x| + |b_y| + |b_z|, rad) below which nothing is
done: monopolar data read up to 0.09 rad (3 T, LIC 5-10: the model's misfit of the
phantom's own signal, beyond the standard error, so the chi-square alone would warn), the
red team's error was 1.4 rad."""

N_ITER = 12
"""Joint Gauss–Newton iterations per pass."""

OFFSET_GRID = 6
"""Constant errors tried over [-pi/2, pi/2) for the start (0.52 rad apart)."""

OFFSET_VOXELS = 600
"""Voxels of the sample used for that start."""

N_PASSES = 2
"""Passes of the estimate, each starting the voxels afresh from the data corrected by the
previous ones (from uncorrected 3 T data the first pass found 0.38 of a 0.5 rad ramp, the
second 0.50)."""

AXES = ("x", "y", "z")


@dataclasses.dataclass
class BipolarPhase:
    """Estimate of the odd-indexed echoes' phase error ``a + b . r`` (rad).

    Attributes
    ----------
    coef_rad : (4,) — offset ``a`` and ramps ``b_x, b_y, b_z`` (rad per half the extent:
        coordinates run from -1 to +1 across the volume along each axis)
    cov_rad2 : (4, 4) covariance of ``coef_rad``
    n_voxels : voxels of the sample
    chi2 : ``coef' cov^-1 coef``
    """

    coef_rad: np.ndarray
    cov_rad2: np.ndarray
    n_voxels: int
    chi2: float

    @property
    def se_rad(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov_rad2), 0.0, None))

    @property
    def max_error_rad(self) -> float:
        """Largest |error| anywhere in the volume (at a corner)."""
        return float(np.sum(np.abs(self.coef_rad)))

    def map_rad(self, shape) -> np.ndarray:
        """The error map (X, Y, Z) float32, rad."""
        return phase_error_map(self.coef_rad, shape)

    def as_dict(self) -> dict:
        se = self.se_rad
        ramps, ramp_se = self.coef_rad[1:], se[1:]
        return {"offset_rad": round(float(self.coef_rad[0]), 4),
                "offset_se_rad": round(float(se[0]), 4),
                "ramp_rad": {a: round(float(v), 4) for a, v in zip(AXES, ramps, strict=True)},
                "ramp_se_rad": {a: round(float(v), 4) for a, v in zip(AXES, ramp_se, strict=True)},
                "max_error_rad": round(self.max_error_rad, 4),
                "chi2": round(float(self.chi2), 2), "n_voxels": int(self.n_voxels)}


def normalised_coordinates(shape) -> list[np.ndarray]:
    """Per axis, voxel coordinates from -1 to +1 across the volume (0 for a single slice)."""
    return [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]


def phase_error_map(coef_rad, shape) -> np.ndarray:
    """``a + b_x x + b_y y + b_z z`` on the grid ``shape`` (float32, rad)."""
    coef = np.asarray(coef_rad, float)
    cx, cy, cz = normalised_coordinates(tuple(shape)[:3])
    out = (coef[0] + coef[1] * cx[:, None, None] + coef[2] * cy[None, :, None]
           + coef[3] * cz[None, None, :])
    return out.astype(np.float32)


def correct_bipolar_phase(phase, coef_rad) -> np.ndarray:
    """Phase (X, Y, Z, E) with the error ``coef_rad`` removed from the odd-indexed echoes,
    rewrapped to (-pi, pi] (float32; the input is not modified)."""
    ph = np.array(phase, dtype=np.float32, copy=True)
    err = phase_error_map(coef_rad, ph.shape[:3])
    odd = ph[..., 1::2] - err[..., None]
    ph[..., 1::2] = np.angle(np.exp(1j * odd)).astype(np.float32)
    return ph


def _model(x, theta, c, t_ms, parity):
    """Model signal (V, E) and its complex Jacobian (V, E, 7) in the real parameters
    ``Re W, Im W, Re F, Im F, psi (kHz), R2* (1/ms)`` and ``theta`` (rad)."""
    d = np.exp((2j * np.pi * x[:, 4:5] - x[:, 5:6]) * t_ms[None, :])
    rot = np.exp(1j * theta[:, None] * parity[None, :])
    base = rot * d
    w = x[:, 0:1] + 1j * x[:, 1:2]
    f = x[:, 2:3] + 1j * x[:, 3:4]
    m = base * (w + f * c[None, :])
    jac = np.stack([base, 1j * base, base * c, 1j * base * c, 2j * np.pi * t_ms * m,
                    -t_ms * m, 1j * parity * m], axis=-1)
    return m, jac


def _design(flat_idx, shape) -> np.ndarray:
    """(V, 4) rows ``[1, x, y, z]`` of the normalised coordinates of the voxels."""
    coords = normalised_coordinates(shape)
    ijk = np.unravel_index(flat_idx, shape)
    return np.stack([np.ones(flat_idx.size)] + [coords[a][ijk[a]] for a in range(3)], axis=1)


def _initial_fit(model, s):
    """W, F and the complex field of each voxel by the fat–water model without the phase
    term (the better of its two best grid candidates after refinement)."""
    psi, _, r2, _ = model._grid_candidates(s.astype(np.complex64), k=2)
    best = np.full(s.shape[0], np.inf)
    out = None
    for j in range(psi.shape[1]):
        start = np.where(np.isfinite(psi[:, j]), psi[:, j], psi[:, 0])
        w, f, psi_c = model._refine(s, start + 1j * r2[:, j] / (2 * np.pi))
        res = model._residual(s, w, f, psi_c)
        if out is None:
            out = (w, f, psi_c)
        else:
            better = res < best
            out = tuple(np.where(better, new, old)
                        for new, old in zip((w, f, psi_c), out, strict=True))
        best = np.minimum(best, res)
    return out


def estimate_bipolar_phase(magnitude, phase, echo_times_s, b0_tesla: float, support, *,
                           n_voxels: int = SAMPLE_VOXELS,
                           n_iter: int = N_ITER,
                           n_passes: int = N_PASSES) -> BipolarPhase | None:
    """Fit the odd-indexed echoes' phase error (constant + linear in x, y, z) to the data.

    Parameters
    ----------
    magnitude, phase : (X, Y, Z, E) arrays, phase in radians
    echo_times_s : (E,) s
    b0_tesla : T
    support : (X, Y, Z) bool — the body
    n_voxels : size of the sample
    n_iter : Gauss–Newton iterations per pass
    n_passes : passes, each refitting the voxels to the data corrected so far

    Returns
    -------
    :class:`BipolarPhase`, or ``None`` with fewer than :data:`MIN_ECHOES` echoes or fewer
    than 50 usable voxels.

    References
    ----------
    Peterson P, Månsson S. Magn Reson Med 2014;71:219-229 (per-parity phase term).
    Yu H, Shimakawa A, Hines CDG, et al. J Magn Reson Imaging 2010;31:1264-1271.
    """
    from qsmkit.body.fatwater import FatWaterModel

    mag = np.asarray(magnitude, np.float32)
    if mag.ndim != 4:
        raise InputError(f"magnitude must be (X, Y, Z, echo), got shape {mag.shape}")
    tes = np.atleast_1d(np.asarray(echo_times_s, float))
    if tes.size < MIN_ECHOES or mag.shape[-1] != tes.size:
        return None
    support = np.asarray(support, bool)
    idx = slowly_decaying_voxels(mag, support, n_voxels)
    if idx.size < 50:
        return None
    e = tes.size
    m_s = mag.reshape(-1, e)[idx].astype(np.float64)
    p_s = np.asarray(phase, np.float32).reshape(-1, e)[idx].astype(np.float64)
    s = m_s * np.exp(1j * p_s)
    s /= float(np.percentile(np.abs(s[:, 0]), 99)) or 1.0
    model = FatWaterModel(tes, b0_tesla, n_iter=6)
    design = _design(idx, mag.shape[:3])
    active = np.concatenate([[True], [n > 1 for n in mag.shape[:3]]])
    parity = (np.arange(e) % 2).astype(float)
    coef = np.zeros(design.shape[1])
    coef[0] = _coarse_offset(model, s[:: max(1, s.shape[0] // OFFSET_VOXELS)], parity)
    for _ in range(max(int(n_passes), 1)):
        # each pass fits the voxels afresh to the data corrected by the estimate so far:
        # from the uncorrected data some start in the wrong basin (fat read for the error)
        corrected = s * np.exp(-1j * (design @ coef)[:, None] * parity[None, :])
        step, cov = _joint_fit(model, corrected, design, active, n_iter)
        coef = coef + step
        coef[0] = _wrap_half(coef[0])
    sub = np.ix_(active, active)
    chi2 = float(coef[active] @ np.linalg.solve(cov[sub], coef[active]))
    return BipolarPhase(coef_rad=coef, cov_rad2=cov, n_voxels=int(idx.size), chi2=chi2)


def check_bipolar(magnitude, phase, echo_times_s, b0_tesla: float, support, *,
                  chi2_limit: float = CHI2_LIMIT, floor_rad: float = FLOOR_RAD):
    """Find a bipolar-readout phase error and remove it from the odd-indexed echoes.

    Parameters
    ----------
    magnitude, phase, echo_times_s, b0_tesla, support : as :func:`estimate_bipolar_phase`
    chi2_limit, floor_rad : the rule (see :data:`CHI2_LIMIT`, :data:`FLOOR_RAD`)

    Returns
    -------
    phase : (X, Y, Z, E) float32 — corrected where the error was found, else as given
    info : dict — ``checked``, ``detected``, ``corrected`` and the estimate
        (:meth:`BipolarPhase.as_dict`), or ``reason`` where it could not be checked
    warning : :class:`~qsmkit.qc.QCWarning` (code ``BIPOLAR_PHASE``) or ``None``

    References
    ----------
    Lu W, Yu H, Shimakawa A, et al. Magn Reson Med 2008;60:198-209.
    Yu H, Shimakawa A, Hines CDG, et al. J Magn Reson Imaging 2010;31:1264-1271.
    """
    from qsmkit.qc import QCWarning

    n_echoes = int(np.atleast_1d(echo_times_s).size)
    if n_echoes < MIN_ECHOES:
        return (phase, {"checked": False, "detected": False, "corrected": False,
                        "reason": f"{n_echoes} echoes: the bipolar phase error needs at least "
                                  f"{MIN_ECHOES} to be checked"}, None)
    est = estimate_bipolar_phase(magnitude, phase, echo_times_s, b0_tesla, support)
    if est is None:
        return (phase, {"checked": False, "detected": False, "corrected": False,
                        "reason": "too few voxels with signal in every echo"}, None)
    detected = est.chi2 > chi2_limit and est.max_error_rad > floor_rad
    info = {"checked": True, "detected": bool(detected), "corrected": bool(detected),
            "chi2_limit": chi2_limit, "floor_rad": floor_rad, **est.as_dict()}
    if not detected:
        return phase, info, None
    d = est.as_dict()
    ramps = ", ".join(f"{a} {v:+.3f}" for a, v in d["ramp_rad"].items())
    warning = QCWarning(
        "BIPOLAR_PHASE",
        f"echoes 2, 4, ... carry a phase error of {d['offset_rad']:+.3f} rad "
        f"(SE {d['offset_se_rad']:.3f}; modulo pi) with ramps {ramps} rad from the centre to "
        "the edges of the volume, as bipolar readouts leave it; it was removed from those "
        "echoes before the fat-water fit",
        est.max_error_rad, floor_rad,
        "check that the protocol reads out with alternating polarity (bipolar) and look at "
        "the corrected PDFF and chi; monopolar data read at most 0.09 rad")
    return correct_bipolar_phase(phase, est.coef_rad), info, warning


def _residual_terms(x, beta, s_real, design, c, t_ms, parity):
    """Residual (V, 2E), the profiled information ``h`` and score ``g`` of theta per voxel,
    and the voxels' own Gauss–Newton pieces ``N^-1 Jn' [jt, r]`` (V, 6, 2)."""
    m, jac = _model(x, design @ beta, c, t_ms, parity)
    r = s_real - np.concatenate([m.real, m.imag], axis=1)
    jr = np.concatenate([jac.real, jac.imag], axis=1)  # (V, 2E, 7)
    jn, jt = jr[..., :6], jr[..., 6]
    nn = np.einsum("vei,vej->vij", jn, jn)
    nn += 1e-9 * np.trace(nn, axis1=1, axis2=2)[:, None, None] * np.eye(6)
    rhs = np.stack([np.einsum("vei,ve->vi", jn, jt), np.einsum("vei,ve->vi", jn, r)], -1)
    sol = np.linalg.solve(nn, rhs)
    h = np.einsum("ve,ve->v", jt, jt) - np.einsum("vi,vi->v", rhs[..., 0], sol[..., 0])
    g = np.einsum("ve,ve->v", jt, r) - np.einsum("vi,vi->v", rhs[..., 0], sol[..., 1])
    return r, h, g, sol


def _wrap_half(offset_rad: float) -> float:
    """The offset into [-pi/2, pi/2): with equally spaced echoes, pi more on the odd-indexed
    echoes is the signal's own field shifted by half the aliasing period, which the model's
    free field absorbs exactly, so the data fix the error only modulo pi."""
    return float((offset_rad + 0.5 * np.pi) % np.pi - 0.5 * np.pi)


def _coarse_offset(model, s, parity) -> float:
    """The constant error (rad) on a grid of :data:`OFFSET_GRID` steps over half the circle that
    leaves the least fat–water residual when removed from the odd-indexed echoes: the start
    of the Gauss–Newton, which from zero does not reach errors beyond about 1 rad."""
    offsets = (np.arange(OFFSET_GRID) / OFFSET_GRID - 0.5) * np.pi
    cost = []
    for a in offsets:
        corrected = s * np.exp(-1j * a * parity)[None, :]
        w, f, psi_c = _initial_fit(model, corrected)
        cost.append(float(np.sum(model._residual(corrected, w, f, psi_c))))
    return float(offsets[int(np.argmin(cost))])


def _joint_fit(model, s, design, active, n_iter):
    """Plane coefficients (4,) and their covariance (4, 4) from the signal sample ``s``
    (V, E): joint Gauss–Newton of the voxels' W, F, field, R2* and the shared plane, the
    voxels' parameters profiled out (Schur complement) at every step."""
    w, f, psi_c = _initial_fit(model, s)
    x = np.stack([w.real, w.imag, f.real, f.imag, psi_c.real * 1e-3,
                  2 * np.pi * psi_c.imag * 1e-3], axis=1)
    c = model.fat_c
    t_ms = model.echo_times_s * 1e3
    parity = (np.arange(s.shape[1]) % 2).astype(float)
    s_real = np.concatenate([s.real, s.imag], axis=1)
    fixed = np.diag((~active).astype(float))  # axes of one slice: coefficient held at 0
    beta = np.zeros(design.shape[1])
    max_psi_step = 0.125 * model.period_hz * 1e-3
    for _ in range(n_iter):
        r, h, g, sol = _residual_terms(x, beta, s_real, design, c, t_ms, parity)
        a = (design * h[:, None]).T @ design + fixed
        step = np.linalg.solve(a, design.T @ g) * active
        beta = beta + step
        dx = sol[..., 1] - sol[..., 0] * (design @ step)[:, None]
        dx[:, 4] = np.clip(dx[:, 4], -max_psi_step, max_psi_step)
        x = x + dx
        x[:, 5] = np.maximum(x[:, 5], 0.0)
    # covariance at the solution: the model's (noise from the residual) or the sandwich
    r, h, g, _ = _residual_terms(x, beta, s_real, design, c, t_ms, parity)
    a_inv = np.linalg.inv((design * h[:, None]).T @ design + fixed)
    dof = max(r.size - 6 * s.shape[0] - int(active.sum()), 1)
    cov_model = float(np.sum(r**2)) / dof * a_inv
    cov_sandwich = a_inv @ ((design * (g**2)[:, None]).T @ design) @ a_inv
    cov = cov_sandwich if np.trace(cov_sandwich) > np.trace(cov_model) else cov_model
    keep = np.outer(active, active)
    return beta, np.where(keep, cov, 0.0)

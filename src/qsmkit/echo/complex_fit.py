"""Nonlinear complex fit of the field (Hz) and phase offset to multi-echo GRE data.

Every voxel is modelled as ``S_j = m_j exp(i (phi0 + 2 pi f TE_j))`` with the measured
magnitudes ``m_j``; the field ``f`` (Hz) and offset ``phi0`` (rad) minimise the complex
residual ``sum_j |S_j - m_j exp(i(phi0 + 2 pi f TE_j))|^2``, i.e. a fit of the phase weighted
by the squared magnitude, without temporal unwrapping. This is the idea of MEDI's
``Fit_ppm_complex`` (Liu et al. 2013): Gauss-Newton on the complex residual, started from the
phase difference of consecutive echoes so that the start is correct whatever the wraps.

The fitted field is only known modulo ``1/dTE`` (``dTE = TE_2 - TE_1``, the echo spacing):
``fit.field_hz`` is reported wrapped into ``(-1/(2 dTE), 1/(2 dTE)]`` and needs spatial
unwrapping. The recipe::

    fit = ComplexFit(echo_times_s).fit(magnitude, phase, mask=mask)
    unwrapped = unwrap.region_growing(fit.field_phase_rad, fit.magnitude_rss, mask, voxel_size)
    total = fit.unwrapped(unwrapped)        # or: unwrapped / (2 * pi * fit.delta_te_s)
    total.field_hz, total.offset_rad        # spatially unwrapped field (Hz), matching offset

References
----------
Liu T, Wisnieff C, Lou M, Chen W, Spincemaille P, Wang Y. Nonlinear formulation of the
magnetic field to source relationship for robust quantitative susceptibility mapping.
Magn Reson Med 2013;69:467-476 (complex fit, noise weighting of the field).
de Rochefort L, Liu T, Kressler B, et al. Quantitative susceptibility map reconstruction
from MR phase data using Bayesian regularization. Magn Reson Med 2010;63:194-206 (the
inverse noise standard deviation of the field as data weight).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from qsmkit.echo._common import (
    as_echoes,
    blocks,
    check_echo_times,
    check_mask,
    is_evenly_spaced,
    scatter,
    weight_from_noise,
    wrap_half_open_above,
)
from qsmkit.errors import InputError

log = logging.getLogger(__name__)

TWO_PI = 2.0 * np.pi


class ComplexFit:
    """Model of multi-echo complex GRE signal with a linear phase evolution.

    Parameters
    ----------
    echo_times_s : (E,) floats, seconds, strictly increasing
        One echo is accepted: then the field is ``phase / (2 pi TE)`` with the offset
        assumed to be 0 (nothing else can be identified from one echo).
    max_iter : int
        Gauss-Newton iterations at most (default 10). Tissue voxels converge in 2-3
        iterations from the echo-difference start; pure-noise voxels (background) drift for
        many more and are stopped here, their fit is meaningless anyway (high residual,
        low weight).
    tol_rad : float
        A voxel stops when its update changes the modelled phase at the last echo by less
        than this (default 1e-4 rad, well below the phase noise of any real scan).

    Examples
    --------
    >>> import numpy as np
    >>> tes = np.array([0.004, 0.008, 0.012])
    >>> f_true = 150.0  # Hz: wraps at every echo
    >>> phase = np.angle(np.exp(1j * (0.3 + 2 * np.pi * f_true * tes)))
    >>> phase = np.broadcast_to(phase, (2, 2, 2, 3)).astype(np.float32)
    >>> fit = ComplexFit(tes).fit(np.ones_like(phase), phase)
    >>> round(float(fit.field_hz[0, 0, 0]), 3)  # wrapped into (-125, 125] Hz
    -100.0
    >>> total = fit.unwrapped(np.full((2, 2, 2), 2 * np.pi * f_true * 0.004))
    >>> round(float(total.field_hz[0, 0, 0]), 3), round(float(total.offset_rad[0, 0, 0]), 3)
    (150.0, 0.3)
    """

    def __init__(self, echo_times_s, *, max_iter: int = 10, tol_rad: float = 1e-4):
        self.echo_times_s = check_echo_times(echo_times_s)
        if int(max_iter) < 1:
            raise InputError(f"max_iter must be at least 1, got {max_iter}")
        if not tol_rad > 0:
            raise InputError(f"tol_rad must be positive, got {tol_rad}")
        self.max_iter = int(max_iter)
        self.tol_rad = float(tol_rad)

    @property
    def delta_te_s(self) -> float:
        """Echo spacing ``TE_2 - TE_1`` (s), or ``TE_1`` for one echo: the wrap period."""
        tes = self.echo_times_s
        return float(tes[1] - tes[0]) if tes.size > 1 else float(tes[0])

    @property
    def evenly_spaced(self) -> bool:
        return is_evenly_spaced(self.echo_times_s)

    def fit(self, magnitude, phase, mask=None) -> ComplexFieldFit:
        """Fit field and offset in every voxel of ``mask``.

        Parameters
        ----------
        magnitude : (X, Y, Z, E) or (X, Y, Z) array, any unit (non-negative)
        phase : same shape, radians (wrapped or not)
        mask : (X, Y, Z) bool, optional
            Voxels to fit (default all); others are 0 in every map.

        Returns
        -------
        ComplexFieldFit
        """
        mag = as_echoes(magnitude, "magnitude")
        pha = as_echoes(phase, "phase")
        if mag.shape != pha.shape:
            raise InputError(f"magnitude {mag.shape} and phase {pha.shape} shapes differ")
        if mag.shape[3] != self.echo_times_s.size:
            raise InputError(
                f"{self.echo_times_s.size} echo time(s) given for {mag.shape[3]} echoes; "
                "give one echo time per echo"
            )
        if np.any(mag < 0):
            raise InputError("magnitude has negative values; pass |S| (the modulus)")
        mask = check_mask(mask, mag.shape)
        mag, pha = mag[mask], pha[mask]
        n = mag.shape[0]
        field = np.zeros(n)
        offset = np.zeros(n)
        n_iter = 0
        tes = self.echo_times_s
        for sl in blocks(n):
            if tes.size == 1:
                field[sl] = np.angle(np.exp(1j * pha[sl, 0])) / (TWO_PI * tes[0])
                continue
            f0 = _initial_field_hz(mag[sl], pha[sl], tes)
            p0 = _best_offset_rad(mag[sl], pha[sl], tes, f0)
            field[sl], offset[sl], it = _gauss_newton(
                mag[sl], pha[sl], tes, f0, p0, self.max_iter, self.tol_rad
            )
            n_iter = max(n_iter, it)
        return ComplexFieldFit(self, mask, mag, pha, field, offset, wrapped=True, n_iter=n_iter)


class ComplexFieldFit:
    """Result of :meth:`ComplexFit.fit`; maps are computed on first access.

    Attributes
    ----------
    field_hz : (X, Y, Z) float32, Hz
        Wrapped into ``(-1/(2 dTE), 1/(2 dTE)]`` for a fit from :meth:`ComplexFit.fit`;
        spatially unwrapped for a fit returned by :meth:`unwrapped` (``is_wrapped``).
    offset_rad : (X, Y, Z) float32, rad in (-pi, pi]
        Phase at TE = 0 (receive phase offset) consistent with ``field_hz``.
    field_phase_rad : (X, Y, Z) float32, rad in (-pi, pi]
        ``2 pi field dTE`` wrapped: the image to unwrap spatially.
    residual : (X, Y, Z) float32
        Relative residual ``sum |S - model|^2 / sum |S|^2`` (0 = perfect fit, at most 4).
    noise_std_hz : (X, Y, Z) float32, Hz
        Standard deviation of the fitted field propagated from the residual (the phase
        noise is estimated per voxel from ``sse / (E - 2)``). With one or two echoes the
        residual carries no noise information and the magnitude-only value for a complex
        noise of unit standard deviation is given instead (a relative map). ``inf`` where
        the magnitude is zero.
    weight : (X, Y, Z) float32
        Bounded inverse field noise, mean 1 in the mask, 0 outside: a data weight for the
        dipole inversion (Liu 2013). The noise level is estimated once over the mask, so
        the weight follows the magnitudes (per-voxel residuals only lower it where the fit
        fails); uniform on noise-free data; clipped to 0.1-2.5 times its median (see
        :func:`qsmkit.echo._common.weight_from_noise`).
    magnitude_rss : (X, Y, Z) float32
        Root-sum-of-squares magnitude over echoes (for unwrapping weights).
    r2star_per_s : (X, Y, Z) float32, 1/s
        Log-linear R2* of the magnitudes (needs two echoes or more).
    """

    def __init__(self, model, mask, mag, phase, field_hz, offset_rad, *, wrapped, n_iter):
        self.model = model
        self.mask = mask
        self.is_wrapped = bool(wrapped)
        self.n_iterations = int(n_iter)
        self._mag = mag  # (N, E) float32, the voxels of the mask
        self._phase = phase
        self._field = np.asarray(field_hz, dtype=float)
        self._offset = np.asarray(offset_rad, dtype=float)

    # -- geometry of the echo train ------------------------------------------------------
    @property
    def echo_times_s(self) -> np.ndarray:
        return self.model.echo_times_s

    @property
    def delta_te_s(self) -> float:
        """The wrap period of the field is ``1 / delta_te_s`` (Hz)."""
        return self.model.delta_te_s

    # -- per-voxel values ----------------------------------------------------------------
    @functools.cached_property
    def _wrapped_values(self):
        """(field, offset, aliases) with the field wrapped into the principal interval."""
        dte, te1 = self.delta_te_s, float(self.echo_times_s[0])
        x = TWO_PI * self._field * dte
        xw = wrap_half_open_above(x)
        alias = np.round((x - xw) / TWO_PI)
        field = xw / (TWO_PI * dte)
        offset = wrap_half_open_above(self._offset + TWO_PI * alias * te1 / dte)
        return field, offset, alias

    @functools.cached_property
    def _sse(self) -> np.ndarray:
        sse = np.zeros(self._field.shape)
        for sl in blocks(sse.size):
            theta = self._offset[sl, None] + TWO_PI * self._field[sl, None] * self.echo_times_s
            w = self._mag[sl].astype(float) ** 2
            sse[sl] = (2.0 * w * (1.0 - np.cos(self._phase[sl] - theta))).sum(axis=1)
        return sse

    @functools.cached_property
    def _var_unit(self) -> np.ndarray:
        """Variance of the fitted field (Hz^2) for unit complex noise, from the magnitudes."""
        tes = self.echo_times_s
        w = self._mag.astype(float) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            if tes.size == 1:
                var = np.where(w[:, 0] > 0, 1.0 / w[:, 0], np.inf) / (TWO_PI * tes[0]) ** 2
                return var
            a, b, c = w.sum(axis=1), w @ tes, w @ (tes * tes)
            det = a * c - b * b
            return np.where(det > 0, a / det, np.inf) / TWO_PI**2

    @functools.cached_property
    def _noise_std(self) -> np.ndarray:
        tes = self.echo_times_s
        if tes.size <= 2:
            return np.sqrt(self._var_unit)
        sigma2 = self._sse / (tes.size - 2)
        if not np.any(sigma2 > 0):
            sigma2 = np.ones_like(sigma2)  # noiseless data: fall back to the magnitude-only map
        return np.sqrt(sigma2 * self._var_unit)

    # -- maps ----------------------------------------------------------------------------
    @functools.cached_property
    def field_hz(self) -> np.ndarray:
        values = self._wrapped_values[0] if self.is_wrapped else self._field
        return scatter(values, self.mask)

    @functools.cached_property
    def offset_rad(self) -> np.ndarray:
        values = self._wrapped_values[1] if self.is_wrapped else wrap_half_open_above(self._offset)
        return scatter(values, self.mask)

    @functools.cached_property
    def field_phase_rad(self) -> np.ndarray:
        return scatter(wrap_half_open_above(TWO_PI * self._field * self.delta_te_s), self.mask)

    @functools.cached_property
    def residual(self) -> np.ndarray:
        energy = (self._mag.astype(float) ** 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(energy > 0, self._sse / energy, 0.0)
        return scatter(rel, self.mask)

    @functools.cached_property
    def noise_std_hz(self) -> np.ndarray:
        return scatter(self._noise_std, self.mask, fill=np.inf)

    @functools.cached_property
    def weight(self) -> np.ndarray:
        tes = self.echo_times_s
        dof = max(tes.size - 2, 0)
        sse = self._sse if dof else np.zeros(self._var_unit.shape)
        power = (self._mag.astype(float) ** 2).mean(axis=1)
        valid = np.isfinite(self._var_unit)
        return scatter(weight_from_noise(self._var_unit, sse, dof, power, valid), self.mask)

    @functools.cached_property
    def magnitude_rss(self) -> np.ndarray:
        return scatter(np.sqrt((self._mag.astype(float) ** 2).sum(axis=1)), self.mask)

    @functools.cached_property
    def r2star_per_s(self) -> np.ndarray:
        from qsmkit.echo.loglinear import r2star_loglinear

        mags = np.zeros((*self.mask.shape, self.echo_times_s.size), dtype=np.float32)
        mags[self.mask] = self._mag
        return r2star_loglinear(mags, self.echo_times_s, mask=self.mask).r2star_per_s

    # -- spatial unwrapping ----------------------------------------------------------------
    def unwrapped(self, field_phase_unwrapped_rad, *, refine: bool | None = None):
        """The fit with its field moved to the alias chosen by a spatial unwrapping.

        Parameters
        ----------
        field_phase_unwrapped_rad : (X, Y, Z) array, rad
            ``field_phase_rad`` after spatial unwrapping (any unwrapper; a smooth, not
            congruent, estimate such as Laplacian unwrapping is rounded to the nearest
            alias voxel by voxel).
        refine : bool, optional
            Re-run Gauss-Newton from the chosen alias. Default: only for uneven echo
            spacing, where aliases ``f + k/dTE`` are not exactly equivalent and the fit must
            be redone near the unwrapped estimate; for even spacing the alias is exact.

        Returns
        -------
        ComplexFieldFit
            With ``is_wrapped = False``: ``field_hz`` is the unwrapped field (Hz) and
            ``offset_rad`` the offset that goes with it.
        """
        est = np.asarray(field_phase_unwrapped_rad, dtype=float)
        if est.shape != self.mask.shape:
            raise InputError(
                f"unwrapped field phase has shape {est.shape}, expected {self.mask.shape}"
            )
        est = est[self.mask]
        if not np.all(np.isfinite(est)):
            raise InputError("the unwrapped field phase has NaN or Inf inside the mask")
        dte, te1 = self.delta_te_s, float(self.echo_times_s[0])
        field_w, offset_w, _ = self._wrapped_values
        alias = np.round((est / (TWO_PI * dte) - field_w) * dte)
        field = field_w + alias / dte
        offset = offset_w - TWO_PI * alias * te1 / dte
        n_iter = 0
        if refine is None:
            refine = not self.model.evenly_spaced
        if refine and self.echo_times_s.size > 1:
            tes = self.echo_times_s
            for sl in blocks(field.size):
                mag, pha = self._mag[sl], self._phase[sl]
                start = _best_offset_rad(mag, pha, tes, field[sl])
                field[sl], offset[sl], it = _gauss_newton(
                    mag, pha, tes, field[sl], start, self.model.max_iter, self.model.tol_rad
                )
                n_iter = max(n_iter, it)
        return ComplexFieldFit(
            self.model,
            self.mask,
            self._mag,
            self._phase,
            field,
            offset,
            wrapped=False,
            n_iter=n_iter,
        )


def _initial_field_hz(mag, phase, tes) -> np.ndarray:
    """Field from the summed lag-one products of the echo pairs spaced like echoes 1-2.

    ``angle(sum_j S_{j+1} conj(S_j)) / (2 pi dTE)`` is MEDI's first-two-echo phase
    difference when only two echoes exist, and averages noise over all equally spaced pairs.
    """
    dte = tes[1] - tes[0]
    pairs = np.flatnonzero(np.abs(np.diff(tes) - dte) <= 1e-3 * dte)
    weight = mag[:, pairs + 1].astype(np.float32) * mag[:, pairs]
    diff = phase[:, pairs + 1].astype(np.float32) - phase[:, pairs]
    lag_im = (weight * np.sin(diff)).sum(axis=1, dtype=float)
    lag_re = (weight * np.cos(diff)).sum(axis=1, dtype=float)
    return np.arctan2(lag_im, lag_re) / (TWO_PI * dte)


def _best_offset_rad(mag, phase, tes, field_hz) -> np.ndarray:
    """Offset minimising the complex residual for a fixed field (closed form):
    ``angle(sum_j m_j^2 exp(i (phi_j - 2 pi f TE_j)))``."""
    w = mag.astype(np.float32) ** 2
    demod = phase - (TWO_PI * np.asarray(field_hz, dtype=float)[:, None] * tes).astype(np.float32)
    return np.arctan2(
        (w * np.sin(demod)).sum(axis=1, dtype=float), (w * np.cos(demod)).sum(axis=1, dtype=float)
    )


def _gauss_newton(mag, phase, tes, field_hz, offset_rad, max_iter, tol_rad):
    """Gauss-Newton on ``r_j = m_j (exp(i theta_j) - exp(i phi_j))``, vectorised over voxels.

    With ``theta = p0 + w t`` the normal matrix is ``sum m^2 [[1, t], [t, t^2]]`` (the same
    in every iteration) and the gradient ``sum m^2 sin(phi - theta) [1, t]``, so each step
    is a magnitude^2-weighted linear regression of ``sin`` of the phase residual. Steps are
    limited to a quarter cycle at the last echo. Converged voxels are dropped from the
    working arrays; the residual phase is evaluated in float32 (its noise is far larger).
    """
    w = mag.astype(np.float32) ** 2
    tes32 = tes.astype(np.float32)
    a = w.sum(axis=1, dtype=float)
    b = w.astype(float) @ tes
    c = w.astype(float) @ (tes * tes)
    det = a * c - b * b
    omega = TWO_PI * np.array(field_hz, dtype=float)
    p0 = np.array(offset_rad, dtype=float)
    idx = np.flatnonzero(det > 1e-12 * np.maximum(a * c, np.finfo(float).tiny))
    w, phi = w[idx], phase[idx].astype(np.float32)
    a, b, c, det = a[idx], b[idx], c[idx], det[idx]
    om, pp = omega[idx], p0[idx]
    t_last = float(tes[-1])
    limit = np.pi / 2
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported
        if idx.size == 0:
            it -= 1
            break
        model = pp.astype(np.float32)[:, None] + om.astype(np.float32)[:, None] * tes32
        s = w * np.sin(phi - model)
        g0 = s.sum(axis=1, dtype=float)
        g1 = s.astype(float) @ tes
        dp = (c * g0 - b * g1) / det
        dw = (a * g1 - b * g0) / det
        change = np.abs(dp) + np.abs(dw) * t_last
        scale = np.minimum(1.0, limit / np.maximum(change, 1e-300))
        pp += scale * dp
        om += scale * dw
        done = change <= tol_rad
        n_done = int(np.count_nonzero(done))
        if n_done == idx.size:
            omega[idx], p0[idx] = om, pp
            idx, om, pp = idx[:0], om[:0], pp[:0]
            break
        if n_done > idx.size // 8:  # compact now and then: each copy costs an iteration
            omega[idx[done]], p0[idx[done]] = om[done], pp[done]
            keep = ~done
            idx, w, phi, a, b, c, det, om, pp = (
                x[keep] for x in (idx, w, phi, a, b, c, det, om, pp)
            )
    omega[idx], p0[idx] = om, pp
    if idx.size:
        log.info("complex fit: %d voxel(s) did not converge in %d iterations", idx.size, max_iter)
    return omega / TWO_PI, p0, it

"""Fat–water separation of chemical-shift-encoded multi-echo GRE with a shared R2*.

Signal model (multi-peak fat, one complex field for both species)::

    s(t_n) = (W + F c(t_n)) exp(i 2 pi psi t_n) exp(-R2* t_n),
    c(t)   = sum_p a_p exp(i 2 pi f_p t),   f_p = delta_p * 1e-6 * gamma_bar * B0

``W`` and ``F`` are complex (they share the initial phase in truth), ``psi`` is the B0 field
map in Hz (free of chemical shift: the water resonance is the reference), ``R2*`` (s^-1) is
common to water and fat. Phase accumulates as ``+2 pi f t`` as everywhere in qsmkit, so fat,
which resonates ~3.4 ppm below water, has negative ``f_p``.

Estimation, in three steps:

1. **Variable projection on a grid** (Hernando 2008/2010): for every candidate field ``psi``
   (one aliasing period ``1/dTE``) and R2* on a coarse grid, ``W`` and ``F`` are eliminated by
   least squares and the residual ``|(I - P(psi, R2*)) s|^2`` is evaluated for all voxels at
   once. The local minima over ``psi`` are each voxel's candidate fields; for a fat–water
   mixture the true field and its fat–water "swap" both appear.
2. **Global field map** (default ``field_method="multires"``, :mod:`qsmkit.body.fieldmap`,
   after Tsao & Jiang 2013): the residual curves (grid nodes lowered to the parabola's vertex,
   so a sharp true minimum between nodes is not out-scored by a broad swap) are summed over
   blocks, coarse to fine; the coarsest blocks take their global minimum, every finer level
   the minimum of residual plus a quadratic smoothness prior around the interpolated coarser
   map (loosened where that map is steep). Gauss–Newton (step 3) then stays within 0.4 fat
   shifts of this field. Voxels whose field is undetermined by the free fit (Cramér–Rao SD
   above a quarter of the fat shift: iron, signal gone after the first echo or two) are
   refitted with the initial phase of their well-measured neighbourhood (Bydder 2011): real,
   non-negative W and F (the neighbourhood's dominant species the larger), so that even the
   first echo alone measures the field through its phase. Their residual curves over one
   aliasing period around the smoothed field are summed over decayed neighbours to choose the
   basin, each voxel then takes its own minimum in it, and its SD is the Cramér–Rao bound of
   this phase-constrained model. The final field is unwrapped in space through the aliasing
   period.
   ``field_method="region_growing"`` is the former greedy estimate:
   **region growing over the candidates** (after Yu 2005): voxels are visited from the most to
   the least unambiguous (the residual gap between best and second candidate), each taking the
   candidate, aliased by whole periods, closest to its already-solved neighbours; every
   connected component starts from its most unambiguous voxel, where the multi-peak spectrum
   makes the global minimum the right one. Two smoothing-and-repick passes then remove
   isolated choices. The result is a smooth field map without fat–water swaps, unwrapped in
   space through the aliasing periods.
3. **Complex Gauss–Newton refinement** (T2*-IDEAL, Yu 2007): ``(W, F, psi + i R2*/2pi)`` jointly,
   started from the grown field; then the linear ``W, F`` at the final field.

The proton-density fat fraction uses magnitude discrimination (Liu 2007), which removes the
noise bias of ``|F| / (|W| + |F|)`` at low fat fractions. :attr:`FatWaterFit.field_sd_hz` is the
Cramér–Rao standard deviation of the field at each voxel (depends on signal, fat fraction and
R2*); its inverse is the fat- and decay-aware data weight of the liver QSM chain.

References
----------
Hamilton G, Yokoo T, Bydder M, et al. In vivo characterization of the liver fat 1H MR
spectrum. NMR Biomed 2011;24:784-790 (six-peak liver fat spectrum used here).
Hu HH, Börnert P, Hernando D, et al. ISMRM workshop on fat-water separation: insights,
applications and progress in MRI. Magn Reson Med 2012;68:378-388 (Fat-Water Toolbox).
Yu H, Reeder SB, Shimakawa A, Brittain JH, Pelc NJ. Field map estimation with a region growing
scheme for iterative 3-point water-fat decomposition. Magn Reson Med 2005;54:1032-1039.
Yu H, McKenzie CA, Shimakawa A, et al. Multiecho reconstruction for simultaneous water-fat
decomposition and T2* estimation. J Magn Reson Imaging 2007;26:1153-1161 (T2*-IDEAL).
Hernando D, Haldar JP, Sutton BP, Ma J, Kellman P, Liang ZP. Joint estimation of water/fat
images and field inhomogeneity map. Magn Reson Med 2008;59:571-580 (variable projection).
Hernando D, Kellman P, Haldar JP, Liang ZP. Robust water/fat separation in the presence of
large field inhomogeneities using a graph cut algorithm. Magn Reson Med 2010;63:79-90.
Tsao J, Jiang Y. Hierarchical IDEAL: fast, robust, and multiresolution separation of multiple
chemical species from multiple echo times. Magn Reson Med 2013;70:155-159.
Bydder M, Yokoo T, Yu H, Carl M, Reeder SB, Sirlin CB. Constraining the initial phase in
water-fat separation. Magn Reson Imaging 2011;29:216-221.
Liu CY, McKenzie CA, Yu H, Brittain JH, Reeder SB. Fat quantification with IDEAL gradient echo
imaging: correction of bias from T1 and noise. Magn Reson Med 2007;58:354-364.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from numba import njit

from qsmkit.acquisition import check_echo_times
from qsmkit.body.fieldmap import multires_field
from qsmkit.errors import InputError
from qsmkit.units import GAMMA_BAR_HZ_PER_T

FAT_PEAKS_PPM = (-3.80, -3.40, -2.60, -1.94, -0.39, 0.60)
"""Chemical shifts of the six liver-fat peaks relative to water (ppm), Hamilton 2011."""

FAT_PEAK_AMPLITUDES = (0.087, 0.693, 0.128, 0.004, 0.039, 0.048)
"""Relative amplitudes of the six peaks (normalised to sum 1 by :func:`fat_basis`)."""

_CHUNK = 2048


def _check_b0(b0_tesla) -> float:
    b0 = float(b0_tesla)
    if not (0.05 <= b0 <= 21.2):
        raise InputError(f"field strength {b0_tesla} T is outside 0.05-21.1 T; give B0 in tesla")
    return b0


def fat_basis(
    echo_times_s,
    b0_tesla: float,
    *,
    peaks_ppm: Sequence[float] = FAT_PEAKS_PPM,
    amplitudes: Sequence[float] = FAT_PEAK_AMPLITUDES,
) -> np.ndarray:
    """Complex fat signal ``c(t_n) = sum_p a_p exp(i 2 pi f_p t_n)`` at each echo time.

    Amplitudes are normalised to sum 1, so ``F`` in the model is the fat proton density.

    Parameters
    ----------
    echo_times_s : (E,) floats, s
    b0_tesla : float, T

    Returns
    -------
    (E,) complex128 ndarray

    Examples
    --------
    >>> c = fat_basis([0.0, 0.001], 3.0)
    >>> round(abs(c[0]), 6)
    1.0
    """
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    peaks = np.asarray(peaks_ppm, dtype=float)
    amps = np.asarray(amplitudes, dtype=float)
    if peaks.shape != amps.shape or peaks.ndim != 1 or peaks.size == 0:
        raise InputError("fat peaks and amplitudes must be two lists of the same length")
    if np.any(amps < 0) or amps.sum() <= 0:
        raise InputError("fat peak amplitudes must be non-negative and not all zero")
    amps = amps / amps.sum()
    freqs_hz = peaks * 1e-6 * GAMMA_BAR_HZ_PER_T * _check_b0(b0_tesla)
    return (amps[None, :] * np.exp(2j * np.pi * tes[:, None] * freqs_hz[None, :])).sum(axis=1)


def chemical_shift_signal(
    water,
    fat,
    field_hz,
    r2star_per_s,
    echo_times_s,
    b0_tesla: float,
    *,
    peaks_ppm: Sequence[float] = FAT_PEAKS_PPM,
    amplitudes: Sequence[float] = FAT_PEAK_AMPLITUDES,
) -> np.ndarray:
    """Noise-free multi-echo signal of the model, shape ``water.shape + (E,)``, complex64.

    ``water`` and ``fat`` are proton densities (real or complex, broadcastable), ``field_hz``
    the B0 field offset (Hz) and ``r2star_per_s`` the shared decay rate (s^-1).
    """
    tes = check_echo_times(echo_times_s)
    c = fat_basis(tes, b0_tesla, peaks_ppm=peaks_ppm, amplitudes=amplitudes)
    water, fat, field, r2 = np.broadcast_arrays(
        np.asarray(water), np.asarray(fat), np.asarray(field_hz, dtype=float),
        np.asarray(r2star_per_s, dtype=float),
    )
    decay = np.exp((2j * np.pi * field[..., None] - r2[..., None]) * tes)
    return ((water[..., None] + fat[..., None] * c) * decay).astype(np.complex64)


def pdff_percent(water, fat) -> np.ndarray:
    """Proton-density fat fraction (%) with magnitude discrimination (Liu 2007).

    Water-dominant voxels use ``1 - |W| / |W + F|``, fat-dominant ones ``|F| / |W + F|``: the
    small, noise-dominated component only enters through the complex sum, which removes the
    positive bias of ``|F| / (|W| + |F|)`` near 0 % and 100 %. Result clipped to [0, 100].
    """
    water = np.asarray(water)
    fat = np.asarray(fat)
    wm, fm = np.abs(water), np.abs(fat)
    total = np.abs(water + fat)
    with np.errstate(divide="ignore", invalid="ignore"):
        ff = np.where(fm > wm, fm / total, 1.0 - wm / total)
    ff = np.where(np.isfinite(ff) & (wm + fm > 0), ff, 0.0)
    return (100.0 * np.clip(ff, 0.0, 1.0)).astype(np.float32)


@dataclasses.dataclass
class FatWaterFit:
    """Result of :meth:`FatWaterModel.fit`; maps are (X, Y, Z), zero outside :attr:`mask`.

    Attributes
    ----------
    water, fat : complex64, proton densities in the units of the input magnitude
    field_hz : float32, Hz — B0 field map (water referenced, chemical shift removed),
        unwrapped in space through the aliasing period ``1/dTE``
    r2star_per_s : float32, s^-1 — shared, fat-corrected R2*
    residual : float32 — sum over echoes of ``|s - model|^2``
    field_sd_hz : float32, Hz — Cramér–Rao standard deviation of ``field_hz``
        (``inf`` outside the mask)
    noise_sd : float — per-channel (real/imaginary) noise standard deviation estimated from the
        residuals (NaN with three echoes or fewer)
    mask : bool
    info : dict — grid sizes, iterations, number of region-growing seeds
    """

    water: np.ndarray
    fat: np.ndarray
    field_hz: np.ndarray
    r2star_per_s: np.ndarray
    residual: np.ndarray
    field_sd_hz: np.ndarray
    noise_sd: float
    mask: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def pdff_percent(self) -> np.ndarray:
        """Proton-density fat fraction (%), magnitude discrimination; 0 outside the mask."""
        return np.where(self.mask, pdff_percent(self.water, self.fat), 0).astype(np.float32)

    @property
    def s0(self) -> np.ndarray:
        """Total proton-density signal ``|W| + |F|`` at t = 0."""
        return (np.abs(self.water) + np.abs(self.fat)).astype(np.float32)

    def field_weight(self) -> np.ndarray:
        """Data weight in [0, 1] for field-to-susceptibility inversion: ``sd_ref / field_sd``.

        ``sd_ref`` is the 10th percentile of ``field_sd_hz`` in the mask, so the best-measured
        tenth of the voxels gets weight 1; voxels whose signal has decayed get ~0.
        """
        sd = np.where(self.mask, self.field_sd_hz, np.inf)
        finite = np.isfinite(sd) & self.mask
        if not finite.any():
            return np.zeros(self.mask.shape, np.float32)
        ref = float(np.percentile(sd[finite], 10))
        with np.errstate(divide="ignore"):
            w = np.where(finite, ref / sd, 0.0)
        return np.clip(w, 0.0, 1.0).astype(np.float32)


class FatWaterModel:
    """Multi-peak fat–water model with field map and shared R2*; see the module docstring.

    Parameters
    ----------
    echo_times_s : (E,) floats, s — at least 3 echoes (4 or more for a noise estimate)
    b0_tesla : float, T
    r2star_max_per_s : float, optional
        Upper bound of R2* (default ``min(5000, max(1000, 3 / TE1))``).
    n_field : int, optional
        Field grid points over one aliasing period (default: ~8 Hz spacing, 48 to 256).
    n_iter : int
        Gauss–Newton iterations of the refinement (default 12).
    smooth_passes : int
        Smoothing-and-repick passes after region growing (default 2).
    fat_peaks_ppm, fat_amplitudes : the fat spectrum (default Hamilton 2011).
    field_method : {"multires", "region_growing"}
        Global multi-resolution field estimate with a smoothness prior (default) or the
        former greedy region growing.
    prior_sigma_hz : float, optional
        Per-voxel scale of the smoothness prior of ``"multires"`` (default ``period / 20``;
        a huge value switches the prior off).
    """

    def __init__(
        self,
        echo_times_s,
        b0_tesla: float,
        *,
        r2star_max_per_s: float | None = None,
        n_field: int | None = None,
        n_iter: int = 12,
        smooth_passes: int = 2,
        fat_peaks_ppm: Sequence[float] = FAT_PEAKS_PPM,
        fat_amplitudes: Sequence[float] = FAT_PEAK_AMPLITUDES,
        field_method: str = "multires",
        prior_sigma_hz: float | None = None,
    ):
        self.echo_times_s = check_echo_times(echo_times_s)
        if self.echo_times_s.size < 3:
            raise InputError(
                f"fat–water separation with a field map and R2* needs at least 3 echoes, got "
                f"{self.echo_times_s.size}; use a chemical-shift-encoded protocol (6 echoes)"
            )
        self.b0_tesla = _check_b0(b0_tesla)
        self.fat_c = fat_basis(
            self.echo_times_s, self.b0_tesla, peaks_ppm=fat_peaks_ppm, amplitudes=fat_amplitudes
        )
        tes = self.echo_times_s
        dte = np.diff(tes)
        self.period_hz = float(1.0 / dte.min())
        if r2star_max_per_s is None:
            r2star_max_per_s = min(5000.0, max(1000.0, 3.0 / tes[0]))
        if not r2star_max_per_s > 0:
            raise InputError(f"r2star_max_per_s must be positive, got {r2star_max_per_s}")
        self.r2star_max = float(r2star_max_per_s)
        if n_field is None:
            n_field = int(np.clip(np.ceil(self.period_hz / 8.0), 48, 256))
        if n_field < 8:
            raise InputError(f"n_field must be at least 8, got {n_field}")
        self.n_field = int(n_field)
        self.n_iter = int(n_iter)
        self.smooth_passes = int(smooth_passes)
        if field_method not in ("multires", "region_growing"):
            raise InputError(
                f"field_method must be 'multires' or 'region_growing', got {field_method!r}"
            )
        self.field_method = field_method
        self.repair_swaps = False
        if prior_sigma_hz is not None and not prior_sigma_hz > 0:
            raise InputError(f"prior_sigma_hz must be positive, got {prior_sigma_hz}")
        self.prior_sigma_hz = prior_sigma_hz
        self.field_grid = (np.arange(self.n_field) / self.n_field - 0.5) * self.period_hz
        self.r2_grid = np.concatenate(
            [[0.0], np.geomspace(10.0, self.r2star_max, 24)]
        )
        self._bases = self._projection_bases()

    # -- step 1: variable projection on a grid ------------------------------------------------
    def _projection_bases(self) -> np.ndarray:
        """Orthonormal bases ``Q (n_field * n_r2, E, 2)`` of the model columns at each node."""
        tes = self.echo_times_s
        psi = self.field_grid[:, None, None]
        r2 = self.r2_grid[None, :, None]
        d = np.exp((2j * np.pi * psi - r2) * tes[None, None, :])  # (P, R, E)
        a = np.stack([d, d * self.fat_c[None, None, :]], axis=-1)  # (P, R, E, 2)
        a = a.reshape(-1, tes.size, 2)
        q, _ = np.linalg.qr(a)
        return q.astype(np.complex64)

    def _grid_candidates(self, s: np.ndarray, k: int = 4, keep_curves: bool = False):
        """Candidate fields of every voxel from the residual on the (field, R2*) grid.

        Works in chunks of voxels so that memory stays bounded for any volume. Returns
        ``(cand_psi, cand_r, cand_r2, gap)``: up to ``k`` local minima over the field (circular
        in the aliasing period, refined by a parabola; ``inf`` residual where absent), the
        grid R2* at each, and the residual gap between the best and second candidate.
        """
        n = s.shape[0]
        n_p, n_r = self.field_grid.size, self.r2_grid.size
        k = min(k, n_p)
        qh = np.conj(self._bases).transpose(1, 0, 2).reshape(s.shape[1], -1)  # (E, G*2)
        energy = (np.abs(s) ** 2).sum(axis=1)
        cand_psi = np.empty((n, k))
        cand_r = np.empty((n, k))
        cand_r2 = np.empty((n, k))
        gap = np.empty(n)
        curves = np.empty((n, n_p), np.float32) if keep_curves else None
        curve_r2 = np.empty((n, n_p), np.int8) if keep_curves else None
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            proj = s[start:stop].astype(np.complex64) @ qh  # (n, G*2)
            pe = (proj.real**2 + proj.imag**2).reshape(stop - start, n_p, n_r, 2).sum(axis=-1)
            r = energy[start:stop, None, None] - pe
            arg = np.argmin(r, axis=2)
            res = np.maximum(np.min(r, axis=2), 0.0)
            if keep_curves:
                curves[start:stop] = _parabolic_floor(res)
                curve_r2[start:stop] = arg
            psi_c, r_c, idx, g = self._candidates(res, k)
            cand_psi[start:stop] = psi_c
            cand_r[start:stop] = r_c
            cand_r2[start:stop] = self.r2_grid[np.take_along_axis(arg, idx, axis=1)]
            gap[start:stop] = g
        if keep_curves:
            return cand_psi, cand_r, cand_r2, gap, curves, curve_r2
        return cand_psi, cand_r, cand_r2, gap

    def _candidates(self, res: np.ndarray, k: int):
        """Up to ``k`` local minima (circular in field) per voxel, refined by parabola."""
        left = np.roll(res, 1, axis=1)
        right = np.roll(res, -1, axis=1)
        is_min = (res < left) & (res <= right)
        masked = np.where(is_min, res, np.inf)
        idx = np.argsort(masked, axis=1)[:, :k]
        cand_r = np.take_along_axis(masked, idx, axis=1)
        valid = np.isfinite(cand_r)
        # a voxel without any local minimum (flat residual): one candidate at the global minimum
        none = ~valid[:, 0]
        if none.any():
            idx[none, 0] = np.argmin(res[none], axis=1)
            cand_r[none, 0] = res[none, idx[none, 0]]
            valid[none, 0] = True
        rl = np.take_along_axis(left, idx, axis=1)
        rr = np.take_along_axis(right, idx, axis=1)
        denom = rl - 2 * np.where(valid, cand_r, 0) + rr
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(denom > 0, 0.5 * (rl - rr) / denom, 0.0)
        offset = np.clip(np.nan_to_num(offset), -0.5, 0.5)
        step = self.period_hz / self.n_field
        cand_psi = self.field_grid[idx] + offset * step
        gap = np.where(valid[:, 1], cand_r[:, 1] - cand_r[:, 0], res.max(axis=1) - cand_r[:, 0])
        return cand_psi, np.where(valid, cand_r, np.inf), idx, np.maximum(gap, 0.0)

    # -- step 3: complex Gauss–Newton --------------------------------------------------------
    def _linear_wf(self, s, psi_c):
        """Least-squares W, F for a complex field ``psi + i R2*/2pi`` (vectorised)."""
        tes = self.echo_times_s
        d = np.exp(2j * np.pi * psi_c[:, None] * tes[None, :])
        b = np.stack([d, d * self.fat_c[None, :]], axis=-1)  # (N, E, 2)
        bh = np.conj(b).transpose(0, 2, 1)
        bhb = bh @ b
        bhb += 1e-9 * np.trace(bhb, axis1=1, axis2=2).real[:, None, None] * np.eye(2)
        x = np.linalg.solve(bhb, (bh @ s[..., None]))[..., 0]
        return x[:, 0], x[:, 1]

    def _refine(self, s, psi_c, max_shift_hz: float = np.inf):
        """Complex Gauss–Newton of (W, F, psi + i R2*/2pi); the field stays within
        ``max_shift_hz`` of its start (the basin chosen by the global field estimate)."""
        tes = self.echo_times_s
        c = self.fat_c
        start_psi = psi_c.real.copy()
        w, f = self._linear_wf(s, psi_c)
        max_step = self.period_hz / 8.0
        r2_cap = self.r2star_max / (2 * np.pi)
        for _ in range(self.n_iter):
            d = np.exp(2j * np.pi * psi_c[:, None] * tes[None, :])
            m = (w[:, None] + f[:, None] * c[None, :]) * d
            r = s - m
            jac = np.stack([d, d * c[None, :], 2j * np.pi * tes[None, :] * m], axis=-1)
            jh = np.conj(jac).transpose(0, 2, 1)
            jhj = jh @ jac
            jhj += 1e-6 * np.trace(jhj, axis1=1, axis2=2).real[:, None, None] * np.eye(3)
            delta = np.linalg.solve(jhj, (jh @ r[..., None]))[..., 0]
            dpsi = delta[:, 2]
            dpsi = np.clip(dpsi.real, -max_step, max_step) + 1j * np.clip(
                dpsi.imag, -r2_cap / 4, r2_cap / 4
            )
            psi_c = psi_c + dpsi
            psi_c = np.clip(psi_c.real, start_psi - max_shift_hz, start_psi + max_shift_hz) \
                + 1j * np.clip(psi_c.imag, 0.0, r2_cap)
            w, f = self._linear_wf(s, psi_c)
        return w, f, psi_c

    def _crlb(self, w, f, psi_c):
        """``Re[(J^H J)^-1]`` for the field entry (per unit noise variance per channel)."""
        tes = self.echo_times_s
        c = self.fat_c
        d = np.exp(2j * np.pi * psi_c[:, None] * tes[None, :])
        m = (w[:, None] + f[:, None] * c[None, :]) * d
        jac = np.stack([d, d * c[None, :], 2j * np.pi * tes[None, :] * m], axis=-1)
        jhj = np.conj(jac).transpose(0, 2, 1) @ jac
        jhj += 1e-12 * np.trace(jhj, axis1=1, axis2=2).real[:, None, None] * np.eye(3)
        inv = np.linalg.inv(jhj)
        return np.abs(inv[:, 2, 2].real)

    # -- swap detection and repair ----------------------------------------------------------
    def _fat_shift_hz(self) -> float:
        """Frequency of the main (methylene) fat peak relative to water, Hz (positive)."""
        return float(abs(FAT_PEAKS_PPM[1]) * 1e-6 * GAMMA_BAR_HZ_PER_T * self.b0_tesla)

    def _real_wf(self, s, psi_c, phase0):
        """Real W, F with the common initial phase ``phase0`` (rad) fixed (Bydder 2011)."""
        d = np.exp(2j * np.pi * psi_c[:, None] * self.echo_times_s[None, :])
        a = np.stack([d, d * self.fat_c[None, :]], axis=-1)  # (N, E, 2)
        y = s * np.exp(-1j * phase0)[:, None]
        ar = np.concatenate([a.real, a.imag], axis=1)  # (N, 2E, 2)
        yr = np.concatenate([y.real, y.imag], axis=1)
        ata = np.einsum("nei,nej->nij", ar, ar)
        ata += 1e-9 * np.trace(ata, axis1=1, axis2=2)[:, None, None] * np.eye(2)
        x = np.linalg.solve(ata, np.einsum("nei,ne->ni", ar, yr)[..., None])[..., 0]
        rot = np.exp(1j * phase0)
        return x[:, 0] * rot, x[:, 1] * rot

    def _fixed_field_fit(self, s, psi, phase0):
        """W, F and R2* at a fixed field and initial phase: R2* on a fine grid (parabolic),
        W and F real and linear (common phase ``phase0``, Bydder 2011)."""
        r2_fine = np.linspace(0.0, self.r2star_max, 161)
        res_all = np.empty((s.shape[0], r2_fine.size))
        for j, rate in enumerate(r2_fine):
            w, f = self._real_wf(s, psi + 1j * rate / (2 * np.pi), phase0)
            d = np.exp((2j * np.pi * psi[:, None] - rate) * self.echo_times_s[None, :])
            res_all[:, j] = (np.abs(s - (w[:, None] + f[:, None] * self.fat_c) * d) ** 2).sum(1)
        best_i = np.argmin(res_all, axis=1)
        best = r2_fine[best_i]
        inner = (best_i > 0) & (best_i < r2_fine.size - 1)
        rows = np.arange(s.shape[0])[inner]
        rl, rc, rr = (res_all[rows, best_i[inner] + k] for k in (-1, 0, 1))
        den = rl - 2 * rc + rr
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(den > 0, 0.5 * (rl - rr) / den, 0.0)
        best[inner] += np.clip(np.nan_to_num(off), -0.5, 0.5) * (r2_fine[1] - r2_fine[0])
        psi_c = psi + 1j * best / (2 * np.pi)
        w, f = self._real_wf(s, psi_c, phase0)
        return w, f, psi_c

    def _constrained_curves(self, y, psi, fat_dominant):
        """Residual of the phase-constrained fit over field offsets (one aliasing period).

        ``y``: echoes with the initial phase removed; W, F real and non-negative, the larger of
        the two the neighbourhood's dominant species (at echo times near opposed phase a pure
        water voxel with its phase flipped by pi is otherwise a pure fat voxel at another
        field); R2* minimised over a grid. Returns ``(offsets_hz (K,), curves (N, K))``.
        """
        tes = self.echo_times_s
        n_k = 64
        offsets = (np.arange(n_k) / n_k - 0.5) * self.period_hz
        rates = np.concatenate([[0.0], np.geomspace(10.0, self.r2star_max, 19)])
        yr = np.concatenate([y.real, y.imag], axis=1)
        yy = (yr**2).sum(axis=1)
        curves = np.full((y.shape[0], n_k), np.inf)
        for k, off in enumerate(offsets):
            for rate in rates:
                d = np.exp((2j * np.pi * (psi[:, None] + off) - rate) * tes[None, :])
                res = _bounded_wf_residual(d, d * self.fat_c[None, :], yr, yy, fat_dominant)
                np.minimum(curves[:, k], res, out=curves[:, k])
        return offsets, curves

    def _refine_phase_constrained(self, s, w, f, psi_c, phase0, n_iter: int = 6):
        """Gauss–Newton of (W, F, psi, R2*) with W, F real at the initial phase ``phase0``,
        from a grid solution; steps limited to an eighth of the period in field."""
        tes = self.echo_times_s
        y = s * np.exp(-1j * phase0)[:, None]
        yr = np.concatenate([y.real, y.imag], axis=1)
        rot = np.exp(-1j * phase0)
        x = np.stack([(w * rot).real, (f * rot).real, psi_c.real, 2 * np.pi * psi_c.imag], 1)
        start = x[:, 2].copy()
        for _ in range(n_iter):
            d = np.exp((2j * np.pi * x[:, 2:3] - x[:, 3:4]) * tes[None, :])
            m = (x[:, 0:1] + x[:, 1:2] * self.fat_c[None, :]) * d
            jac = np.stack([d, d * self.fat_c[None, :], 2j * np.pi * tes[None, :] * m,
                            -tes[None, :] * m], axis=-1)
            jr = np.concatenate([jac.real, jac.imag], axis=1)
            r = yr - np.concatenate([m.real, m.imag], axis=1)
            jtj = np.einsum("nei,nej->nij", jr, jr)
            jtj += 1e-6 * np.trace(jtj, axis1=1, axis2=2)[:, None, None] * np.eye(4)
            step = np.linalg.solve(jtj, np.einsum("nei,ne->ni", jr, r)[..., None])[..., 0]
            step[:, 2] = np.clip(step[:, 2], -self.period_hz / 16, self.period_hz / 16)
            x = x + step
            x[:, 2] = np.clip(x[:, 2], start - self.period_hz / 8, start + self.period_hz / 8)
            x[:, 3] = np.clip(x[:, 3], 0.0, self.r2star_max)
        back = np.exp(1j * phase0)
        return x[:, 0] * back, x[:, 1] * back, x[:, 2] + 1j * x[:, 3] / (2 * np.pi)

    def _crlb_phase_constrained(self, w, f, psi_c, phase0):
        """Field entry of the Cramér–Rao bound with real W, F at the known initial phase
        (per unit noise variance per channel); parameters (W, F, psi, R2*)."""
        tes = self.echo_times_s
        rot = np.exp(-1j * phase0)
        wr, fr = (w * rot).real, (f * rot).real
        d = np.exp(2j * np.pi * psi_c[:, None] * tes[None, :])
        m = (wr[:, None] + fr[:, None] * self.fat_c[None, :]) * d
        jac = np.stack([d, d * self.fat_c[None, :], 2j * np.pi * tes[None, :] * m,
                        -tes[None, :] * m], axis=-1)
        jr = np.concatenate([jac.real, jac.imag], axis=1)
        jtj = np.einsum("nei,nej->nij", jr, jr)
        jtj += 1e-12 * np.trace(jtj, axis1=1, axis2=2)[:, None, None] * np.eye(4)
        return np.abs(np.linalg.inv(jtj)[:, 2, 2])

    def _decayed_fields(self, s, mask, which, ref, phase0, fat_dominant, noise_var):
        """Phase-constrained fields of the decayed voxels ``which`` (indices into ``s``).

        The residual curves, in offsets from the smoothed field ``ref``, are averaged over the
        decayed neighbours (Gaussian, sigma one voxel) to choose the basin; each voxel then
        takes the minimum of its own curve within an eighth of the period of that choice.
        The smoothed field stays where the neighbourhood's data do not contradict it: a
        likelihood-ratio statistic (residual at ``ref`` minus the minimum, summed over the
        effective number of neighbours, over the noise variance) below 25. With one echo of
        signal and fat at an angle to water (1.5 T), the phase of that echo is also explained
        by a little fat, so the data alone are a poorer estimate than a smooth field unless
        the region makes its own field. Returns ``(field_hz, measured)``.
        """
        from scipy.ndimage import convolve, gaussian_filter

        y = s[which] * np.exp(-1j * phase0[which])[:, None]
        offsets, curves = self._constrained_curves(y, ref[which], fat_dominant[which])
        var = noise_var if np.isfinite(noise_var) and noise_var > 0 else float(
            np.median(curves.min(axis=1))) or 1.0
        coords = tuple(np.argwhere(mask)[which].T)
        present = np.zeros(mask.shape, np.float32)
        present[coords] = 1.0
        den = gaussian_filter(present, 1.0, mode="constant")[coords]
        impulse = np.zeros((9, 9, 9), np.float32)
        impulse[4, 4, 4] = 1.0
        kernel = gaussian_filter(impulse, 1.0, mode="constant")
        den2 = convolve(present, kernel**2, mode="constant")[coords]
        n_eff = den**2 / np.maximum(den2, 1e-30)
        vol = np.zeros(mask.shape, np.float32)
        smooth = np.empty_like(curves)
        for k in range(offsets.size):
            vol[coords] = curves[:, k] / var
            smooth[:, k] = gaussian_filter(vol, 1.0, mode="constant")[coords]
        smooth /= np.maximum(den, 1e-30)[:, None]
        k_best = np.argmin(smooth, axis=1)
        rows = np.arange(k_best.size)
        k_ref = int(np.argmin(np.abs(offsets)))
        statistic = n_eff * (smooth[:, k_ref] - smooth[rows, k_best])
        basin = offsets[k_best]
        step = offsets[1] - offsets[0]
        per = self.period_hz
        dist = np.abs((offsets[None, :] - basin[:, None] + per / 2) % per - per / 2)
        own = np.where(dist <= per / 8, curves, np.inf)
        best = np.argmin(own, axis=1)
        rl = own[rows, (best - 1) % offsets.size]
        rc = own[rows, best]
        rr = own[rows, (best + 1) % offsets.size]
        den3 = rl - 2 * rc + rr
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(np.isfinite(den3) & (den3 > 0), 0.5 * (rl - rr) / den3, 0.0)
        field = ref[which] + offsets[best] + np.clip(np.nan_to_num(shift), -0.5, 0.5) * step
        measured = statistic > 25.0
        return np.where(measured, field, ref[which]), measured

    def _residual(self, s, w, f, psi_c):
        """``sum_n |s_n - model_n|^2`` per voxel."""
        d = np.exp(2j * np.pi * psi_c[:, None] * self.echo_times_s[None, :])
        return (np.abs(s - (w[:, None] + f[:, None] * self.fat_c) * d) ** 2).sum(axis=1)

    def _fit_decayed(self, s, mask, which, ref, phase0, fat_dominant, noise_var):
        """W, F, complex field and field CRLB of the decayed voxels ``which``.

        Fields from :meth:`_decayed_fields`, refined by phase-constrained Gauss–Newton, then
        averaged over decayed neighbours with weights ``1 / CRLB`` (Gaussian, sigma one
        voxel: one or two echoes give a noisy field per voxel, and W, F fitted at a noisy
        field read the phase error as fat). W, F and R2* are fitted at that field; a voxel
        whose data do not contradict ``ref``, or whose phase-constrained SD still exceeds a
        quarter of the period, keeps ``ref`` with the SD of the free fit (no weight).
        """
        from scipy.ndimage import gaussian_filter

        field, measured = self._decayed_fields(s, mask, which, ref, phase0, fat_dominant,
                                               noise_var)
        crlb = np.empty(which.size)
        for start in range(0, which.size, 16 * _CHUNK):
            sl = slice(start, start + 16 * _CHUNK)
            sel = which[sl]
            w_n, f_n, p_n = self._fixed_field_fit(s[sel], field[sl], phase0[sel])
            w_r, f_r, p_r = self._refine_phase_constrained(s[sel], w_n, f_n, p_n, phase0[sel])
            keep = measured[sl]  # the smoothed field is not refined away from
            w_n, f_n = np.where(keep, w_r, w_n), np.where(keep, f_r, f_n)
            p_n = np.where(keep, p_r, p_n)
            field[sl] = p_n.real
            crlb[sl] = self._crlb_phase_constrained(w_n, f_n, p_n, phase0[sel])
        var = noise_var if np.isfinite(noise_var) and noise_var > 0 else 1.0
        lost = (np.sqrt(var * crlb) > 0.25 * self.period_hz) | ~measured
        field = np.where(lost, ref[which], field)
        coords = tuple(np.argwhere(mask)[which].T)
        wt = np.zeros(mask.shape)
        val = np.zeros(mask.shape)
        wt[coords] = np.where(lost, 0.0, 1.0 / np.maximum(crlb, 1e-30))
        val[coords] = wt[coords] * (field - ref[which])  # smooth the offset, not the field
        den = gaussian_filter(wt, 1.0, mode="constant")[coords]
        num = gaussian_filter(val, 1.0, mode="constant")[coords]
        field = np.where(lost | ~(den > 0), field,
                         ref[which] + num / np.maximum(den, 1e-300))
        w_o = np.empty(which.size, np.complex128)
        f_o = np.empty_like(w_o)
        p_o = np.empty_like(w_o)
        for start in range(0, which.size, 16 * _CHUNK):
            sl = slice(start, start + 16 * _CHUNK)
            sel = which[sl]
            w_o[sl], f_o[sl], p_o[sl] = self._fixed_field_fit(s[sel], field[sl], phase0[sel])
            crlb[sl] = np.where(
                lost[sl], self._crlb(w_o[sl], f_o[sl], p_o[sl]),  # the smoothed field: no data
                self._crlb_phase_constrained(w_o[sl], f_o[sl], p_o[sl], phase0[sel]))
        return w_o, f_o, p_o, crlb

    def _repair(self, s, mask, w, f, psi_c, resid, crlb, sd, noise_var):
        """Detect fat–water swaps and undetermined fields; refit them near the smooth field.

        The reference is the field smoothed with weights ``1 / field_sd^2`` (well-measured
        voxels dominate). A voxel whose field departs from it by more than half the main fat
        shift is a swap suspect: the joint fit is restarted from the reference, and the new
        solution replaces the old one unless it explains the echoes worse by more than
        ``200 sigma^2`` (a true swap fits about as well as the truth; a real steep field near
        air, which smoothing cannot follow, fits far better than a field pulled towards the
        reference). A voxel whose own field is less precise than a quarter of the fat shift
        (signal gone after the first echoes) is refitted with the smoothed initial phase of the
        well-measured neighbourhood (:meth:`_decayed_fields`): with that phase known, the first
        echo alone measures the field; R2* and real W, F are then fitted at that field, and the
        SD is that of the phase-constrained model. Where even that SD exceeds a quarter of the
        period, the voxel keeps the reference field.
        """
        from scipy.ndimage import gaussian_filter

        fat_shift = self._fat_shift_hz()
        psi = psi_c.real
        wt = np.zeros(mask.shape)
        val = np.zeros(mask.shape)
        good = np.isfinite(sd) & (sd > 0)
        wv = np.where(good, 1.0 / np.maximum(sd, 1e-3) ** 2, 0.0)
        wt[mask] = wv
        val[mask] = psi * wv
        ref = gaussian_filter(val, 2.0, mode="nearest")[mask]
        den = gaussian_filter(wt, 2.0, mode="nearest")[mask]
        ref = np.where(den > 0, ref / np.maximum(den, 1e-30), psi)
        # initial phase of water and fat (shared) from the well-measured neighbourhood
        z0 = np.zeros(mask.shape, np.complex128)
        z0[mask] = (w + f) * wv
        phase0 = np.angle(gaussian_filter(z0.real, 2.0, mode="nearest")[mask]
                          + 1j * gaussian_filter(z0.imag, 2.0, mode="nearest")[mask])
        zw = np.zeros(mask.shape)
        zw[mask] = np.abs(w) * wv
        zf = np.zeros(mask.shape)
        zf[mask] = np.abs(f) * wv
        fat_dominant = (gaussian_filter(zf, 2.0, mode="nearest")
                        > gaussian_filter(zw, 2.0, mode="nearest"))[mask]
        undetermined = ~(sd < 0.25 * fat_shift)
        if np.isfinite(noise_var) and noise_var > 0 and self.echo_times_s.size >= 3:
            # fewer than three echoes above twice the noise: the free fit's Cramér–Rao SD,
            # taken at its own (noise-driven) solution, is no guide to its error there
            sigma = np.sqrt(noise_var)
            third = np.abs(w + f) * np.exp(-2 * np.pi * psi_c.imag * self.echo_times_s[2])
            undetermined |= third < 2.0 * sigma
            if s.shape[1] >= 4:  # noise lowers the fitted R2*: also the measured echoes
                undetermined |= (np.abs(s[:, 2]) < 2.0 * sigma) & (np.abs(s[:, 3]) < 2.0 * sigma)
        suspect = (np.abs(psi - ref) > 0.5 * fat_shift) & ~undetermined & self.repair_swaps
        tol = 200.0 * noise_var if np.isfinite(noise_var) else np.inf
        w, f, psi_c, resid, crlb = (a.copy() for a in (w, f, psi_c, resid, crlb))
        n_done = 0
        which = np.nonzero(suspect)[0]
        for start in range(0, which.size, 16 * _CHUNK):
            sel = which[start:start + 16 * _CHUNK]
            w_n, f_n, p_n = self._refine(s[sel], ref[sel] + 1j * psi_c[sel].imag)
            r_n = self._residual(s[sel], w_n, f_n, p_n)
            take = r_n <= resid[sel] + tol
            t = sel[take]
            w[t], f[t], psi_c[t], resid[t] = w_n[take], f_n[take], p_n[take], r_n[take]
            crlb[t] = self._crlb(w[t], f[t], psi_c[t])
            n_done += int(take.sum())
        und = np.nonzero(undetermined)[0]
        if und.size:
            w[und], f[und], psi_c[und], crlb[und] = self._fit_decayed(
                s, mask, und, ref, phase0, fat_dominant, noise_var)
            resid[und] = self._residual(s[und], w[und], f[und], psi_c[und])
            n_done += int(und.size)
        return w, f, psi_c, resid, crlb, n_done

    # -- public -------------------------------------------------------------------------------
    def fit(self, magnitude, phase, mask=None) -> FatWaterFit:
        """Separate water and fat, estimate the field map and R2*.

        Parameters
        ----------
        magnitude, phase : (X, Y, Z, E) arrays (phase in radians)
        mask : (X, Y, Z) bool array, optional
            Voxels to fit (default: first-echo magnitude above 5 % of its 99th percentile).
        """
        mag = np.asarray(magnitude, dtype=np.float32)
        ph = np.asarray(phase, dtype=np.float32)
        if mag.ndim != 4 or ph.shape != mag.shape:
            raise InputError(
                f"magnitude and phase must both be (X, Y, Z, echo); got {mag.shape} and {ph.shape}"
            )
        if mag.shape[3] != self.echo_times_s.size:
            raise InputError(
                f"the data have {mag.shape[3]} echoes but {self.echo_times_s.size} echo times "
                "were given; give one echo time per echo"
            )
        if not (np.all(np.isfinite(mag)) and np.all(np.isfinite(ph))):
            raise InputError("magnitude or phase contains NaN or Inf values")
        if mask is None:
            first = mag[..., 0]
            mask = first > 0.05 * np.percentile(first, 99)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != mag.shape[:3]:
            raise InputError(f"mask shape {mask.shape} does not match the data {mag.shape[:3]}")
        if not mask.any():
            raise InputError("the mask for fat–water separation is empty")

        s = (mag[mask] * np.exp(1j * ph[mask].astype(np.float64))).astype(np.complex128)
        scale = float(np.percentile(np.abs(s[:, 0]), 99)) or 1.0
        s /= scale
        n_echo = s.shape[1]

        multires = self.field_method == "multires"
        out = self._grid_candidates(s, keep_curves=multires)
        cand_psi, cand_r, cand_r2, gap = out[:4]

        # candidate cost: residual excess over the best candidate in units of the noise
        # variance (a fat–water swap of a high-SNR voxel costs hundreds), plus the squared
        # distance from the neighbours' field in units of an eighth of the aliasing period
        dof = n_echo - 3
        if dof >= 1:
            from scipy.stats import chi2

            var0 = float(np.median(cand_r[:, 0]) / chi2.ppf(0.5, 2 * dof))
        else:
            var0 = 0.0
        excess = cand_r - cand_r[:, :1]
        cand_z = (excess / var0 if var0 > 0 else np.where(np.isfinite(excess), 0.0, np.inf))
        cand_z = np.where(np.isfinite(cand_r), cand_z, np.inf)
        step = self.period_hz / 8.0
        per = self.period_hz
        if multires:
            curves, curve_r2 = out[4:]
            scale_var = var0 if var0 > 0 else float(np.median(curves.min(axis=1))) or 1.0
            psi = multires_field(curves / scale_var, mask, self.field_grid, per,
                                 sigma_hz=self.prior_sigma_hz,
                                 smooth_passes=self.smooth_passes)
            # initial R2*: the grid R2* at the nearest field-grid node
            node = np.round((psi - self.field_grid[0]) / (per / self.n_field)).astype(np.int64)
            node %= self.n_field
            r2_0 = self.r2_grid[curve_r2[np.arange(s.shape[0]), node]]
            n_seeds = 0
        else:
            index = -np.ones(mask.shape, np.int64)
            index[mask] = np.arange(s.shape[0])
            psi, n_seeds = _grow(index, cand_psi, cand_z, gap.astype(np.float64), per, step)
            for _ in range(self.smooth_passes):
                smooth = _smooth_field(psi, gap, index, mask)
                psi = _repick(cand_psi, cand_z, smooth, per, step)
            # initial R2*: the grid R2* of the candidate that the field map took
            dist = np.abs((psi[:, None] - cand_psi + per / 2) % per - per / 2)
            dist = np.where(np.isfinite(cand_r), dist, np.inf)
            r2_0 = cand_r2[np.arange(s.shape[0]), np.argmin(dist, axis=1)]
        psi_c = psi + 1j * r2_0 / (2 * np.pi)
        # the global estimate chose the basin: Gauss–Newton may not walk to the swap
        max_shift = 0.4 * self._fat_shift_hz() if multires else np.inf
        w = np.empty(s.shape[0], np.complex128)
        f = np.empty_like(w)
        resid = np.empty(s.shape[0])
        crlb = np.empty(s.shape[0])
        for start in range(0, s.shape[0], 16 * _CHUNK):  # bounded memory of the Jacobians
            sl = slice(start, min(s.shape[0], start + 16 * _CHUNK))
            w[sl], f[sl], psi_c[sl] = self._refine(s[sl], psi_c[sl], max_shift)
            resid[sl] = self._residual(s[sl], w[sl], f[sl], psi_c[sl])
            crlb[sl] = self._crlb(w[sl], f[sl], psi_c[sl])

        noise_var = _noise_variance(resid, w, f, psi_c, self.echo_times_s)
        sd = np.sqrt(noise_var * crlb) if np.isfinite(noise_var) else np.sqrt(crlb)
        n_repaired = 0
        if multires:
            w, f, psi_c, resid, crlb, n_repaired = self._repair(
                s, mask, w, f, psi_c, resid, crlb, sd, noise_var
            )
            sd = np.sqrt(noise_var * crlb) if np.isfinite(noise_var) else np.sqrt(crlb)
            # spatial unwrapping of the final field through the aliasing period, from the
            # best-measured voxels outwards; W and F take the matching constant phase
            index = -np.ones(mask.shape, np.int64)
            index[mask] = np.arange(s.shape[0])
            quality = 1.0 / np.maximum(np.nan_to_num(sd, nan=np.inf), 1e-3)
            new_psi, _ = _grow(index, psi_c.real[:, None].copy(), np.zeros((s.shape[0], 1)),
                               quality, per, per)
            shift = np.round((new_psi - psi_c.real) / per) * per
            phase = np.exp(-2j * np.pi * shift * self.echo_times_s[0])
            w, f = w * phase, f * phase
            psi_c = psi_c + shift

        def volume(values, dtype, fill=0):
            out = np.full(mask.shape, fill, dtype=dtype)
            out[mask] = values
            return out

        return FatWaterFit(
            water=volume(w * scale, np.complex64),
            fat=volume(f * scale, np.complex64),
            field_hz=volume(psi_c.real, np.float32),
            r2star_per_s=volume(2 * np.pi * psi_c.imag, np.float32),
            residual=volume(resid * scale**2, np.float32),
            field_sd_hz=volume(sd, np.float32, fill=np.inf),
            noise_sd=float(np.sqrt(noise_var) * scale) if np.isfinite(noise_var) else float("nan"),
            mask=mask,
            info={
                "method": (
                    "multi-peak VARPRO grid + multi-resolution field with smoothness prior "
                    "+ T2*-IDEAL + swap repair" if multires
                    else "multi-peak VARPRO grid + region growing + T2*-IDEAL"
                ),
                "b0_tesla": self.b0_tesla,
                "echo_times_s": self.echo_times_s.tolist(),
                "aliasing_period_hz": self.period_hz,
                "n_field": self.n_field,
                "r2star_max_per_s": self.r2star_max,
                "n_iter": self.n_iter,
                "region_growing_seeds": int(n_seeds),
                "field_method": self.field_method,
                "repaired_voxels": int(n_repaired),
            },
        )


def _noise_variance(resid, w, f, psi_c, echo_times_s, *, min_voxels: int = 200) -> float:
    """Per-channel noise variance from the residuals of the voxel fits (NaN with ≤ 3 echoes).

    With the model right, a voxel's residual is ``σ² χ²(2 (E − 3))`` (three complex parameters:
    W, F and the complex field), so ``median / χ²₀.₅`` estimates ``σ²``. The model is not
    equally right everywhere: fat-dominant tissue carries the error of the fat spectrum (the
    spectrum varies between people and depots, Hamilton 2011), and weak or fast-decaying voxels
    are not yet in the asymptotic regime of the nonlinear fit. Both inflate the residual: on
    the independent abdomen at 3 T the median over all voxels read σ 26 % high (subcutaneous
    fat 5× its expected residual). The median is therefore taken over water-dominant voxels
    (PDFF < 10 %) whose signal lasts the echo train (R2* < 1/TE_last) and whose proton density
    is above 20 σ (from the first, all-voxel estimate): there it read σ within 5 %. Fewer than
    ``min_voxels`` such voxels (a fat-only or all-iron field of view) keep the all-voxel
    estimate, which can only overstate σ (the SDs derived from it are then conservative).
    """
    from scipy.stats import chi2

    tes = np.asarray(echo_times_s, dtype=float)
    dof = tes.size - 3
    if dof < 1 or resid.size == 0:
        return float("nan")
    median_chi2 = chi2.ppf(0.5, 2 * dof)
    noise_var = float(np.median(resid) / median_chi2)
    s0 = np.abs(w) + np.abs(f)
    r2 = 2 * np.pi * np.asarray(psi_c).imag
    clean = ((np.abs(f) < 0.1 * np.maximum(s0, 1e-30)) & (r2 < 1.0 / float(tes.max()))
             & (s0 > 20.0 * np.sqrt(max(noise_var, 0.0))))
    if int(clean.sum()) >= min_voxels:
        noise_var = float(np.median(resid[clean]) / median_chi2)
    return noise_var


def _bounded_wf_residual(a_w, a_f, yr, yy, fat_dominant):
    """Least-squares residual of ``y ≈ W a_w + F a_f`` with W, F real, both non-negative and
    the dominant one (fat where ``fat_dominant``) at least the other: the unconstrained
    solution where it is feasible, else the better of the boundary solutions (dominant species
    alone, or W = F). ``yr``: real-stacked data (N, 2E); ``yy``: its squared norm."""
    ar_w = np.concatenate([a_w.real, a_w.imag], axis=1)
    ar_f = np.concatenate([a_f.real, a_f.imag], axis=1)
    gww = (ar_w * ar_w).sum(axis=1)
    gff = (ar_f * ar_f).sum(axis=1)
    gwf = (ar_w * ar_f).sum(axis=1)
    bw = (ar_w * yr).sum(axis=1)
    bf = (ar_f * yr).sum(axis=1)
    det = gww * gff - gwf**2
    with np.errstate(divide="ignore", invalid="ignore"):
        xw = (gff * bw - gwf * bf) / det
        xf = (gww * bf - gwf * bw) / det
    big, small = np.where(fat_dominant, xf, xw), np.where(fat_dominant, xw, xf)
    feasible = (small >= 0) & (big >= small) & (det > 0)
    r_both = yy - (xw * bw + xf * bf)
    b_dom = np.where(fat_dominant, bf, bw)
    g_dom = np.where(fat_dominant, gff, gww)
    r_one = yy - np.maximum(b_dom, 0.0) ** 2 / np.maximum(g_dom, 1e-30)
    b_eq, g_eq = bw + bf, gww + 2 * gwf + gff
    r_eq = yy - np.maximum(b_eq, 0.0) ** 2 / np.maximum(g_eq, 1e-30)
    return np.where(feasible, r_both, np.minimum(r_one, r_eq))


# -- region growing (numba) --------------------------------------------------------------------
@njit(cache=True)
def _heap_push(keys, vals, size, key, val):
    i = size
    keys[i] = key
    vals[i] = val
    while i > 0:
        parent = (i - 1) // 2
        if keys[parent] <= keys[i]:
            break
        keys[parent], keys[i] = keys[i], keys[parent]
        vals[parent], vals[i] = vals[i], vals[parent]
        i = parent
    return size + 1


@njit(cache=True)
def _heap_pop(keys, vals, size):
    val = vals[0]
    size -= 1
    keys[0] = keys[size]
    vals[0] = vals[size]
    i = 0
    while True:
        left = 2 * i + 1
        right = left + 1
        small = i
        if left < size and keys[left] < keys[small]:
            small = left
        if right < size and keys[right] < keys[small]:
            small = right
        if small == i:
            break
        keys[small], keys[i] = keys[i], keys[small]
        vals[small], vals[i] = vals[i], vals[small]
        i = small
    return val, size


@njit(cache=True)
def _nearest_candidate(cand_psi, cand_z, v, ref, period, scale):
    """The candidate (aliased by whole periods) minimising ``((psi - ref)/scale)^2 + z``."""
    best = ref
    best_d = np.inf
    for c in range(cand_psi.shape[1]):
        if not np.isfinite(cand_z[v, c]):
            continue
        value = cand_psi[v, c]
        k = np.round((ref - value) / period)
        value = value + k * period
        dist = ((value - ref) / scale) ** 2 + cand_z[v, c]
        if dist < best_d:
            best_d = dist
            best = value
    return best


@njit(cache=True)
def _grow(index, cand_psi, cand_z, gap, period, scale):
    """Quality-ordered region growing; returns the unwrapped field per voxel and #seeds."""
    nx, ny, nz = index.shape
    n = cand_psi.shape[0]
    coords = np.empty((n, 3), np.int64)
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                i = index[x, y, z]
                if i >= 0:
                    coords[i, 0] = x
                    coords[i, 1] = y
                    coords[i, 2] = z
    psi = np.zeros(n)
    done = np.zeros(n, np.bool_)
    queued = np.zeros(n, np.bool_)
    order = np.argsort(-gap)
    keys = np.empty(n + 1)
    vals = np.empty(n + 1, np.int64)
    size = 0
    seeds = 0
    for o in range(n):
        seed = order[o]
        if done[seed]:
            continue
        seeds += 1
        # the seed takes its global minimum (first candidate), in the principal period
        psi[seed] = cand_psi[seed, 0]
        done[seed] = True
        queued[seed] = True
        size = _heap_push(keys, vals, size, -gap[seed], seed)
        while size > 0:
            v, size = _heap_pop(keys, vals, size)
            x0, y0, z0 = coords[v, 0], coords[v, 1], coords[v, 2]
            if not done[v]:
                acc = 0.0
                wsum = 0.0
                for dx in range(-1, 2):
                    for dy in range(-1, 2):
                        for dz in range(-1, 2):
                            x, y, z = x0 + dx, y0 + dy, z0 + dz
                            if x < 0 or y < 0 or z < 0 or x >= nx or y >= ny or z >= nz:
                                continue
                            u = index[x, y, z]
                            if u < 0 or not done[u]:
                                continue
                            wt = (gap[u] + 1e-12) / (abs(dx) + abs(dy) + abs(dz))
                            acc += wt * psi[u]
                            wsum += wt
                ref = acc / wsum
                psi[v] = _nearest_candidate(cand_psi, cand_z, v, ref, period, scale)
                done[v] = True
            for dx in range(-1, 2):
                for dy in range(-1, 2):
                    for dz in range(-1, 2):
                        if abs(dx) + abs(dy) + abs(dz) != 1:
                            continue
                        x, y, z = x0 + dx, y0 + dy, z0 + dz
                        if x < 0 or y < 0 or z < 0 or x >= nx or y >= ny or z >= nz:
                            continue
                        u = index[x, y, z]
                        if u < 0 or queued[u]:
                            continue
                        queued[u] = True
                        size = _heap_push(keys, vals, size, -gap[u], u)
    return psi, seeds


def _parabolic_floor(res: np.ndarray) -> np.ndarray:
    """Residual curves with each grid node lowered to the parabola's vertex inside its cell.

    The true minimum of a high-SNR voxel is sharp and generally lies between two nodes of the
    field grid, while a fat–water swap's minimum is broad; sampled on the grid, the true
    minimum would be penalised by its discretisation and can lose to the swap. The vertex of
    the parabola through three neighbouring nodes (circular in the field) estimates the
    minimum within half a grid step of each node.
    """
    left = np.roll(res, 1, axis=1)
    right = np.roll(res, -1, axis=1)
    den = left - 2.0 * res + right
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = 0.5 * (left - right) / den
        drop = (left - right) ** 2 / (8.0 * den)
    inside = (den > 0) & (np.abs(offset) <= 0.5)
    return np.maximum(np.where(inside, res - drop, res), 0.0).astype(np.float32)


def _smooth_field(psi, gap, index, mask, sigma_vox: float = 1.5):
    """Gap-weighted Gaussian smoothing of the grown field inside the mask."""
    from scipy.ndimage import gaussian_filter

    vol = np.zeros(mask.shape)
    wts = np.zeros(mask.shape)
    wvals = gap / (gap.max() + 1e-30) + 1e-6
    vol[mask] = psi * wvals
    wts[mask] = wvals
    num = gaussian_filter(vol, sigma_vox, mode="nearest")
    den = gaussian_filter(wts, sigma_vox, mode="nearest")
    return (num[mask] / np.maximum(den[mask], 1e-30)).astype(np.float64)


def _repick(cand_psi, cand_z, ref, period, scale):
    """Each voxel's candidate (aliased by whole periods) of least cost against ``ref``."""
    k = np.round((ref[:, None] - cand_psi) / period)
    values = cand_psi + k * period
    dist = np.where(np.isfinite(cand_z), ((values - ref[:, None]) / scale) ** 2 + cand_z, np.inf)
    best = np.argmin(dist, axis=1)
    return values[np.arange(values.shape[0]), best]

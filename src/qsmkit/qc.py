"""Quality gates: small pure functions that judge one input or result of a reconstruction.

A χ map that looks fine but is wrong is the worst output, so the pipeline judges its own
inputs and results. Each ``check_*`` function looks at one thing and returns ``None`` (all
well) or one :class:`QCWarning` (code, message, measured value, threshold, advice).
:func:`judge_reconstruction` runs them all at the end of :func:`qsmkit.pipeline.run_qsm`;
the findings travel in ``QSMResult.warnings``, the CLI prints each as one line on stderr
(:meth:`QCWarning.line`), ``qsmkit.json`` stores them under ``"warnings"`` (as
:meth:`QCWarning.as_dict`), and ``report.html`` shows them first. A breach that makes a map
meaningless (NaN, Inf, all zero) is no warning: :func:`check_finite_maps` raises
:class:`~qsmkit.errors.InputError` so that nothing is written.

Adding a check: write ``check_something(...) -> QCWarning | None`` below the others (pure:
arrays and numbers in, no files, no logging), give its threshold a named module constant
and a row in the table below and in ``docs/qc.md``, and call it from
:func:`judge_reconstruction` (or from your own stage, appending to ``QSMResult.warnings``).

=======================  ==========================================  ========================
code                     what is measured                            threshold (warn when)
=======================  ==========================================  ========================
PHASE_UNIT               loader note: phase rescaled from a          any such note
                         non-radian unit (degrees, mrad, integers,
                         range)
PHASE_RANGE              range of the phase over the whole volume    < 0.5 x 2 pi
                         and all echoes, as a share of 2 pi
WEIGHT_CONCENTRATION     share of the total data weight held by      > 0.03 (uniform: 0.01)
                         the top 1 % of mask voxels
MASK_VOLUME              brain-mask volume (mL) when the field of    outside 800-1800 mL
                         view holds a whole head (every side >=
                         120 mm, mask touching no face)
MASK_FRACTION            share of a head-sized field of view         > 0.5
                         inside the brain mask
RESIDUAL_BACKGROUND      RMS of the low-pass (sigma 8 mm) local      > 0.5
                         field over the RMS of the local field
CHI_IMPLAUSIBLE          share of χ-mask voxels with |χ| > 0.5 ppm   > 0.05
CHI_FLAT                 1-99 % range of χ in the χ mask             < 0.02 ppm
FIT_RESIDUAL             median echo-fit residual in the mask        complex > 0.02,
                                                                     linear > 0.15 rad
ECHO_TRAIN               effective NSA of water and fat for the       < 0.5
                         echo times (``qsmkit liver``;
                         :mod:`qsmkit.body.echo_train`)
LABELS_OUTSIDE           --labels values with no voxel inside the     any
                         body outline (``qsmkit liver``: no row)
BIPOLAR_PHASE            phase error of the even-numbered echoes     chi-square > 33.4 and
                         (bipolar readout; ``qsmkit liver``,         > 0.2 rad; corrected
                         :mod:`qsmkit.body.bipolar`): largest
                         |error| in the volume, rad
(InputError)             NaN / Inf anywhere, or all zero in the      any
                         mask, in chi, field or local field
(InputError)             magnitude and phase swapped or the same     see
                         image (check_magnitude_phase_order)         SWAP_* constants
=======================  ==========================================  ========================

Where the thresholds come from is said at each constant; ``docs/qc.md`` has the values
measured on good data (simulations, qsm-forward datasets and a real crop).

References
----------
Schweser F, Robinson SD, de Rochefort L, Li W, Bredies K. An illustrated comparison of
processing methods for phase MRI and QSM: removal of background field contributions from
sources outside the region of interest. NMR Biomed 2017;30:e3604 (failure modes).
Allen JS, Damasio H, Grabowski TJ. Normal neuroanatomical variation in the human brain: an
MRI-volumetric study. Am J Phys Anthropol 2002;118:341-358 (adult brain volumes).
Deistung A, Schweser F, Reichenbach JR. Overview of quantitative susceptibility mapping.
NMR Biomed 2017;30:e3569 (range of susceptibility in brain tissue).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from qsmkit.errors import InputError

PHASE_MIN_FILL = 0.5
"""Wrapped phase of multi-echo GRE data spans nearly one full cycle over a field of view
(background noise alone is uniform in phase; measured 0.99-1.0 on qsm-forward and on the
rescaled real crop): half a cycle or less says the values are scaled, not radians."""

PHASE_UNIT_NOTE_MARKERS = (
    "converted to radians", "divided by 1000", "rescaled", "mapped linearly", "--phase-unit",
)
"""Substrings of the loaders' notes (:func:`qsmkit.acquisition.phase_to_radians`) that say
the phase was converted from another unit."""

WEIGHT_TOP_FRACTION = 0.01
WEIGHT_MAX_SHARE = 0.03
"""The top 1 % of voxels holding more than 3 % of the data weight (3 times their uniform
share) means a few voxels decide the inversion; qsmkit's own weights hold <= 2.5 %."""

HEAD_FOV_MIN_MM = 120.0
"""A field of view shorter than this along any axis cannot hold an adult head (a brain is
about 140 x 170 x 120 mm), so the whole-brain volume check does not apply (crops, phantoms,
slabs)."""

BRAIN_VOLUME_ML = (800.0, 1800.0)
"""Plausible adult brain-mask volume: brain tissue averages 1130 mL in women and 1270 mL in
men (Allen 2002) with a spread of about 10 % and atrophy with age, so 800 mL leaves room for
small and elderly brains (qsmkit's head phantom has 902 mL); the intracranial volume (about
1800 mL at most) bounds masks that keep CSF. A mask outside is cut or leaked."""

MASK_MAX_FRACTION = 0.5
"""A brain fills about 12-25 % of a head field of view (1.4 L of a 256 x 256 x 176 mm box
is 12 %); more than half means the mask kept background or skull."""

BACKGROUND_MAX_FRACTION = 0.5
"""Tissue fields change sign over millimetres and mostly average out under an 8 mm
low-pass; on good reconstructions the ratio measured 0.01-0.26 (docs/qc.md). Above 0.5 a
smooth background residual dominates the local field."""

CHI_LIMIT_PPM = 0.5
CHI_MAX_SHARE = 0.05
"""Brain tissue lies within about +-0.2 ppm (Deistung 2017); only veins, bleeds and
calcifications exceed 0.5 ppm, and they are a few per cent of the brain at most."""

CHI_MIN_SPREAD_PPM = 0.02
"""Brain tissue spans about -0.1 ppm (white matter) to +0.2 ppm (globus pallidus)
(Deistung 2017); a χ map whose 1-99 % range in the mask is below 0.02 ppm shows no tissue
contrast (over-regularised, or no field in the phase)."""

FIT_RESIDUAL_MAX = {"complex": 0.02, "linear": 0.15}
"""Median echo-fit residual above which the echoes are inconsistent (wraps between echoes,
motion, wrong echo times): relative residual ``|S - fit|^2/|S|^2`` for the complex fit
(about the mean squared phase misfit: 0.02 is 0.14 rad RMS in every echo, what noise alone
gives only at an SNR near 4), RMS phase residual (rad) for the linear fit. Measured on good
data: complex 1e-4 to 3e-4, linear 0.004-0.016 rad (real crop, simulations; docs/qc.md)."""


@dataclasses.dataclass(frozen=True)
class QCWarning:
    """One finding of a quality check.

    Attributes
    ----------
    code : str
        Short upper-case identifier, e.g. ``"WEIGHT_CONCENTRATION"``.
    message : str
        What was found, in one sentence.
    value : float
        The measured value.
    threshold : float
        The threshold it breached.
    advice : str
        What to do about it.
    """

    code: str
    message: str
    value: float
    threshold: float
    advice: str

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready: non-finite numbers become None)."""
        out = dataclasses.asdict(self)
        for key in ("value", "threshold"):
            out[key] = float(out[key]) if math.isfinite(out[key]) else None
        return out

    def line(self) -> str:
        """``warning [CODE]: message (value X, threshold Y) — advice``: one line for stderr."""
        return (f"warning [{self.code}]: {self.message} (value {self.value:.4g}, "
                f"threshold {self.threshold:.4g}) — {self.advice}")

    @classmethod
    def from_dict(cls, record: dict) -> QCWarning:
        nan = float("nan")
        return cls(code=str(record.get("code", "")), message=str(record.get("message", "")),
                   value=nan if record.get("value") is None else float(record["value"]),
                   threshold=nan if record.get("threshold") is None else float(record["threshold"]),
                   advice=str(record.get("advice", "")))


# -- inputs ----------------------------------------------------------------------------------
def check_phase_unit_notes(notes) -> QCWarning | None:
    """PHASE_UNIT: the loader converted the phase from a non-radian unit (see its notes)."""
    found = [str(n) for n in notes or () if "phase" in str(n).lower()
             and any(m in str(n) for m in PHASE_UNIT_NOTE_MARKERS)]
    if not found:
        return None
    return QCWarning(
        "PHASE_UNIT", f"the phase was converted to radians: {found[0]}", float(len(found)), 0.0,
        "check the unit recognised; force it with --phase-unit if it is wrong")


def check_phase_range(phase_rad) -> QCWarning | None:
    """PHASE_RANGE: the phase spans much less than one cycle (scaled values, not radians).

    Parameters
    ----------
    phase_rad : array, rad (all echoes, the whole field of view)
    """
    phase = np.asarray(phase_rad)
    if phase.size == 0:
        return None
    fill = float(np.nanmax(phase) - np.nanmin(phase)) / (2 * np.pi)
    if fill >= PHASE_MIN_FILL:
        return None
    return QCWarning(
        "PHASE_RANGE", f"the phase spans only {100 * fill:.3g} % of one cycle (2 pi)", fill,
        PHASE_MIN_FILL, "the phase is probably not in radians: give its unit with --phase-unit")


def weight_concentration(weight, mask, top_fraction: float = WEIGHT_TOP_FRACTION) -> float:
    """Share of the total weight held by the ``top_fraction`` highest-weighted mask voxels.

    ``top_fraction`` for uniform weights, 1.0 when one voxel holds it all; 0 without weight.
    """
    w = np.asarray(weight, dtype=float)[np.asarray(mask, dtype=bool)]
    w = np.where(np.isfinite(w), np.maximum(w, 0.0), 0.0)
    total = float(w.sum())
    if w.size == 0 or total <= 0:
        return 0.0
    k = max(1, int(round(top_fraction * w.size)))
    return float(np.partition(w, w.size - k)[w.size - k:].sum()) / total


def check_weight_concentration(weight, mask) -> QCWarning | None:
    """WEIGHT_CONCENTRATION: a few voxels carry the data term of the inversion."""
    if weight is None:
        return None
    share = weight_concentration(weight, mask)
    if share <= WEIGHT_MAX_SHARE:
        return None
    return QCWarning(
        "WEIGHT_CONCENTRATION",
        f"the top 1 % of mask voxels hold {100 * share:.3g} % of the data weight", share,
        WEIGHT_MAX_SHARE, "the inversion fits a few voxels only: reconstruct without the weight "
        "(uniform) or check the echo fit")


def _touches_faces(mask: np.ndarray) -> bool:
    return any(np.take(mask, idx, axis=a).any() for a in range(3) for idx in (0, -1))


def _head_sized(shape, voxel_size) -> bool:
    extent = np.asarray(shape[:3], dtype=float) * np.asarray(voxel_size, dtype=float)
    return bool(np.all(extent >= HEAD_FOV_MIN_MM))


def check_mask_volume(mask, voxel_size) -> QCWarning | None:
    """MASK_VOLUME: brain-mask volume outside the adult range, for a whole head in view.

    Applies only when every side of the field of view is at least ``HEAD_FOV_MIN_MM`` and
    the mask touches none of its faces (else the brain is cut by the field of view).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not _head_sized(mask.shape, voxel_size) or _touches_faces(mask):
        return None
    volume_ml = float(mask.sum()) * float(np.prod(voxel_size)) / 1000.0
    lo, hi = BRAIN_VOLUME_ML
    if lo <= volume_ml <= hi:
        return None
    side = "small" if volume_ml < lo else "large"
    return QCWarning(
        "MASK_VOLUME", f"the brain mask is {volume_ml:.0f} mL, too {side} for an adult brain",
        volume_ml, lo if volume_ml < lo else hi,
        "inspect qc_mask.png; give a brain mask with --mask (or change the masking method) "
        "if it cut the brain or kept skull and background")


def check_mask_fraction(mask, voxel_size) -> QCWarning | None:
    """MASK_FRACTION: the mask fills most of a head-sized field of view."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or mask.size == 0 or not _head_sized(mask.shape, voxel_size):
        return None
    fraction = float(mask.mean())
    if fraction <= MASK_MAX_FRACTION:
        return None
    return QCWarning(
        "MASK_FRACTION", f"the brain mask fills {100 * fraction:.3g} % of the field of view",
        fraction, MASK_MAX_FRACTION,
        "the mask probably kept background or skull: inspect qc_mask.png, give --mask")


# -- results ---------------------------------------------------------------------------------
def background_fraction(local_field_hz, mask, voxel_size) -> float:
    """RMS of the low-pass local field (:func:`qsmkit.report.qc.residual_background`) over
    the RMS of the local field, in ``mask``; 0 for an empty mask or zero field."""
    from qsmkit.report.qc import residual_background

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    field = np.asarray(local_field_hz, dtype=np.float32)
    local_rms = float(np.sqrt(np.mean(np.square(field[mask], dtype=float))))
    if local_rms <= 0:
        return 0.0
    smooth = residual_background(field, mask, voxel_size)
    return float(np.sqrt(np.mean(np.square(smooth[mask], dtype=float)))) / local_rms


def check_residual_background(local_field_hz, mask, voxel_size) -> QCWarning | None:
    """RESIDUAL_BACKGROUND: a smooth residual dominates the local field."""
    fraction = background_fraction(local_field_hz, mask, voxel_size)
    if fraction <= BACKGROUND_MAX_FRACTION:
        return None
    return QCWarning(
        "RESIDUAL_BACKGROUND",
        f"the low-frequency part of the local field is {100 * fraction:.3g} % of its RMS",
        fraction, BACKGROUND_MAX_FRACTION,
        "background removal left a smooth field (see qc_background.png): try another "
        "--bgremove method or a tighter mask")


def check_implausible_chi(chi_ppm, mask) -> QCWarning | None:
    """CHI_IMPLAUSIBLE: too many voxels with |χ| beyond what brain tissue has."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    share = float(np.mean(np.abs(np.asarray(chi_ppm)[mask]) > CHI_LIMIT_PPM))
    if share <= CHI_MAX_SHARE:
        return None
    return QCWarning(
        "CHI_IMPLAUSIBLE",
        f"{100 * share:.3g} % of the brain has |chi| > {CHI_LIMIT_PPM} ppm", share, CHI_MAX_SHARE,
        "check the phase unit and sign, the echo times and B0, and the background removal")


def check_flat_chi(chi_ppm, mask) -> QCWarning | None:
    """CHI_FLAT: χ without tissue contrast (1-99 % range in the mask below
    ``CHI_MIN_SPREAD_PPM``)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.sum() < 100:
        return None
    low, high = np.percentile(np.asarray(chi_ppm)[mask], [1, 99])
    spread = float(high - low)
    if spread >= CHI_MIN_SPREAD_PPM:
        return None
    return QCWarning(
        "CHI_FLAT", f"chi spans only {spread:.3g} ppm (1-99 %) in the mask: no tissue contrast",
        spread, CHI_MIN_SPREAD_PPM,
        "check that the phase holds a field (not constant), the regularisation (--lam) and "
        "the mask (qc_mask.png)")


def check_fit_residual(residual, mask, method: str = "complex") -> QCWarning | None:
    """FIT_RESIDUAL: the multi-echo fit does not explain the echoes."""
    if residual is None or method not in FIT_RESIDUAL_MAX:
        return None
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    median = float(np.median(np.asarray(residual)[mask]))
    threshold = FIT_RESIDUAL_MAX[method]
    if not median > threshold:
        return None
    return QCWarning(
        "FIT_RESIDUAL", f"the median {method} echo-fit residual is {median:.3g}", median,
        threshold, "the echoes disagree: check the echo times, echo order and phase sign "
        "(see qc_residual.png)")


def check_finite_maps(maps: dict, mask) -> None:
    """Raise :class:`InputError` if a map has NaN/Inf or is all zero in ``mask``.

    Parameters
    ----------
    maps : dict of name -> (X, Y, Z) array
    mask : (X, Y, Z) bool
    """
    mask = np.asarray(mask, dtype=bool)
    for name, data in maps.items():
        data = np.asarray(data)
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(f"the {name} map has {int(bad.sum())} NaN/Inf voxels; the "
                             "reconstruction is meaningless: check the input data for NaN/Inf")
        if mask.any() and not np.any(data[mask]):
            raise InputError(f"the {name} map is zero everywhere in the mask; the reconstruction"
                             " is meaningless: check the phase (constant?) and the mask")


SWAP_SAME_IMAGE_CORRELATION = 0.99
"""Pixel-wise correlation of phase and magnitude (first echo) above which the two files hold
one image. Real phase correlates weakly with magnitude: 0.03 on the real crop; 0.43 and
0.71 on the Philips vendor samples, whose phase is a constant -pi wherever the magnitude is
zero (measured 2026-12-05, dcm2niix conversions in shared/data)."""
SWAP_DECAY_RATIO = 0.9
"""Last-over-first echo mean at or below which a non-negative image decays with echo time
the way magnitude does (R2* > 0; 0.78-0.83 on the vendor samples and the real crop, 0.73 on
a simulated head with 5 echoes to 20 ms): wrapped phase has no such trend."""
SWAP_NEGATIVE_SHARE = 0.01
"""Share of magnitude voxels below zero above which the 'magnitude' is signed data (phase)."""


def _echo_means(data: np.ndarray) -> np.ndarray:
    axes = tuple(i for i in range(data.ndim) if i != 3)
    return np.asarray(data.mean(axis=axes, dtype=np.float64), dtype=float).ravel()


def _decays_like_magnitude(data: np.ndarray) -> bool:
    """Non-negative, with echo means falling monotonically to <= SWAP_DECAY_RATIO."""
    if data.ndim < 4 or data.shape[3] < 2 or float(data.min()) < 0:
        return False
    means = _echo_means(data)
    if means[0] <= 0:
        return False
    return bool(np.all(np.diff(means) < 0) and means[-1] / means[0] <= SWAP_DECAY_RATIO)


def _first_echo_correlation(a: np.ndarray, b: np.ndarray, max_voxels: int = 500_000) -> float:
    x = np.take(a, 0, axis=3).ravel() if a.ndim >= 4 else a.ravel()
    y = np.take(b, 0, axis=3).ravel() if b.ndim >= 4 else b.ravel()
    if x.shape != y.shape:
        return 0.0
    step = max(1, x.size // max_voxels)
    x, y = x[::step].astype(np.float64), y[::step].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(np.corrcoef(x, y)[0, 1])


def check_magnitude_phase_order(magnitude, phase, *, magnitude_name: str = "--mag",
                                phase_name: str = "--phase") -> None:
    """Raise :class:`InputError` when the magnitude and phase inputs are swapped or the same.

    Run on the values as stored (before any phase unit conversion), echoes on axis 3:

    * the phase holds the magnitude image (pixel-wise correlation of the first echoes
      above :data:`SWAP_SAME_IMAGE_CORRELATION`);
    * the "magnitude" is signed (more than :data:`SWAP_NEGATIVE_SHARE` of it below zero):
      it is phase;
    * the phase is non-negative and decays with echo time like magnitude (echo means fall
      monotonically to :data:`SWAP_DECAY_RATIO` of the first or less) while the magnitude
      does not: the two files are swapped.

    Real phase passes: the real crop, qsm-forward datasets and the vendor samples' dcm2niix
    conversions (tests/test_terminal.py).
    """
    magnitude = np.asarray(magnitude)
    phase = np.asarray(phase)
    fix = (f"give the magnitude file(s) to --mag and the phase file(s) to --phase "
           f"(magnitude: {magnitude_name}; phase: {phase_name})")
    if magnitude.shape == phase.shape and (
            _first_echo_correlation(magnitude, phase) > SWAP_SAME_IMAGE_CORRELATION):
        raise InputError(f"the phase input {phase_name} holds the same image as the magnitude "
                         f"{magnitude_name} (first-echo correlation > "
                         f"{SWAP_SAME_IMAGE_CORRELATION}): {fix}")
    finite = magnitude[np.isfinite(magnitude)]
    negative = float(np.mean(finite < 0)) if finite.size else 0.0
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    if negative > SWAP_NEGATIVE_SHARE and float(finite.min()) < -0.01 * scale:
        swapped = " (the two look swapped)" if float(phase.min()) >= 0 else ""
        raise InputError(f"the magnitude input {magnitude_name} has {100 * negative:.0f} % "
                         f"negative values: it looks like phase{swapped}; {fix}")
    if _decays_like_magnitude(phase) and not _decays_like_magnitude(magnitude):
        means = _echo_means(phase)
        raise InputError(f"the phase input {phase_name} is non-negative and falls with echo "
                         f"time like magnitude (echo means {means[0]:.4g} -> {means[-1]:.4g}) "
                         f"while {magnitude_name} does not: the files look swapped; {fix}")


def judge_inversion(chi_ppm, local_field_hz, mask, voxel_size, *, weight=None
                    ) -> list[QCWarning]:
    """The checks that need only a dipole inversion's input and output (``qsmkit invert``).

    Raises :class:`InputError` for NaN/Inf or all-zero χ; returns the findings of
    :func:`check_weight_concentration`, :func:`check_residual_background`,
    :func:`check_implausible_chi` and :func:`check_flat_chi`.
    """
    check_finite_maps({"chi": chi_ppm}, mask)
    checks = [
        check_weight_concentration(weight, mask),
        check_residual_background(local_field_hz, mask, voxel_size),
        check_implausible_chi(chi_ppm, mask),
        check_flat_chi(chi_ppm, mask),
    ]
    return [w for w in checks if w is not None]


def judge_reconstruction(
    *,
    chi_ppm,
    local_field_hz,
    local_mask,
    mask,
    voxel_size,
    phase_rad=None,
    notes=(),
    weight=None,
    fit_residual=None,
    fieldmap: str = "complex",
) -> list[QCWarning]:
    """Run every check on one reconstruction; raise on meaningless maps.

    Parameters
    ----------
    chi_ppm, local_field_hz : (X, Y, Z) arrays (ppm, Hz)
    local_mask, mask : (X, Y, Z) bool (χ mask, brain mask)
    voxel_size : 3 floats, mm
    phase_rad : (X, Y, Z, E) array, rad, optional (the input phase)
    notes : list of str (the acquisition's loader notes)
    weight : (X, Y, Z) array, optional (the data weight of the inversion)
    fit_residual : (X, Y, Z) array, optional
    fieldmap : name of the field method (unit of the residual)

    Returns
    -------
    list of QCWarning (empty when all is well)

    Raises
    ------
    InputError
        NaN/Inf in, or an all-zero, χ, total or local field map.
    """
    check_finite_maps({"chi": chi_ppm, "local field": local_field_hz}, local_mask)
    checks = [
        check_phase_unit_notes(notes),
        None if phase_rad is None else check_phase_range(phase_rad),
        check_weight_concentration(weight, mask),
        check_mask_volume(mask, voxel_size),
        check_mask_fraction(mask, voxel_size),
        check_residual_background(local_field_hz, local_mask, voxel_size),
        check_implausible_chi(chi_ppm, local_mask),
        check_flat_chi(chi_ppm, local_mask),
        check_fit_residual(fit_residual, mask, fieldmap),
    ]
    return [w for w in checks if w is not None]

"""The in-memory form of a multi-echo GRE scan, as every reader returns it.

Besides :class:`Acquisition` this module holds the checks every reader shares: phase units
(:func:`phase_to_radians` recognises radians and the integer encodings scanners write) and
the validation of arrays, echo times, field strength and geometry.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.errors import InputError
from qsmkit.geometry import b0_dir_from_affine, voxel_size_from_affine
from qsmkit.units import wrap_phase

B0_RANGE_TESLA = (0.05, 21.2)
"""Field strengths accepted (T): from low-field systems to the strongest human magnets."""

_PHASE_TOLERANCE = 1e-3


@dataclasses.dataclass
class Acquisition:
    """Multi-echo GRE data on its native grid.

    Attributes
    ----------
    magnitude : (X, Y, Z, E) float32 array
    phase : (X, Y, Z, E) float32 array, radians in [-pi, pi)
    echo_times_s : (E,) float array, seconds, strictly increasing
    b0_tesla : float
    affine : (4, 4) array, voxel indices -> world (RAS, mm)
    manufacturer, series_description : str
        From the scanner headers when known.
    notes : list of str
        What the reader did that a user should know (units rescaled, sign flipped, ...).
    metadata : dict
        Scanner parameters in BIDS/dcm2niix sidecar names (``SeriesNumber``,
        ``ImagingFrequency``, ``PhaseEncodingDirection``, ...); empty when unknown.
    dicom_reference : dict
        Patient and study attributes (DICOM keywords) of the source series, used to file
        derived DICOM series (chi, R2*) in the same study; empty for non-DICOM inputs.
    """

    magnitude: np.ndarray
    phase: np.ndarray
    echo_times_s: np.ndarray
    b0_tesla: float
    affine: np.ndarray
    manufacturer: str = ""
    series_description: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    metadata: dict = dataclasses.field(default_factory=dict)
    dicom_reference: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.magnitude = _as_float_array(self.magnitude, "magnitude")
        self.phase = _as_float_array(self.phase, "phase")
        if self.magnitude.ndim == 3:
            self.magnitude = self.magnitude[..., None]
        if self.phase.ndim == 3:
            self.phase = self.phase[..., None]
        try:
            self.echo_times_s = np.atleast_1d(np.asarray(self.echo_times_s, dtype=float))
        except (TypeError, ValueError):
            raise InputError(
                f"echo times must be numbers in seconds, got {self.echo_times_s!r}"
            ) from None
        try:
            self.affine = np.asarray(self.affine, dtype=float)
        except (TypeError, ValueError):
            raise InputError("the affine must be a 4x4 array of numbers") from None
        try:
            self.b0_tesla = float(self.b0_tesla)
        except (TypeError, ValueError):
            raise InputError(
                f"field strength must be a number in tesla, got {self.b0_tesla!r}; give --b0"
            ) from None
        self.notes = list(self.notes)
        self.phase = _half_open(self.phase)
        self.validate()
        if self.n_echoes == 1 and not any("single echo" in n for n in self.notes):
            self.notes.append(
                "single echo: the field map is phase/(2*pi*TE) with no multi-echo fit, and "
                "R2* cannot be computed"
            )

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return voxel_size_from_affine(self.affine)

    @property
    def b0_dir(self) -> np.ndarray:
        return b0_dir_from_affine(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.magnitude.shape[:3])

    @property
    def n_echoes(self) -> int:
        return int(self.magnitude.shape[3])

    def validate(self) -> None:
        """Raise :class:`InputError` for data no QSM stage can use."""
        mag, phase, tes = self.magnitude, self.phase, self.echo_times_s
        if mag.size == 0 or phase.size == 0:
            raise InputError(
                f"the magnitude ({mag.shape}) or phase ({phase.shape}) volume is empty; "
                "check that the input files hold image data"
            )
        if mag.ndim != 4 or min(mag.shape[:3]) < 2:
            raise InputError(
                f"magnitude must be a 3D volume per echo (X, Y, Z[, echo]) with at least 2 "
                f"voxels along each axis; got shape {mag.shape}"
            )
        if phase.shape != mag.shape:
            raise InputError(
                f"magnitude shape {mag.shape} and phase shape {phase.shape} differ; "
                "give matching magnitude and phase series"
            )
        check_echo_times(tes, mag.shape[3])
        validate_affine(self.affine)
        if not (B0_RANGE_TESLA[0] <= self.b0_tesla <= B0_RANGE_TESLA[1]):
            raise InputError(
                f"field strength {self.b0_tesla} T is outside {B0_RANGE_TESLA[0]}-"
                f"{B0_RANGE_TESLA[1]} T; give the field strength in tesla (e.g. --b0 3)"
            )
        for name, data in (("magnitude", mag), ("phase", phase)):
            bad = ~np.isfinite(data)
            if bad.any():
                raise InputError(
                    f"{name} contains {int(bad.sum())} NaN or Inf values; replace them "
                    "(e.g. by 0) before QSM"
                )
        if not np.any(mag > 0):
            raise InputError("magnitude is empty (all zero); check the magnitude input")
        if float(np.abs(phase).max()) > np.pi + _PHASE_TOLERANCE:
            raise InputError(
                f"phase spans {float(phase.min()):.4g}..{float(phase.max()):.4g}, not radians in "
                "[-pi, pi); rescale it or let the reader detect the vendor units"
            )


def _half_open(phase: np.ndarray) -> np.ndarray:
    """Map float32 values in [pi, pi + tolerance] to their -pi equivalent: [-pi, pi).

    float32(pi) is slightly above pi, so wrapping in float64 and casting can land on it.
    """
    if phase.size == 0 or phase.dtype != np.float32:
        return phase
    top = (phase >= np.float32(np.pi)) & (phase <= np.float32(np.pi + _PHASE_TOLERANCE))
    if not top.any():
        return phase
    return np.where(top, phase - np.float32(2 * np.pi), phase).astype(np.float32)


def _as_float_array(data, name: str) -> np.ndarray:
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric array") from None
    return array


def check_echo_times(echo_times_s, n_echoes: int | None = None) -> np.ndarray:
    """Validate echo times (seconds): finite, positive, not ms, strictly increasing.

    Returns them as a float array; raises :class:`InputError` saying how to fix them.
    """
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    if tes.ndim != 1 or tes.size == 0:
        raise InputError("echo times are missing; give one echo time per echo (in seconds)")
    if n_echoes is not None and tes.size != n_echoes:
        raise InputError(
            f"{tes.size} echo time(s) given for {n_echoes} echoes; give one echo time "
            "per echo (in seconds)"
        )
    if not np.all(np.isfinite(tes)) or np.any(tes <= 0):
        raise InputError(f"echo times must be positive seconds, got {tes.tolist()}")
    if np.any(tes > 1.0):
        raise InputError(
            f"echo times {tes.tolist()} look like milliseconds; give them in seconds "
            f"(e.g. {', '.join(f'{t / 1000:g}' for t in tes)})"
        )
    diffs = np.diff(tes)
    if np.any(diffs == 0):
        raise InputError(
            f"echo times {tes.tolist()} contain duplicates; each echo needs its own echo time"
        )
    if np.any(diffs < 0):
        raise InputError(
            f"echo times {tes.tolist()} are not in increasing order; order the echoes (and "
            "their images) by echo time"
        )
    return tes


def validate_affine(affine) -> np.ndarray:
    """Check a 4x4 voxel-to-world affine: finite, invertible, last row (0, 0, 0, 1)."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise InputError(f"an affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise InputError("the affine contains NaN or Inf; fix the image orientation header")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise InputError(f"the affine's last row must be 0 0 0 1, got {affine[3].tolist()}")
    voxel_size_from_affine(affine)
    linear = affine[:3, :3] / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if abs(np.linalg.det(linear)) < 1e-3:
        raise InputError(
            "the affine is singular (its axes are parallel); fix the image orientation header"
        )
    return affine


# Integer phase encodings written by scanners and converters, as (name, low, high): signed
# ones are tried for data with negative values, unsigned ones otherwise. A value v in
# [low, high] maps linearly to radians with low -> -pi and high + 1 step -> +pi.
_INTEGER_PHASE_ENCODINGS = (
    ("signed 12-bit (Siemens, -4096..4095)", -4096.0, 4095.0),
    ("signed 16-bit (-32768..32767)", -32768.0, 32767.0),
    ("unsigned 12-bit (Philips/Siemens raw, 0..4095)", 0.0, 4095.0),
    ("unsigned 16-bit (0..65535)", 0.0, 65535.0),
)

PHASE_UNITS = ("auto", "rad", "deg", "mrad", "siemens", "uint12", "range")
"""Values of ``--phase-unit``: ``auto`` detects the unit from the value range; the others
force it (``range`` maps the data's own minimum..maximum linearly to -pi..pi)."""

MIN_PHASE_FILL_MULTI_ECHO = 0.25
"""Smallest share of one phase cycle (2*pi, 360 degrees, the integer range) that the values
of a multi-echo phase must span for ``auto`` to accept a unit: wrapped in-vivo phase fills
nearly the whole cycle, so data spanning less are in some other unit (or scaled)."""

MIN_PHASE_FILL_SINGLE_ECHO = 0.05
"""The same for a single echo, whose phase may legitimately stay within a small range.
Units other than radians (degrees, integer encodings) must fill at least half their cycle."""

_UNIT_HINT = ("give --phase-unit rad|deg|mrad|siemens|uint12|range (range maps the data's "
              "min..max to -pi..pi)")


def phase_to_radians(values, *, what: str = "phase", unit: str = "auto",
                     n_echoes: int | None = None) -> tuple[np.ndarray, str]:
    """Convert phase in radians, degrees or a vendor encoding to radians in [-pi, pi).

    With ``unit="auto"`` the unit is recognised from the value range of all echoes
    together, and accepted only when the values fill a plausible share of that unit's
    cycle (at least :data:`MIN_PHASE_FILL_MULTI_ECHO` of it for multi-echo data,
    :data:`MIN_PHASE_FILL_SINGLE_ECHO` for one echo):

    ============================  =====================================  =================
    unit                          values                                  to radians
    ============================  =====================================  =================
    radians                       within -pi..pi or 0..2*pi               wrapped
    degrees                       within -180..180 or 0..360 (> 2*pi)     x pi/180
    milliradians (GE, Philips     within -3142..3142, spanning > 90 %     / 1000
    RescaleSlope/Intercept)       (integer or scaled floats)
    Siemens 12-bit                integers within -4096..4095             x pi/4096
    unsigned 12-bit               integers within 0..4095                 x 2pi/4096 - pi
    signed / unsigned 16-bit      integers within their range             likewise
    ============================  =====================================  =================

    Anything else (floats in another range, or a range much smaller than one cycle, such
    as values within +-0.004) is ambiguous and raises :class:`InputError` naming the
    range and ``--phase-unit``; ``unit`` then forces the interpretation.

    Parameters
    ----------
    values : array
        Phase values, any shape; for (X, Y, Z, E[, ...]) arrays axis 3 counts the echoes.
    what : str
        Name used in messages.
    unit : {"auto", "rad", "deg", "mrad", "siemens", "uint12", "range"}
        The unit of ``values``; ``range`` maps their minimum..maximum linearly to -pi..pi
        (the convention of readers that rescale phase by its range).
    n_echoes : int, optional
        Number of echoes (default: ``values.shape[3]`` for arrays of 4 or more axes, else 1).

    Returns
    -------
    (radians, note) : (float32 array, str)
        ``note`` says what was recognised or applied ("" when the input was radians).

    Raises
    ------
    InputError
        Values not finite, outside the forced unit's range, or of an ambiguous unit.
    """
    if unit not in PHASE_UNITS:
        raise InputError(f"--phase-unit must be one of {', '.join(PHASE_UNITS)}, got {unit!r}")
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise InputError(f"{what} is empty")
    finite = np.isfinite(data)
    if not finite.all():
        raise InputError(
            f"{what} contains {int((~finite).sum())} NaN or Inf values; replace them before QSM"
        )
    lo, hi = float(data.min()), float(data.max())
    if unit != "auto":
        return _phase_in_unit(data, unit, lo, hi, what)
    if n_echoes is None:
        n_echoes = int(data.shape[3]) if data.ndim >= 4 else 1
    min_fill = MIN_PHASE_FILL_MULTI_ECHO if n_echoes >= 2 else MIN_PHASE_FILL_SINGLE_ECHO
    span = hi - lo
    eps = _PHASE_TOLERANCE
    found = f"{what} values span {lo:.6g}..{hi:.6g}"
    if lo >= -np.pi - eps and hi <= 2 * np.pi + eps and span <= 2 * np.pi + eps:
        if span < min_fill * 2 * np.pi:
            raise InputError(
                f"{found}, only {100 * span / (2 * np.pi):.2g} % of one phase cycle (2*pi) "
                f"for {n_echoes} echo(es): not plausibly radians (scaled or another unit?); "
                + _UNIT_HINT
            )
        if hi <= np.pi + eps:
            return wrap_phase(data).astype(np.float32), ""
        return (wrap_phase(data).astype(np.float32),
                f"{what} given in radians 0..2*pi; wrapped to [-pi, pi)")
    integral = bool(np.all(np.abs(data - np.round(data)) < 1e-3))
    # Units other than radians must fill at least half their cycle: a guess on less is
    # as likely wrong as right.
    other_fill = max(min_fill, 0.5)
    if lo >= -180.5 and hi <= 360.5 and span <= 360.5 and span >= other_fill * 360.0:
        return (wrap_phase(np.deg2rad(data)).astype(np.float32),
                f"{what} in degrees (values {lo:.4g}..{hi:.4g}) converted to radians")
    if lo >= -3142.6 and hi <= 3142.6 and span > 0.9 * 6284:
        kind = "integers" if integral else "scaled floats (e.g. Philips RescaleSlope)"
        return (wrap_phase(data / 1000.0).astype(np.float32),
                f"{what} in milliradians ({kind}, values {lo:.0f}..{hi:.0f}) divided by 1000")
    if integral:
        for name, low, high in _INTEGER_PHASE_ENCODINGS:
            if (low < 0) == (lo < 0) and lo >= low and hi <= high:
                if span < other_fill * (high - low):
                    break
                step = 2.0 * np.pi / (high - low + 1.0)
                radians = wrap_phase((data - low) * step - np.pi)
                return (radians.astype(np.float32),
                        f"{what} in {name} integer units (values {lo:.0f}..{hi:.0f}) rescaled "
                        "to radians")
    raise InputError(
        f"{found}: neither radians (-pi..pi, 0..2*pi), degrees, milliradians nor a 12/16-bit "
        "integer encoding filling its range; " + _UNIT_HINT
    )


# Forced units: (name, low, high, to_radians) with low/high the accepted value range.
_FORCED_UNITS = {
    "rad": ("radians", -np.inf, np.inf, lambda v: v),
    "deg": ("degrees", -360.5, 360.5, np.deg2rad),
    "mrad": ("milliradians", -6283.9, 6283.9, lambda v: v / 1000.0),
    "siemens": ("Siemens 12-bit (-4096..4095)", -4096.5, 4095.5, lambda v: v * (np.pi / 4096)),
    "uint12": ("unsigned 12-bit (0..4095)", -0.5, 4095.5,
               lambda v: v * (2 * np.pi / 4096) - np.pi),
}


def _phase_in_unit(data: np.ndarray, unit: str, lo: float, hi: float,
                   what: str) -> tuple[np.ndarray, str]:
    """Radians from phase in a unit named by the user (``--phase-unit``)."""
    if unit == "range":
        if hi <= lo:
            raise InputError(f"{what} is constant ({lo:.6g}); --phase-unit range needs a range")
        radians = (data - lo) * (2 * np.pi / (hi - lo)) - np.pi
        return (wrap_phase(radians).astype(np.float32),
                f"{what} values {lo:.6g}..{hi:.6g} mapped linearly to -pi..pi "
                "(--phase-unit range)")
    name, low, high, convert = _FORCED_UNITS[unit]
    if lo < low or hi > high:
        raise InputError(
            f"{what} values span {lo:.6g}..{hi:.6g}, outside the range of {name} "
            f"({low:g}..{high:g}); check --phase-unit {unit}"
        )
    radians = wrap_phase(convert(data)).astype(np.float32)
    if unit == "rad" and lo >= -np.pi - _PHASE_TOLERANCE and hi <= np.pi + _PHASE_TOLERANCE:
        return radians, ""
    return radians, f"{what} in {name} (values {lo:.6g}..{hi:.6g}, --phase-unit {unit}) " \
                    "converted to radians"

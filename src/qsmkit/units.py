"""Physical constants and unit conversions between phase, frequency and susceptibility.

Conventions: phase in radians, field (frequency offset) in Hz, susceptibility in SI ppm,
echo times in seconds, B0 in tesla. A field ``f`` (Hz) accumulates phase ``2*pi*f*TE``.

References
----------
CODATA 2018: proton gyromagnetic ratio gamma/2pi = 42.577478 MHz/T.
"""

from __future__ import annotations

import numpy as np

GAMMA_BAR_HZ_PER_T = 42.577478e6
"""Proton gyromagnetic ratio over 2*pi (Hz/T), CODATA 2018."""

GAMMA_RAD_PER_S_PER_T = 2.0 * np.pi * GAMMA_BAR_HZ_PER_T
"""Proton gyromagnetic ratio (rad s^-1 T^-1)."""


def larmor_hz(b0_tesla: float) -> float:
    """Proton Larmor frequency (Hz) at field strength ``b0_tesla``."""
    return GAMMA_BAR_HZ_PER_T * float(b0_tesla)


def phase_to_hz(phase_rad, echo_time_s):
    """Frequency offset (Hz) that accumulates ``phase_rad`` over ``echo_time_s``."""
    return np.asarray(phase_rad) / (2.0 * np.pi * np.asarray(echo_time_s))


def hz_to_phase(field_hz, echo_time_s):
    """Phase (rad, not wrapped) accumulated by ``field_hz`` over ``echo_time_s``."""
    return 2.0 * np.pi * np.asarray(field_hz) * np.asarray(echo_time_s)


def hz_to_ppm(field_hz, b0_tesla: float):
    """Relative field (ppm of B0) of a frequency offset in Hz."""
    return np.asarray(field_hz) / larmor_hz(b0_tesla) * 1e6


def ppm_to_hz(field_ppm, b0_tesla: float):
    """Frequency offset (Hz) of a relative field given in ppm of B0."""
    return np.asarray(field_ppm) * 1e-6 * larmor_hz(b0_tesla)


def phase_to_ppm(phase_rad, echo_time_s, b0_tesla: float):
    """Relative field (ppm) from phase accumulated over one echo time."""
    return hz_to_ppm(phase_to_hz(phase_rad, echo_time_s), b0_tesla)


def ppm_to_phase(field_ppm, echo_time_s, b0_tesla: float):
    """Phase (rad) accumulated by a relative field in ppm over one echo time."""
    return hz_to_phase(ppm_to_hz(field_ppm, b0_tesla), echo_time_s)


def wrap_phase(phase_rad):
    """Wrap phase into [-pi, pi)."""
    phase_rad = np.asarray(phase_rad)
    return (phase_rad + np.pi) % (2.0 * np.pi) - np.pi

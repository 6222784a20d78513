"""Blood susceptibility and oxygen physiology shared by the phantom and venous oximetry.

The susceptibility of venous blood relative to water (SI ppm) is linear in haematocrit and
deoxygenation (Weisskoff & Kiihne 1992; Spees et al. 2001; Jain et al. 2012)::

    dchi_blood = Hct * (DCHI_OXY_PPM + DCHI_DO_PPM * (1 - Y))

so that ``Y = 1 - (dchi_blood / Hct - DCHI_OXY_PPM) / DCHI_DO_PPM``.

References
----------
Spees WM, Yablonskiy DA, Oswood MC, Ackerman JJ. Water proton MR properties of human blood at
1.5 Tesla: magnetic susceptibility, T1, T2, T2*, and non-Lorentzian signal behavior.
Magn Reson Med 2001;45:533-542 (dchi_do = 0.27 ppm cgs = 3.39 ppm SI).
Jain V, Abdulmalik O, Propert KJ, Wehrli FW. Investigating the magnetic susceptibility
properties of fresh human blood for noninvasive oxygen saturation quantification.
Magn Reson Med 2012;68:863-867 (dchi_oxy = -0.008 ppm cgs = -0.10 ppm SI per unit Hct).
"""

from __future__ import annotations

import numpy as np

from qsmkit.errors import InputError

DCHI_DO_PPM = 3.39
"""Susceptibility difference between fully deoxygenated and oxygenated blood cells (SI ppm,
per unit haematocrit); 4*pi x 0.27 ppm cgs (Spees 2001)."""

DCHI_OXY_PPM = -0.10
"""Susceptibility of fully oxygenated red cells relative to water (SI ppm, per unit
haematocrit); 4*pi x -0.008 ppm cgs (Jain 2012)."""

DEFAULT_HCT = 0.42
"""Default haematocrit: a mid-range adult value (men ~0.45, women ~0.40)."""


def _check_hct(hct):
    hct = np.asarray(hct, dtype=float)
    if np.any(hct <= 0) or np.any(hct >= 1):
        raise InputError(f"haematocrit must be a fraction in (0, 1), got {hct}")
    return hct


def blood_chi_ppm(yv, hct=DEFAULT_HCT):
    """Susceptibility of blood relative to water (SI ppm) at saturation ``yv`` and ``hct``."""
    yv = np.asarray(yv, dtype=float)
    if np.any(yv < 0) or np.any(yv > 1):
        raise InputError(f"oxygen saturation must be in [0, 1], got {yv}")
    return _check_hct(hct) * (DCHI_OXY_PPM + DCHI_DO_PPM * (1.0 - yv))


def saturation_from_chi(dchi_ppm, hct=DEFAULT_HCT):
    """Oxygen saturation Y from blood susceptibility relative to water (inverse of above)."""
    return 1.0 - (np.asarray(dchi_ppm, dtype=float) / _check_hct(hct) - DCHI_OXY_PPM) / DCHI_DO_PPM


def oxygen_content_ml_per_dl(hb_g_per_dl, sao2, pao2_mmhg=95.0):
    """Arterial O2 content CaO2 = 1.34 Hb SaO2 + 0.003 PaO2 (mL O2 per dL blood)."""
    return 1.34 * np.asarray(hb_g_per_dl) * np.asarray(sao2) + 0.003 * np.asarray(pao2_mmhg)

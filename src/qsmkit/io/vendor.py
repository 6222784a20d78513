"""Vendor phase conventions, applied identically by every reader (DICOM, NIfTI, BIDS).

qsmkit's convention is that of Siemens and Philips: phase = +2*pi*field_hz*TE (a positive
field offset advances the phase). GE scanners store the opposite sign (a left-handed phase
convention), in DICOM and in whatever dcm2niix converts from it: dcm2niix writes the phase
as stored and only records ``"Manufacturer": "GE"`` in the sidecar. Every reader therefore
calls :func:`to_qsmkit_phase_sign` with the manufacturer and the sidecar metadata, so one
scan gives the same field and chi whichever way it is loaded.

Files written by qsmkit (``qsmkit import``, BIDS written by :func:`qsmkit.io.bids.write_bids`)
already hold phase in qsmkit's convention; they carry the sidecar key
:data:`PHASE_SIGN_KEY` with the value :data:`QSMKIT_PHASE_SIGN` (and ``acquisition.json``
the same key), so reading them back never negates twice.

References
----------
.. [1] Li X, Morgan PS, Ashburner J, Smith J, Rorden C. The first step for neuroimaging
   data analysis: DICOM to NIfTI conversion. J Neurosci Methods 2016;264:47-56 (dcm2niix,
   which stores phase as the scanner wrote it).
"""

from __future__ import annotations

import numpy as np

from qsmkit.units import wrap_phase

PHASE_SIGN_KEY = "PhaseSignConvention"
"""Sidecar / acquisition.json key recording that phase is already in qsmkit's convention."""

QSMKIT_PHASE_SIGN = "qsmkit: phase = +2*pi*field*TE (vendor sign already applied)"
"""Its value in files written by qsmkit."""


def vendor_of(manufacturer) -> str:
    """``SIEMENS``, ``PHILIPS``, ``GE``, ``CANON`` or the first word of ``manufacturer``."""
    text = str(manufacturer or "").strip().upper()
    if "SIEMENS" in text:
        return "SIEMENS"
    if "PHILIPS" in text:
        return "PHILIPS"
    if text == "GE" or text.startswith("GE ") or text.startswith("GE_") \
            or "GENERAL ELECTRIC" in text or text.startswith("GEHC"):
        return "GE"
    if "CANON" in text or "TOSHIBA" in text:
        return "CANON"
    return text.split(" ")[0] if text else ""


def phase_sign(manufacturer) -> int:
    """+1 when the vendor's phase follows qsmkit's convention, -1 when it is opposite (GE)."""
    return -1 if vendor_of(manufacturer) == "GE" else 1


def sign_already_applied(metadata) -> bool:
    """Whether ``metadata`` (a sidecar or acquisition.json dict) marks qsmkit's convention."""
    if not isinstance(metadata, dict):
        return False
    value = metadata.get(PHASE_SIGN_KEY, metadata.get(PHASE_SIGN_KEY.lower()))
    return isinstance(value, str) and value.lower().startswith("qsmkit")


def to_qsmkit_phase_sign(phase, manufacturer, *metadata) -> tuple[np.ndarray, str]:
    """Phase (radians) in qsmkit's sign convention, and a note ("" when unchanged).

    Parameters
    ----------
    phase : array, radians
    manufacturer : str
        ``Manufacturer`` of the headers or sidecar ("" when unknown: left as is).
    *metadata : dict
        Sidecars or ``acquisition.json`` records; when any carries :data:`PHASE_SIGN_KEY`
        with qsmkit's value the phase is already converted and returned unchanged.

    Returns
    -------
    (phase, note) : (float32 array in [-pi, pi), str)
    """
    if phase_sign(manufacturer) > 0 or any(sign_already_applied(m) for m in metadata):
        return phase, ""
    negated = wrap_phase(-np.asarray(phase, dtype=np.float64)).astype(np.float32)
    return negated, (f"{vendor_of(manufacturer)} phase negated to the sign convention of the "
                     "other vendors (phase = +2*pi*field*TE)")

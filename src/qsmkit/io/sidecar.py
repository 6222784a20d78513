"""JSON sidecars in the dcm2niix/BIDS style: read echo times and field strength, write them.

A sidecar sits next to its image with the same stem (``mag.nii.gz`` -> ``mag.json``). qsmkit
reads ``EchoTime`` (one echo, or a list of one per volume, s), ``EchoTimes`` (a list, s;
written by ``qsmkit import`` for 4D files), ``EchoTime1``/``EchoTime2`` (a phase-difference
field map, refused for QSM) and ``MagneticFieldStrength`` (T); it writes the keys dcm2niix
writes (``Manufacturer``, ``ImageType``, ``PhaseEncodingDirection``, ...) plus ``EchoTimes``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from qsmkit.errors import InputError

CONVERSION_SOFTWARE = "qsmkit"


def sidecar_path(image_path) -> Path:
    """The JSON sidecar path of an image: ``x.nii.gz`` / ``x.nii`` -> ``x.json``."""
    path = Path(image_path)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".gz", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".json")


def read_sidecar(image_path, *, required: bool = False) -> dict:
    """The sidecar of ``image_path`` as a dict (empty when absent and not ``required``)."""
    path = sidecar_path(image_path)
    if not path.exists():
        if required:
            raise InputError(
                f"{path} not found; give the echo times and field strength as options "
                "(--echo-times, --b0) or write this JSON sidecar"
            )
        return {}
    return read_json_dict(path)


def read_json_dict(path) -> dict:
    """A JSON file holding an object, with clear errors for broken files."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err}); fix or remove it") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object with keys such as EchoTime")
    return data


def _number(value, key: str, source) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{key} in {source} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{key} in {source} must be finite, got {value}")
    return value


def echo_times_from_sidecar(meta: dict, source="the sidecar") -> list[float] | None:
    """Echo times (s) from ``EchoTimes`` or ``EchoTime`` (a number or a list); None when neither
    is present.

    Raises :class:`InputError` for a phase-difference sidecar (``EchoTime1``/``EchoTime2``
    without ``EchoTime``) and for values that look like milliseconds.
    """
    if "EchoTimes" in meta:
        values = meta["EchoTimes"]
        if not isinstance(values, list) or not values:
            raise InputError(f"EchoTimes in {source} must be a non-empty list of seconds")
        tes = [_number(v, "EchoTimes", source) for v in values]
    elif "EchoTime" in meta:
        values = meta["EchoTime"]
        # a 4D file's sidecar may list one EchoTime per volume (as the BIDS reader accepts)
        values = values if isinstance(values, list) and values else [values]
        tes = [_number(v, "EchoTime", source) for v in values]
    elif "EchoTime1" in meta and "EchoTime2" in meta:
        raise InputError(
            f"{source} describes a phase-difference field map (EchoTime1/EchoTime2), not the "
            "phase of each echo; QSM needs per-echo magnitude and phase"
        )
    else:
        return None
    if any(t > 1.0 for t in tes):
        raise InputError(
            f"echo times {', '.join(f'{t:g}' for t in tes)} in {source} look like "
            f"milliseconds; BIDS sidecars give seconds (e.g. "
            f"{', '.join(f'{t / 1000:g}' for t in tes)})"
        )
    if any(t <= 0 for t in tes):
        raise InputError(f"echo times in {source} must be positive seconds, got {tes}")
    return tes


def b0_from_sidecar(meta: dict, source="the sidecar") -> float | None:
    """Field strength (T) from ``MagneticFieldStrength``; None when absent."""
    if "MagneticFieldStrength" not in meta:
        return None
    value = _number(meta["MagneticFieldStrength"], "MagneticFieldStrength", source)
    if value > 100:  # gauss in some old headers
        value = value / 1e4
    return value


def phase_difference_in_sidecar(meta: dict) -> bool:
    """Whether the sidecar describes a phase-difference field map."""
    image_type = [str(v).upper() for v in meta.get("ImageType", []) or []]
    return ("EchoTime1" in meta and "EchoTime2" in meta) or "PHASEDIFF" in " ".join(image_type)


def dicom_style_sidecar(acquisition, *, kind: str) -> dict:
    """A dcm2niix-style sidecar for the magnitude or phase image of an acquisition.

    Parameters
    ----------
    acquisition : Acquisition
    kind : {"magnitude", "phase"}

    Returns
    -------
    dict
        BIDS keys: Modality, MagneticFieldStrength, ImagingFrequency, Manufacturer,
        ManufacturersModelName, SeriesDescription, ProtocolName, SeriesNumber, ImageType,
        EchoTime (first echo) and EchoTimes (all, s), EchoNumber list, RepetitionTime,
        FlipAngle, PhaseEncodingDirection/PhaseEncodingAxis when known, Units (rad for phase),
        PhaseSignConvention (phase: qsmkit's, so it is never negated again), ConversionSoftware.
    """
    if kind not in {"magnitude", "phase"}:
        raise ValueError(f"kind must be 'magnitude' or 'phase', got {kind!r}")
    from qsmkit.io.vendor import PHASE_SIGN_KEY, QSMKIT_PHASE_SIGN

    meta = dict(acquisition.metadata or {})
    tes = [float(t) for t in acquisition.echo_times_s]
    sidecar = {
        "Modality": "MR",
        "MagneticFieldStrength": float(acquisition.b0_tesla),
        "ImagingFrequency": meta.get("ImagingFrequency"),
        "Manufacturer": acquisition.manufacturer or meta.get("Manufacturer"),
        "ManufacturersModelName": meta.get("ManufacturersModelName"),
        "SoftwareVersions": meta.get("SoftwareVersions"),
        "MRAcquisitionType": meta.get("MRAcquisitionType"),
        "SeriesDescription": acquisition.series_description or meta.get("SeriesDescription"),
        "ProtocolName": meta.get("ProtocolName"),
        "SequenceName": meta.get("SequenceName"),
        "SeriesNumber": meta.get("SeriesNumber"),
        "ImageType": ["ORIGINAL", "PRIMARY", "P" if kind == "phase" else "M",
                      "PHASE" if kind == "phase" else "MAGNITUDE"],
        "EchoTime": tes[0],
        "EchoTimes": tes,
        "EchoNumber": list(range(1, len(tes) + 1)),
        "RepetitionTime": meta.get("RepetitionTime"),
        "FlipAngle": meta.get("FlipAngle"),
        "SliceThickness": meta.get("SliceThickness"),
        "SpacingBetweenSlices": meta.get("SpacingBetweenSlices"),
        "PatientPosition": meta.get("PatientPosition"),
        "PhaseEncodingDirection": meta.get("PhaseEncodingDirection"),
        "PhaseEncodingAxis": meta.get("PhaseEncodingAxis"),
        "InPlanePhaseEncodingDirectionDICOM": meta.get("InPlanePhaseEncodingDirectionDICOM"),
        "ImageOrientationPatientDICOM": meta.get("ImageOrientationPatientDICOM"),
        "Units": "rad" if kind == "phase" else None,
        # Acquisition.phase is always in qsmkit's sign convention (GE already negated).
        PHASE_SIGN_KEY: QSMKIT_PHASE_SIGN if kind == "phase" else None,
        "ConversionSoftware": CONVERSION_SOFTWARE,
    }
    from qsmkit import __version__

    sidecar["ConversionSoftwareVersion"] = __version__
    return {k: v for k, v in sidecar.items() if v not in (None, "", [])}


def write_sidecar(path, meta: dict) -> Path:
    """Write a sidecar dict as indented JSON (tab-free, keys in the given order)."""
    from qsmkit.io.provenance import to_json

    path = Path(path)
    path.write_text(to_json(meta) + "\n", encoding="utf-8")
    return path


def chi_sidecar(reference: dict | None, **extra) -> dict:
    """The JSON sidecar of a chi map: units and how chi was referenced (``ChiReference``, see
    :func:`qsmkit.reference.reference_record`)."""
    from qsmkit.reference import REFERENCE_KEY

    meta = {"Units": "ppm", "Description": "magnetic susceptibility (SI)"}
    meta.update(extra)
    meta[REFERENCE_KEY] = reference
    return meta


def _record_from_run_info(info: dict) -> dict | None:
    """A ``ChiReference`` from the ``info.reference`` of a ``qsmkit.json`` written before the
    record existed (method, statistic, offset; no CSF level)."""
    ref = info.get("reference") if isinstance(info, dict) else None
    if not isinstance(ref, dict) or "method" not in ref:
        return None
    from qsmkit.reference import _REGION_TEXT

    method = str(ref["method"])
    return {"Method": method, "Region": _REGION_TEXT.get(method, method),
            "Statistic": ref.get("statistic"), "OffsetSubtractedPpm": ref.get("offset_ppm"),
            "BrainMeanPpm": 0.0 if method == "brain" else None,
            "CSFPpm": 0.0 if method == "csf" else None, "CSFCriteria": ref.get("criteria"),
            "Fallback": ref.get("fallback")}


def read_chi_reference(chi_path) -> tuple[dict | None, str]:
    """How the chi map at ``chi_path`` was referenced, and where that was read.

    Looks, in order, at the map's own sidecar (``chi.json``: ``ChiReference``), then at the
    ``qsmkit.json`` of its folder when the map is that run's ``chi.nii.gz`` (``ChiReference``,
    or the older ``info.reference``). Returns ``(None, reason)`` when nothing says.
    """
    from qsmkit.reference import REFERENCE_KEY

    path = Path(chi_path)
    side = sidecar_path(path)
    if side.exists():
        meta = read_json_dict(side)
        if isinstance(meta.get(REFERENCE_KEY), dict):
            return meta[REFERENCE_KEY], str(side)
    run_json = path.with_name("qsmkit.json")
    if run_json.exists() and path.name.startswith("chi."):
        meta = read_json_dict(run_json)
        if isinstance(meta.get(REFERENCE_KEY), dict):
            return meta[REFERENCE_KEY], str(run_json)
        record = _record_from_run_info(meta.get("info", {}))
        if record is not None:
            return record, str(run_json)
        config = meta.get("config", {})
        if isinstance(config, dict) and config.get("reference") == "none":
            return {"Method": "none", "Region": "none", "BrainMeanPpm": None,
                    "CSFPpm": None}, str(run_json)
    return None, f"no {REFERENCE_KEY} in {side.name} or a qsmkit.json beside {path.name}"

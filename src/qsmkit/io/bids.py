"""BIDS multi-echo GRE (``MEGRE``) datasets: write one subject, find and read scans.

Layout (BIDS 1.9, "Multi-echo gradient echo")::

    ROOT/dataset_description.json
    ROOT/participants.tsv
    ROOT/sub-<label>[/ses-<label>]/anat/
        sub-<label>[_ses-<label>][_acq-<label>][_run-<index>]_echo-<n>_part-mag_MEGRE.nii.gz
        sub-<label>[_ses-<label>][_acq-<label>][_run-<index>]_echo-<n>_part-phase_MEGRE.nii.gz
        ... one JSON sidecar per image with EchoTime (s) and MagneticFieldStrength (T)

Readers also accept the ``_GRE`` suffix, files without an ``echo`` entity holding all echoes
in a 4D volume (echo times then come from an ``EchoTime`` list or ``EchoTimes``), and
sidecars inherited from higher folders (the BIDS inheritance principle), and scans stored as
real and imaginary parts (``part-real``/``part-imag``, used when no ``part-mag``/``part-phase``
pair is present). Phase stored in
vendor integer units (e.g. Siemens -4096..4095, or 0..4095) or in milliradians is detected
from its range and rescaled to radians; a note on the :class:`Acquisition` says so.

References
----------
Gorgolewski KJ, et al. The brain imaging data structure, a format for organizing and
describing outputs of neuroimaging experiments. Sci Data 2016;3:160044.
BIDS specification, "Magnetic Resonance Imaging" > "Anatomy imaging data" (MEGRE suffix,
``echo`` and ``part`` entities), https://bids-specification.readthedocs.io.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from qsmkit.acquisition import Acquisition, phase_to_radians
from qsmkit.errors import InputError
from qsmkit.io.sidecar import b0_from_sidecar
from qsmkit.io.vendor import PHASE_SIGN_KEY, QSMKIT_PHASE_SIGN, to_qsmkit_phase_sign

log = logging.getLogger(__name__)

BIDS_VERSION = "1.9.0"
SUFFIXES = ("MEGRE", "GRE")
_ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part")
_NAME_RE = re.compile(r"^(?P<entities>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)$")
_LABEL_RE = re.compile(r"^[a-zA-Z0-9]+$")


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------
def entity_label(value, prefix: str, what: str = "entity") -> str:
    """The label of a BIDS entity value given with or without its prefix (``sub-01`` -> ``01``)."""
    text = str(value)
    if text.startswith(prefix + "-"):
        text = text[len(prefix) + 1 :]
    if not _LABEL_RE.match(text):
        raise InputError(
            f"{what} label {value!r} must be letters and digits only (e.g. '01'), as BIDS requires"
        )
    return text


def parse_name(path) -> tuple[dict[str, str], str, str] | None:
    """Split a BIDS file name into (entities, suffix, extension); ``None`` if not BIDS."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".json"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            break
    else:
        return None
    match = _NAME_RE.match(stem)
    if not match:
        return None
    entities = {}
    for part in match.group("entities").strip("_").split("_"):
        if part:
            key, value = part.split("-", 1)
            entities[key] = value
    return entities, match.group("suffix"), ext


def build_name(entities: dict[str, object], suffix: str, extension: str) -> str:
    """A BIDS file name with entities in specification order."""
    keys = [k for k in _ENTITY_ORDER if entities.get(k) is not None]
    keys += sorted(k for k in entities if k not in _ENTITY_ORDER and entities[k] is not None)
    return "_".join([f"{k}-{entities[k]}" for k in keys] + [suffix]) + extension


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def write_dataset_description(
    root,
    *,
    name: str = "qsmkit dataset",
    dataset_type: str = "raw",
    generated_by: Sequence[dict] | None = None,
) -> Path:
    """Write ``dataset_description.json`` into ``root`` unless one exists already."""
    from qsmkit import __version__

    path = Path(root) / "dataset_description.json"
    if path.exists():
        return path
    payload = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": dataset_type}
    payload["GeneratedBy"] = (
        list(generated_by) if generated_by else [{"Name": "qsmkit", "Version": __version__}]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def dataset_link(root, source) -> str:
    """Where the derivative ``root`` finds its ``source`` dataset, for ``DatasetLinks``.

    A relative path (``"../.."``) when the derivative lies inside the source (the
    ``derivatives/`` convention), so the pair can be moved together; otherwise the absolute
    ``file://`` URI of the source.
    """
    import os

    root, source = Path(root).resolve(), Path(source).resolve()
    if root.is_relative_to(source):
        return Path(os.path.relpath(source, root)).as_posix()
    return source.as_uri()


def bids_uri(path, dataset_root, dataset_name: str = "") -> str:
    """The BIDS URI ``bids:<dataset_name>:<path within the dataset>`` of ``path``.

    ``dataset_name`` ``""`` is the dataset holding the file that cites the URI; other names
    are resolved through ``DatasetLinks`` of ``dataset_description.json``.
    """
    import os

    path, dataset_root = Path(path), Path(dataset_root)
    # Lexically first: a git-annex/DataLad file is a link into .git/annex, whose target is
    # not the name the dataset gives it.
    for file, root in ((os.path.abspath(path), os.path.abspath(dataset_root)),
                       (path.resolve(), dataset_root.resolve())):
        try:
            rel = Path(file).relative_to(root)
        except ValueError:
            continue
        return f"bids:{dataset_name}:{rel.as_posix()}"
    raise InputError(f"{path} is not inside the BIDS dataset {dataset_root}")


def write_derivative_description(
    root,
    *,
    name: str,
    description: str,
    source=None,
    source_name: str = "raw",
    source_is_input: bool = True,
) -> Path:
    """Write (or refresh) ``dataset_description.json`` of a qsmkit derivative dataset.

    ``DatasetType`` ``"derivative"``, ``GeneratedBy`` qsmkit with its version (and
    ``CodeURL`` when the installed package metadata names one); with ``source``, that
    dataset is listed in ``SourceDatasets`` and linked as ``source_name`` in
    ``DatasetLinks``, so that sidecars can cite its files as ``bids:<source_name>:...``
    (BIDS specification, "Derived dataset and pipeline description" and "BIDS URI").
    ``source_is_input=False`` links ``source`` without listing it in ``SourceDatasets``
    (the phantom truth is not computed from the raw data it sits beside).
    """
    from qsmkit import __version__

    root = Path(root)
    generated = {"Name": "qsmkit", "Version": __version__, "Description": description}
    code_url = _code_url()
    if code_url:
        generated["CodeURL"] = code_url
    payload = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
               "GeneratedBy": [generated]}
    if source is not None:
        link = dataset_link(root, source)
        if source_is_input:
            payload["SourceDatasets"] = [{"URL": link}]
        payload["DatasetLinks"] = {source_name: link}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset_description.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _code_url() -> str | None:
    """The project URL of the installed qsmkit distribution, if its metadata has one."""
    from importlib import metadata

    try:
        meta = metadata.metadata("qsmkit")
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("source", "repository", "homepage", "code") and url.strip():
            return url.strip()
    return meta.get("Home-page") or None


def write_bidsignore(root, patterns: Sequence[str]) -> Path:
    """Add ``patterns`` to ``root/.bidsignore`` (kept lines stay; no duplicates).

    Files that BIDS has no name for (reports, work folders, group tables) are listed there
    so that the BIDS validator checks only the standard files.
    """
    path = Path(root) / ".bidsignore"
    lines = path.read_text().splitlines() if path.exists() else []
    lines += [p for p in patterns if p not in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _add_participant(root: Path, subject: str) -> Path:
    path = root / "participants.tsv"
    rows = path.read_text().splitlines() if path.exists() else ["participant_id"]
    ids = {r.split("\t")[0] for r in rows[1:]}
    if f"sub-{subject}" not in ids:
        rows.append(f"sub-{subject}" + "\t" * (rows[0].count("\t")))
    path.write_text("\n".join(rows) + "\n")
    return path


def write_megre_subject(
    root,
    subject: str,
    magnitude: np.ndarray,
    phase: np.ndarray,
    affine,
    echo_times_s: Sequence[float],
    b0_tesla: float,
    *,
    session: str | None = None,
    acq: str | None = None,
    run: int | str | None = None,
    manufacturer: str = "qsmkit-simulator",
    extra_metadata: dict | None = None,
) -> list[Path]:
    """Write a multi-echo GRE scan of one subject as BIDS ``MEGRE`` files.

    Parameters
    ----------
    root : path
        Dataset root; ``dataset_description.json`` and ``participants.tsv`` are created or
        updated there.
    subject : str
        Subject label, with or without the ``sub-`` prefix.
    magnitude, phase : (X, Y, Z, E) arrays
        Phase in radians; written as float32 with ``"Units": "rad"``.
    affine : (4, 4) array
    echo_times_s : (E,) seconds
    b0_tesla : float
    session, acq, run : optional entities
    manufacturer : str
        ``Manufacturer`` in every sidecar.
    extra_metadata : dict, optional
        Further sidecar fields (e.g. ``RepetitionTime``, ``FlipAngle``).

    Returns
    -------
    list of Path
        The images and sidecars written, magnitude and phase for each echo.
    """
    from qsmkit.io.nifti import save_nifti

    root = Path(root)
    sub = entity_label(subject, "sub", "subject")
    ses = entity_label(session, "ses", "session") if session is not None else None
    acq_label = entity_label(acq, "acq", "acquisition") if acq is not None else None
    run_label = entity_label(run, "run", "run") if run is not None else None
    magnitude = np.asarray(magnitude)
    phase = np.asarray(phase)
    if magnitude.ndim == 3:
        magnitude, phase = magnitude[..., None], phase[..., None]
    tes = np.atleast_1d(np.asarray(echo_times_s, dtype=float))
    if magnitude.shape != phase.shape or magnitude.ndim != 4 or magnitude.shape[3] != tes.size:
        raise InputError(
            f"magnitude {magnitude.shape}, phase {phase.shape} and {tes.size} echo times do not "
            "match; give (X, Y, Z, E) arrays with one echo time per echo"
        )
    write_dataset_description(root)
    _add_participant(root, sub)
    folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "anat"
    written = []
    for e, te in enumerate(tes):
        for part, data, image_type in (
            ("mag", magnitude[..., e], ["ORIGINAL", "PRIMARY", "M", "ND"]),
            ("phase", phase[..., e], ["ORIGINAL", "PRIMARY", "P", "ND"]),
        ):
            entities = {
                "sub": sub,
                "ses": ses,
                "acq": acq_label,
                "run": run_label,
                "echo": e + 1,
                "part": part,
            }
            image = folder / build_name(entities, "MEGRE", ".nii.gz")
            save_nifti(
                image,
                data,
                affine,
                description=f"MEGRE {part} echo {e + 1}",
                unit="rad" if part == "phase" else "",
            )
            sidecar = {
                "EchoTime": float(te),
                "EchoNumber": e + 1,
                "MagneticFieldStrength": float(b0_tesla),
                "Manufacturer": manufacturer,
                PHASE_SIGN_KEY: QSMKIT_PHASE_SIGN,
                "MRAcquisitionType": "3D",
                "ImageType": image_type,
            }
            if part == "phase":
                sidecar["Units"] = "rad"
            sidecar.update(extra_metadata or {})
            json_path = image.with_name(image.name.replace(".nii.gz", ".json"))
            json_path.write_text(json.dumps(sidecar, indent=2) + "\n")
            written += [image, json_path]
    return written


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class BidsMegreRef:
    """One multi-echo GRE scan found in a BIDS dataset.

    ``magnitude_files`` and ``phase_files`` list the images sorted by echo number (a single
    4D file when the dataset has no ``echo`` entity); ``magnitude_meta`` / ``phase_meta`` hold
    the sidecar metadata of each file after BIDS inheritance, ``sidecars`` the JSON files
    read.
    """

    root: Path
    subject: str
    session: str | None
    acq: str | None
    run: str | None
    echo_numbers: list[int]
    magnitude_files: list[Path]
    phase_files: list[Path]
    magnitude_meta: list[dict]
    phase_meta: list[dict]
    sidecars: list[Path]
    entities: dict[str, str] = dataclasses.field(default_factory=dict)
    suffix: str = "MEGRE"
    parts: tuple[str, str] = ("mag", "phase")
    """``("real", "imag")`` when the scan is stored as real and imaginary parts
    (``magnitude_files`` then hold the real parts, ``phase_files`` the imaginary ones)."""

    @property
    def name(self) -> str:
        """BIDS-style prefix of this scan, e.g. ``sub-01_ses-1_acq-qsm``."""
        return build_name(
            {k: v for k, v in self.entities.items() if k not in ("echo", "part")}, "", ""
        ).rstrip("_")


def _as_label_set(values, prefix) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = [values]
    return {
        entity_label(v, prefix, "participant" if prefix == "sub" else "session") for v in values
    }


def _inherited_metadata(root: Path, image: Path, entities: dict, suffix: str):
    """Merge sidecars from the dataset root down to the image's folder (BIDS inheritance)."""
    folders = [root]
    rel = image.parent.relative_to(root)
    for part in rel.parts:
        folders.append(folders[-1] / part)
    meta: dict = {}
    used: list[Path] = []
    for folder in folders:
        candidates = []
        for json_path in sorted(folder.glob("*.json")):
            parsed = parse_name(json_path)
            if not parsed or parsed[1] != suffix:
                continue
            ents = parsed[0]
            if all(entities.get(k) == v for k, v in ents.items()):
                candidates.append((len(ents), json_path))
        for _, json_path in sorted(candidates):
            try:
                meta.update(json.loads(json_path.read_text()))
            except (OSError, json.JSONDecodeError) as err:
                raise InputError(f"cannot read the BIDS sidecar {json_path}: {err}") from None
            used.append(json_path)
    return meta, used


_PART_NAMES = {"mag": "magnitude", "phase": "phase", "real": "real", "imag": "imaginary"}


def find_megre(
    root,
    *,
    participant_label: str | Iterable[str] | None = None,
    session: str | Iterable[str] | None = None,
    skipped: list[str] | None = None,
) -> list[BidsMegreRef]:
    """Find every multi-echo GRE scan (``MEGRE`` or ``GRE`` suffix) in a BIDS dataset.

    Parameters
    ----------
    root : path
        Dataset root (the folder holding ``sub-*`` folders); ``derivatives`` are skipped.
    participant_label : str or list of str, optional
        Subjects to keep, with or without ``sub-``.
    session : str or list of str, optional
        Sessions to keep, with or without ``ses-``.
    skipped : list, optional
        Receives one message per file or scan skipped (as logged), so that a caller finding
        no scan can say why.

    Returns
    -------
    list of BidsMegreRef
        Sorted by subject, session, acquisition and run. Scans lacking magnitude or phase
        images for some echo are skipped with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"BIDS folder not found: {root}")
    def skip(message: str, *values) -> None:
        log.warning(message, *values)
        if skipped is not None:
            skipped.append(message % values)

    subjects = _as_label_set(participant_label, "sub")
    sessions = _as_label_set(session, "ses")
    groups: dict[tuple, dict] = {}
    for image in sorted(root.glob("sub-*/**/anat/*.nii*")):
        parsed = parse_name(image)
        if not parsed or parsed[2] == ".json" or parsed[1] not in SUFFIXES:
            continue
        entities, suffix, _ = parsed
        if "derivatives" in image.relative_to(root).parts:
            continue
        if "sub" not in entities:
            continue
        if subjects is not None and entities["sub"] not in subjects:
            continue
        if sessions is not None and entities.get("ses") not in sessions:
            continue
        part = entities.get("part", "mag")
        if part not in ("mag", "phase", "real", "imag"):
            continue
        key_entities = {k: v for k, v in entities.items() if k not in ("echo", "part")}
        key = (tuple(sorted(key_entities.items())), suffix)
        group = groups.setdefault(
            key, {"entities": key_entities, "suffix": suffix, "mag": {}, "phase": {},
                  "real": {}, "imag": {}}
        )
        echo = entities.get("echo")
        try:
            echo_number = int(echo) if echo is not None else 0
        except ValueError:
            skip("skipping %s: echo entity %r is not a number", image, echo)
            continue
        group[part][echo_number] = (image, entities)

    refs = []
    for (_, suffix), group in groups.items():
        # magnitude and phase; else real and imaginary parts (BIDS part-real/part-imag)
        parts = (("real", "imag") if not (group["mag"] and group["phase"])
                 and group["real"] and group["imag"] else ("mag", "phase"))
        mags, phases = group[parts[0]], group[parts[1]]
        label = build_name(group["entities"], suffix, "")
        if not phases or not mags:
            skip("skipping %s: it needs both magnitude and phase images (or real and "
                 "imaginary parts)", label)
            continue
        if sorted(mags) != sorted(phases):
            skip(
                f"skipping %s: {_PART_NAMES[parts[0]]} echoes %s and {_PART_NAMES[parts[1]]} "
                "echoes %s differ",
                label,
                sorted(mags),
                sorted(phases),
            )
            continue
        echoes = sorted(mags)
        if 0 in echoes and len(echoes) > 1:
            skip("skipping %s: it mixes files with and without an echo entity", label)
            continue
        mag_meta, phase_meta, used = [], [], []
        for e in echoes:
            for part, store in ((parts[0], mag_meta), (parts[1], phase_meta)):
                image, ents = group[part][e]
                meta, files = _inherited_metadata(root, image, ents, suffix)
                store.append(meta)
                used += [f for f in files if f not in used]
        ents = group["entities"]
        refs.append(
            BidsMegreRef(
                root=root,
                subject=ents["sub"],
                session=ents.get("ses"),
                acq=ents.get("acq"),
                run=ents.get("run"),
                echo_numbers=echoes,
                magnitude_files=[mags[e][0] for e in echoes],
                phase_files=[phases[e][0] for e in echoes],
                magnitude_meta=mag_meta,
                phase_meta=phase_meta,
                sidecars=used,
                entities=dict(ents),
                suffix=suffix,
                parts=parts,
            )
        )
    refs.sort(key=lambda r: (r.subject, r.session or "", r.acq or "", r.run or "", r.suffix))
    return refs


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def _sidecar_of(image: Path) -> Path:
    name = image.name
    stem = name[:-7] if name.endswith(".nii.gz") else name[:-4]
    return image.with_name(stem + ".json")


def _echo_times_of(meta: dict, image: Path, n_volumes: int) -> list[float]:
    """Echo times (s) of the ``n_volumes`` echoes stored in ``image``."""
    found = {}
    for key in ("EchoTime", "EchoTimes"):
        if meta.get(key) is not None:
            try:
                found[key] = [float(v) for v in np.atleast_1d(meta[key])]
            except (TypeError, ValueError):
                raise InputError(
                    f"{key} in the sidecar of {image.name} is not a number or list of numbers"
                ) from None
    for values in found.values():
        if len(values) == n_volumes:
            return values
    if not found:
        raise InputError(
            f"no EchoTime for {image.name}: add EchoTime (seconds) to its sidecar "
            f"{_sidecar_of(image).name}"
        )
    key, values = next(iter(found.items()))
    raise InputError(
        f"the sidecar of {image.name} gives {len(values)} echo time(s) ({key}) for "
        f"{n_volumes} echo volume(s); list one echo time per volume in EchoTimes"
    )


def scale_phase_to_radians(phase: np.ndarray, units: str | None = None, *,
                           phase_unit: str = "auto") -> tuple[np.ndarray, str]:
    """Phase in radians in [-pi, pi), and a note saying how it was interpreted.

    The value range decides (see :func:`qsmkit.acquisition.phase_to_radians`), not ``units``
    (a sidecar ``Units``): when the two disagree the note says so. ``phase_unit`` (the
    ``--phase-unit`` option) forces the unit.
    """
    radians, note = phase_to_radians(phase, unit=phase_unit)
    if note and (units or "").lower().startswith("rad"):
        note += f" although its sidecar says Units '{units}'"
    return radians, note


def _load_echo_stack(files: list[Path]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    from qsmkit.io.nifti import load_nifti

    volumes, counts, affine, shape = [], [], None, None
    for path in files:
        data, aff, _ = load_nifti(path)
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim != 4:
            raise InputError(f"{path} must be a 3D or 4D image, got shape {data.shape}")
        if affine is None:
            affine, shape = aff, data.shape[:3]
        elif data.shape[:3] != shape or not np.allclose(aff, affine, atol=1e-3):
            raise InputError(
                f"{path.name} does not share the grid of {files[0].name}; all echoes of a scan "
                "must have the same shape and affine"
            )
        volumes.append(data)
        counts.append(data.shape[3])
    return np.concatenate(volumes, axis=3), affine, counts


def read_megre(ref: BidsMegreRef, *, phase_unit: str = "auto", echo_times_s=None,
               b0_tesla: float | None = None) -> Acquisition:
    """Load a scan found by :func:`find_megre` as an :class:`Acquisition`.

    Echo times come from the sidecars (``EchoTime`` per file, seconds), B0 from
    ``MagneticFieldStrength``; where the sidecars lack them, ``echo_times_s`` and ``b0_tesla``
    (``--echo-times``, ``--b0``) stand in, else :class:`InputError` names the file.
    Phase units: ``phase_unit`` (see :func:`qsmkit.acquisition.phase_to_radians`); the
    vendor's phase sign (GE) is converted as on the DICOM route
    (:func:`qsmkit.io.vendor.to_qsmkit_phase_sign`) unless the sidecars record
    ``PhaseSignConvention`` from qsmkit.
    """
    magnitude, affine, mag_counts = _load_echo_stack(ref.magnitude_files)
    phase_raw, phase_affine, phase_counts = _load_echo_stack(ref.phase_files)
    if magnitude.shape != phase_raw.shape:
        raise InputError(
            f"magnitude {magnitude.shape} and phase {phase_raw.shape} of {ref.name} differ in shape"
        )
    if not np.allclose(affine, phase_affine, atol=1e-3):
        raise InputError(f"magnitude and phase of {ref.name} have different affines")

    echo_times: list[float] = []
    for image, meta, count, mag_meta in zip(
        ref.phase_files, ref.phase_meta, phase_counts, ref.magnitude_meta, strict=True
    ):
        merged = {**mag_meta, **meta}
        if echo_times_s is not None and all(merged.get(k) is None
                                            for k in ("EchoTime", "EchoTimes")):
            echo_times = [float(t) for t in np.atleast_1d(echo_times_s)]
            break
        echo_times += _echo_times_of(merged, image, count)
    b0_values = []
    for image, meta, mag_meta in zip(
        ref.phase_files, ref.phase_meta, ref.magnitude_meta, strict=True
    ):
        value = b0_from_sidecar({**mag_meta, **meta}, _sidecar_of(image).name)
        if value is None and b0_tesla is not None:
            value = float(b0_tesla)
        if value is None:
            raise InputError(
                f"no MagneticFieldStrength for {image.name}: add it (tesla) to the sidecar "
                f"{_sidecar_of(image).name}"
            )
        b0_values.append(value)
    if max(b0_values) - min(b0_values) > 1e-3:
        raise InputError(f"the echoes of {ref.name} disagree on MagneticFieldStrength {b0_values}")
    if ref.parts == ("real", "imag"):  # complex data: magnitude and phase (radians) from it
        signal = magnitude.astype(np.complex64) + 1j * phase_raw.astype(np.complex64)
        magnitude, phase = np.abs(signal), np.angle(signal).astype(np.float32)
        del signal
        notes = [f"read from BIDS {ref.name} ({len(ref.phase_files)} real/imaginary file "
                 "pair(s)): magnitude and phase computed from the real and imaginary parts"]
    else:
        units = ref.phase_meta[0].get("Units") if ref.phase_meta else None
        phase, note = scale_phase_to_radians(phase_raw, units, phase_unit=phase_unit)
        notes = [f"read from BIDS {ref.name} ({len(ref.phase_files)} phase file(s))"]
        if note:
            notes.append(note)
    first = {**ref.magnitude_meta[0], **ref.phase_meta[0]} if ref.phase_meta else {}
    phase, note = to_qsmkit_phase_sign(phase, str(first.get("Manufacturer", "")), first)
    if note:
        notes.append(note)
    return Acquisition(
        magnitude=magnitude,
        phase=phase,
        echo_times_s=np.asarray(echo_times, dtype=float),
        b0_tesla=b0_values[0],
        affine=affine,
        manufacturer=str(first.get("Manufacturer", "")),
        series_description=str(first.get("SeriesDescription", first.get("ProtocolName", ""))),
        notes=notes,
    )

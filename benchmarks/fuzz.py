"""Seeded fuzz campaign of qsmkit's promises about bad input (issue 16).

    python benchmarks/fuzz.py [--cases 1000] [--seed 0] [--jobs N] [--only MUTATION]
                              [--log cases.jsonl] [--markdown table.md]

Each case starts from a small valid acquisition (qsmkit's head phantom at 4 mm, 3 echoes, as
NIfTI with sidecars, a local field with its mask, a one-subject BIDS dataset, the same scan
as a Siemens DICOM series and as a DICOMDIR file set, the phantom's chi with its labels and
lookup table, and a long region table with a participants table), applies one seeded
mutation and runs one command in this process (``run``, ``invert``, ``import``, ``bids``,
``liver``, ``lesions``, ``rims``, ``oximetry``, ``roi``, ``compare``). Mutations: damaged
or odd NIfTI, bad JSON sidecars, odd values and output places (the first campaign); damaged
DICOM folders (truncated, zero-byte or flipped files, pixel data or tags such as EchoTime and
ImagePositionPatient missing or nonsensical, a missing or duplicated slice, mixed series with
copies of real vendor files, a non-image DICOM, junk files, DICOMDIR file sets whole or
damaged, gzip, a symlink loop, an empty folder) against ``import``, ``import --list`` and
``run``; damaged BIDS trees (dataset_description.json missing or broken, sidecars broken or
odd, an echo or sidecar missing, shape or grid mismatch between echoes, symlinked, dangling
and looping folders, participants.tsv empty, binary or odd, outputs inside the raw dataset,
unknown participants or sessions, renamed files) against ``bids``; ``liver`` with odd maps,
labels, masks and options; the analysis commands with NaN/Inf/zero maps, wrong shapes, other
grids, non-integer, negative or empty labels, 2-D/4-D images, damaged files and odd tables;
and odd numbers (negative, zero, NaN, Inf, huge, empty, text, unicode) and paths (unicode,
very long, empty) for every command. Every case ends in exactly one outcome:

- ``clean error``: exit 2 with a one-line message and no traceback; for ``bids``, exit 1
  where every failed subject failed on bad input (reported in one line), as documented;
- ``good run``: exit 0 with a sound output: chi finite, not zero everywhere and not flat
  (1-99 % range under 0.02 ppm) unless a CHI_FLAT warning says so, the mask not collapsed
  below 30 % of the brain unless a mask warning says so (``run``); imported phase finite
  radians (``import``); liver maps finite; analysis tables and JSON without NaN/Inf;
- ``traceback``: an exception escaped, "internal error" or a traceback was printed, or exit 1
  (a bug);
- ``silent bad map``: exit 0 with an output that is not sound (see ``good run``);
- ``input changed``: a byte of an input file differs afterwards, or a file appeared inside an
  input folder (other than a BIDS ``derivatives/``), or an empty ``-o`` wrote into the
  working folder;
- ``half-written``: a staging folder left behind, or a failed command left an output file, or
  an output folder without its ``qsmkit.json``;
- ``hang``: no answer within the time limit;
- ``odd message``: a clean error whose output shows a numpy repr (``np.float64(2.0)``) or a
  library's Python warning (``file.py:12: RuntimeWarning: ...``) beside the one-line error;
- ``harness error``: this script failed to set up or judge the case (its own bug).

The promises hold when every outcome is ``clean error`` or ``good run``. Pipeline runs use
``--preset fast`` and the ``bids`` cases share one local Dask cluster, to keep a campaign
affordable; the checks on inputs, outputs and results are the same for every preset.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

GOOD = ("clean error", "good run")
OUTCOMES = ("clean error", "good run", "traceback", "silent bad map", "input changed",
            "half-written", "hang", "odd message", "harness error")
NUMPY_REPR = re.compile(r"\bnp\.(float|int|uint|bool|str_|complex)\w*\(|\barray\(|"
                        r"^\S+:\d+: \w*Warning: ", re.MULTILINE)
"""A numpy repr in a message, or a Python warning printed beside qsmkit's own lines."""
TES = (0.004, 0.008, 0.012)
TES_LIVER = tuple(1.2e-3 * k for k in range(1, 7))
"""``qsmkit liver`` needs at least 4 echoes: its inputs are the same phantom with six."""


class _Timeout(BaseException):
    """Not an Exception: the command's own last line of defence must not catch it."""


def _alarm(signum, frame):
    raise _Timeout


def write_base(folder: Path) -> dict:
    """A small valid acquisition in every form the commands read; returns their paths."""
    from qsmkit.geometry import b0_dir_from_affine
    from qsmkit.io.bids import write_megre_subject
    from qsmkit.io.nifti import save_nifti
    from qsmkit.phantom import head_phantom, simulate_gre

    ph = head_phantom(shape=(48, 48, 48), voxel_size=(4.0, 4.0, 4.0), seed=0)
    sim = simulate_gre(ph, echo_times_s=TES, b0_tesla=3.0, snr=100.0, seed=0)
    acq = sim.acquisition
    folder.mkdir(parents=True, exist_ok=True)
    save_nifti(folder / "mag.nii.gz", acq.magnitude, acq.affine)
    save_nifti(folder / "phase.nii.gz", acq.phase, acq.affine)
    sidecar = {"EchoTime": list(TES), "MagneticFieldStrength": 3.0, "Manufacturer": "Siemens"}
    for name in ("mag", "phase"):
        (folder / f"{name}.json").write_text(json.dumps({**sidecar, "EchoTimes": list(TES)}))
    local = np.where(ph.brain_mask, sim.local_field_hz, 0).astype(np.float32)
    save_nifti(folder / "local.nii.gz", local, acq.affine)
    save_nifti(folder / "local_mask.nii.gz", ph.brain_mask.astype(np.uint8), acq.affine)
    write_megre_subject(folder / "bids", "01", acq.magnitude, acq.phase, acq.affine, TES, 3.0)
    liver = simulate_gre(ph, echo_times_s=TES_LIVER, b0_tesla=3.0, snr=100.0, seed=0).acquisition
    save_nifti(folder / "liver_mag.nii.gz", liver.magnitude, liver.affine)
    save_nifti(folder / "liver_phase.nii.gz", liver.phase, liver.affine)
    for name in ("liver_mag", "liver_phase"):
        (folder / f"{name}.json").write_text(json.dumps(
            {**sidecar, "EchoTime": list(TES_LIVER), "EchoTimes": list(TES_LIVER)}))
    assert np.allclose(b0_dir_from_affine(acq.affine), acq.b0_dir)
    paths = {"root": folder, "mag": folder / "mag.nii.gz", "phase": folder / "phase.nii.gz",
             "local": folder / "local.nii.gz", "local_mask": folder / "local_mask.nii.gz",
             "bids": folder / "bids", "liver_mag": folder / "liver_mag.nii.gz",
             "liver_phase": folder / "liver_phase.nii.gz"}
    paths.update(_write_extra_inputs(folder, ph, acq))
    return paths


def _write_extra_inputs(folder: Path, ph, acq) -> dict:
    """The inputs of ``import``, ``liver`` and the analysis commands: a Siemens DICOM series
    of the acquisition, the same series as a DICOMDIR file set, the phantom's chi (ppm) and
    labels with a lookup table, and a long region table with a participants table."""
    import pydicom
    from pydicom.fileset import FileSet

    from qsmkit.io.dicom_export import write_gre_dicom
    from qsmkit.io.nifti import save_nifti

    write_gre_dicom(acq, folder / "dicom", manufacturer="SIEMENS")
    file_set = FileSet()
    for path in sorted((folder / "dicom").rglob("*.dcm")):
        file_set.add(pydicom.dcmread(path))
    file_set.write(folder / "dicomdir")
    chi = np.where(ph.brain_mask, ph.chi_ppm, 0).astype(np.float32)
    save_nifti(folder / "chi.nii.gz", chi, acq.affine)
    labels = np.where(ph.brain_mask, ph.labels, 0).astype(np.int16)
    save_nifti(folder / "labels.nii.gz", labels, acq.affine)
    present = sorted(int(v) for v in np.unique(labels) if v)
    (folder / "labels.tsv").write_text("index\tname\n" + "".join(
        f"{v}\t{ph.label_names[v]}\n" for v in present))
    rng = np.random.default_rng(0)
    rows = ["subject\tname\tmean_ppm\tgroup"]
    for i in range(8):
        group = "control" if i < 4 else "patient"
        for region in ("putamen", "caudate", "pallidum"):
            value = rng.normal(0.05 + 0.02 * (group == "patient"), 0.01)
            rows.append(f"sub-{i:02d}\t{region}\t{value:.5f}\t{group}")
    (folder / "roi_stats.tsv").write_text("\n".join(rows) + "\n")
    (folder / "participants.tsv").write_text("participant_id\tgroup\n" + "".join(
        f"sub-{i:02d}\t{'control' if i < 4 else 'patient'}\n" for i in range(8)))
    return {"dicom": folder / "dicom", "dicomdir": folder / "dicomdir",
            "chi": folder / "chi.nii.gz", "labels": folder / "labels.nii.gz",
            "roi_table": folder / "roi_stats.tsv", "participants": folder / "participants.tsv",
            "mask_voxels": int(ph.brain_mask.sum())}


# ---------------------------------------------------------------------------------------
# Mutations: each takes (rng, paths, out) and returns the argv to run.

def _nifti(path: Path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def _save(path: Path, data, affine):
    try:
        nib.save(nib.Nifti1Image(data, affine), str(path))
    except Exception:  # an affine nibabel cannot turn into a qform: store it as sform only
        image = nib.Nifti1Image(data, None)
        image.header.set_sform(affine, code=1)
        image.header.set_qform(None, code=0)
        nib.save(image, str(path))


def _run_argv(p, out, *extra, mag=None, phase=None):
    return ["run", "--mag", str(mag or p["mag"]), "--phase", str(phase or p["phase"]), "-o",
            str(out), "--no-report", "--preset", "fast", *extra]


def _damaged_bytes(rng, p, out):
    target = p["phase"] if rng.random() < 0.5 else p["mag"]
    raw = bytearray(target.read_bytes())
    if rng.random() < 0.5:
        raw = raw[: int(rng.integers(0, len(raw)))]
    else:
        for i in rng.integers(0, len(raw), size=int(rng.integers(1, 64))):
            raw[int(i)] = int(rng.integers(0, 256))
    target.write_bytes(bytes(raw))
    return _run_argv(p, out)


def _odd_phase_values(rng, p, out):
    data, affine = _nifti(p["phase"])
    data = data.astype(np.float32)
    kind = rng.choice(["nan slab", "inf slab", "zeros", "constant", "huge", "degrees", "tiny",
                       "siemens", "uint12", "random range", "complex", "int16"])
    if kind == "nan slab":
        data[: int(rng.integers(1, 8))] = np.nan
    elif kind == "inf slab":
        data[: int(rng.integers(1, 8))] = np.inf
    elif kind == "zeros":
        data[:] = 0
    elif kind == "constant":
        data[:] = float(rng.uniform(-3, 3))
    elif kind == "huge":
        data[: int(rng.integers(1, 8))] = 3e38
    elif kind == "degrees":
        data = np.degrees(data)
    elif kind == "tiny":
        data = data * 1e-3
    elif kind == "siemens":
        data = np.round((data + np.pi) / (2 * np.pi) * 8191 - 4096)
    elif kind == "uint12":
        data = np.round((data + np.pi) / (2 * np.pi) * 4095)
    elif kind == "random range":
        data = data * float(10 ** rng.uniform(-4, 6)) + float(rng.uniform(-1e4, 1e4))
    elif kind == "complex":
        data = np.exp(1j * data).astype(np.complex64)
    elif kind == "int16":
        data = np.round(data * 1000).astype(np.int16)
    _save(p["phase"], data, affine)
    return _run_argv(p, out, "--phase-unit", str(rng.choice(["auto", "auto", "rad", "range"])))


def _odd_magnitude(rng, p, out):
    data, affine = _nifti(p["mag"])
    data = data.astype(np.float32)
    kind = rng.choice(["zeros", "negative", "constant slab", "nan", "swap", "2d", "5d"])
    if kind == "zeros":
        data[:] = 0
    elif kind == "negative":
        data = -data
    elif kind == "constant slab":
        data[:, :, : int(rng.integers(1, 20))] = float(data.max())
    elif kind == "nan":
        data[int(rng.integers(0, data.shape[0]))] = np.nan
    elif kind == "swap":
        return _run_argv(p, out, mag=p["phase"], phase=p["mag"])
    elif kind == "2d":
        data = data[:, :, 0]
    elif kind == "5d":
        data = data[..., None]
    _save(p["mag"], data, affine)
    return _run_argv(p, out)


def _odd_affine(rng, p, out):
    invert = rng.random() < 0.5
    kind = rng.choice(["singular", "nan", "huge", "zero voxel", "mismatch"])
    for key in ("local", "local_mask") if invert else ("mag", "phase"):
        data, affine = _nifti(p[key])
        affine = affine.copy()
        if kind == "singular":
            affine[:3, 1] = affine[:3, 0]
        elif kind == "nan":
            affine[0, 0] = np.nan
        elif kind == "huge":
            affine[:3, :3] *= 1e6
        elif kind == "zero voxel":
            affine[:3, 2] = 0
        elif key in ("phase", "local_mask"):
            affine[:3, 3] += 10.0
        _save(p[key], data, affine)
    if invert:
        return ["invert", str(p["local"]), "--mask", str(p["local_mask"]), "--b0", "3", "-o",
                str(out)]
    return _run_argv(p, out)


def _bad_sidecar(rng, p, out):
    target = p["root"] / ("phase.json" if rng.random() < 0.5 else "mag.json")
    meta = json.loads(target.read_text())
    kind = rng.choice(["not json", "list", "b0 string", "b0 negative", "b0 zero", "b0 huge",
                       "te ms", "te wrong count", "te string", "te negative", "te unsorted"])
    text = None
    if kind == "not json":
        text = "{" + "x" * int(rng.integers(0, 20))
    elif kind == "list":
        text = "[1, 2, 3]"
    elif kind.startswith("b0"):
        meta["MagneticFieldStrength"] = {"b0 string": "3T", "b0 negative": -3.0,
                                         "b0 zero": 0.0, "b0 huge": 1e9}[kind]
    elif kind == "te ms":
        meta["EchoTime"] = meta["EchoTimes"] = [4.0, 8.0, 12.0]
    elif kind == "te wrong count":
        meta["EchoTime"] = meta["EchoTimes"] = [0.004, 0.008]
    elif kind == "te string":
        meta["EchoTime"] = meta["EchoTimes"] = "4 ms"
    elif kind == "te negative":
        meta["EchoTime"] = meta["EchoTimes"] = [-0.004, 0.008, 0.012]
    elif kind == "te unsorted":
        meta["EchoTime"] = meta["EchoTimes"] = [0.008, 0.004, 0.012]
    target.write_text(text if text is not None else json.dumps(meta))
    return _run_argv(p, out)


def _odd_values(rng, p, out):
    value = str(rng.choice(["1e300", "1e-300", "-1", "nan", "inf", "abc", "0", "", "1e-3"]))
    kind = rng.choice(["lam", "b0", "echo-times", "method", "phase-unit", "opt"])
    if kind == "lam":
        method = str(rng.choice(["whtv", "tv", "tikhonov", "tkd", "rts", "tgv", "nltv"]))
        return ["invert", str(p["local"]), "--mask", str(p["local_mask"]), "--b0", "3",
                "--method", method, "--lam", value, "-o", str(out)]
    if kind == "b0":
        return _run_argv(p, out, "--b0", value)
    if kind == "echo-times":
        return _run_argv(p, out, "--echo-times", str(rng.choice(
            ["0.004,0.008", "4,8,12", "0.004,0.004,0.004", "a,b,c", value])))
    if kind == "method":
        return ["invert", str(p["local"]), "--mask", str(p["local_mask"]), "--b0", "3",
                "--method", value or "tv", "-o", str(out)]
    if kind == "phase-unit":
        return _run_argv(p, out, "--phase-unit", value or "deg")
    return ["invert", str(p["local"]), "--mask", str(p["local_mask"]), "--b0", "3",
            "--opt", f"max_iter={value}", "-o", str(out)]


def _awkward_output(rng, p, out):
    kind = rng.choice(["is input folder", "inside input", "long name", "parent is file",
                       "existing file", "bids into raw", "bids output is file",
                       "existing outputs"])
    if kind == "is input folder":
        return ["run", str(p["bids"] / "sub-01"), "-o", str(p["bids"] / "sub-01")]
    if kind == "inside input":
        return ["run", str(p["bids"] / "sub-01"), "-o", str(p["bids"] / "sub-01" / "qsm")]
    if kind == "long name":
        return _run_argv(p, out.parent / ("x" * int(rng.integers(256, 400))))
    if kind == "parent is file":
        blocker = out.parent / "a_file"
        blocker.write_text("x")
        return _run_argv(p, blocker / "out")
    if kind == "existing file":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("x")
        return _run_argv(p, out)
    if kind == "bids into raw":
        return ["bids", str(p["bids"]), str(p["bids"]), "--workers", "1", "--no-progress"]
    if kind == "bids output is file":
        out.write_text("x")
        return ["bids", str(p["bids"]), str(out), "--workers", "1", "--no-progress"]
    (out / "chi.nii.gz").parent.mkdir(parents=True, exist_ok=True)
    (out / "chi.nii.gz").write_text("old")
    return ["invert", str(p["local"]), "--mask", str(p["local_mask"]), "--b0", "3", "-o",
            str(out)]


def _valid(rng, p, out):
    if rng.random() < 0.5:
        return ["invert", str(p["local"]), "--mask", str(p["local_mask"]), "--b0", "3",
                "--method", str(rng.choice(["whtv", "tv", "tkd", "tikhonov"])), "-o", str(out)]
    return _run_argv(p, out)


# ---------------------------------------------------------------------------------------
# DICOM folders, BIDS trees, liver, the analysis commands and odd command-line values.

SCHEDULER: str | None = None
"""Address of a Dask scheduler shared by the ``bids`` cases (a fresh local cluster per case
costs seconds); ``None``: each case starts its own with ``--workers 1``."""

SHARED_DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"
DICOM_TAGS = ["EchoTime", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
              "MagneticFieldStrength", "EchoNumbers", "SeriesInstanceUID", "ImageType",
              "Rows", "RescaleSlope", "SliceThickness", "Manufacturer", "SeriesNumber",
              "InstanceNumber", "BitsStored", "ImagingFrequency"]
DICOM_VALUES = ["", "abc", "-1", "0", "1e308", "nan", "inf", "1\\2", "0\\0\\0\\0\\0\\0",
                "-4", "65536", "3.5", "\u2603"]


def _bids_argv(dataset, output, *extra):
    cluster = ["--scheduler", SCHEDULER] if SCHEDULER else ["--workers", "1"]
    argv = ["bids", str(dataset)] + ([str(output)] if output is not None else [])
    return argv + [*cluster, "--no-progress", *extra]


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _edit_dicom(path: Path, keyword: str, value) -> None:
    """Delete (``value`` None) or set a tag, whatever its VR allows."""
    import pydicom
    from pydicom import config

    ds = pydicom.dcmread(path)
    if value is None:
        if keyword in ds:
            del ds[keyword]
    else:
        saved = config.settings.writing_validation_mode, config.settings.reading_validation_mode
        config.settings.writing_validation_mode = config.IGNORE
        config.settings.reading_validation_mode = config.IGNORE
        try:
            tag = pydicom.datadict.tag_for_keyword(keyword)
            vr = pydicom.datadict.dictionary_VR(tag)
            if vr in ("US", "SS", "UL", "SL"):
                try:
                    number = int(float(str(value).split("\\")[0]))
                except (ValueError, OverflowError):
                    number = 0
                lo, hi = {"US": (0, 65535), "SS": (-32768, 32767), "UL": (0, 2**32 - 1),
                          "SL": (-(2**31), 2**31 - 1)}[vr]
                ds[keyword] = pydicom.DataElement(tag, vr, min(max(number, lo), hi))
            else:  # written as raw bytes: any text reaches the file, valid for the VR or not
                from pydicom.dataelem import RawDataElement

                raw = str(value).encode("utf-8")
                raw += b" " * (len(raw) % 2)
                # A raw element is written byte for byte (a DataElement would be converted,
                # and pydicom refuses e.g. a snowman in a DS).
                ds._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
            ds.save_as(path)
        finally:
            config.settings.writing_validation_mode, config.settings.reading_validation_mode = \
                saved
        return
    ds.save_as(path)


def _non_image_dicom(path: Path) -> None:
    """A valid DICOM file without pixels: a Basic Text SR document."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.PatientName = "Fuzz^Case"
    ds.save_as(path, enforce_file_format=True)


def _dicom_damage(rng, p, out):
    folder = p["dicom"]
    kind = str(rng.choice([
        "truncated", "zero-byte", "no pixel data", "missing tag", "missing tag everywhere",
        "bad tag value", "bad tag everywhere", "same position", "missing slice",
        "duplicate file", "mixed series", "non-image dicom", "junk files", "dicomdir",
        "damaged dicomdir", "empty folder", "gzip", "symlink loop", "flipped bytes", "valid"]))
    files = _dicom_files(folder)
    pick = files[int(rng.integers(0, len(files)))]
    if kind == "truncated":
        pick.write_bytes(pick.read_bytes()[: int(rng.integers(0, pick.stat().st_size))])
    elif kind == "zero-byte":
        for path in rng.choice(files, size=int(rng.integers(1, 4)), replace=False):
            Path(path).write_bytes(b"")
    elif kind == "no pixel data":
        _edit_dicom(pick, "PixelData", None)
    elif kind == "missing tag":
        _edit_dicom(pick, str(rng.choice(DICOM_TAGS)), None)
    elif kind == "missing tag everywhere":
        keyword = str(rng.choice(DICOM_TAGS))
        for path in files:
            _edit_dicom(path, keyword, None)
    elif kind == "bad tag value":
        _edit_dicom(pick, str(rng.choice(DICOM_TAGS)), str(rng.choice(DICOM_VALUES)))
    elif kind == "bad tag everywhere":
        keyword, value = str(rng.choice(DICOM_TAGS)), str(rng.choice(DICOM_VALUES))
        for path in files:
            _edit_dicom(path, keyword, value)
    elif kind == "same position":
        for path in files:
            _edit_dicom(path, "ImagePositionPatient", "0\\0\\0")
    elif kind == "missing slice":
        pick.unlink()
    elif kind == "duplicate file":
        shutil.copy(pick, pick.parent / ("copy_" + pick.name))
    elif kind == "mixed series":
        vendor = sorted(p for p in SHARED_DICOM.rglob("*") if p.is_file()
                        and p.suffix.lower() not in (".md", ".json", ".nii")
                        and p.name != "LICENSE") if SHARED_DICOM.is_dir() else []
        if vendor:  # copies of real vendor files (the originals are never touched)
            for i, src in enumerate(rng.choice(vendor, size=min(6, len(vendor)), replace=False)):
                shutil.copy(src, folder / f"vendor_{i}_{Path(src).name}")
        else:
            for path in files[:5]:
                _edit_dicom(path, "SeriesInstanceUID", "1.2.3.4.5")
    elif kind == "non-image dicom":
        _non_image_dicom(folder / "report.dcm")
    elif kind == "junk files":
        (folder / "README.txt").write_text("scanned 2026\n")
        (folder / ".DS_Store").write_bytes(rng.bytes(int(rng.integers(0, 600))))
        (folder / "empty_dir").mkdir()
        (folder / "noise.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.bytes(200))
    elif kind in ("dicomdir", "damaged dicomdir"):
        folder = p["dicomdir"]
        if kind == "damaged dicomdir":
            target = folder / "DICOMDIR"
            target.write_bytes(target.read_bytes()[: int(rng.integers(0, 400))])
    elif kind == "empty folder":
        folder = folder.parent / "empty_dicom"
        folder.mkdir()
    elif kind == "gzip":
        import gzip

        for path in files[: int(rng.integers(1, len(files)))]:
            data = path.read_bytes()
            path.unlink()
            packed = gzip.compress(data)
            if rng.random() < 0.2:
                packed = packed[: len(packed) // 2]
            path.with_name(path.name + ".gz").write_bytes(packed)
    elif kind == "symlink loop":
        (folder / "loop").symlink_to(folder, target_is_directory=True)
    elif kind == "flipped bytes":
        raw = bytearray(pick.read_bytes())
        for i in rng.integers(0, len(raw), size=int(rng.integers(1, 32))):
            raw[int(i)] ^= int(rng.integers(1, 256))
        pick.write_bytes(bytes(raw))
    command = str(rng.choice(["import", "import", "import", "import", "list", "run"]))
    if command == "list":
        return ["import", str(folder), "--list"]
    if command == "run":
        return ["run", str(folder), "-o", str(out), "--no-report", "--preset", "fast"]
    return ["import", str(folder), "-o", str(out)]


def _bids_damage(rng, p, out):
    ds = p["bids"]
    anat = ds / "sub-01" / "anat"
    echo = int(rng.integers(1, 4))
    part = str(rng.choice(["mag", "phase"]))
    image = anat / f"sub-01_echo-{echo}_part-{part}_MEGRE.nii.gz"
    kind = str(rng.choice([
        "no dataset_description", "broken dataset_description", "description is a list",
        "broken sidecar", "sidecar b0 3T", "sidecar te ms", "echo missing", "sidecar missing",
        "shape mismatch", "affine mismatch", "symlinked subject", "dangling symlink",
        "symlink loop", "participants empty", "participants binary",
        "participants no id column", "participants odd rows", "output inside raw",
        "output is dataset", "output in derivatives", "default output", "empty subject",
        "unknown participant", "unknown session", "renamed files", "truncated image",
        "valid", "valid"]))
    output = out
    extra = []
    if kind == "no dataset_description":
        (ds / "dataset_description.json").unlink()
    elif kind == "broken dataset_description":
        (ds / "dataset_description.json").write_text('{"Name": ')
    elif kind == "description is a list":
        (ds / "dataset_description.json").write_text("[1, 2]")
    elif kind == "broken sidecar":
        image.with_name(image.name.replace(".nii.gz", ".json")).write_text("{")
    elif kind == "sidecar b0 3T":
        sidecar = image.with_name(image.name.replace(".nii.gz", ".json"))
        meta = json.loads(sidecar.read_text())
        meta["MagneticFieldStrength"] = "3T"
        sidecar.write_text(json.dumps(meta))
    elif kind == "sidecar te ms":
        sidecar = image.with_name(image.name.replace(".nii.gz", ".json"))
        meta = json.loads(sidecar.read_text())
        meta["EchoTime"] = float(meta["EchoTime"]) * 1000
        sidecar.write_text(json.dumps(meta))
    elif kind == "echo missing":
        image.unlink()
    elif kind == "sidecar missing":
        image.with_name(image.name.replace(".nii.gz", ".json")).unlink()
    elif kind in ("shape mismatch", "affine mismatch", "truncated image"):
        data, affine = _nifti(image)
        if kind == "shape mismatch":
            data = data[:-2]
        elif kind == "affine mismatch":
            affine = affine.copy()
            affine[:3, 3] += 12.0
        _save(image, data, affine)
        if kind == "truncated image":
            image.write_bytes(image.read_bytes()[: int(rng.integers(0, 2000))])
    elif kind == "symlinked subject":
        elsewhere = ds.parent / "elsewhere"
        elsewhere.mkdir()
        shutil.move(str(ds / "sub-01"), str(elsewhere / "sub-01"))
        (ds / "sub-01").symlink_to(elsewhere / "sub-01", target_is_directory=True)
    elif kind == "dangling symlink":
        (ds / "sub-02").symlink_to(ds.parent / "nowhere", target_is_directory=True)
    elif kind == "symlink loop":
        (anat / "loop").symlink_to(ds, target_is_directory=True)
    elif kind == "participants empty":
        (ds / "participants.tsv").write_text("")
    elif kind == "participants binary":
        (ds / "participants.tsv").write_bytes(rng.bytes(int(rng.integers(1, 300))))
    elif kind == "participants no id column":
        (ds / "participants.tsv").write_text("subject\tage\n01\t40\n")
    elif kind == "participants odd rows":
        (ds / "participants.tsv").write_text(
            "\ufeffparticipant_id\tage\tgroup\nsub-01\tn/a\n\nsub-01\t30\tx\textra\nsub-99\t\t\n")
    elif kind == "output inside raw":
        output = ds / str(rng.choice(["sub-01", "sub-01/anat", "code", "qsm"])) / "out"
    elif kind == "output is dataset":
        output = ds
    elif kind == "output in derivatives":
        output = ds / "derivatives" / "qsmkit"
    elif kind == "default output":
        output = None
    elif kind == "empty subject":
        (ds / "sub-02" / "anat").mkdir(parents=True)
    elif kind == "unknown participant":
        extra = ["--participant-label", str(rng.choice(["99", "sub-", "", "../sub-01"]))]
    elif kind == "unknown session":
        extra = ["--session", str(rng.choice(["1", "", "ses-x"]))]
    elif kind == "renamed files":
        for path in sorted(anat.iterdir()):
            path.rename(path.with_name(path.name.replace("_MEGRE", "_T1w")))
    return _bids_argv(ds, output, "--preset", "fast", *extra)


def _grid_variant(rng, path: Path, kind: str) -> Path:
    """A copy of the NIfTI at ``path`` made odd in one way; returns its path."""
    data, affine = _nifti(path)
    data = np.asarray(data)
    target = path.with_name(f"odd_{kind.replace(' ', '_')}_{path.name}")
    if kind == "nan slab":
        data = data.astype(np.float32)
        data[: int(rng.integers(1, 10))] = np.nan
    elif kind == "all nan":
        data = np.full(data.shape, np.nan, np.float32)
    elif kind == "inf voxel":
        data = data.astype(np.float32)
        data[tuple(s // 2 for s in data.shape)] = np.inf
    elif kind == "all zero":
        data = np.zeros_like(data)
    elif kind == "wrong shape":
        data = data[2:-1]
    elif kind == "other grid":
        affine = affine.copy()
        affine[:3, 3] += 8.0
    elif kind == "non-integer":
        data = data.astype(np.float32) + 0.5
    elif kind == "negative":
        data = -np.abs(data.astype(np.int32))
    elif kind == "4d":
        data = np.stack([data, data], axis=-1)
    elif kind == "2d":
        data = data[:, :, data.shape[2] // 2]
    elif kind == "huge":
        data = data.astype(np.float32) * 1e30
    elif kind == "one voxel":
        one = np.zeros_like(data)
        one[tuple(s // 2 for s in data.shape)] = 1
        data = one
    elif kind == "truncated":
        _save(target, data, affine)
        target.write_bytes(target.read_bytes()[: int(rng.integers(0, 3000))])
        return target
    elif kind == "text file":
        target.write_text("not an image\n")
        return target
    _save(target, data, affine)
    return target


GRID_KINDS = ["nan slab", "all nan", "inf voxel", "all zero", "wrong shape", "other grid",
              "non-integer", "negative", "4d", "2d", "huge", "one voxel", "truncated",
              "text file"]


def _analysis_inputs(rng, p, out):
    command = str(rng.choice(["lesions", "rims", "oximetry", "roi", "roi", "compare"]))
    table = out.parent / f"{command}.tsv"
    if command == "compare":
        return _compare_inputs(rng, p, table)
    chi, mask, labels = p["chi"], p["local_mask"], p["labels"]
    which = str(rng.choice(["chi", "second", "both", "valid"]))
    kind = str(rng.choice(GRID_KINDS))
    if which in ("chi", "both"):
        chi = _grid_variant(rng, chi, kind)
    if which in ("second", "both"):
        mask = _grid_variant(rng, mask, kind)
        labels = _grid_variant(rng, labels, kind)
    if command == "lesions":
        return ["lesions", str(chi), str(mask), "-o", str(table)]
    if command == "rims":
        lesion = _grid_variant(rng, p["labels"], "one voxel") if rng.random() < 0.3 else labels
        return ["rims", str(chi), str(lesion), "--mask", str(mask), "-o", str(table)]
    if command == "oximetry":
        extra = ["--labels", str(labels)] if rng.random() < 0.5 else []
        if rng.random() < 0.7:  # the phantom's chi is relative to water
            extra += ["--reference-ppm", "0"]
        return ["oximetry", str(chi), str(mask), *extra, "-o", str(table)]
    extra = ["--lut", str(p["labels"].with_suffix("").with_suffix(".tsv"))] \
        if rng.random() < 0.5 else []
    return ["roi", str(chi), str(labels), *extra, "-o", str(table)]


def _compare_inputs(rng, p, table):
    source = p["roi_table"]
    kind = str(rng.choice(["valid", "empty", "header only", "missing column", "text values",
                           "nan values", "one group", "unknown groups", "binary",
                           "participants join", "participants odd", "duplicate rows"]))
    text = source.read_text()
    groups = "control,patient"
    extra = []
    if kind == "empty":
        text = ""
    elif kind == "header only":
        text = text.splitlines()[0] + "\n"
    elif kind == "missing column":
        text = "\n".join("\t".join(line.split("\t")[:2]) for line in text.splitlines()) + "\n"
    elif kind == "text values":
        text = text.replace("0.0", "x0.0", 5)
    elif kind == "nan values":
        lines = [line.split("\t") for line in text.splitlines()]
        for i, cells in enumerate(lines[1:]):
            if i % 2:
                cells[2] = str(rng.choice(["nan", "inf", "n/a", ""]))
        text = "\n".join("\t".join(cells) for cells in lines) + "\n"
    elif kind == "one group":
        text = text.replace("patient", "control")
    elif kind == "unknown groups":
        groups = str(rng.choice(["a,b", "control", "control,control", ",", ""]))
    elif kind == "binary":
        source.write_bytes(rng.bytes(300))
        return ["compare", str(source), "--groups", groups, "-o", str(table)]
    elif kind in ("participants join", "participants odd"):
        text = "\n".join("\t".join(line.split("\t")[:3]) for line in text.splitlines()) + "\n"
        participants = p["participants"]
        if kind == "participants odd":
            participants.write_text(str(rng.choice(
                ["", "participant_id\n", "id\tgroup\nsub-00\tcontrol\n",
                 "participant_id\tgroup\nsub-00\tcontrol\nsub-00\tpatient\n"])))
        extra = ["--participants", str(participants)]
    elif kind == "duplicate rows":
        text = text + "\n".join(text.splitlines()[1:4]) + "\n"
    source.write_text(text)
    return ["compare", str(source), "--groups", groups, *extra, "-o", str(table)]


def _liver_inputs(rng, p, out):
    mag, phase = p["liver_mag"], p["liver_phase"]
    argv = ["liver", "--mag", str(mag), "--phase", str(phase), "-o", str(out)]
    kind = str(rng.choice(["valid", "phase nan slab", "phase zeros", "magnitude zeros",
                           "magnitude constant", "labels", "mask", "b0", "echo times",
                           "chi slope", "calibration", "compare", "reference", "nodules"]))
    if kind == "phase nan slab":
        data, affine = _nifti(phase)
        data = data.astype(np.float32)
        data[: int(rng.integers(1, 10))] = np.nan
        _save(phase, data, affine)
    elif kind == "phase zeros":
        data, affine = _nifti(phase)
        _save(phase, np.zeros(data.shape, np.float32), affine)
    elif kind == "magnitude zeros":
        data, affine = _nifti(mag)
        _save(mag, np.zeros(data.shape, np.float32), affine)
    elif kind == "magnitude constant":
        data, affine = _nifti(mag)
        _save(mag, np.full(data.shape, 100.0, np.float32), affine)
    elif kind == "labels":
        argv += ["--labels", str(_grid_variant(rng, p["labels"], str(rng.choice(GRID_KINDS))))]
    elif kind == "mask":
        argv += ["--mask", str(_grid_variant(rng, p["local_mask"],
                                             str(rng.choice(GRID_KINDS))))]
    elif kind == "b0":
        argv += ["--b0", str(rng.choice(["0", "-3", "nan", "inf", "1e9", "abc", "", "1.5"]))]
    elif kind == "echo times":
        argv += ["--echo-times", str(rng.choice(
            ["0.0012,0.0024", "1.2,2.4,3.6,4.8,6,7.2", ",".join(["0.004"] * 6), "nan,1,2", "",
             "0.0072,0.006,0.0048,0.0036,0.0024,0.0012", "0.004,0.008,0.012"]))]
    elif kind == "chi slope":
        argv += ["--chi-slope", str(rng.choice(["nan", "-1", "0", "inf", "abc", "", "1e300"]))]
    elif kind == "calibration":
        argv += ["--calibration", str(rng.choice(["nope", "", "hernando2023_1.5T"]))]
    elif kind == "compare":
        argv += ["--labels", str(p["labels"]), "--compare", str(rng.choice(
            ["1,1", "a,b", "1", "999,1000", "", "1,2,3"]))]
    elif kind == "reference":
        argv += ["--reference", str(rng.choice(["air", "mask", "sat"]))]
    elif kind == "nodules":
        argv += ["--nodules"]
    return argv


ODD_NUMBERS = ["-1", "0", "-0", "inf", "-inf", "nan", "1e308", "1e-308", "", " ", "abc",
               "\u2603", "1,2", "0x10", "1e3000"]


def _cli_values(rng, p, out):
    value = str(rng.choice(ODD_NUMBERS))
    table = out.parent / "table.tsv"
    chi, mask = str(p["chi"]), str(p["local_mask"])
    options = [
        ("run", "--b0"), ("run", "--lam"), ("run", "--echo-times"), ("run", "--series"),
        ("invert", "--lam"), ("invert", "--b0"), ("invert", "--echo-time"),
        ("import", "--b0"), ("import", "--series"), ("bids", "--workers"),
        ("bids", "--memory-limit"), ("liver", "--b0"), ("liver", "--harmonic-order"),
        ("lesions", "--min-contrast"), ("lesions", "--max-diameter"), ("lesions", "--dead-zone"),
        ("lesions", "--edge"), ("rims", "--threshold"), ("rims", "--min-fraction"),
        ("rims", "--min-slices"), ("oximetry", "--hct"), ("oximetry", "--ya"),
        ("oximetry", "--hb"), ("oximetry", "--cbf"), ("oximetry", "--reference-ppm"),
        ("oximetry", "--min-radius"), ("oximetry", "--b0-dir"), ("roi", "--erode"),
        ("roi", "--iron-factor"), ("roi", "--reference"), ("compare", "--confidence"),
        ("path", "unicode"), ("path", "long input"), ("path", "empty output"),
        ("path", "unicode output"), ("path", "long output"),
    ]
    command, option = options[int(rng.integers(0, len(options)))]
    if command == "run":
        return _run_argv(p, out, option, value)
    if command == "invert":
        extra = ["--unit", "rad"] if option == "--echo-time" else []
        return ["invert", str(p["local"]), "--mask", mask, "--b0", "3", *extra, option, value,
                "-o", str(out)]
    if command == "import":
        return ["import", str(p["dicom"]), option, value, "-o", str(out)]
    if command == "bids":
        return ["bids", str(p["bids"]), str(out), option, value, "--no-progress", "--preset",
                "fast"]
    if command == "liver":
        return ["liver", "--mag", str(p["liver_mag"]), "--phase", str(p["liver_phase"]), option,
                value, "-o", str(out)]
    if command == "lesions":
        return ["lesions", chi, mask, option, value, "-o", str(table)]
    if command == "rims":
        return ["rims", chi, str(p["labels"]), option, value, "-o", str(table)]
    if command == "oximetry":
        return ["oximetry", chi, mask, option, value, "-o", str(table)]
    if command == "roi":
        return ["roi", chi, str(p["labels"]), option, value, "-o", str(table)]
    if command == "compare":
        return ["compare", str(p["roi_table"]), "--groups", "control,patient", option, value,
                "-o", str(table)]
    if option == "unicode":
        odd = p["root"] / "m\u00e4g \u2603 \u65e5\u672c.nii.gz"
        shutil.copy(p["mag"], odd)
        shutil.copy(p["root"] / "mag.json", odd.with_name(odd.name.replace(".nii.gz", ".json")))
        return _run_argv(p, out, mag=odd)
    if option == "long input":
        return _run_argv(p, out, mag=p["root"] / ("y" * int(rng.integers(256, 5000))))
    if option == "empty output":
        return ["invert", str(p["local"]), "--mask", mask, "--b0", "3", "-o", ""]
    if option == "unicode output":
        return ["roi", chi, str(p["labels"]), "-o", str(out.parent / "r\u00e9sultat \u2603.tsv")]
    return ["roi", chi, str(p["labels"]), "-o",
            str(out.parent / ("z" * int(rng.integers(200, 300))) / "t.tsv")]


MUTATIONS = {
    "damaged bytes": (_damaged_bytes, 1.0),
    "odd phase values": (_odd_phase_values, 2.0),
    "odd magnitude": (_odd_magnitude, 1.0),
    "odd affine": (_odd_affine, 0.7),
    "bad sidecar": (_bad_sidecar, 1.5),
    "odd values": (_odd_values, 2.0),
    "awkward output": (_awkward_output, 1.2),
    "valid": (_valid, 0.4),
    "dicom damage": (_dicom_damage, 2.0),
    "bids tree damage": (_bids_damage, 0.8),
    "liver inputs": (_liver_inputs, 0.6),
    "analysis inputs": (_analysis_inputs, 2.0),
    "cli values": (_cli_values, 2.0),
}


# ---------------------------------------------------------------------------------------

def _checksums(root: Path) -> dict:
    sums = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                sums[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                sums[path] = "unreadable"
    return sums


def _changed_inputs(before: dict, after: dict) -> list[Path]:
    """Input files that differ or vanished, and new files inside the inputs other than a
    BIDS ``derivatives/`` folder."""
    changed = [p for p in before if after.get(p) != before[p]]
    changed += [p for p in after if p not in before and "derivatives" not in p.parts]
    return changed


def _finite_nonzero(path: Path) -> str:
    """'' when the NIfTI at ``path`` is finite and not zero everywhere, else what is wrong."""
    if not path.exists():
        return f"{path.name} missing"
    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        return f"{path.name} has NaN/Inf"
    if not np.any(data):
        return f"{path.name} all zero"
    return ""


def _flat_unflagged(chi_file: Path, provenance: Path) -> str:
    """'' unless χ has no contrast (1-99 % range under 0.02 ppm where it is not zero) and
    no CHI_FLAT warning says so."""
    chi = np.asarray(nib.load(str(chi_file)).dataobj, dtype=np.float64)
    inside = chi[chi != 0]
    if inside.size < 100:
        return ""
    low, high = np.percentile(inside, [1, 99])
    if high - low >= 0.02 or "CHI_FLAT" in _warning_codes(provenance):
        return ""
    return f"{chi_file.name} flat ({high - low:.2g} ppm) without a warning"


def _chi_is_meaningful(out: Path) -> bool:
    chi_file = out if out.name.endswith(".nii.gz") else out / "chi.nii.gz"
    return _finite_nonzero(chi_file) == ""


def _warning_codes(provenance: Path) -> list[str]:
    try:
        meta = json.loads(provenance.read_text())
    except (OSError, ValueError):
        return []
    return [str(w.get("code", "")) if isinstance(w, dict) else str(w)
            for w in meta.get("warnings", []) or []]


def _table_is_clean(tsv: Path) -> str:
    if not tsv.exists():
        return f"{tsv.name} missing"
    for line in tsv.read_text().splitlines()[1:]:
        cells = {c.strip().lower() for c in line.split("\t")}
        if cells & {"nan", "inf", "-inf"}:
            return f"{tsv.name}: NaN/Inf cell in: {line[:80]}"
    sidecar = tsv.with_suffix(".json")  # the analysis commands' summary (liver: qsmkit.json)
    if not sidecar.exists():
        return ""
    try:  # NaN stands for "not measurable" in qsmkit's JSON (Python's dialect); Inf never
        json.loads(sidecar.read_text(), parse_constant=lambda c: float("nan") if c == "NaN"
                   else _refuse(c))
    except (OSError, ValueError) as err:
        return f"{sidecar.name}: {err}"[:120]
    return ""


def _refuse(constant):
    raise ValueError(f"{constant} in JSON")


def _output_of(argv: list[str]) -> Path | None:
    if "-o" in argv:
        return Path(argv[argv.index("-o") + 1])
    if argv[0] == "bids":
        positional = [a for a in argv[1:3] if not a.startswith("--")]
        return Path(positional[1]) if len(positional) > 1 else \
            Path(positional[0]) / "derivatives" / "qsmkit"
    return None


def judge_success(argv: list[str], base_paths: dict) -> str:
    """'' when a command that exited 0 wrote a sound result, else what is wrong with it."""
    command, out = argv[0], _output_of(argv)
    if command == "import" and "--list" in argv:
        return ""
    if out is None:
        return "no output named"
    if command == "run":
        problem = _finite_nonzero(out / "chi.nii.gz")
        if problem or not (out / "mask.nii.gz").exists():
            return problem or "mask.nii.gz missing"
        problem = _flat_unflagged(out / "chi.nii.gz", out / "qsmkit.json")
        if problem:
            return problem
        voxels = int(np.count_nonzero(np.asarray(nib.load(str(out / "mask.nii.gz")).dataobj)))
        flagged = any("MASK" in code.upper() for code in _warning_codes(out / "qsmkit.json"))
        if voxels < 0.3 * base_paths["mask_voxels"] and not flagged:
            return f"mask collapsed to {voxels} voxels without a warning"
        return ""
    if command == "invert":
        if not _chi_is_meaningful(out):
            return "chi missing, NaN/Inf or all zero"
        chi_file = out if out.name.endswith(".nii.gz") else out / "chi.nii.gz"
        provenance = (out.parent if out.name.endswith(".nii.gz") else out) / "qsmkit.json"
        return _flat_unflagged(chi_file, provenance)
    if command == "import":
        for name in ("mag.nii.gz", "phase.nii.gz", "qsmkit.json", "acquisition.json"):
            if not (out / name).exists():
                return f"{name} missing"
        phase = np.asarray(nib.load(str(out / "phase.nii.gz")).dataobj, dtype=np.float64)
        if not np.all(np.isfinite(phase)) or np.abs(phase).max() > np.pi + 1e-4:
            return "phase not finite radians"
        return _finite_nonzero(out / "mag.nii.gz")
    if command == "bids":
        maps = sorted(out.rglob("*_Chimap.nii.gz"))
        if not maps:
            return "no _Chimap written"
        for chi_map in maps:
            prefix = chi_map.name.split("_Chimap")[0]
            provenance = chi_map.parent.parent / "qsmkit" / prefix / "qsmkit.json"
            problem = _finite_nonzero(chi_map) or _flat_unflagged(chi_map, provenance)
            if problem:
                return problem
        return ""
    if command == "liver":
        for name in ("chi.nii.gz", "pdff.nii.gz", "r2star.nii.gz"):
            problem = _finite_nonzero(out / name)
            if problem:
                return problem
        return _table_is_clean(out / "liver.tsv")
    if command in ("lesions", "rims", "oximetry", "roi", "compare"):
        return _table_is_clean(out)
    return ""


INTERNAL = ("internal error", "Traceback")


def _judge_bids_failure(text: str) -> str:
    """'' when ``bids`` exited 1 because subjects failed on bad input (each reported in one
    line), else the line that shows an internal error."""
    failed = [line for line in text.splitlines() if "  failed  " in line]
    if not failed:
        return "exit 1 without a failed subject"
    for line in failed:
        message = line.split("  failed  ", 1)[1].strip().split(None, 1)[-1]
        first = message.split(":", 1)[0]
        if first.endswith(("Error", "Exception")) or first in ("KeyError",):
            return line.strip()[:200]
    return ""


def run_case(seed: int, base_paths: dict, work: Path, timeout_s: int = 120,
             only=None) -> tuple[str, str, str, str]:
    """One seeded case on a copy of ``base_paths`` (from :func:`write_base`): (mutation name,
    command, outcome, detail). ``only`` restricts the mutations to these names."""
    from qsmkit.cli.main import main

    rng = np.random.default_rng(seed)
    names = [n for n in MUTATIONS if not only or n in only]
    weights = np.array([MUTATIONS[n][1] for n in names])
    name = str(rng.choice(names, p=weights / weights.sum()))
    case = work / f"case{seed}"
    base = base_paths["root"]
    shutil.copytree(base, case / "in", symlinks=True)
    paths = {k: (case / "in" / Path(v).relative_to(base) if isinstance(v, Path) else v)
             for k, v in base_paths.items()}
    out = case / "out" / "result"
    (case / "out").mkdir()
    (case / "cwd").mkdir()
    argv = MUTATIONS[name][0](rng, paths, out)
    command = argv[0]
    target = _output_of(argv)
    existed = _exists(target)
    before = _checksums(case / "in")
    stdout, stderr = io.StringIO(), io.StringIO()
    cwd = Path.cwd()
    os.chdir(case / "cwd")  # a relative or empty output lands here, never in the repository
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            code = main(argv)
    except _Timeout:
        return name, command, "hang", " ".join(argv[:2])
    except SystemExit as exit_:  # argparse: usage errors exit 2 with one message
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException as err:  # noqa: BLE001 - that is the finding
        return name, command, "traceback", f"{type(err).__name__}: {err}"[:200]
    finally:
        signal.alarm(0)
        os.chdir(cwd)
    text = stderr.getvalue()
    changed = _changed_inputs(before, _checksums(case / "in"))
    if changed:
        return name, command, "input changed", ", ".join(
            str(p.relative_to(case)) for p in changed[:3])
    staging = [p for p in case.rglob("*.partial-*")]
    if staging:
        return name, command, "half-written", str(staging[0].relative_to(case))[:200]
    if any(mark in text for mark in INTERNAL):
        return name, command, "traceback", [line for line in text.splitlines()
                                            if any(m in line for m in INTERNAL)][0][:200]
    if code == 0:
        if any((case / "cwd").iterdir()) and target is not None and str(target) in ("", "."):
            return name, command, "input changed", "wrote into the working folder"
        problem = judge_success(argv, base_paths)
        return (name, command, "good run", "") if not problem else (
            name, command, "silent bad map", f"{' '.join(argv[:2])}: {problem}"[:200])
    if code == 1 and command == "bids":
        problem = _judge_bids_failure(stdout.getvalue())
        return (name, command, "clean error", "a subject failed on bad input") if not problem \
            else (name, command, "traceback", problem)
    if code == 2:
        errors = [line for line in text.splitlines() if ": error:" in line]
        if not errors:
            return name, command, "traceback", (text.strip().splitlines()
                                                or ["no message"])[-1][:200]
        if not existed and _exists(target) and (
                target.is_file() or (target.is_dir() and any(target.iterdir())
                                     and not (target / "qsmkit.json").exists()
                                     and command != "bids")):
            return name, command, "half-written", str(target)[:200]
        if NUMPY_REPR.search(text):
            return name, command, "odd message", errors[-1][:200]
        return name, command, "clean error", errors[-1][:200]
    return name, command, "traceback", (text.strip().splitlines() or [f"exit {code}"])[-1][:200]


def _exists(path) -> bool:
    """``path.exists()``, False for no path or one the file system refuses (too long)."""
    try:
        return path is not None and path.exists()
    except OSError:
        return False


def _start_scheduler():
    """A local Dask cluster for the ``bids`` cases; returns (address, cluster)."""
    import logging

    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    return cluster.scheduler_address, cluster


def _init_worker(scheduler):
    global SCHEDULER
    SCHEDULER = scheduler


def _one(args):
    seed, base_paths, tmp, only = args
    start = time.perf_counter()
    try:  # generous: the machine may be shared; a true hang never ends
        row = run_case(seed, base_paths, Path(tmp), timeout_s=600, only=only)
    except Exception as err:  # noqa: BLE001 - this script's own failure, reported as such
        row = ("?", "?", "harness error", f"{type(err).__name__}: {err}"[:200])
    finally:
        shutil.rmtree(Path(tmp) / f"case{seed}", ignore_errors=True)
    return (*row, seed, round(time.perf_counter() - start, 1))


def campaign(n_cases: int, seed: int, *, progress: bool = True, jobs: int = 1, only=None,
             log=None) -> list[tuple]:
    """Run ``n_cases`` seeded cases; ``log``: a file that gets one JSON line per case."""
    global SCHEDULER
    rows = []
    with tempfile.TemporaryDirectory(prefix="qsmkit-fuzz-") as tmp:
        base_paths = write_base(Path(tmp) / "base")
        SCHEDULER, cluster = _start_scheduler()
        seeds = [seed * 100003 + i for i in range(n_cases)]
        try:
            if jobs > 1:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_init_worker, initargs=(SCHEDULER,))
                with pool:
                    from concurrent.futures import as_completed

                    futures = [pool.submit(_one, (s, base_paths, tmp, only)) for s in seeds]
                    for i, future in enumerate(as_completed(futures)):
                        rows.append(future.result())
                        _report(i, rows[-1], progress, log)
            else:
                for i, s in enumerate(seeds):
                    rows.append(_one((s, base_paths, tmp, only)))
                    _report(i, rows[-1], progress, log)
        finally:
            cluster.close()
            SCHEDULER = None
    return rows


def _report(i, row, progress, log=None):
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps([i, *row]) + "\n")
    if progress and row[2] not in GOOD:
        print(f"case {i}: {row[0]}: {row[1]}: {row[2]}: {row[3]}", file=sys.stderr, flush=True)
    elif progress and i % 50 == 49:
        print(f"{i + 1} cases", file=sys.stderr, flush=True)


def format_table(rows, key: int = 0, title: str = "mutation") -> str:
    counts = Counter((r[key], r[2]) for r in rows)
    order = list(MUTATIONS) if key == 0 else sorted({r[key] for r in rows})
    lines = [f"| {title} | cases | " + " | ".join(OUTCOMES) + " |",
             "|---" * (len(OUTCOMES) + 2) + "|"]
    for name in order:
        n = sum(counts.get((name, o), 0) for o in OUTCOMES)
        if n:
            lines.append(f"| {name} | {n} | " + " | ".join(
                str(counts.get((name, o), 0)) for o in OUTCOMES) + " |")
    totals = Counter(r[2] for r in rows)
    lines.append(f"| **all** | **{len(rows)}** | " + " | ".join(
        f"**{totals.get(o, 0)}**" for o in OUTCOMES) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="cases run in parallel processes")
    parser.add_argument("--only", action="append", choices=list(MUTATIONS),
                        help="only this mutation (repeatable)")
    parser.add_argument("--log", help="append one JSON line per case to this file")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = campaign(args.cases, args.seed, jobs=args.jobs, only=args.only, log=args.log)
    minutes = (time.perf_counter() - start) / 60
    tables = (format_table(rows) + "\n\n" + format_table(rows, key=1, title="command")
              + f"\n\n{len(rows)} cases, seed {args.seed}, {args.jobs} job(s), "
              f"{minutes:.1f} minutes")
    print(tables)
    if args.markdown:
        Path(args.markdown).write_text(tables + "\n")
    return 0 if all(r[2] in GOOD for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

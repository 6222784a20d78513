"""Seeded fuzz campaign of qsmkit's promises about bad input (issue 16).

    python benchmarks/fuzz.py [--cases 1000] [--seed 0] [--markdown table.md]

Each case starts from a small valid acquisition (qsmkit's head phantom at 4 mm, 3 echoes, as
NIfTI with sidecars, a local field with its mask, and a one-subject BIDS dataset), applies one
seeded mutation (a damaged or odd NIfTI, a bad JSON sidecar, an odd command-line value or an
awkward output place) and runs one command (``run``, ``invert``, ``bids``) in this process.
Every case ends in exactly one outcome:

- ``clean error``: exit 2 with a one-line message and no traceback;
- ``good run``: exit 0 with a complete output whose chi is finite and not zero everywhere;
- ``traceback``: an exception escaped, or exit 1 (an internal error);
- ``silent bad map``: exit 0 with chi missing, NaN/Inf, or all zero;
- ``input changed``: a byte of an input file differs afterwards;
- ``half-written``: a staging folder left behind, or a failed command left an output folder
  without its ``qsmkit.json``;
- ``hang``: no answer within the time limit.

The promises hold when every outcome is ``clean error`` or ``good run``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

GOOD = ("clean error", "good run")
OUTCOMES = ("clean error", "good run", "traceback", "silent bad map", "input changed",
            "half-written", "hang")
TES = (0.004, 0.008, 0.012)


class _Timeout(Exception):
    pass


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
    assert np.allclose(b0_dir_from_affine(acq.affine), acq.b0_dir)
    return {"root": folder, "mag": folder / "mag.nii.gz", "phase": folder / "phase.nii.gz",
            "local": folder / "local.nii.gz", "local_mask": folder / "local_mask.nii.gz",
            "bids": folder / "bids"}


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
            str(out), "--no-report", *extra]


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


MUTATIONS = {
    "damaged bytes": (_damaged_bytes, 1.0),
    "odd phase values": (_odd_phase_values, 2.0),
    "odd magnitude": (_odd_magnitude, 1.0),
    "odd affine": (_odd_affine, 0.7),
    "bad sidecar": (_bad_sidecar, 1.5),
    "odd values": (_odd_values, 2.0),
    "awkward output": (_awkward_output, 1.2),
    "valid": (_valid, 0.4),
}


# ---------------------------------------------------------------------------------------

def _checksums(root: Path, skip: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and skip not in p.parents}


def _chi_is_meaningful(out: Path) -> bool:
    chi_file = out if out.name.endswith(".nii.gz") else out / "chi.nii.gz"
    if not chi_file.exists():
        return False
    chi = np.asarray(nib.load(str(chi_file)).dataobj, dtype=np.float64)
    return bool(np.all(np.isfinite(chi)) and np.any(chi != 0))


def run_case(seed: int, base_paths: dict, work: Path,
             timeout_s: int = 120) -> tuple[str, str, str]:
    """One seeded case on a copy of ``base_paths`` (from :func:`write_base`): (mutation name,
    outcome, detail)."""
    from qsmkit.cli.main import main

    rng = np.random.default_rng(seed)
    names = list(MUTATIONS)
    weights = np.array([MUTATIONS[n][1] for n in names])
    name = str(rng.choice(names, p=weights / weights.sum()))
    case = work / f"case{seed}"
    base = base_paths["root"]
    shutil.copytree(base, case / "in")
    paths = {k: case / "in" / Path(v).relative_to(base) for k, v in base_paths.items()}
    out = case / "out" / "result"
    (case / "out").mkdir()
    argv = MUTATIONS[name][0](rng, paths, out)
    before = _checksums(case / "in", case / "out")
    stderr = io.StringIO()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except _Timeout:
        return name, "hang", " ".join(argv[:2])
    except SystemExit as exit_:  # argparse: usage errors exit 2 with one message
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException as err:  # noqa: BLE001 - that is the finding
        return name, "traceback", f"{type(err).__name__}: {err}"[:200]
    finally:
        signal.alarm(0)
    text = stderr.getvalue()
    after = _checksums(case / "in", case / "out")
    if after != before:
        changed = [str(p.relative_to(case)) for p in after if after.get(p) != before.get(p)]
        return name, "input changed", ", ".join(changed[:3])
    staging = list(case.rglob("*.partial-*"))
    if staging:
        return name, "half-written", str(staging[0].relative_to(case))
    if code == 0:
        target = out
        if argv[0] == "bids":
            return name, "good run", ""
        return (name, "good run", "") if _chi_is_meaningful(target) else (
            name, "silent bad map", " ".join(argv[:2]))
    if code == 2:
        errors = [line for line in text.splitlines() if ": error:" in line]
        if "Traceback" in text or not errors:
            return name, "traceback", (text.strip().splitlines() or ["no message"])[-1][:200]
        if out.exists() and out.is_dir() and any(out.iterdir()) and not (
                out / "qsmkit.json").exists() and name != "awkward output":
            return name, "half-written", str(out)
        return name, "clean error", errors[-1][:200]
    return name, "traceback", (text.strip().splitlines() or [f"exit {code}"])[-1][:200]


def campaign(n_cases: int, seed: int, *, progress: bool = True) -> list[tuple]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="qsmkit-fuzz-") as tmp:
        base_paths = write_base(Path(tmp) / "base")
        for i in range(n_cases):
            row = run_case(seed * 100003 + i, base_paths, Path(tmp))
            shutil.rmtree(Path(tmp) / f"case{seed * 100003 + i}", ignore_errors=True)
            rows.append(row)
            if progress and row[1] not in GOOD:
                print(f"case {i}: {row[0]}: {row[1]}: {row[2]}", file=sys.stderr, flush=True)
    return rows


def format_table(rows) -> str:
    counts = Counter((r[0], r[1]) for r in rows)
    lines = ["| mutation | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|"]
    for name in MUTATIONS:
        lines.append(f"| {name} | " + " | ".join(str(counts.get((name, o), 0))
                                                for o in OUTCOMES) + " |")
    totals = Counter(r[1] for r in rows)
    lines.append("| **all** | " + " | ".join(f"**{totals.get(o, 0)}**" for o in OUTCOMES)
                 + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    rows = campaign(args.cases, args.seed)
    table = format_table(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0 if all(r[1] in GOOD for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

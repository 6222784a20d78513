"""MS rims on the independent MS head phantoms (tests/independent_lesions.py) through the
command line, as a user runs it: ``qsmkit run`` with the default preset, then
``qsmkit rims RUN/chi.nii.gz LESIONS`` (which re-inverts the saved local field with iLSQR when
chi came from a TV-type inversion), against the same with ``--use-given-chi`` (the default
whtv map as is) and ``qsmkit run --preset rims`` (iLSQR reconstruction throughout).

    python benchmarks/bench_rims_independent.py [--seeds 0,10,20,30,40,50]

Prints one row per geometry and noise seed: lesions right out of 6 (rim+ found / 3, rim-
kept / 3) for each route, and the seconds ``qsmkit rims`` took. The figures of
docs/applications.md (MS rims, validation of issue 15) come from this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from independent_lesions import make_lesion_head  # noqa: E402
from qsmkit.cli.main import main as qsmkit  # noqa: E402


def _reconstruct(head, folder: Path, preset: str) -> Path:
    """``qsmkit run`` on the head's echoes with its brain mask; returns the run folder."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("mag", head.magnitude), ("phase", head.phase_rad),
                       ("mask", head.brain_mask.astype(np.uint8))):
        nib.save(nib.Nifti1Image(data, head.affine), folder / f"{name}.nii.gz")
    run = folder / "run"
    assert qsmkit(["run", "--mag", str(folder / "mag.nii.gz"), "--phase",
                   str(folder / "phase.nii.gz"), "--echo-times",
                   ",".join(str(t) for t in head.echo_times_s), "--b0", str(head.b0_tesla),
                   "--mask", str(folder / "mask.nii.gz"), "-o", str(run), "--no-report",
                   "--preset", preset]) == 0
    return run

GEOMETRIES = (
    # name, shape, voxel (mm), tilt (deg), seed offset (as bench_lesions_independent)
    ("A 1x1x1.5 mm, 20 deg", (80, 80, 48), (1.0, 1.0, 1.5), 20.0, 0),
    ("B 0.9x0.9x2 mm, 35 deg", (88, 88, 36), (0.9, 0.9, 2.0), 35.0, 1),
    ("C 1.2 mm iso, 0 deg", (66, 66, 60), (1.2, 1.2, 1.2), 0.0, 2),
)


def _score(table: Path, head) -> tuple[int, int, int]:
    rows = json.loads(table.with_suffix(".json").read_text())["rows"]
    got = {r["id"]: r["class"] for r in rows}
    pos = sum(got[m["id"]] == "rim+" for m in head.ms if m["kind"] == "rim+")
    neg = sum(got[m["id"]] == "rim-" for m in head.ms if m["kind"] == "rim-")
    return pos + neg, pos, neg


def run_case(shape, voxel, tilt, seed, root: Path) -> dict:
    import nibabel as nib

    head = make_lesion_head("ms", shape=shape, voxel_size_mm=voxel, tilt_deg=tilt, seed=seed)
    nib.save(nib.Nifti1Image(head.ms_labels.astype(np.int16), head.affine),
             root / "lesions.nii.gz")
    nib.save(nib.Nifti1Image(head.brain_mask.astype(np.uint8), head.affine),
             root / "brain.nii.gz")
    out = {}
    for route, preset, extra in (("default", "default", []),
                                 ("given", "default", ["--use-given-chi"]),
                                 ("rims", "rims", [])):
        run = root / preset / "run"
        if not run.exists():
            _reconstruct(head, root / preset, preset)
        table = root / f"rims_{route}.tsv"
        start = time.perf_counter()
        assert qsmkit(["rims", str(run / "chi.nii.gz"), str(root / "lesions.nii.gz"),
                       "--mask", str(root / "brain.nii.gz"), "-o", str(table), *extra]) == 0
        out[route] = (*_score(table, head), time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="noise seeds added to each geometry's "
                        "own seed, comma-separated (default 0)")
    parser.add_argument("--geometries", default="ABC", help="which of A, B, C (default ABC)")
    args = parser.parse_args()
    totals = {}
    lines = []
    for name, shape, voxel, tilt, offset in GEOMETRIES:
        if name[0] not in args.geometries:
            continue
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_case(shape, voxel, tilt, seed + offset, Path(tmp))
            cells = []
            for route in ("default", "given", "rims"):
                ok, pos, neg, seconds = r[route]
                t = totals.setdefault(route, [0, 0])
                t[0], t[1] = t[0] + ok, t[1] + 6
                cells.append(f"{route} {ok}/6 (rim+ {pos}/3, rim- {neg}/3, {seconds:.1f} s)")
            lines.append(f"{name}, seed {seed + offset}: " + "; ".join(cells))
            print(lines[-1], flush=True)
    print("all: " + "; ".join(f"{k} {v[0]}/{v[1]}" for k, v in totals.items()))


if __name__ == "__main__":
    main()

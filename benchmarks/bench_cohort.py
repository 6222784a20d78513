"""Cohort throughput: subjects per minute with 1 and 2 local Dask workers.

    python benchmarks/bench_cohort.py [--subjects 6] [--shape 96] [--voxel 2.0]
        [--preset default] [--workers 1,2]

Simulates a BIDS dataset of head phantoms (5 echoes, 3 T, SNR 100), then runs
``qsmkit.cohort.run_cohort`` once per worker count into a fresh derivatives folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


def make_dataset(root: Path, n: int, shape: int, voxel: float) -> None:
    from qsmkit.io.bids import write_megre_subject
    from qsmkit.phantom import head_phantom, simulate_gre

    for i in range(n):
        ph = head_phantom(shape=(shape,) * 3, voxel_size=(voxel,) * 3, seed=i)
        sim = simulate_gre(ph, echo_times_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0,
                           snr=100.0, seed=i)
        write_megre_subject(root, f"{i + 1:02d}", sim.magnitude, sim.phase, sim.affine,
                            sim.echo_times_s, sim.b0_tesla)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--shape", type=int, default=96)
    parser.add_argument("--voxel", type=float, default=2.0)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args(argv)
    from qsmkit.cohort import run_cohort

    work = Path(tempfile.mkdtemp(prefix="qsmkit-bench-cohort-"))
    try:
        make_dataset(work / "ds", args.subjects, args.shape, args.voxel)
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            out = work / f"out-{workers}"
            start = time.perf_counter()
            summary = run_cohort(work / "ds", out, preset=args.preset, workers=workers,
                                 progress=False)
            seconds = time.perf_counter() - start
            done = summary.counts()["done"]
            rows.append((workers, done, seconds, 60.0 * done / seconds))
        print(f"{args.subjects} subjects, {args.shape}^3 at {args.voxel} mm, 5 echoes, "
              f"preset {args.preset}")
        print("| workers | subjects done | wall s | subjects/min |\n|---|---|---|---|")
        for workers, done, seconds, rate in rows:
            print(f"| {workers} | {done} | {seconds:.1f} | {rate:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy, time and peak memory of every reconstruction method on the head phantom.

Default case (issue 3): 160^3 at 1 mm, 5 echoes (4-20 ms), SNR 100, 3 T, B0 tilted 15 deg.
Each case runs in a fresh process so its peak resident memory is its own.

    python benchmarks/bench_methods.py [--shape 160] [--voxel 1.0] [--tilt 15] [--only tv,tkd]
        [--markdown docs/benchmark_table.md]

Prints a table: stage, method, NRMSE %, HFEN %, XSIM, DGM slope, wall s, peak MB.
Inversions are scored on the TRUE local field (isolating the inversion); background removal
by the local field it returns (NRMSE % in its mask); pipelines from raw wrapped phase.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

import numpy as np


def _case(shape, voxel, tilt_deg, seed=0):
    from qsmkit.phantom import head_phantom, simulate_gre

    tilt = np.radians(tilt_deg)
    b0_dir = (np.sin(tilt), 0.0, np.cos(tilt))
    ph = head_phantom(shape=(shape,) * 3, voxel_size=(voxel,) * 3, seed=seed)
    sim = simulate_gre(ph, echo_times_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0,
                       b0_dir=b0_dir, snr=100.0, seed=seed)
    return ph, sim


def _scores(chi, ph, mask, voxel_size):
    from qsmkit.demo import score_against_phantom

    s = score_against_phantom(chi, ph, mask, voxel_size)
    return {k: s.get(k) for k in ("nrmse", "hfen", "xsim", "dgm_slope")}


def _worker(task, queue):
    stage, method, shape, voxel, tilt = task
    ph, sim = _case(shape, voxel, tilt)
    start = time.perf_counter()
    if stage == "invert":
        from qsmkit.inversion import METHODS

        chi = METHODS[method](sim.local_field_hz, sim.mask, sim.voxel_size, b0_dir=sim.b0_dir,
                              b0_tesla=sim.b0_tesla)
        seconds = time.perf_counter() - start
        row = _scores(chi, ph, sim.mask, sim.voxel_size)
    elif stage == "bgremove":
        from qsmkit.bgremove import METHODS

        local = METHODS[method](sim.field_hz, sim.mask, sim.voxel_size, b0_dir=sim.b0_dir)
        seconds = time.perf_counter() - start
        m = local.mask
        truth = sim.local_field_hz
        err = (local.field_hz - truth)[m] - (local.field_hz - truth)[m].mean()
        row = {"nrmse": 100 * np.linalg.norm(err) / np.linalg.norm(truth[m] - truth[m].mean()),
               "mask_kept": 100 * m.sum() / sim.mask.sum()}
    else:
        from qsmkit.pipeline import QSMConfig, run_qsm

        result = run_qsm(sim.acquisition, QSMConfig.from_preset(method))
        seconds = time.perf_counter() - start
        row = _scores(result.chi_ppm, ph, result.local_mask, sim.voxel_size)
        row["stages"] = result.timings_s
    row.update(stage=stage, method=method, seconds=seconds,
               peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put(row)


def run_case(task):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(task, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"stage": task[0], "method": task[1], "error": f"exit {proc.exitcode}"}
    return queue.get()


def format_table(rows) -> str:
    head = "| stage | method | NRMSE % | HFEN % | XSIM | DGM slope | time s | peak MB |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['stage']} | {r['method']} | failed: {r['error']} | | | | | |")
            continue

        def f(key, fmt):
            return format(r[key], fmt) if key in r and r[key] is not None else "–"

        lines.append(f"| {r['stage']} | {r['method']} | {f('nrmse', '.1f')} | {f('hfen', '.1f')} "
                     f"| {f('xsim', '.3f')} | {f('dgm_slope', '.2f')} | {f('seconds', '.1f')} "
                     f"| {f('peak_mb', '.0f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=160)
    parser.add_argument("--voxel", type=float, default=1.0)
    parser.add_argument("--tilt", type=float, default=15.0)
    parser.add_argument("--only", help="comma-separated method names")
    parser.add_argument("--stages", default="pipeline,invert,bgremove")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    from qsmkit.bgremove import METHODS as BG
    from qsmkit.inversion import METHODS as INV
    from qsmkit.pipeline import PRESETS

    wanted = set(args.only.split(",")) if args.only else None
    tasks = []
    for stage, names in (("pipeline", PRESETS), ("invert", INV), ("bgremove", BG)):
        if stage in args.stages.split(","):
            tasks += [(stage, n, args.shape, args.voxel, args.tilt) for n in names
                      if wanted is None or n in wanted]
    rows = []
    for task in tasks:
        row = run_case(task)
        rows.append(row)
        print(f"{task[0]:>9} {task[1]:<10} " + ", ".join(
            f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)), flush=True)
    table = format_table(rows)
    header = (f"{args.shape}^3 at {args.voxel} mm, 5 echoes 4-20 ms, SNR 100, 3 T, "
              f"B0 tilted {args.tilt} deg; {mp.cpu_count()} cores")
    print("\n" + header + "\n\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

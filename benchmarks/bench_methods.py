"""Accuracy, time and peak memory of every reconstruction method on the head phantom.

Default case (issue 3): 160^3 at 1 mm, 5 echoes (4-20 ms), SNR 100, 3 T, B0 tilted 15 deg.

    python benchmarks/bench_methods.py [--shape 160] [--voxel 1.0] [--tilt 15] [--only tv,tkd]
        [--stages pipeline,invert,bgremove] [--markdown table.md]

The phantom is simulated once and saved; each method then runs in a fresh process that loads
the arrays, so "peak MB" is the resident memory of that method alone (plus the Python/NumPy
baseline of about 100 MB and the loaded inputs). Scores are computed in the parent:
inversions on the TRUE local field (isolating the inversion), background removal by the
error of the local field it returns (in its own mask), pipelines from raw wrapped phase.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ECHO_TIMES_S = (0.004, 0.008, 0.012, 0.016, 0.020)


def simulate(shape, voxel, tilt_deg, seed=0):
    from qsmkit.phantom import head_phantom, simulate_gre

    tilt = np.radians(tilt_deg)
    b0_dir = (np.sin(tilt), 0.0, np.cos(tilt))
    ph = head_phantom(shape=(shape,) * 3, voxel_size=(voxel,) * 3, seed=seed)
    sim = simulate_gre(ph, echo_times_s=ECHO_TIMES_S, b0_tesla=3.0, b0_dir=b0_dir, snr=100.0,
                       seed=seed)
    return ph, sim


def _worker(stage, method, data_path, out_path, queue):
    data = np.load(data_path)
    voxel_size = tuple(data["voxel_size"])
    b0_dir = data["b0_dir"]
    start = time.perf_counter()
    extra = {}
    if stage == "invert":
        from qsmkit.inversion import METHODS

        chi = METHODS[method](data["local_field_hz"], data["mask"], voxel_size, b0_dir=b0_dir,
                              b0_tesla=3.0)
        mask = data["mask"]
    elif stage == "bgremove":
        from qsmkit.bgremove import METHODS

        local = METHODS[method](data["field_hz"], data["mask"], voxel_size, b0_dir=b0_dir)
        chi, mask = local.field_hz, local.mask
    else:
        from qsmkit.acquisition import Acquisition
        from qsmkit.pipeline import QSMConfig, run_qsm

        acq = Acquisition(data["magnitude"], data["phase"], data["echo_times_s"], 3.0,
                          data["affine"])
        result = run_qsm(acq, QSMConfig.from_preset(method))
        chi, mask = result.chi_ppm, result.local_mask
        extra = {"stages": result.timings_s}
    seconds = time.perf_counter() - start
    np.savez(out_path, chi=chi, mask=mask)
    queue.put({"seconds": seconds, **extra, "peak_mb": peak_resident_mb()})


def peak_resident_mb() -> float:
    """Peak resident memory of this process (MB). VmHWM belongs to the current address space;
    ru_maxrss is not used because Linux carries it over from the forking parent across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(stage, method, data_path, workdir):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    out_path = Path(workdir) / f"{stage}-{method}.npz"
    proc = ctx.Process(target=_worker, args=(stage, method, data_path, out_path, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"stage": stage, "method": method, "error": f"exit {proc.exitcode}"}, None
    row = {"stage": stage, "method": method, **queue.get()}
    out = np.load(out_path)
    return row, (out["chi"], out["mask"])


def score(stage, ph, sim, chi, mask):
    from qsmkit.demo import score_against_phantom

    if stage == "bgremove":
        region = mask & ph.brain_mask
        truth = sim.local_field_hz[region] - sim.local_field_hz[region].mean()
        err = chi[region] - chi[region].mean() - truth
        return {"nrmse": float(100 * np.linalg.norm(err) / np.linalg.norm(truth)),
                "coverage": float(100 * region.sum() / ph.brain_mask.sum())}
    s = score_against_phantom(chi, ph, mask, sim.voxel_size)
    return {k: float(s[k]) for k in ("nrmse", "hfen", "xsim", "dgm_slope") if k in s} | {
        "coverage": float(s["brain_coverage_percent"])}


def format_table(rows) -> str:
    head = ("| stage | method | NRMSE % | HFEN % | XSIM | DGM slope | brain covered % "
            "| time s | peak MB |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['stage']} | {r['method']} | failed: {r['error']} |||||||")
            continue

        def f(key, fmt, r=r):
            value = r.get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "–"

        lines.append(f"| {r['stage']} | {r['method']} | {f('nrmse', '.1f')} | {f('hfen', '.1f')} "
                     f"| {f('xsim', '.3f')} | {f('dgm_slope', '.2f')} | {f('coverage', '.0f')} "
                     f"| {f('seconds', '.2f')} | {f('peak_mb', '.0f')} |")
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

    ph, sim = simulate(args.shape, args.voxel, args.tilt)
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="qsmkit-bench-") as workdir:
        data_path = Path(workdir) / "case.npz"
        np.savez(data_path, magnitude=sim.magnitude, phase=sim.phase, field_hz=sim.field_hz,
                 local_field_hz=sim.local_field_hz, mask=sim.mask, affine=sim.affine,
                 echo_times_s=sim.echo_times_s, voxel_size=np.asarray(sim.voxel_size),
                 b0_dir=np.asarray(sim.b0_dir))
        for stage, names in (("pipeline", PRESETS), ("invert", INV), ("bgremove", BG)):
            if stage not in args.stages.split(","):
                continue
            for name in names:
                if wanted is not None and name not in wanted:
                    continue
                row, out = run_case(stage, name, data_path, workdir)
                if out is not None:
                    row.update(score(stage, ph, sim, *out))
                rows.append(row)
                print(f"{stage:>9} {name:<10} " + ", ".join(
                    f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float)), flush=True)
    header = (f"{args.shape}^3 at {args.voxel} mm, 5 echoes 4-20 ms, SNR 100, 3 T, "
              f"B0 tilted {args.tilt} deg; {mp.cpu_count()} cores")
    table = format_table(rows)
    print("\n" + header + "\n\n" + table)
    if args.markdown:
        Path(args.markdown).write_text(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

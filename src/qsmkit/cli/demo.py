"""``qsmkit demo``: head phantom -> full pipeline -> analyses -> scores -> HTML report."""

from __future__ import annotations

import time
from pathlib import Path

from qsmkit.cli.common import add_force, parse_vector3
from qsmkit.pipeline import PRESETS

COMMAND = "demo"
ORDER = 1
HELP = "simulate the head phantom, reconstruct it, analyse it and write a report"
DESCRIPTION = """Simulate a multi-echo GRE scan of the numerical head phantom, run the QSM
pipeline on it, score the chi map against the known truth, run the brain analyses and write
figures and report.html into OUTDIR (default: qsmkit-demo).

The simulated inputs are kept in OUTDIR/input (mag.nii.gz, phase.nii.gz with JSON sidecars),
so the same data can be reconstructed again with:
  qsmkit run --mag OUTDIR/input/mag.nii.gz --phase OUTDIR/input/phase.nii.gz -o OTHER
"""


def add_arguments(parser) -> None:
    parser.add_argument("outdir", nargs="?", default="qsmkit-demo", metavar="OUTDIR")
    parser.add_argument("--shape", default="128,128,128", help="grid (default %(default)s)")
    parser.add_argument("--voxel-size", default="1.5,1.5,1.5", help="mm (default %(default)s)")
    parser.add_argument("--b0", type=float, default=3.0, help="tesla (default %(default)s)")
    parser.add_argument("--b0-dir", default="0,0,1",
                        help="B0 direction in voxel coordinates (default %(default)s)")
    parser.add_argument("--snr", type=float, default=100.0, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="default", choices=list(PRESETS))
    add_force(parser)


def run(args) -> int:
    import numpy as np

    from qsmkit.demo import run_demo

    shape = tuple(int(v) for v in parse_vector3(args.shape, "--shape"))
    voxel_size = parse_vector3(args.voxel_size, "--voxel-size")
    b0_dir = np.asarray(parse_vector3(args.b0_dir, "--b0-dir"))
    start = time.perf_counter()
    summary = run_demo(
        Path(args.outdir), shape=shape, voxel_size=voxel_size, b0_tesla=args.b0, b0_dir=b0_dir,
        snr=args.snr, seed=args.seed, preset=args.preset, force=args.force,
        command=getattr(args, "command_line", "qsmkit demo"),
    )
    print("qsmkit demo: head phantom", "x".join(map(str, shape)), "at",
          "x".join(f"{v:g}" for v in voxel_size), f"mm, {args.b0:g} T, preset {args.preset}")
    for key, value in summary.items():
        print(f"  {key:<34} {value}")
    print(f"  {'total time':<34} {time.perf_counter() - start:.1f} s")
    print(f"open {Path(args.outdir) / 'report.html'} in a browser")
    return 0

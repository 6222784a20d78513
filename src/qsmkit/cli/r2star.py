"""``qsmkit r2star``: R2* (1/s), T2* (s) and S0 maps from multi-echo magnitude."""

from __future__ import annotations

from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "r2star"
ORDER = 33
HELP = "map R2* (1/s), T2* (s) and S0 from multi-echo magnitude"
DESCRIPTION = """Fit the mono-exponential decay S0 exp(-R2* TE) in every voxel.

Methods: "loglinear" (default; S^2-weighted log-linear fit, any echo times), "arlo"
(closed form of Pei et al. 2015; at least 3 equally spaced echoes), "nonlinear"
(Levenberg-Marquardt least squares started from the log-linear fit).
R2* is clipped to [0, --r2star-max] 1/s and T2* = 1/R2* to at most 1 s.
Echo times come from --echo-times (seconds) or from JSON sidecars next to the NIfTI files.

Outputs in OUTDIR: r2star.nii.gz (1/s), t2star.nii.gz (s), s0.nii.gz, qsmkit.json.

examples:
  qsmkit r2star --mag mag.nii.gz --echo-times 0.004,0.008,0.012,0.016 -o out/
  qsmkit r2star --mag mag.nii.gz --method arlo --mask brain.nii.gz -o out/
"""

OUTPUTS = ("r2star.nii.gz", "t2star.nii.gz", "s0.nii.gz")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--mag",
        nargs="+",
        required=True,
        metavar="MAG",
        help="magnitude NIfTI: one 4D file (echoes last) or one 3D file per echo",
    )
    parser.add_argument(
        "--echo-times",
        metavar="S",
        help="echo times in seconds, e.g. 0.004,0.008 (default: JSON sidecars)",
    )
    parser.add_argument(
        "--method",
        default="loglinear",
        choices=["loglinear", "arlo", "nonlinear"],
        help="R2* fit (default: %(default)s)",
    )
    parser.add_argument("--mask", metavar="MASK", help="mask NIfTI of the voxels to fit")
    parser.add_argument(
        "--r2star-max",
        type=float,
        default=None,
        metavar="PER_S",
        help="upper clip of R2* in 1/s (default: 2000)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    add_force(parser)


def run(args) -> int:
    from qsmkit.cli.common import Timer, load_echo_series, load_mask, resolve_echo_times
    from qsmkit.echo import R2STAR_METHODS
    from qsmkit.echo.r2star import R2STAR_MAX_PER_S
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.output import check_not_overwriting, staged_output
    from qsmkit.io.provenance import write_provenance

    outdir = Path(args.output)
    check_not_overwriting(outdir, (*OUTPUTS, "qsmkit.json"), args.force)
    r2_max = R2STAR_MAX_PER_S if args.r2star_max is None else float(args.r2star_max)
    timer = Timer()
    with timer("load"):
        mag, affine = load_echo_series(args.mag, "--mag")
        tes = resolve_echo_times(args.echo_times, [args.mag], mag.shape[3])
        mask = load_mask(args.mask, mag.shape, affine) if args.mask else None
    with timer("r2star"):
        fit = R2STAR_METHODS[args.method](mag, tes, mask=mask, r2star_max_per_s=r2_max)
    inputs = [Path(p) for p in (*args.mag, *([args.mask] if args.mask else []))]
    with staged_output(outdir, force=args.force, protect=inputs) as stage:
        save_nifti(stage / "r2star.nii.gz", fit.r2star_per_s, affine, description="R2*", unit="1/s")
        save_nifti(stage / "t2star.nii.gz", fit.t2star_s, affine, description="T2*", unit="s")
        save_nifti(stage / "s0.nii.gz", fit.s0, affine, description="S0 (signal at TE=0)")
        write_provenance(
            stage,
            command="r2star",
            config={"method": args.method, "r2star_max_per_s": r2_max},
            inputs=inputs,
            extra={
                "echo_times_s": tes.tolist(),
                "timings_s": timer.seconds,
                "notes": [] if args.mask else ["no --mask: every voxel fitted"],
            },
        )
    print(f"r2star: wrote {', '.join(OUTPUTS)} to {outdir}")
    return 0

"""``qsmkit mask``: brain mask from GRE magnitude, optionally trimmed by phase quality."""

from __future__ import annotations

from qsmkit.cli.common import (
    add_force,
    check_same_grid,
    load_volumes,
    write_volumes,
)

COMMAND = "mask"
ORDER = 30
HELP = "brain mask from magnitude (optionally trimmed where the phase is noisy)"
DESCRIPTION = """Compute a brain(-plus) mask from GRE magnitude and write it on the input grid.

The magnitude (one 4D file with echoes last, or one 3D file per echo) is combined by
root-sum-of-squares. --method bet fits a deformable surface that stops at the dark skull
(qsmkit.masking.bet, Smith 2002; a whole head); --method robust thresholds relative to the
local tissue level, opens to cut the scalp from the brain, keeps the largest component and
fills holes (qsmkit.masking.robust; crops and phantoms without skull); --method auto (the
default) picks bet when the whole head with its skull is in the field of view, else robust.
With --phase (wrapped phase in radians, same echoes) voxels whose phase is locally
inconsistent are trimmed (qsmkit.masking.phase_quality). --erode-mm erodes the result.

OUT is a folder (writes mask.nii.gz and qsmkit.json) or a file name ending in .nii or
.nii.gz (writes it and a JSON sidecar of the same name).

examples:
  qsmkit mask mag.nii.gz -o out/
  qsmkit mask mag_e1.nii.gz mag_e2.nii.gz --phase ph_e1.nii.gz ph_e2.nii.gz -o brain_mask.nii.gz
  qsmkit mask mag.nii.gz -o out/ --erode-mm 2 --force
  qsmkit mask mag.nii.gz -o out/ --method bet --bt 0.6
"""


def add_arguments(parser) -> None:
    parser.add_argument("magnitude", nargs="+", metavar="MAG",
                        help="magnitude NIfTI: one 3D/4D file or one 3D file per echo")
    parser.add_argument("--phase", nargs="+", metavar="PHASE",
                        help="wrapped phase NIfTI in radians (same grid and echoes)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder, or a .nii/.nii.gz file name")
    parser.add_argument("--method", choices=["auto", "bet", "robust"], default="auto",
                        help="mask method (default: %(default)s)")
    parser.add_argument("--bt", type=float, default=0.7, metavar="F",
                        help="bet: fractional intensity threshold in (0, 1); smaller gives a "
                        "larger mask (default: %(default)s)")
    parser.add_argument("--erode-mm", type=float, default=0.0, metavar="MM",
                        help="erode the final mask by this radius (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="F",
                        help="robust: fraction of the local tissue level to keep "
                        "(default: %(default)s)")
    parser.add_argument("--opening-mm", type=float, default=8.0, metavar="MM",
                        help="robust: radius that cuts the scalp from the brain "
                        "(default: %(default)s)")
    parser.add_argument("--phase-threshold", type=float, default=0.5, metavar="Q",
                        help="minimum phase quality in (0, 1) with --phase "
                        "(default: %(default)s)")
    add_force(parser)


# ------------------------------------------------------------------ shared output helpers


# ------------------------------------------------------------------ the command
def run(args) -> int:
    import numpy as np

    from qsmkit.errors import InputError
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.masking import bet, choose_method, phase_quality, robust
    from qsmkit.masking.robust import combine_echoes, erode, largest_component

    if not args.erode_mm >= 0:
        raise InputError(f"--erode-mm must be >= 0, got {args.erode_mm}")
    magnitude, affine = load_volumes(args.magnitude, "magnitude")
    voxel_size = voxel_size_from_affine(affine)
    info = {"voxel_size_mm": list(voxel_size), "requested_method": args.method}
    method = args.method
    if method == "auto":
        method, info["choice"] = choose_method(magnitude, voxel_size)
    if method == "bet":
        mask = bet(magnitude, voxel_size, bt=args.bt)
    else:
        mask = robust(magnitude, voxel_size, threshold=args.threshold,
                      opening_mm=args.opening_mm)
    info.update(method=method, magnitude_mask_voxels=int(mask.sum()))
    if args.phase:
        phase, phase_affine = load_volumes(args.phase, "phase")
        check_same_grid("phase", phase_affine, phase.shape, affine, magnitude.shape)
        mag_for_phase = magnitude
        n_phase = 1 if phase.ndim == 3 else phase.shape[3]
        n_mag = 1 if magnitude.ndim == 3 else magnitude.shape[3]
        if n_phase != n_mag:
            if n_phase != 1:
                raise InputError(
                    f"{n_phase} phase echoes but {n_mag} magnitude echoes; give the same echoes"
                )
            mag_for_phase = combine_echoes(magnitude)
        mask = phase_quality(phase, mag_for_phase, mask, voxel_size,
                             threshold=args.phase_threshold)
        info["phase_quality_voxels"] = int(mask.sum())
    if args.erode_mm > 0:
        mask = largest_component(erode(mask, voxel_size, args.erode_mm))
    if not mask.any():
        raise InputError("the mask is empty; lower --threshold/--phase-threshold or --erode-mm")
    volume_ml = float(mask.sum() * np.prod(voxel_size)) / 1000.0
    info.update(mask_voxels=int(mask.sum()), mask_volume_ml=volume_ml)
    config = {"method": method, "bt": args.bt if method == "bet" else None,
              "threshold": args.threshold, "opening_mm": args.opening_mm,
              "erode_mm": args.erode_mm,
              "phase_threshold": args.phase_threshold if args.phase else None}
    inputs = list(args.magnitude) + list(args.phase or [])
    path = write_volumes(
        args, args.output, "mask.nii.gz",
        [("", mask, affine, "qsmkit brain mask", "")],
        inputs=inputs, config=config, extra={"mask": info},
    )
    print(f"mask ({method}) written to {path}: {int(mask.sum())} voxels, {volume_ml:.1f} mL")
    return 0

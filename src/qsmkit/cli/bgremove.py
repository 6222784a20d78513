"""``qsmkit bgremove``: total field map -> local field map (background field removal)."""

from __future__ import annotations

import inspect
from pathlib import Path

from qsmkit.errors import InputError

COMMAND = "bgremove"
HELP = "remove the background field from a total field map (PDF, LBV, SHARP family)"
DESCRIPTION = """\
Remove the background field (air-tissue interfaces, shim) from a total field map in Hz.

Writes into OUTDIR:
  local_field_hz.nii.gz   local (tissue) field, Hz, zero outside the output mask
  mask.nii.gz             mask on which the local field is valid (eroded by SHARP-type
                          methods and LBV)
  qsmkit.json             method, options, inputs, timings

Voxel size and the B0 direction come from the field map's affine (oblique data are fine).
Methods: pdf (default, as in qsmkit run), vsharp, lbv, sharp, resharp, ismv; see docs/bgremove.md.

Examples:
  qsmkit bgremove field_hz.nii.gz --mask mask.nii.gz -o out
  qsmkit bgremove field_hz.nii.gz --mask mask.nii.gz --method pdf --weight mag.nii.gz -o out
  qsmkit bgremove field_hz.nii.gz --mask mask.nii.gz --method vsharp --radii 12,8,4,2 -o out
"""
ORDER = 34

# argparse attribute -> keyword of the method it is passed to
_OPTIONS = {
    "threshold": "threshold",
    "lam": "lam",
    "tol": "tol",
    "max_iter": "max_iter",
    "peel": "peel",
    "pad": "pad",
    "kernel": "kernel",
    "solver": "solver",
}


def add_arguments(parser) -> None:
    from qsmkit.cli.common import add_force

    parser.add_argument("field", type=Path, help="total field map (NIfTI, Hz)")
    parser.add_argument("--mask", type=Path, required=True, help="brain mask (NIfTI)")
    parser.add_argument(
        "--method",
        default="pdf",
        choices=["vsharp", "pdf", "lbv", "sharp", "resharp", "ismv"],
        help="background removal method (default: pdf)",
    )
    radius = parser.add_mutually_exclusive_group()
    radius.add_argument(
        "--radii", metavar="R1,R2,...", help="V-SHARP sphere radii in mm, e.g. 12,8,4,2"
    )
    radius.add_argument(
        "--radius", type=float, metavar="MM", help="sphere radius in mm (sharp, resharp, ismv)"
    )
    parser.add_argument("--threshold", type=float, help="TSVD threshold (sharp, vsharp)")
    parser.add_argument("--lam", type=float, help="Tikhonov weight (resharp)")
    parser.add_argument("--tol", type=float, help="solver tolerance (pdf, lbv, resharp, ismv)")
    parser.add_argument(
        "--max-iter", type=int, dest="max_iter", help="iteration cap (pdf, lbv, resharp, ismv)"
    )
    parser.add_argument("--peel", type=int, help="boundary layers peeled before solving (lbv)")
    parser.add_argument("--pad", type=int, help="zero padding in voxels (pdf)")
    parser.add_argument(
        "--kernel", choices=["auto", "kspace", "ispace"], help="dipole kernel (pdf)"
    )
    parser.add_argument("--solver", choices=["cg", "fixed-point"], help="iSMV solver (ismv)")
    parser.add_argument(
        "--weight", type=Path, help="data weight map, e.g. magnitude or 1/noise (pdf)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    add_force(parser)


def _method_options(args, method) -> dict:
    """Keyword options for ``method`` from the parsed arguments; refuse ones it does not take."""
    accepted = set(inspect.signature(method).parameters)
    options = {}
    if args.radii is not None:
        from qsmkit.cli.common import parse_floats

        radii = parse_floats(args.radii, "--radii")
        if "radii_mm" in accepted:
            options["radii_mm"] = tuple(radii)
        elif "radius_mm" in accepted and len(radii) == 1:
            options["radius_mm"] = radii[0]
        else:
            raise InputError(
                f"--radii takes several radii only with --method vsharp; use --radius for "
                f"--method {args.method}"
            )
    if args.radius is not None:
        if "radius_mm" in accepted:
            options["radius_mm"] = args.radius
        elif "radii_mm" in accepted:
            options["radii_mm"] = (args.radius,)
        else:
            raise InputError(f"--radius does not apply to --method {args.method}")
    for attr, keyword in _OPTIONS.items():
        value = getattr(args, attr)
        if value is None:
            continue
        if keyword not in accepted:
            flag = "--" + attr.replace("_", "-")
            raise InputError(f"{flag} does not apply to --method {args.method}")
        options[keyword] = value
    if args.weight is not None and args.method != "pdf":
        raise InputError(f"--weight is used by --method pdf only, not {args.method}")
    return options


def run(args) -> int:
    import numpy as np

    from qsmkit.bgremove import METHODS
    from qsmkit.cli.common import Timer, load_mask
    from qsmkit.geometry import b0_dir_from_affine, voxel_size_from_affine
    from qsmkit.io.nifti import load_nifti, save_nifti
    from qsmkit.io.output import staged_output
    from qsmkit.io.provenance import write_provenance

    method = METHODS[args.method]
    options = _method_options(args, method)
    timer = Timer()
    with timer("load"):
        field, affine, _ = load_nifti(args.field)
        if field.ndim == 4 and field.shape[3] == 1:
            field = field[..., 0]
        if field.ndim != 3:
            raise InputError(
                f"{args.field} must be a 3D field map in Hz, got shape {field.shape}; "
                "run 'qsmkit fieldmap' to combine echoes first"
            )
        mask = load_mask(args.mask, field.shape)
        weight = None
        if args.weight is not None:
            weight, _, _ = load_nifti(args.weight)
            if weight.ndim == 4 and weight.shape[3] == 1:
                weight = weight[..., 0]
            if weight.shape != field.shape:
                raise InputError(
                    f"weight {args.weight} has shape {weight.shape}, expected {field.shape}"
                )
    voxel_size = voxel_size_from_affine(affine)
    b0_dir = b0_dir_from_affine(affine)
    with timer(args.method):
        result = method(field, mask, voxel_size, b0_dir=tuple(b0_dir), weight=weight, **options)
    inputs = [p for p in (args.field, args.mask, args.weight) if p is not None]
    with staged_output(args.output, force=args.force, protect=inputs) as stage:
        save_nifti(
            stage / "local_field_hz.nii.gz",
            result.field_hz,
            affine,
            description="local field",
            unit="Hz",
        )
        save_nifti(stage / "mask.nii.gz", result.mask, affine, description="local field mask")
        write_provenance(
            stage,
            command="bgremove",
            config={"method": args.method, "options": options},
            inputs=inputs,
            extra={
                "voxel_size_mm": list(voxel_size),
                "b0_dir_voxel": np.round(b0_dir, 6).tolist(),
                "timings_s": timer.seconds,
                "result": result.info,
                "mask_voxels": {"input": int(mask.sum()), "output": int(result.mask.sum())},
            },
        )
    print(
        f"{args.method}: local field on {int(result.mask.sum())} of {int(mask.sum())} mask "
        f"voxels -> {args.output}"
    )
    return 0

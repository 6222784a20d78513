"""``qsmkit fieldmap``: multi-echo magnitude + phase -> total field (Hz), offset, residual.

Also holds the small readers shared by the echo commands (``unwrap``, ``r2star``): echo
series from one 4D or several 3D NIfTI files, echo times from JSON sidecars and phase in
radians (both through :mod:`qsmkit.io.sidecar` and :mod:`qsmkit.acquisition`). Unlike
:func:`qsmkit.io.load.load_nifti_acquisition` these need no field strength.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsmkit.cli.common import (
    add_force,
    add_phase_unit,
    check_same_grid,
    load_echo_series,
    phase_in_radians,
    resolve_echo_times,
)

COMMAND = "fieldmap"
ORDER = 31
HELP = "fit the total field (Hz) to multi-echo GRE phase and unwrap it"
DESCRIPTION = """Fit the total field (Hz) and the receive phase offset to multi-echo GRE data.

Method "complex" (default): nonlinear complex fit of the wrapped phase (MEDI-style), then
spatial unwrapping of the wrapped field. Method "linear": phase-offset removal (MCPC-3D-S),
spatial unwrapping of echo 1, temporal unwrapping, weighted linear fit (ROMEO-style).

Echo times come from --echo-times (seconds) or from JSON sidecars next to the NIfTI files
(BIDS "EchoTime" per file, or an "EchoTimes" list for a 4D file). Phase in vendor integer
units (Siemens -4096..4095, 0..4095, milliradians) is rescaled to radians. Without --mask
every voxel with a non-zero first-echo magnitude is fitted (give a brain mask, e.g. from
'qsmkit mask').

Outputs in OUTDIR: field_hz.nii.gz (total field, spatially unwrapped, Hz), offset_rad.nii.gz
(phase at TE=0), fit_residual.nii.gz (relative), field_weight.nii.gz (inverse field noise,
mean 1 in the mask), qsmkit.json.

examples:
  qsmkit fieldmap --mag mag.nii.gz --phase phase.nii.gz --echo-times 0.004,0.008,0.012 -o out/
  qsmkit fieldmap --mag e1_mag.nii e2_mag.nii --phase e1_ph.nii e2_ph.nii --mask brain.nii -o out/
"""

OUTPUTS = ("field_hz.nii.gz", "offset_rad.nii.gz", "fit_residual.nii.gz", "field_weight.nii.gz")

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--mag",
        nargs="+",
        required=True,
        metavar="MAG",
        help="magnitude NIfTI: one 4D file (echoes last) or one 3D file per echo",
    )
    parser.add_argument(
        "--phase",
        nargs="+",
        required=True,
        metavar="PHASE",
        help="phase NIfTI, same layout as --mag (radians or vendor integer units)",
    )
    parser.add_argument(
        "--echo-times",
        metavar="S",
        help="echo times in seconds, e.g. 0.004,0.008 (default: JSON sidecars)",
    )
    parser.add_argument("--mask", metavar="MASK", help="mask NIfTI of the voxels to fit")
    parser.add_argument(
        "--method",
        default="complex",
        choices=["complex", "linear"],
        help="field fit (default: %(default)s)",
    )
    parser.add_argument(
        "--unwrap",
        default="romeo",
        choices=["romeo", "laplacian"],
        help="spatial unwrapping (default: %(default)s)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    add_phase_unit(parser)
    add_force(parser)


def run(args) -> int:
    import numpy as np

    from qsmkit.cli.common import Timer, load_mask
    from qsmkit.echo import FIELD_METHODS
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.output import check_not_overwriting, staged_output
    from qsmkit.io.provenance import write_provenance

    outdir = Path(args.output)
    check_not_overwriting(outdir, (*OUTPUTS, "qsmkit.json"), args.force)
    timer = Timer()
    with timer("load"):
        mag, affine = load_echo_series(args.mag, "--mag")
        phase, phase_affine = load_echo_series(args.phase, "--phase")
        check_same_grid("--phase", phase_affine, phase.shape, affine, mag.shape)
        tes = resolve_echo_times(args.echo_times, [args.phase, args.mag], mag.shape[3])
        phase, notes = phase_in_radians(phase, unit=args.phase_unit, sidecar_paths=args.phase)
        if args.mask:
            mask = load_mask(args.mask, mag.shape, affine)
        else:
            mask = mag[..., 0] > 0
            notes.append("no --mask: fitted every voxel with non-zero first-echo magnitude")
            if not mask.any():
                from qsmkit.errors import InputError

                raise InputError("the first-echo magnitude is zero everywhere")
        voxel_size = voxel_size_from_affine(affine)
    with timer("fieldmap"):
        fit = FIELD_METHODS[args.method](
            mag, phase, tes, mask=mask, voxel_size=voxel_size, unwrap=args.unwrap
        )
    maps = {
        "field_hz.nii.gz": (fit.field_hz, "total field", "Hz"),
        "offset_rad.nii.gz": (fit.offset_rad, "phase offset", "rad"),
        "fit_residual.nii.gz": (
            fit.residual,
            "field fit residual",
            "relative" if args.method == "complex" else "rad",
        ),
        "field_weight.nii.gz": (fit.weight, "inverse field noise", "1"),
    }
    inputs = [Path(p) for p in (*args.mag, *args.phase, *([args.mask] if args.mask else []))]
    with staged_output(outdir, force=args.force, protect=inputs) as stage:
        for name, (data, description, unit) in maps.items():
            data = np.where(mask, np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0), 0)
            save_nifti(stage / name, data, affine, description=description, unit=unit)
        write_provenance(
            stage,
            command="fieldmap",
            config={"method": args.method, "unwrap": args.unwrap},
            inputs=inputs,
            extra={
                "echo_times_s": tes.tolist(),
                "voxel_size_mm": list(voxel_size),
                "wrap_period_hz": 1.0 / float(tes[1] - tes[0]) if tes.size > 1 else None,
                "mask_voxels": int(mask.sum()),
                "timings_s": timer.seconds,
                "notes": notes,
            },
        )
    print(f"fieldmap: wrote {', '.join(OUTPUTS)} to {outdir}")
    return 0


# -- readers shared by the echo commands ------------------------------------------------



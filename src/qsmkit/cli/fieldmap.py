"""``qsmkit fieldmap``: multi-echo magnitude + phase -> total field (Hz), offset, residual.

Also holds the small readers shared by the echo commands (``unwrap``, ``r2star``): echo
series from one 4D or several 3D NIfTI files, echo times from JSON sidecars and phase in
radians (both through :mod:`qsmkit.io.sidecar` and :mod:`qsmkit.acquisition`). Unlike
:func:`qsmkit.io.load.load_nifti_acquisition` these need no field strength.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "fieldmap"
ORDER = 22
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
        check_same_grid(mag.shape, affine, phase.shape, phase_affine, "--mag", "--phase")
        tes = resolve_echo_times(args.echo_times, [args.phase, args.mag], mag.shape[3])
        phase, notes = phase_in_radians(phase)
        if args.mask:
            mask = load_mask(args.mask, mag.shape)
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


def load_echo_series(paths, name: str):
    """Stack one 4D or several 3D (or 4D) NIfTI files along the echo axis.

    Returns ``(data (X, Y, Z, E) float32, affine)``; all files must share the grid.
    """
    import numpy as np

    from qsmkit.errors import InputError
    from qsmkit.io.nifti import load_nifti

    if isinstance(paths, (str, Path)):
        paths = [paths]
    volumes, affine, shape = [], None, None
    for path in paths:
        data, aff, _ = load_nifti(path)
        if data.ndim == 3:
            data = data[..., None]
        elif data.ndim == 5 and data.shape[3] == 1:
            data = data[:, :, :, 0, :]
        if data.ndim != 4:
            raise InputError(f"{name} file {path} must be 3D or 4D, got shape {data.shape}")
        if affine is None:
            affine, shape = aff, data.shape[:3]
        elif data.shape[:3] != shape or not np.allclose(aff, affine, atol=1e-4):
            raise InputError(
                f"{name} files do not share one grid: {path} differs from "
                f"{paths[0]} (shape or affine)"
            )
        volumes.append(data)
    data = volumes[0] if len(volumes) == 1 else np.concatenate(volumes, axis=3)
    return np.ascontiguousarray(data, dtype=np.float32), affine


def check_same_grid(shape_a, affine_a, shape_b, affine_b, name_a: str, name_b: str) -> None:
    import numpy as np

    from qsmkit.errors import InputError

    if tuple(shape_a) != tuple(shape_b):
        raise InputError(
            f"{name_a} shape {tuple(shape_a)} and {name_b} shape "
            f"{tuple(shape_b)} differ; give matching series"
        )
    if not np.allclose(affine_a, affine_b, atol=1e-4):
        raise InputError(f"{name_a} and {name_b} have different affines (not the same grid)")


def echo_times_from_sidecars(paths):
    """Echo times (s) from the JSON sidecars of ``paths``, or ``None`` if any lacks them.

    A sidecar holds ``EchoTimes`` (a list, for a 4D file) or ``EchoTime`` (one value); read
    with :mod:`qsmkit.io.sidecar`.
    """
    from qsmkit.io.sidecar import echo_times_from_sidecar, read_sidecar, sidecar_path

    times: list[float] = []
    for path in paths:
        found = echo_times_from_sidecar(read_sidecar(path), sidecar_path(path).name)
        if found is None:
            return None
        times.extend(found)
    return times


def resolve_echo_times(text, path_groups, n_echoes: int):
    """Echo times from ``--echo-times`` text, else from the sidecars of the first group of
    files that has them all; checked against ``n_echoes``."""
    import numpy as np

    from qsmkit.cli.common import parse_echo_times
    from qsmkit.echo._common import check_echo_times
    from qsmkit.errors import InputError

    if text:
        tes = parse_echo_times(text)
    else:
        tes = None
        for paths in path_groups:
            if paths:
                found = echo_times_from_sidecars(paths)
                if found is not None:
                    tes = np.asarray(found)
                    break
        if tes is None:
            raise InputError(
                "no echo times: give --echo-times in seconds or put JSON sidecars "
                "with EchoTime/EchoTimes next to the NIfTI files"
            )
    return check_echo_times(tes, n_echoes)


def phase_in_radians(phase):
    """Phase in radians in [-pi, pi) (radians, milliradians or a vendor integer encoding such
    as Siemens -4096..4095, see :func:`qsmkit.acquisition.phase_to_radians`); returns
    ``(phase, notes)``."""
    from qsmkit.acquisition import phase_to_radians

    radians, note = phase_to_radians(phase, what="phase")
    if note:
        log.info(note)
    return radians, [note] if note else []

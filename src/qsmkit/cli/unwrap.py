"""``qsmkit unwrap``: spatial phase unwrapping of a 3D phase image or of each echo of a 4D one."""

from __future__ import annotations

from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "unwrap"
ORDER = 32
HELP = "unwrap phase spatially (ROMEO-like region growing or Laplacian)"
DESCRIPTION = """Unwrap a phase image (radians or Siemens units) spatially.

A 4D input is unwrapped echo by echo; with echo times (--echo-times or JSON sidecars) the
region growing also weighs each echo's phase gradients against the next echo's.
Method "romeo" (default) is congruent: the output differs from the input by exact multiples
of 2 pi. Method "laplacian" returns a smooth estimate (add --congruent to round it to the
nearest 2 pi multiple of the input). Outside --mask the input is copied unchanged.

Writes OUT (.nii or .nii.gz) and its provenance OUT.json (same stem) next to it.

examples:
  qsmkit unwrap phase.nii.gz --mag mag.nii.gz --mask brain.nii.gz -o phase_unwrapped.nii.gz
  qsmkit unwrap phase.nii.gz --method laplacian --congruent -o unwrapped.nii.gz
"""


def add_arguments(parser) -> None:
    parser.add_argument("phase", metavar="PHASE", help="phase NIfTI (3D, or 4D with echoes last)")
    parser.add_argument("--mag", metavar="MAG", help="magnitude NIfTI (3D or matching 4D)")
    parser.add_argument("--mask", metavar="MASK", help="mask NIfTI of the voxels to unwrap")
    parser.add_argument(
        "--method",
        default="romeo",
        choices=["romeo", "laplacian"],
        help="unwrapping method (default: %(default)s)",
    )
    parser.add_argument(
        "--congruent", action="store_true", help="laplacian: round to the input phase + 2 pi k"
    )
    parser.add_argument(
        "--echo-times",
        metavar="S",
        help="echo times (s) of a 4D input, for ROMEO's gradient coherence",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output NIfTI file (.nii or .nii.gz)"
    )
    from qsmkit.cli.common import add_phase_unit

    add_phase_unit(parser)
    add_force(parser)


def _stem(name: str) -> str | None:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def run(args) -> int:
    import numpy as np

    from qsmkit.cli.common import (
        Timer,
        check_same_grid,
        echo_times_from_sidecars,
        load_echo_series,
        load_mask,
        phase_in_radians,
        resolve_echo_times,
    )
    from qsmkit.errors import InputError
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.io.nifti import load_nifti, save_nifti
    from qsmkit.io.output import check_not_overwriting, staged_output
    from qsmkit.io.provenance import write_provenance
    from qsmkit.unwrap import METHODS

    out = Path(args.output)
    stem = _stem(out.name)
    if stem is None:
        raise InputError(f"output {out} must end in .nii or .nii.gz")
    names = (out.name, f"{stem}.json")
    check_not_overwriting(out.parent, names, args.force)
    timer = Timer()
    with timer("load"):
        raw, affine, _ = load_nifti(args.phase)
        if raw.ndim == 5 and raw.shape[3] == 1:
            raw = raw[:, :, :, 0, :]
        if raw.ndim not in (3, 4):
            raise InputError(f"phase {args.phase} must be 3D or 4D, got shape {raw.shape}")
        phase, notes = phase_in_radians(raw, unit=args.phase_unit, sidecar_paths=[args.phase])
        mag = None
        if args.mag:
            mag, mag_affine = load_echo_series(args.mag, "--mag")
            check_same_grid("--mag", mag_affine, mag.shape, affine, phase.shape)
            n_phase = phase.shape[3] if phase.ndim == 4 else 1
            if mag.shape[3] == 1 or phase.ndim == 3:
                mag = mag[..., 0]  # one magnitude for every echo (or the first echo's)
            elif mag.shape[3] != n_phase:
                raise InputError(f"--mag has {mag.shape[3]} echoes, the phase {n_phase}")
        mask = load_mask(args.mask, phase.shape, affine) if args.mask else None
        tes = None
        if phase.ndim == 4 and phase.shape[3] > 1:
            if args.echo_times:
                tes = resolve_echo_times(args.echo_times, [], phase.shape[3])
            elif echo_times_from_sidecars([args.phase]) is not None:
                tes = resolve_echo_times(None, [[args.phase]], phase.shape[3])
        voxel_size = voxel_size_from_affine(affine)
    options = {}
    if args.method == "romeo" and tes is not None:
        options["echo_times_s"] = tes
    if args.method == "laplacian":
        options["congruent"] = bool(args.congruent)
    elif args.congruent:
        notes.append("--congruent ignored: romeo is always congruent")
    with timer("unwrap"):
        result = METHODS[args.method](
            phase, mask=mask, voxel_size=voxel_size, magnitude=mag, **options
        )
    inputs = [Path(p) for p in (args.phase, args.mag, args.mask) if p]
    with staged_output(out.parent, force=args.force, protect=inputs) as stage:
        save_nifti(
            stage / out.name,
            result.astype(np.float32),
            affine,
            description="unwrapped phase",
            unit="rad",
        )
        record = write_provenance(
            stage,
            command="unwrap",
            config={
                "method": args.method,
                "congruent": args.method == "romeo" or bool(args.congruent),
            },
            inputs=inputs,
            extra={
                "echo_times_s": None if tes is None else tes.tolist(),
                "voxel_size_mm": list(voxel_size),
                "timings_s": timer.seconds,
                "notes": notes,
            },
        )
        record.rename(stage / f"{stem}.json")
    print(f"unwrap: wrote {out}")
    return 0

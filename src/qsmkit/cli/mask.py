"""``qsmkit mask``: brain mask from GRE magnitude, optionally trimmed by phase quality."""

from __future__ import annotations

from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "mask"
ORDER = 30
HELP = "brain mask from magnitude (optionally trimmed where the phase is noisy)"
DESCRIPTION = """Compute a brain(-plus) mask from GRE magnitude and write it on the input grid.

The magnitude (one 4D file with echoes last, or one 3D file per echo) is combined by
root-sum-of-squares, thresholded relative to the local tissue level, opened to cut the scalp
from the brain, reduced to its largest component and hole-filled (qsmkit.masking.robust).
With --phase (wrapped phase in radians, same echoes) voxels whose phase is locally
inconsistent are trimmed (qsmkit.masking.phase_quality). --erode-mm erodes the result.

OUT is a folder (writes mask.nii.gz and qsmkit.json) or a file name ending in .nii or
.nii.gz (writes it and a JSON sidecar of the same name).

examples:
  qsmkit mask mag.nii.gz -o out/
  qsmkit mask mag_e1.nii.gz mag_e2.nii.gz --phase ph_e1.nii.gz ph_e2.nii.gz -o brain_mask.nii.gz
  qsmkit mask mag.nii.gz -o out/ --erode-mm 2 --force
"""


def add_arguments(parser) -> None:
    parser.add_argument("magnitude", nargs="+", metavar="MAG",
                        help="magnitude NIfTI: one 3D/4D file or one 3D file per echo")
    parser.add_argument("--phase", nargs="+", metavar="PHASE",
                        help="wrapped phase NIfTI in radians (same grid and echoes)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder, or a .nii/.nii.gz file name")
    parser.add_argument("--erode-mm", type=float, default=0.0, metavar="MM",
                        help="erode the final mask by this radius (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="F",
                        help="fraction of the local tissue level to keep (default: %(default)s)")
    parser.add_argument("--opening-mm", type=float, default=8.0, metavar="MM",
                        help="radius that cuts the scalp from the brain (default: %(default)s)")
    parser.add_argument("--phase-threshold", type=float, default=0.5, metavar="Q",
                        help="minimum phase quality in (0, 1) with --phase "
                        "(default: %(default)s)")
    add_force(parser)


# ------------------------------------------------------------------ shared output helpers
def output_target(text: str, default_name: str) -> tuple[Path, str, bool]:
    """``(folder, file name, is_file)`` for an ``-o`` value that is a folder or a NIfTI name."""
    path = Path(text)
    if path.name.endswith((".nii", ".nii.gz")):
        return path.parent, path.name, True
    return path, default_name, False


def sidecar_name(nifti_name: str, suffix: str = ".json") -> str:
    """``mask.nii.gz`` -> ``mask.json`` (BIDS-style sidecar name)."""
    for ending in (".nii.gz", ".nii"):
        if nifti_name.endswith(ending):
            return nifti_name[: -len(ending)] + suffix
    return nifti_name + suffix


def load_volumes(paths, what: str):
    """Load one 3D/4D NIfTI or several 3D ones (stacked as echoes); returns (data, affine).

    Raises :class:`InputError` when the files do not share one grid.
    """
    import numpy as np

    from qsmkit.errors import InputError
    from qsmkit.io.nifti import load_nifti

    arrays, affine = [], None
    for path in paths:
        data, aff, _ = load_nifti(path)
        if affine is None:
            affine = aff
        elif not np.allclose(aff, affine, atol=1e-3):
            raise InputError(f"{what} files {paths[0]} and {path} have different affines")
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        arrays.append(data)
    if len(arrays) == 1:
        data = arrays[0]
    else:
        if any(a.ndim != 3 for a in arrays):
            raise InputError(f"give one 4D {what} file or several 3D files, not a mixture")
        if len({a.shape for a in arrays}) != 1:
            raise InputError(f"the {what} files have different shapes")
        data = np.stack(arrays, axis=-1)
    if data.ndim not in (3, 4):
        raise InputError(f"{what} must be 3D or 4D (echoes last), got shape {data.shape}")
    return data, affine


def check_same_grid(name, affine, shape, ref_affine, ref_shape) -> None:
    """Raise :class:`InputError` unless a volume lies on the reference grid."""
    import numpy as np

    from qsmkit.errors import InputError

    if tuple(shape[:3]) != tuple(ref_shape[:3]):
        raise InputError(f"{name} has shape {tuple(shape)}, expected {tuple(ref_shape[:3])}")
    if not np.allclose(affine, ref_affine, atol=1e-3):
        raise InputError(f"{name} is not on the grid (affine) of the first input; resample it")


def write_volumes(args, output: str, default_name: str, volumes, *, inputs, config, extra):
    """Write ``volumes`` (``[(suffix, data, affine, description, unit), ...]``; the first has
    suffix ``""`` and is the main output) atomically with provenance; returns the main path.

    Folder output: ``default_name`` (+ ``<stem><suffix>.nii.gz`` for the others) and
    ``qsmkit.json``; file output: the file, the others beside it and ``<stem>.json``.
    """
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.output import staged_output
    from qsmkit.io.provenance import write_provenance

    folder, name, is_file = output_target(output, default_name)
    stem = sidecar_name(name, "")
    with staged_output(folder, force=args.force, protect=[Path(p) for p in inputs]) as stage:
        for suffix, data, affine, description, unit in volumes:
            target = name if not suffix else f"{stem}{suffix}.nii.gz"
            save_nifti(stage / target, data, affine, description=description, unit=unit)
        command = getattr(args, "command_line", f"qsmkit {args.command}")
        record = write_provenance(stage, command=command, config=config, inputs=inputs,
                                  extra=extra)
        if is_file:
            record.rename(stage / sidecar_name(name))
    return folder / name


# ------------------------------------------------------------------ the command
def run(args) -> int:
    import numpy as np

    from qsmkit.errors import InputError
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.masking import phase_quality, robust
    from qsmkit.masking.robust import combine_echoes, erode, largest_component

    if not args.erode_mm >= 0:
        raise InputError(f"--erode-mm must be >= 0, got {args.erode_mm}")
    magnitude, affine = load_volumes(args.magnitude, "magnitude")
    voxel_size = voxel_size_from_affine(affine)
    mask = robust(magnitude, voxel_size, threshold=args.threshold, opening_mm=args.opening_mm)
    info = {"voxel_size_mm": list(voxel_size), "robust_voxels": int(mask.sum())}
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
    config = {"threshold": args.threshold, "opening_mm": args.opening_mm,
              "erode_mm": args.erode_mm,
              "phase_threshold": args.phase_threshold if args.phase else None}
    inputs = list(args.magnitude) + list(args.phase or [])
    path = write_volumes(
        args, args.output, "mask.nii.gz",
        [("", mask, affine, "qsmkit brain mask", "")],
        inputs=inputs, config=config, extra={"mask": info},
    )
    print(f"mask written to {path}: {int(mask.sum())} voxels, {volume_ml:.1f} mL")
    return 0

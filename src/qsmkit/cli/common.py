"""Helpers shared by command modules: argument parsing of physics values, loading, saving."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from qsmkit.errors import InputError

log = logging.getLogger(__name__)


def parse_floats(text: str, name: str) -> list[float]:
    """Parse ``"0.004,0.008"`` or ``"0.004 0.008"`` into floats with a clear error."""
    try:
        values = [float(v) for v in str(text).replace(",", " ").split()]
    except ValueError:
        raise InputError(f"{name} must be numbers separated by commas or spaces (e.g. "
                         f"{name} 64,64,48 or {name} 64 64 48), got {text!r}") from None
    if not values:
        raise InputError(f"{name} is empty")
    if not all(np.isfinite(values)):
        raise InputError(f"{name} must be finite numbers, got {text!r}")
    return values


# Options that take a list of numbers: each accepts "64,64,48", "64 64 48" (separate words
# on the command line) and "64, 64, 48" alike (see join_number_lists).
NUMBER_LIST_OPTIONS = frozenset({
    "--shape", "--voxel-size", "--b0-dir", "--echo-times", "--radii", "--dgm-labels",
    "--capacity-ratios",
})


def _is_number_list(word: str) -> bool:
    parts = word.replace(",", " ").split()
    if not parts:
        return False
    try:
        [float(p) for p in parts]
    except ValueError:
        return False
    return True


def join_number_lists(argv: list[str], options=NUMBER_LIST_OPTIONS) -> list[str]:
    """Join the separate words of a number-list option into one comma-separated word.

    ``--shape 64 64 48 OUT`` becomes ``--shape 64,64,48 OUT``: the words after the option
    are taken while they are numbers (or comma lists of numbers, negative ones included),
    so a positional argument after the list stays positional. A word that is not a number
    is left alone, and the option's own parser (:func:`parse_floats`) names it in its
    error. Words after ``--`` are never touched.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        out.append(word)
        i += 1
        if word == "--":
            out.extend(argv[i:])
            break
        if word in options:
            values = []
            while i < len(argv) and _is_number_list(argv[i]):
                values.append(argv[i])
                i += 1
            if values:
                # "--opt=VALUE": a list that starts with a minus sign is not taken for an option.
                out[-1] = f"{word}=" + ",".join(v.strip().strip(",") for v in values)
    return out


def parse_vector3(text: str, name: str) -> tuple[float, float, float]:
    values = parse_floats(text, name)
    if len(values) != 3:
        raise InputError(f"{name} needs three numbers, got {text!r}")
    return tuple(values)


def parse_echo_times(text: str) -> np.ndarray:
    """Echo times in seconds; values > 1 are taken as milliseconds only if all are > 1."""
    values = np.asarray(parse_floats(text, "--echo-times"))
    if np.all(values > 1.0):
        raise InputError(
            f"--echo-times {text} look like milliseconds; give seconds, e.g. "
            + ",".join(f"{v / 1000:g}" for v in values)
        )
    return values


def add_force(parser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="replace existing outputs in the output folder"
    )


def load_mask(path, shape=None, affine=None) -> np.ndarray:
    """A boolean mask from NIfTI; with ``shape`` and ``affine``, it must lie on that grid."""
    from qsmkit.io.nifti import load_nifti

    data, mask_affine, _ = load_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"mask {path} must be 3D, got shape {data.shape}")
    if shape is not None and tuple(data.shape) != tuple(shape[:3]):
        raise InputError(f"mask {path} has shape {data.shape}, expected {tuple(shape[:3])}")
    if affine is not None:
        check_same_grid(f"mask {path}", mask_affine, data.shape, affine, data.shape)
    mask = data > 0.5
    if not mask.any():
        raise InputError(f"mask {path} is empty")
    return mask


def check_labels(data, path, *, integers: bool = True) -> None:
    """Raise :class:`InputError` unless a label image holds finite, non-negative values,
    integers unless ``integers=False`` (issue 16: NaN labels cast to garbage integers)."""
    data = np.asarray(data)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InputError(f"labels {path} contain NaN or Inf values; give a label image of "
                         "non-negative integers")
    if integers and data.dtype.kind == "f" and np.any(np.abs(data - np.rint(data)) > 1e-3):
        raise InputError(f"labels {path} hold non-integer values; give a label image of "
                         "non-negative integers, not a probability map")
    if data.size and (float(data.min()) < 0 or float(data.max()) > 2**31 - 1):
        raise InputError(f"labels {path} must lie between 0 and 2^31-1, got "
                         f"{float(data.min()):g}..{float(data.max()):g}")


class Timer:
    """Collect wall time per named stage: ``with timer("unwrap"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(time.perf_counter() - self.start, 3)

        return _Stage()


def write_json(path, payload) -> None:
    from qsmkit.io.provenance import to_json

    Path(path).write_text(to_json(payload) + "\n")


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read JSON {path}: {err}") from None


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


def sibling_lut(labels_path: Path) -> Path | None:
    name = labels_path.name
    for ext in (".nii.gz", ".nii", ".mgz"):
        if name.endswith(ext):
            stem = name[: -len(ext)]
            break
    else:
        stem = labels_path.stem
    for candidate in (labels_path.with_name(stem + ".tsv"), labels_path.with_name(stem + ".json")):
        if candidate.exists():
            return candidate
    return None


def load_chi(path):
    """(chi (X, Y, Z) float32 ppm, affine, voxel_size) from a NIfTI file."""
    from qsmkit.errors import InputError
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.io.nifti import load_nifti

    chi, affine, _ = load_nifti(path)
    if chi.ndim == 4 and chi.shape[3] == 1:
        chi = chi[..., 0]
    if chi.ndim != 3:
        raise InputError(f"the chi map {path} must be 3D, got shape {chi.shape}")
    return chi, affine, voxel_size_from_affine(affine)


def output_paths(output) -> tuple[Path, Path, Path]:
    """(TSV, JSON, PNG) paths sharing the stem of ``output``."""
    out = Path(output)
    if out.suffix.lower() != ".tsv":
        out = out.with_name(out.name + ".tsv") if out.suffix == "" else out.with_suffix(".tsv")
    return out, out.with_suffix(".json"), out.with_suffix(".png")


def write_analysis_outputs(output, tsv_text: str, payload: dict, figure, *, command: str,
                           inputs=(), force: bool = False, extra_tables: dict | None = None,
                           extra_files: dict | None = None) -> list[Path]:
    """Write OUTPUT.tsv, OUTPUT.json (payload + provenance) and OUTPUT.png atomically.

    ``extra_tables`` maps a suffix (``"_regions"``) to more TSV text; ``extra_files`` maps a
    file name to a callable writing it given its staged path.
    """
    import time

    from qsmkit import __version__
    from qsmkit.io.output import staged_output
    from qsmkit.io.provenance import sha256_file, to_json

    tsv, js, png = output_paths(output)
    record = {
        "qsmkit_version": __version__, "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": {str(p): sha256_file(p) for p in inputs if p and Path(p).exists()},
        **payload,
    }
    written = []
    with staged_output(tsv.parent, force=force,
                       protect=[Path(p) for p in inputs if p]) as stage:
        (stage / tsv.name).write_text(tsv_text)
        (stage / js.name).write_text(to_json(record) + "\n")
        from qsmkit.report.figures import orientation_metadata

        # The orientation letters of the panels travel in the PNG (the report's captions).
        figure.savefig(stage / png.name, dpi=110, metadata=orientation_metadata(figure))
        written += [tsv, js, png]
        for suffix, text in (extra_tables or {}).items():
            name = tsv.stem + suffix + ".tsv"
            (stage / name).write_text(text)
            written.append(tsv.with_name(name))
        for name, writer in (extra_files or {}).items():
            writer(stage / name)
            written.append(tsv.with_name(name))
    return written


def print_table(rows, columns, *, digits: int = 4, limit: int = 60) -> None:
    """Aligned plain-text table on stdout (the TSV holds every column)."""
    from qsmkit.analysis import _format_cell

    cells = [[str(c) for c in columns]]
    for row in rows[:limit]:
        cells.append([_format_cell(row.get(c), digits) for c in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print("  ".join(v.rjust(w) if k else v.ljust(w) for k, (v, w) in
                        enumerate(zip(r, widths, strict=True))))
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more rows in the TSV")


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


def phase_in_radians(phase, *, unit: str = "auto", sidecar_paths=()):
    """Phase in radians in [-pi, pi) (radians, degrees, milliradians or a vendor integer
    encoding such as Siemens -4096..4095, see :func:`qsmkit.acquisition.phase_to_radians`),
    in qsmkit's sign convention (GE negated, from the ``Manufacturer`` of the JSON sidecar
    of the first of ``sidecar_paths``, see :mod:`qsmkit.io.vendor`); returns
    ``(phase, notes)``. Notes are printed on the terminal."""
    from qsmkit.acquisition import phase_to_radians
    from qsmkit.io.sidecar import read_sidecar
    from qsmkit.io.vendor import to_qsmkit_phase_sign

    radians, note = phase_to_radians(phase, what="phase", unit=unit)
    notes = [note] if note else []
    paths = [Path(p) for p in sidecar_paths or ()]
    meta = read_sidecar(paths[0]) if paths else {}
    if meta:
        radians, note = to_qsmkit_phase_sign(radians, str(meta.get("Manufacturer", "")), meta)
        if note:
            notes.append(note)
    print_notes(notes)
    return radians, notes


def print_notes(notes) -> None:
    """Print what the reader did to the input (units rescaled, sign flipped, ...)."""
    for note in notes:
        print(f"note: {note}")


def print_warnings(warnings, *, prefix: str = "") -> None:
    """Print quality-gate findings (:class:`qsmkit.qc.QCWarning` or their dicts) to stderr,
    one line each: ``warning [CODE]: message (value X, threshold Y) — advice``."""
    import sys

    from qsmkit.qc import QCWarning

    for item in warnings or ():
        finding = item if isinstance(item, QCWarning) else QCWarning.from_dict(item)
        print(prefix + finding.line(), file=sys.stderr)


PHASE_UNIT_HELP = ("unit of the stored phase: auto (detect; refuses ambiguous ranges), rad, "
                   "deg, mrad, siemens (-4096..4095), uint12 (0..4095), range (the data's "
                   "min..max is one cycle -pi..pi); default: %(default)s")


def add_phase_unit(parser) -> None:
    """The ``--phase-unit`` option of every command that reads phase."""
    from qsmkit.acquisition import PHASE_UNITS

    parser.add_argument("--phase-unit", default="auto", choices=PHASE_UNITS,
                        help=PHASE_UNIT_HELP)


def add_acquisition_arguments(parser, *, inputs_help: str) -> None:
    """The input options of commands that read a multi-echo GRE acquisition."""
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help=inputs_help)
    parser.add_argument("--mag", nargs="+", metavar="MAG", help="magnitude NIfTI (4D or per echo)")
    parser.add_argument("--phase", nargs="+", metavar="PHASE",
                        help="phase NIfTI (4D or per echo)")
    parser.add_argument("--echo-times", metavar="S",
                        help="echo times in seconds, e.g. 0.004,0.008 (default: sidecars)")
    parser.add_argument("--b0", type=float, metavar="TESLA",
                        help="field strength in T (default: headers or sidecars)")
    parser.add_argument("--series", type=int, metavar="N", help="DICOM series number to use")
    add_phase_unit(parser)


def check_acquisition_arguments(args) -> None:
    """Raise :class:`InputError` for an impossible combination of input options."""
    if not args.inputs and not (args.mag and args.phase):
        raise InputError("give a DICOM or BIDS folder, or --mag and --phase NIfTI files")
    if args.inputs and (args.mag or args.phase):
        raise InputError("give either an input folder or --mag/--phase files, not both")
    if bool(args.mag) != bool(args.phase):
        raise InputError("--mag and --phase must be given together")


def load_acquisition_from_args(args):
    """The :class:`~qsmkit.acquisition.Acquisition` named by :func:`add_acquisition_arguments`."""
    from qsmkit.io.load import load_acquisition

    check_acquisition_arguments(args)
    echo_times = parse_echo_times(args.echo_times) if args.echo_times else None
    acq = load_acquisition(args.inputs, mag=args.mag, phase=args.phase, echo_times_s=echo_times,
                           b0_tesla=args.b0, series=args.series,
                           phase_unit=getattr(args, "phase_unit", "auto"))
    print_notes(acq.notes)
    return acq


def acquisition_input_paths(args) -> list[Path]:
    """Every input path named on the command line (checksummed, never overwritten)."""
    return [Path(p) for p in (args.inputs or []) + (args.mag or []) + (args.phase or [])]

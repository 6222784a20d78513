"""``qsmkit invert``: local field map -> susceptibility map (dipole inversion)."""

from __future__ import annotations

from pathlib import Path

from qsmkit.errors import InputError

COMMAND = "invert"
ORDER = 35
HELP = "invert a local field map to a susceptibility map (WH-QSM, TV, NLTV, MEDI, RTS, TGV, ...)"
DESCRIPTION = """\
Dipole inversion: local (tissue) field -> susceptibility chi in ppm.

The field is read in Hz (default), ppm or radians (--unit rad with --echo-time). The field
strength comes from --b0 or from "MagneticFieldStrength" in a JSON sidecar next to FIELD
(FIELD with .json instead of .nii/.nii.gz); the echo time for --unit rad likewise from
--echo-time or the sidecar's "EchoTime" (seconds). Voxel size and the B0 direction come from
the affine (oblique data are fine; nothing is resampled).

Writes chi.nii.gz (ppm, zero outside the mask, input affine) and qsmkit.json into OUT when
OUT is a folder, or chi to OUT itself when it ends in .nii or .nii.gz, with its provenance
in a JSON sidecar of the same name (OUT with .json), so the qsmkit.json of an existing
folder is left alone.

Methods (see docs/inversion.md): whtv (weak-harmonic TV, default), tv, nltv, medi, rts,
tgv, ilsqr, tikhonov, tkd.
--lam sets the main regularisation (tkd: threshold; tgv: alpha1 with alpha0 = 3 alpha1);
--opt KEY=VALUE passes any other option of the method (repeatable).

Examples:
  qsmkit invert local_field_hz.nii.gz --mask mask.nii.gz --b0 3 -o out
  qsmkit invert local.nii.gz --mask mask.nii.gz --unit ppm --method rts -o chi.nii.gz
  qsmkit invert phase_local.nii.gz --mask m.nii.gz --unit rad --echo-time 0.02 --b0 7 -o out
  qsmkit invert local.nii.gz --mask m.nii.gz --b0 3 --method medi --magnitude mag.nii.gz -o out
"""

METHOD_NAMES = ["whtv", "tv", "nltv", "medi", "rts", "tgv", "ilsqr", "tikhonov", "tkd"]
_WEIGHTED = {"whtv", "tv", "nltv", "medi", "tgv", "ilsqr"}


def add_arguments(parser) -> None:
    from qsmkit.cli.common import add_force

    parser.add_argument("field", type=Path, metavar="FIELD", help="local field map (NIfTI)")
    parser.add_argument("--mask", type=Path, required=True, help="mask of the local field (NIfTI)")
    parser.add_argument("--unit", choices=["hz", "ppm", "rad"], default="hz",
                        help="unit of FIELD (default: %(default)s)")
    parser.add_argument("--b0", type=float, metavar="TESLA",
                        help="field strength (T); default: the JSON sidecar of FIELD")
    parser.add_argument("--echo-time", type=float, metavar="S", dest="echo_time",
                        help="echo time (s) of a field given in radians (--unit rad), and the "
                        "phase scale of --method nltv (a multi-echo field: its effective TE)")
    parser.add_argument("--method", choices=METHOD_NAMES, default="whtv",
                        help="inversion method (default: %(default)s)")
    parser.add_argument("--lam", metavar="X",
                        help="regularisation strength, a number or 'auto' (default: auto, "
                        "chosen from the field for whtv, tv, nltv, medi, tgv, tikhonov; "
                        "tkd: threshold; tgv: alpha1)")
    parser.add_argument("--magnitude", type=Path, metavar="MAG",
                        help="magnitude (NIfTI): data weight, and edges for medi")
    parser.add_argument("--csf-mask", type=Path, dest="csf_mask", metavar="CSF",
                        help="CSF mask for MEDI+0 (medi only)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="extra method option, e.g. --opt max_iter=300 (repeatable)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="output folder, or output file ending in .nii/.nii.gz")
    add_force(parser)


def _sidecar(path: Path) -> dict:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    candidate = path.with_name(name + ".json")
    if not candidate.exists():
        return {}
    from qsmkit.cli.common import read_json

    data = read_json(candidate)
    return data if isinstance(data, dict) else {}


def _parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    if "," in text:
        return tuple(_parse_value(t) for t in text.split(",") if t.strip())
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _options(args) -> dict:
    from qsmkit.inversion import REGULARIZATION, options_of

    accepted = set(options_of(args.method))
    options = {}
    for item in args.opt:
        if "=" not in item:
            raise InputError(f"--opt takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in accepted or key in ("magnitude", "csf_mask"):
            raise InputError(f"--method {args.method} has no option {key!r}; options: "
                             f"{', '.join(sorted(accepted - {'magnitude', 'csf_mask'}))}")
        options[key] = _parse_value(value)
    if args.lam is not None and args.lam.strip().lower() != "auto":
        from qsmkit.cli.run import _lam_value

        args.lam = _lam_value(args.lam)
        target = REGULARIZATION[args.method]
        if target is None:
            raise InputError(f"--lam does not apply to --method {args.method}; use --opt "
                             "(e.g. --opt tol=0.01)")
        if target == "alpha":
            options["alpha"] = (3.0 * args.lam, args.lam)
        else:
            options[target] = args.lam
    return options


def _load_like(path: Path, shape, what: str):
    from qsmkit.io.nifti import load_nifti

    data, _, _ = load_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(shape):
        raise InputError(f"{what} {path} has shape {data.shape}, expected {tuple(shape)}")
    return data


def run(args) -> int:
    import numpy as np

    from qsmkit.cli.common import Timer, load_mask
    from qsmkit.geometry import b0_dir_from_affine, voxel_size_from_affine
    from qsmkit.inversion import METHODS
    from qsmkit.io.nifti import load_nifti, save_nifti
    from qsmkit.io.output import staged_output
    from qsmkit.io.provenance import write_provenance
    from qsmkit.units import phase_to_hz, ppm_to_hz

    options = _options(args)
    sidecar = _sidecar(args.field)
    b0 = args.b0
    if b0 is None and "MagneticFieldStrength" in sidecar:
        try:
            b0 = float(sidecar["MagneticFieldStrength"])
        except (TypeError, ValueError):
            raise InputError("MagneticFieldStrength in the sidecar of "
                             f"{args.field} is not a number") from None
    if b0 is None:
        if args.unit != "ppm":
            raise InputError(f"no field strength: pass --b0 (tesla) or put "
                             f"MagneticFieldStrength in a JSON sidecar next to {args.field}")
        b0 = 3.0  # a field in ppm gives the same chi at any B0
    if not (0.05 <= b0 <= 21.2):
        raise InputError(f"--b0 {b0} is outside 0.05-21.1 T; give the field strength in tesla")
    echo_time = args.echo_time
    if args.unit == "rad":
        if echo_time is None and "EchoTime" in sidecar:
            try:
                echo_time = float(sidecar["EchoTime"])
            except (TypeError, ValueError):
                raise InputError(
                    f"EchoTime in the sidecar of {args.field} is not a number"
                ) from None
        if echo_time is None:
            raise InputError("--unit rad needs --echo-time (seconds) or EchoTime in the sidecar")
        if not (0 < echo_time <= 1.0):
            raise InputError(f"--echo-time {echo_time} must be seconds in (0, 1], e.g. 0.02")
    elif args.method == "nltv":
        if echo_time is None and "EchoTime" in sidecar:
            try:
                echo_time = float(sidecar["EchoTime"])
            except (TypeError, ValueError):
                echo_time = None
        if echo_time is not None and not (0 < echo_time <= 1.0):
            raise InputError(f"--echo-time {echo_time} must be seconds in (0, 1], e.g. 0.02")
    elif args.echo_time is not None:
        raise InputError("--echo-time is only used with --unit rad or --method nltv")
    if args.method not in _WEIGHTED and args.magnitude is not None:
        raise InputError(f"--magnitude is used by {', '.join(sorted(_WEIGHTED))}, not by "
                         f"--method {args.method}")
    if args.csf_mask is not None and args.method != "medi":
        raise InputError("--csf-mask is used by --method medi only")

    timer = Timer()
    with timer("load"):
        field, affine, _ = load_nifti(args.field)
        if field.ndim == 4 and field.shape[3] == 1:
            field = field[..., 0]
        if field.ndim != 3:
            raise InputError(f"{args.field} must be a 3D local field map, got shape "
                             f"{field.shape}")
        mask = load_mask(args.mask, field.shape, affine)
        if args.unit == "ppm":
            field_hz = ppm_to_hz(field, b0)
        elif args.unit == "rad":
            field_hz = phase_to_hz(field, echo_time)
        else:
            field_hz = field
        field_hz = np.asarray(field_hz, dtype=np.float32)
        extra = {}
        if args.magnitude is not None:
            magnitude = _load_like(args.magnitude, field.shape, "magnitude")
            extra["weight"] = magnitude
            if args.method == "medi":
                extra["magnitude"] = magnitude
        if args.csf_mask is not None:
            extra["csf_mask"] = load_mask(args.csf_mask, field.shape, affine)
        if args.method == "nltv" and echo_time is not None:
            options.setdefault("echo_time_s", echo_time)  # phase scale of the data term
    voxel_size = voxel_size_from_affine(affine)
    b0_dir = b0_dir_from_affine(affine)
    from qsmkit.inversion import resolve_lambda

    with timer("lam"):
        # the user's --lam (already in options) wins; otherwise lam="auto"
        resolved, inversion_record = resolve_lambda(
            args.method, {**options, **extra}, field_hz, mask, voxel_size,
            b0_dir=tuple(b0_dir), b0_tesla=b0, weight=extra.get("weight"))
    with timer(args.method):
        chi = METHODS[args.method](field_hz, mask, voxel_size, b0_dir=tuple(b0_dir),
                                   b0_tesla=b0, **resolved)
    from qsmkit.cli.common import print_warnings
    from qsmkit.qc import judge_inversion

    warnings = judge_inversion(chi, field_hz, mask, voxel_size, weight=extra.get("weight"))

    out = Path(args.output)
    if out.name.endswith((".nii", ".nii.gz")):
        folder, name = out.parent, out.name
        provenance = name[: -len(".nii.gz")] if name.endswith(".gz") else name[: -len(".nii")]
        provenance += ".json"
    else:
        folder, name, provenance = out, "chi.nii.gz", None
    inputs = [p for p in (args.field, args.mask, args.magnitude, args.csf_mask) if p is not None]
    from qsmkit.reference import reference_record

    with staged_output(folder, force=args.force, protect=inputs) as stage:
        save_nifti(stage / name, chi, affine, description="susceptibility", unit="ppm")
        record = write_provenance(
            stage,
            command=getattr(args, "command_line", "qsmkit invert"),
            config={"method": args.method, "options": options, "unit": args.unit,
                    "b0_tesla": b0, "echo_time_s": echo_time,
                    "magnitude": args.magnitude is not None,
                    "csf_mask": args.csf_mask is not None},
            inputs=inputs,
            extra={
                "warnings": [w.as_dict() for w in warnings],
                "inversion": inversion_record,
                "voxel_size_mm": list(voxel_size),
                "b0_dir_voxel": np.round(b0_dir, 6).tolist(),
                "timings_s": timer.seconds,
                "sidecar": {k: sidecar[k] for k in ("MagneticFieldStrength", "EchoTime")
                            if k in sidecar},
                # not referenced: chi keeps the inversion's own (arbitrary) zero
                "ChiReference": reference_record(chi, mask, None),
            },
        )
        if provenance is not None:
            record.rename(stage / provenance)
    print_warnings(warnings)
    values = chi[mask]
    print(f"{args.method}: chi on {int(mask.sum())} voxels, median {np.median(values):+.4f} "
          f"ppm, 1-99% {np.percentile(values, 1):+.3f}..{np.percentile(values, 99):+.3f} ppm "
          f"-> {folder / name} ({timer.seconds.get(args.method, 0):.1f} s)")
    return 0


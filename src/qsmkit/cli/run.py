"""``qsmkit run``: multi-echo GRE (DICOM folder, BIDS subject or NIfTI) -> chi map."""

from __future__ import annotations

from pathlib import Path

from qsmkit.cli.common import add_acquisition_arguments, add_force
from qsmkit.pipeline import PRESETS

COMMAND = "run"
ORDER = 10
HELP = "reconstruct a susceptibility map from multi-echo GRE data"
DESCRIPTION = """Reconstruct chi (ppm) from multi-echo gradient-echo data.

Inputs: a DICOM folder, a BIDS subject folder, or --mag/--phase NIfTI files (4D with echoes
last, or one 3D file per echo). Echo times and field strength come from DICOM headers or
JSON sidecars next to the NIfTI files, or from --echo-times/--b0.

Outputs in OUTDIR: chi.nii.gz (ppm), field_hz.nii.gz (total field), local_field_hz.nii.gz,
mask.nii.gz (where chi is valid), brain_mask.nii.gz, r2star.nii.gz (1/s), magnitude.nii.gz,
fit_residual.nii.gz, qsmkit.json (provenance), figures and report.html.

examples:
  qsmkit run dicom/ -o out/
  qsmkit run --mag mag.nii.gz --phase phase.nii.gz --echo-times 0.004,0.008,0.012 --b0 3 -o out/
  qsmkit run sub-01/ -o out/ --preset accurate --reference csf
"""


def add_arguments(parser) -> None:
    add_acquisition_arguments(parser, inputs_help="DICOM folder or BIDS subject folder")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--mask", metavar="MASK",
                        help="brain mask NIfTI (replaces the automatic one)")
    parser.add_argument("--mask-method", choices=["auto", "bet", "robust"],
                        help="automatic mask: bet (whole head), robust (crops, phantoms) or "
                        "auto, which picks one from the field of view (default: auto)")
    parser.add_argument("--preset", default="default", choices=list(PRESETS),
                        help="method set (default: %(default)s)")
    parser.add_argument("--unwrap", metavar="METHOD", help="romeo | laplacian")
    parser.add_argument("--bgremove", metavar="METHOD",
                        help="vsharp | pdf | lbv | sharp | resharp | ismv")
    parser.add_argument("--invert", metavar="METHOD",
                        help="whtv (default) | tv | nltv | medi | rts | tgv | ilsqr | tikhonov "
                        "| tkd")
    parser.add_argument("--lam", metavar="X",
                        help="regularisation weight of the inversion, a number or 'auto' "
                        "(default: auto, chosen from the local field; tgv: alpha1; see "
                        "docs/inversion.md)")
    parser.add_argument("--reference", choices=["brain", "csf", "none"],
                        help="chi reference region (default: brain mean)")
    parser.add_argument("--dicom-out", action="store_true",
                        help="also write chi and R2* as DICOM series (dicom/chi, dicom/r2star)")
    parser.add_argument("--patient-name", metavar="NAME",
                        help="PatientName of the --dicom-out series, e.g. 'Doe^Jane' (default: "
                        "the source DICOM's; empty for NIfTI input)")
    parser.add_argument("--patient-id", metavar="ID",
                        help="PatientID of the --dicom-out series (default: the source DICOM's)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report")
    add_force(parser)


def run(args) -> int:
    import time

    started = time.perf_counter()  # the printed total is the command's wall time
    import numpy as np

    from qsmkit.cli.common import (
        acquisition_input_paths,
        check_acquisition_arguments,
        load_acquisition_from_args,
    )
    from qsmkit.io.output import check_not_overwriting, staged_output
    from qsmkit.pipeline import QSMConfig
    from qsmkit.workflows import RUN_OUTPUTS, reconstruct_and_save

    check_acquisition_arguments(args)
    outdir = Path(args.output)
    check_not_overwriting(outdir, RUN_OUTPUTS, args.force)
    acq = load_acquisition_from_args(args)
    config = QSMConfig.from_preset(args.preset, unwrap=args.unwrap, bgremove=args.bgremove,
                                   invert=args.invert, reference=args.reference,
                                   mask=args.mask_method)
    if args.lam is not None:
        config.invert_options["lam"] = _lam_value(args.lam)
    user_mask = None
    if args.mask:
        from qsmkit.cli.common import load_mask

        user_mask = load_mask(args.mask, acq.shape, acq.affine)
    inputs = acquisition_input_paths(args)
    inputs += [Path(args.mask)] if args.mask else []
    from qsmkit.progress import StageProgress, terminal_progress

    # A bar per stage on a terminal (pipeline stages, maps, figures, DICOM, report).
    n_stages = 6 + 2 + int(bool(args.dicom_out)) + int(not args.no_report)
    with terminal_progress(), staged_output(outdir, force=args.force, protect=inputs) as stage:
        stages = StageProgress(n_stages, desc="qsmkit run")
        try:
            result = reconstruct_and_save(
                acq, config, stage, mask=user_mask, inputs=inputs,
                command=getattr(args, "command_line", "qsmkit run"), dicom_out=args.dicom_out,
                dicom_patient=_dicom_patient(args),
                report=not args.no_report, progress=stages,
            )
        finally:
            stages.close()
    from qsmkit.cli.common import print_warnings

    print_warnings(result.warnings)
    chi = result.chi_ppm[result.local_mask]
    print(f"chi map written to {outdir / 'chi.nii.gz'}: {int(result.local_mask.sum())} voxels, "
          f"median {np.median(chi):+.4f} ppm, 1-99% range "
          f"{np.percentile(chi, 1):+.3f}..{np.percentile(chi, 99):+.3f} ppm; "
          f"total {time.perf_counter() - started:.1f} s (reconstruction "
          f"{sum(result.timings_s.values()):.1f} s; the rest: reading, writing, figures, "
          "report)")
    return 0


def _dicom_patient(args) -> dict:
    """``--patient-name``/``--patient-id`` as DICOM keywords (checked for DICOM limits)."""
    from qsmkit.errors import InputError

    patient = {}
    for keyword, option, value, limit in (
            ("PatientName", "--patient-name", args.patient_name, 64),
            ("PatientID", "--patient-id", args.patient_id, 64)):
        if value is None:
            continue
        if not args.dicom_out:
            raise InputError(f"{option} sets the patient of the DICOM series; add --dicom-out")
        if len(value) > limit or "\\" in value or not value.isprintable():
            raise InputError(f"{option} must be printable, at most {limit} characters and "
                             f"without backslashes, got {value!r}")
        patient[keyword] = value
    return patient


def _lam_value(text: str):
    """``--lam``: ``auto`` or a positive number."""
    from qsmkit.errors import InputError

    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--lam takes a positive number or 'auto', got {text!r}") from None
    if not value > 0:
        raise InputError(f"--lam must be positive, got {text!r}")
    return value

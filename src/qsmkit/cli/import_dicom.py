"""``qsmkit import``: a multi-echo GRE DICOM folder -> magnitude/phase NIfTI + acquisition.json."""

from __future__ import annotations

from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "import"
ORDER = 25
HELP = "convert a multi-echo GRE DICOM folder to magnitude/phase NIfTI and acquisition.json"
DESCRIPTION = """Convert a DICOM folder (Siemens, Philips, GE; classic or enhanced; files in any
order, with or without .dcm, gzip-compressed .gz) to the inputs of every other command.

Outputs in OUTDIR:
  mag.nii.gz, phase.nii.gz   4D (echoes last); phase in radians [-pi, pi), vendor units and
                             GE's phase sign converted
  mag.json, phase.json       dcm2niix-style sidecars (EchoTime, EchoTimes, MagneticFieldStrength,
                             Manufacturer, PhaseEncodingDirection, ...)
  acquisition.json           echo_times_s, b0_tesla, manufacturer, series_description,
                             voxel_size_mm, b0_dir_voxel, affine, notes
  qsmkit.json                provenance

Arrays and affines match dcm2niix's output for the same series. When the folder holds several
GRE series, list them with --list and pick one with --series N (SeriesNumber).

examples:
  qsmkit import dicom/ -o nifti/
  qsmkit import dicom/ --list
  qsmkit import dicom/ -o nifti/ --series 7
  qsmkit run nifti/ -o qsm/
"""


def add_arguments(parser) -> None:
    parser.add_argument("dicom_folder", metavar="DICOM_FOLDER",
                        help="folder with the DICOM files (searched recursively)")
    parser.add_argument("-o", "--output", metavar="OUTDIR", help="output folder")
    parser.add_argument("--series", type=int, metavar="N",
                        help="SeriesNumber to import when the folder holds several GRE series")
    parser.add_argument("--b0", type=float, metavar="TESLA",
                        help="field strength (T) when the headers lack it")
    parser.add_argument("--list", action="store_true",
                        help="list the series found (and which are usable) and exit")
    from qsmkit.cli.common import add_phase_unit

    add_phase_unit(parser)
    add_force(parser)


def run(args) -> int:
    from qsmkit.errors import InputError
    from qsmkit.io.dicom import find_candidates, read_dicom, scan_dicom_folder
    from qsmkit.io.load import IMPORT_NAMES, acquisition_record, save_acquisition
    from qsmkit.io.output import check_not_overwriting, staged_output
    from qsmkit.io.provenance import PROVENANCE_NAME, write_provenance

    folder = Path(args.dicom_folder)
    if args.list:
        all_series = scan_dicom_folder(folder)
        usable = {id(s) for c in find_candidates(all_series) for s in c.series}
        for s in all_series:
            mark = "usable" if id(s) in usable else "not usable"
            print(f"[{mark}] {s.summary()}")
        return 0
    if not args.output:
        raise InputError("give the output folder with -o OUTDIR (or --list to list the series)")
    outdir = Path(args.output)
    check_not_overwriting(outdir, list(IMPORT_NAMES) + [PROVENANCE_NAME], args.force)
    acq = read_dicom(folder, series=args.series, b0_tesla=args.b0,
                     phase_unit=getattr(args, "phase_unit", "auto"))
    with staged_output(outdir, force=args.force, protect=[folder]) as stage:
        save_acquisition(acq, stage)
        write_provenance(
            stage,
            command=getattr(args, "command_line", f"qsmkit import {folder}"),
            config={"series": args.series, "b0_tesla": args.b0},
            inputs=[folder],
            extra={"acquisition": acquisition_record(acq)},
        )
    tes = ", ".join(f"{t * 1000:g}" for t in acq.echo_times_s)
    print(f"imported {acq.series_description or 'series'} ({acq.manufacturer}): "
          f"{acq.n_echoes} echo{'es' if acq.n_echoes != 1 else ''} (TE {tes} ms), "
          f"{'x'.join(str(n) for n in acq.shape)} voxels of "
          f"{'x'.join(f'{v:.3g}' for v in acq.voxel_size)} mm, B0 {acq.b0_tesla:g} T -> {outdir}")
    for note in acq.notes:
        print(f"  note: {note}")
    return 0

"""``qsmkit report``: (re)build the HTML report of a run folder."""

from __future__ import annotations

from pathlib import Path

COMMAND = "report"
ORDER = 90
HELP = "(re)build the HTML report of a run folder"


def add_arguments(parser) -> None:
    parser.add_argument("outdir", metavar="OUTDIR",
                        help="a folder written by qsmkit run, demo or liver")


def run(args) -> int:
    from qsmkit.errors import InputError
    from qsmkit.report.html import write_report

    folder = Path(args.outdir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    if not any((folder / n).exists() for n in ("qsmkit.json", "chi.nii.gz")):
        raise InputError(f"{folder} holds no qsmkit output (no qsmkit.json or chi.nii.gz)")
    path = write_report(folder)
    print(f"report written to {path}")
    return 0

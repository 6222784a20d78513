"""``qsmkit bids``: every multi-echo GRE acquisition of a BIDS dataset, in parallel on Dask."""

from __future__ import annotations

from qsmkit.cli.common import add_phase_unit
from qsmkit.pipeline import PRESETS

COMMAND = "bids"
ORDER = 60
HELP = "process a whole BIDS dataset in parallel (Dask), resumable, with group tables"
DESCRIPTION = """Run the QSM pipeline (and regional iron where a segmentation is found) for
every multi-echo GRE acquisition of a BIDS dataset, writing BIDS derivatives
(_Chimap, _R2starmap, _T2starmap, _mask, _desc-brain_mask, with sidecars naming their
sources) to OUTPUT (default DATASET/derivatives/qsmkit), group tables to OUTPUT/group/ and
a cohort page OUTPUT/index.html. The run folders, group tables and page are listed in
OUTPUT/.bidsignore, so the BIDS validator finds no errors in OUTPUT.

Subjects already completed with the same configuration and inputs are skipped, so an
interrupted run is resumed by running the same command again. One failing subject is
reported and does not stop the others; the exit status is 1 if any failed.

examples:
  qsmkit bids /data/study                        # local cluster sized to this machine
  qsmkit bids /data/study /scratch/out --workers 4 --participant-label 01 02
  qsmkit bids /data/study --scheduler tcp://10.0.0.5:8786   # an existing Dask cluster
"""


def add_arguments(parser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="BIDS dataset root")
    parser.add_argument("output", nargs="?", metavar="OUTPUT",
                        help="derivatives folder (default DATASET/derivatives/qsmkit)")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL",
                        help="only these subjects (with or without 'sub-')")
    parser.add_argument("--session", nargs="+", metavar="LABEL", help="only these sessions")
    parser.add_argument("--preset", default="default", choices=list(PRESETS))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, metavar="N",
                       help="local Dask workers (default: by cores and memory)")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="connect to an existing Dask scheduler (e.g. tcp://host:8786)")
    parser.add_argument("--memory-limit", metavar="SIZE", help="per local worker, e.g. 6GB")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_phase_unit(parser)


def run(args) -> int:
    from qsmkit.cohort import run_cohort
    from qsmkit.errors import InputError

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    if args.memory_limit is not None:
        from dask.utils import parse_bytes

        try:
            limit = parse_bytes(args.memory_limit)
        except (ValueError, TypeError):
            limit = None
        if limit is None or not args.memory_limit.strip() or not 2**28 <= limit <= 2**50:
            raise InputError(f"--memory-limit {args.memory_limit!r} is not a memory size "
                             "between 256MB and 1PB; give e.g. 6GB")
    _check_participants(args.dataset)
    labels = [p[4:] if p.startswith("sub-") else p for p in args.participant_label or []] or None
    sessions = [s[4:] if s.startswith("ses-") else s for s in args.session or []] or None
    summary = run_cohort(
        args.dataset, args.output, participant_label=labels, session=sessions,
        preset=args.preset, workers=args.workers, scheduler=args.scheduler,
        memory_limit=args.memory_limit, progress=not args.no_progress,
        phase_unit=args.phase_unit,
    )
    print(summary.table())
    from qsmkit.cli.common import print_warnings

    for subject in sorted(summary.results, key=lambda r: r["label"]):
        print_warnings(subject.get("warnings"), prefix=f"{subject['label']}: ")
    print(f"derivatives in {summary.output}; cohort page {summary.output / 'index.html'}")
    return 1 if summary.failed else 0


def _check_participants(dataset) -> None:
    """A participants.tsv that is not text stops the run before any subject (it crashed the
    group tables after all subjects had run; issue 16)."""
    import csv
    from pathlib import Path

    from qsmkit.cohort.group import read_participants
    from qsmkit.errors import InputError

    path = Path(dataset) / "participants.tsv"
    try:
        read_participants(Path(dataset))
    except (UnicodeDecodeError, csv.Error, ValueError) as err:
        raise InputError(f"{path} is not UTF-8 tab-separated text ({type(err).__name__}); "
                         "fix or remove it") from None

"""The ``qsmkit`` command. Each sub-command lives in its own module of this package.

A command module defines ``COMMAND`` (its name), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are discovered here, so adding a command touches one file.
Heavy imports belong inside ``run`` so that ``qsmkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import pkgutil
import sys
import traceback
import warnings

from qsmkit import __version__
from qsmkit.errors import InputError


def _command_modules():
    import qsmkit.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in {"main", "common"}:
            continue
        module = importlib.import_module(f"qsmkit.cli.{info.name}")
        if hasattr(module, "COMMAND"):
            yield module


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsmkit",
        description="Quantitative susceptibility mapping: from multi-echo GRE phase to chi "
        "(ppm), and the brain, liver and cohort analyses built on it.",
        epilog="Run 'qsmkit COMMAND --help' for the options of a command. "
        "Start with 'qsmkit demo' to see the whole pipeline on a phantom.",
    )
    parser.add_argument("--version", action="version", version=f"qsmkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = sorted(_command_modules(), key=lambda m: getattr(m, "ORDER", 50))
    for module in modules:
        cmd = sub.add_parser(
            module.COMMAND,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        # -v also after the command; SUPPRESS keeps a -v given before it.
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="print progress details and tracebacks of internal errors")
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    from qsmkit.cli.common import join_number_lists

    # Number lists as "64,64,48" or "64 64 48" (issue 14).
    args = parser.parse_args(join_number_lists(argv))
    args.command_line = "qsmkit " + " ".join(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    if not args.verbose:
        # Libraries with handlers of their own (nibabel's header warnings, dask's scheduler
        # chatter) would print beside qsmkit's one-line messages, some of them twice.
        for name in ("nibabel", "distributed", "dask"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Python warnings of the libraries (numpy's overflow RuntimeWarning with its source
        # line, dask's port notice) are not qsmkit's messages, which never use them: -v shows
        # them (issue 16).
        warnings.simplefilter("ignore")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        _check_values(args, argv)
        return int(args._run(args) or 0)
    except InputError as err:
        print(f"qsmkit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qsmkit metrics ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:
        # The file system refused a path the user gave (missing, not writable, name too long,
        # a file where a folder is needed): a usage error, not a bug.
        print(f"qsmkit {args.command}: error: {_os_error_text(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the last line of defence: never a bare traceback
        if args.verbose:
            traceback.print_exc()
        print(f"qsmkit {args.command}: internal error: {type(err).__name__}: {_one_line(err)} "
              "(rerun with -v for the traceback, and please report it)", file=sys.stderr)
        return 1


ALLOW_INFINITE = {"snr"}
"""Options where +inf means something (``simulate --snr inf``: no noise)."""


def _check_values(args, argv: list[str]) -> None:
    """Refuse an empty output path and NaN or infinite numbers before a command runs."""
    for i, token in enumerate(argv):
        value = argv[i + 1] if token in ("-o", "--output") and i + 1 < len(argv) else (
            token.split("=", 1)[1] if token.startswith("--output=") else None)
        if value is not None and not value.strip():
            raise InputError("the output path (-o) is empty; give a folder or file name")
    for name, value in vars(args).items():
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, float) and not math.isfinite(number) and not (
                    number > 0 and name in ALLOW_INFINITE):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number, "
                                 f"got {number}")


def _one_line(err: BaseException) -> str:
    """The message of an exception on one line."""
    return " ".join(str(err).split())


def _os_error_text(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    if err.filename2:
        where += f" -> {err.filename2}"
    reason = err.strerror or _one_line(err)
    return f"cannot use{where}: {reason}; check the path and its permissions"


if __name__ == "__main__":
    sys.exit(main())

"""The ``qsmkit`` command. Each sub-command lives in its own module of this package.

A command module defines ``COMMAND`` (its name), ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are discovered here, so adding a command touches one file.
Heavy imports belong inside ``run`` so that ``qsmkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

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
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "qsmkit " + " ".join(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except InputError as err:
        print(f"qsmkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qsmkit metrics ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Atomic, non-clobbering output folders.

Files are written into a hidden staging folder beside the destination and moved into place
only when the whole command has succeeded, so a failed or killed run leaves nothing that
looks complete. Existing outputs are replaced only with ``force=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from qsmkit.errors import InputError

STAGING_MARK = ".partial-"
"""Marks a staging folder ``.{name}.partial-<random>`` next to the output folder ``name``."""


def output_name(folder) -> str:
    """The name of the output folder that ``folder`` stands for (its staging folder included)."""
    name = Path(folder).resolve().name
    if name.startswith(".") and STAGING_MARK in name:
        return name[1:name.rindex(STAGING_MARK)]
    return name


def check_outside_inputs(outdir, inputs: Iterable[Path], *,
                         allowed_inside: Iterable[str] = ()) -> None:
    """Raise :class:`InputError` when ``outdir`` is an input or lies inside an input folder.

    Inputs are read-only for qsmkit. ``allowed_inside`` names sub-folders of an input that
    may hold outputs (BIDS ``derivatives``: a derivative dataset never touches raw files).
    """
    out = Path(outdir).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if out == source:
            raise InputError(f"the output {outdir} is the input {given}; inputs are never "
                             "written: choose another output folder")
        if source.is_dir() and source in out.parents:
            inside = out.relative_to(source).parts
            if inside and inside[0] in set(allowed_inside):
                continue
            raise InputError(f"the output {outdir} lies inside the input folder {given}; "
                             "inputs are never written: choose a folder outside it")


def check_not_overwriting(outdir: Path, names: Iterable[str], force: bool) -> None:
    """Raise :class:`InputError` if any of ``names`` already exists in ``outdir``."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output path {outdir} exists and is not a folder")
    if force:
        return
    existing = sorted(n for n in names if (outdir / n).exists())
    if existing:
        raise InputError(
            f"{outdir} already holds {', '.join(existing)}; choose another folder or pass --force"
        )


@contextlib.contextmanager
def staged_output(outdir, *, force: bool = False, protect: Iterable[Path] = ()):
    """Yield a staging folder; on success move its files into ``outdir``.

    ``protect`` lists input paths that must never be overwritten, even with ``force``.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output path {outdir} exists and is not a folder")
    protect = [Path(p) for p in protect]
    check_outside_inputs(outdir, [p for p in protect if p.is_dir()])
    outdir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{outdir.name}{STAGING_MARK}", dir=outdir.parent))
    try:
        yield stage
        # Provenance last: a folder whose qsmkit.json exists is complete, even if the move
        # itself is interrupted.
        produced = sorted((p for p in stage.rglob("*") if p.is_file()),
                          key=lambda p: (p.name == "qsmkit.json", str(p)))
        rel_names = [str(p.relative_to(stage)) for p in produced]
        check_not_overwriting(outdir, rel_names, force)
        protected = {Path(p).resolve() for p in protect}
        for name in rel_names:
            if (outdir / name).resolve() in protected:
                raise InputError(f"refusing to overwrite input file {outdir / name}")
        outdir.mkdir(parents=True, exist_ok=True)
        for src, name in zip(produced, rel_names, strict=True):
            dest = outdir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

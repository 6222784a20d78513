"""Brain analyses on a chi map: regional iron, focal lesions, MS rims, venous oximetry, stats.

Every analysis is a plain function on arrays (``chi_ppm`` (X, Y, Z) float, ``voxel_size`` in
mm, masks and label images on the same grid) that returns a result object with ``rows`` (one
dict per table row, with the column names of the command contract), a ``summary`` dict and the
``parameters`` used. The command modules in :mod:`qsmkit.cli` write the rows with
:func:`format_tsv`, the summary as JSON and a figure made with :func:`new_figure`.

Modules
-------
roi          statistics of chi per label, reference region, z-scores (``qsmkit roi``)
iron         chi <-> iron conversion and the normative table
stats        group comparison: effect sizes, tests, ROC AUC, multiple comparisons
labile_iron  ferritin buffering + Fenton kinetics model (``qsmkit iron-model``)
lesions      microbleeds / calcifications / vein mimics (``qsmkit lesions``)
rims         MS paramagnetic rim lesions (``qsmkit rims``)
oximetry     vein segmentation, Yv, OEF, CMRO2 (``qsmkit oximetry``)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from qsmkit.errors import InputError

__all__ = ["format_tsv", "new_figure", "check_chi", "check_same_grid", "check_voxel_size"]


def _format_cell(value, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    text = str(value)
    return text.replace("\t", " ").replace("\n", " ")


def format_tsv(rows: Iterable[Mapping], columns: Sequence[str] | None = None, *,
               digits: int = 6) -> str:
    """Tab-separated text of ``rows`` (dicts); missing or NaN values are written ``n/a``.

    The ``n/a`` convention is the one of BIDS tabular files, so the tables load directly in
    pandas (``na_values="n/a"``), R (``na.strings="n/a"``) and spreadsheets.
    """
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    lines = ["\t".join(columns)]
    for row in rows:
        lines.append("\t".join(_format_cell(row.get(c), digits) for c in columns))
    return "\n".join(lines) + "\n"


def new_figure(width_in: float = 8.0, height_in: float = 4.0):
    """A matplotlib Figure on an Agg canvas (no pyplot state, safe in threads and servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def check_voxel_size(voxel_size) -> np.ndarray:
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    return vs


def check_chi(chi_ppm) -> np.ndarray:
    """A 3D finite float array of chi (ppm); NaN/inf become 0 only outside any mask use."""
    chi = np.asarray(chi_ppm)
    if chi.ndim == 4 and chi.shape[3] == 1:
        chi = chi[..., 0]
    if chi.ndim != 3:
        raise InputError(f"the chi map must be a 3D volume, got shape {chi.shape}")
    if not np.issubdtype(chi.dtype, np.floating):
        chi = chi.astype(np.float32)
    if not np.all(np.isfinite(chi)):
        chi = np.where(np.isfinite(chi), chi, 0.0).astype(chi.dtype)
    return chi


def check_same_grid(reference: np.ndarray, other, name: str) -> np.ndarray:
    other = np.asarray(other)
    if other.ndim == 4 and other.shape[3] == 1:
        other = other[..., 0]
    if other.shape != reference.shape:
        raise InputError(
            f"{name} has shape {other.shape} but the chi map has shape {reference.shape}; "
            "resample it onto the chi grid first"
        )
    return other

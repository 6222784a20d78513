"""Publication-quality figures of volumes: orthogonal slices with orientation letters.

Display convention (radiological, as PACS viewers show MR):

* axial: the patient's right on the image left, anterior up;
* coronal: the patient's right on the image left, superior up;
* sagittal: anterior on the image left, superior up.

Volumes are reoriented to the closest RAS axis order for display only (the data on disk keep
their native grid, see :func:`to_ras`), and the letters at the four edges of every panel are
derived from the NIfTI affine (:func:`plane_views`, through ``nibabel.aff2axcodes``), not
assumed. For oblique grids the letters name the closest anatomical direction.

χ is shown in grey scale (paramagnetic bright, diamagnetic dark) in a window symmetric about
zero from robust percentiles of χ inside the mask (:func:`chi_window`), so a few outliers at
the brain edge or in large veins cannot hide the tissue contrast. Other signed maps (field)
use a diverging colour map centred on zero; every colour bar carries its unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as path_effects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

SIGNED_CMAP = "RdBu_r"
GREY_CMAP = "gray"
# χ is read in grey scale (paramagnetic bright); the colour map is an option of the viewer.
CHI_CMAP = GREY_CMAP
# Percentiles of χ in the mask that set the symmetric display window (see chi_window).
CHI_WINDOW_PERCENTILES = (2.0, 98.0)

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}

# Display planes of an RAS volume: (name, axis sliced, column axis, row axis, letter wanted on
# the image left, letter wanted at the top).
_PLANES = (
    ("axial", 2, 0, 1, "R", "A"),
    ("coronal", 1, 0, 2, "R", "S"),
    ("sagittal", 0, 1, 2, "A", "S"),
)


def _ras_transform(affine) -> np.ndarray:
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    return nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("R", "A", "S")))


def to_ras(volume: np.ndarray, affine) -> np.ndarray:
    """Reorient ``volume`` (3D or 4D) to the closest RAS axis order, for display."""
    return nib.orientations.apply_orientation(volume, _ras_transform(affine))


def ras_affine(affine, shape) -> np.ndarray:
    """The affine of ``to_ras(volume, affine)`` for a volume of ``shape`` (3 ints)."""
    transform = _ras_transform(affine)
    return np.asarray(affine, float) @ nib.orientations.inv_ornt_aff(transform, tuple(shape[:3]))


def ras_index(index, affine, shape) -> np.ndarray:
    """Voxel index (or (N, 3) indices) of the native grid -> index in ``to_ras`` order."""
    index = np.asarray(index, dtype=float)
    out = np.empty_like(index)
    for axis, (new_axis, flip) in enumerate(_ras_transform(affine)):
        value = index[..., axis]
        out[..., int(new_axis)] = value if flip > 0 else (shape[axis] - 1) - value
    return out


@dataclass(frozen=True)
class PlaneView:
    """How one display plane of an RAS volume is drawn (``imshow(origin="lower")``).

    ``letters`` are the anatomical directions at the image (left, right, bottom, top),
    derived from the affine's axis codes and the flips applied.
    """

    name: str
    axis: int
    column_axis: int
    row_axis: int
    flip_columns: bool
    flip_rows: bool
    letters: tuple[str, str, str, str]

    def image(self, volume_ras: np.ndarray, index: int) -> np.ndarray:
        """The plane ``index`` along ``axis`` as (rows, columns), row 0 at the bottom."""
        plane = np.take(volume_ras, int(index), axis=self.axis)
        # The remaining axes keep their order: column axis first when it is the lower one.
        plane = plane.T if self.column_axis < self.row_axis else plane
        if self.flip_columns:
            plane = plane[:, ::-1]
        if self.flip_rows:
            plane = plane[::-1, :]
        return plane

    def point(self, ras_ijk, shape) -> tuple[float, float]:
        """Image (column, row) coordinates of an RAS voxel index in a plane of ``shape``."""
        col = float(ras_ijk[self.column_axis])
        row = float(ras_ijk[self.row_axis])
        if self.flip_columns:
            col = shape[self.column_axis] - 1 - col
        if self.flip_rows:
            row = shape[self.row_axis] - 1 - row
        return col, row


def plane_views(affine, shape=(1, 1, 1)) -> dict[str, PlaneView]:
    """The axial, coronal and sagittal :class:`PlaneView` of ``to_ras`` volumes of ``affine``.

    The orientation letters come from ``nibabel.aff2axcodes`` of the reoriented affine: a
    column axis that increases towards the letter wanted on the image left is flipped, and
    the letters shown are those of the axes as drawn.
    """
    codes = nib.aff2axcodes(ras_affine(affine, shape))
    views = {}
    for name, axis, col, row, want_left, want_top in _PLANES:
        flip_columns = codes[col] == want_left
        flip_rows = codes[row] != want_top
        left = codes[col] if flip_columns else _OPPOSITE[codes[col]]
        top = _OPPOSITE[codes[row]] if flip_rows else codes[row]
        views[name] = PlaneView(name, axis, col, row, flip_columns, flip_rows,
                                (left, _OPPOSITE[left], _OPPOSITE[top], top))
    return views


def plane_of_axis(affine, axis: int) -> str:
    """Name of the display plane normal to native voxel ``axis`` ("axial", "coronal" or
    "sagittal"), from the axis's closest anatomical direction."""
    ras_axis = int(nib.orientations.io_orientation(np.asarray(affine, float))[axis, 0])
    return {0: "sagittal", 1: "coronal", 2: "axial"}[ras_axis]


def annotate_letters(ax, letters, *, fontsize: float = 9, colour: str = "w") -> None:
    """Write orientation ``letters`` (left, right, bottom, top) at the edges of ``ax``."""
    left, right, bottom, top = letters
    for side, text, xy, ha, va in (("left", left, (0.01, 0.5), "left", "center"),
                                   ("right", right, (0.99, 0.5), "right", "center"),
                                   ("bottom", bottom, (0.5, 0.01), "center", "bottom"),
                                   ("top", top, (0.5, 0.99), "center", "top")):
        ax.annotate(text, xy, xycoords="axes fraction", ha=ha, va=va, color=colour,
                    fontsize=fontsize, fontweight="bold", gid=f"orientation-{side}-{text}",
                    path_effects=[path_effects.withStroke(linewidth=2, foreground="black")])


def orientation_metadata(fig) -> dict[str, str]:
    """PNG metadata naming the orientation letters of every lettered panel of ``fig``.

    ``{"Description": "orientation axial: left R right L bottom P top A; ..."}`` from the
    annotations of :func:`annotate_letters` (panels named by their titles); empty when no
    panel has letters. Pass it to ``fig.savefig(..., metadata=...)``; the report reads it
    back into each figure's caption.
    """
    panels = []
    for index, ax in enumerate(fig.axes):
        sides = {}
        for child in ax.get_children():
            gid = getattr(child, "get_gid", lambda: None)() or ""
            if gid.startswith("orientation-"):
                _, side, letter = gid.split("-", 2)
                sides[side] = letter
        if len(sides) == 4:
            name = " ".join(ax.get_title().split()) or f"panel {index + 1}"
            panels.append(f"{name}: " + " ".join(f"{side} {sides[side]}" for side in
                                                  ("left", "right", "bottom", "top")))
    return {"Description": "orientation " + "; ".join(panels)} if panels else {}


def ras_zooms(affine) -> np.ndarray:
    """Voxel sizes (mm) in ``to_ras`` axis order."""
    affine = np.asarray(affine, dtype=float)
    order = nib.orientations.io_orientation(affine)[:, 0].astype(int)
    zooms = np.empty(3)
    zooms[order] = nib.affines.voxel_sizes(affine)
    return zooms


def oriented_panel(ax, volume, affine, plane: str, centre=None, *, cmap=GREY_CMAP, vmin=None,
                   vmax=None, outline=None, outline_colour="yellow", fontsize: float = 8,
                   projection: str | None = None, ras_slice: int | None = None):
    """Draw one radiological panel of a native-grid ``volume`` on ``ax``, with letters.

    Parameters
    ----------
    ax : matplotlib Axes
    volume : (X, Y, Z) ndarray on the grid of ``affine``
    affine : (4, 4) array
        Voxel-to-world affine (orientation of the display and the letters).
    plane : {"axial", "coronal", "sagittal"}
    centre : 3 numbers, optional
        Native voxel index the slice passes through (default: the middle of the volume);
        ignored when ``projection`` or ``ras_slice`` is given.
    ras_slice : int, optional
        Slice index along the plane normal in ``to_ras`` order (instead of ``centre``).
    projection : {"max", "min", "maxmin"}, optional
        Draw an intensity projection along the plane normal instead of one slice
        ("maxmin": maximum plus minimum, shows both signs).
    outline : (X, Y, Z) bool, optional
        Contour drawn over the image.

    Returns
    -------
    (PlaneView, tuple)
        The view and the RAS shape, so callers can place markers at native voxels ``ijk``:
        ``view.point(ras_index(ijk, affine, volume.shape), ras_shape)``.
    """
    shape = np.shape(volume)
    data = to_ras(np.asarray(volume, dtype=np.float32), affine)
    view = plane_views(affine, shape)[plane]
    if projection is None:
        centre = (np.asarray(shape[:3]) - 1) / 2 if centre is None else centre
        k = (ras_slice if ras_slice is not None
             else round(float(ras_index(centre, affine, shape)[view.axis])))
        k = int(np.clip(k, 0, data.shape[view.axis] - 1))
        image = view.image(data, k)
    else:
        reducers = {"max": (np.max,), "min": (np.min,), "maxmin": (np.max, np.min)}
        flat = sum(f(data, axis=view.axis, keepdims=True) for f in reducers[projection])
        image = view.image(flat, 0)
    zooms = ras_zooms(affine)
    aspect = zooms[view.row_axis] / zooms[view.column_axis]
    ax.imshow(image, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect,
              interpolation="nearest")
    if outline is not None:
        shown = to_ras(np.asarray(outline, bool), affine)
        plane_outline = (view.image(shown, k) if projection is None
                         else view.image(shown.any(axis=view.axis, keepdims=True), 0))
        if plane_outline.any():
            ax.contour(plane_outline.astype(float), levels=[0.5], colors=outline_colour,
                       linewidths=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    annotate_letters(ax, view.letters, fontsize=fontsize)
    return view, data.shape


def robust_limits(volume, mask=None, *, signed=False, percentile=99.0):
    """Display window from percentiles of the values in ``mask`` (symmetric if signed).

    Unsigned: the (100 - percentile)th to percentile-th percentiles. Signed: symmetric about
    zero, ``max(|p_low|, |p_high|)`` of the same two percentiles.
    """
    if mask is not None and np.any(mask):
        values = volume[mask]
    else:
        values = volume[np.isfinite(volume)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    low, high = np.percentile(values, [100 - percentile, percentile])
    if signed:
        limit = float(max(abs(low), abs(high))) or float(np.abs(values).max()) or 1.0
        return -limit, limit
    return float(low), float(high if high > low else low + 1)


def chi_window(chi_ppm, mask=None, *, percentiles=CHI_WINDOW_PERCENTILES) -> float:
    """Half-width (ppm) of the χ display window: symmetric about 0, from robust percentiles.

    ``max(|p_2|, |p_98|)`` of χ inside ``mask`` (default percentiles 2 and 98): the 4 % most
    extreme voxels (veins, bleeds, edge artefacts) saturate instead of compressing the
    tissue contrast into a few grey levels.
    """
    low, high = percentiles
    return robust_limits(np.asarray(chi_ppm, np.float32), mask, signed=True,
                         percentile=max(high, 100 - low))[1]


def orthogonal_slices(
    volume: np.ndarray,
    affine,
    path,
    *,
    title: str,
    unit: str,
    signed: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    mask: np.ndarray | None = None,
    outline: np.ndarray | None = None,
    centre: tuple[int, int, int] | None = None,
    cmap: str | None = None,
) -> Path:
    """Save axial, coronal and sagittal slices (radiological, lettered) as a PNG.

    ``centre`` is a native voxel index (default: the centroid of ``mask``). Signed maps get
    a window symmetric about zero (:func:`robust_limits`) and, unless ``cmap`` is given, the
    diverging :data:`SIGNED_CMAP`.
    """
    volume = np.asarray(volume, dtype=np.float32)
    auto = robust_limits(volume, None if mask is None else np.asarray(mask, bool),
                         signed=signed)
    vmin = auto[0] if vmin is None else vmin
    vmax = auto[1] if vmax is None else vmax
    if centre is None:
        ref = (np.asarray(mask, bool) if mask is not None and np.any(mask)
               else np.isfinite(volume))
        centre = tuple(int(round(c)) for c in np.argwhere(ref).mean(axis=0))
    fig, axes = plt.subplots(1, 3, figsize=(11, 4), dpi=110, constrained_layout=True)
    for ax, (name, *_rest) in zip(axes, _PLANES, strict=True):
        view, ras_shape = oriented_panel(
            ax, volume, affine, name, centre, cmap=cmap or (SIGNED_CMAP if signed else GREY_CMAP),
            vmin=vmin, vmax=vmax, outline=outline, fontsize=9)
        k = int(round(float(ras_index(centre, affine, volume.shape)[view.axis])))
        ax.set_title(f"{name} (slice {k})", fontsize=9)
    bar = fig.colorbar(axes[0].images[0], ax=axes, shrink=0.85, pad=0.01)
    bar.set_label(unit)
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    # The letters drawn, for the report's captions and tests (PNG text chunk).
    fig.savefig(path, metadata=orientation_metadata(fig))
    plt.close(fig)
    return path


def chi_figure(chi_ppm, affine, path, *, mask=None, title: str = "Susceptibility χ",
               cmap: str = CHI_CMAP) -> Path:
    """Orthogonal slices of χ in grey scale (paramagnetic bright) with the robust window of
    :func:`chi_window` (symmetric about zero), radiological and lettered."""
    limit = chi_window(chi_ppm, mask)
    return orthogonal_slices(
        chi_ppm, affine, path, title=f"{title}, window ±{limit:.3g} ppm (2nd–98th percentile "
        "in the mask)", unit="χ (ppm); bright: paramagnetic", signed=True, vmin=-limit,
        vmax=limit, mask=mask, cmap=cmap)


def scatter_truth(estimate_means, truth_means, names, path, *, title, unit="ppm") -> Path:
    """Region means of an estimate against the truth, with the identity line."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110, constrained_layout=True)
    truth = np.asarray(truth_means, float)
    est = np.asarray(estimate_means, float)
    lim = [min(truth.min(), est.min()) - 0.02, max(truth.max(), est.max()) + 0.02]
    ax.plot(lim, lim, color="0.6", lw=1, ls="--", label="identity")
    ax.scatter(truth, est, s=25, color="C3", zorder=3)
    for t, e, n in zip(truth, est, names, strict=True):
        ax.annotate(n, (t, e), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if truth.size >= 2 and np.ptp(truth) > 0:
        slope, intercept = np.polyfit(truth, est, 1)
        ax.plot(lim, slope * np.asarray(lim) + intercept, color="C0", lw=1,
                label=f"fit: slope {slope:.2f}")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel(f"true χ ({unit})")
    ax.set_ylabel(f"reconstructed χ ({unit})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def lcurve_figure(record: dict, path) -> Path | None:
    """The curve the inversion weight was chosen from, with the chosen point marked.

    ``record`` is ``QSMResult.info["inversion"]`` (:func:`qsmkit.inversion.resolve_lambda`):
    left, the L-curve of closed-form Tikhonov (data residual against gradient norm, ppm and
    ppm/mm, log-log); right, the GCV score against the Tikhonov weight (mm^2). Returns
    ``None`` (nothing written) when the weight was not chosen automatically.
    """
    curve = record.get("curve") if isinstance(record, dict) else None
    if not curve:
        return None
    lams = np.asarray(curve["lambdas"], float)
    res = np.asarray(curve["residual_mask_ppm"], float)
    reg = np.asarray(curve["regulariser_ppm_per_mm"], float)
    gcv = np.asarray(curve["gcv"], float)
    i = int(curve["chosen"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4), dpi=110, constrained_layout=True)
    ax1.loglog(res, reg, color="C0", lw=1.2)
    ax1.scatter(res[i], reg[i], color="C3", zorder=3,
                label=f"chosen: Tikhonov {lams[i]:.2g} mm²")
    ax1.set_xlabel("data residual ‖Dχ − f‖ in the mask (RMS, ppm)")
    ax1.set_ylabel("‖∇χ‖ (RMS, ppm/mm)")
    ax1.set_title("L-curve (closed-form Tikhonov)", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.loglog(lams, gcv, color="C0", lw=1.2)
    ax2.scatter(lams[i], gcv[i], color="C3", zorder=3)
    ax2.set_xlabel("Tikhonov weight λ₂ (mm²)")
    ax2.set_ylabel("GCV score (ppm²)")
    lam = record.get("lam")
    ax2.set_title(f"{record.get('principle')}: {record.get('method')} λ = {lam:.2g}",
                  fontsize=10)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

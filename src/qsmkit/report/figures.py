"""Publication-quality figures of volumes: orthogonal slices with orientation letters.

Volumes are reoriented to the closest RAS orientation for display only (the data on disk
keep their native grid). Signed maps (chi, field) use a diverging colour map centred on
zero; every colour bar carries its unit.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as path_effects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

SIGNED_CMAP = "RdBu_r"
GREY_CMAP = "gray"

# Display planes of an RAS volume: (name, axis sliced, letters for left/right/bottom/top).
_PLANES = (
    ("axial", 2, ("R", "L", "P", "A")),
    ("coronal", 1, ("R", "L", "I", "S")),
    ("sagittal", 0, ("P", "A", "I", "S")),
)


def to_ras(volume: np.ndarray, affine) -> np.ndarray:
    """Reorient ``volume`` (3D or 4D) to the closest RAS axis order, for display."""
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    transform = nib.orientations.ornt_transform(ornt, ras)
    return nib.orientations.apply_orientation(volume, transform)


def robust_limits(volume, mask=None, *, signed=False, percentile=99.0):
    """Display window from percentiles of the values in ``mask`` (symmetric if signed)."""
    if mask is not None and np.any(mask):
        values = volume[mask]
    else:
        values = volume[np.isfinite(volume)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    if signed:
        limit = float(np.percentile(np.abs(values), percentile)) or 1.0
        return -limit, limit
    low, high = np.percentile(values, [100 - percentile, percentile])
    return float(low), float(high if high > low else low + 1)


def _slice(volume, axis, index):
    """A display plane of an RAS volume: rows are the second remaining axis (anterior or
    superior up); axial and coronal planes are flipped so the patient's right is on the
    image left (radiological, as the letters say)."""
    plane = np.take(volume, index, axis=axis).T
    return plane[:, ::-1] if axis != 0 else plane


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
    """Save axial, coronal and sagittal slices through ``centre`` (RAS voxel) as a PNG."""
    data = to_ras(np.asarray(volume, dtype=np.float32), affine)
    mask_ras = to_ras(np.asarray(mask, bool), affine) if mask is not None else None
    outline_ras = to_ras(np.asarray(outline, bool), affine) if outline is not None else None
    auto = robust_limits(data, mask_ras, signed=signed)
    vmin = auto[0] if vmin is None else vmin
    vmax = auto[1] if vmax is None else vmax
    if centre is None:
        ref = mask_ras if mask_ras is not None and mask_ras.any() else np.isfinite(data)
        centre = tuple(int(round(c)) for c in np.argwhere(ref).mean(axis=0))
    zooms = nib.affines.voxel_sizes(np.asarray(affine, dtype=float))
    order = nib.orientations.io_orientation(np.asarray(affine, dtype=float))[:, 0].astype(int)
    ras_zooms = np.empty(3)
    ras_zooms[order] = zooms
    fig, axes = plt.subplots(1, 3, figsize=(11, 4), dpi=110, constrained_layout=True)
    image = None
    for ax, (name, axis, letters) in zip(axes, _PLANES, strict=True):
        plane = _slice(data, axis, int(np.clip(centre[axis], 0, data.shape[axis] - 1)))
        shown = [a for a in range(3) if a != axis]
        aspect = ras_zooms[shown[1]] / ras_zooms[shown[0]]
        image = ax.imshow(plane, origin="lower",
                          cmap=cmap or (SIGNED_CMAP if signed else GREY_CMAP),
                          vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
        if outline_ras is not None:
            ax.contour(_slice(outline_ras, axis, centre[axis]).astype(float), levels=[0.5],
                       colors="yellow", linewidths=0.6)
        ax.set_title(f"{name} (slice {centre[axis]})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        left, right, bottom, top = letters
        for text, xy, ha, va in ((left, (0.01, 0.5), "left", "center"),
                                 (right, (0.99, 0.5), "right", "center"),
                                 (bottom, (0.5, 0.01), "center", "bottom"),
                                 (top, (0.5, 0.99), "center", "top")):
            ax.annotate(text, xy, xycoords="axes fraction", ha=ha, va=va, color="w",
                        fontsize=9, fontweight="bold",
                        path_effects=[path_effects.withStroke(linewidth=2, foreground="black")])
    bar = fig.colorbar(image, ax=axes, shrink=0.85, pad=0.01)
    bar.set_label(unit)
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


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

"""Quality-control figures of a reconstruction: residual background field, mask coverage and
echo-fit residual.

Three failure modes account for most unusable χ maps, and each has a picture a reader can
judge at a glance:

* **Incomplete background removal** leaves a smooth offset or gradient in the local field.
  ``qc_background.png`` shows the low-spatial-frequency part of the local field inside the χ
  mask (a Gaussian low-pass normalised to the mask, σ = 8 mm by default) on the colour scale
  of the local field itself, so a residual that matters looks large; its RMS is in the title.
  Local tissue fields change sign over a few millimetres and largely average out; a
  background residual does not (Schweser et al. 2017 review the failure modes).
* **Mask errors** (skull or sinus kept, cortex cut) show as the mask outline on the
  magnitude: ``qc_mask.png`` is a montage of axial slices with the brain mask (yellow) and
  the eroded χ mask (cyan) and their volumes in millilitres.
* **Echo-fit failures** (wraps between echoes, flow, motion) raise the residual of the
  multi-echo field fit: ``qc_residual.png`` shows it in orthogonal slices with its median in
  the mask.

Images are reoriented to RAS for display only and shown in radiological convention (patient
right on the image left), with orientation letters and a unit on every colour bar.

References
----------
Schweser F, Robinson SD, de Rochefort L, Li W, Bredies K. An illustrated comparison of
processing methods for phase MRI and QSM: removal of background field contributions from
sources outside the region of interest. NMR Biomed 2017;30:e3604.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage as ndi  # noqa: E402

from qsmkit.report.figures import (  # noqa: E402
    GREY_CMAP,
    annotate_letters,
    orientation_metadata,
    orthogonal_slices,
    plane_views,
    ras_affine,
    robust_limits,
    to_ras,
)

QC_FIGURES = ("qc_background.png", "qc_mask.png", "qc_residual.png")
BACKGROUND_SIGMA_MM = 8.0

# Units of the echo-fit residual of each total-field method (qsmkit.echo.FIELD_METHODS).
_RESIDUAL_UNITS = {
    "complex": "relative residual |S − fit|² / |S|²",
    "linear": "RMS phase residual (rad)",
}


def _voxel_size(affine) -> np.ndarray:
    return nib.affines.voxel_sizes(np.asarray(affine, dtype=float))


def residual_background(local_field_hz, mask, voxel_size, *, sigma_mm=BACKGROUND_SIGMA_MM):
    """Low-spatial-frequency part of the local field inside ``mask``.

    Parameters
    ----------
    local_field_hz : (X, Y, Z) ndarray, Hz
        Local field after background removal.
    mask : (X, Y, Z) bool
        Region where the local field is valid (the eroded χ mask).
    voxel_size : 3 floats, mm
    sigma_mm : float, mm
        Standard deviation of the Gaussian low-pass.

    Returns
    -------
    (X, Y, Z) float32, Hz
        Normalised convolution ``G * (f m) / G * m`` in the mask, zero outside, so the edge of
        the mask does not pull the estimate towards zero.
    """
    mask = np.asarray(mask, dtype=bool)
    field = np.where(mask, np.asarray(local_field_hz, dtype=np.float32), 0).astype(np.float32)
    sigma = float(sigma_mm) / np.asarray(voxel_size, dtype=float)
    numerator = ndi.gaussian_filter(field, sigma, mode="constant")
    denominator = ndi.gaussian_filter(mask.astype(np.float32), sigma, mode="constant")
    with np.errstate(divide="ignore", invalid="ignore"):
        smooth = np.where(mask & (denominator > 1e-6), numerator / denominator, 0)
    return smooth.astype(np.float32)


def _rms(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def qc_metrics(result, affine, *, sigma_mm=BACKGROUND_SIGMA_MM) -> dict:
    """QC numbers of a :class:`~qsmkit.pipeline.QSMResult` (those in the figure titles).

    Returns
    -------
    dict
        ``mask_ml`` and ``chi_mask_ml`` (mL), ``local_field_rms_hz``,
        ``background_residual_rms_hz`` (Hz, RMS of :func:`residual_background` in the χ
        mask), ``background_residual_fraction`` (ratio of the two RMS values) and
        ``fit_residual_median`` (unit of the field method, NaN without a residual map).
    """
    voxel_size = _voxel_size(affine)
    voxel_ml = float(np.prod(voxel_size)) / 1000.0
    mask = np.asarray(result.mask, dtype=bool)
    local = np.asarray(result.local_mask, dtype=bool)
    background = residual_background(result.local_field_hz, local, voxel_size, sigma_mm=sigma_mm)
    local_rms = _rms(np.asarray(result.local_field_hz)[local])
    background_rms = _rms(background[local])
    residual = getattr(result, "fit_residual", None)
    median = (float(np.median(np.asarray(residual)[mask]))
              if residual is not None and mask.any() else float("nan"))
    return {
        "mask_ml": round(float(mask.sum()) * voxel_ml, 2),
        "chi_mask_ml": round(float(local.sum()) * voxel_ml, 2),
        "local_field_rms_hz": local_rms,
        "background_residual_rms_hz": background_rms,
        "background_residual_fraction": background_rms / local_rms if local_rms > 0 else 0.0,
        "background_sigma_mm": float(sigma_mm),
        "fit_residual_median": median,
    }


def _ras_zooms(affine) -> np.ndarray:
    affine = np.asarray(affine, dtype=float)
    order = nib.orientations.io_orientation(affine)[:, 0].astype(int)
    zooms = np.empty(3)
    zooms[order] = nib.affines.voxel_sizes(affine)
    return zooms


def _axial(volume_ras, k, view):
    """Axial plane k of an RAS volume as an image (``imshow(origin="lower")``) in the
    radiological layout of ``view`` (:func:`qsmkit.report.figures.plane_views`)."""
    return view.image(volume_ras, k)


def mask_montage(magnitude, mask, chi_mask, affine, path, *, title, n_slices=8) -> Path:
    """Axial montage of the magnitude with the brain-mask (yellow) and χ-mask (cyan) outlines."""
    view = plane_views(ras_affine(affine, np.shape(magnitude)))["axial"]
    magnitude = to_ras(np.asarray(magnitude, dtype=np.float32), affine)
    mask = to_ras(np.asarray(mask, dtype=bool), affine)
    chi_mask = to_ras(np.asarray(chi_mask, dtype=bool), affine)
    zooms = _ras_zooms(affine)
    region = mask if mask.any() else np.ones(mask.shape, bool)
    lo, hi = np.argwhere(region).min(axis=0), np.argwhere(region).max(axis=0)
    margin = 4
    x0, x1 = max(lo[0] - margin, 0), min(hi[0] + margin + 1, mask.shape[0])
    y0, y1 = max(lo[1] - margin, 0), min(hi[1] + margin + 1, mask.shape[1])
    n = int(min(n_slices, hi[2] - lo[2] + 1))
    slices = np.unique(np.round(np.linspace(lo[2] + 0.1 * (hi[2] - lo[2]),
                                            hi[2] - 0.1 * (hi[2] - lo[2]), n)).astype(int))
    vmin, vmax = robust_limits(magnitude, region)
    vmin = min(vmin, 0.0)
    columns = min(4, len(slices))
    rows = int(np.ceil(len(slices) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns + 0.8, 2.7 * rows + 0.5),
                             dpi=110, constrained_layout=True, squeeze=False)
    image = None
    aspect = zooms[1] / zooms[0]
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, k in zip(axes.ravel(), slices, strict=False):
        crop = (slice(x0, x1), slice(y0, y1))
        image = ax.imshow(_axial(magnitude[crop], k, view), cmap=GREY_CMAP, vmin=vmin,
                          vmax=vmax, aspect=aspect, interpolation="nearest", origin="lower")
        for outline, colour in ((mask, "yellow"), (chi_mask, "cyan")):
            plane = _axial(outline[crop], k, view).astype(float)
            if plane.any():
                ax.contour(plane, levels=[0.5], colors=colour, linewidths=0.7)
        ax.set_title(f"axial slice {k}", fontsize=8)
        annotate_letters(ax, view.letters, fontsize=8)
    bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01)
    bar.set_label("magnitude (a.u.)")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, metadata=orientation_metadata(fig))
    plt.close(fig)
    return path


def qc_figures(result, affine, folder) -> list[str]:
    """Write ``qc_background.png``, ``qc_mask.png`` and (when the fit has a residual map)
    ``qc_residual.png`` into ``folder``; returns the names written.

    Parameters
    ----------
    result : qsmkit.pipeline.QSMResult
        Uses ``magnitude``, ``mask``, ``local_mask``, ``local_field_hz``, ``fit_residual``
        and ``config.fieldmap``.
    affine : (4, 4) array
        Voxel-to-world affine of the maps (display orientation only).
    folder : path
        Existing output folder.
    """
    folder = Path(folder)
    voxel_size = _voxel_size(affine)
    metrics = qc_metrics(result, affine)
    local = np.asarray(result.local_mask, dtype=bool)
    written = []

    background = residual_background(result.local_field_hz, local, voxel_size)
    limit = robust_limits(np.asarray(result.local_field_hz, np.float32), local, signed=True)[1]
    orthogonal_slices(
        background, affine, folder / "qc_background.png",
        title=(f"Residual background field (local field low-passed, σ {BACKGROUND_SIGMA_MM:g} mm):"
               f" RMS {metrics['background_residual_rms_hz']:.3g} Hz = "
               f"{100 * metrics['background_residual_fraction']:.0f} % of the local field"),
        unit="Hz (window of the local field)", signed=True, vmin=-limit, vmax=limit, mask=local,
        outline=local,
    )
    written.append("qc_background.png")

    mask_montage(
        result.magnitude, result.mask, local, affine, folder / "qc_mask.png",
        title=(f"Mask coverage: brain mask {metrics['mask_ml']:.1f} mL (yellow), "
               f"χ mask {metrics['chi_mask_ml']:.1f} mL (cyan)"),
    )
    written.append("qc_mask.png")

    residual = getattr(result, "fit_residual", None)
    if residual is not None and np.asarray(residual).ndim == 3:
        mask = np.asarray(result.mask, dtype=bool)
        shown = np.where(mask, np.nan_to_num(np.asarray(residual, np.float32)), 0)
        high = robust_limits(shown, mask)[1]
        method = getattr(getattr(result, "config", None), "fieldmap", "")
        unit = _RESIDUAL_UNITS.get(method, "a.u.")
        orthogonal_slices(
            shown, affine, folder / "qc_residual.png",
            title=(f"Echo-fit residual ({method or 'field'} fit): median "
                   f"{metrics['fit_residual_median']:.3g} in the brain mask"),
            unit=unit, vmin=0.0, vmax=max(high, 1e-12), mask=mask, outline=mask, cmap="magma",
        )
        written.append("qc_residual.png")
    return written

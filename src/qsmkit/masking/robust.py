"""Brain(-plus) mask from GRE magnitude: local threshold, opening, largest component, holes.

The magnitude of a head image holds the brain, the scalp and other extra-cranial tissue,
separated from the brain by the dark skull (bone has little signal at the echo times of
QSM). Scalp and fat are often brighter than the brain and receive-coil profiles make the
periphery brighter than the centre, so no single global threshold separates brain from
scalp. The mask is found in five steps:

1. combine echoes by root-sum-of-squares (optionally smooth by ``smooth_mm``);
2. find the head: Otsu's threshold of the *log* intensity separates the noise background
   from tissue whatever the tissue contrast; keep the largest component, fill its holes;
3. keep the voxels brighter than ``threshold`` times the *local* tissue level (a Gaussian
   average of the head over ``local_mm``, normalised by the head fraction): an adaptive
   threshold that follows coil-sensitivity profiles and, next to the bright scalp, rises
   enough to cut the partial-volumed skull between scalp and brain;
4. open by ``opening_mm`` with exact Euclidean distances: keep the largest connected part
   of the foreground lying deeper than ``opening_mm``, grow it back by ``opening_mm`` (plus
   half the smallest voxel size, which restores the voxels that a discrete ball misses on
   curved edges) and intersect with the foreground. Thin bright bridges (less than
   ``2 * opening_mm`` wide) through which the scalp touches the brain are cut, so the scalp
   is discarded with the smaller components while the brain keeps its exact edge;
5. keep the largest component, fill holes (3D, then slice by slice along each axis, so that
   dark ventricles, sinuses and vessels open to the outside through thin channels are
   filled) and optionally erode by ``erode_mm``.

Measured on the vendor field-map heads in ``shared/data`` (3-3.4 mm voxels): masks of
1.45 L (Siemens XA30, partial coverage), 1.80 L (GE, 9 mm slices) and 2.56 L (Philips,
whole head and neck), scalp removed above the skull base, 0.05-0.15 s each.

Limitations: the result is a "brain-plus" mask. Below the skull base the brain stem
continues into the neck and the orbits and sinuses touch the frontal lobes through wide
bright regions, so parts of the face and neck remain in whole-head acquisitions; where the
skull is unresolved (voxels > 3 mm) or thinner than a voxel, scalp can stay attached; the
opening rounds off brain structures thinner than ``2 * opening_mm``. Use ``erode_mm``,
:func:`qsmkit.masking.phase_quality`, a larger ``opening_mm`` or a user mask (e.g. from
FSL BET or SynthStrip) in those cases. Signal dropouts near the sinuses are dark and stay
outside the mask unless enclosed by brain.

References
----------
Otsu N. A threshold selection method from gray-level histograms. IEEE Trans Syst Man Cybern
1979;9:62-66.
Smith SM. Fast robust automated brain extraction. Hum Brain Mapp 2002;17:143-155 (robust
intensity levels and the problem of the scalp touching the brain).
Serra J. Image analysis and mathematical morphology. Academic Press, 1982 (opening,
hole filling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi
from skimage.filters import threshold_otsu

from qsmkit.errors import InputError

OPENING_SLACK_VOXELS = 0.5
"""Extra growth (in units of the smallest voxel size) when undoing the erosion of step 4."""


def combine_echoes(magnitude) -> np.ndarray:
    """Root-sum-of-squares over echoes of a (X, Y, Z[, E]) magnitude, float32 (X, Y, Z)."""
    mag = np.asarray(magnitude)
    if mag.ndim == 4:
        if mag.shape[3] == 1:
            mag = mag[..., 0]
        else:
            mag = np.sqrt(np.sum(np.square(mag, dtype=np.float64), axis=3))
    if mag.ndim != 3 or min(mag.shape) < 2:
        raise InputError(
            f"magnitude must be a 3D volume or a 4D echo series (X, Y, Z, E), got {mag.shape}"
        )
    if not np.all(np.isfinite(mag)):
        raise InputError("magnitude contains NaN or Inf values; replace them before masking")
    return np.abs(mag).astype(np.float32)


def check_voxel_size(voxel_size) -> np.ndarray:
    """Three positive voxel sizes (mm) as a float array, or :class:`InputError`."""
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    return vs


def largest_component(mask: np.ndarray, structure=None) -> np.ndarray:
    """The largest connected component (6-connectivity by default) of a boolean volume."""
    labels, n = ndi.label(mask, structure=structure)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in 3D, then in every 2D slice along each of the three axes."""
    out = ndi.binary_fill_holes(mask)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), dtype=bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = ndi.generate_binary_structure(2, 1)
        out = ndi.binary_fill_holes(out, structure=structure)
    return out


def erode(mask: np.ndarray, voxel_size: Sequence[float], radius_mm: float) -> np.ndarray:
    """Remove the voxels whose centre lies within ``radius_mm`` of the mask surface.

    The surface is taken half the smallest voxel size outside the centres of the edge
    voxels (exact for isotropic voxels), so any ``radius_mm >= min(voxel_size) / 2``
    removes the edge layer; this is erosion by a Euclidean ball of radius
    ``radius_mm + min(voxel_size) / 2``. Outside the array counts as outside the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius_mm <= 0:
        return mask.copy()
    vs = check_voxel_size(voxel_size)
    depth = ndi.distance_transform_edt(np.pad(mask, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    return depth > radius_mm + 0.5 * float(vs.min())


def log_otsu(image: np.ndarray) -> float:
    """Otsu threshold of the log intensity (background versus tissue).

    Intensities are clipped to ``[1e-3, 1] * p99`` first, so zeroed backgrounds and a few
    very bright voxels do not dominate the histogram.
    """
    high = float(np.percentile(image, 99.0))
    clipped = np.clip(image, 1e-3 * high, high)
    return float(np.exp(threshold_otsu(np.log(clipped))))


def robust(
    magnitude,
    voxel_size: Sequence[float],
    *,
    threshold: float = 0.5,
    local_mm: float = 10.0,
    opening_mm: float = 8.0,
    erode_mm: float = 0.0,
    smooth_mm: float = 0.0,
    fill: bool = True,
) -> np.ndarray:
    """Brain(-plus) mask of a GRE magnitude image.

    Parameters
    ----------
    magnitude : (X, Y, Z) or (X, Y, Z, E) array
        Magnitude, any scale; echoes are combined by root-sum-of-squares.
    voxel_size : 3 floats, mm
    threshold : float in (0, 1), default 0.5
        Keep voxels brighter than this fraction of the local tissue level (step 3); never
        below the log-Otsu background threshold.
    local_mm : float, default 10
        Standard deviation (mm) of the Gaussian average that gives the local tissue level.
    opening_mm : float, default 8
        Radius (mm) of the opening that cuts the scalp from the brain; 0 disables it.
    erode_mm : float, default 0
        Final erosion (mm) of the mask.
    smooth_mm : float, default 0
        Gaussian smoothing (standard deviation, mm) of the magnitude first, for very noisy
        data; it also blurs the skull, so keep it below the skull thickness.
    fill : bool, default True
        Fill holes (ventricles, dark vessels, dropouts enclosed by brain).

    Returns
    -------
    mask : (X, Y, Z) bool array
        One connected region.

    Raises
    ------
    InputError
        For a magnitude that is not 3D/4D, not finite or all zero, or invalid options.

    Examples
    --------
    >>> import numpy as np
    >>> x, y, z = np.mgrid[:40, :40, :40] - 19.5
    >>> head = (x**2 + y**2 + z**2 < 15**2).astype(np.float32)
    >>> noise = np.random.default_rng(0).rayleigh(0.05, head.shape)
    >>> bool(np.array_equal(robust(head + noise, (1, 1, 1)), head > 0))
    True
    """
    vs = check_voxel_size(voxel_size)
    mag = combine_echoes(magnitude)
    if not np.any(mag > 0):
        raise InputError("magnitude is all zero; no mask can be found")
    if not 0 < float(threshold) < 1:
        raise InputError(
            f"threshold must be a fraction in (0, 1) of the local tissue level, got {threshold}"
        )
    for name, value in (("local_mm", local_mm), ("opening_mm", opening_mm),
                        ("erode_mm", erode_mm), ("smooth_mm", smooth_mm)):
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"{name} must be a non-negative number of mm, got {value}")
    if not local_mm > 0:
        raise InputError("local_mm must be positive (the width of the local tissue level)")

    image = mag
    if smooth_mm > 0:
        image = ndi.gaussian_filter(image, sigma=smooth_mm / vs, mode="nearest")
    if float(np.percentile(image, 99.0)) <= 0:
        raise InputError("magnitude has signal in under 1% of the voxels; no mask can be found")

    # 2. the head, against the noise background
    background_cut = log_otsu(image)
    head = fill_holes(largest_component(image > background_cut))

    # 3. adaptive threshold relative to the local tissue level within the head
    sigma = local_mm / vs
    weight = ndi.gaussian_filter(head.astype(np.float32), sigma, mode="constant")
    level = ndi.gaussian_filter(np.where(head, image, 0.0), sigma, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(weight > 1e-6, level / weight, 0.0)
    foreground = head & (image > np.maximum(background_cut, float(threshold) * level))

    # 4. opening by exact Euclidean distances
    mask = foreground
    if opening_mm > 0:
        depth = ndi.distance_transform_edt(foreground, sampling=vs)
        core = largest_component(depth > opening_mm)
        if core.any():
            reach = ndi.distance_transform_edt(~core, sampling=vs)
            grow = opening_mm + OPENING_SLACK_VOXELS * float(vs.min())
            mask = (reach <= grow) & foreground

    # 5. one region, holes filled, optional erosion
    mask = largest_component(mask)
    if fill:
        mask = fill_holes(mask)
    if erode_mm > 0:
        mask = largest_component(erode(mask, vs, erode_mm))
    return mask

"""Trim a brain mask to voxels whose wrapped phase is locally consistent (ROMEO-like quality).

Noise-only voxels have random phase: the wrapped phase difference to a neighbour is uniform
on ``[-pi, pi]`` and the phase is not locally linear. In tissue with adequate signal the
differences are small and the phase is locally linear. For neighbours ``i, j`` along an axis
(both inside the mask), with ``d_ij = wrap(phi_j - phi_i)``, the edge weight is

``w_ij = (1 - |d_ij| / pi) * (min(m_i, m_j) / max(m_i, m_j))^2``

(phase coherence times magnitude coherence, two of the ROMEO weights; Dymerska 2021), and a
triple of consecutive voxels has the linearity ``1 - |wrap(d_{i,i+1} - d_{i-1,i})| / pi``
(second difference of the wrapped phase). Per axis, a voxel takes its better edge and the
best triple that contains it, so a voxel at the edge of good tissue is rated through its
inner neighbours; the voxel quality is the mean over the axes of (edge x linearity),
averaged over echoes. Measured: 0.79-0.88 (5th-50th percentile) in tissue at SNR 20,
0.16-0.38 (50th-95th percentile) in pure noise; in the Siemens XA30 in-vivo field map
(3.4 mm) 0.53-0.89 within the brain mask.

:func:`phase_quality` keeps the voxels of ``mask`` with quality >= ``threshold``, then the
largest connected component, and fills enclosed holes, so that low-quality voxels *inside*
the brain (veins, iron-rich nuclei with fast phase changes) are kept while noisy edges and
regions of signal dropout open to the outside are removed.

References
----------
Dymerska B, Eckstein K, Bachrata B, et al. Phase unwrapping with a rapid opensource minimum
spanning tree algorithm (ROMEO). Magn Reson Med 2021;85:2294-2308 (phase coherence,
phase linearity and magnitude coherence weights).
Abdul-Rahman HS, Gdeisat MA, Burton DR, Lalor MJ, Lilley F, Moore CJ. Fast and robust
three-dimensional best path phase unwrapping algorithm. Appl Opt 2007;46:6623-6635 (second
differences of the wrapped phase as a reliability measure).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage as ndi

from qsmkit.errors import InputError
from qsmkit.kernels import ball
from qsmkit.masking.robust import check_voxel_size, fill_holes, largest_component


def _wrap(x):
    return (x + np.pi) % (2.0 * np.pi) - np.pi


def _check_inputs(phase_rad, magnitude, mask):
    phase = np.asarray(phase_rad, dtype=np.float32)
    mag = np.asarray(magnitude, dtype=np.float32)
    msk = np.asarray(mask)
    if phase.ndim == 3:
        phase = phase[..., None]
    if phase.ndim != 4:
        raise InputError(f"phase must be (X, Y, Z) or (X, Y, Z, E), got shape {phase.shape}")
    if mag.ndim == 3:
        mag = np.repeat(mag[..., None], phase.shape[3], axis=3)
    if mag.shape != phase.shape:
        raise InputError(
            f"magnitude {np.asarray(magnitude).shape} and phase {np.asarray(phase_rad).shape} "
            "must have the same grid and number of echoes"
        )
    if msk.shape != phase.shape[:3]:
        raise InputError(f"mask {msk.shape} must be on the phase grid {phase.shape[:3]}")
    if not (np.all(np.isfinite(phase)) and np.all(np.isfinite(mag))):
        raise InputError("phase or magnitude contains NaN or Inf values")
    if float(np.max(np.abs(phase))) > np.pi + 1e-3:
        raise InputError(
            f"phase spans {float(phase.min()):.4g}..{float(phase.max()):.4g}, not radians in "
            "[-pi, pi); convert it to radians first (qsmkit import does this for DICOM)"
        )
    return phase, np.abs(mag), msk.astype(bool)


def _shifted(axis: int, start: int, stop: int, n: int):
    index = [slice(None)] * 3
    index[axis] = slice(start, n + stop)
    return tuple(index)


def _echo_quality(phase: np.ndarray, mag: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxel quality of one echo (float64 (X, Y, Z), zero outside ``mask``).

    Per axis, the best of the two edges to the neighbours (so that a voxel at the edge of
    good tissue is rated by its inner neighbour) times the best linearity of the three
    triples of consecutive voxels that contain it; then the mean over the axes.
    """
    total = np.zeros(mask.shape)
    axes = 0
    for axis in range(3):
        n = mask.shape[axis]
        if n < 3:
            continue
        axes += 1
        lo, hi = _shifted(axis, 0, -1, n), _shifted(axis, 1, 0, n)
        diff = _wrap(phase[hi] - phase[lo])
        both = mask[lo] & mask[hi]
        big = np.maximum(mag[lo], mag[hi])
        with np.errstate(invalid="ignore", divide="ignore"):
            coherence = np.where(big > 0, np.minimum(mag[lo], mag[hi]) / big, 0.0) ** 2
        edge = np.where(both, (1.0 - np.abs(diff) / np.pi) * coherence, 0.0)
        best_edge = np.zeros(mask.shape)
        best_edge[lo] = edge
        best_edge[hi] = np.maximum(best_edge[hi], edge)

        # triple (i, i+1, i+2): second difference of the wrapped phase, stored at i
        first, second = _shifted(axis, 0, -1, n - 1), _shifted(axis, 1, 0, n - 1)
        curvature = _wrap(diff[second] - diff[first])
        valid = both[first] & both[second]
        triple = np.where(valid, 1.0 - np.abs(curvature) / np.pi, 0.0)
        best_line = np.zeros(mask.shape)
        for offset in range(3):  # the voxel is the first, middle or last of the triple
            target = _shifted(axis, offset, offset - 2, n)
            best_line[target] = np.maximum(best_line[target], triple)
        total += best_edge * best_line
    if axes == 0:
        raise InputError("phase quality needs at least 3 voxels along one axis")
    return np.where(mask, total / axes, 0.0)


def phase_quality_map(
    phase_rad, magnitude, mask, voxel_size: Sequence[float], *, smooth_mm: float = 0.0
) -> np.ndarray:
    """Local phase-consistency quality in [0, 1] of each voxel of ``mask`` (float32).

    Parameters
    ----------
    phase_rad : (X, Y, Z) or (X, Y, Z, E) array, wrapped phase in radians
    magnitude : (X, Y, Z) or (X, Y, Z, E) array
    mask : (X, Y, Z) bool array
        Voxels to rate (neighbours outside it are ignored); the result is 0 outside.
    voxel_size : 3 floats, mm
    smooth_mm : float, default 0
        Radius of a ball over which the quality is averaged (within the mask); 0 disables.
    """
    vs = check_voxel_size(voxel_size)
    if not (np.isfinite(smooth_mm) and smooth_mm >= 0):
        raise InputError(f"smooth_mm must be a non-negative number of mm, got {smooth_mm}")
    phase, mag, msk = _check_inputs(phase_rad, magnitude, mask)
    quality = np.zeros(msk.shape)
    for echo in range(phase.shape[3]):
        quality += _echo_quality(phase[..., echo], mag[..., echo], msk)
    quality /= phase.shape[3]
    if smooth_mm > 0:
        element = ball(vs, max(float(smooth_mm), float(vs.min())))
        weights = element.astype(np.float64)
        total = ndi.convolve(quality, weights, mode="constant")
        count = ndi.convolve(msk.astype(np.float64), weights, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            quality = np.where(msk & (count > 0), total / count, 0.0)
    return quality.astype(np.float32)


def phase_quality(
    phase_rad,
    magnitude,
    mask,
    voxel_size: Sequence[float],
    *,
    threshold: float = 0.5,
    smooth_mm: float = 0.0,
) -> np.ndarray:
    """Trim ``mask`` to the connected region where the wrapped phase is reliable.

    Parameters
    ----------
    phase_rad : (X, Y, Z) or (X, Y, Z, E) array, wrapped phase in radians
    magnitude : (X, Y, Z) or (X, Y, Z, E) array
    mask : (X, Y, Z) bool array
        First mask, e.g. from :func:`qsmkit.masking.robust`.
    voxel_size : 3 floats, mm
    threshold : float in (0, 1), default 0.5
        Minimum quality (see :func:`phase_quality_map`) of a kept voxel. Measured: tissue
        at SNR 20 rates 0.79-0.88 (5th-50th percentile), pure noise 0.16-0.38
        (50th-95th percentile).
    smooth_mm : float, default 0
        See :func:`phase_quality_map`.

    Returns
    -------
    mask : (X, Y, Z) bool array, a subset of ``mask``
        Largest connected component of the reliable voxels with enclosed holes filled.
    """
    if not 0 < float(threshold) < 1:
        raise InputError(f"the phase quality threshold must be in (0, 1), got {threshold}")
    quality = phase_quality_map(phase_rad, magnitude, mask, voxel_size, smooth_mm=smooth_mm)
    msk = np.asarray(mask, dtype=bool)
    reliable = largest_component(msk & (quality >= float(threshold)))
    return fill_holes(reliable) & msk

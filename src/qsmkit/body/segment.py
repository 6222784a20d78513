"""Body segmentation for the liver analysis: body mask, subcutaneous fat, automatic liver."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qsmkit.errors import InputError


def body_mask(first_echo, noise_sd: float | None = None) -> np.ndarray:
    """Body without surrounding and internal air from the first-echo magnitude.

    Voxels above ``max(4 sigma, 5 % of the 99th percentile)`` (``10 %`` without a noise
    estimate) — pure Rayleigh noise exceeds ``4 sigma`` with probability 3e-4, and even a
    heavily iron-loaded liver keeps signal at the first echo — restricted to the largest
    connected component. Holes are left open: they are air (lungs, bowel gas).
    """
    from scipy import ndimage

    first = np.asarray(first_echo, dtype=float)
    p99 = float(np.percentile(first, 99))
    if noise_sd is not None and np.isfinite(noise_sd) and noise_sd > 0:
        threshold = max(4.0 * float(noise_sd), 0.05 * p99)
    else:
        threshold = 0.1 * p99
    lab, n = ndimage.label(first > threshold)
    if n == 0:
        raise InputError("no body found in the data (signal everywhere below threshold)")
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def subcutaneous_fat_mask(pdff, body, *, min_pdff: float = 70.0, depth_mm: float = 40.0,
                          voxel_size: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Subcutaneous adipose tissue: fat-dominant voxels (PDFF ≥ ``min_pdff`` %) within
    ``depth_mm`` of the body surface, eroded by one voxel against partial volume."""
    from scipy import ndimage

    body = np.asarray(body, dtype=bool)
    filled = ndimage.binary_fill_holes(body)
    depth = ndimage.distance_transform_edt(filled, sampling=voxel_size)
    sat = body & (np.asarray(pdff) >= min_pdff) & (depth <= depth_mm)
    eroded = ndimage.binary_erosion(sat)
    return eroded if eroded.sum() >= 10 else sat


def find_liver(s0, pdff, r2star_per_s, body, voxel_size: Sequence[float], *, affine=None,
               tolerance: float = 0.25) -> np.ndarray:
    """Heuristic automatic liver region (use ``--labels`` for reliable results).

    The liver is taken as the homogeneous water-dominant tissue grown from the deepest point
    of the water-dominant tissue on the subject's right (world +x of the RAS affine; array
    axis 0 increasing when no affine is given): neighbours join while their proton density,
    fat fraction and log R2* stay within ``tolerance`` (relative; PDFF within 10 points) of
    the seed neighbourhood's medians. The result is eroded by one voxel.
    """
    from scipy import ndimage

    body = np.asarray(body, dtype=bool)
    s0 = np.asarray(s0, dtype=float)
    pdff = np.asarray(pdff, dtype=float)
    r2 = np.maximum(np.asarray(r2star_per_s, dtype=float), 1.0)
    filled = ndimage.binary_fill_holes(body)
    depth = ndimage.distance_transform_edt(filled, sampling=voxel_size)
    tissue = body & (pdff < 50.0) & (depth > 15.0)
    idx = np.indices(body.shape).reshape(3, -1).T.astype(float)
    if affine is not None:
        world_x = (idx @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine)[:3, 3])[:, 0]
    else:
        world_x = idx[:, 0]
    world_x = world_x.reshape(body.shape)
    centre = np.median(world_x[body])
    right = tissue & (world_x > centre)
    if right.sum() < 10:
        raise InputError("cannot find the liver automatically; give --labels with a liver mask")
    inner = ndimage.distance_transform_edt(right, sampling=voxel_size)
    seed = np.unravel_index(int(np.argmax(inner)), body.shape)
    sl = tuple(slice(max(0, c - 2), c + 3) for c in seed)
    nb = right[sl]
    med_s0 = np.median(s0[sl][nb])
    med_pd = np.median(pdff[sl][nb])
    med_r2 = np.median(np.log(r2[sl][nb]))
    similar = (
        tissue
        & (np.abs(np.log(np.maximum(s0, 1e-12) / med_s0)) < tolerance)
        & (np.abs(pdff - med_pd) < 10.0)
        & (np.abs(np.log(r2) - med_r2) < 2 * tolerance)
    )
    similar = ndimage.binary_opening(similar)
    lab, _ = ndimage.label(similar)
    seed_label = lab[seed]
    if seed_label == 0:
        # the seed itself fell out (e.g. where liver segments of different iron meet):
        # take the component that fills most of the seed neighbourhood instead
        near = lab[sl][lab[sl] > 0]
        if near.size == 0:
            raise InputError("cannot find the liver automatically; give --labels with a "
                             "liver mask")
        seed_label = np.bincount(near).argmax()
    liver = lab == seed_label
    eroded = ndimage.binary_erosion(liver)
    return eroded if eroded.sum() >= 10 else liver



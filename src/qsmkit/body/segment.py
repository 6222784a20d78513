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


RAYLEIGH_MEAN = float(np.sqrt(np.pi / 2))
"""Mean magnitude of pure complex Gaussian noise in units of its per-channel SD."""
RAYLEIGH_SD = float(np.sqrt(2 - np.pi / 2))
"""SD of that magnitude, in the same units."""


def decayed_tissue(first_echo, body, noise_sd: float, voxel_size: Sequence[float], *,
                   min_ml: float = 20.0, z: float = 5.0,
                   min_coherence: float = 0.6) -> np.ndarray:
    """Enclosed voxels left out of ``body`` whose first echo is signal, not noise.

    An organ whose iron has taken most of its signal before the first echo (a liver of LIC
    35 mg/g at 3 T keeps about 4 % of it at 1.2 ms, twice the noise at SNR 60) falls below
    the threshold of :func:`body_mask` and is taken for air, like lung and bowel gas. Voxel by
    voxel it cannot be told from noise, but over a 3 × 3 × 3 neighbourhood it can: noise has
    a mean magnitude of ``1.25 sigma`` (Rayleigh) and a phase that turns at random, tissue a
    higher mean and a phase that holds. A voxel of the holes of ``body`` (eroded by one voxel
    against the partial volume of their walls) is tissue when the mean magnitude of the hole
    voxels around it is more than ``z`` standard errors above the Rayleigh mean and the
    resultant of their unit phasors is above ``min_coherence`` (noise: ``1/sqrt(n)``, 0.19
    for 27). Connected parts smaller than ``min_ml`` are dropped.

    ``first_echo`` is complex (magnitude and phase of the first echo); ``noise_sd`` the
    per-channel noise SD.
    """
    from scipy import ndimage

    body = np.asarray(body, dtype=bool)
    first_echo = np.asarray(first_echo)
    empty = np.zeros(body.shape, bool)
    if not (np.isfinite(noise_sd) and noise_sd > 0):
        return empty
    vs = np.asarray(voxel_size, dtype=float)
    thin = int(np.argmin(np.asarray(body.shape) * vs))
    holes = ndimage.binary_erosion(_fill_enclosed(body, thin) & ~body)
    if not holes.any():
        return empty
    def box_mean(x):  # mean over the 3 x 3 x 3 neighbourhood, zero beyond the grid
        return ndimage.uniform_filter(np.asarray(x, dtype=float), size=3, mode="constant")

    share = box_mean(holes)
    count = np.rint(27.0 * share)
    magnitude = np.abs(first_echo).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = box_mean(np.where(holes, magnitude, 0.0)) / share
        unit = np.where(holes & (magnitude > 0), first_echo / np.maximum(magnitude, 1e-30), 0)
        resultant = np.hypot(box_mean(unit.real), box_mean(unit.imag)) / share
    standard_error = RAYLEIGH_SD * noise_sd / np.sqrt(np.maximum(count, 1.0))
    tissue = (holes & (count >= 9) & (mean > RAYLEIGH_MEAN * noise_sd + z * standard_error)
              & (resultant > min_coherence))
    lab, n = ndimage.label(tissue)
    if n == 0:
        return empty
    sizes_ml = np.bincount(lab.ravel())[1:] * float(np.prod(vs)) / 1000.0
    return np.isin(lab, 1 + np.flatnonzero(sizes_ml >= min_ml))


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


def _robust_sd(values) -> float:
    """Normal-consistent median absolute deviation."""
    values = np.asarray(values, dtype=float)
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _fill_enclosed(mask, thin_axis: int) -> np.ndarray:
    """Fill holes in 3D and in every slice across ``thin_axis`` (a thin slab leaves holes
    open at its faces)."""
    from scipy import ndimage

    out = ndimage.binary_fill_holes(mask)
    moved = np.moveaxis(out, thin_axis, 0)
    for k in range(moved.shape[0]):
        moved[k] = ndimage.binary_fill_holes(moved[k])
    return out


def _close_in_slices(mask, voxel_size, radius_mm: float, thin_axis: int) -> np.ndarray:
    """Morphological closing with a disc of ``radius_mm`` in every slice across
    ``thin_axis`` (the array border does not erode)."""
    from scipy import ndimage

    axes = [a for a in range(3) if a != thin_axis]
    vs = np.asarray(voxel_size, dtype=float)
    half = [max(1, int(round(radius_mm / vs[a]))) for a in axes]
    grid = np.ogrid[-half[0]:half[0] + 1, -half[1]:half[1] + 1]
    disc = ((grid[0] * vs[axes[0]] / radius_mm) ** 2
            + (grid[1] * vs[axes[1]] / radius_mm) ** 2) <= 1.0
    structure = np.expand_dims(disc, thin_axis)
    pad = [(0, 0)] * 3
    for a, h in zip(axes, half, strict=True):
        pad[a] = (h, h)
    padded = np.pad(np.asarray(mask, bool), pad)
    closed = ndimage.binary_closing(padded, structure=structure)
    return closed[tuple(slice(p0, n - p1) for (p0, p1), n in zip(pad, padded.shape, strict=True))]


LEFT_ORGAN_RATIO = 2.0
""":func:`find_liver` takes a separate organ grown on the subject's left instead of the one
on the right when it is more than twice as large: the liver (about 1.5 L) is several times a
normal spleen (about 0.2 L), while a wrong affine puts the liver on the left."""


def find_liver(s0, pdff, r2star_per_s, body, voxel_size: Sequence[float], *, affine=None,
               tolerance: float = 0.25, iterations: int = 4,
               close_mm: float = 10.0, r2star_fat_blind_per_s: float = 400.0) -> np.ndarray:
    """Heuristic automatic liver region (use ``--labels`` for reliable results).

    The liver is grown from the deepest point of the water-dominant tissue on the subject's
    right (world +x of the RAS affine; array axis 0 increasing when no affine is given), and
    an organ is grown from the left as well: that one is taken when the growth from the right
    has leaked into it or when, separate, it is more than :data:`LEFT_ORGAN_RATIO` times as
    large (an affine whose sides are wrong puts the liver on the left). The growth runs on
    median-filtered (3 voxels per axis) proton density, PDFF and log R2*, so that the texture
    of a cirrhotic liver (regenerative nodules, septa) and the noise do not break it up.
    The growth is a region-statistics one (Adams & Bischof 1994, robust variant): starting
    from the seed neighbourhood, voxels connected to the region join while

    * their log proton density is within ``min(tolerance, max(0.05, 3 s))`` of the region's
      median (``s`` the region's robust standard deviation: the proton density is what tells
      the liver from the body wall and, with R2*, from spleen and kidney),
    * their PDFF is within ``max(25, 3 s)`` points of the region's median and below 50 %
      (liver of a different fat content stays; fatty marrow and adipose tissue do not),
    * their log R2* is not more than ``max(2 tolerance, 3 s)`` below the region's median
      (spleen and kidney have less iron than liver); voxels above that by as much join
      whatever their fitted proton density, so long as it is more than half the region's,
      and whatever their fitted PDFF where R2* exceeds ``r2star_fat_blind_per_s`` (default
      400 1/s, T2* 2.5 ms: the fat-water fit of clinical echo trains loses the fat
      fraction there; elsewhere they must be water-dominant): iron-rich parts of the liver
      must not be cut off; and once the region's own median R2* is beyond that limit (a
      liver whose iron has taken its signal by the second echo, whose proton density is an
      extrapolation that scatters), its voxels beyond the limit need only more than half its
      proton density,

    and the statistics are recomputed from the grown region (``iterations`` times at most),
    keeping each time the connected component that holds most of the region grown so far (a
    seed in a focal patch of other iron, an iron-sparing area of a loaded liver, fails the
    statistics of the organ it grew: following the seed returned that patch, 14–75 voxels).
    Enclosed holes (focal nodules of other iron or fat, vessels, cysts) are filled, in 3D
    and slice by slice across the slab (the axis shortest in mm), since they are part of the organ
    (and nodules are searched in it); a closing with a disc of ``close_mm`` (default 10 mm,
    the radius of a 2 cm nodule) in each slice, within the body, first joins the holes
    that a vessel or the liver surface leaves open. The result is eroded by one voxel in the body
    (not at the faces of the field of view) against partial volume.

    References
    ----------
    Adams R, Bischof L. Seeded region growing. IEEE Trans Pattern Anal Mach Intell
        1994;16:641-647.
    """
    from scipy import ndimage

    body = np.asarray(body, dtype=bool)
    vs = np.asarray(voxel_size, dtype=float)
    s0 = np.where(body, np.asarray(s0, dtype=float), 0.0)
    pdff = np.where(body, np.asarray(pdff, dtype=float), 0.0)
    log_r2 = np.log(np.maximum(np.asarray(r2star_per_s, dtype=float), 1.0))
    log_pd = np.log(np.maximum(ndimage.median_filter(s0, size=3), 1e-12))
    pdff_m = ndimage.median_filter(pdff, size=3)
    log_r2_m = ndimage.median_filter(log_r2, size=3)
    filled = ndimage.binary_fill_holes(body)
    depth = ndimage.distance_transform_edt(filled, sampling=vs)
    inside = body & (depth > 5.0)
    tissue = inside & (pdff_m < 50.0)
    idx = np.indices(body.shape).reshape(3, -1).T.astype(float)
    if affine is not None:
        world_x = (idx @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine)[:3, 3])[:, 0]
    else:
        world_x = idx[:, 0]
    world_x = world_x.reshape(body.shape)
    centre = np.median(world_x[body])
    deep = tissue & (depth > 15.0)

    def grow(side):
        """The region grown from the deepest point of ``side`` and that point (None, None if
        there is none)."""
        if side.sum() < 10:
            return None, None
        inner = ndimage.distance_transform_edt(side, sampling=vs)
        seed = np.unravel_index(int(np.argmax(inner)), body.shape)
        sl = tuple(slice(max(0, c - 2), c + 3) for c in seed)
        region = np.zeros(body.shape, bool)
        region[sl] = side[sl]
        for step in range(max(1, int(iterations))):
            med_pd, sd_pd = np.median(log_pd[region]), _robust_sd(log_pd[region])
            med_ff, sd_ff = np.median(pdff_m[region]), _robust_sd(pdff_m[region])
            med_r2, sd_r2 = np.median(log_r2_m[region]), _robust_sd(log_r2_m[region])
            tol_r2 = max(2.0 * tolerance, 3.0 * sd_r2)
            same_pd = np.abs(log_pd - med_pd) < min(tolerance, max(0.05, 3.0 * sd_pd))
            if med_r2 > np.log(r2star_fat_blind_per_s):
                # an organ whose iron has taken its signal by the second echo: the proton
                # density of its decayed voxels is an extrapolation that scatters by tens of
                # per cent (log SD 0.45 at 3 T, R2* 1500 1/s); those voxels (beyond the
                # fat-blind R2*, which the tissue around the liver is not) need only more
                # than half the region's, as the iron-rich parts below
                same_pd |= (log_pd - med_pd > np.log(0.5)) & (
                    log_r2_m > np.log(r2star_fat_blind_per_s))
            similar = (
                tissue
                & same_pd
                & (np.abs(pdff_m - med_ff) < max(25.0, 3.0 * sd_ff))
                & (log_r2_m - med_r2 > -tol_r2)
            )
            iron_rich = ((tissue | (inside & (log_r2_m > np.log(r2star_fat_blind_per_s))))
                         & (log_r2_m - med_r2 > tol_r2) & (log_pd - med_pd > np.log(0.5)))
            similar = ndimage.binary_opening(similar | iron_rich)
            lab, _ = ndimage.label(similar)
            # the component that keeps most of the region grown so far (at first, of the
            # seed's neighbourhood): a seed in a focal patch of other iron (a nodule, an
            # iron-sparing area of a loaded liver) fails the statistics of the organ it
            # grew, and following the seed would trade the organ for that patch
            near = lab[region][lab[region] > 0]
            if near.size == 0:
                return (region, seed) if step > 0 else (None, None)
            grown = lab == np.bincount(near).argmax()
            if np.array_equal(grown, region):
                break
            region = grown
        return region, seed

    # the liver is on the subject's right. The organ grown from the left (the spleen, or the
    # liver itself when the affine's sides are wrong) is taken instead when the growth from
    # the right has leaked into it (it holds the left seed or most of the left organ, not
    # the other way round), or when the two are separate and the left one is clearly the
    # larger: the liver is several times the volume of a normal spleen
    region, seed_r = grow(deep & (world_x > centre))
    other, seed_l = grow(deep & (world_x <= centre))
    if other is not None:
        if region is None:
            region = other
        else:
            # "holds": has its seed or most of it (a seed in a focal patch can be left out
            # of a growth that took in the rest of the organ)
            def holds(a, b, seed_b):
                return bool(a[seed_b]) or (a & b).sum() > 0.5 * b.sum()

            right_holds_left = holds(region, other, seed_l)
            left_holds_right = holds(other, region, seed_r)
            if right_holds_left and not left_holds_right:
                region = other
            elif not (right_holds_left or left_holds_right) and (
                    other.sum() > LEFT_ORGAN_RATIO * region.sum()):
                region = other
    if region is None:
        raise InputError("cannot find the liver automatically; give --labels with a liver mask")
    thin = int(np.argmin(np.asarray(body.shape) * vs))  # the slab axis (shortest in mm)
    liver = _fill_enclosed(region, thin)
    if close_mm > 0:
        liver = _fill_enclosed(_close_in_slices(liver, vs, close_mm, thin) & body, thin)
    liver &= filled
    eroded = ndimage.binary_erosion(liver, border_value=1)
    return eroded if eroded.sum() >= 10 else liver

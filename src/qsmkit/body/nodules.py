"""Focal nodules in a (cirrhotic) liver from χ and R2* maps: detection and iron classification.

A nodule is a compact region whose susceptibility χ and R2* differ from the *surrounding*
liver. Each map is compared with a local background (a robust, liver-only weighted mean over a
few centimetres) in units of the background's robust spread; a hysteresis threshold of the
larger of the two z-scores gives candidates; candidates that are too small to measure, that
lie on the liver edge or on the volume boundary, or that are tubular (vessels) are rejected;
the rest are classed by the sign of *both* contrasts:

- ``siderotic``: χ and R2* both above the background (iron-rich regenerative or dysplastic
  nodule; Zhang & Krinsky 2004);
- ``iron-sparing``: χ and R2* both below the background (a nodule that escapes the iron
  deposition of a siderotic liver; iron-free foci in siderotic nodules are a marker of
  incipient neoplasia, Terada & Nakanuma 1989; see also Ito et al. 1999);
- ``indeterminate``: the two contrasts disagree or one is weak (fat, haemorrhage, calcium,
  vessel partial volume, noise).

The detector takes maps (χ in ppm, R2* in 1/s, PDFF in %, a liver mask, the voxel size in mm)
and knows nothing of how they were made. Given also the field the χ map was made from
(``field_hz``, its weight and B0), each finding's susceptibility contrast is measured from the
field the finding makes (:func:`local_field_susceptibility`, one number fitted to hundreds of
field values) instead of being read from the voxel-wise map, and the class uses that
contrast: on an independently simulated cirrhotic liver, classes from the voxel-wise liver χ
were right for 0 of 8 nodules at 1.5 T and at 3 T (all indeterminate: contrasts too weak or
of the wrong sign), from the local fit for every nodule found (see docs/liver.md). Dark
findings whose R2* is that of fluid (cyst, bile duct, blood) are not iron-sparing nodules.
It makes no diagnosis: see :data:`STATEMENT`.

References
----------
.. [1] Terada T, Nakanuma Y. Iron-negative foci in siderotic macroregenerative nodules in human
   cirrhotic liver: a marker of incipient neoplastic lesions. Arch Pathol Lab Med
   1989;113:916-920.
.. [2] Ito K, Mitchell DG, Gabata T, et al. Hepatocellular carcinoma: association with increased
   iron deposition in the cirrhotic liver at MR imaging. Radiology 1999;212:235-240.
.. [3] Zhang J, Krinsky GA. Iron-containing nodules of cirrhosis. NMR Biomed 2004;17:459-464.
.. [4] American College of Radiology. CT/MRI Liver Imaging Reporting and Data System (LI-RADS)
   v2018 core. (Observations < 10 mm cannot be categorised above LR-4 without growth.)
.. [5] Knutsson H, Westin CF. Normalized and differential convolution. Proc IEEE CVPR 1993;
   515-523.
.. [6] Beaton AE, Tukey JW. The fitting of power series, meaning polynomials, illustrated on
   band-spectroscopic data. Technometrics 1974;16:147-185.
.. [8] Schwenzer NF, Machann J, Haap MM, et al. T2* relaxometry in liver, pancreas, and
   spleen in a healthy cohort of one hundred twenty-nine subjects: correlation with age,
   gender, and serum ferritin. Invest Radiol 2008;43:854-860.
.. [9] Lindeberg T. Feature detection with automatic scale selection. Int J Comput Vis
   1998;30:79-116.
.. [10] Frangi AF, Niessen WJ, Vincken KL, Viergever MA. Multiscale vessel enhancement
   filtering. MICCAI 1998, LNCS 1496:130-137.
.. [7] de Rochefort L, Nguyen T, Brown R, et al. In vivo quantification of contrast agent
   concentration using the induced magnetic field for time-resolved arterial input function
   measurement with MRI. Med Phys 2008;35:5328-5339.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage

from qsmkit.errors import InputError

CLASSES = ("siderotic", "iron-sparing", "indeterminate")

#: What a finding does and does not mean; written into nodules.json and printed by the CLI.
STATEMENT = (
    "Nodule findings are image features, not a diagnosis. A 'siderotic' finding is a compact "
    "region whose susceptibility and R2* are both above the surrounding liver (iron-rich "
    "regenerative or dysplastic nodule); an 'iron-sparing' finding has both below the "
    "surrounding liver: in a siderotic (iron-loaded) liver a nodule that escapes iron "
    "deposition is a warning sign for hepatocellular carcinoma and warrants multiphasic "
    "contrast-enhanced CT or MRI and reporting per LI-RADS; it does not by itself establish "
    "malignancy, and in a liver without iron overload the contrast is small and the class is "
    "unreliable. 'indeterminate' means the two contrasts disagree (fat, haemorrhage, "
    "calcification, vessel partial volume or noise). Absence of findings does not exclude a "
    "lesion: nodules under about 1 cm, nodules at the liver surface or the edge of the slab, "
    "and lesions without an iron contrast (most HCC in a liver without iron overload) are not "
    "detected by this method."
)

TABLE_COLUMNS = (
    "id", "class", "volume_ml", "diameter_mm", "largest_dimension_mm", "centroid_voxel",
    "chi_ppm", "r2star_per_s",
    "pdff_percent", "background_chi_ppm", "background_r2star_per_s", "delta_chi_ppm",
    "r2star_ratio", "z_chi", "z_r2star", "delta_chi_sd_ppm", "chi_source", "thumbnail",
)


@dataclass
class NoduleParameters:
    """Detection parameters (lengths in mm, thresholds in robust SD units of the background).

    ``background_radius_mm``: scale of the local background (Gaussian σ is half of it); it
    must exceed the largest nodule radius so that the background is the surrounding liver.
    ``smooth_mm``: σ of the small smoothing of the residual before the z-score (noise).
    ``z_high``/``z_low``: hysteresis thresholds of max(z_χ, z_R2*) (and of the same for
    −z: bright and dark candidates are found apart).
    ``z_class``: both mean contrasts must reach this with one sign for a class.
    ``min_diameter_mm``: smallest equivalent-sphere diameter reported: at 2×2×4 mm a 1 cm
    nodule is ~30 voxels over 2-3 slices; below that partial volume and the texture of a
    cirrhotic liver (regenerative nodules of 3-10 mm) dominate, and LI-RADS does not
    categorise observations under 10 mm above LR-4 [4]. The default, 8 mm, allows for the
    shrinkage of a 10 mm nodule by partial volume at the threshold.
    ``min_voxels``: a finding must be resolved by the grid (matters for coarse voxels, where
    one voxel can exceed ``min_diameter_mm``).
    ``max_elongation``/``max_fill``: tubularity limits (ratio of the principal axes, and
    volume over the volume of the largest inscribed ball) above which a component is a vessel;
    the fill limit (branching) does not apply to components brighter than the liver on R2*
    by ``min_r2star_ratio`` (storage iron raises R2*, blood does not).
    ``opening_mm``: radius of the morphological opening of the candidates (cuts necks).
    ``min_radius_near_vessel_mm``: a piece cut by the opening from a tubular candidate is kept
    only if its inscribed radius reaches this (thicker than the vessel it touched).
    A part cut from a tubular (or slab-edge) candidate is reported only with a class: one
    whose two contrasts disagree is a vessel junction, not an indeterminate finding.
    ``min_inscribed_radius_mm``: the component must contain a ball of this radius (a nodule of
    at least 1 cm, not a sheet or a cluster of texture voxels) as far as the grid can hold
    it (:func:`grid_inscribed_radius_mm`: with 4 mm slices a 1 cm nodule may be two slices,
    8 mm, thick); a finding thinner than this radius must show the square of
    ``min_r2star_ratio`` as its R2* contrast (clusters of regenerative nodules of that size
    reach 1.5-1.7x).
    ``min_blob_curvature_ratio``: a component that touches a tubular candidate and is
    thinner than ``min_radius_near_vessel_mm`` is kept if its contrast is blob-shaped at its
    own scale: the least principal curvature at least this fraction of the greatest
    (:func:`blob_curvatures`; ~1 for a ball, ~0 along a vessel); it is then reported only
    with a class. A thick part (one that holds the ``min_radius_near_vessel_mm`` ball) is
    examined only if it holds a blob centre at ``min_inscribed_radius_mm`` or is blob-shaped
    by this ratio at its own scale (a stretch of a vein that partial volume thickens is not).
    An R2*-bright component (by ``min_r2star_ratio`` squared) that is smaller or thinner
    than the limits is examined if its largest in-plane dimension reaches
    ``min_diameter_mm`` (:func:`largest_section_mm`; the R2* contrast of an iron-rich
    nodule vanishes in the slices it fills in part), and is then reported only with a class.
    ``min_r2star_ratio``: effect size: the nodule's median R2* must differ from the
    background by this factor (up or down); siderotic nodules are conspicuous on GRE images
    [3] and smaller ratios are within the texture of a cirrhotic liver.
    ``edge_mm``: a component with more than ``max_edge_fraction`` of its voxels within this
    distance of the liver boundary is rejected (partial volume with neighbouring organs).
    ``fluid_r2star_per_s_at_1p5t``: a dark component whose median R2* is below this (scaled
    by B0/1.5 T; needs ``b0_tesla``) is fluid, not liver tissue (simple cyst, bile duct,
    blood: T2* of 70 ms or more), and is not reported as an iron-sparing nodule: liver
    parenchyma without iron has R2* of about 25-40 1/s at 1.5 T (T2* 25-40 ms; Schwenzer et
    al. 2008 [8]_) and about twice that at 3 T.
    """

    background_radius_mm: float = 30.0
    smooth_mm: float = 2.0
    z_high: float = 5.0
    z_low: float = 2.5
    z_class: float = 2.0
    min_diameter_mm: float = 8.0
    min_voxels: int = 8
    max_elongation: float = 2.5
    max_fill: float = 4.0
    edge_mm: float = 4.0
    opening_mm: float = 3.0
    min_radius_near_vessel_mm: float = 6.0
    min_inscribed_radius_mm: float = 5.0
    min_r2star_ratio: float = 1.5
    min_blob_curvature_ratio: float = 0.5
    max_edge_fraction: float = 0.5
    fluid_r2star_per_s_at_1p5t: float = 15.0
    tukey_c: float = 4.685
    iterations: int = 4


@dataclass
class Nodule:
    """One finding; numbers are means over the component (R2* a median), z in robust SD.

    ``diameter_mm`` is that of the sphere of the finding's volume; ``largest_dimension_mm``
    its largest in-plane outer-edge-to-outer-edge dimension (:func:`largest_section_mm`, as
    LI-RADS sizes an observation), for a finding admitted by its in-plane size the one that
    admitted it (the sphere of an iron-rich nodule seen on one slice is too small).
    """

    id: int
    nodule_class: str
    volume_ml: float
    diameter_mm: float
    centroid_voxel: tuple
    chi_ppm: float
    r2star_per_s: float
    pdff_percent: float
    background_chi_ppm: float
    background_r2star_per_s: float
    delta_chi_ppm: float
    r2star_ratio: float
    z_chi: float
    z_r2star: float
    delta_chi_sd_ppm: float = float("nan")
    largest_dimension_mm: float = float("nan")
    chi_source: str = "map"
    thumbnail: str = ""

    def row(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("nodule_class")
        d["centroid_voxel"] = list(d["centroid_voxel"])
        return d


@dataclass
class NoduleResult:
    """Findings, the label map of accepted nodules and the rejected candidates (with reasons)."""

    nodules: list
    labels: np.ndarray
    z_chi: np.ndarray
    z_r2star: np.ndarray
    rejected: list = field(default_factory=list)
    parameters: NoduleParameters = field(default_factory=NoduleParameters)



def _rejection(comp, voxels: int, diameter_mm: float, reason: str) -> dict:
    """A rejected candidate as listed in ``nodules.json``."""
    from scipy import ndimage

    return {"voxels": int(voxels), "diameter_mm": round(float(diameter_mm), 1),
            "centroid_voxel": [int(round(c)) for c in ndimage.center_of_mass(comp)],
            "reason": reason}

def _sigma_vox(sigma_mm: float, voxel_size) -> np.ndarray:
    return np.asarray(sigma_mm, float) / np.asarray(voxel_size, float)


def masked_smooth(values, weight, sigma_mm: float, voxel_size) -> np.ndarray:
    """Normalised convolution [5]: Gaussian-weighted mean of ``values`` with ``weight`` (≥ 0).

    Returns (X, Y, Z) float32; where the weights around a voxel vanish the result is NaN.
    """
    sigma = _sigma_vox(sigma_mm, voxel_size)
    w = np.asarray(weight, np.float32)
    num = ndimage.gaussian_filter(np.asarray(values, np.float32) * w, sigma, mode="constant")
    den = ndimage.gaussian_filter(w, sigma, mode="constant")
    out = np.full(w.shape, np.nan, np.float32)
    ok = den > 1e-4
    out[ok] = num[ok] / den[ok]
    return out


def _robust_sd(values) -> float:
    """1.4826 × MAD; the SD where the MAD vanishes (piecewise-constant maps); 1 if both do."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 1.0
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    if spread <= 1e-9:
        spread = float(np.std(values))
    return spread if spread > 1e-9 else 1.0


def robust_background(values, liver, voxel_size, *, radius_mm: float = 30.0,
                      iterations: int = 4, tukey_c: float = 4.685):
    """Local background of ``values`` over the liver, robust to the nodules it contains.

    An iteratively reweighted normalised convolution (Gaussian σ = radius/2) with Tukey
    biweights [6] of the residual in units of its robust spread (1.4826 × MAD): a local
    M-estimate of location that, like a median filter, ignores compact outliers, computed over
    liver voxels only.

    Returns
    -------
    background : (X, Y, Z) float32, same unit as ``values`` (NaN outside the liver's reach)
    """
    liver = np.asarray(liver, bool)
    values = np.asarray(values, np.float32)
    w = liver.astype(np.float32)
    bg = masked_smooth(values, w, radius_mm / 2, voxel_size)
    for _ in range(iterations):
        r = values - bg
        spread = _robust_sd(r[liver])
        u = r / (tukey_c * spread)
        w = np.where(liver & (np.abs(u) < 1), (1 - u**2) ** 2, 0).astype(np.float32)
        bg_new = masked_smooth(values, w, radius_mm / 2, voxel_size)
        bg = np.where(np.isnan(bg_new), bg, bg_new)
    return bg


def contrast_z(values, liver, voxel_size, params: NoduleParameters):
    """z-score of ``values`` against the local background in robust SD units of the background.

    Returns (z, background), both (X, Y, Z) float32; z is 0 outside the liver.
    """
    liver = np.asarray(liver, bool)
    bg = robust_background(values, liver, voxel_size, radius_mm=params.background_radius_mm,
                           iterations=params.iterations, tukey_c=params.tukey_c)
    residual = np.where(liver, np.asarray(values, np.float32) - bg, 0).astype(np.float32)
    residual = masked_smooth(residual, liver, params.smooth_mm, voxel_size)
    spread = _robust_sd(residual[liver])
    z = np.where(liver, np.nan_to_num(residual / spread), 0).astype(np.float32)
    return z, bg


def one_sided_z(values, background, liver, voxel_size, params: NoduleParameters,
                sign: float) -> np.ndarray:
    """``sign`` × z of ``values`` (as :func:`contrast_z`) with the opposite contrast clipped.

    Before the noise smoothing the residual is clipped at −``z_low`` robust SD (of the
    unsmoothed residual) on the side opposite ``sign``: a structure of the opposite contrast
    beside a candidate (a vein, dark on R2*, beside an iron-rich nodule) then no longer
    cancels the candidate's contrast over the smoothing kernel. Noise (|z| < ``z_low``) is
    left as it is, and the result is in the units of :func:`contrast_z` (robust SD of the
    smoothed two-sided residual).

    Returns (X, Y, Z) float32, 0 outside the liver.
    """
    liver = np.asarray(liver, bool)
    residual = np.where(liver, np.asarray(values, np.float32) - background, 0).astype(np.float32)
    spread = _robust_sd(masked_smooth(residual, liver, params.smooth_mm, voxel_size)[liver])
    signed = float(sign) * residual
    floor = -params.z_low * _robust_sd(signed[liver])
    smoothed = masked_smooth(np.maximum(signed, floor), liver, params.smooth_mm, voxel_size)
    return np.where(liver, np.nan_to_num(smoothed / spread), 0).astype(np.float32)


def hysteresis(score, low: float, high: float, mask) -> np.ndarray:
    """Components of ``score >= low`` inside ``mask`` that reach ``high`` somewhere."""
    lab, n = ndimage.label((score >= low) & mask)
    if n == 0:
        return np.zeros(score.shape, bool)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[(score >= high) & mask])] = True
    keep[0] = False
    return keep[lab]


def opening_ball(radius_mm: float, voxel_size) -> np.ndarray:
    """Boolean structuring element: voxel offsets within ``radius_mm`` (anisotropic voxels)."""
    vs = np.asarray(voxel_size, float)
    half = np.floor(radius_mm / vs).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * v for h, v in zip(half, vs, strict=True)],
                        indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def grid_inscribed_radius_mm(radius_mm: float, voxel_size) -> float:
    """The half-thickness (mm, as :func:`thickness_radius_mm` measures it) that a ball of
    ``radius_mm`` is sure to keep on a grid of ``voxel_size`` (mm), wherever it lies.

    A ball of diameter D covers at least ⌊D / v⌋ whole voxels along an axis of spacing v
    (those at least half inside it), a run of half-thickness ⌊D / v⌋ · v / 2; the smallest
    over the axes is the radius the grid can hold. At 2 × 2 × 4 mm a 10 mm nodule is two
    slices thick when it lies across a slice boundary: 4 mm, not 5.
    """
    vs = np.asarray(voxel_size, float)
    runs = np.floor(2 * radius_mm / vs + 1e-9)
    return float(min(radius_mm, np.min(runs * vs / 2)))


def thickness_radius_mm(component, voxel_size) -> float:
    """Half the thickness (mm) of the thickest part of ``component``: the inscribed radius
    measured on a grid refined to the finest voxel spacing (nearest-neighbour), so that a
    run of n slices of thickness t measures n·t/2 (one slice 2 mm, two 4 mm at t = 4 mm)
    instead of the distance to the next slice centre (4 mm for both one and two slices)."""
    vs = np.asarray(voxel_size, float)
    factor = np.maximum(np.rint(vs / vs.min()).astype(int), 1)
    sl = ndimage.find_objects(np.asarray(component, np.uint8))[0]
    fine = np.asarray(component, bool)[sl]
    for axis, f in enumerate(factor):
        fine = np.repeat(fine, f, axis=axis)
    padded = np.pad(fine, 1)
    return float(ndimage.distance_transform_edt(padded, sampling=vs / factor).max())


def largest_section_mm(component, voxel_size) -> float:
    """Largest outer-edge-to-outer-edge dimension (mm) of ``component`` within one section.

    The sections are perpendicular to the coarsest voxel axis (the slices); the dimension is
    the largest distance between voxel centres of one section plus the in-plane voxel size
    (the outer edges of the two end voxels). This is how a nodule's size is read on images
    (LI-RADS v2018 [4]_: the largest outer-edge-to-outer-edge dimension); unlike the
    equivalent-sphere diameter it is not shrunk by a part lost to a neighbouring structure
    or by slices that the nodule fills only partly.
    """
    from scipy.spatial.distance import pdist

    vs = np.asarray(voxel_size, float)
    axis = int(np.flatnonzero(vs == vs.max())[-1])
    plane = [a for a in range(3) if a != axis]
    coords = np.argwhere(np.asarray(component, bool))
    if len(coords) == 0:
        return 0.0
    best = 0.0
    for s in np.unique(coords[:, axis]):
        pts = coords[coords[:, axis] == s][:, plane] * vs[plane]
        if len(pts) > 1:
            best = max(best, float(pdist(pts).max()))
    return best + float(np.mean(vs[plane]))


def inscribed_radius_mm(component, voxel_size) -> float:
    """Largest distance (mm) from a voxel of ``component`` to the nearest voxel outside it."""
    sl = ndimage.find_objects(np.asarray(component, np.uint8))[0]
    padded = np.pad(component[sl], 1)
    return float(ndimage.distance_transform_edt(padded, sampling=voxel_size).max())


def shape_measures(component, voxel_size) -> tuple[float, float]:
    """(elongation, fill) of a boolean component: √(λ1/λ2) of the coordinate covariance (mm)
    and volume / volume of the largest inscribed ball (1-2 for a ball, large for a tube)."""
    vs = np.asarray(voxel_size, float)
    coords = np.argwhere(component) * vs
    if len(coords) < 4:
        return 1.0, 1.0
    ev = np.sort(np.linalg.eigvalsh(np.cov(coords.T)))[::-1]
    # a voxel's own extent (vs²/12) keeps the covariance of a one-slice component non-singular
    ev = ev + float(np.min(vs)) ** 2 / 12
    elongation = float(np.sqrt(ev[0] / ev[1]))
    r_in = inscribed_radius_mm(component, vs)
    volume = float(component.sum() * np.prod(vs))
    fill = volume / (4 / 3 * np.pi * r_in**3)
    return elongation, fill


def blob_curvatures(score, component, voxel_size, *, radius_mm: float) -> np.ndarray:
    """Principal curvatures of ``score`` at the centre of ``component``, scale-normalised.

    The Hessian of ``score`` smoothed by a Gaussian of σ = ``radius_mm`` / √3 (the scale at
    which the scale-normalised Laplacian of a ball of that radius peaks; Lindeberg 1998 [9]_),
    with derivatives in mm (anisotropic voxels: σ in voxels differs per axis), times σ²
    (scale normalisation), at the centroid of ``component`` (not at its peak, which for a
    nodule cut from a darker vein lies on the vein). Returned sorted by magnitude, largest
    first: for a bright ball all three are negative and alike; for a tube one is near zero
    (along its axis); for a sheet two are.
    Their ratio separates a compact nodule from the piece of a vessel it was cut from
    (Frangi et al. 1998 [10]_ use the same eigenvalue ratios for vessels).

    Returns (3,) float, in the units of ``score``.
    """
    hessian, inside, _ = _scale_normalised_hessian(score, component, voxel_size, radius_mm)
    peak = tuple(int(round(c)) for c in ndimage.center_of_mass(inside))
    ev = np.linalg.eigvalsh(hessian[peak].astype(np.float64))
    return ev[np.argsort(-np.abs(ev))]


def _scale_normalised_hessian(score, component, voxel_size, radius_mm: float):
    """Hessian (σ² times the second derivatives in mm, σ = radius / √3) of ``score`` over the
    bounding box of ``component`` grown by 4σ: ``(hessian (..., 3, 3), inside, box)``."""
    vs = np.asarray(voxel_size, float)
    comp = np.asarray(component, bool)
    sigma_mm = radius_mm / np.sqrt(3.0)
    sigma = sigma_mm / vs
    sl = ndimage.find_objects(comp.astype(np.uint8))[0]
    grow = np.ceil(4 * sigma).astype(int) + 1
    box = tuple(slice(max(s.start - g, 0), min(s.stop + g, n))
                for s, g, n in zip(sl, grow, comp.shape, strict=True))
    local = np.asarray(score, np.float32)[box]
    hessian = np.zeros(local.shape + (3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            d = ndimage.gaussian_filter(local, sigma, order=order, mode="nearest")
            hessian[..., i, j] = hessian[..., j, i] = d / (vs[i] * vs[j]) * sigma_mm**2
    return hessian, comp[box], box


def blob_centres(score, component, voxel_size, *, radius_mm: float,
                 min_ratio: float) -> list[tuple]:
    """Centres of blobs of ``radius_mm`` in ``score`` inside ``component`` (voxel indices).

    The scale-normalised Hessian of :func:`blob_curvatures` everywhere in the component: a
    voxel is a blob centre where all three principal curvatures are negative (bright blob),
    the least at least ``min_ratio`` of the greatest, and the least (its strength: a tube has
    none along its axis) is a local maximum over the 26 neighbours. Used to split a compact
    nodule off a vessel it merged with (Lindeberg 1998 [9]_).
    """
    hessian, inside, box = _scale_normalised_hessian(score, component, voxel_size, radius_mm)
    ev = np.linalg.eigvalsh(hessian[inside])  # ascending: most negative first
    least = -ev[:, 2]
    ok = (ev[:, 2] < 0) & (ev[:, 2] <= min_ratio * ev[:, 0])
    strength = np.zeros(inside.shape, np.float32)
    strength[inside] = np.where(ok, least, 0.0)
    peaks = (strength > 0) & (strength == ndimage.maximum_filter(strength, size=3))
    offset = np.array([b.start for b in box])
    return [tuple(int(v) for v in p + offset) for p in np.argwhere(peaks)]


def _polynomial_columns(box_shape, order: int = 2) -> np.ndarray:
    """(N, K) monomials of normalised box coordinates up to ``order`` (constant included)."""
    axes = [np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in box_shape]
    grids = [g.ravel() for g in np.meshgrid(*axes, indexing="ij")]
    cols = [np.ones(grids[0].size)]
    for total in range(1, order + 1):
        for i in range(total + 1):
            for j in range(total + 1 - i):
                k = total - i - j
                cols.append(grids[0] ** i * grids[1] ** j * grids[2] ** k)
    return np.stack(cols, axis=1)


def local_field_susceptibility(field_hz, weight, component, liver, voxel_size, *,
                               b0_tesla: float, b0_dir=(0.0, 0.0, 1.0),
                               margin_mm: float = 20.0, order: int = 3,
                               tukey_c: float = 4.685, iterations: int = 3):
    """Susceptibility of a region relative to its surroundings from the field it makes.

    Region susceptometry [7]_: within a box around the region (its bounding box grown by
    ``margin_mm``), the measured field over liver voxels is modelled as
    ``Δχ · γ̄B0 · (d ⊛ region)`` plus a polynomial of ``order`` (the field of everything else:
    the surrounding liver, distant sources, shim), and ``Δχ`` is the weighted least-squares
    solution, made robust to the field of neighbouring structures (vessels, other nodules)
    with Tukey biweights [6]_. A uniformly magnetised region has a known field pattern, so
    one number is fitted to hundreds of field values: unlike a voxel-wise inversion it
    needs no regularisation and is not biased by the low spatial frequencies that a
    voxel-wise liver QSM recovers worst. The polynomial is cubic by default: within a few
    centimetres of the lung or gut gas the field of those interfaces bends faster than a
    quadratic over the box, and for a 1 cm nodule at the liver surface a quadratic left a
    bias of +0.1-0.2 ppm in same-shaped background regions (docs/liver.md).

    Parameters
    ----------
    field_hz : (X, Y, Z) ndarray, Hz — chemical-shift-free field
    weight : (X, Y, Z) ndarray — field precision weight (1/SD up to a scale; 0 = no data)
    component, liver : (X, Y, Z) bool
    voxel_size : 3 floats, mm
    b0_tesla : float, T
    b0_dir : B0 direction in voxel coordinates

    Returns
    -------
    (delta_chi_ppm, sd_ppm) : the region's susceptibility minus that of its surroundings
        and its standard error (from the robust residual scale); (nan, nan) if the box
        holds too few weighted voxels.
    """
    from qsmkit.kernels import dipole_kernel
    from qsmkit.units import larmor_hz

    vs = np.asarray(voxel_size, float)
    comp = np.asarray(component, bool)
    sl = ndimage.find_objects(comp.astype(np.uint8))[0]
    grow = np.ceil(margin_mm / vs).astype(int)
    box = tuple(slice(max(s.start - g, 0), min(s.stop + g, n))
                for s, g, n in zip(sl, grow, comp.shape, strict=True))
    region = comp[box]
    shape = region.shape
    padded = tuple(int(2 * n) for n in shape)
    kernel = dipole_kernel(padded, vs, b0_dir, half=True)
    spectrum = scipy.fft.rfftn(region.astype(np.float32), s=padded, workers=-1)
    unit_field = scipy.fft.irfftn(spectrum * kernel, s=padded, workers=-1)
    unit_field = unit_field[: shape[0], : shape[1], : shape[2]] * larmor_hz(b0_tesla) * 1e-6
    w = np.where(np.asarray(liver, bool)[box], np.asarray(weight, float)[box], 0.0) ** 2
    ok = (w > 0).ravel() & np.isfinite(np.asarray(field_hz, float)[box]).ravel()
    if ok.sum() < 3 * (1 + _polynomial_columns((1, 1, 1), order).shape[1]):
        return float("nan"), float("nan")
    design = np.column_stack([unit_field.ravel(), _polynomial_columns(shape, order)])[ok]
    y = np.asarray(field_hz, float)[box].ravel()[ok]
    w = w.ravel()[ok]
    robust = np.ones_like(w)
    for _ in range(iterations + 1):
        sw = np.sqrt(w * robust)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        resid = (y - design @ coef) * np.sqrt(w)
        spread = _robust_sd(resid[robust > 0])
        u = resid / (tukey_c * spread)
        robust = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
    sw = np.sqrt(w * robust)
    normal = (design * sw[:, None]).T @ (design * sw[:, None])
    try:
        cov = np.linalg.inv(normal) * spread**2
    except np.linalg.LinAlgError:
        return float(coef[0]), float("nan")
    return float(coef[0]), float(np.sqrt(max(cov[0, 0], 0.0)))


def background_susceptibility_spread(field_hz, weight, component, liver, voxel_size, *,
                                     b0_tesla: float, b0_dir=(0.0, 0.0, 1.0), avoid=None,
                                     n_directions: int = 8, gap_mm: float = 4.0,
                                     min_inside: float = 0.9) -> tuple[float, int]:
    """Spread of :func:`local_field_susceptibility` over the background liver.

    The finding's own shape is moved in-plane, in ``n_directions`` directions, by once and
    twice its extent plus ``gap_mm``; wherever the moved shape lies in the liver
    (``min_inside`` of its voxels) and clear of ``avoid`` (the other candidates: at most
    10 % overlap), its Δχ is fitted as for the finding. Those fits measure the texture of the
    surrounding liver (with its vessels and other nodules), the field noise and model error,
    so their robust spread about zero (1.4826 × median |Δχ|, robust to a moved shape that
    lands on another structure) is the contrast a finding of this shape needs to exceed: a
    threshold relative to the background's own spread.

    Returns
    -------
    (spread_ppm, n) : robust spread of the background fits about zero and their number
        (nan, 0 if none fitted)
    """
    vs = np.asarray(voxel_size, float)
    comp = np.asarray(component, bool)
    liver = np.asarray(liver, bool)
    coords = np.argwhere(comp)
    extent_mm = (coords.max(0) - coords.min(0) + 1) * vs
    values = []
    for angle, ring in ((a, r) for r in (1, 2)
                        for a in np.arange(n_directions) * 2 * np.pi / n_directions):
        direction = np.array([np.cos(angle), np.sin(angle)])
        reach_mm = ring * float(np.abs(direction) @ extent_mm[:2]) + gap_mm
        shift = np.rint(direction * reach_mm / vs[:2]).astype(int)
        lo = coords[:, :2].min(0) + shift
        hi = coords[:, :2].max(0) + shift
        if np.any(lo < 0) or np.any(hi >= np.asarray(comp.shape[:2])):
            continue
        moved = np.roll(comp, tuple(shift), axis=(0, 1))
        if np.mean(liver[moved]) < min_inside:
            continue
        if avoid is not None and np.mean(np.asarray(avoid, bool)[moved]) > 0.1:
            continue
        dchi, _ = local_field_susceptibility(field_hz, weight, moved, liver, vs,
                                             b0_tesla=b0_tesla, b0_dir=b0_dir)
        if np.isfinite(dchi):
            values.append(dchi)
    if not values:
        return float("nan"), 0
    # robust (1.4826 x median |Δχ|): one moved shape that lands on a vessel or another
    # nodule does not set the scale
    return 1.4826 * float(np.median(np.abs(values))), len(values)


def contrast_outline(component, contrast, allowed) -> np.ndarray:
    """The extent of a finding as its own (unsmoothed) contrast draws it.

    Voxels within one voxel of ``component`` (26-neighbourhood) and in ``allowed`` whose
    ``contrast``, signed like the component's mean, reaches half the component's peak (its
    95th percentile), connected to the component. A detection outline drawn on a smoothed
    z-map at a fixed z lies inside a 1 cm nodule whose contrast is a few times the texture
    (the smoothing lowers the rim below the threshold); the susceptibility fitted over such
    a core reads a weaker contrast than the nodule's, since the field of its rim is then
    modelled as background. Half the peak is where a voxel is half filled (the contrast of a
    voxel that an iron-sparing nodule fills in part is about its share).

    Parameters
    ----------
    component, allowed : (X, Y, Z) bool
    contrast : (X, Y, Z) float, e.g. log R2* minus its local background

    Returns
    -------
    (X, Y, Z) bool; ``component`` itself if no voxel qualifies.
    """
    comp = np.asarray(component, bool)
    contrast = np.asarray(contrast, np.float32)
    sign = 1.0 if float(np.mean(contrast[comp])) > 0 else -1.0
    signed = sign * contrast
    half = (ndimage.binary_dilation(comp, np.ones((3, 3, 3), bool)) & np.asarray(allowed, bool)
            & (signed >= 0.5 * np.percentile(signed[comp], 95)))
    parts, _ = ndimage.label(half)
    own = np.unique(parts[comp & half])
    region = np.isin(parts, own[own > 0])
    return region if region.any() else comp


def _check(chi_ppm, r2star_per_s, liver, voxel_size):
    liver = np.asarray(liver)
    if liver.ndim != 3:
        raise InputError(f"the liver mask must be 3D, got shape {liver.shape}")
    for name, arr in (("chi_ppm", chi_ppm), ("r2star_per_s", r2star_per_s)):
        if np.shape(arr) != liver.shape:
            raise InputError(f"{name} has shape {np.shape(arr)}, the liver mask {liver.shape}: "
                             f"pass maps on the same grid")
    if len(voxel_size) != 3 or min(voxel_size) <= 0:
        raise InputError(f"voxel_size must be three positive lengths in mm, got {voxel_size}")
    if int(np.count_nonzero(liver)) < 1000:
        raise InputError("the liver mask holds fewer than 1000 voxels: nodule detection needs "
                         "the whole liver (or a large part of it) as background")


def find_nodules(chi_ppm, r2star_per_s, liver, voxel_size: Sequence[float], *, pdff_percent=None,
                 params: NoduleParameters | None = None, field_hz=None, field_weight=None,
                 b0_tesla: float | None = None,
                 b0_dir: Sequence[float] = (0.0, 0.0, 1.0)) -> NoduleResult:
    """Detect and class focal nodules of a liver from its χ and R2* maps.

    Parameters
    ----------
    chi_ppm : (X, Y, Z) ndarray, ppm
    r2star_per_s : (X, Y, Z) ndarray, 1/s (fat-corrected R2*)
    liver : (X, Y, Z) bool ndarray; the liver *including* its nodules (fill the holes of an
        automatic segmentation that excluded them)
    voxel_size : three lengths in mm
    pdff_percent : (X, Y, Z) ndarray, %, optional (reported only)
    params : NoduleParameters
    field_hz, field_weight : (X, Y, Z) ndarrays, optional — the chemical-shift-free field (Hz)
        and its precision weight (1/SD up to a scale) from which ``chi_ppm`` was made. When
        given (with ``b0_tesla``), each finding's susceptibility contrast is measured from
        the field it makes (:func:`local_field_susceptibility`) rather than read from the
        voxel-wise map, and its class uses that contrast and its standard error
    b0_tesla : float, T (needed with ``field_hz``)
    b0_dir : B0 direction in voxel coordinates

    Returns
    -------
    NoduleResult
        ``nodules`` sorted by volume (largest first), ``labels`` (int16 map, 0 = none,
        i = nodule id), z maps, and ``rejected`` candidates with the reason.

    Notes
    -----
    R2* is compared on a log scale: its texture and noise in an iron-loaded liver grow with
    R2* itself, so a ratio is the homogeneous contrast. χ is compared linearly.
    """
    params = params or NoduleParameters()
    _check(chi_ppm, r2star_per_s, liver, voxel_size)
    if b0_tesla is not None and not (np.isfinite(b0_tesla) and b0_tesla > 0):
        raise InputError(f"b0_tesla must be a positive field strength in T, got {b0_tesla}")
    if field_hz is not None:
        if np.shape(field_hz) != np.shape(liver) or (
                field_weight is not None and np.shape(field_weight) != np.shape(liver)):
            raise InputError("field_hz and field_weight must be on the liver mask's grid")
        if b0_tesla is None:
            raise InputError("find_nodules with field_hz needs b0_tesla (the field in T)")
        if field_weight is None:
            field_weight = np.ones(np.shape(liver), np.float32)
    vs = np.asarray(voxel_size, float)
    liver = np.asarray(liver, bool)
    chi = np.nan_to_num(np.asarray(chi_ppm, np.float32))
    r2 = np.nan_to_num(np.asarray(r2star_per_s, np.float32))
    log_r2 = np.log(np.maximum(r2, 1.0)).astype(np.float32)
    z_chi, bg_chi = contrast_z(chi, liver, vs, params)
    z_r2, bg_logr2 = contrast_z(log_r2, liver, vs, params)
    # each sign apart (a bright and a dark region side by side stay apart), then an opening
    # that cuts necks (septa, partial volume) joining a nodule to a vessel
    ball = opening_ball(params.opening_mm, vs)
    any_candidate = np.zeros(liver.shape, bool)
    lab = np.zeros(liver.shape, np.int32)
    tubular_parent = np.zeros(liver.shape, bool)
    scores, cands = {}, {}
    for sign in (1.0, -1.0):
        # with the field given the voxel-wise χ map is not trusted (its contrast is measured
        # from the field instead): R2* alone draws the candidates
        score = one_sided_z(log_r2, bg_logr2, liver, vs, params, sign)
        if field_hz is None:
            score = np.maximum(score, one_sided_z(chi, bg_chi, liver, vs, params, sign))
        scores[sign] = score
        cand = hysteresis(score, params.z_low, params.z_high, liver)
        cands[sign] = cand
        any_candidate |= cand
        opened = ndimage.binary_opening(cand, structure=ball) if params.opening_mm > 0 else cand
        lab_s, n_s = ndimage.label(opened)
        if n_s and lab.any():
            # a region bright in one map and dark in the other is found by both passes:
            # keep it once (the first pass's component), it is classed from both contrasts
            seen = ndimage.sum(lab > 0, lab_s, index=np.arange(1, n_s + 1))
            size = ndimage.sum(np.ones_like(lab_s), lab_s, index=np.arange(1, n_s + 1))
            drop = np.concatenate([[True], seen > 0.5 * size])
            lab_s = np.where(drop[lab_s] | (lab > 0), 0, lab_s)
        lab = np.where(lab_s > 0, lab_s + lab.max(), lab)
        parents, n_p = ndimage.label(cand)
        for j, sl in enumerate(ndimage.find_objects(parents), start=1):
            parent = np.zeros(liver.shape, bool)
            parent[sl] = parents[sl] == j
            elongation, fill = shape_measures(parent, vs)
            if elongation > params.max_elongation or fill > params.max_fill:
                tubular_parent |= parent
    depth = ndimage.distance_transform_edt(np.pad(liver, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    voxel_ml = float(np.prod(vs)) / 1000.0

    def r2_ratio_of(comp):
        return float(np.median(r2[comp]) / np.exp(np.nanmedian(bg_logr2[comp])))

    nodules, rejected = [], []
    out = np.zeros(liver.shape, np.int16)
    queue = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:  # a label number left unused by the de-duplication of the two passes
            continue
        comp = np.zeros(liver.shape, bool)
        comp[sl] = lab[sl] == i
        queue.append((comp, True, False))
    core_ball = opening_ball(params.min_radius_near_vessel_mm, vs)
    fluid_r2 = (params.fluid_r2star_per_s_at_1p5t * float(b0_tesla) / 1.5
                if b0_tesla is not None else None)
    grids = np.meshgrid(*[np.arange(n) * v for n, v in zip(liver.shape, vs, strict=True)],
                        indexing="ij", sparse=True)

    def ball_around(centre, radius_mm):
        return sum((g - c * v) ** 2 for g, c, v in zip(grids, centre, vs, strict=True)
                   ) <= radius_mm**2 + 1e-9

    def touches_edge(comp):
        sl = ndimage.find_objects(comp.astype(np.uint8))[0]
        return any(s.start == 0 or s.stop == dim for s, dim in zip(sl, liver.shape, strict=True))

    def half_peak_r2(comp):
        # the part of a candidate above half its peak R2* contrast (the threshold on a
        # smoothed z-map draws a halo around a strong nodule)
        signed = z_r2 * (1.0 if float(np.mean(z_r2[comp])) > 0 else -1.0)
        core = comp & (signed >= 0.5 * np.percentile(signed[comp], 95))
        return core if core.any() else comp

    contrast_r2 = np.nan_to_num(log_r2 - bg_logr2)

    def bright_section_mm(comp):
        # storage iron shortens T2*: in a voxel that a siderotic nodule fills in part, the
        # slower decay of the surrounding liver dominates the later echoes, so the voxel
        # reads far less than its share of the contrast (half a voxel of a 2.5-4x nodule
        # reads 1.3-1.6x at 1.2-7.2 ms, not 1.6-2x). On 4 mm slices the R2* contrast of a
        # 1 cm iron-rich nodule can thus be one slice thick and its volume small, while its
        # extent in the slice is that of the nodule. For a component brighter than the
        # liver on R2* by the thin-finding effect size (min_r2star_ratio², over its part
        # above half its peak), its size is therefore also read as on images: the largest
        # in-plane dimension (largest_section_mm) of its part above half its peak log-R2*
        # contrast, with the border that the opening took restored (dilation by the same
        # ball, within the candidate). 0 for any other component.
        if float(np.mean(z_r2[comp])) <= 0 or (
                r2_ratio_of(half_peak_r2(comp)) < params.min_r2star_ratio**2):
            return 0.0
        restored = comp
        if params.opening_mm > 0:
            restored = comp | (ndimage.binary_dilation(comp, ball) & cands[1.0])
        half = restored & (contrast_r2 >= 0.5 * np.percentile(contrast_r2[restored], 95))
        parts, _ = ndimage.label(half)
        own = np.unique(parts[comp & half])
        return largest_section_mm(np.isin(parts, own[own > 0]), vs)

    def is_tubular(comp):
        # the vessel test of the loop below (shape_measures; no fill limit for R2*-bright)
        elongation, fill = shape_measures(comp, vs)
        return elongation > params.max_elongation or (
            fill > params.max_fill and r2_ratio_of(comp) < params.min_r2star_ratio)

    def curvature_ratio(comp):
        # least over greatest principal curvature of the candidate's own contrast at its
        # centre and scale (1 for a ball, ~0 for a tube: blob_curvatures)
        sign = 1.0 if float(np.mean(z_r2[comp])) > 0 else -1.0
        radius = float((3 * comp.sum() * np.prod(vs) / (4 * np.pi)) ** (1 / 3))
        ev = blob_curvatures(scores[sign], comp, vs, radius_mm=radius)
        return float(ev[2] / ev[0]) if ev[0] != 0 else 0.0

    while queue:
        comp, may_split, thick_without_blob = queue.pop(0)
        needs_class = not may_split
        nvox = int(comp.sum())
        volume_ml = nvox * voxel_ml
        diameter_mm = float((6 * volume_ml * 1000 / np.pi) ** (1 / 3))
        reason = None
        touches_volume = touches_edge(comp)
        section_mm = None  # bright_section_mm(comp), computed where needed
        if nvox < params.min_voxels:
            reason = f"fewer than {params.min_voxels} voxels ({nvox})"
        elif diameter_mm < params.min_diameter_mm and (
                section_mm := bright_section_mm(comp)) < params.min_diameter_mm:
            reason = f"smaller than {params.min_diameter_mm:g} mm ({diameter_mm:.1f} mm)"
            if section_mm > 0:
                reason += f"; largest in-plane dimension {section_mm:.1f} mm"
        else:
            elongation, fill = shape_measures(comp, vs)
            r_in = inscribed_radius_mm(comp, vs)
            # storage iron raises R2*, blood does not: a component brighter than the liver
            # on R2* is not a vessel tree, so only a streak (elongation) rejects it; a fill
            # limit would reject compact nodules seen on two 4 mm slices (flat discs)
            iron_bright = r2_ratio_of(comp) >= params.min_r2star_ratio
            tubular = elongation > params.max_elongation or (
                fill > params.max_fill and not iron_bright)
            if (tubular or touches_volume) and may_split:
                # a nodule joined to a vessel (which may run out of the slab): keep what
                # holds a ball of the nodule size, and judge those parts on their own
                cores, n_cores = ndimage.label(ndimage.binary_opening(comp, core_ball))
                sign = 1.0 if float(np.mean(z_r2[comp])) > 0 else -1.0
                centres = blob_centres(scores[sign], comp, vs,
                                       radius_mm=params.min_inscribed_radius_mm,
                                       min_ratio=params.min_blob_curvature_ratio)
                with_blob = {int(cores[c]) for c in centres}
                for j in range(1, n_cores + 1):
                    queue.append((cores == j, False, j not in with_blob))
                # and what is blob-shaped at the scale of the smallest nodule sought (a 1 cm
                # nodule is thinner than that ball): the component within that radius of
                # the blob's centre, its own part; also inside a thick part that runs out of
                # the slab (a nodule beside a vein along B0) or is itself tubular (a nodule
                # merged with two veins, whose thick part holds pieces of both), which is
                # rejected whole
                for centre in centres:
                    if cores[centre] and not touches_edge(cores == cores[centre]) and not (
                            is_tubular(cores == cores[centre])):
                        continue
                    near = ball_around(centre, params.min_inscribed_radius_mm) & comp
                    part, _ = ndimage.label(near)
                    queue.append((part == part[centre], False, False))
                    n_cores += 1
                tubular_parent |= comp
                what = (f"tubular (vessel): elongation {elongation:.1f}, fill {fill:.1f}"
                        if tubular else "touches the edge of the field of view")
                reason = f"{what}; {n_cores} thick part(s) examined apart"
            elif touches_volume:
                reason = "touches the edge of the field of view"
            elif thick_without_blob and (
                    ratio := curvature_ratio(comp)) < params.min_blob_curvature_ratio:
                # a stretch of a vessel that partial volume makes hold the 6 mm ball (a vein
                # of 11 mm in the plane, across a slice boundary) is a thick part too, and
                # blood is dark on R2* and, beside a siderotic liver, on χ as well: a thick
                # part must hold a blob, at the scale of the smallest nodule sought (a
                # nodule merged with veins) or at its own (a large nodule, flat inside)
                reason = (f"thick part of a tubular candidate (vessel) without a blob: no "
                          f"blob centre of {params.min_inscribed_radius_mm:g} mm in it, "
                          f"curvature ratio {ratio:.2f} at its own scale")
            elif float(np.mean(depth[comp] <= params.edge_mm)) > params.max_edge_fraction:
                reason = "on the liver boundary"
            elif tubular:
                reason = f"tubular (vessel): elongation {elongation:.1f}, fill {fill:.1f}"
            elif (may_split and np.any(comp & tubular_parent)
                  and r_in < params.min_radius_near_vessel_mm
                  and (ratio := curvature_ratio(comp)) < params.min_blob_curvature_ratio):
                reason = (f"cut from a tubular candidate (vessel), thinner than "
                          f"{params.min_radius_near_vessel_mm:g} mm ({r_in:.1f} mm) and not "
                          f"blob-shaped (curvature ratio {ratio:.2f})")
            elif ((r_thick := thickness_radius_mm(comp, vs)) < grid_inscribed_radius_mm(
                    params.min_inscribed_radius_mm, vs)) and (
                    section_mm if section_mm is not None else (
                        section_mm := bright_section_mm(comp))) < params.min_diameter_mm:
                reason = (f"thinner than a {2 * params.min_inscribed_radius_mm:g} mm ball "
                          f"on this grid (half-thickness {r_thick:.1f} mm)")
                if section_mm > 0:
                    reason += f"; largest in-plane dimension {section_mm:.1f} mm"
            else:
                # a finding only as thick as the grid lets a 1 cm nodule be (two 4 mm
                # slices) needs twice the effect size in log R2*: at that size clusters of
                # regenerative nodules reach 1.5-1.7x (see docs/liver.md)
                thin = min(r_thick, r_in) < params.min_inscribed_radius_mm
                if 1 / params.min_r2star_ratio < r2_ratio_of(comp) < params.min_r2star_ratio:
                    reason = (f"R2* contrast below {params.min_r2star_ratio:g}x "
                              f"({r2_ratio_of(comp):.2f})")
                elif thin and (1 / params.min_r2star_ratio**2 < (core := r2_ratio_of(
                        half_peak_r2(comp))) < params.min_r2star_ratio**2):
                    reason = (f"thinner than {2 * params.min_inscribed_radius_mm:g} mm "
                              f"(half-thickness {min(r_thick, r_in):.1f} mm) and R2* contrast "
                              f"below {params.min_r2star_ratio**2:g}x ({core:.2f} over the "
                              f"part above half its peak)")
        if reason is not None:
            rejected.append(_rejection(comp, nvox, diameter_mm, reason))
            continue
        zc = float(np.mean(z_chi[comp]))
        zr = float(np.mean(z_r2[comp]))
        # size and values at half the peak contrast (the detection threshold, applied to a
        # smoothed z-map, draws a halo around a strong nodule)
        # (with the field given, the voxel-wise χ map is not trusted: R2* draws the outline)
        chi_rules = field_hz is None and abs(zc) >= abs(zr)
        dominant = z_chi if chi_rules else z_r2
        signed = dominant * np.sign(zc if chi_rules else zr)
        comp = comp & (signed >= 0.5 * np.percentile(signed[comp], 95))
        if fluid_r2 is not None and float(np.median(r2[comp])) < fluid_r2:
            rejected.append(_rejection(
                comp, nvox, diameter_mm,
                f"fluid, not liver tissue (cyst, bile duct, vessel): median R2* "
                f"{float(np.median(r2[comp])):.0f} 1/s below {fluid_r2:.0f} 1/s"))
            continue
        volume_ml = int(comp.sum()) * voxel_ml
        diameter_mm = float((6 * volume_ml * 1000 / np.pi) ** (1 / 3))
        bgc = float(np.nanmedian(bg_chi[comp]))
        bgr = float(np.exp(np.nanmedian(bg_logr2[comp])))
        chi_mean = float(np.mean(chi[comp]))
        dchi_sd, source = float("nan"), "map"
        if field_hz is not None:
            # a free-standing finding is fitted over its extent as its own R2* contrast
            # draws it; a part cut from a vessel tree keeps its outline (the cut sets it,
            # and growing it would take in the vessel)
            region = (contrast_outline(comp, contrast_r2, liver & ~(tubular_parent & ~comp))
                      if may_split else comp)
            dchi, dchi_sd = local_field_susceptibility(
                field_hz, field_weight, region, liver, vs, b0_tesla=b0_tesla, b0_dir=b0_dir)
            spread, n_null = background_susceptibility_spread(
                field_hz, field_weight, region, liver, vs, b0_tesla=b0_tesla, b0_dir=b0_dir,
                avoid=any_candidate & ~region)
            if np.isfinite(dchi) and np.isfinite(dchi_sd) and dchi_sd > 0:
                # the contrast measured from the field replaces the map's for the class;
                # its uncertainty is the fit's and the background's (same shape moved into
                # the surrounding liver), in quadrature
                source = "local field fit"
                if n_null >= 3:
                    dchi_sd = float(np.hypot(dchi_sd, spread))
                else:
                    source += " (background spread not measurable: fit error only)"
                chi_mean, zc = bgc + dchi, dchi / dchi_sd
        if zc >= params.z_class and zr >= params.z_class:
            cls = "siderotic"
        elif zc <= -params.z_class and zr <= -params.z_class:
            cls = "iron-sparing"
        else:
            cls = "indeterminate"
        if may_split and np.any(comp & tubular_parent) and (
                r_in < params.min_radius_near_vessel_mm):
            needs_class = True  # a blob beside a vessel: it needs a contrast of its own
        if section_mm is not None and section_mm >= params.min_diameter_mm:
            # admitted by its in-plane size alone (one slice of R2* contrast): its iron must
            # show in the field as well (both contrasts, a class), as for a part of a vessel
            needs_class = True
        if needs_class and cls == "indeterminate":
            # a thick part of a vessel tree (a junction) is dark on R2* like an iron-sparing
            # nodule; a nodule touching a vessel must show its own susceptibility contrast
            rejected.append(_rejection(
                comp, int(comp.sum()), diameter_mm,
                f"part cut from a tubular candidate (vessel tree) without a susceptibility "
                f"contrast of its own (z_chi {zc:+.1f}, z_R2* {zr:+.1f})"))
            continue
        largest_mm = largest_section_mm(comp, vs)
        if section_mm is not None and section_mm >= params.min_diameter_mm:
            largest_mm = max(largest_mm, section_mm)
        r2_med = float(np.median(r2[comp]))
        pdff = (float(np.mean(np.asarray(pdff_percent)[comp])) if pdff_percent is not None
                else float("nan"))
        centroid = tuple(int(round(c)) for c in ndimage.center_of_mass(comp))
        nodules.append(Nodule(
            id=0, nodule_class=cls, volume_ml=round(volume_ml, 3),
            diameter_mm=round(diameter_mm, 1), centroid_voxel=centroid,
            chi_ppm=round(chi_mean, 4), r2star_per_s=round(r2_med, 1),
            pdff_percent=round(pdff, 2), background_chi_ppm=round(bgc, 4),
            background_r2star_per_s=round(bgr, 1), delta_chi_ppm=round(chi_mean - bgc, 4),
            r2star_ratio=round(r2_med / bgr, 3) if bgr > 0 else float("nan"),
            z_chi=round(zc, 2), z_r2star=round(zr, 2),
            delta_chi_sd_ppm=round(dchi_sd, 4), chi_source=source,
            largest_dimension_mm=round(largest_mm, 1)))
        out[comp] = -len(nodules)  # provisional, renumbered below
    order = sorted(range(len(nodules)), key=lambda k: -nodules[k].volume_ml)
    labels = np.zeros(liver.shape, np.int16)
    final = []
    for new_id, k in enumerate(order, start=1):
        nodules[k].id = new_id
        labels[out == -(k + 1)] = new_id
        final.append(nodules[k])
    return NoduleResult(final, labels, z_chi, z_r2, rejected, params)


def write_thumbnails(outdir: Path, result: NoduleResult, chi_ppm, r2star_per_s, liver,
                     voxel_size, *, half_width_mm: float = 30.0) -> list[str]:
    """One PNG per nodule (R2* and χ of the slice through its centroid, outlined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vs = np.asarray(voxel_size, float)
    liver = np.asarray(liver, bool)
    names = []
    r2_hi = float(np.percentile(np.asarray(r2star_per_s)[liver], 99.5))
    chi_lo, chi_hi = np.percentile(np.asarray(chi_ppm)[liver], [0.5, 99.5])
    for nod in result.nodules:
        cx, cy, cz = nod.centroid_voxel
        hx, hy = (int(np.ceil(half_width_mm / vs[0])), int(np.ceil(half_width_mm / vs[1])))
        sx = slice(max(cx - hx, 0), cx + hx + 1)
        sy = slice(max(cy - hy, 0), cy + hy + 1)
        fig, axes = plt.subplots(1, 2, figsize=(6, 3.2), dpi=100, constrained_layout=True)
        for ax, (title, vol, cmap, lo, hi) in zip(axes, (
                ("R2* (1/s)", r2star_per_s, "viridis", 0, r2_hi),
                ("chi (ppm)", chi_ppm, "RdBu_r", chi_lo, chi_hi)), strict=True):
            plane = np.where(liver[sx, sy, cz], np.asarray(vol)[sx, sy, cz], np.nan).T
            im = ax.imshow(plane, cmap=cmap, vmin=lo, vmax=hi, origin="lower",
                           interpolation="nearest", aspect=vs[1] / vs[0])
            ax.contour((result.labels[sx, sy, cz] == nod.id).T.astype(float), levels=[0.5],
                       colors="k", linewidths=1)
            if title.startswith("chi") and nod.chi_source != "map":
                # the voxel-wise map may not show what the field fit measured: say it
                title = (f"chi map (ppm); field fit: nodule "
                         f"{nod.delta_chi_ppm:+.2f} ± {nod.delta_chi_sd_ppm:.2f} ppm")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.suptitle(f"nodule {nod.id}: {nod.nodule_class}, {nod.diameter_mm:.0f} mm, "
                     f"slice {cz}", fontsize=9)
        name = f"nodule_{nod.id:02d}.png"
        fig.savefig(Path(outdir) / name)
        plt.close(fig)
        nod.thumbnail = name
        names.append(name)
    return names


def write_nodule_table(path: Path, result: NoduleResult) -> None:
    """Tab-separated table, one row per nodule (:data:`TABLE_COLUMNS`)."""
    lines = ["\t".join(TABLE_COLUMNS)]
    for nod in result.nodules:
        row = nod.row()
        row["centroid_voxel"] = ",".join(str(c) for c in row["centroid_voxel"])
        lines.append("\t".join(str(row[c]) for c in TABLE_COLUMNS))
    Path(path).write_text("\n".join(lines) + "\n")


def write_nodule_json(path: Path, result: NoduleResult) -> None:
    """Findings, rejected candidates, parameters and :data:`STATEMENT` as JSON."""
    doc = {
        "statement": STATEMENT,
        "nodules": [n.row() for n in result.nodules],
        "rejected_candidates": result.rejected,
        "parameters": asdict(result.parameters),
        "classes": list(CLASSES),
    }
    Path(path).write_text(json.dumps(doc, indent=2))

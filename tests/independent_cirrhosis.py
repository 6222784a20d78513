"""An independent cirrhotic, siderotic liver with focal nodules, as multi-echo GRE signal.

Nothing here comes from qsmkit. The abdomen around the liver (body, subcutaneous fat, body
wall, spleen, vertebra, air-filled stomach, lung bases; body continuing beyond the slab along
B0 = z), the continuous dipole kernel on a finer grid, the fat spectrum, the R2*(LIC) relation
and the signal model are those of ``independent_abdomen.py`` (itself independent of qsmkit).
The liver is replaced by a cirrhotic one:

* **Background**: siderotic, LIC ``background_lic`` (default 5 mg Fe/g dw, moderate overload)
  with smooth heterogeneity (+-8 %, ~2 cm scale) and a nodular texture: regenerative nodules
  of cirrhosis as Voronoi cells of ~6 mm (seed density one per (6 mm)^3), each with its own
  iron (+-12 %), separated by ~0.6-1 mm fibrous septa holding half the iron. PDFF 2 %.
* **Focal nodules** (spheres, 10-20 mm): siderotic (iron-rich regenerative or dysplastic
  nodules, LIC 2-3x the background; Zhang & Krinsky 2004) and iron-sparing (LIC about 1 mg/g,
  some with fat; Terada & Nakanuma 1989), deep, near the liver surface and beside vessels.
* **Distractors** that are not nodules: intrahepatic vessels of nodule calibre (portal and
  hepatic veins, 4-7 mm radius; one runs along B0 through the whole slab, so it is a 1 cm
  disc in every slice), a simple cyst, and the liver surface itself (lung, stomach, fat).

Blood: chi relative to water = Hct (1 - Y) dchi_do with dchi_do = 3.39 ppm (SI; 0.27 ppm cgs,
Spees et al. 2001), Hct 0.40; portal venous Y 0.80, hepatic venous Y 0.65; R2* of venous
blood 20 1/s at 1.5 T (T2* about 50 ms; Blockley et al. 2008), doubled at 3 T like the tissues
of the abdomen phantom. Simple cyst: serous fluid, chi 0 relative to water, R2* 4 1/s
(T2* ~ 250 ms), proton density 1. No flow effects (flow-compensated GRE assumed).

References
----------
Zhang J, Krinsky GA. Iron-containing nodules of cirrhosis. NMR Biomed 2004;17:459-464.
Terada T, Nakanuma Y. Iron-negative foci in siderotic macroregenerative nodules in human
    cirrhotic liver. Arch Pathol Lab Med 1989;113:916-920.
Spees WM, Yablonskiy DA, Oswood MC, Ackerman JJH. Water proton MR properties of human blood at
    1.5 Tesla: magnetic susceptibility, T1, T2, T2*, and non-Lorentzian signal behavior. Magn
    Reson Med 2001;45:533-542.
Blockley NP, Jiang L, Gardener AG, et al. Field strength dependence of R1 and R2* relaxivities
    of human whole blood to ProHance, Vasovist, and deoxyhemoglobin. Magn Reson Med
    2008;60:1313-1320.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from independent_abdomen import (
    CHI_AIR_MINUS_WATER_PPM,
    GAMMA_BAR_MHZ_PER_T,
    TISSUE_CODES,
    AbdomenPhantom,
    _block_mean,
    _block_mode,
    _property_maps,
    _segment,
    dipole_field_ppm,
    fat_spectrum,
    gre_signal,
)

DCHI_DEOXY_PPM = 3.39  # Spees 2001: 0.27 ppm cgs x 4 pi, fully deoxygenated vs oxygenated RBC
HCT = 0.40
R2STAR_BLOOD_15T = 20.0  # 1/s, venous blood at 1.5 T (T2* ~ 50 ms; Blockley 2008)
R2STAR_CYST_15T = 4.0  # 1/s, serous fluid
CHI_PER_LIC_PPM = 0.12  # as independent_abdomen (apparent in-vivo liver susceptibility)


@dataclasses.dataclass(frozen=True)
class Nodule:
    """A spherical focal nodule; centre in mm from the slab centre (x, y, z)."""

    name: str
    kind: str  # "siderotic" or "iron-sparing"
    centre_mm: tuple
    diameter_mm: float
    lic_mg_per_g: float
    pdff_percent: float = 0.0
    where: str = "deep"


@dataclasses.dataclass(frozen=True)
class Vessel:
    """A straight vessel segment (mm from the slab centre) of constant radius."""

    name: str
    start_mm: tuple
    end_mm: tuple
    radius_mm: float
    saturation: float  # venous oxygen saturation Y


@dataclasses.dataclass(frozen=True)
class Cyst:
    name: str
    centre_mm: tuple
    diameter_mm: float


# Liver of independent_abdomen at full field of view (scale 1): ellipse centred (-45, 5) mm,
# semi-axes 58 x 56 mm, cut by the abdominal cavity at x ~ -95 mm; it fills the slab in z.
DEFAULT_NODULES = (
    Nodule("S1", "siderotic", (-50.0, 30.0, 0.0), 20.0, 13.0),
    Nodule("S2", "siderotic", (-83.0, -8.0, 2.0), 12.0, 12.0, where="edge"),
    Nodule("S3", "siderotic", (-25.0, -20.0, -2.0), 10.0, 15.0, where="vessel"),
    Nodule("S4", "siderotic", (-60.0, -35.0, 4.0), 15.0, 10.0),
    Nodule("N1", "iron-sparing", (-20.0, 30.0, -3.0), 20.0, 1.0),
    Nodule("N2", "iron-sparing", (-45.0, 0.0, 3.0), 14.0, 1.0, 8.0, where="vessel"),
    Nodule("N3", "iron-sparing", (-45.0, 53.0, 0.0), 10.0, 1.2, where="edge"),
    Nodule("N4", "iron-sparing", (-78.0, 25.0, -4.0), 16.0, 0.8, 3.0),
)
DEFAULT_VESSELS = (
    # hepatic vein running obliquely towards the cava, through the slab
    Vessel("HV-oblique", (-5.0, 10.0, -70.0), (-80.0, 50.0, 70.0), 5.0, 0.65),
    # portal branch in the imaging plane, 12 mm calibre, beside N2 and S3
    Vessel("PV-inplane", (-5.0, -12.0, -1.0), (-70.0, -14.0, 1.0), 5.5, 0.80),
    # vessel along B0 through the whole slab: a 12 mm disc in every slice
    Vessel("HV-along-B0", (-30.0, 5.0, -80.0), (-31.0, 6.0, 80.0), 6.0, 0.65),
    # smaller branch
    Vessel("PV-small", (-60.0, -14.0, 0.0), (-85.0, 10.0, 0.0), 3.0, 0.80),
)
DEFAULT_CYSTS = (Cyst("C1", (-10.0, -40.0, 0.0), 14.0),)


@dataclasses.dataclass
class CirrhosisPhantom(AbdomenPhantom):
    """Abdomen data (``patch_labels`` holds the liver outline, 1 inside, nodules, vessels and
    cysts included, as a reader would draw it) plus the truth of each structure:
    ``structures`` (int16: 1.. for nodules in ``nodules`` order, then vessels, then cysts; a
    coarse voxel belongs to a structure when at least half of it does), ``nodules``,
    ``vessels``, ``cysts`` (the definitions) and per-nodule truth values in ``nodule_truth``."""

    structures: np.ndarray
    nodules: tuple
    vessels: tuple
    cysts: tuple
    nodule_truth: list
    background_lic: float


def _segment_distance(x, y, z, p0, p1):
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / (d @ d), 0, 1)
    return np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2
                   + (z - p0[2] - t * d[2]) ** 2)


def _coords(shape, step):
    return [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
            for n, s in zip(shape, step, strict=True)]


def _cirrhotic_lic(points_mm, rng, background_lic, cell_mm=6.0, septum_mm=0.6):
    """LIC at liver points (N, 3): Voronoi regenerative nodules (+-12 %) and iron-poor septa
    (half the iron), times a smooth +-8 % heterogeneity."""
    lo, hi = points_mm.min(0) - cell_mm, points_mm.max(0) + cell_mm
    n_cells = int(np.prod(hi - lo) / cell_mm**3)
    seeds = rng.uniform(lo, hi, size=(n_cells, 3))
    dist, idx = cKDTree(seeds).query(points_mm, k=2, workers=-1)
    factor = np.exp(0.12 * rng.standard_normal(n_cells))[idx[:, 0]]
    factor = np.where(dist[:, 1] - dist[:, 0] < septum_mm, 0.5 * factor, factor)
    # smooth heterogeneity: a few random plane waves of ~4 cm wavelength
    smooth = np.zeros(len(points_mm))
    for _ in range(6):
        k = rng.standard_normal(3)
        k = 2 * np.pi * k / np.linalg.norm(k) / rng.uniform(30.0, 60.0)
        smooth += np.cos(points_mm @ k + rng.uniform(0, 2 * np.pi))
    smooth *= 0.08 / (np.std(smooth) + 1e-12)
    return (background_lic * factor * (1 + smooth)).astype(np.float32)


def make_cirrhosis_phantom(
    shape=(128, 128, 10),
    voxel_mm=(2.0, 2.0, 4.0),
    echo_times_s=tuple(1.2e-3 * (i + 1) for i in range(6)),
    b0_tesla: float = 1.5,
    snr: float = 60.0,
    oversample: int = 2,
    z_extent: float = 3.0,
    background_lic: float = 5.0,
    background_pdff: float = 2.0,
    nodules=DEFAULT_NODULES,
    vessels=DEFAULT_VESSELS,
    cysts=DEFAULT_CYSTS,
    seed: int = 15,
) -> CirrhosisPhantom:
    """Build the cirrhotic abdomen (see the module docstring).

    Parameters
    ----------
    shape, voxel_mm : acquisition grid (voxels; mm); B0 along the third axis. Structures are
        placed in mm for a 256 mm field of view; a smaller field of view scales the abdomen
        (as in ``independent_abdomen``) but not the nodules, vessels or cysts.
    echo_times_s, b0_tesla, snr, oversample, z_extent : as ``make_abdomen_phantom``.
    background_lic : LIC of the siderotic background liver (mg Fe/g dw).
    nodules, vessels, cysts : definitions (mm from the slab centre, unscaled).
    """
    shape = tuple(int(n) for n in shape)
    vox = tuple(float(v) for v in voxel_mm)
    te = np.asarray(echo_times_s, float)
    step = tuple(v / oversample for v in vox)
    nz_ext = int(round(shape[2] * z_extent)) // 2 * 2 + shape[2] % 2
    fine_ext = (shape[0] * oversample, shape[1] * oversample, nz_ext * oversample)
    slab_z_mm = shape[2] * vox[2]
    tissue, _, _ = _segment(fine_ext, step, slab_z_mm)
    rng = np.random.default_rng(seed)
    liver = tissue == TISSUE_CODES["liver"]
    x, y, z = _coords(fine_ext, step)
    idx = np.nonzero(liver)
    pts = np.stack([x[idx[0]], y[idx[1]], z[idx[2]]], axis=1).astype(float)
    lic_l = _cirrhotic_lic(pts, rng, background_lic)
    pdff_l = np.full(len(pts), background_pdff, np.float32)
    structures_l = np.zeros(len(pts), np.int16)
    kind_l = np.zeros(len(pts), np.int8)  # 0 liver, 1 nodule, 2 blood, 3 cyst
    for k, nod in enumerate(nodules, start=1):
        inside = np.sum((pts - np.asarray(nod.centre_mm)) ** 2, axis=1) <= (
            nod.diameter_mm / 2) ** 2
        lic_l[inside] = nod.lic_mg_per_g * np.exp(0.05 * rng.standard_normal(int(inside.sum())))
        pdff_l[inside] = nod.pdff_percent
        structures_l[inside] = k
        kind_l[inside] = 1
    for k, ves in enumerate(vessels, start=len(nodules) + 1):
        inside = _segment_distance(pts[:, 0], pts[:, 1], pts[:, 2], ves.start_mm, ves.end_mm
                                   ) <= ves.radius_mm
        structures_l[inside] = k
        kind_l[inside] = 2
        lic_l[inside], pdff_l[inside] = 0.0, 0.0
    for k, cyst in enumerate(cysts, start=len(nodules) + len(vessels) + 1):
        inside = np.sum((pts - np.asarray(cyst.centre_mm)) ** 2, axis=1) <= (
            cyst.diameter_mm / 2) ** 2
        structures_l[inside] = k
        kind_l[inside] = 3
        lic_l[inside], pdff_l[inside] = 0.0, 0.0
    pd, pdff, r2w, r2f, chi_w, lic = _property_maps(
        tissue, np.zeros(fine_ext, np.int16), [], b0_tesla, CHI_PER_LIC_PPM, lic_l, pdff_l)
    scale = 1.0 + (b0_tesla - 1.5) / 1.5
    # blood and cyst overwrite the liver values of their voxels
    blood = kind_l == 2
    sat = np.zeros(len(pts), np.float32)
    for k, ves in enumerate(vessels, start=len(nodules) + 1):
        sat[structures_l == k] = ves.saturation
    chi_l = chi_w[idx]
    chi_l[blood] = HCT * (1 - sat[blood]) * DCHI_DEOXY_PPM
    chi_l[kind_l == 3] = 0.0
    r2_l = r2w[idx]
    r2_l[blood] = R2STAR_BLOOD_15T * scale
    r2_l[kind_l == 3] = R2STAR_CYST_15T * scale
    pd_l = pd[idx]
    pd_l[blood] = 0.90
    pd_l[kind_l == 3] = 1.0
    chi_w[idx], r2w[idx], r2f[idx], pd[idx] = chi_l, r2_l, r2_l, pd_l
    structures = np.zeros(fine_ext, np.int16)
    structures[idx] = structures_l
    del pts, lic_l, pdff_l, kind_l, chi_l, r2_l, pd_l, structures_l

    chi_abs = chi_w - CHI_AIR_MINUS_WATER_PPM  # air = 0, so the padding is air
    field_ppm = dipole_field_ppm(chi_abs, step)
    del chi_abs
    z0 = (nz_ext - shape[2]) // 2 * oversample
    crop = (slice(None), slice(None), slice(z0, z0 + shape[2] * oversample))
    field_hz = field_ppm[crop] * GAMMA_BAR_MHZ_PER_T * b0_tesla
    del field_ppm
    tissue_c, structures_c, liver_c = tissue[crop], structures[crop], liver[crop]
    pd, pdff, r2w, r2f, chi_c, lic_c = (a[crop] for a in (pd, pdff, r2w, r2f, chi_w, lic))
    body_water = (pd > 0.5) & (tissue_c != TISSUE_CODES["sat"])
    field_hz = field_hz - np.median(field_hz[body_water])  # scanner centre frequency

    shifts_ppm, amps = fat_spectrum()
    factor = (oversample,) * 3
    signal = gre_signal(pd, pdff, r2w, r2f, field_hz, te, b0_tesla, shape, oversample)
    liver_frac = _block_mean(liver_c.astype(np.float32), factor)
    liver_mask = liver_frac >= 0.5
    # structure labels: majority of the coarse voxel
    struct_c = np.zeros(shape, np.int16)
    n_struct = len(nodules) + len(vessels) + len(cysts)
    best = np.full(shape, 0.5, np.float32)
    for k in range(1, n_struct + 1):
        frac = _block_mean((structures_c == k).astype(np.float32), factor)
        better = frac >= best
        struct_c[better] = k
        best = np.where(better, frac, best)
    if np.isfinite(snr):
        ref = float(np.mean(np.abs(signal[..., 0][liver_mask & (struct_c == 0)])))
        sigma = ref / float(snr)
        signal += (rng.normal(0, sigma, signal.shape)
                   + 1j * rng.normal(0, sigma, signal.shape)).astype(np.complex64) / np.sqrt(2)
    # the abdomen puts the liver at negative x: the first voxel axis runs from the subject's
    # right to left (LAS), so that the liver is on the subject's right in world coordinates
    affine = np.diag([-vox[0], vox[1], vox[2], 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2.0 * np.diag(affine)[:3]
    chi_img = _block_mean(chi_c, factor).astype(np.float32)
    r2_img = _block_mean(r2w, factor).astype(np.float32)
    pdff_img = _block_mean(pdff, factor).astype(np.float32)
    lic_img = _block_mean(lic_c, factor).astype(np.float32)
    bg = liver_mask & (struct_c == 0)
    nodule_truth = []
    for k, nod in enumerate(nodules, start=1):
        m = struct_c == k
        nodule_truth.append({
            "name": nod.name, "kind": nod.kind, "where": nod.where,
            "diameter_mm": nod.diameter_mm, "lic_mg_per_g": nod.lic_mg_per_g,
            "pdff_percent": nod.pdff_percent, "n_voxels": int(m.sum()),
            "chi_ppm": float(chi_img[m].mean()) if m.any() else float("nan"),
            "r2star_per_s": float(np.median(r2_img[m])) if m.any() else float("nan"),
            "background_chi_ppm": float(np.median(chi_img[bg])),
            "background_r2star_per_s": float(np.median(r2_img[bg])),
        })
    return CirrhosisPhantom(
        magnitude=np.abs(signal).astype(np.float32),
        phase=np.angle(signal).astype(np.float32),
        echo_times_s=te, b0_tesla=float(b0_tesla), voxel_mm=vox, affine=affine,
        pdff_percent=pdff_img, r2star_per_s=r2_img, chi_ppm=chi_img,
        field_hz=_block_mean(field_hz, factor).astype(np.float32), lic_mg_per_g=lic_img,
        patch_labels=liver_mask.astype(np.int16), liver_mask=liver_mask,
        tissue=_block_mode(tissue_c.astype(np.int16), factor, mixed=-1).astype(np.int8),
        patches=[{"label": 1, "name": "liver", "lic_mg_per_g": background_lic}],
        fat_shifts_ppm=shifts_ppm, fat_amplitudes=amps,
        structures=struct_c, nodules=tuple(nodules), vessels=tuple(vessels),
        cysts=tuple(cysts), nodule_truth=nodule_truth, background_lic=float(background_lic),
    )


def structure_names(phantom: CirrhosisPhantom) -> dict:
    """Label in ``structures`` -> (name, kind) for nodules, vessels and cysts."""
    names = {}
    k = 1
    for nod in phantom.nodules:
        names[k] = (nod.name, nod.kind)
        k += 1
    for ves in phantom.vessels:
        names[k] = (ves.name, "vessel")
        k += 1
    for cyst in phantom.cysts:
        names[k] = (cyst.name, "cyst")
        k += 1
    return names

"""An independent abdomen phantom for validating ``qsmkit liver`` on data it did not make.

Nothing here comes from qsmkit: not the dipole kernel, not the grid, not the fat spectrum, not
a constant. The geometry follows issue 13: a slab (default 128 x 128 x 16 voxels of
2 x 2 x 4 mm) through an abdomen whose body, liver, spleen and vertebra continue beyond the slab
along B0 (z); lung bases sit above the liver dome (their lowest, lateral parts reach the top of
the slab); an air-filled stomach lies inside the slab; subcutaneous fat surrounds the body; a
6 x 4 grid of liver patches spans LIC 1-35 mg Fe/g dry weight x PDFF 0-30 %.

Physics
-------
* Field: ``dB/B0 = IFFT[D(k) FFT(chi)]`` with the continuous-field dipole kernel
  ``D(k) = 1/3 - (k.b0)^2/|k|^2`` (Salomir 2003; Marques & Bowtell 2005), computed on a grid
  ``oversample`` times finer than the acquisition grid, 3x the slab length along z and
  zero-padded (air) around it, then cropped. Susceptibility is absolute with air as zero (air
  +9.41 ppm relative to water, Schenck 1996), so the padding is air. The scanner frequency is
  set to the median water frequency of the body inside the slab (as a scanner's centre-frequency
  adjustment would), i.e. the median field inside the slab's body is removed.
* Fat spectrum: a six-group spectrum derived here from triglyceride chemistry (proton counts per
  triglyceride as functions of chain length CL, double bonds ndb and methylene-interrupted double
  bonds nmidb, Hamilton et al. 2011; CL = 16.8 + 0.27 ndb and nmidb = 0.093 ndb^2 as in Berglund
  et al. 2012), with ndb = 2.9, and the nine resonances merged into six groups at their
  amplitude-weighted shifts. Water at 4.70 ppm. This is not the ISMRM toolbox / Yu 2008 table.
* R2* of water from LIC: Wood et al. 2005 at 1.5 T, ``LIC = 0.0254 R2* + 0.202`` inverted to
  ``R2* = (LIC - 0.202) / 0.0254``; at 3 T R2* is doubled (Storey et al. 2007: R2* at 3 T about
  twice that at 1.5 T). Fat inside liver shares the water's R2* (iron dephases both; a single R2*
  per voxel, Horng et al. 2013); subcutaneous fat has its own R2*.
* Susceptibility of liver iron: ``chi = chi_tissue + slope LIC + chi_fat PDFF``, slope default
  0.12 ppm per mg Fe/g dw, within the apparent in-vivo susceptibilities reported for liver
  (Hernando et al. 2013; Sharma et al. 2017: QSM-based susceptometry = 0.49 x SQUID
  susceptometry). Fat +0.7 ppm relative to water (reported range 0.6-0.8 ppm, Hopkins & Wehrli
  1997; Schenck 1996); cortical bone -2.2 ppm (Hopkins & Wehrli 1997; Schenck 1996); inflated lung
  as an air/tissue mixture of 80 % air.
* Signal: per fine voxel ``PD [(1 - f) e^{-R2w t} + f sum_p a_p e^{i 2 pi f_p t} e^{-R2f t}]
  e^{i 2 pi gamma_bar B0 dB t} e^{i phi_0}`` averaged over each acquisition voxel (so partial
  volume and intravoxel dephasing are those of an acquisition), plus a smooth receive phase
  ``phi_0`` and complex Gaussian noise whose sigma is the liver's mean first-echo magnitude
  divided by ``snr``. gamma_bar = 42.577478 MHz/T (CODATA 2018).

References
----------
Salomir R, de Senneville BD, Moonen CT. Concepts Magn Reson B 2003;19B:26-34.
Marques JP, Bowtell R. Concepts Magn Reson B 2005;25B:65-78.
Schenck JF. The role of magnetic susceptibility in magnetic resonance imaging. Med Phys
    1996;23:815-850.
Hopkins JA, Wehrli FW. Magnetic susceptibility measurement of insoluble solids by NMR:
    magnetic susceptibility of bone. Magn Reson Med 1997;37:494-500.
Hamilton G, Yokoo T, Bydder M, et al. In vivo characterization of the liver fat 1H MR
    spectrum. NMR Biomed 2011;24:784-790.
Berglund J, Ahlstrom H, Kullberg J. Model-based mapping of fat unsaturation and chain length
    by chemical shift imaging. Magn Reson Med 2012;68:1815-1827.
Wood JC, Enriquez C, Ghugre N, et al. MRI R2 and R2* mapping accurately estimates hepatic iron
    concentration in transfusion-dependent thalassemia and sickle cell disease patients. Blood
    2005;106:1460-1465.
Storey P, Thompson AA, Carqueville CL, et al. R2* imaging of transfusional iron burden at 3T
    and comparison with 1.5T. J Magn Reson Imaging 2007;25:540-547.
Horng DE, Hernando D, Hines CDG, Reeder SB. Comparison of R2* correction methods for accurate
    fat quantification in fatty liver. J Magn Reson Imaging 2013;37:414-422.
Hernando D, Cook RJ, Diamond C, Reeder SB. Magnetic susceptibility as a B0 field strength
    independent MRI biomarker of liver iron overload. Magn Reson Med 2013;70:648-656.
Sharma SD, Fischer R, Schoennagel BP, et al. MRI-based quantitative susceptibility mapping
    (QSM) and R2* mapping of liver iron overload: comparison with SQUID-based biomagnetic liver
    susceptometry. Magn Reson Med 2017;78:264-270.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import scipy.fft

GAMMA_BAR_MHZ_PER_T = 42.577478  # CODATA 2018: proton gamma / 2 pi
CHI_AIR_MINUS_WATER_PPM = 9.41  # Schenck 1996: air +0.36, water -9.05 ppm (SI volume)
CHI_FAT_PPM = 0.70  # relative to water; reported 0.6-0.8 ppm
CHI_CORTICAL_BONE_PPM = -2.2  # relative to water (Hopkins & Wehrli 1997; Schenck 1996)
LUNG_AIR_FRACTION = 0.8  # inflated lung: about 80 % gas by volume
WATER_PPM = 4.70

PATCH_LIC_MG_PER_G = (1.0, 3.0, 7.0, 12.0, 20.0, 35.0)
PATCH_PDFF_PERCENT = (0.0, 5.0, 15.0, 30.0)


def fat_spectrum(ndb: float = 2.9) -> tuple[np.ndarray, np.ndarray]:
    """Six-group fat spectrum from triglyceride chemistry.

    Parameters
    ----------
    ndb : mean number of double bonds per triglyceride.

    Returns
    -------
    shifts_ppm : (6,) shifts relative to water (ppm, negative below water).
    amplitudes : (6,) relative amplitudes summing to one.

    References
    ----------
    Hamilton et al. NMR Biomed 2011;24:784 (proton counts); Berglund et al. MRM 2012;68:1815
    (CL and nmidb as functions of ndb).
    """
    cl = 16.8 + 0.27 * ndb
    nmidb = 0.093 * ndb**2
    peaks = [  # (ppm, protons per triglyceride, group)
        (0.90, 9.0, 0),                                   # methyl
        (1.30, (cl - 4) * 6 - ndb * 8 + nmidb * 2, 1),    # methylene
        (1.59, 6.0, 1),                                   # beta-carboxyl
        (2.02, (ndb - nmidb) * 4, 2),                     # alpha-olefinic
        (2.24, 6.0, 2),                                   # alpha-carboxyl
        (2.75, nmidb * 2, 3),                             # diallylic
        (4.20, 4.0, 4),                                   # glycerol CH2
        (5.19, 1.0, 5),                                   # glycerol CH
        (5.29, ndb * 2, 5),                               # olefinic
    ]
    ppm = np.array([p[0] for p in peaks])
    protons = np.array([p[1] for p in peaks])
    group = np.array([p[2] for p in peaks])
    amp = np.bincount(group, weights=protons)
    shift = np.bincount(group, weights=protons * ppm) / amp
    return shift - WATER_PPM, amp / amp.sum()


def r2star_water_per_s(lic_mg_per_g, b0_tesla: float) -> np.ndarray:
    """R2* (1/s) of liver water from LIC: Wood 2005 at 1.5 T, doubled at 3 T (Storey 2007);
    linear in B0 between and beyond. Floor 25 1/s at 1.5 T (normal liver)."""
    r2_15 = np.maximum((np.asarray(lic_mg_per_g, float) - 0.202) / 0.0254, 25.0)
    return r2_15 * (1.0 + (float(b0_tesla) - 1.5) / 1.5)


def dipole_field_ppm(chi_ppm: np.ndarray, voxel_mm, b0_dir=(0.0, 0.0, 1.0),
                     pad_factor: float = 1.5) -> np.ndarray:
    """Relative field (ppm of B0) of a susceptibility map (ppm, zero outside) with the
    continuous dipole kernel ``1/3 - (k.b0)^2/|k|^2`` on a zero-padded grid (k = 0 set to 0)."""
    shape = np.asarray(chi_ppm.shape)
    padded = tuple(int(scipy.fft.next_fast_len(int(np.ceil(n * pad_factor)))) for n in shape)
    b = np.asarray(b0_dir, float)
    b = b / np.linalg.norm(b)
    ks = [np.fft.fftfreq(n, d=v) for n, v in zip(padded, voxel_mm, strict=True)]
    ks[-1] = np.fft.rfftfreq(padded[-1], d=voxel_mm[-1])
    kx, ky, kz = np.meshgrid(*ks, indexing="ij", sparse=True)
    k2 = kx**2 + ky**2 + kz**2
    kb = kx * b[0] + ky * b[1] + kz * b[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = (1.0 / 3.0 - kb**2 / k2).astype(np.float32)
    kernel[0, 0, 0] = 0.0
    spec = scipy.fft.rfftn(chi_ppm.astype(np.float32), s=padded, workers=-1)
    field = scipy.fft.irfftn(spec * kernel, s=padded, workers=-1)
    return field[: shape[0], : shape[1], : shape[2]].astype(np.float32)


@dataclasses.dataclass
class AbdomenPhantom:
    """Acquisition-grid data and truth (all (X, Y, Z) unless stated; chi relative to water)."""

    magnitude: np.ndarray        # (X, Y, Z, E) float32
    phase: np.ndarray            # (X, Y, Z, E) float32, radians, wrapped
    echo_times_s: np.ndarray
    b0_tesla: float
    voxel_mm: tuple
    affine: np.ndarray
    pdff_percent: np.ndarray
    r2star_per_s: np.ndarray     # water R2*
    chi_ppm: np.ndarray
    field_hz: np.ndarray
    lic_mg_per_g: np.ndarray
    patch_labels: np.ndarray     # int16, 1..24, 0 elsewhere
    liver_mask: np.ndarray
    tissue: np.ndarray           # int8 tissue codes (TISSUE_CODES), -1 where mixed
    patches: list                # dicts: label, lic_mg_per_g, pdff_percent, r2star_per_s, chi_ppm
    fat_shifts_ppm: np.ndarray
    fat_amplitudes: np.ndarray


TISSUE_CODES = {"air": 0, "sat": 1, "wall": 2, "liver": 3, "spleen": 4, "stomach": 5,
                "bone": 6, "marrow": 7, "lung": 8, "kidney": 9}


def _segment(shape, step_mm, slab_z_mm):
    """Tissue codes, patch labels on a grid with voxel ``step_mm``; coordinates in mm, origin
    at the slab centre; in-plane sizes scale with the field of view (256 mm nominal)."""
    x, y, z = (((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
               for n, s in zip(shape, step_mm, strict=True))
    fov = shape[0] * step_mm[0]
    s = fov / 256.0  # scale for smaller test slabs
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    tissue = np.zeros(shape, np.int8)

    def ell(cx, cy, ax, ay):
        return ((X - cx * s) / (ax * s)) ** 2 + ((Y - cy * s) / (ay * s)) ** 2 <= 1.0

    body = ell(0, 0, 118, 88) & (Z > -1e9)
    inner = ell(0, 0, 103, 74)
    tissue[body] = TISSUE_CODES["sat"]
    tissue[inner & body] = TISSUE_CODES["wall"]
    cavity = ell(0, 3, 95, 66)
    rho_r = np.sqrt((X + 45 * s) ** 2 + (Y - 5 * s) ** 2)
    rho_l = np.sqrt((X - 50 * s) ** 2 + (Y - 5 * s) ** 2)
    top = slab_z_mm / 2.0
    dome_r = top + 14 - rho_r**2 / (2 * 150.0 * s)
    dome_l = top + 6 - rho_l**2 / (2 * 150.0 * s)
    liver = ell(-45, 5, 58, 56) & cavity & (Z < dome_r)
    tissue[np.broadcast_to(liver, shape)] = TISSUE_CODES["liver"]
    spleen = ell(58, -32, 30, 20) & cavity & (Z < dome_l) & (Z > top - 110)
    tissue[np.broadcast_to(spleen, shape)] = TISSUE_CODES["spleen"]
    kidney = (ell(-30, -52, 18, 14) | ell(40, -52, 18, 14)) & (Z < -top + 10)
    tissue[np.broadcast_to(kidney, shape)] = TISSUE_CODES["kidney"]
    stomach = (((X - 40 * s) / (24 * s)) ** 2 + ((Y - 30 * s) / (20 * s)) ** 2
               + (Z / (0.55 * slab_z_mm)) ** 2) <= 1.0
    tissue[stomach] = TISSUE_CODES["stomach"]
    lung = cavity & (((X < -5 * s) & (Z >= dome_r)) | ((X >= -5 * s) & (Z >= dome_l)))
    lung = lung & ~ell(0, -55, 22, 22) & ~ell(5, 20, 20, 18)  # spine, heart/mediastinum
    tissue[np.broadcast_to(lung, shape)] = TISSUE_CODES["lung"]
    vb = (X / (17 * s)) ** 2 + ((Y + 58 * s) / (15 * s)) ** 2
    tissue[np.broadcast_to(vb <= 1.0, shape)] = TISSUE_CODES["bone"]
    tissue[np.broadcast_to(vb <= 0.6, shape)] = TISSUE_CODES["marrow"]

    # 6 x 4 patch grid (LIC along x, PDFF along y), 10 mm squares on a 12 mm pitch, whole z
    labels = np.zeros(shape, np.int16)
    patches = []
    half, pitch = 5.0 * s, 12.0 * s
    for j, pdff in enumerate(PATCH_PDFF_PERCENT):
        for i, lic in enumerate(PATCH_LIC_MG_PER_G):
            cx = -45 * s + (i - 2.5) * pitch
            cy = 5 * s + (j - 1.5) * pitch
            sq = (np.abs(X - cx) < half) & (np.abs(Y - cy) < half)
            region = np.broadcast_to(sq, shape) & (tissue == TISSUE_CODES["liver"])
            label = 1 + i + j * len(PATCH_LIC_MG_PER_G)
            labels[region] = label
            patches.append({"label": label, "lic_mg_per_g": lic, "pdff_percent": pdff})
    return tissue, labels, patches


def _property_maps(tissue, labels, patches, b0_tesla, chi_per_lic_ppm, liver_lic, liver_pdff):
    """Proton density, PDFF (%), water R2*, fat R2* (1/s), chi (ppm rel. water), LIC."""
    scale = 1.0 + (b0_tesla - 1.5) / 1.5  # R2* about proportional to B0 (Storey 2007)
    t = TISSUE_CODES
    #          PD    PDFF  R2w(1.5T) R2f(1.5T) chi (rel. water)
    table = {
        t["air"]: (0.0, 0.0, 0.0, 0.0, CHI_AIR_MINUS_WATER_PPM),
        t["sat"]: (0.95, 92.0, 30.0, 25.0, None),
        t["wall"]: (0.80, 3.0, 32.0, 32.0, -0.05),
        t["spleen"]: (0.85, 0.0, 20.0, 20.0, -0.03),
        t["kidney"]: (0.85, 0.0, 18.0, 18.0, -0.03),
        t["stomach"]: (0.0, 0.0, 0.0, 0.0, CHI_AIR_MINUS_WATER_PPM),
        t["bone"]: (0.05, 0.0, 400.0, 400.0, CHI_CORTICAL_BONE_PPM),
        t["marrow"]: (0.80, 55.0, 70.0, 70.0, None),
        t["lung"]: (0.10, 0.0, 300.0, 300.0, LUNG_AIR_FRACTION * CHI_AIR_MINUS_WATER_PPM),
    }
    shape = tissue.shape
    pd = np.zeros(shape, np.float32)
    pdff = np.zeros(shape, np.float32)
    r2w = np.zeros(shape, np.float32)
    r2f = np.zeros(shape, np.float32)
    chi = np.zeros(shape, np.float32)
    lic = np.zeros(shape, np.float32)
    for code, (p, f, rw, rf, c) in table.items():
        m = tissue == code
        pd[m], pdff[m], r2w[m], r2f[m] = p, f, rw * scale, rf * scale
        chi[m] = (-0.05 + CHI_FAT_PPM * f / 100.0) if c is None else c
    liver = tissue == t["liver"]
    lic[liver] = liver_lic
    pdff[liver] = liver_pdff
    for p in patches:
        m = labels == p["label"]
        lic[m] = p["lic_mg_per_g"]
        pdff[m] = p["pdff_percent"]
    pd[liver] = 0.90
    r2w[liver] = r2star_water_per_s(lic[liver], b0_tesla)
    r2f[liver] = r2w[liver]
    chi[liver] = -0.05 + chi_per_lic_ppm * lic[liver] + CHI_FAT_PPM * pdff[liver] / 100.0
    for p in patches:
        p["r2star_per_s"] = float(r2star_water_per_s(p["lic_mg_per_g"], b0_tesla))
        p["chi_ppm"] = -0.05 + chi_per_lic_ppm * p["lic_mg_per_g"] + CHI_FAT_PPM * p[
            "pdff_percent"] / 100.0
    return pd, pdff, r2w, r2f, chi, lic


def _block_mean(data, factor):
    fx, fy, fz = factor
    x, y, z = data.shape[:3]
    return data.reshape(x // fx, fx, y // fy, fy, z // fz, fz, *data.shape[3:]).mean(
        axis=(1, 3, 5))


def _block_mode(labels, factor, mixed=0):
    """Label of each coarse voxel: the label the whole block shares, else ``mixed`` (no
    partial volume in the truth regions)."""
    fx, fy, fz = factor
    x, y, z = labels.shape
    blocks = labels.reshape(x // fx, fx, y // fy, fy, z // fz, fz)
    lo = blocks.min(axis=(1, 3, 5))
    hi = blocks.max(axis=(1, 3, 5))
    return np.where(lo == hi, lo, mixed)


def gre_signal(pd, pdff, r2w, r2f, field_hz, echo_times_s, b0_tesla, shape, oversample,
               fat_ndb: float = 2.9) -> np.ndarray:
    """Noise-free multi-echo GRE signal (X, Y, Z, E) complex64 on the acquisition grid:
    water and fat (:func:`fat_spectrum`) with their R2* on the fine grid, dephased by the
    field (Hz), averaged over each acquisition voxel, times a smooth receiver phase."""
    shifts_ppm, amps = fat_spectrum(fat_ndb)
    fat_hz = shifts_ppm * GAMMA_BAR_MHZ_PER_T * b0_tesla
    gx, gy, gz = np.meshgrid(*(np.linspace(-1, 1, int(k)) for k in shape), indexing="ij")
    rx_phase = (0.8 * np.cos(1.3 * gx + 0.4) + 0.6 * np.sin(1.1 * gy - 0.2) + 0.2 * gz
                + 0.3).astype(np.float32)
    w = pd * (1.0 - pdff / 100.0)
    f = pd * pdff / 100.0
    factor = (oversample, oversample, oversample)
    te = np.asarray(echo_times_s, float)
    signal = np.empty(tuple(shape) + (te.size,), np.complex64)
    for e, t in enumerate(te):
        fat_sum = np.sum(amps * np.exp(2j * np.pi * fat_hz * t))
        s = (w * np.exp(-r2w * t) + f * fat_sum * np.exp(-r2f * t)) * np.exp(
            2j * np.pi * field_hz * t)
        signal[..., e] = _block_mean(s.astype(np.complex64), factor) * np.exp(1j * rx_phase)
    return signal


def make_abdomen_phantom(
    shape=(128, 128, 16),
    voxel_mm=(2.0, 2.0, 4.0),
    echo_times_s=tuple(1.2e-3 * (i + 1) for i in range(6)),
    b0_tesla: float = 1.5,
    snr: float = 60.0,
    oversample: int = 2,
    z_extent: float = 3.0,
    chi_per_lic_ppm: float = 0.12,
    liver_lic_mg_per_g: float = 1.2,
    liver_pdff_percent: float = 3.0,
    fat_ndb: float = 2.9,
    seed: int = 13,
) -> AbdomenPhantom:
    """Build the phantom (see the module docstring for the physics and its sources).

    Parameters
    ----------
    shape, voxel_mm : acquisition grid (voxels; mm), B0 along the third axis.
    echo_times_s : echo times (s).
    b0_tesla : field strength (T).
    snr : liver first-echo mean magnitude over the noise sigma; ``np.inf`` for no noise.
    oversample : fine-grid factor per axis.
    z_extent : simulated length along z as a multiple of the slab (body beyond the slab).
    chi_per_lic_ppm : liver susceptibility per mg Fe/g dry weight (ppm).
    """
    shape = tuple(int(n) for n in shape)
    vox = tuple(float(v) for v in voxel_mm)
    te = np.asarray(echo_times_s, float)
    step = tuple(v / oversample for v in vox)
    nz_ext = int(round(shape[2] * z_extent)) // 2 * 2 + shape[2] % 2
    fine_ext = (shape[0] * oversample, shape[1] * oversample, nz_ext * oversample)
    slab_z_mm = shape[2] * vox[2]
    tissue_f, labels_f, patches = _segment(fine_ext, step, slab_z_mm)
    pd, pdff, r2w, r2f, chi_w, lic = _property_maps(
        tissue_f, labels_f, patches, b0_tesla, chi_per_lic_ppm, liver_lic_mg_per_g,
        liver_pdff_percent)
    chi_abs = chi_w - CHI_AIR_MINUS_WATER_PPM  # air = 0, so the padding is air
    field_ppm = dipole_field_ppm(chi_abs, step)
    z0 = (nz_ext - shape[2]) // 2 * oversample
    crop = (slice(None), slice(None), slice(z0, z0 + shape[2] * oversample))
    field_hz = field_ppm[crop] * GAMMA_BAR_MHZ_PER_T * b0_tesla  # ppm * MHz = Hz
    del field_ppm
    tissue_c, labels_c = tissue_f[crop], labels_f[crop]
    pd, pdff, r2w, r2f = (a[crop] for a in (pd, pdff, r2w, r2f))
    body_water = (pd > 0.5) & (tissue_c != TISSUE_CODES["sat"])
    field_hz = field_hz - np.median(field_hz[body_water])  # scanner centre frequency

    shifts_ppm, amps = fat_spectrum(fat_ndb)
    rng = np.random.default_rng(seed)
    factor = (oversample, oversample, oversample)
    signal = gre_signal(pd, pdff, r2w, r2f, field_hz, te, b0_tesla, shape, oversample,
                        fat_ndb)
    labels = _block_mode(labels_c, factor).astype(np.int16)
    tissue = _block_mode(tissue_c.astype(np.int16), factor, mixed=-1).astype(np.int8)
    liver_mask = _block_mean((tissue_c == TISSUE_CODES["liver"]).astype(np.float32),
                             factor) > 0.999
    if np.isfinite(snr):
        ref = float(np.mean(np.abs(signal[..., 0][liver_mask])))
        sigma = ref / float(snr)
        signal += (rng.normal(0, sigma, signal.shape)
                   + 1j * rng.normal(0, sigma, signal.shape)).astype(np.complex64) / np.sqrt(2)
    affine = np.diag([*vox, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2.0 * np.array(vox)
    return AbdomenPhantom(
        magnitude=np.abs(signal).astype(np.float32),
        phase=np.angle(signal).astype(np.float32),
        echo_times_s=te, b0_tesla=float(b0_tesla), voxel_mm=vox, affine=affine,
        pdff_percent=_block_mean(pdff, factor).astype(np.float32),
        r2star_per_s=_block_mean(r2w, factor).astype(np.float32),
        chi_ppm=_block_mean(chi_w[crop], factor).astype(np.float32),
        field_hz=_block_mean(field_hz, factor).astype(np.float32),
        lic_mg_per_g=_block_mean(lic[crop], factor).astype(np.float32),
        patch_labels=labels, liver_mask=liver_mask, tissue=tissue, patches=patches,
        fat_shifts_ppm=shifts_ppm, fat_amplitudes=amps,
    )


def write_nifti(phantom: AbdomenPhantom, folder) -> dict:
    """Write one magnitude and one phase (radians) NIfTI per echo, each with a BIDS sidecar
    (EchoTime in s, MagneticFieldStrength in T), the patch labels and the truth maps, with
    nibabel (not qsmkit's writer). Returns the paths ("mag" and "phase" are lists)."""
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"mag": [], "phase": []}
    for e, te in enumerate(phantom.echo_times_s):
        sidecar = {"EchoTime": float(te), "MagneticFieldStrength": phantom.b0_tesla}
        for kind, data in (("mag", phantom.magnitude), ("phase", phantom.phase)):
            path = folder / f"{kind}_echo-{e + 1}.nii.gz"
            nib.save(nib.Nifti1Image(data[..., e], phantom.affine), path)
            path.with_name(f"{kind}_echo-{e + 1}.json").write_text(json.dumps(sidecar))
            paths[kind].append(path)
    for name, data in (("labels", phantom.patch_labels.astype(np.int16)),
                       ("truth_pdff", phantom.pdff_percent), ("truth_r2star", phantom.r2star_per_s),
                       ("truth_chi", phantom.chi_ppm), ("truth_field_hz", phantom.field_hz)):
        path = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, phantom.affine), path)
        paths[name] = path
    (folder / "truth_patches.json").write_text(json.dumps(phantom.patches, indent=1))
    return paths

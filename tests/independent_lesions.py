"""Independent head phantoms for the lesion, rim and vein analyses (issue 15).

Built without qsmkit, on the forward model of ``independent_phantom`` (continuous dipole
kernel on a grid ``oversample`` times finer than the acquisition, complex signal averaged over
each acquisition voxel, absolute susceptibility with air as zero, spoiled GRE magnitude from
PD, T1 and T2*). What is new here is the anatomy a reader meets:

* curved veins (tubes around circular arcs and an S-curve, and a thin vein running across the
  slices that looks like a dot on every slice), blood chi from the saturation Yv and the
  haematocrit through ``Hct (dchi_do (1 - Yv) + dchi_oxy)`` with the deoxy-/oxyhaemoglobin
  constants of Spees 2001 (0.27 ppm cgs -> 4 pi 0.27 = 3.393 ppm SI) and Jain 2012 (-0.1 ppm);
* focal lesions of several sizes (radius 1.5 to 3 mm): microbleeds (+0.6 to +1.2 ppm) and
  calcifications (-0.6 to -1.0 ppm), some a few millimetres from a vein;
* a haematoma (ellipsoid, about 0.7 mL, +1 ppm; Chen 2014 report haemorrhages of the order of
  +1 ppm), which is not a microbleed (Greenberg 2009: microbleeds up to 5-10 mm);
* multiple-sclerosis lesions of radius 3, 4.5 and 6 mm: three with a paramagnetic rim
  (+0.07 ppm over white matter in the outer 1.2 mm), three without (iso core, a diffusely
  paramagnetic lesion, and a partial rim over a third of the edge); in-vivo rims are a few
  hundredths of a ppm above white matter (Dal-Bianco 2017; Bagnato 2024);
* a frontal sinus (air) and skull for a real background field; oblique B0 and anisotropic
  voxels by default (1 x 1 x 1.5 mm, B0 tilted 20 degrees).

The anatomy is written in millimetres about the centre of the field of view; the truth is
returned on the acquisition grid (partial-volume fractions, relative to water).

References
----------
Spees WM, Yablonskiy DA, Oswood MC, Ackerman JJ. Water proton MR properties of human blood at
    1.5 Tesla: magnetic susceptibility, T1, T2, T2*, and non-Lorentzian signal behavior. Magn
    Reson Med 2001;45:533-542.
Jain V, Abdulmalik O, Propert KJ, Wehrli FW. Investigating the magnetic susceptibility
    properties of fresh human blood for noninvasive oxygen saturation quantification. Magn
    Reson Med 2012;68:863-867.
Greenberg SM, Vernooij MW, Cordonnier C, et al. Cerebral microbleeds: a guide to detection and
    interpretation. Lancet Neurol 2009;8:165-174.
Chen W, Zhu W, Kovanlikaya I, et al. Intracranial calcifications and hemorrhages:
    characterization with quantitative susceptibility mapping. Radiology 2014;270:496-505.
Bagnato F, Sati P, Hemond CC, et al. Imaging chronic active lesions in multiple sclerosis: a
    consensus statement. Brain 2024;147:2913-2933.
Dal-Bianco A, Grabner G, Kronnerwetter C, et al. Slow expansion of multiple sclerosis iron rim
    lesions: pathology and 7 T magnetic resonance imaging. Acta Neuropathol 2017;133:25-42.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from independent_phantom import (
    CHI_AIR_MINUS_WATER_PPM,
    GAMMA_BAR_MHZ_PER_T,
    _block_mean,
    _centred_coordinates_mm,
    _field_ppm,
    _rotation_tilting_b0,
    _smooth_random,
)

HCT = 0.42
DCHI_DEOXY_PPM = 4 * np.pi * 0.27  # Spees 2001, cgs 0.27 ppm per unit Hct, fully deoxygenated
DCHI_OXY_PPM = -0.1  # Jain 2012

# name: chi relative to water (ppm), proton density, T1 (s), T2* at 3 T (s)
TISSUE = {
    "scalp": (-0.05, 0.9, 0.38, 0.030),
    "bone": (-2.0, 0.05, 0.25, 0.001),
    "csf": (0.0, 1.0, 4.2, 0.300),
    "gm": (0.02, 0.82, 1.33, 0.052),
    "wm": (-0.03, 0.70, 0.83, 0.045),
    "nucleus": (0.09, 0.82, 1.20, 0.032),
    "blood": (None, 0.85, 1.60, 0.012),
    "bleed": (None, 0.80, 1.00, 0.008),
    "calcification": (None, 0.30, 0.50, 0.006),
    "hematoma": (1.0, 0.85, 0.90, 0.006),
    "ms": (None, 0.78, 1.10, 0.050),
}
MS_CORE_OVER_WM_PPM = 0.015  # demyelinated core: less diamagnetic myelin
MS_RIM_OVER_WM_PPM = 0.07
MS_RIM_MM = 1.2


def blood_chi_ppm(yv: float, hct: float = HCT) -> float:
    """chi of whole blood relative to water (ppm, SI) at saturation ``yv``."""
    return hct * (DCHI_DEOXY_PPM * (1.0 - yv) + DCHI_OXY_PPM)


def _arc(centre, radius, a0_deg, a1_deg, plane):
    t = np.radians(np.linspace(a0_deg, a1_deg, 400))
    u, v = radius * np.cos(t), radius * np.sin(t)
    p = np.zeros((len(t), 3))
    p[:, plane[0]], p[:, plane[1]] = u, v
    return p + np.asarray(centre, float)


def _s_curve():
    y = np.linspace(-18.0, 18.0, 400)
    return np.stack([-6 + 5 * np.sin(np.pi * y / 18), y, -14 + 2 * np.cos(np.pi * y / 18)], 1)


def _line(a, b):
    t = np.linspace(0, 1, 400)[:, None]
    return np.asarray(a, float) + t * (np.subtract(b, a))


VEINS = (
    # name, centre-line points (mm), radius (mm), Yv
    ("arc_xy", _arc((0, -4, 14), 15.0, 200, 340, (0, 1)), 2.5, 0.60),
    ("s_curve", _s_curve(), 2.0, 0.65),
    ("through_slices", _line((20, -12, -12), (20, -12, 12)), 1.0, 0.55),
    ("thin_arc_xz", _arc((0, 12, 0), 12.0, 30, 150, (0, 2)), 1.2, 0.60),
)
NUCLEI = (((-15, 2, -5), (3.5, 7, 5)), ((15, 2, -5), (3.5, 7, 5)))
VENTRICLE = ((0, -8, -4), (2.5, 6, 3.5))
FOCAL = (
    # kind, centre (mm), radius (mm), chi relative to water (ppm)
    ("microbleed", (-18, -14, -8), 1.5, 1.0),
    ("microbleed", (8, 16, -12), 2.0, 0.8),
    ("microbleed", (-18, 14, 6), 2.5, 0.7),
    ("microbleed", (16, 2, 12), 3.0, 0.6),
    ("microbleed", (13, -15, 0), 2.0, 0.9),  # 7.6 mm from the through-slice vein
    ("microbleed", (-4, 20, -4), 1.5, 1.2),
    ("calcification", (0, 4, -2), 2.0, -0.8),
    ("calcification", (22, 8, -4), 1.5, -1.0),
    ("calcification", (-8, 4, 16), 3.0, -0.6),
    ("calcification", (6, -8, -16), 2.5, -0.7),
)
HEMATOMA = ((-14, -12, 2), (5.5, 5.5, 5.5))
MS = (
    # kind (truth class), centre (mm), radius (mm), pattern
    ("rim+", (-18, -14, -8), 3.0, "rim"),
    ("rim-", (18, -4, -14), 3.0, "iso"),
    ("rim+", (-18, 14, 4), 4.5, "rim"),
    ("rim-", (16, 0, 12), 4.5, "diffuse"),
    ("rim+", (0, 4, 2), 6.0, "rim"),
    ("rim-", (10, 14, -10), 6.0, "third"),
)


@dataclasses.dataclass
class LesionHead:
    magnitude: np.ndarray  # (X, Y, Z, E)
    phase_rad: np.ndarray  # (X, Y, Z, E)
    chi_ppm: np.ndarray  # truth relative to water, acquisition grid
    brain_mask: np.ndarray
    csf_mask: np.ndarray  # ventricle (acquisition voxels at least half CSF, inside the brain)
    affine: np.ndarray
    echo_times_s: tuple
    b0_tesla: float
    b0_dir_voxel: np.ndarray
    voxel_size_mm: tuple
    lesions: list  # focal lesions and the haematoma: kind, center_vox, radius_mm, volume_ml
    veins: list  # name, points_vox (centre line), radius_mm, yv, chi_ppm
    ms_labels: np.ndarray  # (X, Y, Z) int: MS lesion id (1..6), for the rim analysis
    ms: list  # id, kind (rim+/rim-), center_vox, radius_mm, pattern


def _ellipsoid(c, centre, radii):
    return sum(((c[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0


def _tube(coords_flat, points, radius):
    """Boolean of the fine-grid points within ``radius`` of a densely sampled centre line."""
    lo, hi = points.min(0) - radius - 1, points.max(0) + radius + 1
    sel = np.all((coords_flat >= lo) & (coords_flat <= hi), axis=1)
    out = np.zeros(len(coords_flat), bool)
    d, _ = cKDTree(points).query(coords_flat[sel], distance_upper_bound=radius + 0.01)
    out[np.flatnonzero(sel)[d <= radius]] = True
    return out


def make_lesion_head(kind: str = "focal", *, shape=(80, 80, 48), voxel_size_mm=(1.0, 1.0, 1.5),
                     tilt_deg: float = 20.0, b0_tesla: float = 3.0,
                     echo_times_s=(0.004, 0.009, 0.014, 0.019), snr: float | None = 100.0,
                     oversample: int = 2, seed: int = 0) -> LesionHead:
    """Simulate a head with ``kind`` 'focal' (bleeds, calcifications, haematoma) or 'ms'
    (MS lesions), both with the curved veins, deep grey nuclei, a ventricle and a sinus."""
    rng = np.random.default_rng(seed)
    voxel = np.asarray(voxel_size_mm, float)
    step = voxel / oversample
    fine_shape = tuple(int(n) * oversample for n in shape)
    axes = _centred_coordinates_mm(fine_shape, step)
    c = np.meshgrid(*axes, indexing="ij", sparse=True)
    flat = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    head = _ellipsoid(c, (0, 0, 0), (38, 38, 34))
    skull = _ellipsoid(c, (0, 0, 0), (35, 35, 31))
    brain = _ellipsoid(c, (0, 0, 0), (32, 32, 28))
    cortex = _ellipsoid(c, (0, 0, 0), (30, 30, 26))
    wm = _ellipsoid(c, (0, 0, 0), (28, 28, 24))
    sinus = _ellipsoid(c, (0, 31, -20), (9, 4, 6)) & ~brain
    chi = np.zeros(fine_shape, np.float32)
    pd = np.zeros(fine_shape, np.float32)
    t1 = np.ones(fine_shape, np.float32)
    t2s = np.ones(fine_shape, np.float32)

    def paint(where, name, value=None):
        v, p, r1, r2 = TISSUE[name]
        chi[where] = (v if value is None else value)
        pd[where], t1[where] = p, r1
        t2s[where] = r2 if name == "csf" else r2 * 3.0 / b0_tesla

    paint(head, "scalp")
    paint(skull, "bone")
    paint(brain, "csf")
    paint(cortex, "gm")
    paint(wm, "wm")
    texture = _smooth_random(fine_shape, step, 1.5, rng)
    chi[cortex] += 0.008 * texture[cortex]
    for centre, radii in NUCLEI:
        paint(_ellipsoid(c, centre, radii), "nucleus")
    paint(_ellipsoid(c, *VENTRICLE), "csf")
    ms_fine = np.zeros(fine_shape, np.int8)
    lesions, ms_rows = [], []
    vox_of = lambda p: tuple(float(v) for v in (np.asarray(p) / voxel + (np.asarray(shape)  # noqa: E731
                                                                           - 1) / 2))
    if kind == "focal":
        for k, (what, centre, radius, value) in enumerate(FOCAL, start=1):
            paint(_ellipsoid(c, centre, (radius,) * 3), "bleed" if value > 0 else
                  "calcification", value)
            lesions.append({"id": k, "kind": what, "center_vox": vox_of(centre),
                            "radius_mm": radius, "chi_ppm": value})
        centre, radii = HEMATOMA
        paint(_ellipsoid(c, centre, radii), "hematoma")
        lesions.append({"id": len(lesions) + 1, "kind": "large_hemorrhage",
                        "center_vox": vox_of(centre), "radius_mm": max(radii),
                        "volume_ml": 4 / 3 * np.pi * np.prod(radii) / 1000.0,
                        "chi_ppm": TISSUE["hematoma"][0]})
    elif kind == "ms":
        wm_chi = TISSUE["wm"][0]
        for k, (truth, centre, radius, pattern) in enumerate(MS, start=1):
            radii = (radius, 0.85 * radius, 1.15 * radius)
            region = _ellipsoid(c, centre, radii)
            inner = _ellipsoid(c, centre, [r - MS_RIM_MM for r in radii])
            core = wm_chi + MS_CORE_OVER_WM_PPM
            paint(region, "ms", core)
            if pattern == "diffuse":
                chi[region] = wm_chi + 0.04
            band = region & ~inner
            if pattern == "third":
                angle = np.arctan2(c[1] - centre[1], c[0] - centre[0])
                band = band & (np.abs(angle) < np.pi / 3)
            if pattern in ("rim", "third"):
                chi[band] = wm_chi + MS_RIM_OVER_WM_PPM
            ms_fine[region] = k
            ms_rows.append({"id": k, "kind": truth, "center_vox": vox_of(centre),
                            "radius_mm": radius, "pattern": pattern})
    else:
        raise ValueError(kind)
    vein_rows = []
    for name, points, radius, yv in VEINS:
        where = _tube(flat, points, radius).reshape(fine_shape) & wm
        paint(where, "blood", blood_chi_ppm(yv))
        vein_rows.append({"name": name, "points_vox": points / voxel + (np.asarray(shape) - 1)
                          / 2, "radius_mm": radius, "yv": yv, "chi_ppm": blood_chi_ppm(yv)})
    del flat
    inside = brain.copy()
    chi_abs = np.where(head & ~sinus, chi - CHI_AIR_MINUS_WATER_PPM, 0.0).astype(np.float32)
    pd[sinus | ~head] = 0.0
    rotation = _rotation_tilting_b0(tilt_deg)
    b0_dir = rotation.T @ np.array([0.0, 0.0, 1.0])
    field_hz = GAMMA_BAR_MHZ_PER_T * b0_tesla * _field_ppm(chi_abs, tuple(step), b0_dir)
    alpha = np.radians(15.0)
    e1 = np.exp(-0.030 / t1)
    steady = pd * np.sin(alpha) * (1 - e1) / (1 - np.cos(alpha) * e1)
    xs, ys, zs = c
    fov = np.asarray(shape) * voxel
    phase0 = (0.4 + 0.8 * xs / fov[0] - 0.6 * ys / fov[1] + 1.0 * (zs / fov[2]) ** 2)
    signal = np.empty((*shape, len(echo_times_s)), np.complex64)
    for i, te in enumerate(echo_times_s):
        fine = steady * np.exp(-te / t2s) * np.exp(1j * (2 * np.pi * field_hz * te + phase0))
        signal[..., i] = _block_mean(fine.astype(np.complex64), oversample)
    if snr is not None:
        sigma = float(np.abs(signal[..., 0]).max()) / snr
        noise = rng.standard_normal((*signal.shape, 2)).astype(np.float32) * sigma
        signal = signal + (noise[..., 0] + 1j * noise[..., 1])
    fraction = _block_mean(inside.astype(np.float32), oversample)
    brain_mask = fraction >= 0.5
    chi_truth = np.where(brain_mask, _block_mean(np.where(inside, chi, 0), oversample)
                         / np.maximum(fraction, 1e-6), 0).astype(np.float32)
    ventricle = _block_mean(_ellipsoid(c, *VENTRICLE).astype(np.float32), oversample) >= 0.5
    ms_labels = np.zeros(shape, np.int32)
    for row in ms_rows:
        ms_labels[_block_mean((ms_fine == row["id"]).astype(np.float32), oversample) >= 0.5] \
            = row["id"]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(voxel)
    affine[:3, 3] = -rotation @ (voxel * (np.asarray(shape) - 1) / 2)
    return LesionHead(
        magnitude=np.abs(signal).astype(np.float32), phase_rad=np.angle(signal).astype(
            np.float32), chi_ppm=chi_truth, brain_mask=brain_mask,
        csf_mask=ventricle & brain_mask, affine=affine,
        echo_times_s=tuple(float(t) for t in echo_times_s), b0_tesla=float(b0_tesla),
        b0_dir_voxel=b0_dir, voxel_size_mm=tuple(float(v) for v in voxel), lesions=lesions,
        veins=vein_rows, ms_labels=ms_labels, ms=ms_rows)


def clearances_mm(kind: str) -> list[tuple[str, str, float]]:
    """Smallest gaps (mm, surface to surface, spheres approximated) between the objects of a
    head, for checking the layout."""
    objs = [("nucleus", np.asarray(ct, float), max(r)) for ct, r in NUCLEI]
    objs.append(("ventricle", np.asarray(VENTRICLE[0], float), max(VENTRICLE[1])))
    if kind == "focal":
        objs += [(f"{k}{i}", np.asarray(ct, float), r) for i, (k, ct, r, _) in enumerate(FOCAL)]
        objs.append(("hematoma", np.asarray(HEMATOMA[0], float), max(HEMATOMA[1])))
    else:
        objs += [(f"ms{i}", np.asarray(ct, float), 1.15 * r) for i, (_, ct, r, _) in
                 enumerate(MS)]
    out = []
    for i, (na, ca, ra) in enumerate(objs):
        for nb, cb, rb in objs[i + 1:]:
            out.append((na, nb, float(np.linalg.norm(ca - cb) - ra - rb)))
        for name, points, radius, _ in VEINS:
            d = float(np.min(np.linalg.norm(points - ca, axis=1))) - ra - radius
            out.append((na, name, d))
    return sorted(out, key=lambda t: t[2])

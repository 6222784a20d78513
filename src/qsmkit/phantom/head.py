"""A 3D numerical head phantom with known susceptibility, proton density and R2*.

The anatomy is a smooth cartoon of a human head defined on a reference field of view of
192 mm and stretched to the field of view of the requested grid, so any shape and voxel size
gives the same head (about 85 % of the field of view). Lesions and veins are sized in mm but
never smaller than a stated number of voxels, so they stay resolvable on coarse grids.

Susceptibility is SI ppm relative to water (cerebrospinal fluid is 0).

Tissues (chi ppm relative to CSF; R2* s^-1 at 3 T; proton density relative to water)

==============================  ======================  ======  =====
tissue                          chi_ppm                 R2*_3T  PD
==============================  ======================  ======  =====
air (outside, sinus)            +9.40                   0       0
scalp, face and neck tissue     0.00                    30      0.75
skull (bone)                    -2.00                   1000    0.05
CSF, ventricles                 0.00                    3       1.00
cortical grey matter            +0.02                   15      0.80
white matter                    -0.03                   21      0.70
caudate                         +0.07                   24      0.80
putamen                         +0.06                   27      0.80
globus pallidus                 +0.17                   45      0.75
thalamus                        +0.03                   20      0.78
substantia nigra                +0.15                   40      0.76
red nucleus                     +0.12                   35      0.77
dentate nucleus                 +0.12                   33      0.77
venous blood                    blood_chi_ppm(Yv, Hct)  45      0.85
microbleed                      +0.6, +0.9, +1.2        300     0.60
calcification                   -1.0, -1.5              120     0.30
MS lesion core, MS no-rim       WM + 0.01               14      0.85
MS paramagnetic rim             WM + 0.08               26      0.80
==============================  ======================  ======  =====

Labels: 0 air, 1 scalp, 2 skull, 3 sinus air, 4 CSF, 5 ventricles, 6 cortical GM, 7 WM,
8 soft tissue (face, neck); 10-23 deep grey nuclei (left, right pairs); 41.. veins; 101..
lesions and 151.. the rims of rim lesions (see ``HeadPhantom.label_names``).

Grey and white matter carry a smooth texture (chi standard deviation 0.005 ppm, PD 2 %,
R2* 5 %); deep grey nuclei, CSF, veins and lesions are uniform so that region averages are
exact ground truth.

References
----------
Schenck JF. The role of magnetic susceptibility in magnetic resonance imaging: MRI magnetic
compatibility of the first and second kinds. Med Phys 1996;23:815-850 (air +0.36 ppm, water
-9.05 ppm SI: air is +9.4 ppm relative to water).
Hopkins JA, Wehrli FW. Magnetic susceptibility measurement of insoluble solids by NMR:
magnetic susceptibility of bone. Magn Reson Med 1997;37:494-500 (cortical bone about 2 ppm
more diamagnetic than water).
Buch S, Liu S, Ye Y, Cheng YCN, Neelavalli J, Haacke EM. Susceptibility mapping of air, bone,
and calcium in the head. Magn Reson Med 2015;73:2185-2194 (bone and calcium diamagnetic by
roughly 1.5-2.5 ppm relative to water).
Deistung A, Schaefer A, Schweser F, Biedermann U, Turner R, Reichenbach JR. Toward in vivo
histology: a comparison of quantitative susceptibility mapping (QSM) with magnitude-, phase-,
and R2*-imaging at ultra-high magnetic field strength. NeuroImage 2013;65:299-314
(deep grey matter susceptibilities).
Lim IAL, Faria AV, Li X, Hsu JTC, Airan RD, Mori S, van Zijl PCM. Human brain atlas for
automated region of interest selection in quantitative susceptibility mapping: application to
determine iron content in deep gray matter structures. NeuroImage 2013;82:449-469.
Langkammer C, Schweser F, Shmueli K, et al. Quantitative susceptibility mapping: report from
the 2016 reconstruction challenge. Magn Reson Med 2018;79:1661-1673; Bilgic B, Langkammer C,
Marques JP, et al. QSM reconstruction challenge 2.0: design and report of results. Magn Reson
Med 2021;86:1241-1255 (ranges of grey/white matter and nuclei values used here).
Chen W, Zhu W, Kovanlikaya I, et al. Intracranial calcifications and hemorrhages:
characterization with quantitative susceptibility mapping. Radiology 2014;270:496-505
(calcifications diamagnetic, hemorrhages and microbleeds strongly paramagnetic).
Liu C, Li W, Tong KA, Yeom KW, Kuzminski S. Susceptibility-weighted imaging and quantitative
susceptibility mapping in the brain. J Magn Reson Imaging 2015;42:23-41 (microbleeds
about +0.5 to +1.5 ppm).
Absinta M, Sati P, Schindler M, et al. Persistent 7-tesla phase rim predicts poor outcome in
new multiple sclerosis patient lesions. J Clin Invest 2016;126:2597-2609; Dal-Bianco A,
et al. Slow expansion of multiple sclerosis iron rim lesions. Acta Neuropathol 2017;133:25-42
(iron rims paramagnetic by several hundredths of a ppm relative to white matter).
Gelman N, Gorell JM, Barker PB, et al. MR imaging of human brain at 3.0 T: preliminary report
on transverse relaxation rates and relation to estimated iron content. Radiology
1999;210:759-767; Peran P, Hagberg G, Luccichenti G, et al. Voxel-based analysis of R2* maps
in the healthy human brain. J Magn Reson Imaging 2007;26:1413-1420 (R2* at 3 T).
Zhao JM, Clingman CS, Narvainen MJ, Kauppinen RA, van Zijl PCM. Oxygenation and hematocrit
dependence of transverse relaxation rates of blood at 3T. Magn Reson Med 2007;58:592-597.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from qsmkit.errors import InputError
from qsmkit.physiology import DEFAULT_HCT, blood_chi_ppm

REFERENCE_FOV_MM = 192.0
"""Field of view (mm, each axis) on which the anatomy below is drawn, then stretched."""

AIR_CHI_PPM = 9.4
"""Air relative to water (SI ppm): +0.36 - (-9.05) (Schenck 1996)."""

BONE_CHI_PPM = -2.0
"""Skull bone relative to water (SI ppm) (Hopkins & Wehrli 1997; Buch 2015)."""

GM_CHI_PPM = 0.02
WM_CHI_PPM = -0.03
MS_CORE_DELTA_PPM = 0.01
"""MS lesion core relative to white matter (demyelination, slightly paramagnetic)."""
MS_RIM_DELTA_PPM = 0.08
"""Iron rim relative to white matter."""

TEXTURE_CHI_PPM = 0.005
"""Standard deviation of the smooth grey/white matter susceptibility texture (ppm)."""

# Fixed label indices (lesions and veins get one label each, see _VEIN_BASE / _LESION_BASE).
AIR, SCALP, SKULL, SINUS, CSF, VENTRICLES, GM, WM, SOFT = 0, 1, 2, 3, 4, 5, 6, 7, 8
_VEIN_BASE = 40
_LESION_BASE = 100
_RIM_BASE = 150

# name, chi (ppm rel. water), proton density, R2* at 3 T (s^-1)
_TISSUES: dict[int, tuple[str, float, float, float]] = {
    AIR: ("air", AIR_CHI_PPM, 0.0, 0.0),
    SCALP: ("scalp", 0.0, 0.75, 30.0),
    SKULL: ("skull", BONE_CHI_PPM, 0.05, 1000.0),
    SINUS: ("sinus_air", AIR_CHI_PPM, 0.0, 0.0),
    CSF: ("csf", 0.0, 1.0, 3.0),
    VENTRICLES: ("ventricles", 0.0, 1.0, 3.0),
    GM: ("cortical_gm", GM_CHI_PPM, 0.80, 15.0),
    WM: ("white_matter", WM_CHI_PPM, 0.70, 21.0),
    SOFT: ("soft_tissue", 0.0, 0.75, 30.0),
}

# Deep grey nuclei: name, chi, PD, R2*(3T), centre of the right-hand member (reference mm,
# RAS: +x right, +y anterior, +z superior) and semi-axes (reference mm). The left member is
# mirrored in x. Labels 10.. in pairs (left, right).
_NUCLEI = [
    ("caudate", 0.07, 0.80, 24.0, (17.0, 14.0, 16.0), (4.0, 10.0, 7.0)),
    ("putamen", 0.06, 0.80, 27.0, (27.0, 4.0, 2.0), (5.0, 13.0, 8.0)),
    ("globus_pallidus", 0.17, 0.75, 45.0, (18.0, 0.0, 0.0), (3.5, 7.0, 5.0)),
    ("thalamus", 0.03, 0.78, 20.0, (10.0, -18.0, 8.0), (7.0, 10.0, 7.0)),
    ("substantia_nigra", 0.15, 0.76, 40.0, (10.0, -12.0, -14.0), (4.0, 8.0, 3.5)),
    ("red_nucleus", 0.12, 0.77, 35.0, (5.5, -16.0, -5.0), (4.0, 4.0, 4.0)),
    ("dentate", 0.12, 0.77, 33.0, (13.0, -38.0, -22.0), (5.0, 7.0, 4.0)),
]
_NUCLEUS_BASE = 10

# Veins: name, start, end (reference mm), nominal radius (mm), minimum radius (voxels).
_VEINS = [
    ("superior_sagittal", (0.0, -32.0, 50.0), (0.0, 32.0, 50.0), 4.0, 2.5),
    ("straight_sinus", (0.0, -30.0, 22.0), (0.0, -56.0, -4.0), 4.0, 2.5),
    ("medullary_vertical", (-30.0, -34.0, 10.0), (-30.0, -34.0, 34.0), 1.5, 1.0),
    ("medullary_lr", (16.0, 30.0, 30.0), (36.0, 30.0, 30.0), 1.5, 1.0),
    ("medullary_30deg", (28.0, -40.0, 6.0), (28.0, -30.0, 23.32), 1.5, 1.0),
    ("medullary_60deg", (-30.0, 40.0, 18.0), (-30.0, 22.68, 28.0), 1.5, 1.0),
    ("medullary_ap", (-20.0, -24.0, 40.0), (-20.0, 12.0, 40.0), 1.5, 1.2),
]
VEIN_R2STAR_3T = 45.0
VEIN_PD = 0.85

# Lesions: kind, chi (ppm; MS values are relative to white matter), nominal radius (mm),
# minimum radius (voxels), PD, R2*(3T).
_LESIONS = [
    ("microbleed", 0.6, 2.5, 1.5, 0.60, 300.0),
    ("microbleed", 0.9, 3.0, 1.5, 0.60, 300.0),
    ("microbleed", 1.2, 3.5, 1.5, 0.60, 300.0),
    ("calcification", -1.0, 3.0, 1.5, 0.30, 120.0),
    ("calcification", -1.5, 4.0, 1.5, 0.30, 120.0),
    ("ms_rim", MS_CORE_DELTA_PPM, 5.0, 2.5, 0.85, 14.0),
    ("ms_rim", MS_CORE_DELTA_PPM, 6.0, 2.5, 0.85, 14.0),
    ("ms_norim", MS_CORE_DELTA_PPM, 4.5, 2.0, 0.85, 14.0),
    ("ms_norim", MS_CORE_DELTA_PPM, 5.5, 2.0, 0.85, 14.0),
]
MS_RIM_PD, MS_RIM_R2STAR_3T = 0.80, 26.0

# Head geometry (reference mm): outer scalp, outer skull, inner skull, brain ellipsoids.
_HEAD_CENTRE = (0.0, 0.0, 4.0)
_HEAD_AXES = (70.0, 84.0, 80.0)
_SKULL_AXES = (65.0, 79.0, 75.0)
_INNER_AXES = (59.0, 73.0, 69.0)
_BRAIN_AXES = (56.0, 70.0, 66.0)
_FLOOR_START_Y = 20.0  # posterior edge of the anterior cranial fossa floor
_NECK_CENTRE_Y, _NECK_AXES, _NECK_TOP = -8.0, (40.0, 45.0), -40.0
_SINUS_CENTRE, _SINUS_AXES = (0.0, 52.0, -14.0), (14.0, 10.0, 9.0)
_VENTRICLE_CENTRE, _VENTRICLE_AXES = (9.0, 0.0, 22.0), (4.5, 24.0, 8.0)
_THIRD_VENTRICLE = ((-2.0, 2.0), (-22.0, -2.0), (0.0, 12.0))


@dataclasses.dataclass
class HeadPhantom:
    """Tissue property maps of the head phantom on one grid.

    Attributes
    ----------
    chi_ppm : (X, Y, Z) float32, SI ppm relative to water (air +9.4, bone -2)
    labels : (X, Y, Z) int16, indices of ``label_names``
    label_names : dict int -> str
    label_chi_ppm : dict int -> float, nominal susceptibility of each label (texture-free)
    brain_mask : (X, Y, Z) bool, brain tissue with deep grey, ventricles, lesions and veins
    head_mask : (X, Y, Z) bool, every voxel whose material is not air (the sinus is air)
    proton_density : (X, Y, Z) float32, relative to water
    r2star_per_s_3t : (X, Y, Z) float32, R2* (s^-1) at 3 T
    lesions, veins : lists of dicts describing each lesion and vein (see :func:`head_phantom`)
    voxel_size : 3 floats, mm
    """

    chi_ppm: np.ndarray = dataclasses.field(repr=False)
    labels: np.ndarray = dataclasses.field(repr=False)
    label_names: dict[int, str] = dataclasses.field(repr=False)
    label_chi_ppm: dict[int, float] = dataclasses.field(repr=False)
    brain_mask: np.ndarray = dataclasses.field(repr=False)
    head_mask: np.ndarray = dataclasses.field(repr=False)
    proton_density: np.ndarray = dataclasses.field(repr=False)
    r2star_per_s_3t: np.ndarray = dataclasses.field(repr=False)
    lesions: list[dict] = dataclasses.field(repr=False)
    veins: list[dict] = dataclasses.field(repr=False)
    voxel_size: tuple[float, float, float]
    hct: float = DEFAULT_HCT
    yv: float = 0.60
    seed: int = 0
    air_chi_ppm: float = AIR_CHI_PPM

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.chi_ppm.shape)

    def __repr__(self) -> str:
        return (
            f"HeadPhantom(shape={self.shape}, voxel_size={self.voxel_size}, "
            f"labels={len(self.label_names)}, lesions={len(self.lesions)}, "
            f"veins={len(self.veins)}, yv={self.yv}, hct={self.hct}, seed={self.seed})"
        )

    def r2star_per_s(self, b0_tesla: float) -> np.ndarray:
        """R2* (s^-1) at ``b0_tesla``, scaled linearly from 3 T (static dephasing regime)."""
        return (self.r2star_per_s_3t * np.float32(float(b0_tesla) / 3.0)).astype(np.float32)

    def label_table(self) -> list[tuple[int, str, float]]:
        """Rows ``(index, name, chi_ppm)`` sorted by index (the ``labels.tsv`` content)."""
        return [(i, self.label_names[i], self.label_chi_ppm[i]) for i in sorted(self.label_names)]


def smooth_random_field(
    shape: Sequence[int], rng: np.random.Generator, *, nodes: int = 8
) -> np.ndarray:
    """Smooth zero-mean random field with unit standard deviation, fixed to the field of view.

    Gaussian-weighted interpolation of ``nodes**3`` random values on a lattice spanning the
    field of view, so the same generator state gives the same pattern at any grid resolution.
    """
    coarse = rng.standard_normal((nodes, nodes, nodes))
    positions = np.linspace(-1.15, 1.15, nodes)
    width = (positions[1] - positions[0]) * 0.75
    weights = []
    for n in shape:
        u = (np.arange(int(n)) + 0.5) / int(n) * 2.0 - 1.0
        w = np.exp(-0.5 * ((u[:, None] - positions[None, :]) / width) ** 2)
        weights.append(w / w.sum(axis=1, keepdims=True))
    field = np.tensordot(weights[0], coarse, axes=(1, 0))  # (X, n, n)
    field = np.tensordot(field, weights[1], axes=(1, 1))  # (X, n, Y)
    field = np.tensordot(field, weights[2], axes=(1, 1))  # (X, Y, Z)
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


class _Grid:
    """Coordinates of voxel centres in true mm and in reference (stretched) mm."""

    def __init__(self, shape, voxel_size):
        self.shape = tuple(int(n) for n in shape)
        self.vs = np.asarray(voxel_size, dtype=float)
        self.fov = np.asarray(self.shape) * self.vs
        self.scale = REFERENCE_FOV_MM / self.fov  # reference mm per true mm
        self.mm = [
            (np.arange(n) - (n - 1) / 2.0) * d for n, d in zip(self.shape, self.vs, strict=True)
        ]
        self.ref = [a * s for a, s in zip(self.mm, self.scale, strict=True)]
        self.X, self.Y, self.Z = np.meshgrid(
            *[r.astype(np.float32) for r in self.ref], indexing="ij", sparse=True
        )

    @property
    def size_scale(self) -> float:
        """True mm per reference mm, averaged over the axes (sizes of round objects)."""
        return float(np.mean(1.0 / self.scale))

    def ref_to_vox(self, point_ref) -> np.ndarray:
        p = np.asarray(point_ref, dtype=float) / self.scale  # true mm
        return p / self.vs + (np.asarray(self.shape) - 1) / 2.0

    def vox_to_mm(self, vox) -> np.ndarray:
        return (np.asarray(vox, dtype=float) - (np.asarray(self.shape) - 1) / 2.0) * self.vs

    def box(self, centre_mm, half_mm) -> tuple[slice, ...]:
        """Index slices covering ``centre_mm +- half_mm`` (true mm), clipped to the grid."""
        c = np.asarray(centre_mm, dtype=float) / self.vs + (np.asarray(self.shape) - 1) / 2.0
        h = np.asarray(half_mm, dtype=float) / self.vs
        lo = np.clip(np.floor(c - h).astype(int), 0, self.shape)
        hi = np.clip(np.ceil(c + h).astype(int) + 1, 0, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def box_mm(self, box):
        """Sparse true-mm coordinates of the voxels of ``box``."""
        return np.meshgrid(
            *[m[s] for m, s in zip(self.mm, box, strict=True)], indexing="ij", sparse=True
        )

    def box_ref(self, box):
        return np.meshgrid(
            *[r[s] for r, s in zip(self.ref, box, strict=True)], indexing="ij", sparse=True
        )


def _ellipsoid_rho2(X, Y, Z, centre, axes):
    return (
        ((X - np.float32(centre[0])) / np.float32(axes[0])) ** 2
        + ((Y - np.float32(centre[1])) / np.float32(axes[1])) ** 2
        + ((Z - np.float32(centre[2])) / np.float32(axes[2])) ** 2
    )


def _floor_ok(Y, Z, offset):
    """Above the anterior cranial fossa floor (reference mm), raised by ``offset`` mm."""
    floor = np.where(Y > _FLOOR_START_Y, -16.0 + 0.45 * (Y - _FLOOR_START_Y),
                     -np.inf).astype(np.float32)
    return Z > floor + np.float32(offset)


def _check_inputs(shape, voxel_size, hct, yv):
    try:
        shape_t = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be three integers, got {shape!r}") from None
    if (
        len(shape_t) != 3
        or any(n < 16 for n in shape_t)
        or any(float(n) != float(s) for n, s in zip(shape_t, shape, strict=True))
    ):
        raise InputError(f"shape must be three integers of at least 16, got {tuple(shape)}")
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    fov = np.asarray(shape_t) * vs
    if np.any(fov < 60.0) or np.any(fov > 600.0):
        raise InputError(
            f"field of view {fov.tolist()} mm is outside 60-600 mm per axis; choose shape and "
            "voxel size giving a head-sized field of view (default 128 x 1.5 mm = 192 mm)"
        )
    if np.any(vs > 4.0):
        raise InputError(
            f"voxel size {vs.tolist()} mm is too coarse for the head phantom; use 4 mm or less"
        )
    blood_chi_ppm(yv, hct)  # validates ranges
    return shape_t, tuple(float(v) for v in vs)


def head_phantom(
    shape: Sequence[int] = (128, 128, 128),
    voxel_size: Sequence[float] = (1.5, 1.5, 1.5),
    *,
    seed: int = 0,
    hct: float = DEFAULT_HCT,
    yv: float = 0.60,
    lesions: bool = True,
) -> HeadPhantom:
    """Build the numerical head phantom on a grid of ``shape`` and ``voxel_size`` (mm).

    Parameters
    ----------
    shape : 3 ints
        Grid size; the head fills about 85 % of the field of view ``shape * voxel_size``.
    voxel_size : 3 floats, mm
        May be anisotropic (at most 4 mm).
    seed : int
        Seeds the tissue texture, the cortical folding and the lesion positions.
    hct, yv : float
        Haematocrit and venous oxygen saturation of the veins; their susceptibility is
        :func:`qsmkit.physiology.blood_chi_ppm` ``(yv, hct)``.
    lesions : bool
        Add microbleeds, calcifications and multiple-sclerosis lesions (with and without a
        paramagnetic rim) to the white matter.

    Returns
    -------
    HeadPhantom
        ``lesions`` records have ``id``, ``kind`` (``microbleed``, ``calcification``,
        ``ms_rim``, ``ms_norim``), ``center_vox`` (3 floats), ``radius_mm``, ``chi_ppm``
        (the core for MS lesions), ``label`` and, for rim lesions, ``rim_chi_ppm``,
        ``rim_label`` and ``rim_thickness_mm``. ``veins`` records have ``id``, ``name``,
        ``start_vox``, ``end_vox``, ``radius_mm``, ``theta_deg`` (angle to the grid z axis),
        ``yv``, ``hct``, ``chi_ppm`` and ``label``. Lesions and veins do not overlap each other
        nor the deep grey nuclei.

    Examples
    --------
    >>> ph = head_phantom((64, 64, 64), (3.0, 3.0, 3.0), lesions=False)
    >>> ph.chi_ppm.shape, ph.label_names[14]
    ((64, 64, 64), 'globus_pallidus_left')
    """
    shape, voxel_size = _check_inputs(shape, voxel_size, hct, yv)
    rng = np.random.default_rng(seed)
    grid = _Grid(shape, voxel_size)
    X, Y, Z = grid.X, grid.Y, grid.Z

    # Smooth random fields (drawn in a fixed order so anatomy is resolution independent).
    fold_outer = smooth_random_field(shape, rng, nodes=10)
    fold_inner = smooth_random_field(shape, rng, nodes=12)
    tex_chi = smooth_random_field(shape, rng, nodes=14)
    tex_pd = smooth_random_field(shape, rng, nodes=10)
    tex_r2 = smooth_random_field(shape, rng, nodes=10)

    names = {i: t[0] for i, t in _TISSUES.items()}
    chis = {i: t[1] for i, t in _TISSUES.items()}
    pds = {i: t[2] for i, t in _TISSUES.items()}
    r2s = {i: t[3] for i, t in _TISSUES.items()}

    labels = np.zeros(shape, dtype=np.int16)
    # Head: ellipsoid plus a neck reaching the bottom of the field of view.
    head = _ellipsoid_rho2(X, Y, Z, _HEAD_CENTRE, _HEAD_AXES) <= 1.0
    neck = (
        (X / np.float32(_NECK_AXES[0])) ** 2
        + ((Y - np.float32(_NECK_CENTRE_Y)) / np.float32(_NECK_AXES[1])) ** 2
        <= 1.0
    ) & (Z < np.float32(_NECK_TOP))
    labels[neck] = SOFT
    labels[head] = SCALP
    labels[_ellipsoid_rho2(X, Y, Z, _HEAD_CENTRE, _SKULL_AXES) <= 1.0] = SKULL
    inner = _ellipsoid_rho2(X, Y, Z, _HEAD_CENTRE, _INNER_AXES) <= 1.0
    # Below the anterior cranial fossa: a 6 mm bony floor, then orbit/nasal soft tissue,
    # closed behind by a 6 mm bony wall (the sphenoid) so no soft tissue touches the brain.
    labels[inner & ~_floor_ok(Y, Z, -6.0) & (Y > np.float32(_FLOOR_START_Y + 6.0))] = SOFT
    intracranial = inner & _floor_ok(Y, Z, 0.0)
    del inner
    labels[intracranial] = CSF
    rho = np.sqrt(_ellipsoid_rho2(X, Y, Z, _HEAD_CENTRE, _BRAIN_AXES))
    brain = (rho <= 1.0 - 0.015 * (1.0 + fold_outer)) & _floor_ok(Y, Z, 3.0) & intracranial
    labels[brain] = GM
    wm = (rho <= 0.93 - 0.03 * fold_inner) & _floor_ok(Y, Z, 8.0) & brain
    labels[wm] = WM
    del rho

    # Ventricles: two lateral ellipsoids and a thin third ventricle.
    for sign in (-1.0, 1.0):
        c = (sign * _VENTRICLE_CENTRE[0], *_VENTRICLE_CENTRE[1:])
        _paint_ellipsoid(labels, grid, c, _VENTRICLE_AXES, VENTRICLES)
    (x0, x1), (y0, y1), (z0, z1) = _THIRD_VENTRICLE
    lo_ref, hi_ref = np.array([x0, y0, z0]), np.array([x1, y1, z1])
    box = grid.box((lo_ref + hi_ref) / 2 / grid.scale, (hi_ref - lo_ref) / 2 / grid.scale)
    bx, by, bz = grid.box_ref(box)
    third = (np.abs(bx - (x0 + x1) / 2) <= (x1 - x0) / 2) & (by >= y0) & (by <= y1)
    third = third & (bz >= z0) & (bz <= z1)
    labels[box][third] = VENTRICLES

    # Deep grey nuclei, left (x < 0) then right.
    for k, (name, chi, pd, r2, centre, axes) in enumerate(_NUCLEI):
        for side, sign in (("left", -1.0), ("right", 1.0)):
            index = _NUCLEUS_BASE + 2 * k + (0 if side == "left" else 1)
            names[index], chis[index], pds[index], r2s[index] = f"{name}_{side}", chi, pd, r2
            c = (sign * centre[0], centre[1], centre[2])
            _paint_ellipsoid(labels, grid, c, axes, index, within=(WM,))
            if not np.any(labels == index):
                raise InputError(
                    f"the grid {shape} x {voxel_size} mm is too coarse to hold the {name}; "
                    "use smaller voxels"
                )

    # Air-filled sinus below the frontal lobe, inside the skull base.
    _paint_ellipsoid(labels, grid, _SINUS_CENTRE, _SINUS_AXES, SINUS)

    # Veins.
    chi_blood = float(blood_chi_ppm(yv, hct))
    vein_records = []
    for k, (name, start_ref, end_ref, radius_nom, radius_min_vox) in enumerate(_VEINS):
        index = _VEIN_BASE + k + 1
        radius_mm = max(radius_nom * grid.size_scale, radius_min_vox * float(grid.vs.max()))
        record = _paint_vein(labels, grid, index, name, start_ref, end_ref, radius_mm)
        record.update(yv=float(yv), hct=float(hct), chi_ppm=chi_blood)
        vein_records.append(record)
        names[index], chis[index], pds[index], r2s[index] = (
            f"vein_{k + 1}_{name}",
            chi_blood,
            VEIN_PD,
            VEIN_R2STAR_3T,
        )

    # Lesions.
    lesion_records = []
    if lesions:
        lesion_records = _place_lesions(labels, grid, rng, names, chis, pds, r2s)

    # Property maps from the label lookup tables, plus texture in grey and white matter.
    n_lut = int(max(names)) + 1
    lut_chi = np.zeros(n_lut, dtype=np.float32)
    lut_pd = np.zeros(n_lut, dtype=np.float32)
    lut_r2 = np.zeros(n_lut, dtype=np.float32)
    for i in names:
        lut_chi[i], lut_pd[i], lut_r2[i] = chis[i], pds[i], r2s[i]
    chi_ppm = lut_chi[labels]
    proton_density = lut_pd[labels]
    r2star = lut_r2[labels]
    textured = (labels == GM) | (labels == WM)
    chi_ppm[textured] += np.float32(TEXTURE_CHI_PPM) * tex_chi[textured]
    proton_density[textured] *= 1.0 + np.float32(0.02) * tex_pd[textured]
    r2star[textured] *= 1.0 + np.float32(0.05) * tex_r2[textured]

    brain_labels = [VENTRICLES, GM, WM] + [i for i in names if i >= _NUCLEUS_BASE]
    brain_mask = np.isin(labels, brain_labels)
    head_mask = (labels != AIR) & (labels != SINUS)
    return HeadPhantom(
        chi_ppm=chi_ppm,
        labels=labels,
        label_names=dict(sorted(names.items())),
        label_chi_ppm={i: float(chis[i]) for i in sorted(names)},
        brain_mask=brain_mask,
        head_mask=head_mask,
        proton_density=proton_density,
        r2star_per_s_3t=r2star,
        lesions=lesion_records,
        veins=vein_records,
        voxel_size=voxel_size,
        hct=float(hct),
        yv=float(yv),
        seed=int(seed),
        air_chi_ppm=AIR_CHI_PPM,
    )


def _paint_ellipsoid(labels, grid, centre_ref, axes_ref, value, within=None):
    """Set ``labels`` to ``value`` inside an ellipsoid given in reference mm."""
    c_mm = np.asarray(centre_ref) / grid.scale
    a_mm = np.asarray(axes_ref) / grid.scale
    box = grid.box(c_mm, a_mm)
    bx, by, bz = grid.box_ref(box)
    inside = _ellipsoid_rho2(bx, by, bz, centre_ref, axes_ref) <= 1.0
    view = labels[box]
    if within is not None:
        inside &= np.isin(view, within)
    view[inside] = value


def _paint_vein(labels, grid, index, name, start_ref, end_ref, radius_mm):
    """Paint a straight cylinder (flat ends) and return its record; refuse overlaps."""
    a = np.asarray(start_ref) / grid.scale  # true mm
    b = np.asarray(end_ref) / grid.scale
    axis = b - a
    length = float(np.linalg.norm(axis))
    u = axis / length
    box = grid.box((a + b) / 2, np.abs(axis) / 2 + radius_mm)
    bx, by, bz = grid.box_mm(box)
    t = (bx - a[0]) * u[0] + (by - a[1]) * u[1] + (bz - a[2]) * u[2]
    d2 = (bx - a[0]) ** 2 + (by - a[1]) ** 2 + (bz - a[2]) ** 2 - t**2
    inside = (t >= 0) & (t <= length) & (d2 <= radius_mm**2)
    view = labels[box]
    under = np.unique(view[inside])
    if not np.all(np.isin(under, (GM, WM))):
        raise InputError(
            f"the grid {grid.shape} x {tuple(float(v) for v in grid.vs)} mm is too coarse for "
            "the phantom veins (a vein would leave the brain or touch a nucleus); use smaller "
            "voxels"
        )
    view[inside] = index
    theta = float(np.degrees(np.arccos(min(1.0, abs(u[2])))))
    return {
        "id": int(index - _VEIN_BASE),
        "name": name,
        "label": int(index),
        "start_vox": [float(v) for v in grid.ref_to_vox(start_ref)],
        "end_vox": [float(v) for v in grid.ref_to_vox(end_ref)],
        "radius_mm": float(radius_mm),
        "length_mm": length,
        "theta_deg": theta,
    }


def _place_lesions(labels, grid, rng, names, chis, pds, r2s):
    """Place the lesions at random inside white matter, clear of everything else."""
    vs_max = float(grid.vs.max())
    margin_mm = vs_max + 1.0
    wm_flat = np.flatnonzero(labels == WM)
    if wm_flat.size == 0:
        raise InputError("the head phantom has no white matter on this grid; use smaller voxels")
    wm_idx = np.stack(np.unravel_index(wm_flat, labels.shape), axis=1)
    wm_ref = np.stack(
        [grid.ref[0][wm_idx[:, 0]], grid.ref[1][wm_idx[:, 1]], grid.ref[2][wm_idx[:, 2]]], axis=1
    )
    # Preferred regions: periventricular for MS, lobar (away from the centre) for microbleeds.
    vc = np.asarray(_VENTRICLE_CENTRE)
    d_vent = np.minimum(
        np.linalg.norm(wm_ref - vc, axis=1), np.linalg.norm(wm_ref - vc * [-1, 1, 1], axis=1)
    )
    rho = np.sqrt((((wm_ref - _HEAD_CENTRE) / _BRAIN_AXES) ** 2).sum(axis=1))
    preferred = {
        "ms_rim": d_vent < 28.0,
        "ms_norim": d_vent < 28.0,
        "microbleed": rho > 0.55,
        "calcification": np.ones(len(wm_idx), dtype=bool),
    }
    placed: list[tuple[np.ndarray, float]] = []
    records = []
    for k, (kind, chi, radius_nom, radius_min_vox, pd, r2) in enumerate(_LESIONS):
        radius_mm = max(radius_nom * grid.size_scale, radius_min_vox * vs_max)
        pool = np.flatnonzero(preferred[kind])
        centre = _find_free_centre(labels, grid, rng, wm_idx, pool, radius_mm + margin_mm, placed)
        if centre is None:
            centre = _find_free_centre(
                labels, grid, rng, wm_idx, np.arange(len(wm_idx)), radius_mm + margin_mm, placed
            )
        if centre is None:
            raise InputError(
                f"no room for a {kind} lesion of radius {radius_mm:.1f} mm in the white matter of "
                f"this grid {grid.shape}; use smaller voxels or lesions=False"
            )
        placed.append((grid.vox_to_mm(centre), radius_mm))
        index = _LESION_BASE + k + 1
        n_kind = sum(1 for r in records if r["kind"] == kind) + 1
        lesion_chi = round(WM_CHI_PPM + chi, 6) if kind.startswith("ms_") else chi
        names[index], chis[index], pds[index], r2s[index] = (
            f"{kind}_{n_kind}",
            lesion_chi,
            pd,
            r2,
        )
        c_mm = grid.vox_to_mm(centre)
        box = grid.box(c_mm, [radius_mm] * 3)
        bx, by, bz = grid.box_mm(box)
        dist = np.sqrt((bx - c_mm[0]) ** 2 + (by - c_mm[1]) ** 2 + (bz - c_mm[2]) ** 2)
        view = labels[box]
        view[dist <= radius_mm] = index
        record = {
            "id": k + 1,
            "kind": kind,
            "center_vox": [float(v) for v in centre],
            "radius_mm": float(radius_mm),
            "chi_ppm": float(lesion_chi),
            "label": int(index),
        }
        if kind == "ms_rim":
            rim_index = _RIM_BASE + k + 1
            rim_mm = vs_max * 1.0
            view[(dist <= radius_mm) & (dist > radius_mm - rim_mm)] = rim_index
            rim_chi = round(WM_CHI_PPM + MS_RIM_DELTA_PPM, 6)
            names[rim_index], chis[rim_index], pds[rim_index], r2s[rim_index] = (
                f"{kind}_{n_kind}_rim",
                rim_chi,
                MS_RIM_PD,
                MS_RIM_R2STAR_3T,
            )
            record.update(
                rim_chi_ppm=float(rim_chi), rim_label=int(rim_index), rim_thickness_mm=rim_mm
            )
        records.append(record)
    return records


def _find_free_centre(labels, grid, rng, wm_idx, pool, clearance_mm, placed, tries=400):
    """A white-matter voxel whose ball of ``clearance_mm`` is all white matter and clear of
    the lesions already placed; ``None`` if ``tries`` random candidates all fail."""
    if pool.size == 0:
        return None
    for candidate in rng.choice(pool, size=min(tries, pool.size), replace=False):
        centre = wm_idx[candidate].astype(float)
        c_mm = grid.vox_to_mm(centre)
        if any(np.linalg.norm(c_mm - p) < clearance_mm + r + 1.0 for p, r in placed):
            continue
        box = grid.box(c_mm, [clearance_mm] * 3)
        bx, by, bz = grid.box_mm(box)
        ball = (bx - c_mm[0]) ** 2 + (by - c_mm[1]) ** 2 + (bz - c_mm[2]) ** 2 <= clearance_mm**2
        view = labels[box]
        # The ball must lie inside the grid and inside white matter only.
        expected = int(np.count_nonzero(ball))
        full = _box_is_complete(grid, c_mm, clearance_mm)
        if full and expected and np.all(view[ball] == WM):
            return centre
    return None


def _box_is_complete(grid, c_mm, half_mm):
    c = np.asarray(c_mm) / grid.vs + (np.asarray(grid.shape) - 1) / 2.0
    h = half_mm / grid.vs
    return bool(np.all(c - h >= 0) and np.all(c + h <= np.asarray(grid.shape) - 1))


def vein_angles_deg(veins: Sequence[dict], voxel_size: Sequence[float], b0_dir) -> list[float]:
    """Angle (degrees, 0-90) between each vein axis and ``b0_dir`` (voxel coordinates)."""
    vs = np.asarray(voxel_size, dtype=float)
    b = np.asarray(b0_dir, dtype=float)
    b = b / np.linalg.norm(b)
    out = []
    for vein in veins:
        d = (np.asarray(vein["end_vox"]) - np.asarray(vein["start_vox"])) * vs
        c = abs(float(np.dot(d, b))) / float(np.linalg.norm(d))
        out.append(float(np.degrees(np.arccos(min(1.0, c)))))
    return out

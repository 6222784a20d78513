"""Abdomen phantom with iron- and fat-loaded liver, and its chemical-shift-encoded GRE signal.

The phantom is an axial slab through the upper abdomen: an elliptical body (its cross-section
narrowing slowly with distance from the slab) with a ring of subcutaneous fat, soft tissue,
spleen, a vertebra with fatty marrow, a bowel-gas pocket, the bases of both lungs entering the
top of the slab, and the liver — one or more regions (angular sectors around its centre) of
chosen iron (LIC, mg Fe/g dry weight) and fat fraction (PDFF, %), optionally with spherical
nodules of their own iron and fat (siderotic or iron-sparing). Geometry is relative to the
field of view, so any grid gives the same anatomy.

Tissue properties at field strength ``B0``:

* susceptibility (ppm, SI, relative to water): air +9.4 (air +0.36 vs water -9.05 ppm),
  fat ``0.6 * PDFF``, vertebra (bone and fatty marrow) -1.0, liver ``0.112 * LIC + 0.6 * PDFF``
  (the in-vivo liver-QSM calibration, Buelo 2025, :mod:`qsmkit.body.calibration`: the phantom
  follows the published calibration), other soft tissue and spleen 0;
* R2* (s^-1): liver from LIC by the inverse of the Hernando 2023 calibrations (near-doubling
  from 1.5 to 3 T); other tissues ``20 + 10 B0``, spleen ``25 + 12 B0``, marrow ``100 B0``;
* proton density: liver 0.9 (split into water and fat by its PDFF), subcutaneous fat 0.95
  (PDFF 90 %), soft tissue 0.7, spleen 0.8, marrow 0.6 (PDFF 45 %), air 0.

The field is computed with the k-space dipole kernel on a grid extended well beyond the slab
(half the field of view in-plane, twice the thickness, at least 16 voxels, along the slab
axis), then cropped. By default the body is a slab exactly as thick as the field of view,
surrounded by air, so every susceptibility source lies in or around the imaged volume (a
physical slab phantom); with ``continuous_body=True`` the body, liver and lungs continue above
and below the slab as in a patient, which puts sources outside the field of view.
The signal is the six-peak fat model of :mod:`qsmkit.body.fatwater` with a shared R2*, a
smooth receiver phase and complex Gaussian noise of per-channel SD ``1 / snr`` (proton density
1 has SNR ``snr`` at TE = 0).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsmkit import fft
from qsmkit.body.calibration import (
    CHI_FAT_PPM,
    CHI_PER_LIC_INVIVO_PPM,
    chi_from_lic,
    r2star_from_lic,
)
from qsmkit.body.fatwater import chemical_shift_signal
from qsmkit.body.liver import CHI_AIR_PPM, air_padding
from qsmkit.errors import InputError
from qsmkit.geometry import fast_shape
from qsmkit.kernels import dipole_kernel
from qsmkit.units import GAMMA_BAR_HZ_PER_T

TISSUES = {
    0: "air",
    1: "subcutaneous_fat",
    2: "soft_tissue",
    3: "spleen",
    4: "vertebra",
    5: "lung",
    6: "bowel_gas",
}
"""Tissue labels of :attr:`LiverPhantom.tissue`; liver regions are 10, 11, ...; nodules 20, ..."""

LIVER_LABEL0 = 10
NODULE_LABEL0 = 20


@dataclasses.dataclass(frozen=True)
class LiverRegion:
    """A liver region (angular sector) of uniform iron and fat."""

    lic: float
    pdff_percent: float
    name: str = ""


@dataclasses.dataclass(frozen=True)
class Nodule:
    """A spherical nodule; ``position`` is relative to the liver centre in units of the liver
    semi-axes (each in [-1, 1])."""

    lic: float
    pdff_percent: float
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius_mm: float = 15.0
    name: str = ""


DEFAULT_REGIONS = (LiverRegion(8.0, 15.0, "liver"),)
DEFAULT_NODULES = (
    Nodule(25.0, 0.0, (0.45, 0.35, 0.0), 16.0, "siderotic_nodule"),
    Nodule(1.5, 0.0, (-0.2, -0.45, 0.0), 16.0, "iron_sparing_nodule"),
)


def default_echo_times(b0_tesla: float, n_echoes: int = 6) -> np.ndarray:
    """Chemical-shift-encoded echo train: TE1 1.2 ms, dTE 1.6 ms at 1.5 T; 1.0/0.8 ms at 3 T.

    ``dTE`` is close to a third of the water–fat period (``1 / (3 * 3.4 ppm * gamma B0)``),
    which keeps water–fat separation well conditioned; between and beyond the two field
    strengths the spacing scales as ``1.2 / B0`` ms.
    """
    b0 = float(b0_tesla)
    if b0 <= 0:
        raise InputError(f"B0 must be positive, got {b0_tesla}")
    te1, dte = (1.2e-3, 1.6e-3) if b0 < 2.25 else (1.0e-3, 0.8e-3)
    if not (1.0 <= b0 <= 3.5):
        dte = 1.2e-3 * 1.5 / b0 / 0.75
    return te1 + dte * np.arange(int(n_echoes))


@dataclasses.dataclass
class LiverPhantom:
    """Ground truth of the abdomen phantom on the output grid.

    Attributes
    ----------
    tissue : (X, Y, Z) int16 — labels (:data:`TISSUES`, liver 10+, nodules 20+)
    chi_ppm : (X, Y, Z) float32 — susceptibility relative to water
    water, fat : (X, Y, Z) float32 — proton densities
    lic : (X, Y, Z) float32 — mg Fe/g dry weight (liver and nodules; 0 elsewhere)
    regions : list of dict — label, name, kind, lic, pdff_percent, chi_ppm
    voxel_size : 3 floats, mm
    """

    tissue: np.ndarray
    chi_ppm: np.ndarray
    water: np.ndarray
    fat: np.ndarray
    lic: np.ndarray
    regions: list
    voxel_size: tuple
    chi_extended: np.ndarray
    crop: tuple

    @property
    def shape(self) -> tuple:
        return self.tissue.shape

    @property
    def pdff_percent(self) -> np.ndarray:
        total = self.water + self.fat
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(total > 0, 100.0 * self.fat / total, 0.0)
        return out.astype(np.float32)

    @property
    def body_mask(self) -> np.ndarray:
        """Body without air (outside, lungs, bowel gas)."""
        return np.isin(self.tissue, (0, 5, 6), invert=True)

    @property
    def labels(self) -> np.ndarray:
        """Analysis regions only: liver regions and nodules (others 0)."""
        return np.where(self.tissue >= LIVER_LABEL0, self.tissue, 0).astype(np.int16)

    @property
    def liver_mask(self) -> np.ndarray:
        """Liver including its nodules."""
        return self.tissue >= LIVER_LABEL0

    def r2star_per_s(self, b0_tesla: float) -> np.ndarray:
        """R2* map (s^-1) at ``b0_tesla``."""
        b0 = float(b0_tesla)
        base = {1: 20 + 10 * b0, 2: 20 + 10 * b0, 3: 25 + 12 * b0, 4: 100 * b0}
        out = np.zeros(self.shape, np.float32)
        for lab, value in base.items():
            out[self.tissue == lab] = value
        liver = self.liver_mask
        out[liver] = r2star_from_lic(self.lic[liver], b0)
        return out

    def field_hz(self, b0_tesla: float, b0_dir: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
        """Total field (Hz) in the slab from all susceptibility sources of the extended grid."""
        # the extended grid has an FFT-friendly shape and wide air margins (for a continuous
        # body it is periodic along z by design: the body continues above and below)
        chi = self.chi_extended
        kernel = dipole_kernel(chi.shape, self.voxel_size, b0_dir, half=True)
        field_ppm = fft.irfftn(fft.rfftn(chi) * kernel, chi.shape)[self.crop]
        return (field_ppm * 1e-6 * GAMMA_BAR_HZ_PER_T * float(b0_tesla)).astype(np.float32)


def _check_grid(shape, voxel_size):
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise InputError(f"the liver phantom needs a 3D shape of at least 4 per axis, got {shape}")
    vs = np.asarray(voxel_size, dtype=float)
    if vs.shape != (3,) or np.any(vs <= 0) or not np.all(np.isfinite(vs)):
        raise InputError(f"voxel_size must be three positive numbers (mm), got {voxel_size}")
    return shape, tuple(float(v) for v in vs)


def _check_content(regions, nodules):
    regions = tuple(DEFAULT_REGIONS if regions is None else regions)
    nodules = tuple(DEFAULT_NODULES if nodules is None else nodules)
    if not regions:
        raise InputError("the liver needs at least one region")
    if len(regions) > 10 or len(nodules) > 10:
        raise InputError("at most 10 liver regions and 10 nodules")
    for item in regions + nodules:
        if not (0.0 <= float(item.lic) <= 60.0):
            raise InputError(f"LIC must be within 0-60 mg Fe/g dry weight, got {item.lic}")
        if not (0.0 <= float(item.pdff_percent) <= 100.0):
            raise InputError(f"PDFF must be within 0-100 %, got {item.pdff_percent}")
    for nod in nodules:
        if len(nod.position) != 3 or not nod.radius_mm > 0:
            raise InputError("a nodule needs a 3-number position and a positive radius_mm")
    return regions, nodules


def liver_phantom(
    shape: Sequence[int] = (64, 48, 16),
    voxel_size: Sequence[float] = (6.0, 6.0, 6.0),
    *,
    liver_regions: Sequence[LiverRegion] | None = None,
    nodules: Sequence[Nodule] | None = None,
    continuous_body: bool = False,
) -> LiverPhantom:
    """Build the abdomen phantom (pure function; see the module docstring).

    Parameters
    ----------
    shape : 3 ints — output slab grid (x: left–right, y: anterior–posterior, z: feet–head)
    voxel_size : 3 floats, mm
    liver_regions : LiverRegion sequence — one per angular sector of the liver (default:
        one liver of LIC 8 mg/g and PDFF 15 %)
    nodules : Nodule sequence — default: a siderotic (LIC 25) and an iron-sparing (LIC 1.5)
        nodule; pass ``()`` for none
    continuous_body : bool
        False (default): the body is a slab exactly as thick as the field of view, in air, so
        every susceptibility source lies in or around the imaged volume. True: the body, liver
        and lungs continue above and below the slab as in a patient (sources outside the
        field of view, a harder problem for background removal).
    """
    shape, vs = _check_grid(shape, voxel_size)
    regions, nodules = _check_content(liver_regions, nodules)
    fov = np.asarray(shape) * np.asarray(vs)
    a = 0.42 * fov[0]
    b = min(0.70 * a, 0.42 * fov[1])
    if continuous_body:
        # the body, liver and lungs continue beyond the slab: extend far enough to hold them
        half_z = 1.1 * a
        pz = max(int(np.ceil((half_z - fov[2] / 2) / vs[2])), 2)
    else:
        # a finite slab in air: twice the padding of qsmkit.body.liver.air_padding in-plane,
        # so the truth is closer to a body in infinite air than the reconstruction's model
        pz = air_padding(shape, vs)[2]
    ext = fast_shape(shape, (shape[0] // 2, shape[1] // 2, pz))
    pad = [(e - n) // 2 for e, n in zip(ext, shape, strict=True)]
    axes = [(np.arange(n) - (n - 1) / 2.0) * d for n, d in zip(ext, vs, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    zh = axes[2][-1] + vs[2] / 2
    taper = 1.0 - 0.08 * (z / zh) ** 2

    def ellipsoid(centre, semi):
        return (((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
                + ((z - centre[2]) / semi[2]) ** 2) <= 1.0

    body = ((x / (a * taper)) ** 2 + (y / (b * taper)) ** 2) <= 1.0
    t_sat = 0.11 * a
    inner = ((x / (a * taper - t_sat)) ** 2 + (y / (b * taper - t_sat)) ** 2) <= 1.0

    tissue = np.zeros(ext, np.int16)
    tissue[np.broadcast_to(body, ext)] = 1
    tissue[np.broadcast_to(inner, ext)] = 2
    spleen = ellipsoid((-0.55 * a, 0.3 * a, 0.1 * a), (0.2 * a, 0.28 * a, 0.35 * a))
    tissue[np.broadcast_to(spleen & inner, ext)] = 3
    vert = (x**2 + (y - (b - 0.3 * a)) ** 2) <= (0.13 * a) ** 2
    tissue[np.broadcast_to(vert & inner, ext)] = 4

    l_centre = np.array([0.33 * a, -0.05 * a, 0.0])
    l_semi = np.array([0.58 * a, min(0.5 * a, 0.85 * b), 0.45 * a])
    liver = np.broadcast_to(ellipsoid(l_centre, l_semi) & inner, ext)
    angle = np.broadcast_to(np.arctan2(y - l_centre[1], x - l_centre[0]) + np.pi, ext)
    sector = np.minimum((angle / (2 * np.pi) * len(regions)).astype(int), len(regions) - 1)
    tissue[liver] = (LIVER_LABEL0 + sector[liver]).astype(np.int16)
    for j, nod in enumerate(nodules):
        centre = l_centre + np.asarray(nod.position, float) * l_semi
        sphere = np.broadcast_to(ellipsoid(centre, (nod.radius_mm,) * 3), ext)
        tissue[sphere & liver] = NODULE_LABEL0 + j

    lungs = ellipsoid((0.45 * a, 0.35 * a, 0.6 * a), (0.35 * a, 0.35 * a, 0.45 * a)) | ellipsoid(
        (-0.45 * a, 0.35 * a, 0.6 * a), (0.35 * a, 0.35 * a, 0.45 * a)
    )
    tissue[np.broadcast_to(lungs & inner, ext)] = 5
    gas = ellipsoid((-0.35 * a, -0.35 * a, -0.1 * a), (0.18 * a, 0.12 * a, 0.15 * a))
    tissue[np.broadcast_to(gas & inner, ext)] = 6

    # properties per label
    props = {  # label: (proton density, pdff %, chi ppm)
        0: (0.0, 0.0, CHI_AIR_PPM),
        1: (0.95, 90.0, CHI_FAT_PPM * 0.90),
        2: (0.70, 0.0, 0.0),
        3: (0.80, 0.0, 0.0),
        4: (0.60, 45.0, -1.0),
        5: (0.0, 0.0, CHI_AIR_PPM),
        6: (0.0, 0.0, CHI_AIR_PPM),
    }
    info = []
    for i, reg in enumerate(regions):
        lab = LIVER_LABEL0 + i
        chi = float(chi_from_lic(reg.lic, reg.pdff_percent, slope_ppm=CHI_PER_LIC_INVIVO_PPM))
        props[lab] = (0.9, float(reg.pdff_percent), chi)
        info.append({"label": lab, "name": reg.name or f"liver_{i + 1}", "kind": "liver",
                     "lic": float(reg.lic), "pdff_percent": float(reg.pdff_percent),
                     "chi_ppm": chi})
    for j, nod in enumerate(nodules):
        lab = NODULE_LABEL0 + j
        chi = float(chi_from_lic(nod.lic, nod.pdff_percent, slope_ppm=CHI_PER_LIC_INVIVO_PPM))
        props[lab] = (0.9, float(nod.pdff_percent), chi)
        info.append({"label": lab, "name": nod.name or f"nodule_{j + 1}", "kind": "nodule",
                     "lic": float(nod.lic), "pdff_percent": float(nod.pdff_percent),
                     "chi_ppm": chi})
    lic_of = {r["label"]: r["lic"] for r in info}

    crop = tuple(slice(p, p + n) for p, n in zip(pad, shape, strict=True))
    if not continuous_body:
        tissue[:, :, : crop[2].start] = 0
        tissue[:, :, crop[2].stop:] = 0
    chi_ext = np.zeros(ext, np.float32)
    for lab, (_, _, chi) in props.items():
        chi_ext[tissue == lab] = chi
    t_out = tissue[crop]
    water = np.zeros(shape, np.float32)
    fat = np.zeros(shape, np.float32)
    lic = np.zeros(shape, np.float32)
    for lab, (pd, ff, _) in props.items():
        sel = t_out == lab
        water[sel] = pd * (1 - ff / 100.0)
        fat[sel] = pd * ff / 100.0
        if lab in lic_of:
            lic[sel] = lic_of[lab]
    present = set(np.unique(t_out).tolist())
    for r in info:
        r["n_voxels"] = int((t_out == r["label"]).sum())
    info = [r for r in info if r["label"] in present]
    return LiverPhantom(
        tissue=t_out.copy(), chi_ppm=chi_ext[crop].copy(), water=water, fat=fat, lic=lic,
        regions=info, voxel_size=vs, chi_extended=chi_ext, crop=crop,
    )


@dataclasses.dataclass
class LiverSimulation:
    """Simulated chemical-shift-encoded multi-echo GRE of a :class:`LiverPhantom`."""

    magnitude: np.ndarray
    phase: np.ndarray
    field_hz: np.ndarray
    r2star_per_s: np.ndarray
    echo_times_s: np.ndarray
    b0_tesla: float
    b0_dir: np.ndarray
    noise_sd: float
    phantom: LiverPhantom


def simulate_liver_gre(
    phantom: LiverPhantom,
    echo_times_s=None,
    b0_tesla: float = 3.0,
    *,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    snr: float = 100.0,
    seed: int = 0,
) -> LiverSimulation:
    """Multi-echo GRE magnitude and phase (radians in [-pi, pi)) of the phantom.

    Parameters
    ----------
    phantom : LiverPhantom
    echo_times_s : (E,) s — default :func:`default_echo_times` for ``b0_tesla``
    b0_tesla : float, T
    b0_dir : B0 direction in voxel coordinates
    snr : float — signal-to-noise of proton density 1 at TE = 0 (``inf``: no noise)
    seed : int — noise generator seed
    """
    b0 = float(b0_tesla)
    if not 0.05 <= b0 <= 21.2:
        raise InputError(f"field strength {b0_tesla} T is outside 0.05-21.1 T")
    tes = default_echo_times(b0) if echo_times_s is None else np.atleast_1d(
        np.asarray(echo_times_s, dtype=float))
    if tes.size < 3 or np.any(tes <= 0) or np.any(np.diff(tes) <= 0) or np.any(tes > 1):
        raise InputError(
            f"echo times must be at least 3 increasing values in seconds, got {tes.tolist()}"
        )
    bdir = np.asarray(b0_dir, dtype=float)
    if bdir.shape != (3,) or not np.all(np.isfinite(bdir)) or np.linalg.norm(bdir) == 0:
        raise InputError(f"b0_dir must be a non-zero 3-vector, got {b0_dir}")
    bdir = bdir / np.linalg.norm(bdir)
    if not (snr is None or float(snr) > 0):
        raise InputError(f"snr must be positive (or inf for no noise), got {snr}")
    field = phantom.field_hz(b0, bdir)
    r2 = phantom.r2star_per_s(b0)
    shape = phantom.shape
    gx, gy, _ = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
    phi0 = 0.3 + 0.6 * gx - 0.4 * gy
    s = chemical_shift_signal(phantom.water, phantom.fat, field, r2, tes, b0)
    s = s * np.exp(1j * phi0)[..., None]
    sigma = 0.0 if snr is None or not np.isfinite(snr) else 1.0 / float(snr)
    if sigma > 0:
        rng = np.random.default_rng(seed)
        s = s + sigma * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
    phase = np.angle(s).astype(np.float32)
    phase = np.where(phase >= np.float32(np.pi), np.float32(-np.pi), phase)
    return LiverSimulation(
        magnitude=np.abs(s).astype(np.float32), phase=phase, field_hz=field,
        r2star_per_s=r2, echo_times_s=tes, b0_tesla=b0, b0_dir=bdir, noise_sd=sigma,
        phantom=phantom,
    )


def write_liver_simulation(
    stage_dir: Path,
    *,
    shape: Sequence[int] = (64, 48, 16),
    voxel_size: Sequence[float] = (6.0, 6.0, 6.0),
    b0_tesla: float = 3.0,
    echo_times_s=None,
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    snr: float = 100.0,
    seed: int = 0,
    liver_regions: Sequence[LiverRegion] | None = None,
    nodules: Sequence[Nodule] | None = None,
) -> dict:
    """Simulate and write the abdomen phantom into ``stage_dir``.

    Writes ``mag.nii.gz`` and ``phase.nii.gz`` (4D, radians) with BIDS sidecars ``mag.json``
    / ``phase.json`` (``EchoTimes`` in s, ``MagneticFieldStrength`` in T), and the truth:
    ``chi.nii.gz`` (ppm), ``field_hz.nii.gz``, ``r2star_true.nii.gz`` (s^-1),
    ``pdff_true.nii.gz`` (%), ``lic_true.nii.gz`` (mg Fe/g dw), ``mask.nii.gz`` (body
    without air), ``labels.nii.gz`` + ``labels.tsv`` (liver regions and nodules: the regions
    for ``qsmkit liver --labels``), ``tissue.nii.gz`` + ``tissue.tsv`` (all tissues) and
    ``phantom.json``. Returns a summary dict (paths, echo times, regions).
    """
    from qsmkit.geometry import affine_from_geometry
    from qsmkit.io.nifti import save_nifti

    stage = Path(stage_dir)
    stage.mkdir(parents=True, exist_ok=True)
    ph = liver_phantom(shape, voxel_size, liver_regions=liver_regions, nodules=nodules)
    sim = simulate_liver_gre(ph, echo_times_s, b0_tesla, b0_dir=b0_dir, snr=snr, seed=seed)
    affine = affine_from_geometry(ph.shape, ph.voxel_size, sim.b0_dir)
    files = {}

    def save(name, data, desc, unit="", dtype=np.float32):
        files[name] = str(save_nifti(stage / name, data, affine, dtype=dtype, description=desc,
                                     unit=unit))

    save("mag.nii.gz", sim.magnitude, "simulated GRE magnitude", "a.u.")
    save("phase.nii.gz", sim.phase, "simulated GRE phase", "rad")
    save("chi.nii.gz", ph.chi_ppm, "true susceptibility", "ppm")
    save("field_hz.nii.gz", sim.field_hz, "true total field", "Hz")
    save("r2star_true.nii.gz", sim.r2star_per_s, "true R2*", "1/s")
    save("pdff_true.nii.gz", ph.pdff_percent, "true PDFF", "%")
    save("lic_true.nii.gz", ph.lic, "true LIC", "mg Fe/g dw")
    save("mask.nii.gz", ph.body_mask.astype(np.uint8), "body mask")
    save("labels.nii.gz", ph.labels, "liver regions and nodules")
    save("tissue.nii.gz", ph.tissue, "tissue labels")
    r2_of = {r["label"]: float(np.median(sim.r2star_per_s[ph.tissue == r["label"]]))
             for r in ph.regions}
    lines = ["index\tname\tkind\tlic_mg_per_g\tpdff_percent\tchi_ppm\tr2star_per_s\tn_voxels"]
    for r in ph.regions:
        lines.append(
            f"{r['label']}\t{r['name']}\t{r['kind']}\t{r['lic']:.3f}\t{r['pdff_percent']:.2f}"
            f"\t{r['chi_ppm']:.4f}\t{r2_of[r['label']]:.1f}\t{r['n_voxels']}"
        )
    (stage / "labels.tsv").write_text("\n".join(lines) + "\n")
    files["labels.tsv"] = str(stage / "labels.tsv")
    (stage / "tissue.tsv").write_text(
        "index\tname\n" + "".join(f"{k}\t{v}\n" for k, v in TISSUES.items())
        + "".join(f"{r['label']}\t{r['name']}\n" for r in ph.regions)
    )
    files["tissue.tsv"] = str(stage / "tissue.tsv")
    sidecar = {
        "EchoTimes": [float(t) for t in sim.echo_times_s],
        "MagneticFieldStrength": float(sim.b0_tesla),
        "Manufacturer": "qsmkit-simulator",
        "SeriesDescription": "qsmkit abdomen phantom chemical-shift-encoded multi-echo GRE",
    }
    for name, kind in (("mag.json", "magnitude"), ("phase.json", "phase")):
        payload = dict(sidecar, ImageType=["ORIGINAL", "PRIMARY", "M" if kind == "magnitude"
                                           else "P"])
        if kind == "phase":
            payload["PhaseUnits"] = "rad"
        (stage / name).write_text(json.dumps(payload, indent=2) + "\n")
        files[name] = str(stage / name)
    summary = {
        "phantom": "liver",
        "shape": list(ph.shape),
        "voxel_size_mm": list(ph.voxel_size),
        "b0_tesla": float(sim.b0_tesla),
        "b0_dir": sim.b0_dir.tolist(),
        "echo_times_s": sim.echo_times_s.tolist(),
        "snr": None if snr is None or not np.isfinite(snr) else float(snr),
        "noise_sd": sim.noise_sd,
        "seed": int(seed),
        "chi_per_lic_ppm": CHI_PER_LIC_INVIVO_PPM,
        "chi_fat_ppm": CHI_FAT_PPM,
        "regions": [dict(r, r2star_per_s=r2_of[r["label"]]) for r in ph.regions],
        "tissues": TISSUES,
    }
    (stage / "phantom.json").write_text(json.dumps(summary, indent=2) + "\n")
    files["phantom.json"] = str(stage / "phantom.json")
    summary["files"] = files
    return summary

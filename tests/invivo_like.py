"""An evaluation set for the dipole inversion with in-vivo-like errors and pathology.

Built on the independent head phantom of ``independent_phantom.py`` (its own continuous dipole
kernel on a 2x finer grid, its own tissue table; nothing from qsmkit's kernels or phantom), with

* pathology (values from the literature cited there and below): a large intracerebral
  hematoma (diameter a third of the white matter's height, 2.2 cm in the default
  144 x 144 x 114 mm field of view) whose
  core is +0.9 ppm and rim +1.4 ppm (Chen 2014: haemorrhage of the order of +1 ppm; the rim of a
  subacute hematoma is more paramagnetic), five microbleeds (radius 1.5-2 mm, +0.8 ppm), a
  second calcification (-0.6 ppm), and a sagittal-sinus-like vein: a tube of radius 3 mm
  running front to back along the midline under the top of the brain (+0.40 ppm, Jain 2012);
* in-vivo-like errors of the local field: white Gaussian noise (``noise_hz``, 0.5-2 Hz at
  3 T in vivo), a smooth non-harmonic residual background of ``residual_hz`` (a few tenths of
  a Hz: what background removal leaves), and a non-dipolar white-matter component that
  stands for tissue anisotropy (``anisotropy_hz``, scaled with B0, smooth over 4 mm; Wharton &
  Bowtell 2012 report anisotropy-driven frequency offsets of a few tenths of a Hz at 3 T in
  white matter).

It returns the total field (brain + skull/air/sinus background, for background removal) and
the true local field, each with the same errors, on the acquisition grid (block means of the
fine grid). The anatomy scales with the field of view, as in ``independent_phantom``.

References
----------
Chen W, Zhu W, Kovanlikaya I, et al. Intracranial calcifications and hemorrhages:
    characterization with quantitative susceptibility mapping. Radiology 2014;270:496-505.
Jain V, Abdulmalik O, Propert KJ, Wehrli FW. Investigating the magnetic susceptibility
    properties of fresh human blood for noninvasive oxygen saturation quantification. Magn
    Reson Med 2012;68:863-867.
Wharton S, Bowtell R. Fiber orientation-dependent white matter contrast in gradient echo MRI.
    Proc Natl Acad Sci USA 2012;109:18559-18564.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage

from independent_phantom import (
    CHI_AIR_MINUS_WATER_PPM,
    GAMMA_BAR_MHZ_PER_T,
    _block_mean,
    _centred_coordinates_mm,
    _ellipsoid,
    _field_ppm,
    _fine_maps,
    _rotation_tilting_b0,
    _segment,
    _smooth_random,
)

HEMATOMA_CORE_PPM = 0.9
HEMATOMA_RIM_PPM = 1.4
MICROBLEED_PPM = 0.8
CALCIFICATION_PPM = -0.6
SINUS_PPM = 0.40
DGM = ("caudate", "putamen", "pallidum", "thalamus")
BRAIN_TISSUES = ("csf", "gm", "wm", *DGM, "vein", "bleed", "calcification", "hematoma",
                 "microbleeds", "calcification2", "sinus")


@dataclasses.dataclass
class InvivoLikeCase:
    """One case on the acquisition grid."""

    total_field_hz: np.ndarray  # (X, Y, Z) float32: brain + background + errors
    local_field_hz: np.ndarray  # (X, Y, Z) float32: brain only + errors
    chi_ppm: np.ndarray  # truth relative to water, 0 outside the brain
    brain_mask: np.ndarray
    labels: dict  # name -> bool (X, Y, Z)
    voxel_size_mm: tuple
    b0_dir_voxel: np.ndarray
    b0_tesla: float
    noise_hz: float


def _add_pathology(labels, shape, step_mm, head_mm):
    """Hematoma (core + rim), microbleeds, a second calcification and a midline sinus."""
    x, y, z = np.meshgrid(*_centred_coordinates_mm(shape, step_mm), indexing="ij", sparse=True)
    c = (x, y, z)
    a, b, h = head_mm
    ba, bb, bh = a - 15, b - 15, h - 15
    brain = np.logical_or.reduce([labels[n] for n in ("csf", "gm", "wm", *DGM)])
    radius = 0.33 * min(ba, bb, bh)  # 11 mm (2.2 cm across) at 1.5 mm, 96 x 96 x 76
    centre = (0.45 * ba, 0.5 * bb, 0.25 * bh)  # frontal, clear of the deep grey nuclei
    outer = _ellipsoid(c, centre, (radius,) * 3) & brain
    core = _ellipsoid(c, centre, (radius - 2.0,) * 3) & brain  # 2 mm rim
    labels["hematoma"] = outer
    labels["hematoma_core"] = core
    labels["hematoma_rim"] = outer & ~core
    bleeds = np.zeros(x.shape[:1] + y.shape[1:2] + z.shape[2:], bool)
    for fx, fy, fz, r in ((-0.55, 0.45, 0.2, 1.5), (-0.3, -0.6, -0.3, 2.0), (0.2, -0.3, 0.5, 1.5),
                          (-0.6, 0.0, -0.4, 2.0), (0.05, 0.55, 0.4, 1.5)):
        bleeds |= _ellipsoid(c, (fx * ba, fy * bb, fz * bh), (r, r, r))
    labels["microbleeds"] = bleeds & brain
    labels["calcification2"] = _ellipsoid(c, (-0.35 * ba, 0.55 * bb, -0.2 * bh),
                                          (2.5, 2.5, 2.5)) & brain
    # Sagittal sinus: a tube (radius 3 mm) front to back on the midline, 4 mm under the top.
    top = h - 9 - 4.0  # brain_outer semi-axis minus 4 mm
    arc_z = top * np.sqrt(np.clip(1.0 - (y / (b - 9)) ** 2, 0.0, None))
    labels["sinus"] = ((x ** 2 + (z - arc_z) ** 2) <= 3.0 ** 2) & brain & (np.abs(y) < 0.8 * bb)
    return labels


def make_invivo_like(
    shape=(96, 96, 76),
    voxel_size_mm=(1.5, 1.5, 1.5),
    *,
    b0_tesla: float = 3.0,
    tilt_deg: float = 0.0,
    noise_hz: float = 1.0,
    residual_hz: float = 0.3,
    anisotropy_hz: float = 0.3,
    seed: int = 0,
) -> InvivoLikeCase:
    """Simulate one case of the evaluation set.

    Parameters
    ----------
    shape : 3 ints
        Acquisition matrix.
    voxel_size_mm : 3 floats
        Voxel size (mm), anisotropic allowed.
    b0_tesla : float
        Field strength (T); fields in Hz scale with it.
    tilt_deg : float
        Angle between B0 and the voxel z axis (oblique slices).
    noise_hz : float
        Standard deviation of white Gaussian noise added to the field (Hz).
    residual_hz : float
        Standard deviation (Hz, at 3 T; scaled with B0) of a smooth residual background in the
        brain: a quadratic with a non-harmonic part (so background removal cannot fully take it).
    anisotropy_hz : float
        Amplitude (Hz at 3 T, scaled with B0) of a smooth non-dipolar field in white matter.
    seed : int
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    voxel = np.asarray(voxel_size_mm, dtype=float)
    oversample = 2
    step = tuple(voxel / oversample)
    fine_shape = tuple(n * oversample for n in shape)
    fov = np.asarray(shape) * voxel
    head_mm = (0.40 * fov[0], 0.42 * fov[1], 0.44 * fov[2])
    labels = _segment(fine_shape, step, head_mm)
    labels = _add_pathology(labels, fine_shape, step, head_mm)
    chi_abs, _, _, _ = _fine_maps(labels, fine_shape, step, b0_tesla, rng)
    for name, value in (("hematoma_core", HEMATOMA_CORE_PPM), ("hematoma_rim", HEMATOMA_RIM_PPM),
                        ("microbleeds", MICROBLEED_PPM), ("calcification2", CALCIFICATION_PPM),
                        ("sinus", SINUS_PPM)):
        chi_abs[labels[name]] = value - CHI_AIR_MINUS_WATER_PPM
    b0_dir = _rotation_tilting_b0(tilt_deg).T @ np.array([0.0, 0.0, 1.0])
    brain_fine = np.logical_or.reduce([labels[n] for n in BRAIN_TISSUES]) & ~labels["bone"]
    chi_rel = np.where(brain_fine, chi_abs + CHI_AIR_MINUS_WATER_PPM, 0).astype(np.float32)
    hz_per_ppm = GAMMA_BAR_MHZ_PER_T * b0_tesla
    total = _block_mean(_field_ppm(chi_abs, step, b0_dir), oversample) * hz_per_ppm
    local = _block_mean(_field_ppm(chi_rel, step, b0_dir), oversample) * hz_per_ppm
    fraction = _block_mean(brain_fine.astype(np.float32), oversample)
    brain_mask = fraction >= 0.5
    chi_truth = np.where(brain_mask, _block_mean(chi_rel, oversample)
                         / np.maximum(fraction, 1e-6), 0).astype(np.float32)
    coarse = {n: _block_mean(labels[n].astype(np.float32), oversample) >= 0.5
              for n in (*DGM, "gm", "wm", "csf", "vein", "bleed", "calcification", "hematoma",
                        "microbleeds", "calcification2", "sinus")}
    errors = _field_errors(shape, voxel, coarse["wm"], b0_tesla, noise_hz, residual_hz,
                           anisotropy_hz, rng)
    return InvivoLikeCase(
        total_field_hz=(total + errors).astype(np.float32),
        local_field_hz=np.where(brain_mask, local + errors, 0).astype(np.float32),
        chi_ppm=chi_truth, brain_mask=brain_mask, labels=coarse,
        voxel_size_mm=tuple(float(v) for v in voxel), b0_dir_voxel=b0_dir,
        b0_tesla=float(b0_tesla), noise_hz=float(noise_hz))


def _field_errors(shape, voxel, wm, b0_tesla, noise_hz, residual_hz, anisotropy_hz, rng):
    """Noise + smooth residual background + white-matter non-dipolar term (Hz)."""
    x, y, z = np.meshgrid(*_centred_coordinates_mm(shape, voxel), indexing="ij", sparse=True)
    r = 0.4 * float(np.min(np.asarray(shape) * voxel))
    scale = b0_tesla / 3.0
    smooth = (0.8 * (x * z) / r ** 2 + 0.6 * (x ** 2 - y ** 2) / r ** 2 + 0.5 * y / r
              + 0.4 * (x ** 2 + y ** 2 + z ** 2) / r ** 2)  # the last term is not harmonic
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-12)
    wm_field = _smooth_random(shape, tuple(voxel), 4.0, rng) * scipy.ndimage.gaussian_filter(
        wm.astype(np.float32), 1.0)
    noise = rng.standard_normal(shape).astype(np.float32) * noise_hz
    return (residual_hz * scale * smooth + anisotropy_hz * scale * wm_field + noise).astype(
        np.float32)


def region_ratio(chi_ppm, case: InvivoLikeCase, name: str, mask) -> float:
    """Mean of ``chi_ppm`` over a region divided by the truth's mean there (both relative to
    their own mean over normal-appearing white matter, so a global offset does not count)."""
    region = case.labels[name] & mask
    wm = case.labels["wm"] & mask & ~case.labels["hematoma"]
    est = float(np.mean(chi_ppm[region]) - np.mean(chi_ppm[wm]))
    ref = float(np.mean(case.chi_ppm[region]) - np.mean(case.chi_ppm[wm]))
    return est / ref

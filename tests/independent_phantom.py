"""An independent head phantom for validating qsmkit on data it did not make.

Nothing here comes from qsmkit: not the dipole kernel, not the grid, not a constant. The field
is computed on a grid ``oversample`` times finer than the acquisition grid, with the dipole
kernel of a continuous field (Salomir et al. 2003; Marques & Bowtell 2005),

    D(k) = 1/3 - (k . b0)^2 / |k|^2,

written here and applied on the fine grid's own zero-padded FFT. The complex GRE signal of
every fine voxel is then averaged over each acquisition voxel (so intravoxel dephasing and
partial volume are those of a real acquisition, and the acquisition grid never saw the
kernel). Susceptibility is absolute with air as zero (tissue = water + a few hundredths of a
ppm; air relative to water +9.4 ppm, Schenck 1996), so a skull/air shell and a sinus give a
background field as strong as in a head. The truth returned is relative to water.

Magnitude comes from each tissue's proton density, T1 and T2* through the spoiled GRE signal
equation (Bernstein et al. 2004, eq. 14.24), not from chi. Phase is
``2 pi gamma_bar B0 dB TE`` with gamma_bar = 42.577478 MHz/T (CODATA 2018, proton
gyromagnetic ratio over 2 pi), plus a smooth transmit/receive phase offset, wrapped by taking
the angle of the noisy complex signal.

References
----------
Salomir R, de Senneville BD, Moonen CT. A fast calculation method for magnetic field
    inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn
    Reson B 2003;19B:26-34.
Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of field
    inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn Reson B
    2005;25B:65-78.
Schenck JF. The role of magnetic susceptibility in magnetic resonance imaging. Med Phys
    1996;23:815-850 (water -9.05 ppm, air +0.36 ppm, cortical bone about -11 ppm, SI volume).
Deistung A, Schaefer A, Schweser F, et al. Toward in vivo histology: a comparison of
    quantitative susceptibility mapping (QSM) with magnitude-, phase-, and R2*-imaging at
    ultra-high magnetic field strength. NeuroImage 2013;65:299-314 (deep grey nuclei, GM, WM).
Wansapura JP, Holland SK, Dunn RS, Ball WS. NMR relaxation times in the human brain at
    3.0 tesla. J Magn Reson Imaging 1999;9:531-538 (T1: GM 1.33 s, WM 0.83 s).
Peters AM, Brookes MJ, Hoogenraad FG, et al. T2* measurements in human brain at 1.5, 3 and
    7 T. Magn Reson Imaging 2007;25:748-753 (T2* at 3 T: GM about 52 ms, WM about 45 ms,
    putamen about 32 ms; R2* roughly proportional to B0).
Lu H, Nagae-Poetscher LM, Golay X, et al. Routine clinical brain MRI sequences for use at
    3.0 tesla. J Magn Reson Imaging 2005;22:13-22 (T1 CSF about 4.2 s).
Jain V, Abdulmalik O, Propert KJ, Wehrli FW. Investigating the magnetic susceptibility
    properties of fresh human blood for noninvasive oxygen saturation quantification. Magn
    Reson Med 2012;68:863-867 (deoxygenated blood: venous chi about +0.3-0.45 ppm).
Chen W, Zhu W, Kovanlikaya I, et al. Intracranial calcifications and hemorrhages:
    characterization with quantitative susceptibility mapping. Radiology 2014;270:496-505
    (haemorrhage positive, of the order of +1 ppm; calcification negative).
Bernstein MA, King KF, Zhou XJ. Handbook of MRI Pulse Sequences. Elsevier 2004.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.ndimage

GAMMA_BAR_MHZ_PER_T = 42.577478  # CODATA 2018: proton gamma / 2 pi
CHI_AIR_MINUS_WATER_PPM = 9.41  # Schenck 1996: air +0.36, water -9.05 ppm (SI volume)

# Tissue table: chi relative to water (ppm), proton density (relative to water), T1 (s) and
# T2* at 3 T (s). Sources in the module docstring; values rounded to the literature's ranges.
TISSUES = {
    #              chi     PD     T1     T2*(3T)
    "air":        (None,  0.00,  1.0,   1.0),
    "scalp":      (-0.05, 0.90,  0.38,  0.030),   # fat-rich soft tissue
    "bone":       (-2.0,  0.05,  0.25,  0.001),   # cortical bone, Schenck 1996 (about -2 vs water)
    "csf":        (0.0,   1.00,  4.2,   0.300),
    "gm":         (0.02,  0.82,  1.33,  0.052),
    "wm":         (-0.03, 0.70,  0.83,  0.045),
    "caudate":    (0.07,  0.82,  1.27,  0.041),
    "putamen":    (0.09,  0.82,  1.20,  0.032),
    "pallidum":   (0.18,  0.78,  1.00,  0.021),
    "thalamus":   (0.04,  0.78,  1.10,  0.040),
    "vein":       (0.40,  0.85,  1.60,  0.012),
    "bleed":      (0.90,  0.80,  1.00,  0.008),
    "calcification": (-0.60, 0.30, 0.50, 0.006),
}


@dataclasses.dataclass
class IndependentPhantom:
    """One simulated acquisition with its truth (acquisition grid)."""

    magnitude: np.ndarray  # (X, Y, Z, E) float32
    phase_rad: np.ndarray  # (X, Y, Z, E) float32, wrapped to (-pi, pi]
    chi_ppm: np.ndarray  # (X, Y, Z) float32, relative to water, 0 outside the brain
    brain_mask: np.ndarray  # (X, Y, Z) bool: >= half of the voxel is brain
    labels: dict  # name -> (X, Y, Z) bool, voxels at least half of that structure
    affine: np.ndarray  # (4, 4) voxel -> world (mm), world z along B0
    echo_times_s: tuple
    b0_tesla: float
    b0_dir_voxel: np.ndarray  # unit vector, voxel coordinates
    voxel_size_mm: tuple
    local_field_hz: np.ndarray | None = None  # field of the brain's own chi (stage checks)


def _rotation_tilting_b0(tilt_deg: float) -> np.ndarray:
    """Rotation R (voxel axes -> world axes) about world y; world z is B0."""
    t = np.radians(tilt_deg)
    return np.array([[np.cos(t), 0.0, -np.sin(t)], [0.0, 1.0, 0.0], [np.sin(t), 0.0, np.cos(t)]])


def _centred_coordinates_mm(shape, step_mm):
    """Coordinates (mm) of fine voxel centres, origin at the centre of the field of view."""
    return [((np.arange(n, dtype=np.float32) + 0.5) - n / 2) * s for n, s in zip(shape, step_mm,
                                                                                 strict=True)]


def _ellipsoid(coords, centre, radii):
    x, y, z = coords
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def _smooth_random(shape, step_mm, sigma_mm, rng):
    """Zero-mean, unit-std Gaussian random field smoothed with a Gaussian of sigma_mm."""
    noise = rng.standard_normal(shape).astype(np.float32)
    field = scipy.ndimage.gaussian_filter(noise, [sigma_mm / s for s in step_mm])
    return (field - field.mean()) / (field.std() + 1e-12)


def _segment(shape, step_mm, head_mm):
    """Labels on the fine grid (name -> bool array); later labels override earlier ones."""
    x, y, z = np.meshgrid(*_centred_coordinates_mm(shape, step_mm), indexing="ij", sparse=True)
    c = (x, y, z)
    a, b, h = head_mm  # semi-axes of the outer head surface (mm)
    head = _ellipsoid(c, (0, 0, 0), (a, b, h))
    skull_outer = _ellipsoid(c, (0, 0, 0), (a - 4, b - 4, h - 4))
    brain_outer = _ellipsoid(c, (0, 0, 0), (a - 9, b - 9, h - 9))  # CSF rim 2 mm
    cortex = _ellipsoid(c, (0, 0, 0), (a - 11, b - 11, h - 11))
    wm = _ellipsoid(c, (0, 0, 0), (a - 15, b - 15, h - 15))
    ba, bb, bh = a - 15, b - 15, h - 15  # white-matter semi-axes: structures scale with them
    labels = {
        "scalp": head & ~skull_outer,
        "bone": skull_outer & ~brain_outer,
        "csf": brain_outer & ~cortex,
        "gm": cortex & ~wm,
        "wm": wm,
    }
    # Frontal sinus: an air pocket inside the skull bone and below the frontal lobe.
    sinus = _ellipsoid(c, (0, b - 12, -0.35 * h), (0.18 * a, 5, 0.12 * h))
    def part(centre, radii):  # centre and semi-axes as fractions of the white matter's
        return _ellipsoid(c, (centre[0] * ba, centre[1] * bb, centre[2] * bh),
                          (radii[0] * ba, radii[1] * bb, radii[2] * bh))

    ventricles = (part((-0.12, 0.05, 0.15), (0.07, 0.3, 0.12))
                  | part((0.12, 0.05, 0.15), (0.07, 0.3, 0.12)))
    deep = {}
    for s in (-1, 1):
        deep.setdefault("caudate", []).append(part((s * 0.22, 0.25, 0.1), (0.07, 0.1, 0.12)))
        deep.setdefault("putamen", []).append(part((s * 0.4, 0.05, 0.0), (0.08, 0.18, 0.14)))
        deep.setdefault("pallidum", []).append(part((s * 0.28, 0.0, -0.02), (0.05, 0.1, 0.08)))
        deep.setdefault("thalamus", []).append(part((s * 0.13, -0.2, 0.05), (0.1, 0.14, 0.12)))
    labels["csf"] = labels["csf"] | ventricles
    labels["wm"] = labels["wm"] & ~ventricles
    for name, parts in deep.items():
        labels[name] = np.logical_or.reduce(parts)
    # A vein: a tilted cylinder of radius 1.2 mm running front to back, above the ventricles.
    vx, vz = 0.05 * ba, 0.45 * bh + 0.15 * y
    vein = ((x - vx) ** 2 + (z - vz) ** 2 <= 1.2 ** 2) & (np.abs(y) < 0.7 * bb) & wm
    labels["vein"] = vein
    labels["bleed"] = _ellipsoid(c, (-0.5 * ba, -0.45 * bb, 0.3 * bh), (3.0, 3.0, 3.0))
    labels["calcification"] = _ellipsoid(c, (0.5 * ba, -0.45 * bb, 0.3 * bh), (2.5, 2.5, 2.5))
    labels["air_sinus"] = sinus & ~brain_outer
    return labels


def _fine_maps(labels, shape, step_mm, b0_tesla, rng):
    """chi (ppm, absolute, air = 0), proton density, T1 (s), T2* (s) on the fine grid."""
    chi = np.zeros(shape, np.float32)
    pd = np.zeros(shape, np.float32)
    t1 = np.ones(shape, np.float32)
    t2s = np.ones(shape, np.float32)
    texture = _smooth_random(shape, step_mm, 1.5, rng)
    for name in ("scalp", "bone", "csf", "gm", "wm", "caudate", "putamen", "pallidum", "thalamus",
                 "vein", "bleed", "calcification"):
        where = labels[name]
        value, proton_density, t1_s, t2s_3t_s = TISSUES[name]
        chi[where] = value - CHI_AIR_MINUS_WATER_PPM
        pd[where] = proton_density
        t1[where] = t1_s
        # R2* grows about linearly with B0 (Peters et al. 2007); CSF and air excepted.
        t2s[where] = t2s_3t_s if name == "csf" else t2s_3t_s * 3.0 / b0_tesla
    sinus = labels["air_sinus"]
    chi[sinus], pd[sinus] = 0.0, 0.0
    # Tissue texture: smooth random variation of +-0.01 ppm in grey and white matter and
    # +-0.02 ppm in the deep grey nuclei (iron heterogeneity).
    for names, amplitude in ((("gm", "wm"), 0.01), (("caudate", "putamen", "pallidum",
                                                       "thalamus"), 0.02)):
        where = np.logical_or.reduce([labels[n] for n in names])
        chi[where] += amplitude * texture[where]
    return chi, pd, t1, t2s


def _field_ppm(chi_ppm, step_mm, b0_dir_voxel, workers=-1):
    """dB/B0 (ppm) of a chi distribution, continuous dipole kernel on a zero-padded FFT."""
    shape = chi_ppm.shape
    padded = tuple(scipy.fft.next_fast_len(int(np.ceil(1.5 * n)), real=True) for n in shape)
    spectrum = scipy.fft.rfftn(chi_ppm, s=padded, workers=workers)
    k = [scipy.fft.fftfreq(n, d=s) for n, s in zip(padded[:2], step_mm[:2], strict=True)]
    k.append(scipy.fft.rfftfreq(padded[2], d=step_mm[2]))
    kx, ky, kz = np.meshgrid(*[v.astype(np.float32) for v in k], indexing="ij", sparse=True)
    k_dot_b = kx * b0_dir_voxel[0] + ky * b0_dir_voxel[1] + kz * b0_dir_voxel[2]
    k2 = kx ** 2 + ky ** 2 + kz ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.float32(1.0 / 3.0) - k_dot_b ** 2 / k2
    kernel[0, 0, 0] = 0.0
    spectrum *= kernel
    field = scipy.fft.irfftn(spectrum, s=padded, workers=workers)
    return field[: shape[0], : shape[1], : shape[2]].astype(np.float32)


def _block_mean(data, factor):
    """Mean over factor^3 blocks of the last three... of the first three axes."""
    x, y, z = (n // factor for n in data.shape[:3])
    blocks = data.reshape(x, factor, y, factor, z, factor, *data.shape[3:])
    return blocks.mean(axis=(1, 3, 5))


def make_independent_phantom(
    shape=(64, 64, 48),
    voxel_size_mm=(1.0, 1.0, 1.0),
    *,
    echo_times_s=(0.004, 0.008, 0.012, 0.016),
    b0_tesla: float = 3.0,
    tilt_deg: float = 0.0,
    snr: float | None = 100.0,
    oversample: int = 2,
    repetition_time_s: float = 0.030,
    flip_angle_deg: float = 15.0,
    seed: int = 0,
    head_mm=None,
    with_local_field: bool = False,
) -> IndependentPhantom:
    """Simulate a multi-echo GRE acquisition of the independent head phantom.

    Parameters
    ----------
    shape : 3 ints
        Acquisition matrix.
    voxel_size_mm : 3 floats
        Acquisition voxel size (mm); anisotropic allowed.
    echo_times_s : floats
        Echo times (s).
    b0_tesla : float
        Field strength (T).
    tilt_deg : float
        Angle between B0 and the voxel z axis (rotation about y), for oblique slices.
    snr : float or None
        Signal-to-noise ratio: complex noise sigma = max magnitude of the first echo / snr.
        None: no noise.
    oversample : int
        Fine-grid factor per axis (2 or 3).
    head_mm : 3 floats, optional
        Semi-axes of the head (mm); default 40/42/44 % of the field of view.
    with_local_field : bool
        Also return the field (Hz) of the brain's own chi, for checking stages one by one.

    Returns
    -------
    IndependentPhantom
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    voxel = np.asarray(voxel_size_mm, dtype=float)
    step = tuple(voxel / oversample)
    fine_shape = tuple(n * oversample for n in shape)
    fov = np.asarray(shape) * voxel
    # The head fills about 80 % of the field of view across, 85 % along z.
    if head_mm is None:
        head_mm = (0.40 * fov[0], 0.42 * fov[1], 0.44 * fov[2])
    labels = _segment(fine_shape, step, head_mm)
    chi_abs, pd, t1, t2s = _fine_maps(labels, fine_shape, step, b0_tesla, rng)
    rotation = _rotation_tilting_b0(tilt_deg)
    b0_dir = rotation.T @ np.array([0.0, 0.0, 1.0])
    field_ppm = _field_ppm(chi_abs, step, b0_dir)
    # Spoiled GRE steady state (Bernstein 2004, eq. 14.24).
    alpha = np.radians(flip_angle_deg)
    e1 = np.exp(-repetition_time_s / t1)
    steady = pd * np.sin(alpha) * (1 - e1) / (1 - np.cos(alpha) * e1)
    # A smooth transmit/receive phase offset (rad), the same at every echo.
    xs, ys, zs = np.meshgrid(*_centred_coordinates_mm(fine_shape, step), indexing="ij",
                             sparse=True)
    phase0 = (0.6 + 0.9 * xs / fov[0] - 0.7 * ys / fov[1] + 1.2 * (zs / fov[2]) ** 2).astype(
        np.float32)
    field_hz = GAMMA_BAR_MHZ_PER_T * b0_tesla * field_ppm  # MHz/T * T * ppm = Hz
    signal = np.empty((*shape, len(echo_times_s)), np.complex64)
    for i, te in enumerate(echo_times_s):
        fine = steady * np.exp(-te / t2s) * np.exp(1j * (2 * np.pi * field_hz * te + phase0))
        signal[..., i] = _block_mean(fine.astype(np.complex64), oversample)
    if snr is not None:
        sigma = float(np.abs(signal[..., 0]).max()) / snr
        noise = rng.standard_normal((*signal.shape, 2)).astype(np.float32) * sigma
        signal = signal + (noise[..., 0] + 1j * noise[..., 1])
    brain_fine = np.logical_or.reduce([labels[n] for n in (
        "csf", "gm", "wm", "caudate", "putamen", "pallidum", "thalamus", "vein", "bleed",
        "calcification")]) & ~labels["bone"] & ~labels["scalp"]
    brain_fraction = _block_mean(brain_fine.astype(np.float32), oversample)
    chi_rel = np.where(brain_fine, chi_abs + CHI_AIR_MINUS_WATER_PPM, 0).astype(np.float32)
    brain_mask = brain_fraction >= 0.5
    chi_truth = np.where(brain_mask, _block_mean(chi_rel, oversample) / np.maximum(
        brain_fraction, 1e-6), 0).astype(np.float32)
    coarse_labels = {name: _block_mean(labels[name].astype(np.float32), oversample) >= 0.5
                     for name in ("caudate", "putamen", "pallidum", "thalamus", "vein",
                                  "bleed", "calcification", "gm", "wm", "csf")}
    local_field_hz = None
    if with_local_field:
        local_fine = _field_ppm(np.where(brain_fine, chi_rel, 0).astype(np.float32), step, b0_dir)
        local_field_hz = (GAMMA_BAR_MHZ_PER_T * b0_tesla
                          * _block_mean(local_fine, oversample)).astype(np.float32)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(voxel)
    affine[:3, 3] = -rotation @ (voxel * (np.asarray(shape) - 1) / 2)
    return IndependentPhantom(
        magnitude=np.abs(signal).astype(np.float32),
        phase_rad=np.angle(signal).astype(np.float32),
        chi_ppm=chi_truth,
        brain_mask=brain_mask,
        labels=coarse_labels,
        affine=affine,
        echo_times_s=tuple(float(t) for t in echo_times_s),
        b0_tesla=float(b0_tesla),
        b0_dir_voxel=b0_dir,
        voxel_size_mm=tuple(float(v) for v in voxel),
        local_field_hz=local_field_hz,
    )


def write_nifti_echoes(phantom: IndependentPhantom, folder) -> tuple[list[Path], list[Path]]:
    """Write one magnitude and one phase NIfTI per echo with dcm2niix-style JSON sidecars
    (``EchoTime`` in s, ``MagneticFieldStrength`` in T). Returns (magnitude files, phase files).
    Uses nibabel directly (not qsmkit's writer)."""
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mags, phases = [], []
    for i, te in enumerate(phantom.echo_times_s):
        for part, data, out in (("mag", phantom.magnitude, mags),
                                ("phase", phantom.phase_rad, phases)):
            path = folder / f"gre_e{i + 1}_{part}.nii.gz"
            nib.save(nib.Nifti1Image(data[..., i], phantom.affine), path)
            sidecar = {"EchoTime": te, "MagneticFieldStrength": phantom.b0_tesla,
                       "EchoNumber": i + 1, "ImageType": ["ORIGINAL", "PRIMARY",
                                                          "P" if part == "phase" else "M"]}
            path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
            out.append(path)
    return mags, phases

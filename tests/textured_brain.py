"""An independent, textured brain-like phantom for testing background field removal.

Nothing here comes from qsmkit: the grid, the dipole kernel and the constants are this
module's own, so a method under test cannot match the phantom by sharing a discretisation
(no inverse crime).

* The brain is an ellipsoid with a gently folded surface; its susceptibility has a cortical
  ribbon that reaches the mask edge, white matter, two pairs of deep grey nuclei, a vein
  under the top of the brain that touches the edge, and a smooth random texture.
* The local field is the field of ``chi * brain`` computed on a grid twice as fine as the
  output grid with the continuous dipole kernel ``1/3 - (k.b)^2 / |k|^2`` sampled on that
  fine, zero-padded grid (Salomir 2003; Marques & Bowtell 2005), then averaged over the
  2 x 2 x 2 fine voxels of each output voxel, as a scanner voxel averages its signal.
* The background field is exact: the field outside uniformly magnetised spheres of air (a
  frontal sinus and two mastoid air cells, all outside the brain) is that of a point dipole
  (Jackson, Classical Electrodynamics, 3rd ed., sec. 5.10), plus a first- and second-order
  harmonic shim term. It is evaluated on the fine grid and averaged the same way.

References
----------
Salomir R, de Senneville BD, Moonen CT. A fast calculation method for magnetic field
inhomogeneity due to an arbitrary distribution of bulk susceptibility. Concepts Magn Reson B
2003;19B:26-34.
Marques JP, Bowtell R. Application of a Fourier-based method for rapid calculation of field
inhomogeneity due to spatial variation of magnetic susceptibility. Concepts Magn Reson B
2005;25B:65-78.
Schenck JF. The role of magnetic susceptibility in magnetic resonance imaging: MRI magnetic
compatibility of the first and second kinds. Med Phys 1996;23:815-850 (air +0.36 ppm, tissue
about -9.05 ppm, so air relative to tissue is about +9.4 ppm).
"""

from __future__ import annotations

import numpy as np
import scipy.fft

# Proton gyromagnetic ratio / 2 pi, MHz/T (CODATA 2018: 42.577 478 518 MHz/T).
GAMMA_BAR_MHZ_PER_T = 42.577478518
AIR_MINUS_TISSUE_PPM = 9.4  # Schenck 1996


def _axes(shape, voxel_size):
    return [(np.arange(n) - (n - 1) / 2.0) * h for n, h in zip(shape, voxel_size, strict=True)]


def _brain_level(x, y, z, semi_axes_mm):
    """< 1 inside the folded ellipsoid brain (continuous function of position in mm)."""
    a, b, c = semi_axes_mm
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    # Gentle folds: 3 % radial modulation with a period of about 25 mm along the surface.
    r_mm = np.sqrt(x**2 + y**2 + z**2) + 1e-9
    fold = 0.03 * np.sin(x / 4.0 + 0.5) * np.sin(y / 4.5 + 1.0) * np.sin(z / 4.0 + 2.0)
    return rho * (1.0 + fold * np.minimum(r_mm / 20.0, 1.0))


def _chi_ppm(x, y, z, semi_axes_mm, rng_state):
    """Tissue susceptibility (ppm, relative to the mean tissue) inside the brain."""
    a, b, c = semi_axes_mm
    level = _brain_level(x, y, z, semi_axes_mm)
    brain = level < 1.0
    depth_mm = (1.0 - level) * min(semi_axes_mm)  # approximate distance to the surface
    chi = np.where(depth_mm < 3.0, 0.03, -0.02)  # cortical ribbon, white matter
    for sx in (-1.0, 1.0):
        putamen = ((x - sx * 0.45 * a) / (0.18 * a)) ** 2 + (y / (0.2 * b)) ** 2 + (
            z / (0.22 * c)
        ) ** 2
        pallidum = ((x - sx * 0.28 * a) / (0.1 * a)) ** 2 + ((y + 0.05 * b) / (0.12 * b)) ** 2 + (
            (z + 0.05 * c) / (0.12 * c)
        ) ** 2
        chi = np.where(putamen < 1.0, 0.08, chi)
        chi = np.where(pallidum < 1.0, 0.17, chi)
    # A vein (radius 3 mm) running front to back just under the top of the brain.
    vein = (x**2 + (z - 0.93 * c) ** 2) < 3.0**2
    chi = np.where(vein, 0.35, chi)
    rng = np.random.default_rng(rng_state)
    for _ in range(12):
        k = rng.normal(size=3)
        k *= 2.0 * np.pi / (rng.uniform(8.0, 30.0) * np.linalg.norm(k))
        chi = chi + 0.006 * np.cos(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi))
    # Relative to the mean brain tissue: a uniform ellipsoid's own field is uniform inside it,
    # which no background removal can tell from a background offset.
    chi = chi - chi[np.broadcast_to(brain, chi.shape)].mean()
    return np.where(brain, chi, 0.0), brain


def _sphere_fields_ppm(x, y, z, spheres, b0_dir):
    """Field (ppm of B0) outside uniformly magnetised spheres: a point dipole each."""
    total = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float64)
    for centre, radius, dchi in spheres:
        rx, ry, rz = x - centre[0], y - centre[1], z - centre[2]
        r2 = np.maximum(rx**2 + ry**2 + rz**2, radius**2)
        cos_r = rx * b0_dir[0] + ry * b0_dir[1] + rz * b0_dir[2]
        total += dchi * radius**3 / 3.0 * (3.0 * cos_r**2 - r2) / r2**2.5
    return total


def textured_brain(
    voxel_size=(1.0, 1.0, 1.0),
    *,
    semi_axes_mm=(45.0, 55.0, 40.0),
    margin_mm=12.0,
    b0_dir=(0.0, 0.0, 1.0),
    b0_tesla=3.0,
    seed=0,
):
    """Total, local and background field (Hz), susceptibility (ppm) and brain mask.

    Returns a dict with ``total_hz``, ``local_hz``, ``background_hz``, ``chi_ppm``, ``mask``
    (bool, voxel centres inside the brain), ``voxel_size``, ``b0_dir``, ``b0_tesla``.
    """
    vs = np.asarray(voxel_size, dtype=float)
    b = np.asarray(b0_dir, dtype=float)
    b /= np.linalg.norm(b)
    semi = np.asarray(semi_axes_mm, dtype=float)
    shape = tuple(2 * int(np.ceil((s + margin_mm) / h)) for s, h in zip(semi, vs, strict=True))
    fine_vs = vs / 2.0
    fine_shape = tuple(2 * n for n in shape)
    fx, fy, fz = np.meshgrid(*_axes(fine_shape, fine_vs), indexing="ij", sparse=True)
    chi_fine, brain_fine = _chi_ppm(fx, fy, fz, semi, seed)

    # Local field: continuous kernel sampled on the zero-padded fine grid.
    padded = tuple(scipy.fft.next_fast_len(int(n * 1.3), real=True) for n in fine_shape)
    spectrum = scipy.fft.rfftn(chi_fine.astype(np.float32), padded, workers=-1)
    k = [scipy.fft.fftfreq(n, d=h) for n, h in zip(padded, fine_vs, strict=True)]
    k[2] = scipy.fft.rfftfreq(padded[2], d=fine_vs[2])
    kx, ky, kz = np.meshgrid(*k, indexing="ij", sparse=True)
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    kernel = (1.0 / 3.0 - (kx * b[0] + ky * b[1] + kz * b[2]) ** 2 / k2).astype(np.float32)
    kernel[0, 0, 0] = 0.0
    local_fine = scipy.fft.irfftn(spectrum * kernel, padded, workers=-1)
    local_fine = local_fine[tuple(slice(0, n) for n in fine_shape)]
    del spectrum, kernel

    # Background: air spheres outside the brain plus a harmonic shim residual (ppm).
    a, bb, c = semi
    spheres = [
        ((0.0, 0.8 * bb, -0.8 * c - 8.0), 10.0, AIR_MINUS_TISSUE_PPM),  # frontal sinus
        ((0.85 * a + 6.0, -0.35 * bb, -0.7 * c), 7.0, AIR_MINUS_TISSUE_PPM),  # mastoid right
        ((-0.85 * a - 6.0, -0.35 * bb, -0.7 * c), 7.0, AIR_MINUS_TISSUE_PPM),  # mastoid left
    ]
    background_fine = _sphere_fields_ppm(fx, fy, fz, spheres, b)
    shim = 2e-3 * fx / a + 1.5e-3 * (fz**2 - 0.5 * (fx**2 + fy**2)) / c**2  # harmonic
    background_fine = background_fine + shim

    def down(v):
        v = np.asarray(v, dtype=np.float64)
        return v.reshape(shape[0], 2, shape[1], 2, shape[2], 2).mean(axis=(1, 3, 5))

    to_hz = GAMMA_BAR_MHZ_PER_T * b0_tesla  # ppm of B0 -> Hz: 1e-6 * B0 * gamma_bar(Hz/T)
    gx, gy, gz = np.meshgrid(*_axes(shape, vs), indexing="ij", sparse=True)
    mask = _brain_level(gx, gy, gz, semi) < 1.0
    local = down(local_fine) * to_hz
    background = down(background_fine) * to_hz
    return {
        "total_hz": (local + background).astype(np.float32),
        "local_hz": local.astype(np.float32),
        "background_hz": background.astype(np.float32),
        "chi_ppm": down(chi_fine).astype(np.float32),
        "mask": mask,
        "voxel_size": tuple(float(v) for v in vs),
        "b0_dir": tuple(float(v) for v in b),
        "b0_tesla": float(b0_tesla),
    }

"""The dipole kernel reproduces analytic fields of a sphere and an infinite cylinder."""

import numpy as np
import pytest

from qsmkit import fft
from qsmkit.errors import InputError
from qsmkit.geometry import fast_shape, pad_to
from qsmkit.kernels import ball, dipole_kernel, laplacian_kernel, smv_kernel


def _grid(shape, voxel_size):
    axes = [(np.arange(n) - n // 2) * d for n, d in zip(shape, voxel_size, strict=True)]
    return np.meshgrid(*axes, indexing="ij")


def _field(chi, voxel_size, b0_dir, method="kspace"):
    kernel = dipole_kernel(chi.shape, voxel_size, b0_dir, method=method, half=True)
    return fft.convolve_real(chi, kernel)


def _rel_rms(estimate, truth, region):
    return np.sqrt(np.mean((estimate - truth)[region] ** 2) / np.mean(truth[region] ** 2))


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


B0_DIRS = [(0, 0, 1), _unit((np.sin(np.radians(25)), 0.1, np.cos(np.radians(25)))), (1, 0, 0)]
VOXELS = [(1.0, 1.0, 1.0), (0.8, 0.8, 1.6)]


@pytest.mark.parametrize("method", ["kspace", "ispace"])
@pytest.mark.parametrize("b0_dir", B0_DIRS)
@pytest.mark.parametrize("voxel_size", VOXELS)
def test_sphere_field_matches_analytic(method, b0_dir, voxel_size):
    shape = (96, 96, 64) if voxel_size[2] > 1 else (96, 96, 96)
    radius, dchi = 7.0, 0.5
    x, y, z = _grid(shape, voxel_size)
    r = np.sqrt(x**2 + y**2 + z**2)
    chi = np.where(r <= radius, dchi, 0.0).astype(np.float32)
    field = _field(chi, voxel_size, b0_dir, method)
    b = _unit(b0_dir)
    cos_t = (x * b[0] + y * b[1] + z * b[2]) / np.maximum(r, 1e-9)
    analytic = dchi * radius**3 / np.maximum(r, 1e-9) ** 3 * (3 * cos_t**2 - 1) / 3
    outside = (r > radius + 2.5) & (r < 2.5 * radius)
    axis_aligned = np.count_nonzero(np.abs(b) > 1e-9) == 1
    # The sampled k-space kernel is discontinuous across the Brillouin-zone edge when B0 is
    # oblique, which rings in image space; the voxel-integrated kernel has no such error.
    tolerance = 0.05 if (method == "ispace" or axis_aligned) else 0.15
    assert _rel_rms(field, analytic, outside) < tolerance
    inside = r < radius - 2.5
    # Inside a uniformly magnetised sphere the (Lorentz-corrected) field vanishes.
    assert np.abs(field[inside]).mean() < 0.05 * dchi / 3


@pytest.mark.parametrize("method", ["kspace", "ispace"])
@pytest.mark.parametrize("theta_deg", [0.0, 30.0, 55.0, 90.0])
@pytest.mark.parametrize("voxel_size", VOXELS)
def test_cylinder_field_matches_analytic(theta_deg, voxel_size, method):
    # Infinite cylinder along x; B0 in the x-z plane at theta to the cylinder axis.
    # The k-space kernel sums periodic images (a short periodic grid is an infinite
    # cylinder); the image-space kernel is truncated at the grid edge, so it needs length.
    length = 32 if method == "kspace" else 256
    shape = (length, 96, 96) if voxel_size[2] <= 1 else (length, 96, 64)
    radius, dchi = 6.0, 0.4
    x, y, z = _grid(shape, voxel_size)
    rho2 = y**2 + z**2
    chi = np.where(rho2 <= radius**2, dchi, 0.0).astype(np.float32)
    t = np.radians(theta_deg)
    b0 = np.array([np.cos(t), 0.0, np.sin(t)])
    field = _field(chi, voxel_size, b0, method)
    # Inside: dchi/6 (3cos^2 theta - 1); outside: dchi/2 sin^2 theta a^2/rho^2 cos(2 phi),
    # phi the angle in the cross-section from the projection of B0 (the z axis here).
    inside_truth = dchi / 6 * (3 * np.cos(t) ** 2 - 1)
    phi = np.arctan2(y, z)
    outside_truth = dchi / 2 * np.sin(t) ** 2 * radius**2 / np.maximum(rho2, 1e-9) * np.cos(2 * phi)
    inside = rho2 < (radius - 2) ** 2
    assert abs(field[inside].mean() - inside_truth) < 0.05 * dchi / 3
    if theta_deg > 0:
        region = (rho2 > (radius + 2.5) ** 2) & (rho2 < (2.5 * radius) ** 2)
        oblique = 0 < theta_deg < 90
        tolerance = 0.12 if (method == "kspace" and oblique) else 0.05
        # Normalise by the field scale dchi/2 a^2/rho^2 (the pattern at 90 degrees): the
        # outside field shrinks as sin^2(theta) while voxelisation errors do not.
        scale = dchi / 2 * radius**2 / np.maximum(rho2, 1e-9) * np.cos(2 * phi)
        error = np.sqrt(np.mean((field - outside_truth)[region] ** 2))
        assert error / np.sqrt(np.mean(scale[region] ** 2)) < tolerance


def test_kernel_dc_and_symmetry():
    kernel = dipole_kernel((16, 12, 10), (1, 1, 2), (0.2, 0.3, 0.9))
    assert kernel[0, 0, 0] == 0
    assert kernel.max() <= 1 / 3 + 1e-6 and kernel.min() >= -2 / 3 - 1e-6
    half = dipole_kernel((16, 12, 10), (1, 1, 2), (0.2, 0.3, 0.9), half=True)
    # The Nyquist plane is ambiguous for oblique B0 (+k and -k differ); compare below it.
    np.testing.assert_allclose(half[:, :, :5], kernel[:, :, :5], atol=1e-6)


def test_smv_removes_harmonic_field_inside():
    shape, vs = (48, 48, 48), (1.0, 1.0, 1.0)
    x, y, z = _grid(shape, vs)
    harmonic = (x**2 - y**2 + 3 * x * z).astype(np.float32)
    s = smv_kernel(shape, vs, 4.0, half=True)
    residual = harmonic - fft.convolve_real(harmonic, s)
    core = (np.abs(x) < 12) & (np.abs(y) < 12) & (np.abs(z) < 12)
    assert np.abs(residual[core]).max() < 1e-3 * np.abs(harmonic[core]).max()


def test_laplacian_kernel_matches_finite_differences():
    rng = np.random.default_rng(0)
    vs = (1.0, 0.5, 2.0)
    x = rng.standard_normal((12, 10, 8))
    lap = fft.irfftn(fft.rfftn(x) * laplacian_kernel(x.shape, vs, half=True), x.shape)
    fd = sum((np.roll(x, -1, a) - 2 * x + np.roll(x, 1, a)) / d**2 for a, d in enumerate(vs))
    np.testing.assert_allclose(lap, fd, atol=1e-4)


def test_ball_is_anisotropic():
    b = ball((1.0, 1.0, 2.0), 4.0)
    assert b.shape == (9, 9, 5) and b[4, 4, 2] and not b[0, 0, 0]


def test_padding_avoids_wraparound():
    shape, vs = (40, 40, 40), (1.0, 1.0, 1.0)
    x, y, z = _grid(shape, vs)
    chi = ((x - 14) ** 2 + y**2 + z**2 <= 16).astype(np.float32)
    padded, crop = pad_to(chi, fast_shape(shape, 20))
    field_padded = _field(padded, vs, (0, 0, 1))[crop]
    field_wrapped = _field(chi, vs, (0, 0, 1))
    # The wrapped source sits just across the periodic boundary from x = -20.
    assert abs(field_padded[0, 20, 20]) < 0.5 * abs(field_wrapped[0, 20, 20])


def test_bad_geometry_raises_input_error():
    with pytest.raises(InputError):
        dipole_kernel((8, 8, 8), (1, 0, 1))
    with pytest.raises(InputError):
        dipole_kernel((8, 8, 8), (1, 1, 1), (0, 0, 0))
    with pytest.raises(InputError):
        dipole_kernel((8, 8, 8), (1, 1, 1), method="magic")

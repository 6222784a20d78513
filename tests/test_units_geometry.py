"""Unit conversions and affine geometry (oblique, anisotropic)."""

import numpy as np
import pytest

from qsmkit import units
from qsmkit.errors import InputError
from qsmkit.geometry import (
    affine_from_geometry,
    b0_dir_from_affine,
    crop,
    fast_shape,
    pad_to,
    rotation_aligning,
    voxel_size_from_affine,
)
from qsmkit.physiology import blood_chi_ppm, oxygen_content_ml_per_dl, saturation_from_chi


def test_gamma_and_conversions():
    assert units.GAMMA_BAR_HZ_PER_T == pytest.approx(42.577478e6)
    assert units.larmor_hz(3.0) == pytest.approx(127.732434e6)
    # 1 ppm at 3 T is 127.7 Hz; over 10 ms it accumulates 2*pi*1.277 rad.
    assert units.ppm_to_hz(1.0, 3.0) == pytest.approx(127.732434)
    assert units.hz_to_ppm(units.ppm_to_hz(0.37, 7.0), 7.0) == pytest.approx(0.37)
    phase = units.ppm_to_phase(0.1, 0.01, 3.0)
    assert phase == pytest.approx(2 * np.pi * 12.7732434 * 0.01)
    assert units.phase_to_ppm(phase, 0.01, 3.0) == pytest.approx(0.1)
    assert units.phase_to_hz(np.pi, 0.005) == pytest.approx(100.0)


def test_wrap_phase_range():
    x = np.linspace(-20, 20, 1001)
    w = units.wrap_phase(x)
    assert w.min() >= -np.pi and w.max() < np.pi
    np.testing.assert_allclose(np.round((x - w) / (2 * np.pi)), (x - w) / (2 * np.pi), atol=1e-9)


def test_axial_affine():
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    assert voxel_size_from_affine(affine) == (0.9, 0.9, 2.0)
    np.testing.assert_allclose(b0_dir_from_affine(affine), [0, 0, 1])


def test_flipped_axes_keep_b0_axis():
    affine = np.diag([-1.0, 1.0, -1.5, 1.0])
    np.testing.assert_allclose(np.abs(b0_dir_from_affine(affine)), [0, 0, 1])


@pytest.mark.parametrize("direction", [(0.3, 0.1, 0.9), (1, 0, 0), (0, 0, -1), (0.2, -0.7, 0.1)])
def test_oblique_roundtrip(direction):
    affine = affine_from_geometry((20, 30, 40), (1.0, 0.8, 2.2), direction)
    expected = np.asarray(direction, float) / np.linalg.norm(direction)
    np.testing.assert_allclose(b0_dir_from_affine(affine), expected, atol=1e-12)
    np.testing.assert_allclose(voxel_size_from_affine(affine), (1.0, 0.8, 2.2))
    rot = rotation_aligning(direction)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_affine_centre_at_origin():
    affine = affine_from_geometry((11, 21, 31), (1, 1, 1), (0, 0.5, 1))
    centre = affine @ np.array([5, 10, 15, 1.0])
    np.testing.assert_allclose(centre[:3], 0, atol=1e-12)


def test_bad_affine():
    with pytest.raises(InputError):
        voxel_size_from_affine(np.zeros((4, 4)))
    with pytest.raises(InputError):
        voxel_size_from_affine(np.eye(3))


def test_pad_crop_roundtrip_and_fast_shape():
    x = np.arange(7 * 9 * 11, dtype=np.float32).reshape(7, 9, 11)
    shape = fast_shape(x.shape, 3)
    assert all(s >= n + 6 for s, n in zip(shape, x.shape, strict=True))
    padded, slices = pad_to(x, shape)
    assert padded.shape == shape
    np.testing.assert_array_equal(crop(padded, slices), x)


def test_blood_susceptibility_roundtrip():
    chi = blood_chi_ppm(0.6, 0.42)
    assert chi == pytest.approx(0.42 * (-0.10 + 3.39 * 0.4))
    assert saturation_from_chi(chi, 0.42) == pytest.approx(0.6)
    assert oxygen_content_ml_per_dl(15.0, 0.98, 95.0) == pytest.approx(1.34 * 15 * 0.98 + 0.285)
    with pytest.raises(InputError):
        blood_chi_ppm(0.6, 1.5)

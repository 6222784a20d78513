"""Frangi vesselness with scales in mm: tubes answer, balls and plates do not, whatever the
voxel shape."""

import numpy as np
import pytest

from qsmkit.analysis.vesselness import hessian_eigenvalues_mm, vesselness_mm
from qsmkit.errors import InputError


def _grid(voxel, fov_mm=32.0):
    shape = [int(round(fov_mm / v)) for v in voxel]
    axes = [(np.arange(n) + 0.5) * v - fov_mm / 2 for n, v in zip(shape, voxel, strict=True)]
    return np.meshgrid(*axes, indexing="ij")


@pytest.mark.parametrize("voxel", [(1.0, 1.0, 1.0), (0.5, 0.5, 2.0), (2.0, 0.5, 0.5)])
def test_tube_ball_plate_any_voxel_shape(voxel):
    x, y, z = _grid(voxel)
    centre = tuple(n // 2 for n in x.shape)
    # A tube of radius 2 mm along the diagonal of x and z (oblique to every voxel axis).
    u = (x - z) / np.sqrt(2)
    tube = (u**2 + y**2 <= 2.0**2).astype(np.float32)
    ball = (x**2 + y**2 + z**2 <= 3.0**2).astype(np.float32)
    plate = (np.abs(z) <= 1.0).astype(np.float32)
    v_tube = vesselness_mm(tube, voxel, c=0.05).vesselness[centre]
    v_ball = vesselness_mm(ball, voxel, c=0.05).vesselness[centre]
    v_plate = vesselness_mm(plate, voxel, c=0.05).vesselness[centre]
    assert v_tube > 0.6, v_tube
    assert v_ball < 0.2, v_ball
    assert v_plate < 0.2, v_plate
    radius = vesselness_mm(tube, voxel, c=0.05).radius_mm[centre]
    assert 1.0 <= radius <= 3.0


def test_eigenvalues_in_physical_units_and_bad_inputs():
    # A paraboloid f = -(a x^2 + b y^2 + c z^2) has Hessian diag(-2a, -2b, -2c) in 1/mm^2,
    # whatever the voxel size.
    for voxel in ((1.0, 1.0, 1.0), (0.5, 1.0, 2.0)):
        x, y, z = _grid(voxel, 40.0)
        f = -(0.01 * x**2 + 0.02 * y**2 + 0.04 * z**2)
        centre = np.zeros(x.shape, bool)
        centre[tuple(n // 2 for n in x.shape)] = True
        ev = hessian_eigenvalues_mm(f, voxel, 1.0, centre)[0]
        assert np.allclose(sorted(ev), [-0.08, -0.04, -0.02], rtol=0.02)
    with pytest.raises(InputError):
        vesselness_mm(np.zeros((8, 8, 8)), (1, 1, 1), radii_mm=(0.0,))
    with pytest.raises(InputError):
        hessian_eigenvalues_mm(np.zeros((8, 8, 8)), (1, 1, 1), -1.0)
    with pytest.raises(InputError):
        vesselness_mm(np.zeros((8, 8, 8)), (1, 1, 1), where=np.zeros((4, 4, 4), bool))

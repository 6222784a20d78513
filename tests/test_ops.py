"""Operators pass adjoint tests and compose; CG solves SPD systems."""

import numpy as np
import pytest

from qsmkit.ops import Dipole, Gradient, Identity, Mask, Weight
from qsmkit.solvers import cg


def _adjoint_gap(op, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(op.ishape).astype(np.float32)
    y = rng.standard_normal(op.oshape).astype(np.float32)
    lhs = float(np.vdot(op.forward(x).astype(np.float64), y))
    rhs = float(np.vdot(x, op.adjoint(y).astype(np.float64)))
    return abs(lhs - rhs) / max(abs(lhs), 1e-12)


SHAPE = (14, 12, 10)


@pytest.mark.parametrize(
    "op",
    [
        Dipole(SHAPE, (1.0, 1.0, 1.0)),
        Dipole(SHAPE, (0.7, 0.9, 1.5), (0.3, 0.2, 0.93), method="ispace"),
        Gradient(SHAPE, (1.0, 0.5, 2.0)),
        Mask(np.random.default_rng(1).random(SHAPE) > 0.5),
        Weight(np.random.default_rng(2).random(SHAPE)),
        Identity(SHAPE),
    ],
    ids=["dipole", "dipole-ispace-oblique", "gradient", "mask", "weight", "identity"],
)
def test_adjoint(op):
    assert _adjoint_gap(op) < 1e-4


def test_composition_and_sum_adjoints():
    d = Dipole(SHAPE, (1, 1, 1), (0, 0.3, 0.95))
    m = Mask(np.random.default_rng(3).random(SHAPE) > 0.3)
    g = Gradient(SHAPE, (1, 1, 1))
    assert _adjoint_gap(m @ d) < 1e-4
    assert _adjoint_gap(g @ d) < 1e-4
    assert _adjoint_gap(d + 2.0 * m) < 1e-4
    assert _adjoint_gap((m @ d).H) < 1e-4


def test_gradient_of_linear_ramp():
    vs = (2.0, 1.0, 0.5)
    x = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    g = Gradient(x.shape, vs).forward(x)
    np.testing.assert_allclose(g[0][:-1], 0.5)
    np.testing.assert_allclose(g[0][-1], 0.0)
    np.testing.assert_allclose(g[1:], 0.0)


def test_shape_checks():
    with pytest.raises(ValueError):
        Dipole(SHAPE, (1, 1, 1)).forward(np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ValueError):
        Gradient(SHAPE, (1, 1, 1)) @ Gradient(SHAPE, (1, 1, 1))


def test_cg_solves_regularised_dipole_system():
    rng = np.random.default_rng(4)
    d = Dipole(SHAPE, (1, 1, 1))
    g = Gradient(SHAPE, (1, 1, 1))
    truth = rng.standard_normal(SHAPE).astype(np.float32)

    def apply_a(x):
        return d.normal(x) + 0.1 * g.normal(x) + 0.01 * x

    b = apply_a(truth)
    x, iters = cg(apply_a, b, tol=1e-6, max_iter=500)
    assert iters < 500
    assert np.linalg.norm(x - truth) / np.linalg.norm(truth) < 1e-3

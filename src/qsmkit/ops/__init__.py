"""Linear operators for QSM: dipole convolution, gradient, masks and weights."""

from qsmkit.ops.base import Identity, LinearOperator
from qsmkit.ops.diagonal import Mask, Weight
from qsmkit.ops.dipole import Dipole
from qsmkit.ops.gradient import Gradient, adjoint_gradient, forward_gradient

__all__ = [
    "Dipole",
    "Gradient",
    "Identity",
    "LinearOperator",
    "Mask",
    "Weight",
    "adjoint_gradient",
    "forward_gradient",
]

"""A small linear-operator algebra: forward, adjoint and normal, composable.

``A @ B`` composes, ``A + B`` sums, ``c * A`` scales and ``A.H`` is the adjoint. Solvers in
:mod:`qsmkit.solvers` accept any operator and know nothing of QSM.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg


class LinearOperator:
    """Base class: subclasses set ``ishape``/``oshape`` and implement ``_forward``/``_adjoint``."""

    def __init__(self, ishape, oshape, dtype=np.float32):
        self.ishape = tuple(int(n) for n in ishape)
        self.oshape = tuple(int(n) for n in oshape)
        self.dtype = np.dtype(dtype)

    def _forward(self, x):
        raise NotImplementedError  # abstract

    def _adjoint(self, y):
        raise NotImplementedError  # abstract

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply the operator to an array of shape ``ishape``."""
        if x.shape != self.ishape:
            raise ValueError(f"{type(self).__name__} expects shape {self.ishape}, got {x.shape}")
        return self._forward(x)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """Apply the adjoint to an array of shape ``oshape``."""
        if y.shape != self.oshape:
            raise ValueError(
                f"{type(self).__name__} adjoint expects shape {self.oshape}, got {y.shape}"
            )
        return self._adjoint(y)

    def normal(self, x: np.ndarray) -> np.ndarray:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    __call__ = forward

    @property
    def H(self) -> LinearOperator:  # noqa: N802 - conventional name
        return Adjoint(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        return Compose(self, other)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        return Sum(self, other)

    def __rmul__(self, scalar) -> LinearOperator:
        return Scale(self, scalar)

    def __mul__(self, scalar) -> LinearOperator:
        return Scale(self, scalar)

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """View as a ``scipy.sparse.linalg.LinearOperator`` on flattened vectors."""
        n_in, n_out = int(np.prod(self.ishape)), int(np.prod(self.oshape))

        def matvec(v):
            return self.forward(np.asarray(v, dtype=self.dtype).reshape(self.ishape)).ravel()

        def rmatvec(v):
            return self.adjoint(np.asarray(v, dtype=self.dtype).reshape(self.oshape)).ravel()

        return scipy.sparse.linalg.LinearOperator(
            (n_out, n_in), matvec=matvec, rmatvec=rmatvec, dtype=self.dtype
        )


class Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        super().__init__(op.oshape, op.ishape, op.dtype)
        self.op = op

    def _forward(self, x):
        return self.op.adjoint(x)

    def _adjoint(self, y):
        return self.op.forward(y)


class Compose(LinearOperator):
    """``(A @ B) x = A (B x)``."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if a.ishape != b.oshape:
            raise ValueError(f"cannot compose: {a.ishape} != {b.oshape}")
        super().__init__(b.ishape, a.oshape, a.dtype)
        self.a, self.b = a, b

    def _forward(self, x):
        return self.a.forward(self.b.forward(x))

    def _adjoint(self, y):
        return self.b.adjoint(self.a.adjoint(y))


class Sum(LinearOperator):
    def __init__(self, a: LinearOperator, b: LinearOperator):
        if a.ishape != b.ishape or a.oshape != b.oshape:
            raise ValueError("cannot add operators of different shapes")
        super().__init__(a.ishape, a.oshape, a.dtype)
        self.a, self.b = a, b

    def _forward(self, x):
        return self.a.forward(x) + self.b.forward(x)

    def _adjoint(self, y):
        return self.a.adjoint(y) + self.b.adjoint(y)


class Scale(LinearOperator):
    def __init__(self, op: LinearOperator, scalar):
        super().__init__(op.ishape, op.oshape, op.dtype)
        self.op, self.scalar = op, scalar

    def _forward(self, x):
        return self.scalar * self.op.forward(x)

    def _adjoint(self, y):
        return np.conj(self.scalar) * self.op.adjoint(y)


class Identity(LinearOperator):
    def __init__(self, shape, dtype=np.float32):
        super().__init__(shape, shape, dtype)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y

"""Generic iterative solvers; they accept any operator and know nothing of QSM."""

from qsmkit.solvers.cg import cg

__all__ = ["cg"]

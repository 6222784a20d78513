"""Generic iterative solvers; they accept any operator and know nothing of QSM."""

from qsmkit.solvers.admm import Prox, admm
from qsmkit.solvers.cg import cg
from qsmkit.solvers.lsmr import lsmr, lsqr

__all__ = ["Prox", "admm", "cg", "lsmr", "lsqr"]

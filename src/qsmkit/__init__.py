"""qsmkit: quantitative susceptibility mapping in Python."""

from qsmkit import _numba_cache
from qsmkit.errors import InputError

NUMBA_CACHE = _numba_cache.configure()
"""Where numba caches compiled kernels: "in-tree", "redirected", "user" or "disabled"."""

__version__ = "0.1.0"

__all__ = ["NUMBA_CACHE", "InputError", "__version__"]

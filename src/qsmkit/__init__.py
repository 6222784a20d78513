"""qsmkit: quantitative susceptibility mapping in Python."""

from qsmkit.errors import InputError

__version__ = "0.1.0"

__all__ = ["InputError", "__version__"]

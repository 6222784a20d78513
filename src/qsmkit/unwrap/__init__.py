"""Spatial phase unwrapping.

``METHODS`` maps the names used by config and CLI to functions that all accept
``f(phase_rad, mask=None, voxel_size=(1, 1, 1), *, magnitude=None, ...)`` (keywords) and
return the unwrapped phase (rad, float32, same shape; a 4D input is unwrapped per echo):

* ``"romeo"`` -- :func:`region_growing`: quality-guided region growing with ROMEO-like
  weights (Dymerska 2021). Congruent: ``result - phase`` is exactly ``2 pi k``. The default.
* ``"laplacian"`` -- :func:`laplacian`: Laplacian unwrapping (Schofield & Zhu 2003) by a
  DCT Poisson solve; a smooth estimate, congruent only with ``congruent=True``.
"""

from qsmkit.unwrap.laplacian import laplacian, make_congruent
from qsmkit.unwrap.region_growing import region_growing

METHODS = {"romeo": region_growing, "laplacian": laplacian}
"""Unwrapping methods by name."""

__all__ = ["METHODS", "laplacian", "make_congruent", "region_growing"]

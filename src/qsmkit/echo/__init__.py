"""Multi-echo fits: the field (Hz) and phase offset, and R2*/T2* from the magnitude.

Total-field methods (``METHODS``, also named ``FIELD_METHODS``), all
``f(magnitude, phase, echo_times_s, *, mask=None, voxel_size=(1, 1, 1), unwrap="romeo",
unwrap_options=None)`` returning a fit with ``field_hz`` (spatially unwrapped, Hz),
``offset_rad``, ``weight`` and ``residual``:

* ``"complex"`` -- :func:`field_complex`: :class:`ComplexFit` on the wrapped phase (no
  temporal unwrapping), then spatial unwrapping of the wrapped field (the default).
* ``"linear"`` -- :func:`field_linear`: :func:`remove_phase_offset`, spatial unwrapping of
  echo 1, :func:`temporal_unwrap`, then :func:`linear_fit`.

The building blocks are public: ``ComplexFit(echo_times_s).fit(magnitude, phase, mask=...)``
gives the wrapped field and offset with lazily computed maps; :func:`linear_fit` fits
already unwrapped phase.

R2* methods (``R2STAR_METHODS``), all ``f(magnitude, echo_times_s, *, mask=None, ...) ->
R2starFit``: ``"loglinear"`` (weighted log-linear, any echo times), ``"arlo"`` (closed form,
>= 3 equally spaced echoes), ``"nonlinear"`` (Levenberg-Marquardt, the most accurate).
"""

from qsmkit.echo.arlo import r2star_arlo
from qsmkit.echo.complex_fit import ComplexFieldFit, ComplexFit
from qsmkit.echo.fieldmap import field_complex, field_linear
from qsmkit.echo.linear_fit import (
    LinearFieldFit,
    linear_fit,
    remove_phase_offset,
    temporal_unwrap,
)
from qsmkit.echo.loglinear import r2star_loglinear
from qsmkit.echo.nonlinear import r2star_nonlinear
from qsmkit.echo.r2star import R2starFit

METHODS = {"complex": field_complex, "linear": field_linear}
"""Total-field methods by name."""

FIELD_METHODS = METHODS

R2STAR_METHODS = {
    "loglinear": r2star_loglinear,
    "arlo": r2star_arlo,
    "nonlinear": r2star_nonlinear,
}
"""R2* methods by name."""

__all__ = [
    "FIELD_METHODS",
    "METHODS",
    "R2STAR_METHODS",
    "ComplexFieldFit",
    "ComplexFit",
    "LinearFieldFit",
    "R2starFit",
    "field_complex",
    "field_linear",
    "linear_fit",
    "r2star_arlo",
    "r2star_loglinear",
    "r2star_nonlinear",
    "remove_phase_offset",
    "temporal_unwrap",
]

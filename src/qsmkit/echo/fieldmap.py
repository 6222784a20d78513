"""Total field (Hz, spatially unwrapped) from multi-echo magnitude and wrapped phase.

Two recipes, registered as :data:`qsmkit.echo.FIELD_METHODS` and sharing one signature
``f(magnitude, phase, echo_times_s, *, mask, voxel_size, unwrap, unwrap_options)``:

* :func:`field_complex` (``"complex"``, the default): nonlinear complex fit of field and
  offset (:class:`~qsmkit.echo.ComplexFit`), then spatial unwrapping of the wrapped field
  phase ``2 pi f dTE`` and a move of the fit to the chosen alias (MEDI-style; Liu 2013).
  One unwrapping of one well-conditioned image, whatever the number of echoes.
* :func:`field_linear` (``"linear"``): MCPC-3D-S offset removal, spatial unwrapping of echo
  1, temporal unwrapping of the later echoes and a magnitude^2-weighted linear fit with a
  residual offset (ROMEO-style; Eckstein 2018, Dymerska 2021). The smoothed offset only
  has to be good enough for the temporal unwrapping; the final fit removes what is left.

Both return a fit object with ``field_hz`` (unwrapped, Hz), ``offset_rad``, ``weight``
(inverse field noise, mean 1 in the mask) and ``residual``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qsmkit.echo._common import as_echoes, check_echo_times, check_mask, wrap_half_open_above
from qsmkit.echo.complex_fit import ComplexFieldFit, ComplexFit
from qsmkit.echo.linear_fit import (
    LinearFieldFit,
    linear_fit,
    remove_phase_offset,
    temporal_unwrap,
)
from qsmkit.errors import InputError


def _unwrapper(unwrap: str):
    from qsmkit.unwrap import METHODS

    if unwrap not in METHODS:
        raise InputError(f"unknown unwrapping method {unwrap!r}; use one of {sorted(METHODS)}")
    return METHODS[unwrap]


def field_complex(
    magnitude,
    phase,
    echo_times_s,
    *,
    mask=None,
    voxel_size=(1.0, 1.0, 1.0),
    unwrap: str = "romeo",
    unwrap_options: dict | None = None,
) -> ComplexFieldFit:
    """Complex fit, then spatial unwrapping of the wrapped field.

    Parameters
    ----------
    magnitude, phase : (X, Y, Z, E) arrays (phase in rad)
    echo_times_s : (E,) floats, seconds
    mask : (X, Y, Z) bool, optional
    voxel_size : 3 floats, mm
    unwrap : name in :data:`qsmkit.unwrap.METHODS` (default "romeo")
    unwrap_options : extra keyword options of the unwrapper

    Returns
    -------
    ComplexFieldFit
        With ``is_wrapped = False``: ``field_hz`` is the total field (Hz), 0 outside mask.
    """
    method = _unwrapper(unwrap)
    fit = ComplexFit(echo_times_s).fit(magnitude, phase, mask=mask)
    unwrapped = method(
        fit.field_phase_rad,
        mask=fit.mask,
        voxel_size=voxel_size,
        magnitude=fit.magnitude_rss,
        **(unwrap_options or {}),
    )
    return fit.unwrapped(unwrapped)


def field_linear(
    magnitude,
    phase,
    echo_times_s,
    *,
    mask=None,
    voxel_size=(1.0, 1.0, 1.0),
    unwrap: str = "romeo",
    unwrap_options: dict | None = None,
) -> LinearFieldFit:
    """Offset removal, spatial + temporal unwrapping, weighted linear fit.

    Echo 1 (offset-corrected) is unwrapped spatially; its global 2 pi multiple is the
    unwrapper's choice (for ``romeo``: median within (-pi, pi]), and it should be the true one
    for the temporal unwrapping to be exact when ``TE_2 / TE_1`` is not an integer. With one
    echo the field is the spatially unwrapped phase over ``2 pi TE`` (offset assumed 0).

    Returns
    -------
    LinearFieldFit
        ``offset_rad`` is the removed MCPC-3D-S offset plus the fitted residual offset,
        wrapped into (-pi, pi] (0 for one echo).
    """
    method = _unwrapper(unwrap)
    mag = as_echoes(magnitude, "magnitude")
    pha = as_echoes(phase, "phase")
    if mag.shape != pha.shape:
        raise InputError(f"magnitude {mag.shape} and phase {pha.shape} shapes differ")
    tes = check_echo_times(echo_times_s, pha.shape[3])
    mask = check_mask(mask, pha.shape)
    options = unwrap_options or {}
    offset = np.zeros(mask.shape, dtype=np.float32)
    if tes.size > 1:
        pha, offset = remove_phase_offset(
            pha, tes, magnitude=mag, mask=mask, voxel_size=voxel_size, unwrap=unwrap
        )
    pha = pha.copy()
    pha[..., 0] = method(
        pha[..., 0], mask=mask, voxel_size=voxel_size, magnitude=mag[..., 0], **options
    )
    if tes.size > 1:
        pha = temporal_unwrap(pha, tes, magnitude=mag, mask=mask)
    fit = linear_fit(pha, tes, magnitude=mag, mask=mask, fit_offset=tes.size > 1)
    total_offset = wrap_half_open_above(offset + fit.offset_rad)
    return dataclasses.replace(fit, offset_rad=np.where(mask, total_offset, 0).astype(np.float32))

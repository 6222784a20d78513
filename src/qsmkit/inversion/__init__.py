"""Dipole inversion: local field (Hz) -> susceptibility (ppm).

Every method has the signature
``method(local_field_hz, mask, voxel_size, *, b0_dir=(0, 0, 1), b0_tesla=3.0, weight=None,
**options) -> chi_ppm`` and returns a float32 ``(X, Y, Z)`` map that is zero outside ``mask``.
The field is converted to ppm of B0 first, so regularisation weights do not depend on the
field strength. ``docs/inversion.md`` compares accuracy and speed and says which to pick.

=============  ===============================================  ==========================
name           method                                           reference
=============  ===============================================  ==========================
``tkd``        thresholded k-space division                     Shmueli 2009, Wharton 2010
``tikhonov``   closed-form l2 gradient regularisation           Bilgic 2014
``ilsqr``      LSQR with streaking-artefact removal             Li W 2015
``tv``         l1 gradient (TV), linear data term, ADMM         Bilgic 2014, Milovic 2018
``nltv``       TV with nonlinear data term (FANSI)              Milovic 2018
``medi``       morphology-enabled (magnitude edges), MEDI+0     Liu T 2012, Liu Z 2018
``rts``        rapid two-step (LSMR + TV on the cone)           Kames 2018
``tgv``        total generalised variation, ADMM                Langkammer 2015
``whtv``       TV + weak-harmonic residual background (WH-QSM)  Milovic 2019
=============  ===============================================  ==========================
"""

from __future__ import annotations

import inspect

from qsmkit.errors import InputError
from qsmkit.inversion.ilsqr import ilsqr
from qsmkit.inversion.medi import medi
from qsmkit.inversion.nltv import nltv
from qsmkit.inversion.rts import rts
from qsmkit.inversion.tgv import tgv
from qsmkit.inversion.tikhonov import tikhonov
from qsmkit.inversion.tkd import tkd
from qsmkit.inversion.tv import tv
from qsmkit.inversion.whqsm import whtv

METHODS = {
    "tkd": tkd,
    "tikhonov": tikhonov,
    "ilsqr": ilsqr,
    "tv": tv,
    "nltv": nltv,
    "medi": medi,
    "rts": rts,
    "tgv": tgv,
    "whtv": whtv,
}
"""Method name (as used by config and CLI) -> function."""

REGULARIZATION = {
    "tkd": "threshold",
    "tikhonov": "lam",
    "ilsqr": None,
    "tv": "lam",
    "nltv": "lam",
    "medi": "lam",
    "rts": None,
    "tgv": "alpha",
    "whtv": "lam",
}
"""The option that sets each method's main regularisation strength (``--lam`` of the CLI)."""

_UNIFORM = {"b0_dir", "b0_tesla", "weight"}


def options_of(method: str) -> list[str]:
    """Names of the method-specific keyword options of ``method``."""
    func = _lookup(method)
    return [
        name for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _UNIFORM
    ]


def _lookup(method: str):
    if method not in METHODS:
        raise InputError(f"unknown inversion method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    return METHODS[method]


def invert(local_field_hz, mask, voxel_size, *, method: str = "tv", **kwargs):
    """Run inversion ``method`` by name; unknown methods or options raise ``InputError``."""
    func = _lookup(method)
    allowed = set(options_of(method)) | _UNIFORM
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError(
            f"inversion method {method!r} has no option(s) {', '.join(unknown)}; its options "
            f"are {', '.join(options_of(method))}"
        )
    return func(local_field_hz, mask, voxel_size, **kwargs)


AUTO = "auto"
"""``lam="auto"``: the weight is chosen from the field (:mod:`qsmkit.inversion.lam_auto`)."""


def resolve_lambda(
    method: str,
    options: dict,
    local_field_hz,
    mask,
    voxel_size,
    *,
    b0_dir=(0.0, 0.0, 1.0),
    b0_tesla: float = 3.0,
    weight=None,
    noise_hz: float | None = None,
) -> tuple[dict, dict]:
    """Method options with the regularisation weight set, and a record of how it was set.

    ``options`` may hold ``lam`` (a number, or ``"auto"``, the default) and ``lam_principle``
    (``lcurve``, ``discrepancy``, ``gcv``; default :data:`lam_auto.DEFAULT_PRINCIPLE`). A
    number in ``lam``, or the method's own option (``alpha`` of TGV, ``threshold`` of TKD),
    is the user's choice and wins. ``lam`` of TGV means ``alpha = (3 lam, lam)``. Methods
    without an automatic weight (``tkd``, ``rts``, ``ilsqr``) keep their defaults.

    Returns
    -------
    options : dict
        Ready for ``METHODS[method](..., **options)``.
    record : dict
        ``{"lam": value or None, "option": name, "principle": "auto-lcurve" ... or "user" or
        "default", "curve": {...}}`` for ``QSMResult.info["inversion"]`` and ``qsmkit.json``.
    """
    from qsmkit.inversion import lam_auto

    _lookup(method)
    options = dict(options)
    lam = options.pop("lam", AUTO)
    principle = options.pop("lam_principle", lam_auto.DEFAULT_PRINCIPLE)
    target = REGULARIZATION[method]
    record = {"method": method, "option": target}
    if target is not None and target in options and target != "lam":
        record.update(lam=options[target], principle="user")
        return options, record
    if isinstance(lam, str):
        if lam.strip().lower() != AUTO:
            raise InputError(f"lam must be a number or 'auto', got {lam!r}")
        if not lam_auto.supports(method):
            record.update(lam=None, principle="default")
            return options, record
        value, info = lam_auto.choose_lambda(
            local_field_hz, mask, voxel_size, b0_dir=b0_dir, b0_tesla=b0_tesla, weight=weight,
            method=method, principle=principle, noise_hz=noise_hz,
        )
        options.update(lam_auto.method_options(method, value))
        record.update(lam=value, principle=f"auto-{principle}", curve=info["curve"],
                      lam_tikhonov_mm2=info["lam_tikhonov_mm2"],
                      l1_scale_ppm_per_mm=info["l1_scale_ppm_per_mm"],
                      noise_hz=info["noise_hz"])
        return options, record
    if target is None:
        raise InputError(f"lam does not apply to inversion method {method!r}")
    if target == "alpha":
        options["alpha"] = (lam_auto.TGV_ALPHA0_OVER_ALPHA1 * float(lam), float(lam))
    else:
        options[target] = lam
    record.update(lam=float(lam), principle="user")
    return options, record


def invert_auto(local_field_hz, mask, voxel_size, *, method: str = "tv", b0_dir=(0.0, 0.0, 1.0),
                b0_tesla: float = 3.0, weight=None, noise_hz: float | None = None, **options):
    """Like :func:`invert`, with ``lam="auto"`` by default; returns ``(chi_ppm, record)``.

    ``record`` is that of :func:`resolve_lambda` (the weight used and, when chosen
    automatically, the curve it was chosen from).
    """
    options, record = resolve_lambda(method, options, local_field_hz, mask, voxel_size,
                                     b0_dir=b0_dir, b0_tesla=b0_tesla, weight=weight,
                                     noise_hz=noise_hz)
    chi = invert(local_field_hz, mask, voxel_size, method=method, b0_dir=b0_dir,
                 b0_tesla=b0_tesla, weight=weight, **options)
    return chi, record


__all__ = ["AUTO", "METHODS", "REGULARIZATION", "invert", "invert_auto", "options_of",
           "resolve_lambda", *METHODS]

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


__all__ = ["METHODS", "REGULARIZATION", "invert", "options_of", *METHODS]

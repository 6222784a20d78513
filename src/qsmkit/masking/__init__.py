"""Brain masks: from magnitude (``robust``, ``bet``, ``auto``), trimmed by phase quality.

``METHODS`` maps the names used by config and CLI to functions with the signature
``method(magnitude, voxel_size, **options) -> bool (X, Y, Z)``. ``phase_quality`` needs the
phase and a first mask as well, so it is a refinement step rather than a registry method.
``auto`` picks ``bet`` for a whole head with skull and ``robust`` for cropped fields of view
and phantoms without skull; :func:`brain_mask` is the pipeline's mask stage (method, then
the phase-quality trim for whole heads). A user mask file is read with
:func:`qsmkit.cli.common.load_mask`.
"""

from qsmkit.masking.auto import auto, brain_mask, choose_method
from qsmkit.masking.bet import bet
from qsmkit.masking.phase_quality import phase_quality, phase_quality_map
from qsmkit.masking.robust import robust

METHODS = {"auto": auto, "bet": bet, "robust": robust}

__all__ = ["METHODS", "auto", "bet", "brain_mask", "choose_method", "phase_quality",
           "phase_quality_map", "robust"]

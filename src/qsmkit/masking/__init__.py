"""Brain masks: from magnitude (``robust``), trimmed by phase quality (``phase_quality``).

``METHODS`` maps the names used by config and CLI to functions with the signature
``method(magnitude, voxel_size, **options) -> bool (X, Y, Z)``. ``phase_quality`` needs the
phase and a first mask as well, so it is a refinement step rather than a registry method.
A user mask file is read with :func:`qsmkit.cli.common.load_mask`.
"""

from qsmkit.masking.phase_quality import phase_quality, phase_quality_map
from qsmkit.masking.robust import robust

METHODS = {"robust": robust}

__all__ = ["METHODS", "phase_quality", "phase_quality_map", "robust"]

"""Background field removal: split the total field into background and local (tissue) field.

Every method has the signature
``method(field_hz, mask, voxel_size, *, b0_dir=(0, 0, 1), weight=None, **options)`` and returns
a :class:`BackgroundResult` with the local field (Hz, float32, zero outside ``.mask``) and the
mask on which it is valid (eroded by the SHARP family and LBV). ``METHODS`` maps the names used
by config and CLI to the functions. See ``docs/bgremove.md`` for which method to pick.
"""

from qsmkit.bgremove.ismv import ismv
from qsmkit.bgremove.lbv import lbv
from qsmkit.bgremove.pdf import pdf
from qsmkit.bgremove.resharp import resharp
from qsmkit.bgremove.result import BackgroundResult
from qsmkit.bgremove.sharp import sharp
from qsmkit.bgremove.vsharp import vsharp

METHODS = {
    "pdf": pdf,
    "lbv": lbv,
    "sharp": sharp,
    "vsharp": vsharp,
    "resharp": resharp,
    "ismv": ismv,
}

__all__ = ["METHODS", "BackgroundResult", "ismv", "lbv", "pdf", "resharp", "sharp", "vsharp"]

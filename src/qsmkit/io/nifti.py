"""NIfTI reading and writing (nibabel), float32 in memory, affine kept as given."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from qsmkit.errors import InputError


def load_nifti(path, *, dtype=np.float32) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """Read a NIfTI file; returns (data scaled by scl_slope/inter, affine, header)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    try:
        image = nib.load(str(path))
        stored = np.dtype(image.get_data_dtype())
        if stored.kind == "c":
            raise InputError(
                f"{path} holds complex values ({stored}); qsmkit takes magnitude and phase as "
                "two real images: save abs(z) and angle(z) (radians) separately"
            )
        data = np.asarray(image.dataobj, dtype=dtype)
    except InputError:
        raise
    except Exception as err:  # nibabel raises many kinds for broken files
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise InputError(f"cannot read {path} as NIfTI ({reason})") from None
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputError(f"{path} has no valid affine (qform/sform)")
    return data, np.asarray(affine, dtype=float), image.header


def save_nifti(path, data: np.ndarray, affine, *, dtype=np.float32, description: str = "",
               unit: str = "") -> Path:
    """Write ``data`` with ``affine``; boolean and integer data keep an integer type."""
    path = Path(path)
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif not np.issubdtype(data.dtype, np.integer):
        data = data.astype(dtype)
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=float))
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(np.asarray(affine, dtype=float), code=1)
    image.header.set_sform(np.asarray(affine, dtype=float), code=1)
    if description:
        image.header["descrip"] = (f"{description} [{unit}]" if unit else description)[:79]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path

"""Building blocks of the DICOM files qsmkit writes.

File datasets (explicit VR little endian with a file meta header), decimal strings that fit
the DS limit, 16-bit pixel data, and :class:`_Layout`, which permutes and flips a volume
(never resamples it) so that its slices run along given LPS directions, as DICOM stores them.
Used by :mod:`qsmkit.io.dicom_export` (derived maps) and :mod:`qsmkit.io.gre_dicom`
(vendor-like multi-echo GRE for tests).
"""

from __future__ import annotations

import datetime

import numpy as np

from qsmkit.errors import InputError

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def _new_dataset(sop_class_uid: str, sop_instance_uid: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def _now():
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _ds(value: float) -> str:
    """A decimal string (<= 16 characters) keeping as many digits as fit."""
    value = float(value)
    if value == 0:
        return "0"
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4g}"


def _set_slice_geometry(ds, geometry, k: int) -> None:
    """Plane position, orientation, spacing and slice location of image ``k``; ``geometry``
    has ``positions``, ``orientation``, ``spacing``, ``slice_thickness``, ``row_dir`` and
    ``col_dir`` (the slice layout of a writer)."""
    ds.ImagePositionPatient = [_ds(v) for v in geometry.positions[k]]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    ds.PixelSpacing = [_ds(v) for v in geometry.spacing]
    ds.SliceThickness = _ds(geometry.slice_thickness)
    ds.SpacingBetweenSlices = _ds(geometry.slice_thickness)
    normal = np.cross(geometry.row_dir, geometry.col_dir)
    ds.SliceLocation = _ds(float(np.dot(geometry.positions[k], normal)))


def _set_pixels(ds, pixels: np.ndarray, *, signed: bool, bits_stored: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = np.dtype("<i2") if signed else np.dtype("<u2")
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype).tobytes()


class _Layout:
    """A volume laid out as DICOM slices along given directions (no resampling).

    The array is permuted and flipped so that its first axis runs along the image rows
    (``row_dir``, LPS), its second down the columns (``col_dir``) and its third along
    ``slice_dir``: the stored image ``k`` is ``volume[:, :, k].T``.
    """

    def __init__(self, volume: np.ndarray, affine, row_dir, col_dir, slice_dir):
        from nibabel import orientations

        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        units = lps[:3, :3] / np.linalg.norm(lps[:3, :3], axis=0)
        targets = np.array([row_dir, col_dir, slice_dir], dtype=float)
        targets /= np.linalg.norm(targets, axis=1, keepdims=True)
        cosines = units.T @ targets.T  # [input axis, target axis]
        ornt = np.zeros((3, 2))
        for axis in range(3):
            target = int(np.argmax(np.abs(cosines[axis])))
            ornt[axis] = (target, 1.0 if cosines[axis, target] > 0 else -1.0)
        if sorted(ornt[:, 0].astype(int).tolist()) != [0, 1, 2]:
            raise ValueError("directions do not match the grid")
        shape = volume.shape[:3]
        self.volume = np.ascontiguousarray(orientations.apply_orientation(volume, ornt))
        self.affine = affine @ orientations.inv_ornt_aff(ornt, shape)
        self.min_cosine = float(np.min(np.abs(cosines[np.arange(3), ornt[:, 0].astype(int)])))
        new = np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine
        sizes = np.linalg.norm(new[:3, :3], axis=0)
        self.row_dir = new[:3, 0] / sizes[0]
        self.col_dir = new[:3, 1] / sizes[1]
        if abs(float(np.dot(self.row_dir, self.col_dir))) > 1e-4:
            raise InputError(
                "the affine's in-plane axes are not perpendicular (sheared grid); DICOM cannot "
                "describe it - resample to an orthogonal grid first"
            )
        self.shape = self.volume.shape[:3]
        self.spacing = (float(sizes[1]), float(sizes[0]))  # (between rows, between columns)
        self.slice_vec = new[:3, 2]
        self.slice_thickness = float(sizes[2])
        self.positions = [new[:3, 3] + k * self.slice_vec for k in range(self.shape[2])]
        self.three_d = False

    @property
    def orientation(self) -> list[float]:
        return [float(v) for v in np.concatenate([self.row_dir, self.col_dir])]

    def pixels(self, volume: np.ndarray, k: int) -> np.ndarray:
        """The DICOM image (rows, columns) of slice ``k`` of a laid-out volume."""
        return np.ascontiguousarray(volume[:, :, k].T)

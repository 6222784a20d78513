"""Multi-echo GRE acquisitions written as a Siemens, Philips or GE scanner would.

:func:`write_gre_dicom` writes an :class:`~qsmkit.acquisition.Acquisition` as the classic
(or enhanced) series a Siemens, Philips or GE scanner would export, with each vendor's phase
encoding, for round-trip tests of the reader. Geometry: the reader follows dcm2niix (rows
stored bottom-up, slices along the normal ``row x column``), which always gives an affine
with a negative determinant for 2D data and the closest RAS-aligned order for 3D data. An
affine with negative determinant is written as is (MRAcquisitionType 2D); one with positive
determinant is written as a 3D acquisition, after reorienting the array to the closest RAS
axis order if it is not already in it (or laid out along a given ``image_orientation``), so
that reading back always gives the written array and affine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qsmkit.errors import InputError
from qsmkit.io.dicom_dataset import (
    ENHANCED_MR_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    _ds,
    _Layout,
    _new_dataset,
    _now,
    _set_pixels,
    _set_slice_geometry,
)


class _SliceGeometry:
    """Per-slice DICOM geometry of a (possibly reoriented) volume on an affine."""

    def __init__(self, shape, affine):
        from qsmkit.acquisition import validate_affine

        affine = validate_affine(affine)
        self.reoriented = False
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        axes = lps[:3, :3]
        sizes = np.sqrt((axes**2).sum(axis=0))
        x_dir, y_dir = axes[:, 0] / sizes[0], axes[:, 1] / sizes[1]
        if abs(float(np.dot(x_dir, y_dir))) > 1e-4:
            raise InputError(
                "the affine's first two axes are not perpendicular (sheared grid); DICOM cannot "
                "describe it - resample to an orthogonal grid first"
            )
        self.affine = affine
        self.shape = tuple(int(n) for n in shape[:3])
        self.row_dir = x_dir
        self.col_dir = -y_dir
        self.spacing = (float(sizes[1]), float(sizes[0]))  # (between rows, between columns)
        self.slice_vec = axes[:, 2]
        self.slice_thickness = float(sizes[2])
        normal = np.cross(self.row_dir, self.col_dir)
        self.three_d = float(np.dot(normal, self.slice_vec)) < 0
        origin = lps @ np.array([0.0, self.shape[1] - 1.0, 0.0, 1.0])
        self.positions = [origin[:3] + k * self.slice_vec for k in range(self.shape[2])]

    @property
    def orientation(self) -> list[float]:
        return [float(v) for v in np.concatenate([self.row_dir, self.col_dir])]

    def pixels(self, volume: np.ndarray, k: int) -> np.ndarray:
        """The DICOM image (rows, columns) of slice ``k`` of an (X, Y, Z, ...) volume."""
        return np.ascontiguousarray(volume[:, ::-1, k].T)


def _prepare(volume: np.ndarray, affine, image_orientation=None):
    """Reorient to the closest RAS order when the affine would not read back as written.

    With ``image_orientation`` (six LPS direction cosines) the volume is laid out as a 3D
    acquisition with that ImageOrientationPatient instead, slices along row x column.
    """
    from qsmkit.io.dicom import reorient_closest_canonical

    if image_orientation is not None:
        from qsmkit.acquisition import validate_affine

        cosines = np.asarray(image_orientation, dtype=float)
        row, col = cosines[:3], cosines[3:]
        try:
            layout = _Layout(volume, validate_affine(affine), row, col, np.cross(row, col))
        except ValueError:
            raise InputError("image_orientation does not match the axes of the affine") from None
        if layout.min_cosine < 0.999:
            raise InputError("image_orientation does not match the axes of the affine")
        layout.three_d = True
        return layout.volume, layout
    geometry = _SliceGeometry(volume.shape, affine)
    if geometry.three_d:
        from nibabel import orientations

        ornt = orientations.io_orientation(geometry.affine)
        if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            volume, new_affine = reorient_closest_canonical(volume, geometry.affine)
            geometry = _SliceGeometry(volume.shape, new_affine)
            geometry.reoriented = True
    return volume, geometry


def write_gre_dicom(acquisition, outdir, *, manufacturer: str = "SIEMENS",
                    series_number: int = 5, enhanced: bool = False,
                    real_imaginary: bool = False, image_orientation=None) -> Path:
    """Write the magnitude and phase echoes of an acquisition as vendor-like DICOM.

    Parameters
    ----------
    acquisition : Acquisition
    outdir : path
        Created; one sub-folder per series.
    manufacturer : {"SIEMENS", "PHILIPS", "GE"}
        - ``SIEMENS``: magnitude series ``series_number`` and phase series
          ``series_number + 1``; phase stored 0..4095 with RescaleSlope 2 and
          RescaleIntercept -4096 (-> -4096..4094, i.e. pi/4096 rad per unit); InstanceNumber
          restarts at 1 for every echo, as Siemens does. ``enhanced=True`` writes one
          Enhanced MR Image Storage file per image type with the echo time, image type and
          rescale in per-frame functional groups (Siemens XA).
        - ``PHILIPS``: one series with magnitude and phase; phase stored 0..4095 in
          milliradians (RescaleType ``mrad``) with the private scale slope (2005,100E) so that
          the floating-point value is radians; magnitude through the private scale slope.
        - ``GE``: one series; image type in the private tag (0043,102F); phase in milliradians
          with GE's opposite sign, or (``real_imaginary=True``) real and imaginary images.
    series_number : int
    enhanced : bool
        Siemens only: enhanced multi-frame files.
    real_imaginary : bool
        Write real and imaginary images instead of phase (GE and SIEMENS).
    image_orientation : sequence of 6 floats, optional
        ImageOrientationPatient (LPS row and column cosines) to write, e.g. rows towards the
        patient's left as scanners write 3D series; must match the affine's axes up to
        order and sign. The series is then written as a 3D acquisition. Default: the
        affine's own axes (reoriented to closest RAS when its determinant is positive).

    Returns
    -------
    Path
        ``outdir``.

    Notes
    -----
    Magnitude is stored in 12 bits with a RescaleSlope (Siemens and GE use none on real
    scanners; it is set here so that values round-trip within half a step, max/4095/2).
    Phase is quantised to 2*pi/4096 rad (Siemens, Philips) or 1 mrad (GE).
    """
    from pydicom.uid import generate_uid

    vendor = manufacturer.strip().upper()
    if vendor not in {"SIEMENS", "PHILIPS", "GE"}:
        raise InputError(f"manufacturer must be SIEMENS, PHILIPS or GE, got {manufacturer!r}")
    if enhanced and vendor != "SIEMENS":
        raise InputError("enhanced multi-frame output is written for SIEMENS only")
    magnitude = np.asarray(acquisition.magnitude, dtype=np.float64)
    phase = np.asarray(acquisition.phase, dtype=np.float64)
    magnitude, geometry = _prepare(magnitude, acquisition.affine, image_orientation)
    phase, _ = _prepare(phase, acquisition.affine, image_orientation)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tes_ms = [float(t) * 1000.0 for t in acquisition.echo_times_s]
    study = {
        "StudyInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "PatientName": "Phantom^qsmkit",
        "PatientID": "QSMKIT-PHANTOM",
        "StudyDescription": "qsmkit round trip",
    }
    mag_max = float(magnitude.max()) if magnitude.size else 1.0
    mag_slope = mag_max / 4095.0 if mag_max > 0 else 1.0
    mag_stored = np.clip(np.round(magnitude / mag_slope), 0, 4095)
    common = dict(vendor=vendor, geometry=geometry, tes_ms=tes_ms,
                  b0=float(acquisition.b0_tesla), study=study,
                  description=acquisition.series_description or "gre_qsm")
    if vendor == "SIEMENS":
        names = {"M": "magnitude", "P": "phase"}
        mag_spec = dict(kind="M", stored=mag_stored, slope=mag_slope, intercept=0.0,
                        signed=False, bits=12, rescale_type="US")
        if real_imaginary:
            z = magnitude * np.exp(1j * phase)
            peak = max(float(np.abs(z.real).max()), float(np.abs(z.imag).max()), 1e-12)
            part_slope = peak / 2047
            specs = [
                dict(kind="R", stored=np.round(z.real / part_slope) + 2048, slope=part_slope,
                     intercept=-2048 * part_slope, signed=False, bits=12, rescale_type="US"),
                dict(kind="I", stored=np.round(z.imag / part_slope) + 2048, slope=part_slope,
                     intercept=-2048 * part_slope, signed=False, bits=12, rescale_type="US"),
            ]
            series = [(series_number, specs)]
        else:
            phase_stored = np.mod(np.round((phase + np.pi) / (2 * np.pi) * 4096), 4096)
            phase_spec = dict(kind="P", stored=phase_stored, slope=2.0, intercept=-4096.0,
                              signed=False, bits=12, rescale_type="US")
            series = [(series_number, [mag_spec]), (series_number + 1, [phase_spec])]
        for number, specs in series:
            folder = outdir / f"{number}_{names.get(specs[0]['kind'], 'complex')}"
            if enhanced:
                for spec in specs:
                    _write_enhanced(folder, number, spec, **common)
            else:
                for spec in specs:
                    _write_classic(folder, number, spec, **common)
    elif vendor == "PHILIPS":
        mag_scale = 1.0 / mag_slope  # FP = PV * RS / (RS * SS) = PV / SS
        phase_stored = np.mod(np.round((phase + np.pi) / (2 * np.pi) * 4096), 4096)
        rs = 2 * np.pi * 1000.0 / 4096.0
        specs = [
            dict(kind="M", stored=mag_stored, slope=1.0, intercept=0.0, signed=False, bits=12,
                 rescale_type="normalized", philips_scale=mag_scale),
            dict(kind="P", stored=phase_stored, slope=rs, intercept=-np.pi * 1000.0,
                 signed=False, bits=12, rescale_type="mrad", philips_scale=1000.0 / rs),
        ]
        folder = outdir / f"{series_number}_gre"
        for spec in specs:
            _write_classic(folder, series_number, spec, **common)
    else:  # GE
        mag_spec = dict(kind="M", stored=mag_stored, slope=mag_slope, intercept=0.0,
                        signed=True, bits=16, rescale_type="", ge_type=0)
        if real_imaginary:
            z = magnitude * np.exp(-1j * phase)  # GE's opposite phase sign
            peak = max(float(np.abs(z.real).max()), float(np.abs(z.imag).max()), 1e-12)
            part_slope = peak / 32000
            specs = [
                dict(kind="R", stored=np.round(z.real / part_slope), slope=part_slope,
                     intercept=0.0, signed=True, bits=16, rescale_type="", ge_type=2),
                dict(kind="I", stored=np.round(z.imag / part_slope), slope=part_slope,
                     intercept=0.0, signed=True, bits=16, rescale_type="", ge_type=3),
            ]
        else:
            specs = [mag_spec, dict(kind="P", stored=np.round(-phase * 1000.0), slope=1.0,
                                    intercept=0.0, signed=True, bits=16, rescale_type="",
                                    ge_type=1)]
        folder = outdir / f"{series_number}_gre"
        for spec in specs:
            _write_classic(folder, series_number, spec, **common)
    return outdir


_IMAGE_TYPES = {
    ("SIEMENS", "M"): ["ORIGINAL", "PRIMARY", "M", "ND"],
    ("SIEMENS", "P"): ["ORIGINAL", "PRIMARY", "P", "ND"],
    ("SIEMENS", "R"): ["ORIGINAL", "PRIMARY", "R", "ND"],
    ("SIEMENS", "I"): ["ORIGINAL", "PRIMARY", "I", "ND"],
    ("PHILIPS", "M"): ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
    ("PHILIPS", "P"): ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"],
}


_MANUFACTURERS = {"SIEMENS": "SIEMENS", "PHILIPS": "Philips", "GE": "GE MEDICAL SYSTEMS"}


_COMPLEX = {"M": "MAGNITUDE", "P": "PHASE", "R": "REAL", "I": "IMAGINARY"}


def _series_header(ds, *, vendor, number, description, b0, study, geometry, series_uid):
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "MR"
    ds.Manufacturer = _MANUFACTURERS[vendor]
    ds.ManufacturerModelName = "qsmkit simulated"
    ds.SeriesDescription = description
    ds.ProtocolName = description
    for keyword, value in study.items():
        setattr(ds, keyword, value)
    ds.StudyDate, ds.StudyTime = _now()
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "BRAIN"
    ds.PositionReferenceIndicator = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.MagneticFieldStrength = _ds(b0)
    ds.ImagingFrequency = _ds(b0 * 42.577478)
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if geometry.three_d else "2D"
    ds.SequenceName = "*fl3d6r" if vendor == "SIEMENS" else "FFE"
    ds.RepetitionTime = "40"
    ds.FlipAngle = "15"
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.EchoTrainLength = ""


def _write_classic(folder: Path, number: int, spec: dict, *, vendor, geometry, tes_ms, b0,
                   study, description) -> None:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = study.setdefault(f"_series_{number}", generate_uid())
    stored = spec["stored"]
    n_slices = geometry.shape[2]
    for e, te in enumerate(tes_ms):
        for k in range(n_slices):
            ds = _new_dataset(MR_IMAGE_STORAGE, generate_uid())
            _series_header(ds, vendor=vendor, number=number, description=description, b0=b0,
                           study={k2: v for k2, v in study.items() if not k2.startswith("_")},
                           geometry=geometry, series_uid=series_uid)
            ds.ImageType = _IMAGE_TYPES.get((vendor, spec["kind"]),
                                            ["ORIGINAL", "PRIMARY", "OTHER"])
            ds.EchoTime = _ds(te)
            ds.EchoNumbers = e + 1
            # Siemens restarts InstanceNumber for every echo; others count through.
            ds.InstanceNumber = k + 1 if vendor == "SIEMENS" else e * n_slices + k + 1
            _set_slice_geometry(ds, geometry, k)
            if spec["slope"] != 1.0 or spec["intercept"] != 0.0 or vendor != "GE":
                ds.RescaleSlope = _ds(spec["slope"])
                ds.RescaleIntercept = _ds(spec["intercept"])
                if spec["rescale_type"]:
                    ds.RescaleType = spec["rescale_type"]
            if vendor == "PHILIPS":
                block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
                block.add_new(0x0E, "FL", float(spec["philips_scale"]))
                block.add_new(0x11, "CS", spec["kind"])
            if vendor == "GE":
                block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
                block.add_new(0x2F, "SS", int(spec["ge_type"]))
            pixels = geometry.pixels(stored[..., e], k)
            _set_pixels(ds, pixels, signed=spec["signed"], bits_stored=spec["bits"])
            name = f"{spec['kind']}_e{e + 1}_{k + 1:04d}.dcm"
            ds.save_as(folder / name, enforce_file_format=True)


def _write_enhanced(folder: Path, number: int, spec: dict, *, vendor, geometry, tes_ms, b0,
                    study, description) -> None:
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = study.setdefault(f"_series_{number}", generate_uid())
    ds = _new_dataset(ENHANCED_MR_IMAGE_STORAGE, generate_uid())
    _series_header(ds, vendor=vendor, number=number, description=description, b0=b0,
                   study={k2: v for k2, v in study.items() if not k2.startswith("_")},
                   geometry=geometry, series_uid=series_uid)
    ds.Manufacturer = "Siemens Healthineers"
    ds.ImageType = ["ORIGINAL", "PRIMARY", spec["kind"], "NONE"]
    ds.ComplexImageComponent = _COMPLEX[spec["kind"]]
    ds.InstanceNumber = 1
    del ds.SequenceName
    ds.PulseSequenceName = "*fl3d6r"
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    shared.PlaneOrientationSequence = [orientation]
    measures = Dataset()
    measures.PixelSpacing = [_ds(v) for v in geometry.spacing]
    measures.SliceThickness = _ds(geometry.slice_thickness)
    measures.SpacingBetweenSlices = _ds(geometry.slice_thickness)
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    pixels = []
    n_slices = geometry.shape[2]
    # Frames ordered slice-major (all echoes of a slice together) to exercise the sorting.
    for k in range(n_slices):
        for e, te in enumerate(tes_ms):
            item = Dataset()
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = k + 1
            content.TemporalPositionIndex = 1
            content.DimensionIndexValues = [1, k + 1, e + 1]
            item.FrameContentSequence = [content]
            position = Dataset()
            position.ImagePositionPatient = [_ds(v) for v in geometry.positions[k]]
            item.PlanePositionSequence = [position]
            echo = Dataset()
            echo.EffectiveEchoTime = float(te)
            item.MREchoSequence = [echo]
            frame_type = Dataset()
            frame_type.FrameType = ["ORIGINAL", "PRIMARY", spec["kind"], "NONE"]
            frame_type.ComplexImageComponent = _COMPLEX[spec["kind"]]
            item.MRImageFrameTypeSequence = [frame_type]
            transform = Dataset()
            transform.RescaleSlope = _ds(spec["slope"])
            transform.RescaleIntercept = _ds(spec["intercept"])
            transform.RescaleType = spec["rescale_type"] or "US"
            item.PixelValueTransformationSequence = [transform]
            frames.append(item)
            pixels.append(geometry.pixels(spec["stored"][..., e], k))
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.NumberOfFrames = len(frames)
    _set_pixels(ds, np.stack(pixels), signed=spec["signed"], bits_stored=spec["bits"])
    ds.save_as(folder / f"{spec['kind']}_enhanced.dcm", enforce_file_format=True)

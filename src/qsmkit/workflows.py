"""Load -> reconstruct -> save, shared by ``qsmkit run``, ``qsmkit demo`` and cohorts.

Everything here writes into a staging folder given by the caller (see
:func:`qsmkit.io.output.staged_output`), so outputs appear only when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from qsmkit.acquisition import Acquisition
from qsmkit.io.nifti import save_nifti
from qsmkit.io.provenance import write_provenance
from qsmkit.pipeline import QSMConfig, QSMResult, run_qsm

log = logging.getLogger(__name__)

RUN_OUTPUTS = (
    "chi.nii.gz", "chi.json", "field_hz.nii.gz", "local_field_hz.nii.gz", "mask.nii.gz",
    "brain_mask.nii.gz", "r2star.nii.gz", "magnitude.nii.gz", "qsmkit.json", "report.html",
)


def save_result(result: QSMResult, affine, folder: Path) -> dict[str, str]:
    """Write every map of ``result`` as NIfTI on the acquisition grid; returns name -> file."""
    maps = {
        "chi.nii.gz": (result.chi_ppm, "susceptibility", "ppm"),
        "field_hz.nii.gz": (result.field_hz, "total field", "Hz"),
        "local_field_hz.nii.gz": (result.local_field_hz, "local field", "Hz"),
        "mask.nii.gz": (result.local_mask, "mask where chi is valid", ""),
        "brain_mask.nii.gz": (result.mask, "brain mask", ""),
        "r2star.nii.gz": (result.r2star_per_s, "R2*", "1/s"),
        "magnitude.nii.gz": (result.magnitude, "RSS magnitude", "a.u."),
    }
    if result.fit_residual is not None:
        maps["fit_residual.nii.gz"] = (result.fit_residual, "echo-fit residual", "relative")
    for name, (data, description, unit) in maps.items():
        save_nifti(folder / name, data, affine, description=description, unit=unit)
    # chi's sidecar says how chi was referenced (ChiReference); every analysis reads it
    from qsmkit.io.sidecar import chi_sidecar, write_sidecar

    write_sidecar(folder / "chi.json", chi_sidecar(result.info.get("chi_reference")))
    return {name: name for name in maps} | {"chi.json": "chi.json"}


def save_figures(result: QSMResult, affine, folder: Path) -> list[str]:
    """Orthogonal-slice PNGs of the main maps and the QC figures."""
    from qsmkit.report.figures import orthogonal_slices

    mask, local = result.mask, result.local_mask
    figures = [
        ("magnitude.png", result.magnitude, "Magnitude (RSS of echoes)", "a.u.", False, mask),
        ("field.png", np.where(mask, result.field_hz, 0), "Total field", "Hz", True, mask),
        ("local_field.png", result.local_field_hz, "Local field", "Hz", True, local),
        ("r2star.png", result.r2star_per_s, "R2*", "1/s", False, mask),
    ]
    written = []
    for name, data, title, unit, signed, region in figures:
        magnitude = name == "magnitude.png"
        # Magnitude from zero: a percentile floor in the mask leaves the brain nearly black.
        orthogonal_slices(data, affine, folder / name, title=title, unit=unit, signed=signed,
                          mask=region, outline=mask if magnitude else None,
                          vmin=0.0 if magnitude else None)
        written.append(name)
    from qsmkit.report.figures import chi_figure, lcurve_figure

    # χ in grey scale with a window from robust percentiles in the χ mask (report conventions).
    chi_figure(result.chi_ppm, affine, folder / "chi.png", mask=local)
    written.insert(3, "chi.png")

    if lcurve_figure(result.info.get("inversion", {}), folder / "lcurve.png") is not None:
        written.append("lcurve.png")
    from qsmkit.report.qc import qc_figures

    written += qc_figures(result, affine, folder)
    return written


def reconstruct_and_save(
    acq: Acquisition,
    config: QSMConfig,
    folder: Path,
    *,
    mask=None,
    inputs=(),
    command: str = "qsmkit run",
    dicom_out: bool = False,
    dicom_patient: dict | None = None,
    report: bool = True,
    extra: dict | None = None,
    progress=None,
) -> QSMResult:
    """Run the pipeline and write maps, figures, provenance (and report, DICOM) to ``folder``.

    ``progress`` (optional) is called with each stage's name as it starts: the pipeline's
    stages, then ``save maps``, ``figures``, ``DICOM`` (with ``dicom_out``) and ``report``
    (with ``report``); see :class:`qsmkit.progress.StageProgress`. The times of the output
    stages join the pipeline's in ``qsmkit.json`` ``timings_s``.
    """
    import time

    def stage(name):
        if progress is not None:
            progress(name)
        return time.perf_counter()

    result = run_qsm(acq, config, mask=mask, progress=progress)
    output_timings = {}
    start = stage("save maps")
    save_result(result, acq.affine, folder)
    start, output_timings["save_maps"] = stage("figures"), time.perf_counter() - start
    figures = save_figures(result, acq.affine, folder)
    output_timings["figures"] = time.perf_counter() - start
    if dicom_out:
        from qsmkit.io.dicom_export import export_result_series

        start = stage("DICOM")
        # File the series under the scan's patient, study and frame of reference.
        export_result_series(result, acq, folder / "dicom", patient=dicom_patient)
        output_timings["dicom_export"] = time.perf_counter() - start
    from qsmkit.report.qc import qc_metrics

    record = {
        "warnings": [w.as_dict() for w in result.warnings],
        "qc": qc_metrics(result, acq.affine),
        "b0_tesla": float(acq.b0_tesla),
        "echo_times_s": acq.echo_times_s.tolist(),
        "manufacturer": acq.manufacturer,
        "series_description": acq.series_description,
        "timings_s": {**result.timings_s,
                      **{k: round(v, 3) for k, v in output_timings.items()}},
        "info": result.info,
        "ChiReference": result.info.get("chi_reference"),
        "figures": figures,
        "outputs": sorted(p.name for p in folder.iterdir() if p.is_file()),
    }
    record.update(extra or {})
    write_provenance(folder, command=command, config=result.config, inputs=inputs, extra=record)
    if report:
        from qsmkit.report.html import write_report

        stage("report")
        write_report(folder)
    return result

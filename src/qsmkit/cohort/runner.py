"""Run the QSM pipeline over a BIDS dataset on dask.distributed.

One task per multi-echo GRE acquisition. A task never raises for a bad subject: it returns
``status: failed`` with the message, so one broken subject cannot stop the others. A worker
that dies mid-task is replaced and its task rescheduled by the Dask scheduler. Completed
subjects (same configuration hash and input checksums, see
:mod:`qsmkit.cohort.derivatives`) are skipped on reruns; outputs are staged and moved into
place with ``qsmkit.json`` last, so a killed run never looks complete.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import traceback
from pathlib import Path

import numpy as np

from qsmkit.cohort import derivatives as deriv
from qsmkit.errors import InputError
from qsmkit.io.output import check_outside_inputs

log = logging.getLogger(__name__)

SUBJECT_MEMORY_GB = 4.0  # peak of the default pipeline on a 1 mm whole-head grid (see docs)


@dataclasses.dataclass
class SubjectTask:
    ref: object
    subject: str
    session: str | None
    acq: str | None
    run: str | None
    output_root: str
    config: dict
    labels_path: str | None = None
    lut_path: str | None = None
    phase_unit: str = "auto"

    @property
    def prefix(self) -> str:
        return deriv.entity_prefix(self.subject, self.session, self.acq, self.run)

    @property
    def label(self) -> str:
        return self.prefix


@dataclasses.dataclass
class CohortSummary:
    results: list[dict]
    output: Path
    dashboard: str | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def table(self) -> str:
        width = max([len(r["label"]) for r in self.results] + [7])
        lines = [f"{'subject':<{width}}  status   seconds  message"]
        for r in sorted(self.results, key=lambda r: r["label"]):
            message = r.get("error", "").splitlines()[0] if r.get("error") else ""
            lines.append(f"{r['label']:<{width}}  {r['status']:<7}  {r.get('seconds', 0):7.1f}  "
                         f"{message[:100]}")
        c = self.counts()
        lines.append(f"done {c['done']}, skipped {c['skipped']}, failed {c['failed']}")
        return "\n".join(lines)


def _input_files(ref) -> list[Path]:
    files = []
    for attr in ("mag_files", "phase_files", "sidecars", "magnitude_files", "echo_files"):
        value = getattr(ref, attr, None) or []
        files += [Path(p) for p in value]
    return sorted({p.resolve() for p in files if Path(p).exists()})


def _checksums(paths) -> dict:
    from qsmkit.io.provenance import sha256_file

    return {str(p): sha256_file(p) for p in paths}


def find_labels(dataset: Path, subject: str, session=None, exclude: Path | None = None):
    """A segmentation (``*_dseg.nii.gz`` or ``*labels.nii.gz``) for a subject, and its LUT."""
    rel = Path(f"sub-{subject}") / (f"ses-{session}" if session else "") / "anat"
    candidates = [dataset / rel]
    deriv_root = dataset / "derivatives"
    if deriv_root.is_dir():
        candidates += [d / rel for d in sorted(deriv_root.iterdir())
                       if d.is_dir() and (exclude is None or d.resolve() != exclude.resolve())]
    for folder in candidates:
        if not folder.is_dir():
            continue
        hits = sorted(folder.glob("*_dseg.nii.gz")) + sorted(folder.glob("*labels.nii.gz"))
        for hit in hits:
            stem = hit.name[: -len(".nii.gz")]
            for lut in (hit.with_name(stem + ".tsv"), folder.parent.parent / "dseg.tsv",
                        hit.with_name("labels.tsv")):
                if lut.exists():
                    return hit, lut
            return hit, None
    return None, None


def _qc_row(task: SubjectTask, result) -> dict:
    chi = result.chi_ppm[result.local_mask]
    local = result.local_field_hz[result.local_mask]
    voxel_ml = float(np.prod(result.info["voxel_size_mm"])) / 1000
    row = {
        "subject": task.subject, "session": task.session or "", "acq": task.acq or "",
        "run": task.run or "",
        "mask_ml": round(float(result.mask.sum()) * voxel_ml, 2),
        "chi_mask_ml": round(float(result.local_mask.sum()) * voxel_ml, 2),
        "chi_median_ppm": float(np.median(chi)),
        "chi_sd_ppm": float(chi.std()),
        "chi_p1_ppm": float(np.percentile(chi, 1)),
        "chi_p99_ppm": float(np.percentile(chi, 99)),
        "local_field_sd_hz": float(local.std()),
        "fit_residual_median": float(np.median(result.fit_residual[result.mask]))
        if result.fit_residual is not None else float("nan"),
        "seconds": round(sum(result.timings_s.values()), 2),
    }
    return row


def _write_bids_maps(result, affine, anat: Path, prefix: str, config: dict, ref) -> None:
    """The BIDS derivatives of one acquisition (:data:`deriv.BIDS_MAPS`) with their sidecars.

    ``anat`` is ``[ses-Y/]anat`` inside the subject's staging folder, ``ref`` the scan found by
    :func:`qsmkit.io.bids.find_megre` (its images are the maps' ``Sources``).
    """
    from qsmkit.io.bids import bids_uri
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.sidecar import write_sidecar

    with np.errstate(divide="ignore"):
        t2star = np.where(result.r2star_per_s > 0, 1.0 / result.r2star_per_s, 0).astype(np.float32)
    maps = {"Chimap": result.chi_ppm, "R2starmap": result.r2star_per_s, "T2starmap": t2star,
            "mask": result.local_mask, "desc-brain_mask": result.mask}
    images = [*ref.magnitude_files, *ref.phase_files]
    sidecars = deriv.bids_sidecars(
        config, sources=[bids_uri(p, ref.root, "raw") for p in images],
        grid=bids_uri(ref.magnitude_files[0], ref.root, "raw"),
        r2star_uri=f"bids::{_anat_rel(prefix)}/{prefix}_R2starmap.nii.gz",
        chi_reference=result.info.get("chi_reference"))
    anat.mkdir(parents=True, exist_ok=True)
    for suffix, data in maps.items():
        save_nifti(anat / f"{prefix}_{suffix}.nii.gz", data, affine)
        write_sidecar(anat / f"{prefix}_{suffix}.json", sidecars[suffix])


def _anat_rel(prefix: str) -> str:
    """``sub-X[/ses-Y]/anat``, the derivative folder of the scan named ``prefix``."""
    entities = dict(part.split("-", 1) for part in prefix.split("_"))
    folder = deriv.subject_dirs(Path(), entities["sub"], entities.get("ses")) / "anat"
    return folder.as_posix()


def process_subject(task: SubjectTask) -> dict:
    """Reconstruct one acquisition into the derivatives; never raises for subject errors."""
    from qsmkit.io.bids import read_megre
    from qsmkit.io.output import staged_output
    from qsmkit.pipeline import QSMConfig
    from qsmkit.workflows import reconstruct_and_save

    start = time.perf_counter()
    out = {"label": task.label, "subject": task.subject, "session": task.session or "",
           "acq": task.acq or "", "run": task.run or "", "status": "failed"}
    try:
        root = Path(task.output_root)
        subject_dir = deriv.subject_dirs(root, task.subject, task.session)
        run_rel = Path("qsmkit") / task.prefix
        inputs = _input_files(task.ref)
        checksums = _checksums(inputs)
        # A forced phase unit changes the result: it is part of what a resumed run compares.
        cfg_hash = deriv.config_hash(task.config if task.phase_unit == "auto"
                                     else {**task.config, "phase_unit": task.phase_unit})
        if deriv.is_complete(subject_dir / run_rel, subject_dir / "anat", task.prefix, cfg_hash,
                             checksums):
            out.update(status="skipped", seconds=0.0)
            out.update(_collect_previous(subject_dir / run_rel, task))
            return out
        acq = read_megre(task.ref, phase_unit=task.phase_unit)
        config = QSMConfig(**task.config)
        with staged_output(subject_dir, force=True) as stage:
            run_dir = stage / run_rel
            run_dir.mkdir(parents=True)
            result = reconstruct_and_save(
                acq, config, run_dir, inputs=inputs, command=f"qsmkit bids ({task.label})",
                report=False,
                extra={"status": "complete", "config_hash": cfg_hash, "subject": task.label},
            )
            _write_bids_maps(result, acq.affine, stage / "anat", task.prefix, task.config,
                             task.ref)
            qc = _qc_row(task, result)
            roi_rows = []
            if task.labels_path:
                roi_rows = _regional_iron(result, task, run_dir)
            from qsmkit.io.sidecar import write_sidecar

            write_sidecar(run_dir / "qc.json", qc)
            from qsmkit.report.html import write_report

            write_report(run_dir)
        out.update(status="done", qc=qc, roi=roi_rows,
                   warnings=[w.as_dict() for w in result.warnings])
    except Exception as err:  # isolate every subject: report, never propagate
        message = str(err) if isinstance(err, InputError) else (
            f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
        out.update(status="failed", error=message)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _regional_iron(result, task: SubjectTask, run_dir: Path) -> list[dict]:
    from qsmkit.analysis.roi import read_lut, region_table, write_table
    from qsmkit.io.nifti import load_nifti

    labels, _, _ = load_nifti(task.labels_path, dtype=np.float32)
    if labels.shape != result.chi_ppm.shape:
        raise InputError(f"labels {task.labels_path} shape {labels.shape} differs from the GRE "
                         f"grid {result.chi_ppm.shape}; resample them to the GRE space")
    lut = read_lut(task.lut_path) if task.lut_path else None
    rows = region_table(result.chi_ppm, np.rint(labels).astype(int), result.info["voxel_size_mm"],
                        lut=lut, mask=result.local_mask, r2star_per_s=result.r2star_per_s,
                        chi_reference=result.info.get("chi_reference"))
    write_table(rows, run_dir / "roi.tsv")
    return [{"subject": task.subject, "session": task.session or "", **r} for r in rows]


def _collect_previous(run_dir: Path, task: SubjectTask) -> dict:
    """QC and ROI rows of a completed subject, so group tables stay whole on reruns."""
    import csv
    import json

    found = {}
    if (run_dir / "qc.json").exists():
        found["qc"] = json.loads((run_dir / "qc.json").read_text())
    if (run_dir / "qsmkit.json").exists():
        found["warnings"] = json.loads((run_dir / "qsmkit.json").read_text()).get("warnings", [])
    if (run_dir / "roi.tsv").exists():
        with open(run_dir / "roi.tsv", newline="") as handle:
            found["roi"] = [{"subject": task.subject, "session": task.session or "", **row}
                            for row in csv.DictReader(handle, delimiter="\t")]
    return found


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _client(workers: int | None, scheduler: str | None, memory_limit: str | None):
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    total_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    cores = os.cpu_count() or 1
    if workers is None:
        workers = max(1, min(cores, int(total_gb * 0.8 // SUBJECT_MEMORY_GB)))
    memory_limit = memory_limit or f"{max(total_gb * 0.9 / workers, 1.0):.1f}GB"
    threads = max(1, cores // workers)
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
        dashboard_address=":0" if _has_bokeh() else None, silence_logs=logging.ERROR,
        env={"QSMKIT_FFT_WORKERS": str(threads), "OMP_NUM_THREADS": str(threads)},
    )
    return Client(cluster), cluster


def plan_tasks(dataset: Path, output: Path, *, participant_label=None, session=None,
               config=None, phase_unit: str = "auto") -> list[SubjectTask]:
    from qsmkit.io.bids import find_megre

    refs = find_megre(dataset, participant_label=participant_label, session=session)
    if not refs:
        raise InputError(f"no multi-echo GRE (*_echo-N_part-mag/phase_MEGRE or _GRE) found in "
                         f"{dataset}" + (f" for participant(s) {participant_label}"
                                         if participant_label else ""))
    tasks = []
    for ref in refs:
        labels, lut = find_labels(dataset, ref.subject, getattr(ref, "session", None), output)
        tasks.append(SubjectTask(
            ref=ref, subject=ref.subject, session=getattr(ref, "session", None),
            acq=getattr(ref, "acq", None), run=getattr(ref, "run", None),
            output_root=str(output), config=config,
            labels_path=str(labels) if labels else None, lut_path=str(lut) if lut else None,
            phase_unit=phase_unit,
        ))
    return tasks


def run_cohort(
    dataset,
    output=None,
    *,
    participant_label=None,
    session=None,
    preset: str = "default",
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: str | None = None,
    progress: bool = True,
    phase_unit: str = "auto",
) -> CohortSummary:
    """Process every multi-echo GRE acquisition of a BIDS dataset; returns the summary.

    ``phase_unit`` (``--phase-unit``) forces the unit of the stored phase for every scan
    (see :func:`qsmkit.acquisition.phase_to_radians`).
    """
    from distributed import as_completed
    from tqdm import tqdm

    from qsmkit.cohort.group import write_group_outputs
    from qsmkit.pipeline import QSMConfig

    dataset = Path(dataset)
    if not dataset.is_dir():
        raise InputError(f"BIDS dataset {dataset} is not a folder")
    output = Path(output) if output else dataset / "derivatives" / "qsmkit"
    if output.exists() and not output.is_dir():
        raise InputError(f"the output {output} exists and is not a folder")
    check_outside_inputs(output, [dataset], allowed_inside=("derivatives",))
    config = dataclasses.asdict(QSMConfig.from_preset(preset))
    tasks = plan_tasks(dataset, output, participant_label=participant_label, session=session,
                       config=config, phase_unit=phase_unit)
    output.mkdir(parents=True, exist_ok=True)
    deriv.dataset_description(output, dataset)
    from qsmkit.io.bids import write_bidsignore

    write_bidsignore(output, deriv.BIDSIGNORE)
    (output / "README.md").write_text(deriv.README)
    client, cluster = _client(workers, scheduler, memory_limit)
    dashboard = None
    if scheduler or _has_bokeh():
        dashboard = getattr(client, "dashboard_link", None)
    if dashboard and progress:
        print(f"Dask dashboard: {dashboard}", flush=True)
    results = []
    try:
        futures = client.map(process_subject, tasks, pure=False, retries=1,
                             key=[f"qsmkit-{t.label}-{time.time_ns()}" for t in tasks])
        bar = tqdm(total=len(futures), desc="subjects", unit="subj", disable=not progress)
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except Exception as err:  # the task itself failed repeatedly (e.g. workers killed)
                index = futures.index(future)
                results.append({"label": tasks[index].label, "subject": tasks[index].subject,
                                "status": "failed", "error": f"{type(err).__name__}: {err}"})
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    summary = CohortSummary(results=results, output=output, dashboard=dashboard)
    write_group_outputs(summary, dataset, output)
    return summary

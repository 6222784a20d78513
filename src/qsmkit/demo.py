"""The demo: head phantom -> QSM pipeline -> scores against the truth -> analyses -> report.

Also the quickest end-to-end check of an installation: every stage and every brain analysis
runs on data whose answer is known.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from qsmkit.io.nifti import save_nifti
from qsmkit.io.output import check_not_overwriting, staged_output

ECHO_TIMES_S = (0.004, 0.008, 0.012, 0.016, 0.020)
DGM_KEYS = ("caudate", "putamen", "pallidus", "thalamus", "nigra", "red_nucleus", "dentate")
DEMO_OUTPUTS = ("chi.nii.gz", "report.html", "metrics.json", "qsmkit.json", "input")


def _write_truth(ph, sim, folder: Path) -> dict[str, Path]:
    """The phantom's truth beside the inputs: chi, labels (+ LUT), MS lesion mask, records."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "chi": save_nifti(folder / "chi.nii.gz", ph.chi_ppm, sim.affine, description="true chi",
                          unit="ppm"),
        "labels": save_nifti(folder / "labels.nii.gz", ph.labels.astype(np.int16), sim.affine),
        "brain_mask": save_nifti(folder / "brain_mask.nii.gz", ph.brain_mask, sim.affine),
    }
    with open(folder / "labels.tsv", "w") as handle:
        handle.write("index\tname\tchi_ppm\n")
        for index, name in sorted(ph.label_names.items()):
            handle.write(f"{index}\t{name}\t{ph.label_chi_ppm.get(index, 0.0):.4f}\n")
    paths["lut"] = folder / "labels.tsv"
    # The MS lesions as a clinician's FLAIR lesion mask would give them (core and rim).
    ms_ids = [les for les in ph.lesions if les["kind"].startswith("ms_")]
    ms_mask = np.zeros(ph.labels.shape, np.int16)
    for number, lesion in enumerate(ms_ids, start=1):
        ms_mask[ph.labels == lesion["label"]] = number
        if lesion.get("rim_label") is not None:
            ms_mask[ph.labels == lesion["rim_label"]] = number
    paths["ms_lesions"] = save_nifti(folder / "ms_lesions.nii.gz", ms_mask, sim.affine)
    record = {"lesions": ph.lesions, "veins": ph.veins, "b0_dir": list(map(float, sim.b0_dir)),
              "voxel_size": list(sim.voxel_size), "b0_tesla": sim.b0_tesla}
    from qsmkit.io.provenance import to_json

    (folder / "phantom.json").write_text(to_json(record) + "\n")
    paths["phantom"] = folder / "phantom.json"
    return paths


def score_against_phantom(chi_ppm, ph, region, voxel_size) -> dict:
    """Challenge metrics of a chi map against the phantom truth within ``region``.

    Both maps are demeaned in the region first: the reconstruction's reference (e.g. the
    brain mean) and the truth's (water) differ by a constant that XSIM and SSIM would
    otherwise penalise (NRMSE and HFEN are unaffected).
    """
    from qsmkit import metrics

    region = np.asarray(region, bool) & ph.brain_mask
    dgm = [k for k, n in ph.label_names.items() if any(key in n for key in DGM_KEYS)]
    estimate = np.where(region, chi_ppm - chi_ppm[region].mean(), 0)
    reference = np.where(region, ph.chi_ppm - ph.chi_ppm[region].mean(), 0)
    calc = np.isin(ph.labels, [les["label"] for les in ph.lesions
                               if les["kind"] == "calcification"])
    scores = metrics.all_metrics(estimate, reference, region, voxel_size=voxel_size,
                                 labels=ph.labels, dgm_labels=dgm,
                                 calc_mask=calc if calc.any() else None)
    scores["brain_coverage_percent"] = 100.0 * float(region.sum()) / float(ph.brain_mask.sum())
    return scores


def _dgm_figure(result, ph, folder: Path) -> None:
    from qsmkit.report.figures import scatter_truth

    names, est, truth = [], [], []
    region = result.local_mask
    for index, name in sorted(ph.label_names.items()):
        if any(key in name for key in DGM_KEYS):
            voxels = (ph.labels == index) & region
            if voxels.sum() >= 3:
                names.append(name.replace("_left", " L").replace("_right", " R"))
                est.append(float(result.chi_ppm[voxels].mean()))
                truth.append(float(ph.chi_ppm[voxels].mean()))
    if len(names) >= 2:
        # Compare shapes, not offsets: reference both to their means over the nuclei.
        est_arr, truth_arr = np.asarray(est), np.asarray(truth)
        shift = float(np.mean(truth_arr) - np.mean(est_arr))
        scatter_truth(est_arr + shift, truth_arr, names, folder / "dgm_scatter.png",
                      title="Deep grey matter ROI means (offset removed)")


def _metrics_table(scores: dict, path: Path) -> None:
    keys = ("nrmse", "rmse", "hfen", "ssim", "xsim", "dgm_slope", "calcification_moment_error",
            "brain_coverage_percent")
    with open(path, "w") as handle:
        handle.write("metric\tvalue\n")
        for key in keys:
            if isinstance(scores.get(key), (int, float)):
                handle.write(f"{key}\t{scores[key]:.4g}\n")


def run_demo(outdir, *, shape=(128, 128, 128), voxel_size=(1.5, 1.5, 1.5), b0_tesla=3.0,
             b0_dir=(0.0, 0.0, 1.0), snr=100.0, seed=0, preset="default", force=False,
             command="qsmkit demo") -> dict:
    """Run the whole demo into ``outdir``; returns the summary printed by ``qsmkit demo``."""
    from qsmkit.cli.main import main as cli
    from qsmkit.io.load import save_acquisition
    from qsmkit.phantom import head_phantom, simulate_gre
    from qsmkit.pipeline import QSMConfig
    from qsmkit.report.figures import orthogonal_slices
    from qsmkit.report.html import write_report
    from qsmkit.workflows import reconstruct_and_save

    outdir = Path(outdir)
    check_not_overwriting(outdir, DEMO_OUTPUTS, force)
    ph = head_phantom(shape=shape, voxel_size=voxel_size, seed=seed)
    sim = simulate_gre(ph, echo_times_s=ECHO_TIMES_S, b0_tesla=b0_tesla, b0_dir=b0_dir, snr=snr,
                       seed=seed)
    with staged_output(outdir, force=force) as stage:
        save_acquisition(sim.acquisition, stage / "input")
        truth = _write_truth(ph, sim, stage / "truth")
        result = reconstruct_and_save(sim.acquisition, QSMConfig.from_preset(preset), stage,
                                      command=command, report=False)
        scores = score_against_phantom(result.chi_ppm, ph, result.local_mask, sim.voxel_size)
        (stage / "metrics.json").write_text(json.dumps(scores, indent=2, default=float) + "\n")
        _metrics_table(scores, stage / "metrics.tsv")
        error = np.where(result.local_mask & ph.brain_mask, result.chi_ppm - ph.chi_ppm, 0)
        error -= np.where(result.local_mask & ph.brain_mask, error, 0).sum() / max(
            (result.local_mask & ph.brain_mask).sum(), 1)
        orthogonal_slices(np.where(result.local_mask & ph.brain_mask, error, 0), sim.affine,
                          stage / "chi_error.png", title="χ error (reconstruction − truth, "
                          "mean removed)", unit="ppm", signed=True,
                          mask=result.local_mask & ph.brain_mask)
        _dgm_figure(result, ph, stage)
        chi, mask = str(stage / "chi.nii.gz"), str(stage / "mask.nii.gz")
        quiet = ["--force"]
        analyses = {
            "roi": ["roi", chi, str(truth["labels"]), "--lut", str(truth["lut"]),
                    "--reference", "csf", "--mask", mask, "-o", str(stage / "roi.tsv")],
            "lesions": ["lesions", chi, mask, "--truth", str(truth["phantom"]),
                        "-o", str(stage / "lesions.tsv")],
            "rims": ["rims", chi, str(truth["ms_lesions"]), "--mask", mask,
                     "-o", str(stage / "rims.tsv")],
            "oximetry": ["oximetry", chi, mask, "--labels", str(truth["labels"]),
                         "--lut", str(truth["lut"]), "-o", str(stage / "veins.tsv")],
        }
        status = {}
        # Each analysis prints its table; keep them in analyses.log, not in the demo summary.
        with open(stage / "analyses.log", "w") as log, contextlib.redirect_stdout(log):
            for name, argv in analyses.items():
                print(f"$ qsmkit {' '.join(argv[:1])} ...", flush=True)
                status[name] = cli(argv + quiet)
        summary = {
            "NRMSE (%) vs truth": f"{scores['nrmse']:.1f}",
            "HFEN (%)": f"{scores['hfen']:.1f}",
            "XSIM": f"{scores['xsim']:.3f}",
            "deep grey matter slope": f"{scores.get('dgm_slope', float('nan')):.2f}",
            "brain covered by chi mask (%)": f"{scores['brain_coverage_percent']:.1f}",
            "reconstruction time (s)": f"{sum(result.timings_s.values()):.1f}",
        }
        summary.update(_analysis_summary(stage))
        failed = [n for n, code in status.items() if code != 0]
        if failed:
            summary["analyses failed"] = ", ".join(failed)
        record_path = stage / "qsmkit.json"
        record = json.loads(record_path.read_text())
        record.update(title="qsmkit demo: numerical head phantom", summary=summary,
                      scores=scores, phantom={"shape": list(shape), "voxel_size": list(voxel_size),
                                              "b0_dir": list(map(float, sim.b0_dir)), "snr": snr,
                                              "seed": seed})
        record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        write_report(stage)
    return summary


def _count(path: Path, column: str) -> dict[str, int]:
    import csv

    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get(column, "")] = counts.get(row.get(column, ""), 0) + 1
    return counts


def _analysis_summary(folder: Path) -> dict[str, str]:
    out = {}
    lesion_counts = _count(folder / "lesions.tsv", "class")
    if lesion_counts:
        out["focal lesions"] = ", ".join(f"{k} {v}" for k, v in sorted(lesion_counts.items()))
    rim_counts = _count(folder / "rims.tsv", "class")
    if rim_counts:
        out["MS lesions"] = ", ".join(f"{k} {v}" for k, v in sorted(rim_counts.items()))
    veins = folder / "veins.tsv"
    if veins.exists():
        import csv

        with open(veins, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        yv = [float(r["yv"]) for r in rows if r.get("yv") not in (None, "", "n/a")]
        if yv:
            out["veins: segments, median Yv"] = f"{len(rows)}, {np.median(yv):.2f}"
    return out

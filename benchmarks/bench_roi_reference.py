"""Regional chi and R2* of `qsmkit run` + `qsmkit roi` on the independent head phantom, and
whether the reference of chi changes what the analyses report (issue 15).

For each case the phantom of ``tests/independent_phantom.py`` (its own kernel, grid and
constants) is reconstructed with ``qsmkit run`` twice, ``--reference brain`` (the default) and
``--reference csf``; ``qsmkit roi`` then measures the deep grey nuclei:

* relative to the CSF label (``--reference csf``): the error of each nucleus against the true
  map over the same voxels, referenced the same way (truth of the nucleus minus truth of the
  CSF label; the truth is the phantom's chi on the acquisition grid, so partial volume at the
  edges of the small nuclei is in the truth too), in ppb;
* with ``--reference none``, where the CSF level comes from the map's ``ChiReference`` (the
  ventricular CSF found at run time from R2*): the same error, and the difference between the
  brain- and CSF-referenced runs (it should be ~0);
* R2* per nucleus against the truth (1/T2* of the phantom's tissue table).

Run: ``python benchmarks/bench_roi_reference.py`` (about 2-4 minutes on two cores).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from independent_phantom import TISSUES, make_independent_phantom, write_nifti_echoes  # noqa: E402
from qsmkit.cli.main import main  # noqa: E402
from qsmkit.io.nifti import save_nifti  # noqa: E402

NUCLEI = ("caudate", "putamen", "pallidum", "thalamus")
CASES = {
    "axial 2x2x2 mm": dict(shape=(80, 96, 64), voxel_size_mm=(2.0, 2.0, 2.0), tilt_deg=0.0),
    "oblique 15 deg, 2x2x2.5 mm": dict(shape=(80, 96, 64), voxel_size_mm=(2.0, 2.0, 2.5),
                                       tilt_deg=15.0),
}


def _roi(folder: Path, labels: Path, reference: str, mask: Path) -> dict:
    out = folder / f"roi_{reference}.tsv"
    assert main(["roi", str(folder / "chi.nii.gz"), str(labels), "--reference", reference,
                 "--mask", str(mask), "-o", str(out), "--force"]) == 0
    return {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}


def measure(name: str, options: dict, work: Path) -> dict:
    ph = make_independent_phantom(**options, seed=4)
    mags, phases = write_nifti_echoes(ph, work / "in")
    label_names = {1: "CSF", **{k + 2: n for k, n in enumerate(NUCLEI)}}
    label_image = np.zeros(ph.chi_ppm.shape, np.int16)
    label_image[ph.labels["csf"] & ph.brain_mask] = 1
    for k, nucleus in enumerate(NUCLEI):
        label_image[ph.labels[nucleus]] = k + 2
    save_nifti(work / "labels.nii.gz", label_image, ph.affine)
    (work / "labels.tsv").write_text("index\tname\n" + "".join(
        f"{k}\t{v}\n" for k, v in label_names.items()))
    runs = {}
    for reference in ("brain", "csf"):
        out = work / f"run_{reference}"
        assert main(["run", "--mag", *map(str, mags), "--phase", *map(str, phases), "-o",
                     str(out), "--reference", reference, "--no-report", "--force"]) == 0
        record = json.loads((out / "chi.json").read_text())["ChiReference"]
        runs[reference] = {"record": record,
                           "csf_label": _roi(out, work / "labels.nii.gz", "csf",
                                             out / "mask.nii.gz"),
                           "own": _roi(out, work / "labels.nii.gz", "none",
                                       out / "mask.nii.gz")}
    from qsmkit.io.nifti import load_nifti

    valid = load_nifti(work / "run_brain" / "mask.nii.gz")[0] > 0
    truth_csf = float(ph.chi_ppm[ph.labels["csf"] & ph.brain_mask & valid].mean()) * 1000
    rows = []
    for nucleus in NUCLEI:
        nominal = TISSUES[nucleus][0] * 1000.0
        truth = float(ph.chi_ppm[ph.labels[nucleus] & valid].mean()) * 1000
        r2_truth = 1.0 / TISSUES[nucleus][3] * 3.0 / ph.b0_tesla
        b, c = runs["brain"], runs["csf"]
        own_b = b["own"][nucleus]["mean_ppm"] * 1000 - b["record"]["CSFPpm"] * 1000
        own_c = c["own"][nucleus]["mean_ppm"] * 1000
        rows.append({
            "nucleus": nucleus, "nominal_ppb": nominal, "truth_ppb": truth,
            "truth_csf_label_ppb": truth_csf,
            "error_csf_label_ppb": (b["csf_label"][nucleus]["mean_ppm"] * 1000
                                    - (truth - truth_csf)),
            "error_record_brain_run_ppb": own_b - truth,
            "error_record_csf_run_ppb": own_c - truth,
            "brain_minus_csf_run_ppb": own_b - own_c,
            "r2star_per_s": b["csf_label"][nucleus]["r2star_mean_per_s"],
            "r2star_truth_per_s": r2_truth,
        })
    return {"case": name, "records": {k: v["record"] for k, v in runs.items()}, "rows": rows}


def main_bench() -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, options) in enumerate(CASES.items()):
            work = Path(tmp) / f"case{k}"
            work.mkdir()
            results.append(measure(name, options, work))
    for res in results:
        rec = res["records"]["brain"]
        print(f"\n{res['case']}: brain-referenced run, CSF level {rec['CSFPpm']:+.4f} ppm "
              f"({rec['CSFCriteria']})")
        print(f"true chi of the CSF label over the valid mask: "
              f"{res['rows'][0]['truth_csf_label_ppb']:+.1f} ppb (partial volume at its edges)")
        print(f"{'nucleus':10s} {'nominal':>7s} {'truth':>6s} {'err CSF label':>14s} "
              f"{'err record(b)':>14s} {'err record(c)':>14s} {'b - c':>7s} {'R2*':>6s} "
              f"{'R2* truth':>9s}")
        for r in res["rows"]:
            print(f"{r['nucleus']:10s} {r['nominal_ppb']:7.0f} {r['truth_ppb']:6.1f} "
                  f"{r['error_csf_label_ppb']:+14.1f} "
                  f"{r['error_record_brain_run_ppb']:+14.1f} {r['error_record_csf_run_ppb']:+14.1f}"
                  f" {r['brain_minus_csf_run_ppb']:+7.1f} {r['r2star_per_s']:6.1f} "
                  f"{r['r2star_truth_per_s']:9.1f}")


if __name__ == "__main__":
    main_bench()

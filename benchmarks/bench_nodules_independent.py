"""``qsmkit liver --nodules`` on an independently built cirrhotic liver, at 1.5 T and 3 T.

    python benchmarks/bench_nodules_independent.py [--quick] [--auto-liver] [--seed N]
        [--field 1.5 3] [--markdown table.md] [--keep DIR]

The phantom (tests/independent_cirrhosis.py, on the abdomen of tests/independent_abdomen.py)
shares no kernel, grid, fat spectrum or constant with qsmkit: a siderotic cirrhotic liver (LIC
5 mg/g dw, ~6 mm regenerative nodules, iron-poor septa) with eight 10-20 mm nodules (four
siderotic, LIC 10-15; four iron-sparing, LIC 0.8-1.2, two with fat), deep, at the liver
surface and beside vessels, plus distractors: four intrahepatic veins of 6-12 mm calibre (one
along B0 through the slab) and a 14 mm cyst. Multi-echo GRE signal (6 echoes, 1.2-7.2 ms, SNR
60) on a 128 x 128 x 10 slab of 2 x 2 x 4 mm is written as NIfTI with BIDS sidecars and the
liver outline as labels; ``qsmkit liver --labels liver --nodules`` runs in its own process
(``--auto-liver``: without --labels, on the automatically found liver). ``--quick``: a
128 x 128 x 8 slab with four nodules.

A finding matches a structure when its centroid lies in the structure's truth mask grown by
one voxel. Per nodule: found, class, diameter (sphere of equal volume) and largest in-plane
dimension, chi, R2*, PDFF and contrast (measured by qsmkit over the finding) against truth
(the phantom's maps over the nodule). Sensitivity: nodules found and classed right /
nodules; specificity: distractors (veins, cyst) without a finding / distractors; false
findings elsewhere are counted (on the liver surface or inside). Intervals: 95 % Wilson
(qsmkit.analysis.stats.wilson_interval).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from independent_abdomen import write_nifti  # noqa: E402
from independent_cirrhosis import (  # noqa: E402
    DEFAULT_NODULES,
    make_cirrhosis_phantom,
    structure_names,
)
from qsmkit.analysis.stats import wilson_interval  # noqa: E402

QUICK_NODULES = tuple(n for n in DEFAULT_NODULES if n.name in ("S1", "S4", "N1", "N4"))


def run_liver(folder: Path, phantom, *, auto_liver: bool = False) -> tuple[dict, float, str]:
    """Write the phantom, run ``qsmkit liver --nodules``; (outputs, seconds, error line)."""
    paths = write_nifti(phantom, folder / "data")
    out = folder / "out"
    te = ",".join(f"{t:.6f}" for t in phantom.echo_times_s)
    cmd = [sys.executable, "-m", "qsmkit", "liver", "--mag", *map(str, paths["mag"]),
           "--phase", *map(str, paths["phase"]), "--nodules", "--echo-times", te,
           "--b0", str(phantom.b0_tesla), "--phase-unit", "rad", "-o", str(out), "--force"]
    if not auto_liver:
        cmd += ["--labels", str(paths["labels"])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {}, seconds, (proc.stderr or proc.stdout).strip().splitlines()[-1]
    doc = json.loads((out / "nodules.json").read_text())
    with open(out / "nodules.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    outputs = {
        "nodules": doc["nodules"], "rejected": doc["rejected_candidates"], "rows": rows,
        "labels": np.asarray(nib.load(out / "nodules.nii.gz").dataobj).astype(int),
        "chi": np.asarray(nib.load(out / "chi.nii.gz").dataobj, np.float32),
        "r2star": np.asarray(nib.load(out / "r2star.nii.gz").dataobj, np.float32),
        "pdff": np.asarray(nib.load(out / "pdff.nii.gz").dataobj, np.float32),
        "thumbnails": sorted(p.name for p in out.glob("nodule_*.png")),
    }
    return outputs, seconds, ""


def match_findings(phantom, outputs) -> tuple[dict, list]:
    """Structure label -> finding (dict) and the findings that match no structure."""
    grown = {k: ndimage.binary_dilation(phantom.structures == k,
                                        np.ones((3, 3, 1), bool))
             for k in structure_names(phantom)}
    matched, unmatched = {}, []
    for nod in outputs.get("nodules", []):
        c = tuple(int(v) for v in nod["centroid_voxel"])
        hits = [k for k, m in grown.items() if m[c]]
        if not hits:  # centroid outside: take the structure the finding overlaps most
            comp = outputs["labels"] == nod["id"]
            overlap = {k: int((m & comp).sum()) for k, m in grown.items()}
            best = max(overlap, key=overlap.get) if overlap else None
            hits = [best] if best is not None and overlap[best] > 0.5 * comp.sum() else []
        if hits:
            matched.setdefault(hits[0], nod)
        else:
            unmatched.append(nod)
    return matched, unmatched


def nodule_table(phantom, matched) -> list[dict]:
    table = []
    for k, (truth, nod) in enumerate(zip(phantom.nodule_truth, phantom.nodules, strict=True),
                                     start=1):
        f = matched.get(k)
        row = {**truth, "found": f is not None,
               "class": f["class"] if f else "", "id": f["id"] if f else "",
               "delta_chi": truth["chi_ppm"] - truth["background_chi_ppm"],
               "ratio": truth["r2star_per_s"] / truth["background_r2star_per_s"]}
        for key in ("diameter_mm", "largest_dimension_mm", "chi_ppm", "r2star_per_s",
                    "pdff_percent", "delta_chi_ppm", "r2star_ratio", "z_chi", "z_r2star"):
            row["m_" + key] = float(f[key]) if f else float("nan")
        row["right"] = f is not None and f["class"] == nod.kind
        table.append(row)
    return table


def distractor_table(phantom, matched, unmatched, outputs) -> tuple[list, dict]:
    names = structure_names(phantom)
    rows = []
    for k, (name, kind) in names.items():
        if kind in ("vessel", "cyst"):
            f = matched.get(k)
            rows.append({"name": name, "kind": kind, "called": f is not None,
                         "class": f["class"] if f else ""})
    liver = phantom.liver_mask
    depth = ndimage.distance_transform_edt(np.pad(liver, 1), sampling=phantom.voxel_mm
                                           )[1:-1, 1:-1, 1:-1]
    edge = sum(1 for n in unmatched if depth[tuple(n["centroid_voxel"])] <= 6.0)
    return rows, {"edge": edge, "inside": len(unmatched) - edge}


def fmt(v, spec=".2f"):
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def markdown(b0, table, distractors, fp, seconds, error, n_thumbs) -> tuple[str, dict]:
    failed = f", FAILED: {error}" if error else ""
    lines = [f"**{b0:g} T** (`qsmkit liver --nodules` {seconds:.0f} s{failed})", "",
             "| nodule | truth class | where | diam mm | found | class | diam meas | largest meas "
             "| chi | "
             "chi meas | Δchi | Δchi meas | R2* | R2* meas | R2* ratio | ratio meas | PDFF | "
             "PDFF meas | z chi / z R2* |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['where']} | {r['diameter_mm']:g} | "
            f"{'yes' if r['found'] else '**no**'} | "
            f"{r['class'] if r['right'] or not r['found'] else '**' + r['class'] + '**'} | "
            f"{fmt(r['m_diameter_mm'], '.1f')} | {fmt(r['m_largest_dimension_mm'], '.1f')} | "
            f"{r['chi_ppm']:.2f} | {fmt(r['m_chi_ppm'])} | "
            f"{r['delta_chi']:+.2f} | {fmt(r['m_delta_chi_ppm'], '+.2f')} | "
            f"{r['r2star_per_s']:.0f} | {fmt(r['m_r2star_per_s'], '.0f')} | {r['ratio']:.2f} | "
            f"{fmt(r['m_r2star_ratio'])} | {r['pdff_percent']:g} | "
            f"{fmt(r['m_pdff_percent'], '.1f')} | "
            f"{fmt(r['m_z_chi'], '+.1f')} / {fmt(r['m_z_r2star'], '+.1f')} |")
    n = len(table)
    found = sum(r["found"] for r in table)
    right = sum(r["right"] for r in table)
    neg = len(distractors)
    clean = sum(not d["called"] for d in distractors)
    se = wilson_interval(right, n)
    sp = wilson_interval(clean, neg)
    called = ", ".join(f"{d['name']} ({d['class']})" for d in distractors if d["called"])
    lines += ["", f"distractors without a finding: {clean}/{neg}"
              + (f" (called: {called})" if called else "")
              + f"; other false findings: {fp['edge']} on the liver surface, {fp['inside']} "
              f"inside; thumbnails {n_thumbs}", "",
              f"sensitivity (found and classed right) {right}/{n} = {right / n:.2f} "
              f"[95 % Wilson {se[0]:.2f}-{se[1]:.2f}] (found {found}/{n}); specificity "
              f"(distractors) {clean}/{neg} = {clean / max(neg, 1):.2f} "
              f"[{sp[0]:.2f}-{sp[1]:.2f}]", ""]
    return "\n".join(lines), {"right": right, "n": n, "clean": clean, "neg": neg,
                              "fp": fp["edge"] + fp["inside"], "found": found}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128 x 128 x 8 slab, four nodules")
    ap.add_argument("--auto-liver", action="store_true", help="no --labels: automatic liver")
    ap.add_argument("--field", type=float, nargs="+", default=[1.5, 3.0], help="B0 (T)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    ap.add_argument("--keep", metavar="DIR", help="keep data and outputs in DIR")
    args = ap.parse_args()
    geom = {"shape": (128, 128, 8 if args.quick else 10), "voxel_mm": (2.0, 2.0, 4.0)}
    if args.quick:
        geom["nodules"] = QUICK_NODULES
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_nodules_"))
    parts, totals = [], []
    for b0 in args.field:
        phantom = make_cirrhosis_phantom(b0_tesla=b0, snr=60.0, seed=args.seed, **geom)
        outputs, seconds, error = run_liver(base / f"{b0:g}T", phantom,
                                            auto_liver=args.auto_liver)
        matched, unmatched = match_findings(phantom, outputs) if outputs else ({}, [])
        table = nodule_table(phantom, matched)
        distractors, fp = distractor_table(phantom, matched, unmatched, outputs)
        text, tot = markdown(b0, table, distractors, fp, seconds, error,
                             len(outputs.get("thumbnails", [])))
        print(text, flush=True)
        parts.append(text)
        totals.append(tot)
    if len(totals) > 1:
        right = sum(t["right"] for t in totals)
        n = sum(t["n"] for t in totals)
        clean = sum(t["clean"] for t in totals)
        neg = sum(t["neg"] for t in totals)
        se, sp = wilson_interval(right, n), wilson_interval(clean, neg)
        line = (f"both fields: sensitivity {right}/{n} [{se[0]:.2f}-{se[1]:.2f}], specificity "
                f"{clean}/{neg} [{sp[0]:.2f}-{sp[1]:.2f}], other false findings "
                f"{sum(t['fp'] for t in totals)}")
        print(line)
        parts.append(line)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``qsmkit liver`` on the independent abdomen phantom of issue 13, at 1.5 T and 3 T.

    python benchmarks/bench_liver_independent.py [--quick] [--markdown table.md] [--keep DIR]

The phantom (tests/independent_abdomen.py) shares no kernel, grid, fat spectrum or constant
with qsmkit: 128 x 128 x 16 voxels of 2 x 2 x 4 mm, 6 echoes at 1.2-7.2 ms, SNR 60, B0 along z,
24 liver patches (LIC 1-35 mg/g dw x PDFF 0-30 %). It is written as NIfTI (one magnitude and
one phase file per echo with BIDS sidecars, patch labels) and ``qsmkit liver --labels`` runs
in its own process with its defaults (phase in radians, echo times and B0 given). One row per
patch: truth against measured PDFF, R2*, chi, LIC by R2* and by QSM, and whether the patch is
present in liver.tsv. ``--quick`` uses a 64 x 64 x 8 slab of
4 x 4 x 8 mm.

Summary lines: PDFF max |error| (points), chi slope and r of fat-free patches (chi differences
against truth, i.e. chi regressed with an intercept), LIC by R2* error (%) where qsmkit says R2*
is in range, chi 3 T / 1.5 T ratio over the patches present at both fields.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from independent_abdomen import make_abdomen_phantom, write_nifti  # noqa: E402


def run_liver(folder: Path, phantom) -> tuple[dict, float, str]:
    paths = write_nifti(phantom, folder / "data")
    out = folder / "out"
    te = ",".join(f"{t:.6f}" for t in phantom.echo_times_s)
    cmd = [sys.executable, "-m", "qsmkit", "liver", "--mag", *map(str, paths["mag"]),
           "--phase", *map(str, paths["phase"]), "--labels", str(paths["labels"]),
           "--echo-times", te,
           "--b0", str(phantom.b0_tesla), "--phase-unit", "rad", "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {}, seconds, (proc.stderr or proc.stdout).strip().splitlines()[-1]
    with open(out / "liver.tsv") as fh:
        rows = {int(r["label"]): r for r in csv.DictReader(fh, delimiter="\t")}
    return rows, seconds, ""


def patch_table(phantom, rows) -> list[dict]:
    table = []
    for p in phantom.patches:
        r = rows.get(p["label"])

        def get(key, r=r):
            return float(r[key]) if r is not None else np.nan

        table.append({
            "label": p["label"], "lic": p["lic_mg_per_g"], "pdff": p["pdff_percent"],
            "r2": p["r2star_per_s"], "chi": p["chi_ppm"], "present": r is not None,
            "n": int(r["n_voxels"]) if r is not None else 0,
            "n_truth": int((phantom.patch_labels == p["label"]).sum()),
            "m_pdff": get("pdff_percent"), "m_r2": get("r2star_per_s"),
            "in_range": (r is not None and r["r2star_in_range"] == "true"),
            "m_chi": get("chi_ppm"), "m_lic_r2": get("lic_r2star"), "m_lic_qsm": get("lic_qsm"),
            "m_pdff_sd": get("pdff_sd_percent") if r is not None and "pdff_sd_percent" in r
            else np.nan,
            "flags": (r.get("flags") or "") if r is not None else "",
        })
    return table


def summary(table) -> dict:
    t = [r for r in table if r["present"]]
    pdff_err = max((abs(r["m_pdff"] - r["pdff"]) for r in t), default=np.nan)
    certain = [r for r in t if "pdff_uncertain" not in r["flags"]]
    pdff_err_certain = max((abs(r["m_pdff"] - r["pdff"]) for r in certain), default=np.nan)
    ff = [r for r in t if r["pdff"] == 0 and np.isfinite(r["m_chi"])]
    slope = r_val = np.nan
    if len(ff) >= 3:
        x = np.array([r["chi"] for r in ff])
        y = np.array([r["m_chi"] for r in ff])
        slope = float(np.polyfit(x, y, 1)[0])
        r_val = float(np.corrcoef(x, y)[0, 1])
    lic_err = [100 * abs(r["m_lic_r2"] - r["lic"]) / r["lic"] for r in t if r["in_range"]]
    lic_err_unflagged = [100 * abs(r["m_lic_r2"] - r["lic"]) / r["lic"] for r in t
                         if r["in_range"] and "lic_r2star_calibration_spread" not in r["flags"]]
    return {"present": len(t), "pdff_max_err": pdff_err,
            "pdff_max_err_unflagged": pdff_err_certain, "n_pdff_unflagged": len(certain),
            "chi_slope_fatfree": slope,
            "chi_r_fatfree": r_val, "lic_r2_max_err_pct": max(lic_err, default=np.nan),
            "n_in_range": len(lic_err),
            "lic_r2_max_err_pct_unflagged": max(lic_err_unflagged, default=np.nan),
            "n_in_range_unflagged": len(lic_err_unflagged)}


def markdown(b0, table, summ, seconds, error) -> str:
    failed = f", FAILED: {error}" if error else ""
    lines = [f"**{b0:g} T** (`qsmkit liver` {seconds:.0f} s{failed})",
             "",
             "| patch | LIC | PDFF | PDFF meas | R2* | R2* meas | in range | chi | chi meas "
             "| LIC R2* | LIC QSM | voxels (truth) | flags |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        if not r["present"]:
            lines.append(f"| {r['label']} | {r['lic']:g} | {r['pdff']:g} | missing | "
                         f"{r['r2']:.0f} | | | {r['chi']:.2f} | | | | 0 ({r['n_truth']}) | |")
            continue
        lines.append(
            f"| {r['label']} | {r['lic']:g} | {r['pdff']:g} | {r['m_pdff']:.1f} | {r['r2']:.0f} | "
            f"{r['m_r2']:.0f} | {'yes' if r['in_range'] else 'no'} | {r['chi']:.2f} | "
            f"{r['m_chi']:.2f} | {r['m_lic_r2']:.1f} | {r['m_lic_qsm']:.1f} | "
            f"{r['n']} ({r['n_truth']}) | {r['flags'].replace(';', ', ')} |")
    lines += ["", f"present {summ['present']}/24; PDFF max |error| {summ['pdff_max_err']:.1f} "
              f"points ({summ['pdff_max_err_unflagged']:.1f} over the "
              f"{summ['n_pdff_unflagged']} patches not flagged pdff_uncertain); "
              f"chi of fat-free patches vs truth: slope {summ['chi_slope_fatfree']:.2f}, "
              f"r {summ['chi_r_fatfree']:.3f}; LIC by R2* max error "
              f"{summ['lic_r2_max_err_pct']:.0f} % over {summ['n_in_range']} in-range patches "
              f"({summ['lic_r2_max_err_pct_unflagged']:.0f} % over the "
              f"{summ['n_in_range_unflagged']} not flagged lic_r2star_calibration_spread)", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 x 64 x 8 slab of 4 x 4 x 8 mm")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    ap.add_argument("--keep", metavar="DIR", help="keep data and outputs in DIR")
    args = ap.parse_args()
    geom = ({"shape": (64, 64, 8), "voxel_mm": (4.0, 4.0, 8.0)} if args.quick else
            {"shape": (128, 128, 16), "voxel_mm": (2.0, 2.0, 4.0)})
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_liver_ind_"))
    parts, chis = [], {}
    for b0 in (1.5, 3.0):
        phantom = make_abdomen_phantom(b0_tesla=b0, snr=60.0, **geom)
        rows, seconds, error = run_liver(base / f"{b0:g}T", phantom)
        table = patch_table(phantom, rows)
        summ = summary(table)
        chis[b0] = {r["label"]: r["m_chi"] for r in table if r["present"]}
        text = markdown(b0, table, summ, seconds, error)
        print(text)
        parts.append(text)
    common = [k for k in chis[1.5] if k in chis[3.0] and abs(chis[1.5][k]) > 0.2]
    if common:
        ratio = np.array([chis[3.0][k] / chis[1.5][k] for k in common])
        line = (f"chi 3 T / 1.5 T over {len(common)} patches with |chi| > 0.2 ppm: median "
                f"{np.median(ratio):.2f}, range {ratio.min():.2f}-{ratio.max():.2f}")
        print(line)
        parts.append(line)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

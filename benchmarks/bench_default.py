"""Choosing the default inversion on realistic data (issue 12): one row per case and method.

Cases: the in-vivo-like head phantom of ``tests/invivo_like.py`` (pathology, noise, residual
background and a non-dipolar white-matter term) through qsmkit's PDF, at several voxel sizes,
field strengths and B0 tilts; and qsm-forward ``simple`` 100^3 (axial and 18 degrees oblique)
through the default pipeline up to background removal (local fields cached by
``--qsm-forward DIR``: a folder holding ``qf_axial.npz`` / ``qf_oblique.npz``; see
``cache_qsm_forward``). Scores: NRMSE (%), XSIM, deep-grey-matter slope, region means of the
hematoma, sinus, microbleeds and calcifications relative to truth, correlation, seconds.

Run: ``python benchmarks/bench_default.py [--methods tv,whtv] [--qsm-forward DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from invivo_like import DGM, make_invivo_like, region_ratio  # noqa: E402
from qsmkit import bgremove, inversion  # noqa: E402
from qsmkit.metrics import xsim  # noqa: E402
from validation_metrics import region_slope, score_chi  # noqa: E402

CASES = {
    # name: (shape, voxel mm, B0 T, tilt deg, noise Hz)
    "1.5mm 3T axial 1Hz": ((96, 96, 76), (1.5, 1.5, 1.5), 3.0, 0.0, 1.0),
    "1.5mm 3T tilt18 2Hz": ((96, 96, 76), (1.5, 1.5, 1.5), 3.0, 18.0, 2.0),
    "2mm 1.5T axial 0.5Hz": ((72, 72, 58), (2.0, 2.0, 2.0), 1.5, 0.0, 0.5),
    "1.2x1.2x2mm 7T tilt18 2Hz": ((120, 120, 58), (1.2, 1.2, 2.0), 7.0, 18.0, 2.0),
}

METHODS = {
    "tv 5e-4": ("tv", {"lam": 5e-4}),
    "tv 2e-4": ("tv", {"lam": 2e-4}),
    "tv 1e-3": ("tv", {"lam": 1e-3}),
    "tv 2e-3": ("tv", {"lam": 2e-3}),
    "tv 4e-3": ("tv", {"lam": 4e-3}),
    "tv auto": ("tv", {"lam": "auto"}),
    "whtv 5e-4": ("whtv", {"lam": 5e-4}),
    "whtv 1e-3": ("whtv", {"lam": 1e-3}),
    "whtv 2e-3": ("whtv", {"lam": 2e-3}),
    "whtv auto": ("whtv", {"lam": "auto"}),
    "rts": ("rts", {}),
    "nltv": ("nltv", {"echo_time_s": 0.015}),  # a typical effective TE of 4-24 ms echoes
    "tgv": ("tgv", {}),
    "medi": ("medi", {}),
}


def run_method(label, field, mask, voxel, b0_dir, b0, magnitude=None, noise_hz=None):
    method, options = METHODS[label]
    options = dict(options)
    if method == "medi" and magnitude is not None:
        options["magnitude"] = magnitude
    start = time.perf_counter()
    if method == "whtv" and options.get("lam") == "auto":
        # lam_auto does not list whtv yet: take the weight it chooses for TV (same l1 term).
        chosen, _ = inversion.resolve_lambda("tv", {"lam": "auto"}, field, mask, voxel,
                                             b0_dir=b0_dir, b0_tesla=b0, noise_hz=noise_hz)
        options["lam"] = chosen["lam"]
    chi, _ = inversion.invert_auto(field, mask, voxel, method=method, b0_dir=b0_dir,
                                   b0_tesla=b0, noise_hz=noise_hz, **options)
    return chi, time.perf_counter() - start


def scores(chi, truth, truth_mask, mask, labels=None, case=None):
    s = score_chi(chi, truth, truth_mask, mask)
    region = truth_mask & mask
    row = {"nrmse": s["nrmse_percent"], "slope": s["slope"],
           "xsim": xsim(np.where(region, chi - chi[region].mean(), 0),
                        np.where(region, truth - truth[region].mean(), 0), region),
           "r": float(np.corrcoef(chi[region], truth[region])[0, 1])}
    if case is not None:
        row["dgm"] = region_slope(chi, truth, {n: labels[n] for n in DGM}, mask)
        for name, key in (("hematoma", "hem"), ("sinus", "sinus"), ("microbleeds", "mb"),
                          ("calcification2", "calc")):
            row[key] = region_ratio(chi, case, name, mask)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--qsm-forward", type=Path, default=None)
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    header = ("case", "method", "NRMSE%", "XSIM", "slope", "r", "DGM", "hem", "sinus", "mb",
              "calc", "s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    def emit(case_name, label, row, seconds):
        cells = [case_name, label, f"{row['nrmse']:.1f}", f"{row['xsim']:.3f}",
                 f"{row['slope']:.2f}", f"{row['r']:.3f}"]
        cells += [f"{row[k]:.2f}" if k in row else "-" for k in ("dgm", "hem", "sinus", "mb",
                                                                 "calc")]
        cells.append(f"{seconds:.1f}")
        print("| " + " | ".join(cells) + " |", flush=True)

    for case_name in filter(None, args.cases.split(",")):
        shape, voxel, b0, tilt, noise = CASES[case_name]
        case = make_invivo_like(shape, voxel, b0_tesla=b0, tilt_deg=tilt, noise_hz=noise)
        local = bgremove.pdf(case.total_field_hz, case.brain_mask, voxel,
                             b0_dir=case.b0_dir_voxel)
        for label in methods:
            chi, seconds = run_method(label, local.field_hz, local.mask, voxel,
                                      case.b0_dir_voxel, b0, noise_hz=noise,
                                      magnitude=case.brain_mask.astype(np.float32))
            emit(case_name, label, scores(chi, case.chi_ppm, case.brain_mask, local.mask,
                                          case.labels, case), seconds)
    if args.qsm_forward is not None:
        for name in ("axial", "oblique"):
            data = np.load(args.qsm_forward / f"qf_{name}.npz")
            for label in methods:
                chi, seconds = run_method(label, data["local"], data["lmask"],
                                          tuple(data["vs"]), data["b0dir"], float(data["b0"]))
                emit(f"qsm-forward 100^3 {name}", label,
                     scores(chi, data["truth"], data["tmask"], data["lmask"]), seconds)


if __name__ == "__main__":
    main()

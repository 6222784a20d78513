"""How much of the brain each background removal keeps, and how accurately.

Cases (none made by qsmkit's own forward model, except ``head``):

* ``brain``: the textured brain of ``tests/textured_brain.py`` (continuous kernel on a 2x
  finer grid, averaged down; exact air-sphere background), at the given voxel size.
* ``qsmforward``: a qsm-forward ``simple`` dataset (cylinder mask) made with
  ``--background`` so that there is a background field; truth = its ``fieldmap-local``.
* ``head``: ``qsmkit.phantom`` head phantom with ``simulate_gre`` (image-space kernel).

For each method: fraction of the mask kept, NRMSE of the local field on the kept region and
on the region V-SHARP keeps (a common region), the fraction of the true background left in
the estimate, seconds and the peak of memory traced by ``tracemalloc`` (numpy buffers).

    .venv/bin/python benchmarks/bench_bgremove_cortex.py brain --voxel 1 1 1
    .venv/bin/python benchmarks/bench_bgremove_cortex.py qsmforward --dir /tmp/qf
    .venv/bin/python benchmarks/bench_bgremove_cortex.py head --shape 96 --voxel 2 2 2
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from qsmkit import bgremove

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

METHODS = ("vsharp", "pdf", "lbv", "resharp", "ismv", "vsharp_pdfrim")


def nrmse(est, truth, region):
    return float(np.linalg.norm(est[region] - truth[region]) / np.linalg.norm(truth[region]))


def residual_background(est, truth, background, region):
    """Fraction of the (mean-free) true background still present in the estimate's error."""
    err = (est - truth)[region].astype(np.float64)
    bg = background[region].astype(np.float64)
    bg = bg - bg.mean()
    err = err - err.mean()
    energy = float(np.dot(bg, bg))
    return float(np.dot(err, bg) / energy) if energy > 0 else float("nan")


def run_method(name, total, mask, vs, b0_dir, weight=None):
    kw = dict(b0_dir=b0_dir, weight=weight)
    if name == "vsharp_pdfrim":
        if "vsharp_pdfrim" in bgremove.METHODS:
            return bgremove.METHODS["vsharp_pdfrim"](total, mask, vs, **kw)
        v = bgremove.vsharp(total, mask, vs)
        bg_inner = np.where(v.mask, total - v.field_hz, 0)
        fit = bgremove.pdf(bg_inner, mask, vs, b0_dir=b0_dir, weight=v.mask.astype(np.float32))
        rim_local = total - fit.background_hz
        field = np.where(v.mask, v.field_hz, np.where(mask, rim_local, 0)).astype(np.float32)
        return bgremove.BackgroundResult(field, mask.copy(), None, {})
    return bgremove.METHODS[name](total, mask, vs, **kw)


def evaluate(case, methods, label):
    total, local, background = case["total"], case["local"], case["background"]
    mask, vs, b0_dir = case["mask"], case["voxel_size"], case["b0_dir"]
    common = bgremove.vsharp(total, mask, vs).mask
    print(f"\n{label}: shape {mask.shape}, voxel {vs} mm, mask {int(mask.sum())} voxels")
    print("| method | kept | NRMSE kept | NRMSE common | residual bg | s | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for name in methods:
        tracemalloc.start()
        start = time.perf_counter()
        res = run_method(name, total, mask, vs, b0_dir, case.get("weight"))
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        kept = res.mask & mask
        row = (
            float(kept.sum() / mask.sum()),
            nrmse(res.field_hz, local, kept),
            nrmse(res.field_hz, local, common & kept),
            residual_background(res.field_hz, local, background, kept),
            seconds,
            peak,
        )
        rows[name] = row
        print(f"| {name} | {row[0]:.3f} | {row[1]:.3f} | {row[2]:.3f} | {row[3]:+.4f} | "
              f"{row[4]:.1f} | {row[5]:.0f} |", flush=True)
    return rows


def brain_case(voxel, b0_dir, semi):
    from textured_brain import textured_brain

    p = textured_brain(voxel, semi_axes_mm=semi, b0_dir=b0_dir)
    return dict(total=p["total_hz"], local=p["local_hz"], background=p["background_hz"],
                mask=p["mask"], voxel_size=p["voxel_size"], b0_dir=p["b0_dir"])


def qsmforward_case(folder):
    import json

    import nibabel as nib

    d = Path(folder) / "derivatives" / "qsm-forward" / "sub-1" / "anat"
    mask = nib.load(d / "sub-1_mask.nii").get_fdata() > 0.5
    field = nib.load(d / "sub-1_fieldmap.nii").get_fdata()
    local = nib.load(d / "sub-1_fieldmap-local.nii").get_fdata()
    sidecar = next((Path(folder) / "sub-1" / "anat").glob("*echo-1_part-phase_MEGRE.json"))
    b0 = json.loads(sidecar.read_text())["MagneticFieldStrength"]
    to_hz = 42.577478518 * b0  # ppm -> Hz
    vs = tuple(float(v) for v in nib.load(d / "sub-1_mask.nii").header.get_zooms()[:3])
    return dict(total=(field * to_hz).astype(np.float32), local=(local * to_hz).astype(np.float32),
                background=((field - local) * to_hz).astype(np.float32), mask=mask,
                voxel_size=vs, b0_dir=(0.0, 0.0, 1.0))


def head_case(shape, voxel):
    from qsmkit.phantom import head_phantom, simulate_gre

    ph = head_phantom((shape,) * 3, voxel, lesions=False)
    sim = simulate_gre(ph, echo_times_s=(0.004, 0.008, 0.012), b0_tesla=3.0, snr=None)
    return dict(total=sim.field_hz - sim.shim_field_hz, local=sim.local_field_hz,
                background=sim.background_field_hz, mask=ph.brain_mask, voxel_size=tuple(voxel),
                b0_dir=(0.0, 0.0, 1.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("brain", "qsmforward", "head"))
    parser.add_argument("--voxel", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    parser.add_argument("--semi", type=float, nargs=3, default=(45.0, 55.0, 40.0))
    parser.add_argument("--b0-dir", type=float, nargs=3, default=(0.0, 0.0, 1.0))
    parser.add_argument("--shape", type=int, default=96)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    if args.case == "brain":
        case = brain_case(tuple(args.voxel), tuple(args.b0_dir), tuple(args.semi))
    elif args.case == "qsmforward":
        case = qsmforward_case(args.dir)
    else:
        case = head_case(args.shape, tuple(args.voxel))
    evaluate(case, args.methods.split(","), args.case)


if __name__ == "__main__":
    main()

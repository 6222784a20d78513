"""Automatic lambda: L-curve, discrepancy and GCV against the fixed 5e-4 and the oracle.

For each dataset and noise level: the TV weight chosen by each principle
(:func:`qsmkit.inversion.lam_auto.choose_lambda`), the NRMSE of TV at that weight, at the old
fixed 5e-4 and at the best weight of a grid (the oracle), and the selection time.

    .venv/bin/python benchmarks/bench_lam_auto.py [--qsm-forward DIR ...] [--real]

``--qsm-forward`` takes ``qsmkit run`` output folders of qsm-forward datasets (their
``local_field_hz.nii.gz`` and ``mask.nii.gz``); the truth is read from the dataset given
after a colon: ``--qsm-forward RUN_DIR:DATASET_DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from independent_phantom import make_independent_phantom  # noqa: E402
from qsmkit.inversion import tv  # noqa: E402
from qsmkit.inversion.lam_auto import PRINCIPLES, choose_lambda  # noqa: E402
from textured_brain import textured_brain  # noqa: E402
from validation_metrics import score_chi  # noqa: E402

GRID = (1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3)


def non_dipolar_error_hz(mask, voxel_size, amplitude_hz, rng, sigma_mm=6.0):
    """A smooth random field (not produced by any chi): RMS ``amplitude_hz`` in the mask."""
    white = rng.standard_normal(mask.shape).astype(np.float32)
    smooth = ndimage.gaussian_filter(white, [sigma_mm / v for v in voxel_size])
    smooth -= smooth[mask].mean()
    return (amplitude_hz * smooth / smooth[mask].std()).astype(np.float32)


def cases(seed=0):
    rng = np.random.default_rng(seed)
    ph = make_independent_phantom(shape=(64, 64, 48), snr=None, with_local_field=True)
    tb = textured_brain(voxel_size=(1.5, 1.5, 1.5))
    sources = [
        ("independent", ph.local_field_hz, ph.brain_mask, ph.chi_ppm, ph.voxel_size_mm,
         tuple(ph.b0_dir_voxel), ph.b0_tesla),
        ("textured", tb["local_hz"], tb["mask"], tb["chi_ppm"], tuple(tb["voxel_size"]),
         tuple(tb["b0_dir"]), tb["b0_tesla"]),
    ]
    for name, field, mask, chi, vs, b0_dir, b0 in sources:
        for noise in (0.0, 0.5, 1.0, 2.0):
            f = field.astype(np.float32)
            if noise > 0:
                f = (f + noise * rng.standard_normal(f.shape).astype(np.float32)
                     + non_dipolar_error_hz(mask, vs, 0.25 * noise, rng))
            yield (f"{name} {noise:g} Hz", np.where(mask, f, 0), mask, chi, mask, vs, b0_dir,
                   b0, noise or None)


def qsm_forward_case(spec):
    import nibabel as nib

    from qsmkit.geometry import b0_dir_from_affine, voxel_size_from_affine

    run_dir, dataset = (Path(p) for p in spec.split(":"))
    img = nib.load(run_dir / "local_field_hz.nii.gz")
    field = np.asarray(img.dataobj, np.float32)
    mask = np.asarray(nib.load(run_dir / "mask.nii.gz").dataobj) > 0
    lmask = field != 0
    anat = dataset / "derivatives" / "qsm-forward" / "sub-1" / "anat"
    chi = np.asarray(nib.load(anat / "sub-1_Chimap.nii").dataobj, np.float32)
    tmask = np.asarray(nib.load(anat / "sub-1_mask.nii").dataobj) > 0
    record = json.loads((run_dir / "qsmkit.json").read_text())
    b0_dir = tuple(record["info"].get("b0_dir_voxel", b0_dir_from_affine(img.affine)))
    return (f"qsm-forward {dataset.name}", field, lmask & mask, chi, tmask,
            voxel_size_from_affine(img.affine), b0_dir, float(record["b0_tesla"]), None)


def nrmse(chi, truth, tmask, cmask):
    return score_chi(chi, truth, tmask, cmask)["nrmse_percent"]


def evaluate(name, field, mask, truth, tmask, vs, b0_dir, b0, noise):
    kw = dict(b0_dir=b0_dir, b0_tesla=b0)
    t0 = time.perf_counter()
    scores = {}
    for lam in GRID:
        scores[lam] = nrmse(tv(field, mask, vs, lam=lam, **kw), truth, tmask, mask)
    t_tv = (time.perf_counter() - t0) / len(GRID)
    oracle = min(scores, key=scores.get)
    row = [name, f"{scores[5e-4]:.1f}", f"{oracle:.2g} ({scores[oracle]:.1f})"]
    for principle in PRINCIPLES:
        t0 = time.perf_counter()
        lam, info = choose_lambda(field, mask, vs, principle=principle, **kw)
        t_sel = time.perf_counter() - t0
        score = nrmse(tv(field, mask, vs, lam=lam, **kw), truth, tmask, mask)
        extra = ""
        if principle == "discrepancy":
            extra = f" est {info['noise_hz']:.2f} Hz"
        row.append(f"{lam:.2g} ({score:.1f}){extra}")
    row.append(f"{t_sel:.2f}/{t_tv:.1f}")
    print(" | ".join(row), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qsm-forward", action="append", default=[])
    parser.add_argument("--skip-phantoms", action="store_true")
    args = parser.parse_args(argv)
    print("dataset | NRMSE % at 5e-4 | oracle lam (NRMSE) | " + " | ".join(
        f"{p} lam (NRMSE)" for p in PRINCIPLES) + " | select/TV s")
    for spec in args.qsm_forward:
        evaluate(*qsm_forward_case(spec))
    if not args.skip_phantoms:
        for case in cases():
            evaluate(*case)


if __name__ == "__main__":
    main()

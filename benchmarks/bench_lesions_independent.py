"""Lesions, MS rims and venous Yv on the independent head phantoms (tests/independent_lesions.py)
at several geometries: reconstruct with ``qsmkit run`` and print one table row per case.

    python benchmarks/bench_lesions_independent.py

Figures in docs/applications.md (validation of issue 15) come from this script.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from independent_lesions import HCT, HEMATOMA, make_lesion_head  # noqa: E402
from qsmkit.analysis import lesions, oximetry, rims  # noqa: E402
from test_independent_brain_analyses import _near_vein, _reconstruct  # noqa: E402

CASES = (
    # name, shape, voxel (mm), tilt (deg), seed
    ("A 1x1x1.5 mm, 20 deg", (80, 80, 48), (1.0, 1.0, 1.5), 20.0, 0),
    ("B 0.9x0.9x2 mm, 35 deg", (88, 88, 36), (0.9, 0.9, 2.0), 35.0, 1),
    ("C 1.2 mm iso, 0 deg", (66, 66, 60), (1.2, 1.2, 1.2), 0.0, 2),
)


def run_case(name, shape, voxel, tilt, seed, root: Path) -> dict:
    out = {"case": name}
    head = make_lesion_head("focal", shape=shape, voxel_size_mm=voxel, tilt_deg=tilt, seed=seed)
    chi, run = _reconstruct(head, root / "focal")
    vs = np.asarray(voxel)
    res = lesions.detect_lesions(chi, head.brain_mask, vs)
    ev = lesions.evaluate_lesions(res, head.lesions, (), vs)
    focal = [p for p in ev["per_lesion"] if p["kind"] != "large_hemorrhage"]
    out["focal_right"] = sum(p["correct"] for p in focal)
    out["focal_n"] = len(focal)
    out["lesion_on_vein"] = sum(1 for r in res.rows if r["class"] in lesions.FOCAL_CLASSES
                                and _near_vein(r, head.veins, vs, 1.5))
    negatives = [r for r in res.rows if r["id"] not in {p["finding_id"] for p in
                                                       ev["per_lesion"]}]
    out["negatives"] = len(negatives)
    out["false_lesions"] = sum(r["class"] in lesions.FOCAL_CLASSES for r in negatives)
    big = [r for r in res.rows if r["class"] == "large_hemorrhage"]
    out["hematoma_ml"] = big[0]["volume_ml"] if len(big) == 1 else float("nan")
    out["hematoma_truth_ml"] = 4 / 3 * np.pi * np.prod(HEMATOMA[1]) / 1000
    field = np.asanyarray(nib.load(run / "local_field_hz.nii.gz").dataobj).astype(np.float32)
    ox = oximetry.venous_oximetry(chi, head.brain_mask, vs, hct=HCT,
                                  reference_mask=head.csf_mask, b0_dir=head.b0_dir_voxel,
                                  local_field_hz=field, b0_tesla=head.b0_tesla,
                                  field_mask=field != 0)
    errors = []
    for vein in head.veins:
        if vein["radius_mm"] < 2.0:
            continue
        pts = vein["points_vox"] * vs
        near = [r for r in ox.rows if np.min(np.linalg.norm(
            pts - np.array([r["x"], r["y"], r["z"]]) * vs, axis=1)) <= vein["radius_mm"] + 2]
        row = max(near, key=lambda r: r["length_mm"]) if near else None
        errors.append((vein["name"], None if row is None else row["yv"] - vein["yv"],
                       None if row is None else row["yv_sd"],
                       None if row is None else row["estimate"],
                       None if row is None else row["yv_chi"] - vein["yv"],
                       None if row is None or row["yv_field"] is None
                       else (row["yv_field"] - vein["yv"], row["yv_field_sd"])))
    out["yv_errors"] = errors
    ms = make_lesion_head("ms", shape=shape, voxel_size_mm=voxel, tilt_deg=tilt, seed=seed)
    for invert in ("ilsqr", None):
        chi_ms, _ = _reconstruct(ms, root / f"ms_{invert}", invert=invert)
        rr = rims.rim_lesions(chi_ms, ms.ms_labels, voxel, brain_mask=ms.brain_mask)
        got = {r["id"]: r["class"] for r in rr.rows}
        out[f"rims_{invert or 'default'}"] = sum(got[m["id"]] == m["kind"] for m in ms.ms)
    return out


def main() -> None:
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_case(*case, Path(tmp))
        yv = ", ".join(
            f"{n} {e:+.3f} (SE {s:.3f}, {how}; chi {c:+.3f}, field "
            + (f"{f[0]:+.3f} SE {f[1]:.3f})" if f is not None else "n/a)")
            if e is not None else f"{n} missed" for n, e, s, how, c, f in r["yv_errors"])
        print(f"{r['case']}: focal {r['focal_right']}/{r['focal_n']}, lesions on veins "
              f"{r['lesion_on_vein']}, false lesions {r['false_lesions']}/{r['negatives']} "
              f"negatives, haematoma {r['hematoma_ml']:.2f} mL (truth "
              f"{r['hematoma_truth_ml']:.2f}), Yv error {yv}, rims iLSQR "
              f"{r['rims_ilsqr']}/6, default {r['rims_default']}/6", flush=True)


if __name__ == "__main__":
    main()

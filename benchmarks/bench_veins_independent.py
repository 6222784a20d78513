"""Venous Yv on the independent head phantoms (tests/independent_lesions.py), geometries A, B,
C and several noise seeds: reconstruct with ``qsmkit run`` and print, per vein of radius
>= 2 mm, the error of the estimate ``qsmkit oximetry`` chooses, of the chi estimate and of the
field estimate (qsmkit.analysis.vein_field), with their standard errors.

    python benchmarks/bench_veins_independent.py            # seed offsets 0, 10, 20
    python benchmarks/bench_veins_independent.py 0          # the seeds of the lesion benchmark

Figures in docs/applications.md (venous saturation, validation of issue 15) come from this
script and from bench_lesions_independent.py.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lesions_independent import CASES  # noqa: E402

from independent_lesions import HCT, make_lesion_head  # noqa: E402
from qsmkit.analysis import oximetry  # noqa: E402
from qsmkit.analysis.stats import wilson_interval  # noqa: E402
from test_independent_brain_analyses import _reconstruct  # noqa: E402


def vein_rows(head, chi, run: Path) -> list[tuple[str, dict | None]]:
    """(vein name, the oximetry row of its longest nearby segment) for veins >= 2 mm."""
    vs = np.asarray(head.voxel_size_mm)
    field = np.asanyarray(nib.load(run / "local_field_hz.nii.gz").dataobj).astype(np.float32)
    res = oximetry.venous_oximetry(chi, head.brain_mask, vs, hct=HCT,
                                   reference_mask=head.csf_mask, b0_dir=head.b0_dir_voxel,
                                   local_field_hz=field, b0_tesla=head.b0_tesla,
                                   field_mask=field != 0)
    out = []
    for vein in head.veins:
        if vein["radius_mm"] < 2.0:
            continue
        pts = vein["points_vox"] * vs
        near = [r for r in res.rows if np.min(np.linalg.norm(
            pts - np.array([r["x"], r["y"], r["z"]]) * vs, axis=1)) <= vein["radius_mm"] + 2]
        out.append((vein, max(near, key=lambda r: r["length_mm"]) if near else None))
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    offsets = [int(a) for a in argv] or [0, 10, 20]
    within = {"chosen": 0, "chi": 0}
    total = 0
    for name, shape, voxel, tilt, seed0 in CASES:
        for offset in offsets:
            seed = seed0 + offset
            head = make_lesion_head("focal", shape=shape, voxel_size_mm=voxel, tilt_deg=tilt,
                                    seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                chi, run = _reconstruct(head, Path(tmp))
                rows = vein_rows(head, chi, run)
            parts = []
            for vein, row in rows:
                total += 1
                if row is None or not row["usable"]:
                    parts.append(f"{vein['name']} missed")
                    continue
                err, err_chi = row["yv"] - vein["yv"], row["yv_chi"] - vein["yv"]
                within["chosen"] += abs(err) <= 0.05
                within["chi"] += abs(err_chi) <= 0.05
                field = ("n/a" if row["yv_field"] is None else
                         f"{row['yv_field'] - vein['yv']:+.3f} SE {row['yv_field_sd']:.3f}")
                parts.append(f"{vein['name']} (theta {row['theta_deg']:.0f}) {err:+.3f} "
                             f"({row['estimate']}; chi {err_chi:+.3f}, field {field})")
            print(f"{name}, seed {seed}: " + "; ".join(parts), flush=True)
    for key, n in within.items():
        lo, hi = wilson_interval(n, total)
        print(f"within 0.05 ({key} estimate): {n}/{total}, {n / total:.2f} [{lo:.2f}, {hi:.2f}]")


if __name__ == "__main__":
    main()

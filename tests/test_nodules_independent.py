"""``qsmkit liver --nodules`` through the whole pipeline on an independently built cirrhotic
liver (tests/independent_cirrhosis.py: no qsmkit constant, kernel, grid or fat spectrum).

A small slab (64 x 64 x 8 voxels of 2 x 2 x 4 mm; the abdomen scaled to the 128 mm field of
view) with a siderotic background (LIC 5 mg/g dw, regenerative-nodule texture), one siderotic
and one iron-sparing 14 mm nodule, a portal vein of 10 mm calibre along B0 and a simple cyst,
as 6-echo GRE signal at 1.5 T. The full benchmark (1.5 T and 3 T, eight nodules, four vessels)
is benchmarks/bench_nodules_independent.py.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from independent_abdomen import write_nifti
from independent_cirrhosis import Cyst, Nodule, Vessel, make_cirrhosis_phantom
from qsmkit.cli.main import main

# the liver of the scaled abdomen: centre (-22.5, 2.5) mm, semi-axes 29 x 28 mm
NODULES = (
    Nodule("S", "siderotic", (-32.0, 12.0, 0.0), 14.0, 13.0),
    Nodule("N", "iron-sparing", (-14.0, -8.0, 2.0), 14.0, 1.0, 5.0),
)
VESSELS = (Vessel("PV", (-34.0, -12.0, -60.0), (-33.0, -11.0, 60.0), 5.0, 0.8),)
CYSTS = (Cyst("C", (-12.0, 16.0, -2.0), 12.0),)


@pytest.fixture(scope="module")
def liver_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodules_independent")
    ph = make_cirrhosis_phantom(shape=(64, 64, 8), voxel_mm=(2.0, 2.0, 4.0), b0_tesla=1.5,
                                nodules=NODULES, vessels=VESSELS, cysts=CYSTS, seed=3)
    paths = write_nifti(ph, tmp / "data")
    out = tmp / "out"
    te = ",".join(f"{t:.6f}" for t in ph.echo_times_s)
    argv = ["liver", "--mag", *map(str, paths["mag"]), "--phase", *map(str, paths["phase"]),
            "--labels", str(paths["labels"]), "--nodules", "--echo-times", te, "--b0", "1.5",
            "--phase-unit", "rad", "-o", str(out)]
    assert main(argv) == 0
    return ph, out


def test_nodules_found_and_classed_through_the_pipeline(liver_run):
    ph, out = liver_run
    doc = json.loads((out / "nodules.json").read_text())
    labels = np.asarray(nib.load(out / "nodules.nii.gz").dataobj)
    with open(out / "nodules.tsv") as fh:
        rows = {int(r["id"]): r for r in csv.DictReader(fh, delimiter="\t")}
    assert len(rows) == len(doc["nodules"]) == int(labels.max())
    found = {}
    for k, nod in enumerate(ph.nodules, start=1):
        truth = ndimage.binary_dilation(ph.structures == k, np.ones((3, 3, 1), bool))
        hits = [r for r in rows.values()
                if truth[tuple(int(c) for c in r["centroid_voxel"].split(","))]]
        assert len(hits) == 1, (nod.name, rows, doc["rejected_candidates"])
        found[nod.name] = hits[0]
        assert hits[0]["class"] == nod.kind, hits[0]
        assert abs(float(hits[0]["diameter_mm"]) - nod.diameter_mm) < 5.0
        assert hits[0]["chi_source"].startswith("local field fit")
        # contrast to the background liver: sign and size of the truth's, within a factor 2
        t = ph.nodule_truth[k - 1]
        delta = t["chi_ppm"] - t["background_chi_ppm"]
        assert 0.5 < float(hits[0]["delta_chi_ppm"]) / delta < 2.0, (hits[0], t)
        ratio = t["r2star_per_s"] / t["background_r2star_per_s"]
        assert abs(np.log(float(hits[0]["r2star_ratio"]) / ratio)) < np.log(1.5)
        assert (out / hits[0]["thumbnail"]).exists()
    # the vessel and the cyst are not nodules, and nothing else is reported
    assert len(rows) == 2, rows
    assert found["N"]["pdff_percent"] and float(found["N"]["pdff_percent"]) > 2.0

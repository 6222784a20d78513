"""End to end: `qsmkit simulate` -> `qsmkit run` -> the brain analyses, checked against the truth.

A 96^3 head phantom at 2 mm (the smallest grid on which the phantom's veins and lesions keep
their nominal sizes) is simulated, reconstructed with the default preset, and analysed with the
command-line tools exactly as a user would. The analysis mask is the reconstruction's mask
restricted to the brain of the phantom (a user's brain segmentation): the automatic mask of
`qsmkit run` also holds the CSF around the brain.
"""

import json

import numpy as np
import pytest

pytest.importorskip("qsmkit.phantom")
pytest.importorskip("qsmkit.pipeline")

from qsmkit.cli.main import main  # noqa: E402
from qsmkit.io.nifti import load_nifti, save_nifti  # noqa: E402

NUCLEI = ("caudate", "putamen", "globus_pallidus", "thalamus", "substantia_nigra",
          "red_nucleus", "dentate")


def _read_tsv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, ln.split("\t"), strict=True)) for ln in lines[1:]]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    sim, run = root / "sim", root / "run"
    assert main(["simulate", str(sim), "--shape", "96,96,96", "--voxel-size", "2,2,2",
                 "--seed", "0"]) == 0
    assert main(["run", "--mag", str(sim / "mag.nii.gz"), "--phase", str(sim / "phase.nii.gz"),
                 "-o", str(run)]) == 0
    valid, affine, _ = load_nifti(run / "mask.nii.gz")
    brain, _, _ = load_nifti(sim / "mask.nii.gz")
    save_nifti(root / "analysis_mask.nii.gz", (valid > 0) & (brain > 0), affine)
    labels, _, _ = load_nifti(sim / "labels.nii.gz", dtype=np.float64)
    names = {int(r["index"]): r["name"] for r in _read_tsv(sim / "labels.tsv")}
    ms_ids = [k for k, v in names.items() if v.startswith("ms_")]
    save_nifti(root / "ms_lesions.nii.gz", np.isin(np.rint(labels), ms_ids), affine)
    phantom = json.loads((sim / "phantom.json").read_text())
    return {"root": root, "sim": sim, "run": run, "phantom": phantom, "names": names}


def test_deep_grey_chi_within_002_ppm_and_in_order(study):
    root, sim, run = study["root"], study["sim"], study["run"]
    out = root / "roi.tsv"
    assert main(["roi", str(run / "chi.nii.gz"), str(sim / "labels.nii.gz"),
                 "--mask", str(root / "analysis_mask.nii.gz"),
                 "--reference", "csf", "-o", str(out)]) == 0
    rows = {r["name"]: r for r in _read_tsv(out)}
    # Truth: chi relative to water; the phantom's CSF is exactly 0, so CSF-referenced values
    # compare directly. The nuclei are uniform in the phantom: the median is the robust
    # estimate of their chi (it resists the streaks a nearby calcification leaves in the
    # reconstruction, which pull the left putamen's mean down by ~0.02 ppm); the mean must
    # stay within 0.03 ppm.
    truth = {int(r["index"]): float(r["chi_ppm"]) for r in _read_tsv(sim / "labels.tsv")}
    measured, expected = {}, {}
    for label, name in study["names"].items():
        if name.rsplit("_", 1)[0] in NUCLEI:
            got = float(rows[name]["median_ppm"])
            want = truth[label]
            assert got == pytest.approx(want, abs=0.02), name
            assert float(rows[name]["mean_ppm"]) == pytest.approx(want, abs=0.03), name
            nucleus = name.rsplit("_", 1)[0]
            measured.setdefault(nucleus, []).append(got)
            expected[nucleus] = want
    # Right order: every pair of nuclei whose true chi differs by more than twice the
    # tolerance keeps its order (iron-poor thalamus, putamen, caudate below the iron-rich red
    # nucleus, dentate, nigra and pallidum; pallidum above red nucleus and dentate), and the
    # rank correlation over all seven nuclei is high.
    import scipy.stats

    means = {k: float(np.mean(v)) for k, v in measured.items()}
    for a in NUCLEI:
        for b in NUCLEI:
            if expected[a] - expected[b] > 0.04:
                assert means[a] > means[b], (a, b)
    rho = scipy.stats.spearmanr([means[n] for n in NUCLEI], [expected[n] for n in NUCLEI])
    assert rho.statistic >= 0.8


def test_every_bleed_and_calcification_found_with_right_sign(study):
    root, sim, run = study["root"], study["sim"], study["run"]
    out = root / "lesions.tsv"
    assert main(["lesions", str(run / "chi.nii.gz"), str(root / "analysis_mask.nii.gz"),
                 "--truth", str(sim / "phantom.json"), "-o", str(out)]) == 0
    evaluation = json.loads(out.with_suffix(".json").read_text())["evaluation"]
    kinds = [les["kind"] for les in study["phantom"]["lesions"]]
    assert len(evaluation["per_lesion"]) == kinds.count("microbleed") + \
        kinds.count("calcification")
    for item in evaluation["per_lesion"]:
        assert item["correct"], item
        assert np.sign(item["moment_ppm_mm3"]) == (1 if item["kind"] == "microbleed" else -1)
    assert evaluation["sensitivity"] == 1.0
    # No vein segment called a microbleed (or a calcification).
    assert evaluation["vein_derived_findings"]
    assert evaluation["veins_called_lesion"] == []
    rows = _read_tsv(out)
    for row in rows:
        if int(row["id"]) in evaluation["vein_derived_findings"]:
            assert row["class"] == "vein"


def test_rim_and_norim_lesions_told_apart(study):
    root, run = study["root"], study["run"]
    out = root / "rims.tsv"
    assert main(["rims", str(run / "chi.nii.gz"), str(root / "ms_lesions.nii.gz"),
                 "--mask", str(root / "analysis_mask.nii.gz"), "-o", str(out)]) == 0
    rows = _read_tsv(out)
    ms = [les for les in study["phantom"]["lesions"] if les["kind"].startswith("ms_")]
    assert len(rows) == len(ms)
    for les in ms:
        centre = np.asarray(les["center_vox"])
        row = min(rows, key=lambda r: np.linalg.norm(
            np.array([float(r["x"]), float(r["y"]), float(r["z"])]) - centre))
        assert row["class"] == ("rim+" if les["kind"] == "ms_rim" else "rim-"), les


def test_large_vein_saturation_within_005(study):
    root, sim, run = study["root"], study["sim"], study["run"]
    out = root / "veins.tsv"
    assert main(["oximetry", str(run / "chi.nii.gz"), str(root / "analysis_mask.nii.gz"),
                 "--labels", str(sim / "labels.nii.gz"), "--hct", "0.42", "--cbf", "50",
                 "-o", str(out)]) == 0
    rows = _read_tsv(out)
    voxel = 2.0
    large = [v for v in study["phantom"]["veins"] if v["radius_mm"] >= 1.5 * voxel]
    assert len(large) >= 2
    for vein in large:
        name = study["names"][vein["label"]]
        matches = [r for r in rows if r["region"] == name and r["usable"] == "true"]
        assert matches, name
        for row in matches:
            assert float(row["yv"]) == pytest.approx(vein["yv"], abs=0.05), name
            assert float(row["theta_deg"]) == pytest.approx(vein["theta_b0_deg"], abs=5.0)
    # Only veins are usable vein segments: no deep grey nucleus (an iron-rich ellipsoid about
    # as long as it is wide) is taken for one.
    vein_names = {study["names"][v["label"]] for v in study["phantom"]["veins"]}
    assert {r["region"] for r in rows if r["usable"] == "true"} <= vein_names
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["yv_length_weighted"] == pytest.approx(0.60, abs=0.05)
    assert 100 < summary["cmro2_umol_per_100g_per_min"] < 250

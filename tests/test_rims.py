"""Paramagnetic rim lesions on synthetic spheres with exact rims, and the phantom."""

import json

import numpy as np
import pytest

from qsmkit.analysis import rims
from qsmkit.errors import InputError

SHAPE = (80, 80, 40)
WM = -0.03


def _dist(centre):
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"), -1)
    return np.linalg.norm(g - np.asarray(centre, float), axis=-1), g


@pytest.fixture(scope="module")
def scene():
    """Six lesions of radius 5 voxels (1 mm): three rim+, a rim-, a homogeneously
    paramagnetic lesion and a half rim."""
    rng = np.random.default_rng(3)
    chi = (WM + rng.normal(0, 0.003, SHAPE)).astype(np.float32)
    lesion = np.zeros(SHAPE, np.int32)
    specs = {
        1: ((14, 14, 20), "rim"), 2: ((40, 14, 20), "rim"), 3: ((66, 14, 20), "rim"),
        4: ((14, 50, 20), "none"), 5: ((40, 50, 20), "uniform"), 6: ((66, 50, 20), "half"),
    }
    for lid, (centre, kind) in specs.items():
        d, g = _dist(centre)
        inside = d <= 5.0
        lesion[inside] = lid
        chi[inside] += 0.01  # demyelinated core, slightly paramagnetic
        rim = inside & (d > 4.0)
        if kind == "rim":
            chi[rim] += 0.07
        elif kind == "uniform":
            chi[inside] += 0.07
        elif kind == "half":
            chi[rim & (g[..., 0] > centre[0])] += 0.07
    return chi, lesion, specs


def test_rim_classification_exact_scene(scene):
    chi, lesion, specs = scene
    res = rims.rim_lesions(chi, lesion, (1.0, 1.0, 1.0))
    rows = {r["id"]: r for r in res.rows}
    for lid in (1, 2, 3):
        assert rows[lid]["class"] == "rim+"
        assert rows[lid]["rim_fraction"] == 1.0 and rows[lid]["rim_slices"] >= 5
        assert rows[lid]["rim_ppm"] > 0.025 and rows[lid]["core_ppm"] == pytest.approx(
            0.01, abs=0.003)
        assert rows[lid]["wm_ppm"] == pytest.approx(WM, abs=0.002)
    assert rows[4]["class"] == "rim-" and rows[4]["rim_fraction"] == 0.0
    # Homogeneously paramagnetic: every sector is above threshold, but the core is too.
    assert rows[5]["class"] == "rim-" and not rows[5]["core_iso"]
    assert rows[5]["rim_fraction"] == 1.0
    # Half a rim: about half the edge, below the 2/3 criterion.
    assert rows[6]["class"] == "rim-"
    assert 0.35 <= rows[6]["rim_fraction"] <= 0.65
    assert res.summary["n_rim_positive"] == 3 and not res.summary["prl_flag"]
    assert set(rims.RIM_COLUMNS) == set(rows[1])


def test_binary_mask_equals_labels_and_prl_flag(scene):
    chi, lesion, _ = scene
    by_label = rims.rim_lesions(chi, lesion, (1, 1, 1))
    by_mask = rims.rim_lesions(chi, lesion > 0, (1, 1, 1))

    def classes(res):
        return {(round(r["x"]), round(r["y"]), round(r["z"])): r["class"] for r in res.rows}

    assert classes(by_label) == classes(by_mask)
    # Four rim+ lesions raise the patient flag (>= 4, Absinta 2019).
    extra = chi.copy()
    d, _ = _dist((14, 50, 20))
    extra[(d <= 5) & (d > 4)] += 0.07
    flagged = rims.rim_lesions(extra, lesion, (1, 1, 1))
    assert flagged.summary["n_rim_positive"] == 4 and flagged.summary["prl_flag"]


def test_slice_criteria(scene):
    chi, lesion, _ = scene
    strict = rims.rim_lesions(chi, lesion, (1, 1, 1), min_slices=20)
    assert all(r["class"] == "rim-" for r in strict.rows)
    lenient = rims.rim_lesions(chi, lesion, (1, 1, 1), min_fraction=0.4)
    assert {r["id"]: r["class"] for r in lenient.rows}[6] == "rim+"
    high = rims.rim_lesions(chi, lesion, (1, 1, 1), rim_threshold_ppm=0.2)
    assert all(r["class"] == "rim-" for r in high.rows)


def test_bad_inputs(scene):
    chi, lesion, _ = scene
    with pytest.raises(InputError):
        rims.rim_lesions(chi, np.zeros(SHAPE, int), (1, 1, 1))
    with pytest.raises(InputError):
        rims.rim_lesions(chi, lesion, (1, 1, 1), slice_axis=3)
    with pytest.raises(InputError):
        rims.rim_lesions(chi, lesion * 0.5, (1, 1, 1))


def test_phantom_truth_rim_and_norim_told_apart():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=0)
    ms = [les for les in ph.lesions if les["kind"].startswith("ms_")]
    lesion = np.zeros(ph.shape, np.int32)
    for les in ms:
        lesion[ph.labels == les["label"]] = les["id"]
        if "rim_label" in les:
            lesion[ph.labels == les["rim_label"]] = les["id"]
    res = rims.rim_lesions(ph.chi_ppm, lesion, ph.voxel_size, brain_mask=ph.brain_mask)
    got = {r["id"]: r["class"] for r in res.rows}
    for les in ms:
        assert got[les["id"]] == ("rim+" if les["kind"] == "ms_rim" else "rim-")


def test_cli_rims(tmp_path, scene):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti

    chi, lesion, _ = scene
    save_nifti(tmp_path / "chi.nii.gz", chi, np.eye(4))
    save_nifti(tmp_path / "lesions.nii.gz", (lesion > 0), np.eye(4))
    out = tmp_path / "rims.tsv"
    assert main(["rims", str(tmp_path / "chi.nii.gz"), str(tmp_path / "lesions.nii.gz"),
                 "-o", str(out)]) == 0
    header = out.read_text().splitlines()[0].split("\t")
    assert header[:9] == ["id", "x", "y", "z", "core_ppm", "rim_ppm", "rim_fraction",
                          "rim_slices", "class"]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["summary"]["n_rim_positive"] == 3
    assert out.with_suffix(".png").exists()


def test_cli_notes_a_smoothing_inversion(tmp_path, scene, capsys):
    """chi from a run with a TV-type inversion (qsmkit.json beside it): the user is told that
    such inversions flatten 1 mm rims and which inversion keeps them."""
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti

    chi, lesion, _ = scene
    save_nifti(tmp_path / "chi.nii.gz", chi, np.eye(4))
    save_nifti(tmp_path / "lesions.nii.gz", (lesion > 0), np.eye(4))
    (tmp_path / "qsmkit.json").write_text(json.dumps({"config": {"invert": "whtv"}}))
    assert main(["rims", str(tmp_path / "chi.nii.gz"), str(tmp_path / "lesions.nii.gz"),
                 "-o", str(tmp_path / "rims.tsv")]) == 0
    assert "--preset rims" in capsys.readouterr().out
    payload = json.loads((tmp_path / "rims.json").read_text())
    assert "whtv" in payload["summary"]["inversion_note"]
    assert rims.inversion_note("ilsqr") is None


def test_rim_geometry_in_mm_on_anisotropic_voxels():
    """The same rim lesion sampled at 1 x 1 x 1 mm and at 0.5 x 0.5 x 2 mm (B0-free, exact
    chi): rim+ both times, and the rim band is about 1.5 mm thick in both (not 1.5 voxels)."""
    out = []
    for vs in ((1.0, 1.0, 1.0), (0.5, 0.5, 2.0)):
        shape = tuple(int(round(40 / v)) for v in vs)
        g = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * v - 20 for n, v in
                                   zip(shape, vs, strict=True)], indexing="ij"), -1)
        d = np.linalg.norm(g, axis=-1)
        chi = np.full(shape, WM, np.float32)
        lesion = d <= 6.0
        chi[lesion] += 0.01
        chi[lesion & (d > 4.8)] += 0.07
        res = rims.rim_lesions(chi, lesion, vs)
        out.append(res)
        assert res.rows[0]["class"] == "rim+", vs
        assert res.parameters["rim_inner_mm"] == pytest.approx(max(1.5, max(vs[:2])))
    # The rim mean (over a 1.5 mm band, rim 1.2 mm thick) agrees across voxel shapes.
    assert out[0].rows[0]["rim_ppm"] == pytest.approx(out[1].rows[0]["rim_ppm"], abs=0.01)

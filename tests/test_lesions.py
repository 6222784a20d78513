"""Focal lesion detection on synthetic spheres and cylinders with exact truths, and the phantom."""

import json

import numpy as np
import pytest

from qsmkit.analysis import format_tsv, lesions
from qsmkit.errors import InputError

SHAPE = (64, 64, 48)


def _grid():
    return np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"), -1)


def _ball(centre, radius):
    return np.linalg.norm(_grid() - np.asarray(centre, float), axis=-1) <= radius


def _rod(start, end, radius):
    g = _grid()
    a, b = np.asarray(start, float), np.asarray(end, float)
    t = np.clip(((g - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(g - (a + t[..., None] * (b - a)), axis=-1) <= radius


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(7)
    chi = (-0.03 + rng.normal(0, 0.01, SHAPE)).astype(np.float32)
    truth = {
        "bleed_a": ((16, 16, 24), 2.5, 0.8),
        "bleed_b": ((48, 18, 14), 3.5, 0.5),
        "calc": ((16, 48, 30), 3.0, -1.2),
    }
    for centre, radius, dchi in truth.values():
        chi[_ball(centre, radius)] += dchi
    # A mixed lesion: paramagnetic upper half, diamagnetic lower half, zero net moment.
    mixed = _ball((46, 46, 34), 3.0)
    z = _grid()[..., 2]
    chi[mixed & (z > 34)] += 0.8
    chi[mixed & (z < 34)] -= 0.8
    vein = _rod((30, 4, 6), (36, 60, 40), 1.6)
    chi[vein] = 0.45
    mask = np.zeros(SHAPE, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    return chi, mask, truth, vein


def _at(result, centre, tol=2.0):
    for row in result.rows:
        if np.linalg.norm(np.array([row["x"], row["y"], row["z"]]) - centre) <= tol:
            return row
    return None


def test_classes_moments_and_vein_rejection(scene):
    chi, mask, truth, vein = scene
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0))
    for name, (centre, radius, dchi) in truth.items():
        row = _at(res, centre)
        assert row is not None, name
        assert row["class"] == ("microbleed" if dchi > 0 else "calcification"), name
        volume = float(_ball(centre, radius).sum())
        # Moment of the source relative to its shell: dchi x volume (ppm mm^3), within 5 %.
        assert row["moment_ppm_mm3"] == pytest.approx(dchi * volume, rel=0.05), name
        assert row["mean_ppm"] == pytest.approx(dchi, rel=0.1), name
        assert row["volume_mm3"] == pytest.approx(volume, rel=0.1), name
    mixed = _at(res, (46, 46, 34), tol=3.0)
    assert mixed is not None and mixed["class"] == "indeterminate"
    vein_rows = [r for r in res.rows if vein[int(round(r["x"])), int(round(r["y"])),
                                            int(round(r["z"]))]]
    assert vein_rows and all(r["class"] == "vein" for r in vein_rows)
    assert res.summary["counts"]["microbleed"] == 2
    assert res.summary["counts"]["calcification"] == 1
    assert set(lesions.LESION_COLUMNS) == set(res.rows[0])
    assert res.finding_labels.max() == len(res.rows)


def test_shape_measures_separate_ball_from_tube(scene):
    chi, mask, truth, vein = scene
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0), vessel_tree=False)
    bleed = _at(res, truth["bleed_b"][0])
    assert bleed["tubularity"] < 0.3 and bleed["elongation"] < 1.5
    vein_row = max((r for r in res.rows if r["class"] == "vein"), key=lambda r: r["n_voxels"])
    assert vein_row["elongation"] > 5


def test_evaluation_against_reference(scene):
    chi, mask, truth, vein = scene
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0))
    ref = [{"id": i, "kind": "microbleed" if d > 0 else "calcification", "center_vox": c,
            "radius_mm": r} for i, (c, r, d) in enumerate(truth.values(), start=1)]
    veins = [{"start_vox": (30, 4, 6), "end_vox": (36, 60, 40), "radius_mm": 1.6}]
    ev = lesions.evaluate_lesions(res, ref, veins, (1.0, 1.0, 1.0))
    assert ev["tp"] == 3 and ev["fn"] == 0 and ev["fp"] == 0
    assert ev["sensitivity"] == 1.0 and ev["sensitivity_ci"][0] == pytest.approx(0.4385, abs=1e-3)
    assert ev["specificity"] == 1.0 and ev["veins_called_lesion"] == []
    assert ev["vein_derived_findings"]
    assert ev["auc"] == 1.0
    # A wrongly labelled reference lowers sensitivity.
    wrong = [dict(ref[0], kind="calcification")] + ref[1:]
    assert lesions.evaluate_lesions(res, wrong, veins, (1, 1, 1))["tp"] == 2


def test_noise_estimate_and_bad_inputs(scene):
    chi, mask, _, _ = scene
    sigma = lesions.noise_sigma_ppm(chi, mask, (1, 1, 1))
    assert 0.006 < sigma < 0.012  # white noise 0.01 minus what the smoothing keeps
    with pytest.raises(InputError):
        lesions.detect_lesions(chi, np.zeros(SHAPE, bool), (1, 1, 1))
    with pytest.raises(InputError):
        lesions.detect_lesions(chi, mask[:, :, :10], (1, 1, 1))


def test_phantom_truth_all_lesions_right_sign_no_vein_called_bleed():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=0)
    res = lesions.detect_lesions(ph.chi_ppm, ph.brain_mask, ph.voxel_size)
    ev = lesions.evaluate_lesions(res, ph.lesions, ph.veins, ph.voxel_size)
    assert ev["sensitivity"] == 1.0, ev["per_lesion"]
    assert ev["veins_called_lesion"] == []
    assert ev["fp"] == 0
    for item in ev["per_lesion"]:
        les = next(x for x in ph.lesions if x["id"] == item["lesion_id"])
        expected = (les["chi_ppm"] + 0.03) * les["radius_mm"] ** 3 * 4 / 3 * np.pi
        assert np.sign(item["moment_ppm_mm3"]) == np.sign(expected)
        assert item["moment_ppm_mm3"] == pytest.approx(expected, rel=0.35)


def test_cli_lesions_with_truth_table(tmp_path, scene):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import load_nifti, save_nifti

    chi, mask, truth, _ = scene
    save_nifti(tmp_path / "chi.nii.gz", chi, np.eye(4))
    save_nifti(tmp_path / "mask.nii.gz", mask, np.eye(4))
    lines = ["kind\tx\ty\tz\tradius_mm\tx1\ty1\tz1"]
    for c, r, d in truth.values():
        lines.append(f"{'microbleed' if d > 0 else 'calcification'}\t{c[0]}\t{c[1]}\t{c[2]}\t"
                     f"{r}\t\t\t")
    lines.append("vein\t30\t4\t6\t1.6\t36\t60\t40")
    (tmp_path / "truth.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "lesions.tsv"
    assert main(["lesions", str(tmp_path / "chi.nii.gz"), str(tmp_path / "mask.nii.gz"),
                 "--truth", str(tmp_path / "truth.tsv"), "-o", str(out)]) == 0
    header = out.read_text().splitlines()[0].split("\t")
    assert header[:8] == ["id", "x", "y", "z", "volume_mm3", "mean_ppm", "moment_ppm_mm3",
                          "class"]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["evaluation"]["sensitivity"] == 1.0
    labels, _, _ = load_nifti(tmp_path / "lesions_labels.nii.gz")
    assert labels.max() == len(payload["rows"])


def test_two_bleeds_bridged_by_a_streak_are_two_findings():
    """Two bleeds 12 mm apart (as microbleeds 1 and 3 of the head phantom) with a dark QSM
    streak between them that comes within 1 mm of both: the streak joins the stronger bleed
    (its source), but it must not chain the two bleeds into one (elongated, 'vein') finding."""
    rng = np.random.default_rng(3)
    chi = (-0.03 + rng.normal(0, 0.01, SHAPE)).astype(np.float32)
    weak, strong = np.array([30.0, 30.0, 30.0]), np.array([30.0, 30.0, 18.0])
    chi[_ball(weak, 3.0)] += 0.6
    chi[_ball(strong, 3.5)] += 1.2
    streak = (((_grid() - (weak + strong) / 2) / (1.6, 1.6, 3.0)) ** 2).sum(-1) <= 1
    chi[streak] -= 0.4
    mask = np.zeros(SHAPE, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0), vessel_tree=False)
    for centre, radius, dchi in ((weak, 3.0, 0.6), (strong, 3.5, 1.2)):
        row = _at(res, centre)
        assert row is not None and row["class"] == "microbleed", row
        assert row["elongation"] < 1.5
        volume = float(_ball(centre, radius).sum())
        assert row["moment_ppm_mm3"] == pytest.approx(dchi * volume, rel=0.15)
    assert res.summary["counts"]["microbleed"] == 2
    # The streak belongs to the stronger source's finding, not a finding of its own.
    assert res.summary["counts"]["calcification"] == 0
    assert res.summary["counts"]["indeterminate"] == 0


def test_large_hemorrhage_edge_patch_and_thumbnails(tmp_path, capsys):
    """A 1.1 mL haematoma is its own class with volume and moment (not 'rejected'), a bright
    patch at the mask edge is an artefact, a dark streak is an artefact, a vein crossing the
    slices (a dot on each slice, weaker between its ends) is a vein, and every finding gets a
    reason and a thumbnail; the terminal says a large source is present."""
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti

    rng = np.random.default_rng(5)
    chi = (-0.02 + rng.normal(0, 0.01, SHAPE)).astype(np.float32)
    chi[_ball((20, 20, 24), 6.4)] += 1.0  # 4/3 pi 6.4^3 = 1.10 mL
    chi[_ball((48, 16, 24), 2.0)] += 0.8  # a microbleed
    chi[_ball((56, 48, 2), 1.5)] += 0.8  # at the edge of the mask (z = 2..45)
    chi[_rod((16, 50, 14), (36, 50, 30), 1.0)] -= 0.5  # a thin dark streak
    rod = _rod((46, 44, 4), (46, 44, 44), 1.2)
    z = _grid()[..., 2]
    chi[rod] += np.where(np.abs(z - 24) > 14, 0.6, 0.2)[rod]  # vein, bright near its ends
    mask = np.zeros(SHAPE, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0), vessel_tree=False)
    big = _at(res, (20, 20, 24))
    assert big["class"] == "large_hemorrhage"
    assert big["volume_ml"] == pytest.approx(1.10, rel=0.15)
    assert big["moment_ppm_ml"] == pytest.approx(1.10, rel=0.15)
    assert _at(res, (48, 16, 24))["class"] == "microbleed"
    assert _at(res, (56, 48, 2.5))["class"] == "artefact"
    assert "edge" in _at(res, (56, 48, 2.5))["reason"]
    assert _at(res, (26, 50, 22), tol=4)["class"] == "artefact"
    vein_rows = [r for r in res.rows if rod[int(round(r["x"])), int(round(r["y"])),
                                          int(round(r["z"]))]]
    assert vein_rows and all(r["class"] == "vein" for r in vein_rows), vein_rows
    assert res.summary["n_rejected"] == 0 and all(r["reason"] for r in res.rows)
    save_nifti(tmp_path / "chi.nii.gz", chi, np.eye(4))
    save_nifti(tmp_path / "mask.nii.gz", mask, np.eye(4))
    out = tmp_path / "lesions.tsv"
    assert main(["lesions", str(tmp_path / "chi.nii.gz"), str(tmp_path / "mask.nii.gz"),
                 "--no-vessel-tree", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ATTENTION: large paramagnetic source" in text and "mL" in text
    header = out.read_text().splitlines()[0].split("\t")
    assert "reason" in header and header[-1] == "thumbnail"
    payload = json.loads(out.with_suffix(".json").read_text())
    for row in payload["rows"]:
        assert (tmp_path / row["thumbnail"]).stat().st_size > 1000


def test_residual_map_marks_artefacts(scene):
    """With the echo-fit residual given, a finding where it is far above the brain median (a
    phase that is not a field: flow, air, motion) is an artefact, with the ratio in its row."""
    chi, mask, truth, _ = scene
    residual = np.ones(SHAPE, np.float32)
    centre, radius, _ = truth["bleed_b"]
    residual[_ball(centre, radius + 1)] = 10.0
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0), residual=residual)
    row = _at(res, centre)
    assert row["class"] == "artefact" and row["residual_ratio"] == pytest.approx(10.0)
    assert "residual" in row["reason"]
    assert _at(res, truth["bleed_a"][0])["class"] == "microbleed"
    with pytest.raises(InputError):
        lesions.detect_lesions(chi, mask, (1, 1, 1), residual=residual[:, :, :5])


def test_intracerebral_haematoma_wider_than_the_background_box():
    """A 3 cm haematoma (14.1 mL, +0.8 ppm) is wider than the 14 mm background filter, which
    erases its local contrast: it is found on chi itself, one finding of class
    large_hemorrhage with its volume and moment, and a microbleed elsewhere is still found."""
    rng = np.random.default_rng(0)
    shape = (80, 80, 64)
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    chi = (-0.02 + rng.normal(0, 0.01, shape)).astype(np.float32)
    chi[np.linalg.norm(g - (40, 40, 32), axis=-1) <= 15] += 0.8
    chi[np.linalg.norm(g - (12, 12, 32), axis=-1) <= 2] += 0.8
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0), vessel_tree=False)
    classes = sorted(r["class"] for r in res.rows)
    assert classes == ["large_hemorrhage", "microbleed"], res.rows
    big = next(r for r in res.rows if r["class"] == "large_hemorrhage")
    truth_ml = 4 / 3 * np.pi * 15**3 / 1000
    assert big["volume_ml"] == pytest.approx(truth_ml, rel=0.05)
    assert big["moment_ppm_ml"] == pytest.approx(0.8 * truth_ml, rel=0.05)
    assert res.summary["large_hemorrhage"][0]["volume_ml"] == big["volume_ml"]


def test_noise_free_map_gives_no_infinite_cells():
    """Found by the fuzz campaign (seed 2027): a χ map without noise wrote t_moment -inf."""
    chi = np.zeros((40, 40, 40), np.float32)
    mask = np.zeros(chi.shape, bool)
    mask[4:36, 4:36, 4:36] = True
    zz, yy, xx = np.indices(chi.shape)
    chi[(xx - 20) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 <= 9] = 0.5
    res = lesions.detect_lesions(chi, mask, (1.0, 1.0, 1.0))
    assert res.rows
    text = format_tsv(res.rows, lesions.LESION_COLUMNS)
    assert "inf" not in text

"""Regional chi statistics, references, iron conversion and z-scores on exact synthetic truths."""

import json

import numpy as np
import pytest

from qsmkit.analysis import format_tsv, iron, roi
from qsmkit.errors import InputError

VS = (1.0, 1.0, 2.0)


def _blocks():
    """A 20x20x10 grid: CSF block, putamen, pallidum and white matter with known chi."""
    labels = np.zeros((20, 20, 10), np.int32)
    chi = np.zeros(labels.shape, np.float32)
    labels[:, :, :] = 2          # Left-Cerebral-White-Matter
    chi[:] = -0.03
    labels[0:4, 0:4, 0:4] = 4    # Left-Lateral-Ventricle (CSF)
    chi[0:4, 0:4, 0:4] = 0.01
    labels[5:10, 5:10, 2:6] = 12  # Left-Putamen: 5x5x4 = 100 voxels
    chi[5:10, 5:10, 2:6] = 0.01 + iron.chi_from_iron(133.2 + 34.3)  # iron: z = +1
    labels[12:16, 12:16, 2:6] = 13  # Left-Pallidum: 64 voxels, two values
    chi[12:16, 12:16, 2:4] = 0.11
    chi[12:16, 12:16, 4:6] = 0.31
    return chi, labels


def test_statistics_relative_to_csf_exact():
    chi, labels = _blocks()
    res = roi.roi_statistics(chi, labels, VS, reference="csf", normative="default")
    rows = res.by_name()
    assert res.reference["value_ppm"] == pytest.approx(0.01)
    put = rows["Left-Putamen"]
    assert put["n_voxels"] == 100 and put["volume_mm3"] == pytest.approx(200.0)
    assert put["mean_ppm"] == pytest.approx(iron.chi_from_iron(167.5), abs=1e-6)
    assert put["iron_mg_per_kg"] == pytest.approx(167.5, abs=0.01)
    assert put["z"] == pytest.approx(1.0, abs=1e-3)
    assert put["normative_name"] == "putamen"
    gp = rows["Left-Pallidum"]
    assert gp["mean_ppm"] == pytest.approx(0.20, abs=1e-6)
    assert gp["median_ppm"] == pytest.approx(0.20, abs=1e-6)
    assert gp["sd_ppm"] == pytest.approx(np.std([0.1] * 32 + [0.3] * 32, ddof=1), abs=1e-6)
    assert gp["total_ppm_mm3"] == pytest.approx(0.20 * 128.0, abs=1e-4)
    assert rows["Left-Cerebral-White-Matter"]["iron_mg_per_kg"] is None  # no iron in WM
    assert set(roi.ROI_COLUMNS) <= set(put)


def test_reference_choices():
    chi, labels = _blocks()
    none = roi.roi_statistics(chi, labels, VS, reference="none").by_name()
    assert none["Left-Pallidum"]["mean_ppm"] == pytest.approx(0.21, abs=1e-6)
    brain = roi.roi_statistics(chi, labels, VS, reference="brain")
    assert brain.reference["value_ppm"] == pytest.approx(float(chi.mean()), abs=1e-6)
    by_name = roi.roi_statistics(chi, labels, VS, reference="Left-Putamen").by_name()
    assert by_name["Left-Putamen"]["mean_ppm"] == pytest.approx(0.0, abs=1e-6)
    by_number = roi.roi_statistics(chi, labels, VS, reference=13).by_name()
    assert by_number["Left-Pallidum"]["mean_ppm"] == pytest.approx(0.0, abs=1e-6)
    auto = roi.roi_statistics(chi, labels, VS)
    assert auto.reference["kind"] == "csf"
    no_csf = np.where(labels == 4, 2, labels)
    assert roi.roi_statistics(chi, no_csf, VS).reference["kind"] == "brain"
    with pytest.raises(InputError, match="csf"):
        roi.roi_statistics(chi, no_csf, VS, reference="csf")
    with pytest.raises(InputError):
        roi.roi_statistics(chi, labels, VS, reference="Hippocampus")


def test_erosion_and_mask():
    chi, labels = _blocks()
    eroded = roi.roi_statistics(chi, labels, (1, 1, 1), erode_mm=1.5).by_name()
    assert eroded["Left-Putamen"]["n_voxels"] == 3 * 3 * 2
    mask = np.zeros(chi.shape, bool)
    mask[:, :, :4] = True
    masked = roi.roi_statistics(chi, labels, VS, mask=mask).by_name()
    assert masked["Left-Pallidum"]["n_voxels"] == 32
    assert masked["Left-Pallidum"]["mean_ppm"] == pytest.approx(0.10, abs=1e-6)


def test_lookup_table_formats():
    fs = "# FreeSurferColorLUT\n0   Unknown  0 0 0 0\n12  Left-Putamen  236 13 176 0\n"
    assert roi.parse_lut(fs) == {0: "Unknown", 12: "Left-Putamen"}
    tsv = "index\tname\tchi_ppm\n4\tcsf\t0\n14\tglobus_pallidus_left\t0.17\n"
    assert roi.parse_lut(tsv) == {4: "csf", 14: "globus_pallidus_left"}
    assert roi.parse_lut(json.dumps({"3": "x"})) == {3: "x"}
    assert roi.default_lut()[13] == "Left-Pallidum"
    with pytest.raises(InputError):
        roi.parse_lut("index\tname\nnot-a-number\tx\n")
    with pytest.raises(InputError):
        roi.parse_lut("")


def test_normative_matching_and_user_table():
    table = iron.load_normative()
    assert iron.match_normative("Right-Pallidum", table).name == "globus_pallidus"
    assert iron.match_normative("substantia_nigra_left", table).name == "substantia_nigra"
    assert iron.match_normative("Left-Thalamus-Proper", table).name == "thalamus"
    assert iron.match_normative("Left-Hippocampus", table) is None
    user = iron.parse_normative("name\taliases\tquantity\tmean\tsd\n"
                                "pallidum\t\tchi_ppm\t0.10\t0.05\n")
    chi, labels = _blocks()
    rows = roi.roi_statistics(chi, labels, VS, normative=user).by_name()
    assert rows["Left-Pallidum"]["z"] == pytest.approx((0.20 - 0.10) / 0.05)
    assert rows["Left-Putamen"]["z"] is None
    assert roi.roi_statistics(chi, labels, VS, normative=None).rows[0]["z"] is None
    with pytest.raises(InputError):
        iron.parse_normative("name\tquantity\tmean\tsd\nx\tcopper\t1\t1\n")


def test_iron_conversion_factor():
    assert iron.IRON_PPM_PER_MG_PER_KG == pytest.approx(0.00097)
    assert iron.iron_from_chi(0.097) == pytest.approx(100.0)
    assert iron.chi_from_iron(iron.iron_from_chi(0.2)) == pytest.approx(0.2)
    assert iron.iron_mmol_per_l(55.845) == pytest.approx(1.04)
    with pytest.raises(InputError):
        iron.iron_from_chi(0.1, ppm_per_mg_per_kg=0)


def test_bad_inputs():
    chi, labels = _blocks()
    with pytest.raises(InputError):
        roi.roi_statistics(chi, labels[:, :, :5], VS)
    with pytest.raises(InputError):
        roi.roi_statistics(chi, labels + 0.4, VS)
    with pytest.raises(InputError):
        roi.roi_statistics(chi, np.zeros_like(labels), VS)
    with pytest.raises(InputError):
        roi.roi_statistics(chi, labels, (1, 1))


def test_phantom_truth_deep_grey_exact():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((64, 64, 64), (3.0, 3.0, 3.0), seed=1)
    res = roi.roi_statistics(ph.chi_ppm, ph.labels, ph.voxel_size, lut=ph.label_names,
                             mask=ph.brain_mask, reference="csf", normative="default")
    rows = res.by_name()
    for label, name in ph.label_names.items():
        if name.split("_")[0] in ("caudate", "putamen", "globus", "thalamus", "substantia",
                                  "red", "dentate") and name in rows:
            assert rows[name]["mean_ppm"] == pytest.approx(ph.label_chi_ppm[label], abs=1e-6)
            assert rows[name]["z"] is not None


def test_cli_roi_writes_tsv_json_png(tmp_path):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti

    chi, labels = _blocks()
    affine = np.diag([*VS, 1.0])
    save_nifti(tmp_path / "chi.nii.gz", chi, affine)
    save_nifti(tmp_path / "aseg.nii.gz", labels.astype(np.int16), affine)
    out = tmp_path / "res" / "roi.tsv"
    assert main(["roi", str(tmp_path / "chi.nii.gz"), str(tmp_path / "aseg.nii.gz"),
                 "--reference", "csf", "--normative", "postmortem", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:10] == ["label", "name", "n_voxels", "volume_mm3", "mean_ppm",
                           "median_ppm", "sd_ppm", "total_ppm_mm3", "iron_mg_per_kg", "z"]
    put = dict(zip(header, next(ln for ln in lines if "Left-Putamen" in ln).split("\t"),
                   strict=True))
    assert float(put["z"]) == pytest.approx(1.0, abs=1e-3)
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["command"] == "roi" and payload["reference"]["kind"] == "csf"
    assert len(payload["rows"]) == 4 and payload["inputs"]
    assert out.with_suffix(".png").stat().st_size > 1000
    # refuses to overwrite without --force; bad input exits 2
    assert main(["roi", str(tmp_path / "chi.nii.gz"), str(tmp_path / "aseg.nii.gz"),
                 "-o", str(out)]) == 2
    assert main(["roi", str(tmp_path / "chi.nii.gz"), str(tmp_path / "missing.nii.gz"),
                 "-o", str(tmp_path / "x.tsv")]) == 2


def test_format_tsv_missing_values():
    text = format_tsv([{"a": 1, "b": None}, {"a": float("nan"), "b": True}], ["a", "b"])
    assert text == "a\tb\n1\tn/a\nn/a\ttrue\n"

"""`qsmkit demo` end to end: phantom -> chi -> scores -> analyses -> report (and in a browser)."""

import csv
import json

import pytest

from qsmkit.cli.main import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    code = main(["demo", str(out), "--shape", "96,96,96", "--voxel-size", "2,2,2"])
    assert code == 0
    return out


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.slow
def test_demo_writes_everything(demo_dir):
    for name in ("chi.nii.gz", "field_hz.nii.gz", "local_field_hz.nii.gz", "mask.nii.gz",
                 "r2star.nii.gz", "magnitude.nii.gz", "qsmkit.json", "report.html",
                 "metrics.json", "chi.png", "chi_error.png", "roi.tsv", "lesions.tsv",
                 "rims.tsv", "veins.tsv", "input/mag.nii.gz", "input/phase.nii.gz"):
        assert (demo_dir / name).exists(), name
    assert not list(demo_dir.parent.glob(".demo.partial-*"))
    record = json.loads((demo_dir / "qsmkit.json").read_text())
    assert record["summary"] and record["timings_s"]


@pytest.mark.slow
def test_demo_accuracy(demo_dir):
    scores = json.loads((demo_dir / "metrics.json").read_text())
    # 2 mm grid, 5 echoes, SNR 100, from raw wrapped phase with the default pipeline.
    assert scores["nrmse"] < 45
    assert 0.85 <= scores["dgm_slope"] <= 1.15
    assert scores["brain_coverage_percent"] > 90


@pytest.mark.slow
def test_demo_lesion_table_shows_the_phantom_lesions(demo_dir):
    classes = [row["class"] for row in _rows(demo_dir / "lesions.tsv")]
    assert "microbleed" in classes and "calcification" in classes
    html = (demo_dir / "report.html").read_text()
    assert "microbleed" in html and "calcification" in html


@pytest.mark.slow
@pytest.mark.browser
def test_demo_report_in_browser(demo_dir, page, tmp_path):
    page.open(demo_dir / "report.html")
    assert page.broken_images() == []
    before = page.viewer_state()
    page.set_slider(int(before["slice"]) + 3)
    after = page.viewer_state()
    assert after["slice"] != before["slice"] and after["src"] != before["src"]
    assert page.console_errors() == []
    text = page.driver.find_element("tag name", "body").text
    assert "microbleed" in text and "calcification" in text
    shot = page.screenshot(tmp_path / "demo_report.png")
    assert shot.stat().st_size > 20_000

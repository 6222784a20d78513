"""The reports in a real browser: headless Chromium through Selenium.

Skipped cleanly when selenium, chromium or chromedriver is missing (``.ci/run`` installs the
Debian packages chromium and chromium-driver). Fixtures ``page`` and ``synthetic_run`` are in
conftest.py.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_screenshot(path, min_bytes=20_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes  # a blank page compresses to a few kB
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[1] >= 1000 and pixels.shape[0] >= 800
    assert pixels[..., :3].std() > 0.05  # not a uniform colour


def test_checks_detect_broken_pages(page, tmp_path):
    """The checks used below can fail: a missing image and a script error are both caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' "
                   "href='data:,'></head><body><img id='x' src='missing.png' alt='missing'>"
                   "<script>undefinedFunction();</script></body></html>")
    page.open(bad)
    assert [i["id"] for i in page.broken_images()] == ["x"]
    messages = " ".join(e["message"] for e in page.console_errors())
    assert "undefinedFunction" in messages


def test_subject_report_in_browser(page, synthetic_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page.open(synthetic_run / "report.html")
    images = page.images()
    # 4 maps + 3 QC figures + the viewer + one thumbnail per lesion, all decoded.
    assert len(images) >= 4 + 3 + 1 + 3
    assert page.broken_images() == []
    assert all(i["src"].startswith("data:image/png;base64,") for i in images)

    # The slice viewer changes slice (and image) on input, within its range.
    before = page.viewer_state()
    assert int(before["max"]) == 31 and before["naturalWidth"] > 0
    target = int(before["slice"]) + 5
    page.set_slider(target)
    after = page.viewer_state()
    assert after["slice"] == str(target) and after["value"] == str(target)
    assert after["src"] != before["src"]
    assert f"axial slice {target}" in after["label"]
    page.set_slider(1000)  # clamped to the last slice
    assert page.viewer_state()["slice"] == "31"
    # Arrow keys on the focused range input move it by one slice.
    slider = page.driver.find_element(By.ID, "viewer-slider")
    page.set_slider(10)
    slider.send_keys(Keys.ARROW_LEFT)
    assert page.viewer_state()["slice"] == "9"
    # ...and on the focused image frame.
    page.driver.find_element(By.ID, "viewer-frame").send_keys(Keys.ARROW_UP)
    state = page.viewer_state()
    assert state["slice"] == "10" and state["naturalWidth"] > 0

    # The lesion table lists every lesion with its class.
    table = page.driver.find_element(By.CSS_SELECTOR, "table[data-source='lesions.tsv']")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    classes = {r.find_element(By.CSS_SELECTOR, "td:first-child").text:
               r.find_element(By.CSS_SELECTOR, ".class-tag").text for r in rows}
    assert classes == {"L1": "microbleed", "L2": "calcification", "L3": "indeterminate"}
    assert len(table.find_elements(By.CSS_SELECTOR, "img.thumb")) == 3

    assert page.console_errors() == []
    shot = page.screenshot(tmp_path / "report.png")
    _assert_screenshot(shot)


def test_cohort_page_in_browser(page, synthetic_run, tmp_path):
    from selenium.webdriver.common.by import By

    from qsmkit.report.cohort import write_cohort_page

    output = tmp_path / "derivatives"
    report_dir = output / "sub-01" / "qsmkit" / "sub-01"
    report_dir.mkdir(parents=True)
    shutil.copy(synthetic_run / "report.html", report_dir / "report.html")
    (output / "group").mkdir()
    (output / "group" / "qc.tsv").write_text("subject\n01\n")
    results = [
        {"label": "sub-01", "subject": "01", "session": "", "status": "done", "seconds": 12.5},
        {"label": "sub-02", "subject": "02", "session": "", "status": "skipped", "seconds": 0},
        {"label": "sub-03", "subject": "03", "session": "", "status": "failed", "seconds": 1.0,
         "error": "the brain mask is empty; check the magnitude or give --mask"},
    ]
    roi_rows = [{"subject": s, "name": n, "mean_ppm": v, "group": g}
                for s, g in (("01", "control"), ("02", "pd"), ("03", "pd"))
                for n, v in (("putamen", 0.05), ("caudate", 0.04))]
    qc_rows = [{"subject": f"{i:02d}", "chi_sd_ppm": 0.05 + 0.001 * i,
                "local_field_sd_hz": 2.0, "fit_residual_median": 0.01,
                "chi_mask_ml": 1200.0 + i} for i in range(1, 6)]
    qc_rows[4]["chi_sd_ppm"] = 0.5  # one outlier
    path = write_cohort_page(output, results, roi_rows, qc_rows)

    page.open(path)
    assert len(page.images()) == 2
    assert page.broken_images() == []
    text = page.driver.find_element(By.ID, "outliers").text
    assert "05" in text and "χ SD" in text
    links = page.driver.find_elements(By.CSS_SELECTOR, "#subjects a")
    assert [a.text for a in links] == ["report"]
    assert page.console_errors() == []
    page.screenshot(tmp_path / "cohort.png")
    _assert_screenshot(tmp_path / "cohort.png", min_bytes=10_000)

    links[0].click()  # the subject's report opens from the cohort page
    assert page.driver.current_url == (report_dir / "report.html").resolve().as_uri()
    assert page.driver.title == "synthetic run"
    assert page.broken_images() == [] and page.console_errors() == []

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


# Anatomical figures of a run folder: every one must carry orientation letters.
ANATOMICAL_FIGURES = ("magnitude.png", "local_field.png", "chi.png", "r2star.png",
                      "qc_background.png", "qc_mask.png", "qc_residual.png")


def test_report_panels_are_lettered_and_the_viewer_toggles_colour(page, synthetic_run):
    page.open(synthetic_run / "report.html")
    figures = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('figure img')).map(i => ({file: "
        "i.getAttribute('data-file'), orientation: i.getAttribute('data-orientation'), "
        "caption: i.closest('figure').querySelector('figcaption').textContent}));")
    shown = {f["file"]: f for f in figures}
    assert set(ANATOMICAL_FIGURES) <= set(shown)
    for name in ANATOMICAL_FIGURES:
        text = shown[name]["orientation"] or ""
        # The synthetic run is stored LAS: the letters are those of the radiological view.
        assert "left R right L bottom P top A" in text, (name, text)
        if name not in ("qc_mask.png",):  # the montage is axial only
            assert "left A right P bottom I top S" in text, (name, text)  # sagittal
        assert "Orientation (radiological)" in shown[name]["caption"]
    letters = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('#viewer-frame .orient'))"
        ".map(e => e.className.split(' ')[1] + ':' + e.textContent);")
    assert sorted(letters) == ["bottom:P", "left:R", "right:L", "top:A"]
    # Grey by default; the toggle recolours the current slice and keeps it when sliding.
    state = page.driver.execute_script(
        "var i = document.getElementById('viewer-image'); return i.getAttribute('data-cmap');")
    assert state == "grey"
    page.driver.find_element("id", "viewer-colour").click()
    page.driver.implicitly_wait(0)
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and page.driver.execute_script(
            "return document.getElementById('viewer-image').getAttribute('data-cmap');"
    ) != "colour":
        time.sleep(0.05)
    colour = page.driver.execute_script(
        "var i = document.getElementById('viewer-image'); var c = document.createElement("
        "'canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight; var x = "
        "c.getContext('2d'); x.drawImage(i, 0, 0); var d = x.getImageData(0, 0, c.width, "
        "c.height).data; var n = 0; for (var p = 0; p < d.length; p += 4) { if (Math.abs("
        "d[p] - d[p + 2]) > 40) n++; } return [i.getAttribute('data-cmap'), n];")
    assert colour[0] == "colour" and colour[1] > 0  # red/blue pixels, not grey
    assert page.broken_images() == [] and page.console_errors() == []


def test_report_written_in_a_staging_folder_names_no_staging_folder(page, synthetic_run,
                                                                     tmp_path):
    """`qsmkit run` writes the report inside ``.NAME.partial-XXXX`` and then renames the
    folder to NAME (:func:`qsmkit.io.output.staged_output`): the page never names it."""
    import json

    from qsmkit.io.output import staged_output
    from qsmkit.report.html import write_report

    out = tmp_path / "subject-07"
    with staged_output(out) as stage:
        assert ".partial" in stage.name
        for item in synthetic_run.iterdir():
            shutil.copy(item, stage / item.name)
        record = json.loads((stage / "qsmkit.json").read_text())
        record.pop("title", None)  # as `qsmkit run` writes it: no title of its own
        (stage / "qsmkit.json").write_text(json.dumps(record))
        write_report(stage)
    page.open(out / "report.html")
    assert page.driver.title == "qsmkit report: subject-07"
    assert page.driver.find_element("css selector", "header h1").text == page.driver.title
    text = page.driver.execute_script("return document.documentElement.outerHTML;")
    assert ".partial" not in text
    assert page.broken_images() == [] and page.console_errors() == []


def test_cohort_page_shows_every_region(page, tmp_path):
    from selenium.webdriver.common.by import By

    from qsmkit.report.cohort import REGIONS_PER_PLOT, write_cohort_page

    regions = [f"region {i:02d}" for i in range(22)] + ["thalamus", "substantia nigra",
                                                         "white matter"]
    roi_rows = [{"subject": s, "name": n, "mean_ppm": 0.01 * i, "group": g}
                for s, g in (("01", "control"), ("02", "pd"))
                for i, n in enumerate(regions)]
    results = [{"label": f"sub-{s}", "subject": s, "session": "", "status": "done",
                "seconds": 1.0} for s in ("01", "02")]
    path = write_cohort_page(tmp_path / "derivatives", results, roi_rows, [])
    page.open(path)
    plots = page.driver.find_elements(By.CSS_SELECTOR, "figure.regional img")
    assert len(plots) == -(-len(regions) // REGIONS_PER_PLOT)  # 25 regions: 3 plots
    import json

    shown = [name for img in plots for name in json.loads(img.get_attribute("data-regions"))]
    assert sorted(shown) == sorted(regions)
    captions = " ".join(f.text for f in page.driver.find_elements(
        By.CSS_SELECTOR, "figure.regional figcaption"))
    for name in ("thalamus", "substantia nigra", "white matter"):
        assert name in captions
    assert page.broken_images() == [] and page.console_errors() == []

"""Shared fixtures for the report tests: a headless Chromium page and a small run folder.

``page`` drives headless Chromium through Selenium (skipped cleanly when selenium, chromium or
chromedriver is missing; ``.ci/run`` installs the Debian packages). Typical use::

    @pytest.mark.browser
    def test_report(page, tmp_path):
        page.open(folder / "report.html")
        assert page.broken_images() == []
        assert page.console_errors() == []
        page.screenshot(tmp_path / "report.png")

``synthetic_run`` is a run folder made without the reconstruction pipeline (maps, figures,
QC figures, lesion and region tables, provenance, report.html), shared by the report tests.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-extensions", "--window-size=1280,1000",
)


def _which(names, fallback_dir="/usr/bin"):
    for name in names:
        found = shutil.which(name) or (
            os.path.join(fallback_dir, name) if os.access(os.path.join(fallback_dir, name),
                                                          os.X_OK) else None)
        if found:
            return found
    return None


class BrowserPage:
    """A page in headless Chromium with the checks every report test makes."""

    def __init__(self, driver):
        self.driver = driver

    def open(self, path, *, timeout_s: float = 30.0) -> None:
        """Load a local file and wait until the document and all its images are complete."""
        self.console_errors()  # drop entries left by an earlier page
        self.driver.get(Path(path).resolve().as_uri())
        deadline = time.monotonic() + timeout_s
        script = ("return document.readyState === 'complete' && "
                  "Array.from(document.images).every(i => i.complete);")
        while not self.driver.execute_script(script):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not finish loading in {timeout_s} s")
            time.sleep(0.05)

    def images(self) -> list[dict]:
        """Every <img>: its id, alt text, ``complete`` and ``naturalWidth``."""
        return self.driver.execute_script(
            "return Array.from(document.images).map(i => ({id: i.id, alt: i.alt, "
            "complete: i.complete, naturalWidth: i.naturalWidth, "
            "src: i.currentSrc.slice(0, 40)}));")

    def broken_images(self) -> list[dict]:
        """Images that did not decode (``naturalWidth`` 0)."""
        return [i for i in self.images() if not (i["complete"] and i["naturalWidth"] > 0)]

    def console_errors(self) -> list[dict]:
        """SEVERE entries of the browser console since the last call (reading clears them)."""
        return [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def viewer_state(self) -> dict:
        """Slice index, source and slider value of the χ slice viewer."""
        return self.driver.execute_script(
            "var i = document.getElementById('viewer-image'), "
            "s = document.getElementById('viewer-slider');"
            "return {slice: i.getAttribute('data-slice'), src: i.getAttribute('src'), "
            "value: s.value, max: s.max, label: document.getElementById('viewer-label')"
            ".textContent, naturalWidth: i.naturalWidth};")

    def set_slider(self, value: int) -> None:
        """Move the viewer's range input as a user would: set it and fire ``input``."""
        self.driver.execute_script(
            "var s = document.getElementById('viewer-slider'); s.value = arguments[0];"
            "s.dispatchEvent(new Event('input', {bubbles: true}));", str(value))

    def screenshot(self, path, *, full_page: bool = True, width: int = 1280) -> Path:
        """Save a PNG of the page (the whole scrolled height when ``full_page``)."""
        if full_page:
            height = int(self.driver.execute_script(
                "return Math.max(document.body.scrollHeight, "
                "document.documentElement.scrollHeight);"))
            self.driver.set_window_size(width, min(max(height, 600) + 140, 16000))
        path = Path(path)
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"could not save a screenshot to {path}")
        self.driver.set_window_size(width, 1000)
        return path


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium WebDriver for the session (skips when it cannot be provided)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = _which(CHROMIUM_NAMES)
    chromedriver = _which(CHROMEDRIVER_NAMES)
    if not chromium or not chromedriver:
        pytest.skip("chromium and chromedriver are needed (Debian: chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser):
    """A :class:`BrowserPage` on the session's Chromium."""
    return BrowserPage(browser)


def _ellipsoid(shape, centre, radii):
    grid = np.indices(shape, dtype=np.float32)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1


def _ball(shape, centre, radius):
    return _ellipsoid(shape, centre, (radius,) * 3)


# Lesions of the synthetic run: id, voxel centre, radius (voxels), chi (ppm), class.
SYNTHETIC_LESIONS = (
    ("L1", (12, 30, 16), 1.6, 0.8, "microbleed"),
    ("L2", (27, 18, 12), 1.6, -0.6, "calcification"),
    ("L3", (20, 34, 21), 1.2, 0.4, "indeterminate"),
)


def make_run_folder(folder: Path) -> Path:
    """Write a small run folder (LAS affine, 2 mm voxels) as ``qsmkit run`` would."""
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.provenance import write_provenance
    from qsmkit.pipeline import QSMConfig, QSMResult
    from qsmkit.report.figures import orthogonal_slices
    from qsmkit.report.qc import qc_figures

    rng = np.random.default_rng(0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (40, 48, 32)
    affine = np.array([[-2.0, 0, 0, 40], [0, 2.0, 0, -50], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    brain = _ellipsoid(shape, (19.5, 23.5, 15.5), (15, 19, 12))
    local_mask = _ellipsoid(shape, (19.5, 23.5, 15.5), (13, 17, 10))
    chi = np.where(local_mask, 0.02 * rng.standard_normal(shape), 0).astype(np.float32)
    chi[_ellipsoid(shape, (14, 26, 15), (3, 4, 3))] = 0.12  # a "putamen"
    for _, centre, radius, value, _ in SYNTHETIC_LESIONS:
        chi[_ball(shape, centre, radius)] = value
    chi = np.where(local_mask, chi, 0).astype(np.float32)
    x = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None, None]
    local_field = np.where(local_mask, 3.0 * chi + 0.4 * x, 0).astype(np.float32)
    field = np.where(brain, local_field + 20.0 * x, 0).astype(np.float32)
    magnitude = np.where(brain, 1000 - 300 * chi, 60).astype(np.float32)
    magnitude += rng.normal(0, 15, shape).astype(np.float32)
    r2star = np.where(brain, 20 + 80 * np.clip(chi, 0, None), 0).astype(np.float32)
    residual = np.where(brain, 0.01 + 0.002 * rng.random(shape), 0).astype(np.float32)
    maps = {"chi.nii.gz": chi, "mask.nii.gz": local_mask, "brain_mask.nii.gz": brain,
            "magnitude.nii.gz": magnitude, "field_hz.nii.gz": field,
            "local_field_hz.nii.gz": local_field, "r2star.nii.gz": r2star}
    for name, data in maps.items():
        save_nifti(folder / name, data, affine)
    for name, data, title, unit, signed, region in (
            ("magnitude.png", magnitude, "Magnitude", "a.u.", False, brain),
            ("local_field.png", local_field, "Local field", "Hz", True, local_mask),
            ("chi.png", chi, "Susceptibility χ", "ppm", True, local_mask),
            ("r2star.png", r2star, "R2*", "1/s", False, brain)):
        orthogonal_slices(data, affine, folder / name, title=title, unit=unit, signed=signed,
                          mask=region, outline=brain if name == "magnitude.png" else None)
    result = QSMResult(
        chi_ppm=chi, field_hz=field, local_field_hz=local_field, mask=brain,
        local_mask=local_mask, r2star_per_s=r2star, magnitude=magnitude, fit_residual=residual,
        config=QSMConfig(fieldmap="complex"), timings_s={"mask": 0.1, "invert": 1.5}, info={})
    figures = qc_figures(result, affine, folder)
    lines = ["id\tx\ty\tz\tvolume_mm3\tmean_ppm\tmoment_ppm_mm3\tclass"]
    for lesion_id, centre, radius, value, cls in SYNTHETIC_LESIONS:
        volume = float(_ball(shape, centre, radius).sum()) * 8.0
        lines.append(f"{lesion_id}\t{centre[0]}\t{centre[1]}\t{centre[2]}\t{volume:.1f}\t"
                     f"{value:.3f}\t{value * volume:.2f}\t{cls}")
    (folder / "lesions.tsv").write_text("\n".join(lines) + "\n")
    (folder / "roi.tsv").write_text("label\tname\tn_voxels\tmean_ppm\n"
                                    "1\tputamen\t150\t0.118\n2\twhite matter\t9000\t-0.004\n")
    source = folder / "input.txt"
    source.write_text("synthetic input\n")
    write_provenance(folder, command="synthetic", config=result.config, inputs=[source],
                     extra={"b0_tesla": 3.0, "echo_times_s": [0.004, 0.008, 0.012],
                            "timings_s": result.timings_s, "figures": figures,
                            "title": "synthetic run"})
    from qsmkit.cli.main import main

    if main(["report", str(folder)]) != 0:
        raise RuntimeError("qsmkit report failed on the synthetic run folder")
    return folder


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """A run folder with maps, figures, tables, provenance and report.html (read-only use)."""
    return make_run_folder(tmp_path_factory.mktemp("synthetic-run") / "run")

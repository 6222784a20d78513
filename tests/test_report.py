"""The HTML report, the QC figures and the cohort page, without a browser."""

from __future__ import annotations

import base64
import io
import re
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest

from qsmkit.cli.main import main
from qsmkit.report import html as report_html
from qsmkit.report.cohort import qc_outliers, write_cohort_page
from qsmkit.report.qc import qc_figures, qc_metrics, residual_background

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAS = np.array([[-2.0, 0, 0, 40], [0, 2.0, 0, -50], [0, 0, 2.0, -30], [0, 0, 0, 1]])


def _decode(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix):])
    assert data[:8] == PNG_MAGIC
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def test_report_is_offline_and_embeds_every_image(synthetic_run):
    text = (synthetic_run / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"<link[^>]*rel=.stylesheet", text)
    sources = re.findall(r"<img[^>]*\bsrc=[\"']([^\"']+)[\"']", text)
    assert len(sources) >= 4 + 3 + 1 + 3  # maps, QC figures, viewer, lesion thumbnails
    for uri in sources:
        assert _decode(uri).shape[0] > 0
    for name in ("magnitude.png", "chi.png", "qc_background.png", "qc_mask.png",
                 "qc_residual.png"):
        assert f'data-file="{name}"' in text
    # The viewer carries one slice per axial plane of the 32-slice volume.
    assert "id='viewer-slider'" in text and "max='31'" in text


def test_report_tables_and_provenance(synthetic_run):
    text = (synthetic_run / "report.html").read_text(encoding="utf-8")
    lesions = text[text.index("data-source='lesions.tsv'"):]
    lesions = lesions[:lesions.index("</table>")]
    for cls in ("microbleed", "calcification", "indeterminate"):
        assert f"data-class='{cls}'" in lesions
    assert lesions.count("class=\"thumb\"") == 3
    assert "3 findings" in text
    assert "putamen" in text and "white matter" in text  # roi.tsv
    # Provenance: version, checksum of the input, timings with their total, config.
    from qsmkit import __version__
    from qsmkit.io.provenance import sha256_file

    assert f"qsmkit {__version__}" in text
    assert sha256_file(synthetic_run / "input.txt")[:16] in text
    assert "<th>1.60</th>" in text  # 0.1 + 1.5 s
    assert "&quot;bgremove&quot;: &quot;pdf&quot;" in text


def test_report_cli_rebuilds_and_rejects_empty_folders(synthetic_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "no qsmkit output" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert not (empty / "report.html").exists()

    # A folder with only provenance still gets a (small) report; a table added later shows up.
    folder = tmp_path / "run"
    folder.mkdir()
    from qsmkit.io.provenance import write_provenance

    write_provenance(folder, command="qsmkit run x")
    assert main(["report", str(folder)]) == 0
    assert "Provenance" in (folder / "report.html").read_text()
    (folder / "veins.tsv").write_text("id\tyv\toef\nv1\t0.62\t0.37\n")
    assert main(["report", str(folder)]) == 0
    assert "oxygen saturation" in (folder / "report.html").read_text()


def test_chi_viewer_slices_are_radiological():
    """A source on the patient's right appears on the image left; anterior is up."""
    shape = (20, 24, 6)
    chi = np.zeros(shape, np.float32)
    # LAS grid: a low x index is the patient's right, a high y index is anterior.
    chi[2:5, 17:21, 3] = 1.0
    uris, limit = report_html.chi_slice_uris(chi, LAS, limit=1.0)
    assert len(uris) == 6 and limit == 1.0
    image = _decode(uris[3])[..., :3]
    assert image.shape[:2] == (24, 20)  # rows: anterior-posterior, columns: right-left
    # Grey scale, window ±1 ppm: 0 ppm mid-grey, +1 ppm white (paramagnetic bright).
    assert np.allclose(image[..., 0], image[..., 2]) and abs(image[0, 0, 0] - 0.5) < 0.01
    red = image[..., 0] > 0.95
    rows, columns = np.nonzero(red)
    assert columns.max() < 10 and rows.max() < 12  # left half, upper half
    assert not red[:, 10:].any()
    # Cropped to the mask (plus 3 voxels) for the viewer, still radiological.
    mask = np.zeros(shape, bool)
    mask[1:8, 12:22, :] = True  # LAS x 1..7 -> RAS x 12..18
    uris, _ = report_html.chi_slice_uris(chi, LAS, mask, limit=1.0, crop_to_mask=True)
    image = _decode(uris[3])[..., :3]
    assert image.shape[:2] == (15, 11)  # y 9..23, x 9..19 (margins clipped at the edge)
    red = image[..., 0] > 0.95
    assert red.any() and not red[:, image.shape[1] // 2 + 1:].any()


def test_lesion_thumbnails_are_centred_on_each_lesion(synthetic_run):
    thumbs = report_html.lesion_thumbnails(synthetic_run)
    assert set(thumbs) == {"L1", "L2", "L3"}
    centre = {key: _decode(uri)[8, 8, :3] for key, uri in thumbs.items()}
    assert centre["L1"][0] > 0.9  # paramagnetic: bright
    assert centre["L2"][0] < 0.1  # diamagnetic: dark


def test_table_html_tags_classes_and_formats_numbers(tmp_path):
    path = tmp_path / "rims.tsv"
    path.write_text("id\tx\ty\tz\trim_fraction\tclass\n1\t1\t2\t3\t0.512345\trim+\n"
                    "2\t4\t5\t6\tnan\trim-\n")
    text = report_html.table_html(path)
    assert "data-class='rim+'" in text and "data-class='rim-'" in text
    assert "0.5123" in text and "0.512345" not in text
    assert "<th class=\"text\">class</th>" in text


def _fake_result(shape=(32, 32, 24), residual=True):
    brain = np.zeros(shape, bool)
    brain[4:-4, 4:-4, 3:-3] = True
    local = np.zeros(shape, bool)
    local[6:-6, 6:-6, 5:-5] = True
    x = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None, None]
    rng = np.random.default_rng(1)
    field = np.where(local, 2.0 * x + 0.1 * rng.standard_normal(shape), 0).astype(np.float32)
    return SimpleNamespace(
        magnitude=np.where(brain, 100.0, 5.0).astype(np.float32), mask=brain, local_mask=local,
        local_field_hz=field,
        fit_residual=np.where(brain, 0.02, 0).astype(np.float32) if residual else None,
        config=SimpleNamespace(fieldmap="linear"))


def test_qc_figures_are_written(tmp_path):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    names = qc_figures(_fake_result(), affine, tmp_path)
    assert names == ["qc_background.png", "qc_mask.png", "qc_residual.png"]
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert qc_figures(_fake_result(residual=False), affine, tmp_path / ".." / tmp_path.name) \
        == ["qc_background.png", "qc_mask.png"]


def test_qc_metrics_measure_volumes_and_residuals():
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    result = _fake_result()
    metrics = qc_metrics(result, affine)
    assert metrics["mask_ml"] == pytest.approx(result.mask.sum() * 4.5e-3, abs=0.01)
    assert metrics["chi_mask_ml"] == pytest.approx(result.local_mask.sum() * 4.5e-3, abs=0.01)
    assert metrics["fit_residual_median"] == pytest.approx(0.02)
    # The 2 Hz gradient across the brain is smooth: most of it survives the low-pass.
    assert 0.6 < metrics["background_residual_fraction"] <= 1.0


def test_residual_background_keeps_smooth_fields_and_drops_local_ones():
    shape = (48, 48, 48)
    mask = np.zeros(shape, bool)
    mask[4:-4, 4:-4, 4:-4] = True
    grid = np.indices(shape, dtype=np.float32)
    gradient = 0.05 * (grid[0] - 24)  # Hz per voxel: an incompletely removed background
    field = np.where(mask, gradient, 0)
    # Where the whole kernel (4 sigma) lies in the mask, a linear field passes unchanged...
    smooth = residual_background(field, mask, (1.0, 1.0, 1.0), sigma_mm=3.0)
    interior = np.zeros(shape, bool)
    interior[16:-16, 16:-16, 16:-16] = True
    np.testing.assert_allclose(smooth[interior], gradient[interior], atol=1e-4)
    assert np.all(smooth[~mask] == 0)
    # ...and with the default 8 mm kernel most of it survives everywhere in the mask.
    smooth = residual_background(field, mask, (1.0, 1.0, 1.0))
    slope = np.polyfit(gradient[mask], smooth[mask], 1)[0]
    assert 0.75 < slope <= 1.0
    # An alternating pattern (a local field changing sign every 2 mm) averages out.
    checker = np.where(((grid[0] // 2 + grid[1] // 2 + grid[2] // 2) % 2) == 0, 1.0, -1.0)
    local = residual_background(np.where(mask, checker, 0), mask, (1.0, 1.0, 1.0))
    assert np.sqrt(np.mean(local[mask] ** 2)) < 0.05


def test_cohort_page_links_flags_and_plots(tmp_path):
    output = tmp_path / "out"
    (output / "sub-01" / "qsmkit" / "sub-01").mkdir(parents=True)
    (output / "sub-01" / "qsmkit" / "sub-01" / "report.html").write_text("<html></html>")
    results = [{"label": f"sub-{i:02d}", "subject": f"{i:02d}", "status": s, "seconds": 1.0}
               for i, s in ((1, "done"), (2, "done"), (3, "failed"), (4, "done"), (5, "done"))]
    results[2]["error"] = "the brain mask is empty\ntraceback"
    qc_rows = [{"subject": f"{i:02d}", "chi_sd_ppm": 0.05 + 0.002 * i, "chi_mask_ml": 1200 + i}
               for i in (1, 2, 4, 5)]
    qc_rows.append({"subject": "06", "chi_sd_ppm": 0.4, "chi_mask_ml": 1203})
    assert qc_outliers(qc_rows) == {"06": ["chi_sd_ppm"]}
    roi_rows = [{"subject": "01", "name": "putamen", "mean_ppm": "0.05", "group": "control"},
                {"subject": "02", "name": "putamen", "mean_ppm": "0.07", "group": "pd"}]
    text = write_cohort_page(output, results, roi_rows, qc_rows).read_text()
    assert text.count("sub-01/qsmkit/sub-01/report.html") == 1
    assert "sub-02/qsmkit" not in text  # no report written: no dead link
    assert "the brain mask is empty" in text and "traceback" not in text
    assert "http://" not in text and "https://" not in text
    images = re.findall(r"<img[^>]*src='([^']+)'", text)
    assert len(images) == 2
    for uri in images:
        _decode(uri)
    outliers = text[text.index("id='outliers'"):]
    assert "06" in outliers[:outliers.index("</section>")]
    assert "group/qc.tsv" not in text  # no group tables written: none linked


def test_report_title_names_the_output_folder_not_its_staging_folder(tmp_path):
    from qsmkit.io.output import output_name

    assert output_name(tmp_path / ".run1.partial-k61mpptw") == "run1"
    assert output_name(tmp_path / "run1") == "run1"
    assert output_name(tmp_path / ".hidden") == ".hidden"

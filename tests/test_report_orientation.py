"""Report panels: radiological orientation and letters derived from the affine (issue 14)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from qsmkit.report.figures import (  # noqa: E402
    chi_window,
    oriented_panel,
    orthogonal_slices,
    plane_views,
)
from qsmkit.report.html import figure_orientation  # noqa: E402

# Three storage orders of one head: RAS, LAS (x flipped) and PIR (axes permuted and flipped).
AFFINES = {
    "RAS": np.diag([1.0, 1.0, 1.0, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "PIR": np.array([[0, 0, 1.0, 0], [-1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]]),
}
EXPECTED = {"axial": ("R", "L", "P", "A"), "coronal": ("R", "L", "I", "S"),
            "sagittal": ("A", "P", "I", "S")}


def _head_with_marker(affine, shape=(30, 34, 38)):
    """A volume with a bright cube at the patient's right, anterior, superior corner (world
    +x, +y, +z), placed through the affine, and the voxel at its centre."""
    grid = np.indices(shape).reshape(3, -1).T.astype(float)
    world = grid @ np.asarray(affine)[:3, :3].T
    score = world.sum(axis=1)  # largest at right-anterior-superior
    centre = grid[np.argmax(score)]
    volume = np.zeros(shape, np.float32)
    box = tuple(slice(int(max(c - 6, 0)), int(c + 7)) for c in centre)
    volume[box] = 1.0
    return volume, centre


@pytest.mark.parametrize("code", sorted(AFFINES))
def test_letters_come_from_the_affine_and_match_the_image(code):
    affine = AFFINES[code]
    volume, centre = _head_with_marker(affine)
    views = plane_views(affine, volume.shape)
    assert {name: view.letters for name, view in views.items()} == EXPECTED
    fig, axes = plt.subplots(1, 3)
    for ax, plane in zip(axes, ("axial", "coronal", "sagittal"), strict=True):
        oriented_panel(ax, volume, affine, plane, centre)
        image = np.asarray(ax.images[0].get_array())
        rows, columns = np.nonzero(image > 0.5)
        # origin="lower": a high row is the top. The marker (right, anterior, superior) sits
        # on the image left in axial/coronal, on the image left (anterior) in sagittal, and
        # in the upper half (anterior in axial, superior otherwise).
        assert columns.mean() < image.shape[1] / 2, (code, plane)
        assert rows.mean() > image.shape[0] / 2, (code, plane)
        letters = {t.get_text() for t in ax.texts}
        assert letters == set(EXPECTED[plane])
    plt.close(fig)


def test_orthogonal_slices_record_their_letters(tmp_path):
    volume, _ = _head_with_marker(AFFINES["PIR"])
    path = orthogonal_slices(volume, AFFINES["PIR"], tmp_path / "x.png", title="t", unit="a.u.")
    text = figure_orientation(path)
    assert "sagittal (slice" in text and "sagittal" in text
    for left, right, bottom, top in EXPECTED.values():
        assert f"left {left} right {right} bottom {bottom} top {top}" in text


def test_chi_window_ignores_outliers():
    rng = np.random.default_rng(1)
    chi = 0.03 * rng.standard_normal((40, 40, 40)).astype(np.float32)
    mask = np.ones(chi.shape, bool)
    clean = chi_window(chi, mask)
    spoiled = chi.copy()
    spoiled.flat[rng.choice(chi.size, chi.size // 80, replace=False)] = 2.7  # 1.25 % outliers
    assert 0.05 < clean < 0.07  # 98th percentile of |N(0, 0.03)| ~ 2.05 sigma
    assert chi_window(spoiled, mask) < 0.1  # not ±2.7 ppm
    assert chi_window(-spoiled, mask) < 0.1  # symmetric about zero either way


def test_analysis_figures_carry_letters_of_their_grid(synthetic_run, tmp_path):
    """lesions, roi, rims and oximetry draw radiological panels lettered from the affine
    (the synthetic run is stored LAS), and the report shows the letters in the captions."""
    import shutil

    from qsmkit.cli.main import main
    from qsmkit.io.nifti import load_nifti, save_nifti

    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    chi, affine, _ = load_nifti(run / "chi.nii.gz")
    mask = load_nifti(run / "mask.nii.gz")[0] > 0.5
    labels = np.where(mask, 2, 0).astype(np.int16)
    labels[chi > 0.1] = 1
    save_nifti(tmp_path / "labels.nii.gz", labels, affine)
    lesion = np.zeros(chi.shape, np.uint8)
    lesion[16:25, 14:23, 8:17] = 1  # a block around the calcification L2 (27, 18, 12)
    save_nifti(tmp_path / "lesion.nii.gz", lesion, affine)
    commands = {
        "lesions.png": ["lesions", str(run / "chi.nii.gz"), str(run / "mask.nii.gz"), "-o",
                        str(run / "lesions.tsv"), "--force"],
        "roi.png": ["roi", str(run / "chi.nii.gz"), str(tmp_path / "labels.nii.gz"), "-o",
                    str(run / "roi.tsv"), "--force"],
        "rims.png": ["rims", str(run / "chi.nii.gz"), str(tmp_path / "lesion.nii.gz"), "-o",
                     str(run / "rims.tsv"), "--force"],
        "veins.png": ["oximetry", str(run / "chi.nii.gz"), str(run / "mask.nii.gz"), "-o",
                      str(run / "veins.tsv"), "--reference-ppm", "0", "--force"],
    }
    from qsmkit.report.html import figure_orientation

    for name, argv in commands.items():
        assert main(argv) == 0, name
        text = figure_orientation(run / name)
        assert "left R right L bottom P top A" in text, (name, text)  # an axial panel
    assert "sagittal projection: left A right P bottom I top S" in figure_orientation(
        run / "lesions.png")
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    for name in commands:
        assert f'data-file="{name}" data-orientation=' in page, name

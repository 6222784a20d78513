"""Tests of qsmkit.metrics and ``qsmkit metrics``: known answers of each definition."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.metrics import structural_similarity

from qsmkit import metrics as M
from qsmkit.cli.main import main
from qsmkit.errors import InputError

SHAPE = (32, 32, 32)


def smooth_map(seed=0, shape=SHAPE, scale=0.1):
    rng = np.random.default_rng(seed)
    return (ndi.gaussian_filter(rng.normal(size=shape), 2.0) * scale * 10).astype(np.float32)


def ball_mask(shape=SHAPE, radius=12.0):
    x, y, z = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return x**2 + y**2 + z**2 <= radius**2


@pytest.fixture
def pair():
    return smooth_map(0), ball_mask()


# --------------------------------------------------------------------------- RMSE / NRMSE
def test_identical_maps_give_zero_error_and_unit_similarity(pair):
    y, m = pair
    assert M.rmse(y, y, m) == 0.0
    assert M.nrmse(y, y, m) == 0.0
    assert M.hfen(y, y, m) == 0.0
    assert M.ssim(y, y, m) == pytest.approx(1.0, abs=1e-12)
    assert M.xsim(y, y, m) == pytest.approx(1.0, abs=1e-12)


def test_scaling_gives_its_relative_error_in_every_norm(pair):
    y, m = pair
    # every norm is linear: ||1.1 y - y|| / ||y|| = 0.1 exactly (LoG is linear too)
    assert M.rmse(1.1 * y, y, m) == pytest.approx(10.0, rel=1e-5)
    assert M.nrmse(1.1 * y, y, m) == pytest.approx(10.0, rel=1e-5)
    assert M.hfen(1.1 * y, y, m) == pytest.approx(10.0, rel=1e-5)
    assert M.rmse(0.5 * y, y, m) == pytest.approx(50.0, rel=1e-5)


def test_constant_offset_counts_in_rmse_but_not_in_nrmse(pair):
    y, m = pair
    c = 0.02
    expected = 100.0 * c * np.sqrt(m.sum()) / np.linalg.norm(y[m].astype(np.float64))
    assert M.rmse(y + c, y, m) == pytest.approx(expected, rel=1e-5)
    assert M.nrmse(y + c, y, m) == pytest.approx(0.0, abs=1e-4)


def test_nrmse_demeans_each_map_within_the_mask():
    y = np.zeros((4, 4, 4))
    y[:2] = 1.0  # values 1 and 0; mean 0.5 -> demeaned +-0.5
    x = y.copy()
    x[0, 0, 0] = 2.0  # one voxel wrong by +1
    m = np.ones_like(y, bool)
    xt, yt = x - x.mean(), y - y.mean()
    expected = 100 * np.linalg.norm(xt - yt) / np.linalg.norm(yt)  # by hand: 24.8...
    assert M.nrmse(x, y, m) == pytest.approx(expected, rel=1e-12)
    assert M.rmse(x, y, m) == pytest.approx(100 * 1.0 / np.sqrt(32), rel=1e-12)


def test_values_outside_the_mask_are_ignored(pair):
    y, m = pair
    x = 1.05 * y
    noisy = x.copy()
    noisy[~m] = 100.0
    for f in (M.rmse, M.nrmse, M.hfen, M.ssim, M.xsim):
        assert f(noisy, y, m) == pytest.approx(f(x, y, m), rel=1e-12)


# --------------------------------------------------------------------------- HFEN
def test_log_kernel_is_zero_sum_symmetric_and_15_cubed():
    k = M.log_kernel()
    assert k.shape == (15, 15, 15)
    assert abs(k.sum()) < 1e-12
    assert np.allclose(k, k[::-1]) and np.allclose(k, k.transpose(1, 0, 2))
    assert k[7, 7, 7] == k.min() < 0  # negative centre (r = 0: -3 sigma^2 term)


def test_log_kernel_is_a_laplacian():
    # applied to r^2 (Laplacian 6) and x^2 (Laplacian 2) it returns the Laplacian
    k = M.log_kernel()
    a = np.arange(15) - 7
    x, y, z = np.meshgrid(a, a, a, indexing="ij")
    assert (k * (x**2 + y**2 + z**2)).sum() == pytest.approx(6.0, rel=1e-3)
    assert (k * x**2).sum() == pytest.approx(2.0, rel=1e-3)
    assert (k * x).sum() == pytest.approx(0.0, abs=1e-12)


def test_hfen_equals_direct_spatial_convolution():
    # zero padding and "same" alignment as MATLAB imfilter: compare with ndimage.convolve
    shape = (24, 24, 24)
    y = smooth_map(5, shape)
    x = y + np.random.default_rng(6).normal(0, 0.01, shape) + 0.002 * np.arange(24)[:, None, None]
    m = ball_mask(shape, radius=9)
    k = M.log_kernel()
    lx = ndi.convolve(np.where(m, x, 0.0), k, mode="constant")
    ly = ndi.convolve(np.where(m, y, 0.0).astype(np.float64), k, mode="constant")
    expected = 100 * np.linalg.norm(lx[m] - ly[m]) / np.linalg.norm(ly[m])
    assert M.hfen(x, y, m) == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------- SSIM / XSIM
def test_ssim_matches_scikit_image_3d():
    # maps zero within 6 voxels of the border: border handling cannot differ
    y = np.zeros((40, 40, 40))
    y[6:-6, 6:-6, 6:-6] = smooth_map(1, (28, 28, 28))
    rng = np.random.default_rng(2)
    x = y + np.pad(rng.normal(0, 0.02, (28, 28, 28)), 6)
    m = np.ones(y.shape, bool)
    rng_y = float(y.max() - y.min())
    _, full = structural_similarity(
        x, y, data_range=rng_y, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, full=True,
    )
    assert M.ssim(x, y, m) == pytest.approx(float(full.mean()), abs=1e-9)


def test_xsim_of_constant_maps_has_its_closed_form():
    # var = cov = 0: XSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 1 ppm)^2
    a, b = 0.1, 0.05
    m = np.ones((12, 12, 12), bool)
    expected = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    assert M.xsim(np.full(m.shape, a), np.full(m.shape, b), m) == pytest.approx(expected)
    assert expected == pytest.approx(0.80159, abs=1e-5)


def test_xsim_works_in_native_ppm_and_ssim_rescales(pair):
    y, m = pair
    rng = np.random.default_rng(4)
    x = y + rng.normal(0, 0.01, SHAPE)
    # SSIM with L = range(reference) is invariant to a common scale; XSIM (L = 1 ppm) is not
    assert M.ssim(10 * x, 10 * y, m) == pytest.approx(M.ssim(x, y, m), rel=1e-6)
    assert abs(M.xsim(10 * x, 10 * y, m) - M.xsim(x, y, m)) > 0.01


def test_xsim_drops_with_blur(pair):
    y, m = pair
    values = [M.xsim(ndi.gaussian_filter(y, s), y, m) for s in (0.5, 1.0, 2.0)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0


# --------------------------------------------------------------------------- ROI metrics
def roi_phantom():
    labels = np.zeros(SHAPE, np.int16)
    truth = np.zeros(SHAPE, np.float32)
    for k, (chi, start) in enumerate([(0.05, 2), (0.10, 9), (0.15, 16), (0.20, 23)], start=1):
        labels[start:start + 5, 10:20, 10:20] = k
        truth[labels == k] = chi
    return truth, labels, np.ones(SHAPE, bool)


def test_dgm_slope_is_exactly_the_scaling_of_roi_means():
    truth, labels, m = roi_phantom()
    assert M.dgm_slope(1.2 * truth, truth, m, labels) == pytest.approx(1.2, rel=1e-6)
    assert M.dgm_slope(truth + 0.3, truth, m, labels) == pytest.approx(1.0, rel=1e-6)
    # only the selected labels count
    est = truth.copy()
    est[labels == 4] = 0.0
    assert M.dgm_slope(est, truth, m, labels, dgm_labels=[1, 2, 3]) == pytest.approx(1.0)
    assert M.dgm_slope(est, truth, m, labels) < 0.8


def test_dgm_slope_needs_two_distinct_regions():
    truth, labels, m = roi_phantom()
    with pytest.raises(InputError, match="at least two"):
        M.dgm_slope(truth, truth, m, labels, dgm_labels=[2])
    with pytest.raises(InputError, match="same true mean"):
        M.dgm_slope(truth, np.ones(SHAPE), m, labels)


def test_roi_means_are_region_averages_within_the_mask():
    truth, labels, m = roi_phantom()
    m2 = m.copy()
    m2[:4] = False  # cuts region 1 (x = 2..6) to x = 4..6
    est = truth + np.arange(SHAPE[0])[:, None, None] * 0.01
    means = M.roi_means(est, truth, m2, labels)
    assert means[1][2] == 3 * 10 * 10
    assert means[1][0] == pytest.approx(0.05 + 0.05, rel=1e-6)  # x = 4, 5, 6 -> mean 5
    assert means[1][1] == pytest.approx(0.05, rel=1e-6)


def calc_phantom(chi_calc=-1.5):
    m = ball_mask(radius=14)
    truth = np.where(m, -0.03, 0.0).astype(np.float32)
    x, y, z = np.indices(SHAPE)
    calc = (x - 12) ** 2 + (y - 16) ** 2 + (z - 16) ** 2 <= 2.5**2
    truth[calc] = chi_calc
    return truth, m, calc


def test_susceptibility_moment_units():
    region = np.zeros((4, 4, 4), bool)
    region[:2, :2, :2] = True
    chi = np.where(region, 1.0, 5.0)
    assert M.susceptibility_moment(chi, region, (2.0, 2.0, 2.0)) == pytest.approx(64.0)


@pytest.mark.parametrize("chi_calc", [-1.5, 0.9])
def test_calcification_moment_error_known_answers(chi_calc):
    truth, m, calc = calc_phantom(chi_calc)
    vs = (1.0, 1.0, 1.0)
    assert M.calcification_moment_error(truth, truth, m, calc, vs) == pytest.approx(0.0)
    for seg in ("adaptive", "truth"):
        err = M.calcification_moment_error(0.5 * truth, truth, m, calc, vs, segmentation=seg)
        assert err == pytest.approx(-50.0, abs=1e-3)


def test_adaptive_segmentation_recovers_the_moment_of_a_blurred_calcification():
    truth, m, calc = calc_phantom()
    vs = (0.8, 0.8, 0.8)
    blurred = np.where(m, ndi.gaussian_filter(truth, 1.0), 0.0)
    in_true_region = M.calcification_moment_error(blurred, truth, m, calc, vs,
                                                  segmentation="truth")
    adaptive = M.calcification_moment_error(blurred, truth, m, calc, vs)
    assert in_true_region < -30  # blur moves much of the moment outside the true region
    assert abs(adaptive) < 0.5 * abs(in_true_region)


def test_two_separate_calcifications_add_their_moments():
    truth, m, calc = calc_phantom()
    x, y, z = np.indices(SHAPE)
    second = (x - 21) ** 2 + (y - 16) ** 2 + (z - 16) ** 2 <= 2.5**2
    truth[second] = -1.0
    both = calc | second
    est = truth.copy()
    est[second] = -0.5  # half of the second one's contrast (over -0.03 background too)
    expected = 100 * (est[both].sum() / truth[both].sum() - 1)
    got = M.calcification_moment_error(est, truth, m, both, (1, 1, 1))
    assert got == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- all / errors
def test_all_metrics_collects_everything_as_json_ready_numbers():
    truth, labels, m = roi_phantom()
    calc = labels == 4
    out = M.all_metrics(1.2 * truth, truth, m, voxel_size=(1, 1, 1), labels=labels,
                        dgm_labels=[1, 2, 3, 4], calc_mask=calc)
    json.dumps(out)
    assert out["rmse"] == pytest.approx(20.0, rel=1e-5)
    assert out["dgm_slope"] == pytest.approx(1.2, rel=1e-6)
    assert out["dgm_linearity_error"] == pytest.approx(0.2, rel=1e-5)
    assert out["calcification_moment_error"] == pytest.approx(20.0, rel=1e-5)
    assert set(out["roi_means_ppm"]) == {"1", "2", "3", "4"}
    assert out["n_voxels"] == m.sum()


@pytest.mark.parametrize(
    "bad",
    [
        lambda y, m: M.rmse(y[..., :5], y, m),
        lambda y, m: M.rmse(y, y, np.zeros_like(m)),
        lambda y, m: M.nrmse(np.where(m, np.nan, 0), y, m),
        lambda y, m: M.rmse(y, np.zeros_like(y), m),
        lambda y, m: M.ssim(y, np.ones_like(y), m),
        lambda y, m: M.rmse(y[0], y[0], m[0]),
    ],
)
def test_bad_input_raises_input_error(pair, bad):
    y, m = pair
    with pytest.raises(InputError):
        bad(y, m)


# --------------------------------------------------------------------------- phantom
def test_on_the_head_phantom():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((48, 48, 48), (4.0, 4.0, 4.0), seed=0)
    m = ph.brain_mask
    chi = np.where(m, ph.chi_ppm, 0.0)
    names = ph.label_names
    dgm = [k for k, v in names.items() if v.split("_")[0] in
           {"caudate", "putamen", "globus", "red", "substantia", "dentate"}]
    calc = np.isin(ph.labels, [k for k, v in names.items() if v.startswith("calcification")])
    exact = M.all_metrics(chi, chi, m, voxel_size=ph.voxel_size, labels=ph.labels,
                          dgm_labels=dgm, calc_mask=calc)
    assert exact["nrmse"] == 0 and exact["xsim"] == pytest.approx(1.0)
    assert exact["calcification_moment_error"] == pytest.approx(0.0)
    scaled = M.all_metrics(0.8 * chi, chi, m, voxel_size=ph.voxel_size, labels=ph.labels,
                           dgm_labels=dgm, calc_mask=calc)
    assert scaled["dgm_slope"] == pytest.approx(0.8, rel=1e-5)
    assert scaled["nrmse"] == pytest.approx(20.0, rel=1e-4)
    assert scaled["calcification_moment_error"] == pytest.approx(-20.0, abs=0.5)


# --------------------------------------------------------------------------- CLI
def save(path, data, affine=None):
    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return str(path)


def test_cli_prints_json_and_writes_it(tmp_path, capsys):
    truth, labels, m = roi_phantom()
    est = save(tmp_path / "est.nii.gz", (1.1 * truth).astype(np.float32))
    ref = save(tmp_path / "ref.nii.gz", truth)
    mask = save(tmp_path / "mask.nii.gz", m.astype(np.uint8))
    lab = save(tmp_path / "labels.nii.gz", labels)
    lut = tmp_path / "labels.tsv"
    lut.write_text("index\tname\n1\tLeft-Caudate\n2\tputamen_right\n3\tGlobus Pallidus\n"
                   "4\tcalcification_1\n")
    argv = ["metrics", est, ref, "--mask", mask, "--labels", lab, "--lut", str(lut),
            "-o", str(tmp_path / "m.json")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "m.json").read_text())
    assert printed["rmse"] == pytest.approx(10.0, rel=1e-5) == written["rmse"]
    assert printed["dgm_labels"] == [1, 2, 3]
    assert printed["dgm_slope"] == pytest.approx(1.1, rel=1e-5)
    assert printed["calcification_moment_error"] == pytest.approx(10.0, rel=1e-4)
    assert printed["roi_means_ppm"]["1"]["name"] == "Left-Caudate"
    assert main(argv) == 2  # refuses to overwrite m.json without --force
    assert main(argv + ["--force"]) == 0


def test_cli_rejects_maps_on_different_grids(tmp_path, capsys):
    y = smooth_map()
    est = save(tmp_path / "est.nii.gz", y)
    ref = save(tmp_path / "ref.nii.gz", y, np.diag([2.0, 2.0, 2.0, 1.0]))
    mask = save(tmp_path / "mask.nii.gz", ball_mask().astype(np.uint8))
    assert main(["metrics", est, ref, "--mask", mask]) == 2
    assert "grid" in capsys.readouterr().err


def test_read_lut_freesurfer_style(tmp_path):
    from qsmkit.cli.metrics import DGM_PATTERNS, labels_matching, read_lut

    lut = tmp_path / "FreeSurferColorLUT.txt"
    lut.write_text("# comment\n0   Unknown  0 0 0 0\n11  Left-Caudate  122 186 220 0\n"
                   "13  Left-Pallidum  12 48 255 0\n10  Left-Thalamus  0 118 14 0\n")
    names = read_lut(lut)
    assert names[13] == "Left-Pallidum"
    assert labels_matching(names, DGM_PATTERNS) == [11, 13]

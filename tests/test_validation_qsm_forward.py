"""qsmkit on data it did not make: BIDS datasets written by qsm-forward (QSMxT team, GPL-3,
a test-only dependency), reconstructed end to end by ``qsmkit run`` and ``qsmkit bids``.

qsm-forward's ``simple`` phantom is a large cylinder (chi 0.005 ppm) holding small cylinders of
0.05-0.5 ppm, in vacuum, with constant magnitude, a quadratic phase offset and a simulated
2nd-order shim. Its chi is absolute, whereas qsmkit references chi to the whole-brain mean:
both maps are compared after removing their own mean over the voxels where both are defined
(truth mask AND qsmkit's chi mask). Targets are those of issue 11: NRMSE <= 20 %, slope of
chi on truth 0.9-1.1, and at least 90 % of the truth mask kept in qsmkit's chi mask.

They are asserted on every case, at qsm-forward's default geometry (100^3 at 1 mm) and at
64^3. At 64^3 the small cylinders end 4-5 voxels from the mask surface and their end fields
reach outside it, where no background removal alone can tell them from a background (PDF then
TV: 22 %); the weak-harmonic term of the default inversion (WH-QSM) takes back what PDF took
(measured 4.1 %). 0.1.0 gave 78-100 % and slope 0.03-0.28 on these cases.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("qsm_forward", reason="qsm-forward is a test dependency (pip install .[test])")

from validation_metrics import score_chi  # noqa: E402

NRMSE_MAX_PERCENT = 20.0
SLOPE_RANGE = (0.9, 1.1)
KEPT_MIN_PERCENT = 90.0
TARGET_RESOLUTION = 100  # qsm-forward's default matrix


def _qsm_forward_command() -> list[str]:
    exe = Path(sys.executable).with_name("qsm-forward")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("qsm-forward")
    if found is None:
        pytest.skip("the qsm-forward console script is not on PATH")
    return [found]


def simulate_dataset(folder: Path, *, resolution=64, echo_times_s=(0.004, 0.008, 0.012),
                     b0_tesla=3.0, peak_snr=None, b0_dir=(0.0, 0.0, 1.0), seed=1) -> Path:
    """Write a ``qsm-forward simple`` BIDS dataset into ``folder`` (returns it)."""
    cmd = _qsm_forward_command() + [
        "simple", str(folder), "--resolution", *[str(resolution)] * 3,
        "--TEs", *[str(t) for t in echo_times_s], "--B0", str(b0_tesla),
        "--B0-dir", *[f"{v:.6f}" for v in b0_dir], "--random-seed", str(seed)]
    if peak_snr is not None:
        cmd += ["--peak-snr", str(peak_snr)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return folder


def truth_of(dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    anat = dataset / "derivatives" / "qsm-forward" / "sub-1" / "anat"
    chi = np.asanyarray(nib.load(anat / "sub-1_Chimap.nii").dataobj, dtype=np.float64)
    mask = np.asanyarray(nib.load(anat / "sub-1_mask.nii").dataobj) > 0
    return chi, mask


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def run_qsmkit(dataset: Path, out: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    from qsmkit.cli.main import main

    rc = main(["run", str(dataset / "sub-1"), "-o", str(out), "--no-report", *extra])
    assert rc == 0
    return _load(out / "chi.nii.gz").astype(np.float64), _load(out / "mask.nii.gz") > 0


def assert_targets(scores: dict, label: str, *, nrmse_max=NRMSE_MAX_PERCENT,
                   slope_range=SLOPE_RANGE) -> None:
    text = (f"{label}: NRMSE {scores['nrmse_percent']:.1f} %, slope {scores['slope']:.3f}, "
            f"truth mask kept {scores['kept_percent']:.1f} %")
    print(text)
    assert scores["nrmse_percent"] <= nrmse_max, text
    assert slope_range[0] <= scores["slope"] <= slope_range[1], text
    assert scores["kept_percent"] >= KEPT_MIN_PERCENT, text




def test_noise_free_three_echoes_3t(tmp_path):
    """The smallest case: 64^3, 3 echoes, 3 T, axial, no noise (measured 4.1 %, 0.98)."""
    ds = simulate_dataset(tmp_path / "ds")
    chi, mask = run_qsmkit(ds, tmp_path / "out")
    truth, truth_mask = truth_of(ds)
    assert_targets(score_chi(chi, truth, truth_mask, mask), "64^3 3 echoes 3 T no noise")


def test_bids_cohort_runner(tmp_path):
    """``qsmkit bids DATASET OUT`` on a qsm-forward dataset, peak SNR 100."""
    from qsmkit.cli.main import main

    ds = simulate_dataset(tmp_path / "ds", peak_snr=100)
    out = tmp_path / "deriv"
    assert main(["bids", str(ds), str(out), "--workers", "1", "--no-progress"]) == 0
    chi_files = sorted(out.rglob("sub-1*_Chimap.nii.gz"))
    assert len(chi_files) == 1, chi_files
    chi = _load(chi_files[0]).astype(np.float64)
    mask = _load(chi_files[0].with_name(chi_files[0].name.replace("Chimap", "mask"))) > 0
    truth, truth_mask = truth_of(ds)
    assert_targets(score_chi(chi, truth, truth_mask, mask), "qsmkit bids, 64^3 SNR 100")


@pytest.mark.slow
@pytest.mark.parametrize("n_echoes, b0_tesla, peak_snr", [
    (4, 1.5, 100), (5, 7.0, 50), (3, 3.0, 50)])
def test_echoes_field_strength_noise(tmp_path, n_echoes, b0_tesla, peak_snr):
    """3/4/5 echoes at 1.5/3/7 T with peak SNR 50-100 (echo spacing shorter at 7 T), at
    qsm-forward's default 100^3."""
    spacing = 0.004 * 3.0 / max(b0_tesla, 3.0)
    tes = tuple(round(spacing * (i + 1), 5) for i in range(n_echoes))
    ds = simulate_dataset(tmp_path / "ds", resolution=TARGET_RESOLUTION, echo_times_s=tes,
                          b0_tesla=b0_tesla, peak_snr=peak_snr)
    chi, mask = run_qsmkit(ds, tmp_path / "out")
    truth, truth_mask = truth_of(ds)
    assert_targets(score_chi(chi, truth, truth_mask, mask),
                   f"100^3 {n_echoes} echoes {b0_tesla} T peak SNR {peak_snr}")


@pytest.mark.slow
def test_oblique_b0(tmp_path):
    """B0 tilted 18 degrees from the slice axis, 100^3; qsmkit must read the same direction
    from the affine as qsm-forward wrote in its sidecar.

    Measured 5.8 %, slope 0.98. With TV as the inversion it was 20.6 %: 77 % of that error
    was a smooth chi offset across the large cylinder left by PDF, which the weak-harmonic
    term of the default inversion absorbs."""
    tilt = np.radians(18.0)
    b0_dir = (float(np.sin(tilt)), 0.0, float(np.cos(tilt)))
    ds = simulate_dataset(tmp_path / "ds", resolution=TARGET_RESOLUTION,
                          echo_times_s=(0.004, 0.008, 0.012, 0.016), peak_snr=100, b0_dir=b0_dir)
    out = tmp_path / "out"
    chi, mask = run_qsmkit(ds, out)
    info = json.loads((out / "qsmkit.json").read_text())["info"]
    sidecar = json.loads(next((ds / "sub-1" / "anat").glob("*echo-1_part-phase*.json"))
                         .read_text())
    assert np.allclose(info["b0_dir_voxel"], sidecar["B0_dir"], atol=1e-3), (
        info["b0_dir_voxel"], sidecar["B0_dir"])
    truth, truth_mask = truth_of(ds)
    assert_targets(score_chi(chi, truth, truth_mask, mask), "100^3 oblique 18 deg SNR 100")


@pytest.mark.slow
def test_issue_case_96_five_echoes_noise_free(tmp_path):
    """The case of issue 11 (96^3, 5 echoes, no noise): NRMSE 99.9 %, slope 0.03 on 0.1.0."""
    ds = simulate_dataset(tmp_path / "ds", resolution=96,
                          echo_times_s=(0.004, 0.008, 0.012, 0.016, 0.020))
    chi, mask = run_qsmkit(ds, tmp_path / "out")
    truth, truth_mask = truth_of(ds)
    assert_targets(score_chi(chi, truth, truth_mask, mask), "96^3 5 echoes no noise")

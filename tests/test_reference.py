"""Tests of qsmkit.reference and ``qsmkit reference``."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.reference import find_csf, reference, reference_region

VS = (2.0, 2.0, 2.0)
OFFSET = 0.1  # unknown constant of the "reconstruction"
CSF_CHI = 0.0


def brain(seed=0, shape=(48, 56, 48)):
    """Ellipsoidal brain: WM -0.03 ppm, two central ventricles (CSF, R2* 3 s^-1), a
    peripheral CSF pool at the surface (R2* 3 s^-1, chi +0.05), a paramagnetic vein
    (R2* 45 s^-1), all shifted by OFFSET, plus noise."""
    x, y, z = (np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2) * 2.0
    mask = (x / 42) ** 2 + (y / 50) ** 2 + (z / 42) ** 2 <= 1
    rng = np.random.default_rng(seed)
    chi = np.where(mask, -0.03, 0.0) + rng.normal(0, 0.01, shape)
    r2 = np.where(mask, 20.0, 0.0) + rng.normal(0, 1.0, shape)
    mag = np.where(mask, 1.0, 0.0) + rng.normal(0, 0.02, shape)
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        ventricles |= ((x - side * 7) / 5) ** 2 + (y / 22) ** 2 + ((z - 6) / 7) ** 2 <= 1
    sulcus = ((x - 36) / 5) ** 2 + (y / 10) ** 2 + (z / 8) ** 2 <= 1
    sulcus &= mask
    vein = (np.abs(x) < 3) & (np.abs(z + 12) < 3) & (np.abs(y) < 30)
    chi[ventricles] = CSF_CHI + rng.normal(0, 0.01, ventricles.sum())
    chi[sulcus] = 0.05
    chi[vein] = 0.4
    r2[ventricles | sulcus] = 3.0
    r2[vein] = 45.0
    mag[ventricles | sulcus] = 1.8
    mag[vein] = 0.3
    chi = np.where(mask, chi + OFFSET, 0.0).astype(np.float32)
    return chi, mask, r2.astype(np.float32), mag.astype(np.float32), ventricles, sulcus


# --------------------------------------------------------------------------- brain / roi
def test_brain_reference_removes_the_mask_mean_and_zeroes_outside():
    chi, mask, *_ = brain()
    chi[~mask] = 5.0
    out, info = reference(chi, mask)
    assert out.dtype == np.float32
    assert abs(float(out[mask].astype(np.float64).mean())) < 1e-6
    assert (out[~mask] == 0).all()
    assert info["method"] == "brain" and info["statistic"] == "mean"
    assert info["offset_ppm"] == pytest.approx(float(chi[mask].astype(np.float64).mean()))
    assert info["n_voxels"] == mask.sum() and info["fallback"] is None
    json.dumps(info)


def test_roi_reference_uses_the_mean_of_roi_within_mask():
    chi, mask, *_ = brain()
    roi = np.zeros_like(mask)
    roi[20:28, 20:28, 20:28] = True
    out, info = reference(chi, mask, method="roi", roi=roi, voxel_size=VS)
    assert info["offset_ppm"] == pytest.approx(float(chi[roi].astype(np.float64).mean()),
                                               rel=1e-6)
    assert info["volume_mm3"] == pytest.approx(8**3 * 8.0)
    assert abs(float(out[roi].mean())) < 1e-6


def test_roi_errors():
    chi, mask, *_ = brain()
    with pytest.raises(InputError, match="needs a reference region"):
        reference(chi, mask, method="roi")
    outside = np.zeros_like(mask)
    outside[0, 0, 0] = True
    with pytest.raises(InputError, match="overlap"):
        reference(chi, mask, method="roi", roi=outside)
    with pytest.raises(InputError, match="unknown reference method"):
        reference(chi, mask, method="wm")
    with pytest.raises(InputError, match="grid"):
        reference(chi, mask[:-1])


# --------------------------------------------------------------------------- csf
def test_csf_from_r2star_finds_the_ventricles_only():
    chi, mask, r2, _, ventricles, sulcus = brain()
    csf, criteria = find_csf(chi, mask, VS, r2star_per_s=r2)
    assert "R2*" in criteria
    assert (csf & ~ventricles).sum() == 0
    assert (csf & ventricles).sum() > 0.8 * ventricles.sum()
    assert not (csf & sulcus).any()
    out, info = reference(chi, mask, method="csf", r2star_per_s=r2, voxel_size=VS)
    assert info["method"] == "csf" and info["statistic"] == "median"
    assert info["offset_ppm"] == pytest.approx(OFFSET + CSF_CHI, abs=0.002)
    assert abs(float(np.median(out[ventricles]))) < 0.002


def test_csf_from_magnitude_without_r2star():
    chi, mask, _, mag, ventricles, _ = brain()
    echoes = np.stack([np.ones_like(mag), mag], axis=-1)  # the last echo is used
    out, info = reference(chi, mask, method="csf", magnitude=echoes, voxel_size=VS)
    assert "magnitude" in info["criteria"]
    assert info["offset_ppm"] == pytest.approx(OFFSET + CSF_CHI, abs=0.003)


def test_csf_falls_back_to_brain_with_a_message(caplog):
    chi, mask, r2, *_ = brain()
    no_csf = np.full_like(r2, 20.0)
    with caplog.at_level(logging.WARNING, logger="qsmkit.reference"):
        out, info = reference(chi, mask, method="csf", r2star_per_s=no_csf, voxel_size=VS)
    assert info["requested"] == "csf" and info["method"] == "brain"
    assert "no ventricular CSF" in info["fallback"]
    assert "no ventricular CSF" in caplog.text
    assert info["offset_ppm"] == pytest.approx(float(chi[mask].astype(np.float64).mean()))
    _, info = reference(chi, mask, method="csf", voxel_size=VS)
    assert "neither" in info["fallback"]


def test_csf_needs_voxel_size():
    chi, mask, r2, *_ = brain()
    with pytest.raises(InputError, match="voxel_size"):
        reference(chi, mask, method="csf", r2star_per_s=r2)


def test_reference_region_matches_reference():
    chi, mask, r2, *_ = brain()
    region, info = reference_region(chi, mask, method="csf", r2star_per_s=r2, voxel_size=VS)
    out, full = reference(chi, mask, method="csf", r2star_per_s=r2, voxel_size=VS)
    assert full["n_voxels"] == region.sum()
    assert full["offset_ppm"] == pytest.approx(float(np.median(chi[region])))


def test_csf_on_the_head_phantom():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((48, 48, 48), (4.0, 4.0, 4.0), seed=0)
    rng = np.random.default_rng(0)
    chi = (ph.chi_ppm + 0.05 + rng.normal(0, 0.01, ph.shape)).astype(np.float32)
    r2 = ph.r2star_per_s(3.0) + rng.normal(0, 1.0, ph.shape)
    _, info = reference(chi, ph.brain_mask, method="csf", r2star_per_s=r2,
                        voxel_size=ph.voxel_size)
    assert info["method"] == "csf"
    assert info["offset_ppm"] == pytest.approx(0.05, abs=0.002)  # CSF is 0 ppm in the truth
    csf, _ = find_csf(chi, ph.brain_mask, ph.voxel_size, r2star_per_s=r2)
    ventricles = ph.labels == {v: k for k, v in ph.label_names.items()}["ventricles"]
    assert (csf & ~ventricles).sum() == 0 and csf.sum() > 0.8 * ventricles.sum()


# --------------------------------------------------------------------------- CLI
def write(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return str(path)


def test_cli_reference(tmp_path, capsys):
    chi, mask, r2, *_ = brain()
    affine = np.diag([*VS, 1.0])
    paths = {name: write(tmp_path / f"{name}.nii.gz", data, affine)
             for name, data in (("chi", chi), ("mask", mask.astype(np.uint8)), ("r2s", r2))}
    out = tmp_path / "chi_ref.nii.gz"
    argv = ["reference", paths["chi"], "--mask", paths["mask"], "--method", "csf",
            "--r2star", paths["r2s"], "-o", str(out)]
    assert main(argv) == 0
    ref = np.asarray(nib.load(str(out)).dataobj)
    side = json.loads((tmp_path / "chi_ref.json").read_text())
    assert side["reference"]["method"] == "csf"
    region = np.asarray(nib.load(str(tmp_path / "chi_ref_region.nii.gz")).dataobj) > 0
    assert abs(float(np.median(ref[region]))) < 1e-6
    assert np.allclose(ref[mask], chi[mask] - side["reference"]["offset_ppm"], atol=1e-6)
    assert main(argv) == 2  # no overwrite without --force

    folder = tmp_path / "brainref"
    assert main(["reference", paths["chi"], "--mask", paths["mask"], "-o", str(folder)]) == 0
    assert (folder / "chi.nii.gz").exists() and (folder / "qsmkit.json").exists()

    capsys.readouterr()
    assert main(["reference", paths["chi"], "--mask", paths["mask"], "--method", "roi",
                 "-o", str(tmp_path / "x.nii.gz")]) == 2
    assert "--roi" in capsys.readouterr().err


def test_cli_reference_refuses_to_overwrite_its_input(tmp_path, capsys):
    chi, mask, *_ = brain()
    affine = np.eye(4)
    chi_path = write(tmp_path / "chi.nii.gz", chi, affine)
    mask_path = write(tmp_path / "mask.nii.gz", mask.astype(np.uint8), affine)
    before = (tmp_path / "chi.nii.gz").read_bytes()
    assert main(["reference", chi_path, "--mask", mask_path, "-o", chi_path, "--force"]) == 2
    assert (tmp_path / "chi.nii.gz").read_bytes() == before

"""Tests of qsmkit.masking (robust, phase_quality) and ``qsmkit mask``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi

from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.masking import METHODS, phase_quality, phase_quality_map, robust
from qsmkit.masking.robust import combine_echoes, erode, fill_holes, log_otsu

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


def grid(shape, voxel_size):
    axes = [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, voxel_size, strict=True)]
    return np.meshgrid(*axes, indexing="ij")


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def synthetic_head(seed=0, shape=(56, 64, 56), voxel_size=(2.0, 2.0, 2.0)):
    """Brain ellipsoid, dark 6 mm skull, bright 6 mm scalp, a bright bridge through the
    skull, a coil-like intensity gradient and Rician noise."""
    x, y, z = grid(shape, voxel_size)
    brain_r = np.sqrt((x / 40) ** 2 + (y / 48) ** 2 + (z / 40) ** 2)
    head_r = np.sqrt((x / 52) ** 2 + (y / 60) ** 2 + (z / 52) ** 2)
    brain = brain_r <= 1
    scalp = (head_r <= 1) & (np.sqrt((x / 46) ** 2 + (y / 54) ** 2 + (z / 46) ** 2) > 1)
    bridge = (np.abs(y) < 4) & (np.abs(z) < 4) & (x > 0) & (head_r <= 1) & ~brain
    signal = np.where(brain, 1.0, 0.0) + np.where(scalp, 1.6, 0.0) + np.where(bridge, 1.0, 0)
    ventricles = ((x / 6) ** 2 + (y / 16) ** 2 + (z / 6) ** 2) <= 1
    signal[ventricles] = 0.25  # dark, enclosed
    signal *= 0.7 + 0.6 * (x - x.min()) / np.ptp(x)  # receive-coil gradient 0.7..1.3
    rng = np.random.default_rng(seed)
    noisy = np.abs(signal + 0.03 * (rng.normal(size=shape) + 1j * rng.normal(size=shape)))
    return noisy.astype(np.float32), brain, scalp, voxel_size


# --------------------------------------------------------------------------- robust
def test_registry():
    assert METHODS["robust"] is robust
    assert set(METHODS) == {"auto", "bet", "robust"}


def test_sphere_in_noise_is_recovered_exactly():
    x, y, z = grid((40, 40, 40), (1, 1, 1))
    sphere = x**2 + y**2 + z**2 < 15**2
    noise = np.random.default_rng(0).rayleigh(0.05, sphere.shape)
    mask = robust(sphere + noise, (1, 1, 1))
    assert mask.dtype == bool and mask.shape == sphere.shape
    assert np.array_equal(mask, sphere)


def test_scalp_is_cut_off_and_brain_kept():
    mag, brain, scalp, vs = synthetic_head()
    mask = robust(mag, vs)
    assert dice(mask, brain) > 0.97
    assert (mask & scalp).sum() < 0.01 * scalp.sum()
    assert ndi.label(mask)[1] == 1
    # the dark ventricles are inside the mask (filled)
    assert mask[tuple(n // 2 for n in mask.shape)]
    # without the opening the bridge keeps the scalp attached
    assert (robust(mag, vs, opening_mm=0) & scalp).sum() > 0.3 * scalp.sum()


def test_echoes_are_combined_by_root_sum_of_squares():
    mag, brain, _, vs = synthetic_head()
    echoes = np.stack([mag, 0.6 * mag, 0.3 * mag], axis=-1)
    assert np.allclose(combine_echoes(echoes), np.sqrt(1 + 0.36 + 0.09) * mag, rtol=1e-5)
    assert np.array_equal(robust(echoes, vs), robust(mag, vs))


def test_anisotropic_voxels_give_the_physical_volume():
    vs = (1.0, 1.25, 2.5)
    x, y, z = grid((48, 40, 24), vs)
    r = 18.0
    sphere = x**2 + y**2 + z**2 < r**2
    noise = np.random.default_rng(1).rayleigh(0.05, sphere.shape)
    mask = robust(sphere + noise, vs, opening_mm=6)
    volume = mask.sum() * np.prod(vs)
    assert volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)


def test_erosion_in_mm():
    x, y, z = grid((40, 40, 40), (1, 1, 1))
    sphere = x**2 + y**2 + z**2 < 15**2  # 30 voxels across
    noise = np.random.default_rng(0).rayleigh(0.05, sphere.shape)
    eroded = robust(sphere + noise, (1, 1, 1), erode_mm=3)
    assert (eroded & ~sphere).sum() == 0
    # radius 3 mm + half a voxel: 3 voxels peeled off each side along an axis
    assert eroded[:, 20, 20].sum() == 30 - 2 * 3
    # half a voxel or more removes the edge layer
    assert erode(sphere, (1, 1, 1), 0.4)[:, 20, 20].sum() == 30
    assert erode(sphere, (1, 1, 1), 0.6)[:, 20, 20].sum() == 28
    # anisotropic: 2 mm peels two 1 mm voxels along x but no 3 mm voxel along z
    tall = erode(sphere, (1, 1, 3), 2.0)
    assert tall[:, 20, 20].sum() == 30 - 2 * 2 and tall[20, 20, :].sum() == 30
    assert erode(sphere, (1, 1, 3), 3.0)[20, 20, :].sum() == 30 - 2 * 1


def test_fill_holes_fills_cavities_open_in_one_direction_only():
    cube = np.zeros((20, 20, 20), bool)
    cube[4:16, 4:16, 4:16] = True
    cube[8:12, 8:12, 8:20] = False  # a channel to the outside along z
    filled = fill_holes(cube)
    assert filled[10, 10, 10] and not filled[10, 10, 18]


def test_log_otsu_separates_background_from_bright_and_dim_tissue():
    rng = np.random.default_rng(2)
    background = rng.rayleigh(10, 5000)
    tissue = np.concatenate([rng.normal(500, 50, 2000), rng.normal(3000, 300, 500)])
    cut = log_otsu(np.concatenate([background, tissue]))
    assert (background > cut).mean() < 0.005 and (tissue <= cut).sum() == 0
    # a linear-intensity Otsu threshold would split the tissue instead
    from skimage.filters import threshold_otsu

    assert (tissue <= threshold_otsu(np.concatenate([background, tissue]))).sum() > 1000


@pytest.mark.parametrize(
    "kwargs, data",
    [
        ({}, np.zeros((10, 10))),
        ({}, np.zeros((10, 10, 10))),
        ({}, np.full((10, 10, 10), np.nan)),
        ({"threshold": 1.5}, np.ones((10, 10, 10))),
        ({"opening_mm": -1}, np.ones((10, 10, 10))),
    ],
)
def test_robust_bad_input(kwargs, data):
    with pytest.raises(InputError):
        robust(data, (1, 1, 1), **kwargs)


def test_robust_bad_voxel_size():
    with pytest.raises(InputError, match="voxel_size"):
        robust(np.ones((10, 10, 10)), (1, 0, 1))


def test_phantom_mask_has_brain_but_no_scalp_or_skull():
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((48, 48, 48), (4.0, 4.0, 4.0), seed=0)
    sim = phantom.simulate_gre(ph, snr=40, seed=0)
    mask = robust(sim.magnitude, ph.voxel_size)
    names = {v: k for k, v in ph.label_names.items()}
    assert (mask & ph.brain_mask).sum() >= 0.99 * ph.brain_mask.sum()
    for tissue in ("scalp", "skull"):
        assert (mask & (ph.labels == names[tissue])).sum() == 0


# --------------------------------------------------------------------------- real heads
REAL = {
    "siemens_xa30": ("siemens_xa30_enhanced/Ref/8_gre_field_mapping_e{}.nii", (1, 2), 0.15),
    "ge": ("ge_fieldmap/Ref/GE_6_CV_Neuro_HH_Adv.nii", None, 0.15),
    "philips": ("philips_classic/Ref/2001_WIP_fcMRI_Field_Mapping_cl_e{}.nii.gz", (1, 2), 0.25),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_heads_give_a_brain_plus_mask(name):
    pattern, echoes, max_outer = REAL[name]
    paths = [DATA / pattern.format(e) for e in echoes] if echoes else [DATA / pattern]
    if not all(p.exists() for p in paths):
        pytest.skip("shared test data not available")
    images = [nib.load(str(p)) for p in paths]
    mag = np.stack([np.asarray(i.dataobj, np.float32) for i in images], axis=-1)
    vs = np.array(images[0].header.get_zooms()[:3], float)
    mask = robust(mag, vs)
    # the head: everything above the background, filled
    combined = combine_echoes(mag)
    head = fill_holes(combined > log_otsu(combined))
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    outer = head & (depth <= 5.0)  # scalp layer: within 5 mm of the head surface
    volume_l = mask.sum() * vs.prod() / 1e6
    assert 1.0 < volume_l < 2.7  # measured: 1.45 (XA30), 1.80 (GE), 2.56 (Philips, neck)
    assert mask.sum() < 0.7 * head.sum()
    assert (mask & outer).sum() < max_outer * outer.sum()  # measured 0.075, 0.042, 0.166
    assert ndi.label(mask)[1] == 1 and mask[tuple(n // 2 for n in mask.shape)]


# --------------------------------------------------------------------------- phase quality
def phase_sphere(seed=0, echoes=1):
    x, y, z = grid((40, 40, 40), (1, 1, 1))
    sphere = x**2 + y**2 + z**2 < 14**2
    rng = np.random.default_rng(seed)
    phases, mags = [], []
    for e in range(1, echoes + 1):
        true = e * (0.01 * (x**2 + y**2) + 0.4 * z)  # wraps many times along z
        signal = np.where(sphere, 1.0, 0.0) * np.exp(1j * true)
        noisy = signal + 0.05 * (rng.normal(size=x.shape) + 1j * rng.normal(size=x.shape))
        phases.append(np.angle(noisy))
        mags.append(np.abs(noisy))
    phase, mag = np.stack(phases, -1), np.stack(mags, -1)
    if echoes == 1:
        phase, mag = phase[..., 0], mag[..., 0]
    first = ndi.binary_dilation(sphere, iterations=4)  # includes a ring of pure noise
    return phase.astype(np.float32), mag.astype(np.float32), sphere, first


def test_phase_quality_map_separates_tissue_from_noise():
    phase, mag, sphere, first = phase_sphere()
    q = phase_quality_map(phase, mag, first, (1, 1, 1))
    assert q.dtype == np.float32 and q[~first].max() == 0
    assert np.percentile(q[sphere], 5) > 0.7
    assert np.median(q[first & ~sphere]) < 0.3


def test_phase_quality_smoothing_averages_within_the_mask():
    phase, mag, sphere, first = phase_sphere()
    raw = phase_quality_map(phase, mag, first, (1, 1, 1))
    smooth = phase_quality_map(phase, mag, first, (1, 1, 1), smooth_mm=2.0)
    assert smooth[~first].max() == 0 and 0 <= smooth.min() and smooth.max() <= 1
    inner = ndi.binary_erosion(sphere, iterations=3)
    assert smooth[inner].std() < 0.7 * raw[inner].std()
    assert smooth[inner].mean() == pytest.approx(raw[inner].mean(), abs=0.01)
    with pytest.raises(InputError, match="smooth_mm"):
        phase_quality_map(phase, mag, first, (1, 1, 1), smooth_mm=-1)


@pytest.mark.parametrize("echoes", [1, 3])
def test_phase_quality_trims_the_noisy_ring(echoes):
    phase, mag, sphere, first = phase_sphere(echoes=echoes)
    trimmed = phase_quality(phase, mag, first, (1, 1, 1))
    assert (trimmed & ~first).sum() == 0
    assert dice(trimmed, sphere) > 0.99
    assert (trimmed & sphere).sum() == sphere.sum()


def test_phase_quality_accepts_a_3d_magnitude_for_all_echoes():
    phase, mag, sphere, first = phase_sphere(echoes=2)
    trimmed = phase_quality(phase, mag[..., 0], first, (1, 1, 1))
    assert dice(trimmed, sphere) > 0.99


def test_phase_quality_keeps_enclosed_low_quality_voxels():
    phase, mag, sphere, first = phase_sphere()
    x, y, z = grid(phase.shape, (1, 1, 1))
    vein = (x**2 + y**2 < 2.5**2) & (np.abs(z) < 5)  # random phase inside the brain
    phase = phase.copy()
    phase[vein] = np.random.default_rng(9).uniform(-np.pi, np.pi, vein.sum())
    trimmed = phase_quality(phase, mag, first, (1, 1, 1))
    assert trimmed[vein].all()


def test_phase_quality_bad_input():
    phase, mag, sphere, first = phase_sphere()
    with pytest.raises(InputError, match="radians"):
        phase_quality(phase * 1000, mag, first, (1, 1, 1))
    with pytest.raises(InputError, match="grid"):
        phase_quality(phase, mag[:-1], first, (1, 1, 1))
    with pytest.raises(InputError, match="threshold"):
        phase_quality(phase, mag, first, (1, 1, 1), threshold=1.0)


# --------------------------------------------------------------------------- CLI
def test_cli_mask_folder_and_file_outputs(tmp_path):
    mag, brain, _, vs = synthetic_head()
    affine = np.diag([*vs, 1.0])
    affine[:3, 3] = [-50, -60, -40]
    echoes = np.stack([mag, 0.7 * mag], axis=-1)
    mag_path = tmp_path / "mag.nii.gz"
    nib.save(nib.Nifti1Image(echoes, affine), str(mag_path))

    out = tmp_path / "out"
    assert main(["mask", str(mag_path), "-o", str(out), "--method", "robust"]) == 0
    image = nib.load(str(out / "mask.nii.gz"))
    assert np.allclose(image.affine, affine)
    written = np.asarray(image.dataobj) > 0
    assert np.array_equal(written, robust(echoes, vs))
    record = json.loads((out / "qsmkit.json").read_text())
    assert record["mask"]["mask_voxels"] == written.sum()
    assert main(["mask", str(mag_path), "-o", str(out)]) == 2  # no overwrite without --force
    assert main(["mask", str(mag_path), "-o", str(out), "--erode-mm", "4", "--force",
                 "--method", "robust"]) == 0
    eroded = np.asarray(nib.load(str(out / "mask.nii.gz")).dataobj) > 0
    assert eroded.sum() < written.sum() and not (eroded & ~written).any()

    target = tmp_path / "masks" / "brain.nii.gz"
    assert main(["mask", str(mag_path), "-o", str(target)]) == 0
    assert target.exists() and (tmp_path / "masks" / "brain.json").exists()


def test_cli_mask_with_phase(tmp_path):
    phase, mag, sphere, _ = phase_sphere(echoes=2)
    paths = {}
    for name, data in (("mag", mag), ("phase", phase)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(paths[name]))
    out = tmp_path / "m.nii.gz"
    argv = ["mask", str(paths["mag"]), "--phase", str(paths["phase"]), "-o", str(out)]
    assert main(argv) == 0
    mask = np.asarray(nib.load(str(out)).dataobj) > 0
    assert dice(mask, sphere) > 0.98


def test_cli_mask_refuses_phase_not_in_radians(tmp_path, capsys):
    phase, mag, _, _ = phase_sphere()
    nib.save(nib.Nifti1Image(mag, np.eye(4)), str(tmp_path / "mag.nii"))
    nib.save(nib.Nifti1Image(phase * 4096 / np.pi, np.eye(4)), str(tmp_path / "ph.nii"))
    argv = ["mask", str(tmp_path / "mag.nii"), "--phase", str(tmp_path / "ph.nii"),
            "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "radians" in capsys.readouterr().err
    assert not (tmp_path / "out" / "mask.nii.gz").exists()

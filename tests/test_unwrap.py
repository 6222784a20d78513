"""Spatial phase unwrapping: congruence (result - wrapped in 2 pi Z), recovery, CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from qsmkit import fft
from qsmkit.errors import InputError
from qsmkit.kernels import dipole_kernel
from qsmkit.unwrap import METHODS, laplacian, make_congruent, region_growing

TWO_PI = 2 * np.pi


def wrap(x):
    return np.angle(np.exp(1j * np.asarray(x))).astype(np.float32)


def grid(n):
    x = (np.arange(n) - n / 2 + 0.5) / (n / 2)
    return np.meshgrid(x, x, x, indexing="ij")


def ellipsoid(n):
    x, y, z = grid(n)
    return (x / 0.85) ** 2 + (y / 0.75) ** 2 + (z / 0.8) ** 2 < 1


def quadratic_phase(n, scale=14.0):
    x, y, z = grid(n)
    return (scale * (x**2 + 0.7 * y**2 - 0.4 * x * z) + 5.0 * y).astype(np.float32)


def dipole_phase(n, scale_rad=1.0):
    """Phase of the field of two spheres (iron-like and air-like) plus a smooth background."""
    x, y, z = grid(n)
    chi = np.zeros((n, n, n), np.float32)
    chi[(x - 0.25) ** 2 + y**2 + (z + 0.1) ** 2 < 0.15**2] = 5.0
    chi[(x + 0.3) ** 2 + (y - 0.2) ** 2 + z**2 < 0.1**2] = -3.0
    field = fft.irfftn(fft.rfftn(chi) * dipole_kernel(chi.shape, (1, 1, 1), half=True), chi.shape)
    return (scale_rad * field + 14.0 * (x**2 + 0.5 * y * z)).astype(np.float32)


def max_step(phase, mask):
    steps = []
    for axis in range(3):
        d = np.abs(np.diff(phase, axis=axis))
        both = np.take(mask, range(mask.shape[axis] - 1), axis=axis) & np.take(
            mask, range(1, mask.shape[axis]), axis=axis
        )
        steps.append(float(d[both].max()))
    return max(steps)


def assert_congruent(result, wrapped, atol=2e-4):
    turns = (result.astype(np.float64) - wrapped) / TWO_PI
    assert np.abs(turns - np.round(turns)).max() < atol


def assert_recovers(result, true, mask):
    """``result == true + 2 pi k`` inside ``mask`` with one integer k (to float32 precision)."""
    turns = (result.astype(np.float64) - true)[mask] / TWO_PI
    k = np.round(np.median(turns))
    assert np.abs(turns - k).max() < 1e-3, np.unique(np.round(turns))


@pytest.mark.parametrize("make_phase", [quadratic_phase, dipole_phase])
def test_region_growing_is_congruent_and_exact_on_smooth_phase(make_phase):
    n = 40
    true = make_phase(n)
    mask = ellipsoid(n)
    assert max_step(true, mask) < 2.5  # a smooth phase: every step below pi
    assert np.ptp(true[mask]) > 3 * np.pi  # and several wraps
    wrapped = wrap(true)
    mag = mask.astype(np.float32) * 0.9 + 0.1
    out = region_growing(wrapped, mag, mask, (1, 1, 1))
    assert out.dtype == np.float32 and out.shape == wrapped.shape
    assert_congruent(out, wrapped)
    assert_recovers(out, true, mask)
    np.testing.assert_array_equal(out[~mask], wrapped[~mask])  # input kept outside the mask


def test_region_growing_without_magnitude_or_mask():
    true = quadratic_phase(24)
    out = region_growing(wrap(true))
    assert_congruent(out, wrap(true))
    assert_recovers(out, true, np.ones(true.shape, bool))


def test_region_growing_stays_congruent_on_noise():
    rng = np.random.default_rng(3)
    n = 32
    true = dipole_phase(n, scale_rad=1.0) + rng.normal(0, 1.0, (n, n, n)).astype(np.float32)
    wrapped = wrap(true)
    mask = ellipsoid(n)
    out = region_growing(wrapped, rng.uniform(0.1, 1, (n, n, n)), mask)
    assert_congruent(out, wrapped)
    assert np.all(np.isfinite(out))


def test_region_growing_components():
    n = 32
    x, y, z = grid(n)
    true = (12.0 * (x**2 + y**2) + 3.0 * z + 9.0).astype(np.float32)  # offset: not near 0
    left = (x + 0.5) ** 2 + y**2 + z**2 < 0.35**2
    right = (x - 0.5) ** 2 + y**2 + z**2 < 0.35**2
    mask = left | right
    wrapped = wrap(true)
    out = region_growing(wrapped, None, mask)
    assert_congruent(out, wrapped)
    for part in (left, right):  # each component right up to its own 2 pi k ...
        assert_recovers(out, true, part)
        median = np.median(out[part])  # ... placed with its median in (-pi, pi]
        assert -np.pi < median <= np.pi
    seeded = region_growing(wrapped, None, mask, component_alignment="seed")
    assert_congruent(seeded, wrapped)
    for part in (left, right):  # the seed of each component keeps its input value
        assert_recovers(seeded, true, part)
        assert np.any(seeded[part] == wrapped[part])


def test_region_growing_multi_echo_with_gradient_coherence():
    n = 28
    mask = ellipsoid(n)
    field_hz = quadratic_phase(n, scale=10.0) * 12.0  # Hz
    tes = np.array([0.004, 0.008, 0.012])
    true = TWO_PI * field_hz[..., None] * tes
    mag = np.exp(-20.0 * tes) * mask[..., None]
    out = region_growing(wrap(true), mag, mask, (1, 1, 1), echo_times_s=tes)
    assert out.shape == true.shape
    assert_congruent(out, wrap(true))
    for e in range(2):  # echoes whose steps stay below pi are recovered exactly
        if max_step(true[..., e], mask) < 2.5:
            assert_recovers(out[..., e], true[..., e], mask)
    with pytest.raises(InputError):
        region_growing(wrap(true), mag, mask, echo_times_s=[0.004, 0.008])


@pytest.mark.parametrize("variant", ["sincos", "lsq"])
def test_laplacian_congruent_recovers_smooth_phase_in_a_mask(variant):
    n = 40
    true = dipole_phase(n)
    mask = ellipsoid(n)
    wrapped = wrap(true)
    out = laplacian(wrapped, mask, (1, 1, 1), variant=variant, congruent=True)  # masked CG
    assert out.dtype == np.float32
    assert_congruent(out, wrapped)
    assert_recovers(out, true, mask)
    np.testing.assert_array_equal(out[~mask], wrapped[~mask])


@pytest.mark.parametrize("variant", ["sincos", "lsq"])
def test_laplacian_dct_recovers_smooth_phase_on_the_box(variant):
    true = dipole_phase(32)
    wrapped = wrap(true)
    out = laplacian(wrapped, None, (1, 1, 1), variant=variant, solver="dct", congruent=True)
    assert_congruent(out, wrapped)
    assert_recovers(out, true, np.ones(true.shape, bool))


@pytest.mark.parametrize("variant", ["sincos", "lsq"])
def test_laplacian_masked_solver_ignores_noise_outside_the_mask(variant):
    """The box solver uses the phase outside the mask; the masked one does not."""
    rng = np.random.default_rng(7)
    n = 40
    true = dipole_phase(n)
    mask = ellipsoid(n)
    noisy = np.where(mask, true, rng.uniform(-np.pi, np.pi, true.shape)).astype(np.float32)
    wrapped = wrap(noisy)
    masked = laplacian(wrapped, mask, (1, 1, 1), variant=variant, solver="masked", congruent=True)
    assert_recovers(masked, true, mask)
    box = laplacian(wrapped, mask, (1, 1, 1), variant=variant, solver="dct", congruent=True)
    assert_congruent(box, wrapped)
    turns = np.round((box.astype(np.float64) - true)[mask] / TWO_PI)
    assert np.mean(turns != np.median(turns)) > 0.01  # noise outside leaks in


def test_laplacian_default_is_smooth_not_congruent():
    n = 32
    true = quadratic_phase(n, scale=8.0)
    wrapped = wrap(true)
    est = laplacian(wrapped)
    turns = (est - wrapped) / TWO_PI
    assert np.abs(turns - np.round(turns)).max() > 1e-2  # a smooth estimate, not congruent
    # the sin/cos Laplacian shrinks steep gradients: close to, not equal to, the truth
    err = est - true - np.mean(est - true)
    assert 1e-3 < np.abs(err).max() < 1.0
    # make_congruent snaps it onto the exact solution
    assert_recovers(make_congruent(est, wrapped), true, np.ones(true.shape, bool))


def test_laplacian_lsq_is_exact_with_anisotropic_voxels():
    """Wrapped differences + DCT Poisson solve invert the Neumann Laplacian exactly."""
    n = 24
    voxel_size = (1.0, 1.5, 2.5)
    true = quadratic_phase(n, scale=10.0)
    est = laplacian(wrap(true), None, voxel_size, variant="lsq")
    err = est.astype(np.float64) - true
    assert np.abs(err - err.mean()).max() < 1e-3


def test_laplacian_per_echo_4d():
    n = 20
    true = np.stack([quadratic_phase(n, 4.0), quadratic_phase(n, 8.0)], axis=-1)
    out = laplacian(wrap(true), None, (1, 1, 1), congruent=True)
    assert out.shape == true.shape
    for e in range(2):
        assert_recovers(out[..., e], true[..., e], np.ones(true.shape[:3], bool))


def test_methods_registry_shares_a_keyword_signature():
    n = 20
    true = quadratic_phase(n, 8.0)
    mask = ellipsoid(n)
    for name, method in METHODS.items():
        out = method(wrap(true), mask=mask, voxel_size=(1, 1, 1), magnitude=mask * 1.0)
        assert out.shape == true.shape, name
    assert set(METHODS) == {"romeo", "laplacian"}


def test_bad_inputs():
    phase = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(InputError):
        region_growing(phase, mask=np.ones((8, 8, 7), bool))
    with pytest.raises(InputError):
        laplacian(phase, voxel_size=(1, 0, 1))
    with pytest.raises(InputError):
        laplacian(phase, variant="fancy")
    bad = phase.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputError):
        region_growing(bad)
    with pytest.raises(InputError):
        region_growing(phase, magnitude=-np.ones_like(phase))
    with pytest.raises(InputError):
        region_growing(np.zeros((8, 8)))


def test_sincos_is_approximate_on_steep_phase_where_lsq_is_exact():
    true = quadratic_phase(24, scale=12.0)  # steps up to ~2 rad per voxel
    wrapped = wrap(true)
    errs = {}
    for variant in ("sincos", "lsq"):
        err = laplacian(wrapped, variant=variant).astype(np.float64) - true
        errs[variant] = np.abs(err - err.mean()).max()
    assert errs["lsq"] < 1e-3 < 1.0 < errs["sincos"]


@pytest.mark.parametrize("method", ["romeo", "laplacian"])
def test_head_phantom_field_phase(method):
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((48, 48, 48), (4.0, 4.0, 4.0), lesions=False)
    sim = phantom.simulate_gre(ph, (0.004, 0.008), snr=float("inf"))
    mask = sim.mask
    true = TWO_PI * sim.field_hz * 0.004
    options = {"congruent": True} if method == "laplacian" else {}
    out = METHODS[method](
        wrap(true), mask=mask, voxel_size=sim.voxel_size, magnitude=sim.magnitude[..., 0], **options
    )
    assert_congruent(out, wrap(true))
    assert_recovers(out, true, mask)


# -- command line -----------------------------------------------------------------------


def _save(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), str(path))
    return path


def test_cli_unwrap_3d_and_4d(tmp_path):
    from qsmkit.cli.main import main

    n = 24
    true = quadratic_phase(n, 10.0)
    mask = ellipsoid(n)
    phase_path = _save(tmp_path / "phase.nii.gz", wrap(true))
    mask_path = _save(tmp_path / "mask.nii.gz", mask)
    out = tmp_path / "out" / "unwrapped.nii.gz"
    assert main(["unwrap", str(phase_path), "--mask", str(mask_path), "-o", str(out)]) == 0
    result = nib.load(str(out)).get_fdata()
    assert_congruent(result, wrap(true))
    assert_recovers(result, true, mask)
    record = json.loads((tmp_path / "out" / "unwrapped.json").read_text())
    assert record["command"] == "unwrap" and record["config"]["method"] == "romeo"
    # refuses to overwrite without --force
    assert main(["unwrap", str(phase_path), "-o", str(out)]) == 2
    assert (
        main(
            [
                "unwrap",
                str(phase_path),
                "-o",
                str(out),
                "--force",
                "--method",
                "laplacian",
                "--congruent",
            ]
        )
        == 0
    )
    assert_congruent(nib.load(str(out)).get_fdata(), wrap(true))

    four = np.stack([wrap(true), wrap(2 * true)], axis=-1)
    p4 = _save(tmp_path / "phase4d.nii.gz", four)
    m4 = _save(tmp_path / "mag4d.nii.gz", np.stack([mask, mask], -1) * 1.0)
    out4 = tmp_path / "u4.nii"
    assert (
        main(
            [
                "unwrap",
                str(p4),
                "--mag",
                str(m4),
                "--mask",
                str(mask_path),
                "--echo-times",
                "0.004,0.008",
                "-o",
                str(out4),
            ]
        )
        == 0
    )
    result4 = nib.load(str(out4)).get_fdata()
    assert result4.shape == four.shape
    assert_congruent(result4, four)
    assert_recovers(result4[..., 0], true, mask)


def test_cli_unwrap_errors(tmp_path, capsys):
    from qsmkit.cli.main import main

    phase_path = _save(tmp_path / "phase.nii.gz", np.zeros((6, 6, 6)))
    assert main(["unwrap", str(phase_path), "-o", str(tmp_path / "out.txt")]) == 2
    assert "nii" in capsys.readouterr().err
    assert main(["unwrap", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o.nii.gz")]) == 2

"""The multi-echo GRE simulator and ``qsmkit simulate``: physics self-consistency."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage

from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.geometry import b0_dir_from_affine, fast_shape, voxel_size_from_affine
from qsmkit.io.nifti import load_nifti
from qsmkit.kernels import dipole_kernel
from qsmkit.phantom import head_phantom, simulate_gre
from qsmkit.units import larmor_hz

TILT = np.radians(20.0)
B0_DIR = (0.0, float(np.sin(TILT)), float(np.cos(TILT)))
ECHOES = (0.004, 0.009, 0.014, 0.019)


@pytest.fixture(scope="module")
def ph():
    return head_phantom((64, 64, 56), (3.0, 3.0, 3.5), seed=2)


@pytest.fixture(scope="module")
def sim(ph):
    return simulate_gre(ph, ECHOES, b0_tesla=3.0, b0_dir=B0_DIR, snr=80.0, seed=5)


def _independent_field_ppm(chi, voxel_size, b0_dir, method="ispace"):
    """Field of ``chi`` with NumPy's FFT, zero-padded to the simulator's grid size.

    With the image-space kernel and at least two-fold padding the convolution is linear, so
    only the zero-frequency convention (a constant) depends on the padded size.
    """
    shape = np.asarray(chi.shape)
    padded = np.asarray(fast_shape(chi.shape, [n // 2 for n in chi.shape]))
    before = (padded - shape) // 2
    big = np.zeros(tuple(padded))
    big[tuple(slice(b, b + n) for b, n in zip(before, shape, strict=True))] = chi
    kernel = dipole_kernel(tuple(padded), voxel_size, b0_dir, method=method, dtype=np.float64)
    field = np.real(np.fft.ifftn(np.fft.fftn(big) * kernel))
    return field[tuple(slice(b, b + n) for b, n in zip(before, shape, strict=True))]


def test_outputs_types_and_geometry(sim, ph):
    assert sim.magnitude.shape == (*ph.shape, len(ECHOES)) == sim.phase.shape
    for name in ("magnitude", "phase", "field_hz", "local_field_hz", "background_field_hz"):
        assert getattr(sim, name).dtype == np.float32, name
    assert sim.phase.min() >= -np.pi and sim.phase.max() < np.pi
    np.testing.assert_allclose(b0_dir_from_affine(sim.affine), B0_DIR, atol=1e-9)
    np.testing.assert_allclose(voxel_size_from_affine(sim.affine), ph.voxel_size, atol=1e-9)
    np.testing.assert_array_equal(sim.mask, ph.brain_mask)
    acq = sim.acquisition
    np.testing.assert_array_equal(acq.phase, sim.phase)
    np.testing.assert_allclose(acq.echo_times_s, ECHOES)
    assert acq.b0_tesla == 3.0 and acq.manufacturer == "qsmkit-simulator"
    np.testing.assert_allclose(acq.b0_dir, B0_DIR, atol=1e-9)


def test_local_field_matches_independent_forward_model(sim, ph):
    expected = _independent_field_ppm(ph.chi_ppm * ph.brain_mask, ph.voxel_size, B0_DIR)
    expected_hz = expected * larmor_hz(3.0) * 1e-6
    m = sim.mask
    scale = np.abs(expected_hz[m]).max()
    assert scale > 5.0  # microbleeds and veins produce tens of Hz at 3 T
    np.testing.assert_allclose(sim.local_field_hz[m], expected_hz[m], atol=2e-3 * scale)
    assert np.all(sim.local_field_hz[~m] == 0)


def test_field_decomposition(sim):
    total = sim.local_field_hz + sim.background_field_hz + sim.shim_field_hz
    np.testing.assert_allclose(sim.field_hz, total, atol=1e-3)
    assert np.any(sim.shim_field_hz != 0)


def test_background_and_shim_are_harmonic_in_the_brain(sim, ph):
    interior = ndimage.binary_erosion(sim.mask, iterations=3)
    vs = np.asarray(ph.voxel_size)

    def laplacian(f):
        f = f.astype(np.float64)
        return sum((np.roll(f, 1, a) - 2 * f + np.roll(f, -1, a)) / vs[a] ** 2 for a in range(3))

    lap_bg = laplacian(sim.background_field_hz)[interior]
    lap_local = laplacian(np.where(sim.mask, sim.local_field_hz, 0))[interior]
    lap_shim = laplacian(sim.shim_field_hz)[interior]
    rms = lambda x: float(np.sqrt(np.mean(x**2)))  # noqa: E731
    assert rms(lap_bg) < 0.05 * rms(lap_local)
    assert rms(lap_shim) < 1e-3 * rms(lap_local)
    # Second-order shimming reduces the field spread in the brain.
    bg = sim.background_field_hz[sim.mask]
    assert np.std(bg + sim.shim_field_hz[sim.mask]) < 0.8 * np.std(bg)


def test_background_field_is_realistic(sim):
    # At 3 T the shimmed field in the brain spans tens of Hz, more near the sinus.
    shimmed = (sim.background_field_hz + sim.shim_field_hz)[sim.mask]
    p1, p99 = np.percentile(shimmed, [1, 99])
    assert 10.0 < p99 - p1 < 300.0


def test_phase_follows_field_between_echoes(sim):
    good = sim.mask & (sim.magnitude[..., -1] > 15 * sim.noise_sigma)
    assert good.sum() > 0.5 * sim.mask.sum()
    for e in range(1, len(ECHOES)):
        dte = ECHOES[e] - ECHOES[0]
        residual = np.angle(
            np.exp(1j * (sim.phase[..., e] - sim.phase[..., 0] - 2 * np.pi * sim.field_hz * dte))
        )[good]
        # Noise on two echoes at SNR >= 15 gives phase errors of a few hundredths of a radian.
        assert np.percentile(np.abs(residual), 99) < 0.25, e
        assert abs(np.median(residual)) < 0.01, e


def test_noiseless_signal_model(ph):
    sim = simulate_gre(ph, (0.003, 0.006), b0_tesla=7.0, snr=np.inf, seed=1, shim=False)
    assert sim.noise_sigma == 0.0
    r2 = ph.r2star_per_s_3t.astype(np.float64) * 7.0 / 3.0
    for e, te in enumerate((0.003, 0.006)):
        np.testing.assert_allclose(
            sim.magnitude[..., e], ph.proton_density * np.exp(-r2 * te), rtol=1e-5, atol=1e-7
        )
        expected = 2 * np.pi * sim.field_hz.astype(np.float64) * te + sim.receive_phase_rad
        residual = np.angle(np.exp(1j * (sim.phase[..., e] - expected)))
        assert np.abs(residual).max() < 1e-4
    np.testing.assert_array_equal(sim.shim_field_hz, 0)
    np.testing.assert_allclose(
        sim.field_hz, sim.local_field_hz + sim.background_field_hz, atol=1e-3
    )
    # The receive phase is smooth and the same for both echoes (already used above).
    assert np.abs(np.diff(sim.receive_phase_rad, axis=0)).max() < 0.2


def test_noise_level(sim, ph):
    first = ph.proton_density * np.exp(-ph.r2star_per_s_3t * ECHOES[0])
    assert sim.noise_sigma == pytest.approx(first[ph.brain_mask].mean() / 80.0, rel=1e-4)
    air = ndimage.binary_erosion(ph.labels == 0, iterations=2)
    # Magnitude of pure complex Gaussian noise is Rayleigh: mean sigma * sqrt(pi / 2).
    mean_air = sim.magnitude[air].mean()
    assert mean_air == pytest.approx(sim.noise_sigma * np.sqrt(np.pi / 2), rel=0.03)


def test_sphere_matches_analytic_field_with_oblique_b0():
    """Field of a sphere at 2-4 radii equals the dipole field (chi V / 4 pi r^3)(3cos^2-1)."""
    base = head_phantom((48, 48, 48), (4.0, 4.0, 4.0), lesions=False)
    shape, vs = (48, 48, 40), (1.0, 1.0, 1.5)
    centre = (np.asarray(shape) - 1) / 2
    grids = np.meshgrid(
        *[(np.arange(n) - c) * v for n, c, v in zip(shape, centre, vs, strict=True)],
        indexing="ij",
    )
    r = np.sqrt(sum(g**2 for g in grids))
    radius, dchi = 6.0, 0.2
    chi = np.where(r <= radius, dchi, 0.0).astype(np.float32)
    volume = np.count_nonzero(chi) * np.prod(vs)
    b = np.array([0.3, 0.4, 1.0])
    b /= np.linalg.norm(b)
    phantom = dataclasses.replace(
        base,
        chi_ppm=chi,
        brain_mask=np.ones(shape, bool),
        proton_density=np.ones(shape, np.float32),
        r2star_per_s_3t=np.zeros(shape, np.float32),
        voxel_size=vs,
        air_chi_ppm=0.0,
    )
    cos = sum(g * bi for g, bi in zip(grids, b, strict=True)) / np.maximum(r, 1e-9)
    analytic = dchi * volume / (4 * np.pi * np.maximum(r, 1e-9) ** 3) * (3 * cos**2 - 1)
    analytic_hz = analytic * larmor_hz(3.0) * 1e-6
    shell = (r >= 2 * radius) & (r <= 4 * radius)
    errors = {}
    for kernel in ("ispace", "kspace"):
        out = simulate_gre(phantom, (0.01,), b0_dir=b, snr=np.inf, shim=False, kernel=kernel)
        assert np.abs(out.background_field_hz).max() == 0
        diff = out.local_field_hz[shell] - analytic_hz[shell]
        errors[kernel] = np.sqrt(np.mean(diff**2) / np.mean(analytic_hz[shell] ** 2))
    # Measured: ispace 0.6 %, kspace 5 % (the k-space kernel rings for oblique B0).
    assert errors["ispace"] < 0.01
    assert 3 * errors["ispace"] < errors["kspace"] < 0.1
    with pytest.raises(InputError):
        simulate_gre(phantom, (0.01,), kernel="fourier")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"echo_times_s": (4.0, 8.0)},
        {"echo_times_s": (0.008, 0.004)},
        {"echo_times_s": (-0.001,)},
        {"b0_dir": (0.0, 0.0, 0.0)},
        {"b0_tesla": 0.0},
        {"snr": -1.0},
    ],
)
def test_bad_options(ph, kwargs):
    args = {"echo_times_s": ECHOES, **kwargs}
    with pytest.raises(InputError):
        simulate_gre(ph, args.pop("echo_times_s"), **args)


def test_empty_mask_is_refused(ph):
    empty = dataclasses.replace(ph, brain_mask=np.zeros(ph.shape, bool))
    with pytest.raises(InputError, match="brain_mask"):
        simulate_gre(empty, ECHOES)


# ------------------------------------------------------------------------------------------
# qsmkit simulate
# ------------------------------------------------------------------------------------------
CLI_ARGS = ["--shape", "56,56,48", "--voxel-size", "3.5,3.5,4", "--echo-times", "0.004,0.01,0.016"]


@pytest.fixture(scope="module")
def cli_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "oblique"
    rc = main(
        [
            "simulate",
            str(out),
            *CLI_ARGS,
            "--b0-dir",
            ",".join(map(str, B0_DIR)),
            "--seed",
            "3",
            "--snr",
            "60",
            "--b0",
            "3",
        ]
    )
    assert rc == 0
    return out


def test_cli_files(cli_out):
    expected = {
        "mag.nii.gz",
        "phase.nii.gz",
        "mag.json",
        "phase.json",
        "chi.nii.gz",
        "mask.nii.gz",
        "labels.nii.gz",
        "labels.tsv",
        "local_field_hz.nii.gz",
        "field_hz.nii.gz",
        "background_field_hz.nii.gz",
        "shim_field_hz.nii.gz",
        "phantom.json",
        "qsmkit.json",
        "phase_offset_rad.nii.gz",
        "r2star.nii.gz",
    }
    assert expected <= {p.name for p in cli_out.iterdir()}
    assert not [p for p in cli_out.parent.iterdir() if ".partial" in p.name]
    mag, affine, _ = load_nifti(cli_out / "mag.nii.gz")
    phase, phase_affine, _ = load_nifti(cli_out / "phase.nii.gz")
    assert mag.shape == phase.shape == (56, 56, 48, 3)
    np.testing.assert_allclose(affine, phase_affine)
    assert phase.min() >= -np.pi and phase.max() < np.pi
    sidecar = json.loads((cli_out / "phase.json").read_text())
    assert sidecar["EchoTimes"] == [0.004, 0.01, 0.016] and sidecar["EchoTime"] == 0.004
    assert sidecar["MagneticFieldStrength"] == 3.0 and "P" in sidecar["ImageType"]
    assert "M" in json.loads((cli_out / "mag.json").read_text())["ImageType"]
    record = json.loads((cli_out / "phantom.json").read_text())
    np.testing.assert_allclose(record["b0_dir"], B0_DIR, atol=1e-9)
    assert record["echo_times_s"] == [0.004, 0.01, 0.016] and record["seed"] == 3
    assert record["voxel_size"] == [3.5, 3.5, 4.0] and record["snr"] == 60.0
    assert len(record["lesions"]) == 9 and len(record["veins"]) >= 5
    provenance = json.loads((cli_out / "qsmkit.json").read_text())
    assert provenance["command"] == "simulate"
    assert provenance["echo_times_s"] == [0.004, 0.01, 0.016]


def test_cli_truth_is_self_consistent(cli_out):
    chi, affine, _ = load_nifti(cli_out / "chi.nii.gz")
    mask = load_nifti(cli_out / "mask.nii.gz")[0] > 0.5
    local = load_nifti(cli_out / "local_field_hz.nii.gz")[0]
    total = load_nifti(cli_out / "field_hz.nii.gz")[0]
    background = load_nifti(cli_out / "background_field_hz.nii.gz")[0]
    shim = load_nifti(cli_out / "shim_field_hz.nii.gz")[0]
    b0_dir = b0_dir_from_affine(affine)  # geometry only from the file
    voxel_size = voxel_size_from_affine(affine)
    np.testing.assert_allclose(voxel_size, (3.5, 3.5, 4.0), atol=1e-6)
    expected = _independent_field_ppm(chi * mask, voxel_size, b0_dir) * larmor_hz(3.0) * 1e-6
    scale = np.abs(expected[mask]).max()
    np.testing.assert_allclose(local[mask], expected[mask], atol=2e-3 * scale)
    # A wrong B0 direction would not match: the untilted field differs clearly.
    untilted = _independent_field_ppm(chi * mask, voxel_size, (0, 0, 1)) * larmor_hz(3.0) * 1e-6
    assert np.abs(untilted[mask] - local[mask]).max() > 0.1 * scale
    np.testing.assert_allclose(total, local + background + shim, atol=1e-3)


def test_cli_phase_agrees_with_field(cli_out):
    mag = load_nifti(cli_out / "mag.nii.gz")[0]
    phase = load_nifti(cli_out / "phase.nii.gz")[0]
    field = load_nifti(cli_out / "field_hz.nii.gz")[0]
    offset = load_nifti(cli_out / "phase_offset_rad.nii.gz")[0]
    mask = load_nifti(cli_out / "mask.nii.gz")[0] > 0.5
    sigma = json.loads((cli_out / "phantom.json").read_text())["noise_sigma"]
    for e, te in enumerate((0.004, 0.01, 0.016)):
        good = mask & (mag[..., e] > 20 * sigma)
        assert good.sum() > 0.8 * mask.sum()
        residual = np.angle(np.exp(1j * (phase[..., e] - 2 * np.pi * field * te - offset)))[good]
        assert np.percentile(np.abs(residual), 99.5) < 0.2, e


def test_cli_labels_table(cli_out):
    labels = load_nifti(cli_out / "labels.nii.gz", dtype=np.int32)[0]
    chi = load_nifti(cli_out / "chi.nii.gz")[0]
    rows = (cli_out / "labels.tsv").read_text().strip().splitlines()
    assert rows[0].split("\t") == ["index", "name", "chi_ppm"]
    table = {int(r.split("\t")[0]): (r.split("\t")[1], float(r.split("\t")[2])) for r in rows[1:]}
    assert set(np.unique(labels).tolist()) == set(table)
    for index, (name, value) in table.items():
        if name in ("cortical_gm", "white_matter"):
            assert abs(chi[labels == index].mean() - value) < 0.002
        else:
            np.testing.assert_allclose(chi[labels == index], value, atol=1e-5, err_msg=name)


def test_cli_refuses_to_overwrite_and_force(cli_out, tmp_path, capsys):
    before = (cli_out / "mag.nii.gz").stat().st_mtime_ns
    assert main(["simulate", str(cli_out), *CLI_ARGS]) == 2
    assert "--force" in capsys.readouterr().err
    assert (cli_out / "mag.nii.gz").stat().st_mtime_ns == before
    out = tmp_path / "again"
    assert main(["simulate", str(out), *CLI_ARGS, "--no-shim", "--no-lesions"]) == 0
    assert not (out / "shim_field_hz.nii.gz").exists()
    assert main(["simulate", str(out), *CLI_ARGS, "--no-shim", "--force", "--seed", "9"]) == 0
    record = json.loads((out / "phantom.json").read_text())
    assert record["seed"] == 9 and not record["shim"]
    total = load_nifti(out / "field_hz.nii.gz")[0]
    parts = (
        load_nifti(out / "local_field_hz.nii.gz")[0]
        + load_nifti(out / "background_field_hz.nii.gz")[0]
    )
    np.testing.assert_allclose(total, parts, atol=1e-3)


@pytest.mark.parametrize(
    "extra",
    [
        ["--shape", "64,64"],
        ["--shape", "64,64,6.5"],
        ["--echo-times", "4,8,12"],
        ["--b0-dir", "0,0,0"],
        ["--snr", "0"],
        ["--voxel-size", "3,3"],
    ],
)
def test_cli_bad_arguments(tmp_path, extra, capsys):
    assert main(["simulate", str(tmp_path / "x"), *CLI_ARGS, *extra]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_liver(tmp_path):
    pytest.importorskip("qsmkit.phantom.liver")
    out = tmp_path / "liver"
    rc = main(["simulate", str(out), "--body", "liver", "--seed", "1", "--snr", "50"])
    assert rc == 0
    provenance = json.loads((out / "qsmkit.json").read_text())
    assert provenance["config"]["body"] == "liver"
    assert any(p.suffixes[-2:] == [".nii", ".gz"] for p in out.iterdir())
    assert main(["simulate", str(tmp_path / "l2"), "--body", "liver", "--bids", "01"]) == 2

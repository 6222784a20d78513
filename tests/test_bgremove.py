"""Background field removal: accuracy against known local fields, exactness, inputs, CLI.

The synthetic case (``_case``) is a 160 mm field of view with an ellipsoidal head in air
(tissue -9.4 ppm relative to air), an air-filled sinus in front of and below an ellipsoidal
brain mask, and local sources kept at least 6 mm inside the mask: four deep-grey nuclei
(0.12-0.18 ppm), three veins (0.45 ppm) and six random spheres (+-0.1-0.3 ppm). Fields are
computed on a grid padded to twice the size with the image-space dipole kernel, whose
background field is harmonic inside the brain to 0.2 % (the sampled k-space kernel leaves a
non-harmonic ringing in it, see docs/bgremove.md). The numbers in the comments are the errors
measured when the tolerances were set.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg

from qsmkit import fft
from qsmkit.bgremove import METHODS, BackgroundResult, ismv, lbv, pdf, resharp, sharp, vsharp
from qsmkit.bgremove.lbv import _Level
from qsmkit.errors import InputError
from qsmkit.geometry import affine_from_geometry, fast_shape, pad_to
from qsmkit.kernels import ball, dipole_kernel
from qsmkit.solvers import cg
from qsmkit.units import ppm_to_hz

OBLIQUE = tuple(np.array([0.25, 0.35, 0.9]) / np.linalg.norm([0.25, 0.35, 0.9]))


def _dipole_field_hz(chi_ppm, voxel_size, b0_dir, b0_tesla=3.0):
    shape = fast_shape(chi_ppm.shape, [n // 2 for n in chi_ppm.shape])
    padded, crop = pad_to(chi_ppm, shape)
    kernel = dipole_kernel(shape, voxel_size, b0_dir, method="ispace", half=True, dtype=float)
    return ppm_to_hz(fft.irfftn(fft.rfftn(padded) * kernel, shape)[crop], b0_tesla)


def _case(n=64, voxel_size=None, b0_dir=(0.0, 0.0, 1.0), seed=0, fov=160.0):
    vs = np.full(3, fov / n) if voxel_size is None else np.asarray(voxel_size, dtype=float)
    shape = tuple(int(round(fov / v)) for v in vs)
    axes = [(np.arange(s) - (s - 1) / 2) * v for s, v in zip(shape, vs, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    half = fov / 2

    def ellipsoid(centre, semi):
        return (
            sum(
                ((c - o * half) / (a * half)) ** 2
                for c, o, a in zip((x, y, z), centre, semi, strict=True)
            )
            <= 1
        )

    head = ellipsoid((0, 0, 0), (0.88, 0.80, 0.76))
    brain = ellipsoid((0, 0, 0), (0.70, 0.60, 0.56))
    chi_out = np.where(head, -9.4, 0.0)  # relative to air
    near = scipy.ndimage.binary_dilation(brain, iterations=2)
    chi_out[ellipsoid((0, 0.55, -0.45), (0.18, 0.18, 0.15)) & head & ~near] = 0.0
    chi_out[brain] = 0.0  # the uniform brain tissue is part of the background source
    chi_out_brain = np.where(brain, -9.4, 0.0)

    def eroded(mm):
        return scipy.ndimage.binary_erosion(brain, iterations=max(1, round(mm / vs.min())))

    deep, deeper = eroded(6.0), eroded(12.0)
    chi = np.zeros(shape)
    for centre, semi, value in [
        ((0.25, 0.1, 0.0), (0.12, 0.08, 0.1), 0.12),
        ((-0.25, 0.1, 0.0), (0.12, 0.08, 0.1), 0.12),
        ((0.15, -0.1, -0.1), (0.06, 0.06, 0.06), 0.18),
        ((-0.15, -0.1, -0.1), (0.06, 0.06, 0.06), 0.18),
    ]:
        chi[ellipsoid(centre, semi) & brain] = value
    r_vein = (0.025 * half) ** 2
    chi[((x - 0.1 * half) ** 2 + (z - 0.3 * half) ** 2 <= r_vein) & deep] = 0.45
    chi[((y + 0.35 * half) ** 2 + (x + 0.2 * half) ** 2 <= r_vein) & deep] = 0.45
    chi[((y - 0.3 * half) ** 2 + (z + 0.05 * half) ** 2 <= r_vein) & deep] = 0.45
    rng = np.random.default_rng(seed)
    candidates = np.argwhere(deeper)
    for _ in range(6):
        p = candidates[rng.integers(len(candidates))]
        radius = rng.uniform(0.03, 0.06) * half
        dist2 = sum((c - a[i]) ** 2 for c, a, i in zip((x, y, z), axes, p, strict=True))
        chi[(dist2 <= radius**2) & brain] = rng.choice([-1, 1]) * rng.uniform(0.1, 0.3)
    local = _dipole_field_hz(chi, vs, b0_dir)
    background = _dipole_field_hz(chi_out + chi_out_brain, vs, b0_dir)
    return {
        "total": (local + background).astype(np.float32),
        "local": local,
        "background": background,
        "mask": brain,
        "voxel_size": tuple(float(v) for v in vs),
        "b0_dir": tuple(float(b) for b in b0_dir),
    }


def _relative_error(estimate, truth, mask):
    return float(np.linalg.norm(estimate[mask] - truth[mask]) / np.linalg.norm(truth[mask]))


@pytest.fixture(scope="module")
def case():
    return _case()


@pytest.fixture(scope="module")
def results(case):
    return {
        name: method(case["total"], case["mask"], case["voxel_size"], b0_dir=case["b0_dir"])
        for name, method in METHODS.items()
    }


def _check_result(result, field, mask):
    assert isinstance(result, BackgroundResult)
    assert result.field_hz.shape == field.shape and result.field_hz.dtype == np.float32
    assert result.mask.dtype == bool and result.mask.shape == field.shape
    assert result.mask.any()
    assert not np.any(result.mask & ~mask), "returned mask must lie inside the input mask"
    assert np.all(result.field_hz[~result.mask] == 0)
    assert np.all(np.isfinite(result.field_hz))
    if result.background_hz is not None:
        assert result.background_hz.dtype == np.float32
        assert np.all(result.background_hz[~mask] == 0)


def test_registry_names_and_uniform_signature():
    assert set(METHODS) == {"pdf", "lbv", "sharp", "vsharp", "resharp", "ismv"}
    for method in METHODS.values():
        params = inspect.signature(method).parameters
        assert list(params)[:3] == ["field_hz", "mask", "voxel_size"]
        for name in ("b0_dir", "weight"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert "References" in method.__doc__


# Measured on the 64^3 / 2.5 mm case (own mask): pdf 0.169, lbv 0.077, sharp 0.095,
# vsharp 0.128, resharp 0.101, ismv 0.076. Kept fraction: 1.0, 0.88, 0.75, 0.82, 0.82, 0.88.
# V-SHARP's smallest default sphere is two voxels (6 mm here), which keeps 0.71.
ACCURACY = {
    "pdf": (0.21, 1.0),
    "lbv": (0.10, 0.85),
    "sharp": (0.12, 0.70),
    "vsharp": (0.16, 0.69),
    "resharp": (0.13, 0.78),
    "ismv": (0.10, 0.85),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_recovers_local_field_of_phantom(case, results, name):
    result = results[name]
    _check_result(result, case["total"], case["mask"])
    tolerance, min_kept = ACCURACY[name]
    error = _relative_error(result.field_hz, case["local"], result.mask)
    assert error <= tolerance, f"{name}: relative error {error:.3f}"
    kept = result.mask.sum() / case["mask"].sum()
    assert kept >= min_kept, f"{name}: kept only {kept:.2f} of the mask"
    # Without background removal the error is dominated by the background.
    assert _relative_error(case["total"], case["local"], result.mask) > 3.0


def test_deep_region_is_accurate_for_every_method(case, results):
    # Voxels at least 12 mm from the edge: every method within 12 % (measured 6-12 %).
    dist = scipy.ndimage.distance_transform_edt(case["mask"], sampling=case["voxel_size"])
    core = dist > 12.0
    for name, result in results.items():
        assert np.all(result.mask[core]), name
        error = _relative_error(result.field_hz, case["local"], core)
        assert error <= 0.12, f"{name}: {error:.3f} in the deep region"


# Residual of a pure dipole background, rms over the returned mask, relative to the rms
# deviation of that background from its mean (measured: pdf 0.97 %, lbv 0.46 %, sharp 0.19 %,
# vsharp 0.12 %, resharp 0.06 %, ismv 0.44 %).
BACKGROUND_RESIDUAL = {
    "pdf": 0.015,
    "lbv": 0.007,
    "sharp": 0.003,
    "vsharp": 0.002,
    "resharp": 0.001,
    "ismv": 0.007,
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_removes_dipole_background(case, name):
    background = case["background"]
    result = METHODS[name](background, case["mask"], case["voxel_size"])
    spread = background[case["mask"]].std()
    residual = np.sqrt(np.mean(result.field_hz[result.mask] ** 2)) / spread
    assert residual <= BACKGROUND_RESIDUAL[name], f"{name}: residual {residual:.4f}"


def _harmonic_polynomial(shape, voxel_size):
    axes = [(np.arange(n) - n / 2 + 0.3) * v for n, v in zip(shape, voxel_size, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return (
        40.0
        + 2.0 * x
        - 1.5 * y
        + 0.8 * z
        + 0.05 * (x**2 - y**2)
        + 0.03 * (2 * z**2 - x**2 - y**2)
        + 0.04 * x * y
        - 0.02 * y * z
    )


def _sphere_mask(shape, voxel_size, radius_mm, centre_shift=(0, 0, 0)):
    axes = [
        (np.arange(n) - (n - 1) / 2) * v - s
        for n, v, s in zip(shape, voxel_size, centre_shift, strict=True)
    ]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    return x**2 + y**2 + z**2 <= radius_mm**2


# Rms residual of a harmonic polynomial relative to its spread: exact up to float32 rounding
# for the methods built on the 7-point Laplacian or a symmetric sphere, approximate for PDF
# (measured 0.74 % after its default 30 iterations).
@pytest.mark.parametrize(
    ("name", "options", "tolerance"),
    [
        ("pdf", {}, 0.012),
        ("lbv", {}, 1e-5),
        ("sharp", {"radius_mm": 4}, 1e-5),
        ("vsharp", {"radii_mm": (8, 4, 2)}, 1e-5),
        ("resharp", {"radius_mm": 4}, 1e-4),
        ("ismv", {"radius_mm": 3, "tol": 1e-7}, 1e-5),
    ],
)
def test_harmonic_polynomial_is_removed(name, options, tolerance):
    shape, vs = (40, 40, 40), (1.0, 1.0, 1.0)
    field = _harmonic_polynomial(shape, vs)
    mask = _sphere_mask(shape, vs, 15.0)
    result = METHODS[name](field, mask, vs, **options)
    _check_result(result, field, mask)
    spread = field[mask].std()
    residual = np.sqrt(np.mean(result.field_hz[result.mask] ** 2)) / spread
    assert residual <= tolerance, f"{name}: residual {residual:.2e}"


def test_lbv_is_exact_for_a_polynomial_on_anisotropic_voxels():
    shape, vs = (40, 36, 24), (1.0, 1.2, 2.0)
    field = _harmonic_polynomial(shape, vs)
    mask = _sphere_mask(shape, vs, 17.0)
    result = lbv(field, mask, vs)
    assert np.abs(result.field_hz).max() <= 1e-5 * field[mask].std()


def _interior_blob(shape, mask, depth_vox):
    inner = scipy.ndimage.binary_erosion(mask, iterations=depth_vox)
    rng = np.random.default_rng(3)
    blob = scipy.ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * inner
    return blob / np.abs(blob).max() * 5.0


@pytest.mark.parametrize("name", ["lbv", "ismv"])
def test_local_field_vanishing_at_the_boundary_is_recovered_exactly(name):
    # Harmonic background + a local field that is zero on the boundary layer (LBV) or on the
    # boundary shell of the sphere (iSMV): both methods' assumptions hold, so they are exact.
    shape, vs = (40, 40, 40), (1.0, 1.0, 1.0)
    mask = _sphere_mask(shape, vs, 16.0)
    blob = _interior_blob(shape, mask, 5)
    field = _harmonic_polynomial(shape, vs) + blob
    options = {"radius_mm": 3, "tol": 1e-8} if name == "ismv" else {"tol": 1e-9}
    result = METHODS[name](field, mask, vs, **options)
    error = _relative_error(result.field_hz, blob, result.mask)
    assert error <= 1e-4, f"{name}: {error:.2e}"


@pytest.fixture(scope="module")
def oblique_case():
    return _case(voxel_size=(2.5, 2.5, 3.5), b0_dir=OBLIQUE)


# Anisotropic voxels and oblique B0 (measured: pdf 0.234, lbv 0.102, sharp 0.116,
# vsharp 0.199, resharp 0.141, ismv 0.101; the default V-SHARP radii drop 2 mm < 3.5 mm).
# Without the moment correction of the SMV kernel (sharp.smv_parts) SHARP, RESHARP and
# iSMV had 0.36, 0.37 and 0.73 here.
@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        # PDF: 0.34 with its k-space kernel on this case, which is simulated with qsmkit's own
        # image-space kernel; the fair comparison of kernels is the test below.
        ("pdf", 0.36),
        ("lbv", 0.13),
        ("sharp", 0.15),
        ("vsharp", 0.24),
        ("resharp", 0.18),
        ("ismv", 0.13),
    ],
)
def test_anisotropic_voxels_and_oblique_b0(oblique_case, name, tolerance):
    c = oblique_case
    options = {"radius_mm": 4.0} if name == "ismv" else {}
    result = METHODS[name](c["total"], c["mask"], c["voxel_size"], b0_dir=c["b0_dir"], **options)
    _check_result(result, c["total"], c["mask"])
    error = _relative_error(result.field_hz, c["local"], result.mask)
    assert error <= tolerance, f"{name}: {error:.3f}"


def test_pdf_uses_the_kspace_kernel_at_every_b0_direction(case, results):
    """On an oblique field that qsmkit did not simulate (continuous kernel on a 2x finer
    grid, tests/textured_brain.py, 1 mm, B0 tilted 20 deg) the k-space kernel is at least as
    good as the truncated image-space one, so ``auto`` picks it. Measured local-field error
    0.52 (k-space) against 0.55 (image space); on qsm-forward data the chi NRMSE after PDF
    and TV was 21 % against 40 % (docs/bgremove.md)."""
    from textured_brain import textured_brain

    tilt = np.radians(20.0)
    p = textured_brain((1.0, 1.0, 1.0), semi_axes_mm=(36.0, 44.0, 32.0), margin_mm=8.0,
                       b0_dir=(np.sin(tilt), 0.0, np.cos(tilt)))
    auto = pdf(p["total_hz"], p["mask"], p["voxel_size"], b0_dir=p["b0_dir"])
    ispace = pdf(p["total_hz"], p["mask"], p["voxel_size"], b0_dir=p["b0_dir"], kernel="ispace")
    e_auto = _relative_error(auto.field_hz, p["local_hz"], p["mask"])
    e_ispace = _relative_error(ispace.field_hz, p["local_hz"], p["mask"])
    assert auto.info["kernel"] == "kspace" and results["pdf"].info["kernel"] == "kspace"
    assert e_auto < e_ispace, (e_auto, e_ispace)
    # The fitted background plus the local field is the input on the mask.
    fitted = results["pdf"]
    np.testing.assert_allclose(
        (fitted.field_hz + fitted.background_hz)[case["mask"]],
        case["total"][case["mask"]],
        atol=1e-4 * np.abs(case["total"]).max(),
    )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_mask_touching_the_field_of_view(case, name):
    # Cut the volume so that the brain touches the bottom face of the array.
    lowest = int(np.nonzero(case["mask"].any(axis=(0, 1)))[0][0])
    cut = (slice(None), slice(None), slice(lowest + 2, None))
    mask = case["mask"][cut]
    assert mask[:, :, 0].sum() > 100
    result = METHODS[name](case["total"][cut], mask, case["voxel_size"])
    _check_result(result, case["total"][cut], mask)
    error = _relative_error(result.field_hz, case["local"][cut], result.mask)
    assert error <= ACCURACY[name][0] + 0.05, f"{name}: {error:.3f}"


def test_pdf_weight_discounts_corrupted_voxels(case):
    mask = case["mask"]
    corrupt = _sphere_mask(mask.shape, case["voxel_size"], 10.0, (20.0, -10.0, 5.0)) & mask
    field = case["total"] + 40.0 * corrupt
    weight = np.where(corrupt, 0.0, 1.0)
    clean = mask & ~scipy.ndimage.binary_dilation(corrupt, iterations=2)
    plain = pdf(field, mask, case["voxel_size"])
    weighted = pdf(field, mask, case["voxel_size"], weight=weight)
    e_plain = _relative_error(plain.field_hz, case["local"], clean)
    e_weighted = _relative_error(weighted.field_hz, case["local"], clean)
    assert weighted.info["weighted"] and not plain.info["weighted"]
    assert e_weighted < 0.25 and e_weighted < 0.5 * e_plain, (e_weighted, e_plain)


@pytest.mark.parametrize("voxel_size", [(1.0, 1.0, 1.0), (0.8, 1.0, 1.6)])
def test_sharp_mask_is_the_exact_erosion_by_the_sphere(voxel_size):
    shape = (36, 32, 24)
    mask = _sphere_mask(shape, voxel_size, 13.0, (1.3, -0.7, 0.4))
    mask |= _sphere_mask(shape, voxel_size, 6.0, (-9.0, 8.0, 0.0))
    radius = 4.0
    result = sharp(np.zeros(shape), mask, voxel_size, radius_mm=radius)
    # Voxels at exactly one radius count as inside (radii get a 1e-6 relative slack).
    sphere = ball(voxel_size, radius * (1 + 1e-6))
    expected = scipy.ndimage.binary_erosion(mask, sphere, border_value=0)
    np.testing.assert_array_equal(result.mask, expected)


def test_vsharp_mask_grows_to_the_smallest_sphere(case, results):
    vs, mask = case["voxel_size"], case["mask"]
    result = results["vsharp"]
    # Default radii of at least two voxels: 4 and 2 mm are below 2 x 2.5 mm.
    assert result.info["radii_mm"] == [12.0, 10.0, 8.0, 6.0]
    smallest = scipy.ndimage.binary_erosion(mask, ball(vs, 6.0 * (1 + 1e-6)), border_value=0)
    np.testing.assert_array_equal(result.mask, smallest)
    assert result.mask.sum() > sharp(case["total"], mask, vs, radius_mm=12.0).mask.sum()


def test_vsharp_rejects_radii_smaller_than_a_voxel(case):
    with pytest.raises(InputError, match="smaller than the largest voxel"):
        vsharp(case["total"], case["mask"], case["voxel_size"], radii_mm=(8, 2))
    with pytest.raises(InputError, match="too coarse"):
        vsharp(np.zeros((8, 8, 8)), np.ones((8, 8, 8), bool), (13.0, 13.0, 13.0))


def test_lbv_multigrid_pcg_matches_a_direct_solve():
    shape, vs = (40, 36, 30), (1.0, 1.1, 1.4)
    mask = _sphere_mask(shape, vs, 17.0)
    inner = scipy.ndimage.binary_erosion(mask, scipy.ndimage.generate_binary_structure(3, 1))
    inv_h2 = tuple(1 / v**2 for v in vs)
    rng = np.random.default_rng(1)
    rhs = rng.standard_normal(shape) * inner
    level = _Level(inner, inv_h2)
    assert level.depth() >= 2  # a real hierarchy, not only the direct solve
    x, iterations = cg(level.apply, rhs, tol=1e-10, max_iter=100, precondition=level.vcycle)
    residual = np.linalg.norm(rhs - level.apply(x)) / np.linalg.norm(rhs)
    assert residual <= 1e-10 and iterations <= 30
    # Reference: the 7-point Dirichlet Laplacian of the whole box as a Kronecker sum,
    # restricted to the interior voxels, solved directly.
    eye = [scipy.sparse.identity(n, format="csr") for n in shape]
    second = [
        w * scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
        for w, n in zip(inv_h2, shape, strict=True)
    ]
    matrix = (
        scipy.sparse.kron(scipy.sparse.kron(second[0], eye[1]), eye[2])
        + scipy.sparse.kron(scipy.sparse.kron(eye[0], second[1]), eye[2])
        + scipy.sparse.kron(scipy.sparse.kron(eye[0], eye[1]), second[2])
    ).tocsr()
    keep = np.flatnonzero(inner.ravel())
    reference = scipy.sparse.linalg.spsolve(matrix[keep][:, keep].tocsc(), rhs.ravel()[keep])
    np.testing.assert_allclose(x.ravel()[keep], reference, atol=1e-8 * np.abs(reference).max())
    np.testing.assert_array_equal(x[~inner], 0)


def test_lbv_converges_in_few_iterations_and_peels(case, results):
    info = results["lbv"].info
    assert info["converged"] and info["iterations"] <= 20 and info["levels"] >= 2
    peeled = lbv(case["total"], case["mask"], case["voxel_size"], peel=2)
    six = scipy.ndimage.generate_binary_structure(3, 1)
    expected = scipy.ndimage.binary_erosion(case["mask"], six, iterations=3, border_value=0)
    np.testing.assert_array_equal(peeled.mask, expected)


def test_ismv_cg_and_fixed_point_reach_the_same_background():
    c = _case(n=32)
    args = (c["total"], c["mask"], c["voxel_size"])
    fast = ismv(*args, radius_mm=10.0, tol=1e-7)
    slow = ismv(*args, radius_mm=10.0, solver="fixed-point", tol=1e-7, max_iter=5000)
    assert fast.info["iterations"] < slow.info["iterations"] / 3  # measured 24 vs 116
    np.testing.assert_array_equal(fast.mask, slow.mask)
    diff = np.abs(fast.field_hz - slow.field_hz).max()
    assert diff <= 1e-3 * np.abs(c["local"][c["mask"]]).max()


def test_resharp_regularisation_shrinks_the_solution(case):
    args = (case["total"], case["mask"], case["voxel_size"])
    weak = resharp(*args, lam=1e-4)
    strong = resharp(*args, lam=1.0)
    assert np.linalg.norm(strong.field_hz) < 0.5 * np.linalg.norm(weak.field_hz)  # 0.38


def test_nan_outside_the_mask_is_ignored(case):
    field = np.where(case["mask"], case["total"], np.nan)
    for name in ("sharp", "lbv"):
        expected = METHODS[name](case["total"], case["mask"], case["voxel_size"])
        got = METHODS[name](field, case["mask"], case["voxel_size"])
        np.testing.assert_array_equal(got.field_hz, expected.field_hz)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f, m: sharp(f[..., None], m, (1, 1, 1)), "3D field"),
        (lambda f, m: sharp(f, m[:-1], (1, 1, 1)), "mask shape"),
        (lambda f, m: sharp(f, np.zeros_like(m), (1, 1, 1)), "empty"),
        (lambda f, m: lbv(f, m, (1, 0, 1)), "voxel_size"),
        (lambda f, m: lbv(f, m, (1, 1)), "voxel_size"),
        (lambda f, m: lbv(np.where(m, np.nan, f), m, (1, 1, 1)), "NaN"),
        (lambda f, m: pdf(f, m, (1, 1, 1), weight=-np.ones_like(f)), "non-negative"),
        (lambda f, m: pdf(f, m, (1, 1, 1), weight=np.ones((3, 3, 3))), "weight shape"),
        (lambda f, m: pdf(f, m, (1, 1, 1), b0_dir=(0, 0, 0)), "b0_dir"),
        (lambda f, m: pdf(f, m, (1, 1, 1), kernel="fourier"), "kernel"),
        (lambda f, m: pdf(f, m, (1, 1, 1), pad=-1), "pad"),
        (lambda f, m: sharp(f, m, (1, 1, 1), radius_mm=0.5), "smaller than the largest"),
        (lambda f, m: sharp(f, m, (1, 1, 1), radius_mm=30), "no voxel of the mask"),
        (lambda f, m: sharp(f, m, (1, 1, 1), threshold=1.5), "threshold"),
        (lambda f, m: resharp(f, m, (1, 1, 1), lam=-1), "lam"),
        (lambda f, m: ismv(f, m, (1, 1, 1), solver="jacobi"), "solver"),
        (lambda f, m: ismv(f, m, (1, 1, 1), max_iter=0), "max_iter"),
        (lambda f, m: lbv(f, m, (1, 1, 1), peel=-1), "peel"),
        (lambda f, m: lbv(f, m, (1, 1, 1), peel=20), "interior"),
        (lambda f, m: vsharp(f, m, (1, 1, 1), radii_mm=()), "empty"),
        (lambda f, m: sharp(f.astype(complex), m, (1, 1, 1)), "real"),
    ],
)
def test_bad_input_raises_input_error(call, message):
    mask = _sphere_mask((24, 24, 24), (1, 1, 1), 9.0)
    field = _harmonic_polynomial((24, 24, 24), (1, 1, 1))
    with pytest.raises(InputError, match=message):
        call(field, mask)


@pytest.mark.slow
@pytest.mark.parametrize("b0_dir", [(0.0, 0.0, 1.0), OBLIQUE], ids=["axial", "oblique"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_head_phantom_accuracy(name, b0_dir):
    # The project's head phantom (64^3 at 3 mm, no noise): cortex and the superior sagittal
    # sinus reach the mask edge, so errors are larger than on the synthetic case. Measured
    # when set (axial / oblique): pdf 0.33 / 0.37, lbv 0.17 / 0.17, sharp 0.27 / 0.29,
    # vsharp 0.31 / 0.30, resharp 0.24 / 0.26, ismv 0.17 / 0.17.
    phantom = pytest.importorskip("qsmkit.phantom")
    ph = phantom.head_phantom((64, 64, 64), (3.0, 3.0, 3.0))
    sim = phantom.simulate_gre(ph, (0.005, 0.010), snr=float("inf"), b0_dir=b0_dir)
    result = METHODS[name](sim.field_hz, sim.mask, sim.voxel_size, b0_dir=sim.b0_dir)
    _check_result(result, sim.field_hz, sim.mask)
    tolerance = {
        "pdf": 0.45,
        "lbv": 0.22,
        "sharp": 0.35,
        "vsharp": 0.38,
        "resharp": 0.32,
        "ismv": 0.22,
    }[name]
    error = _relative_error(result.field_hz, sim.local_field_hz, result.mask)
    assert error <= tolerance, f"{name}: {error:.3f}"


# ----------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def nifti_inputs(tmp_path_factory):
    from qsmkit.io.nifti import save_nifti

    c = _case(n=32, b0_dir=OBLIQUE)
    folder = tmp_path_factory.mktemp("bgremove_inputs")
    affine = affine_from_geometry(c["mask"].shape, c["voxel_size"], OBLIQUE)
    save_nifti(folder / "field.nii.gz", c["total"], affine)
    save_nifti(folder / "mask.nii.gz", c["mask"], affine)
    save_nifti(folder / "weight.nii.gz", np.ones(c["mask"].shape), affine)
    return folder, c, affine


def test_cli_writes_local_field_mask_and_provenance(nifti_inputs, tmp_path):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import load_nifti

    folder, c, affine = nifti_inputs
    out = tmp_path / "out"
    argv = [
        "bgremove",
        str(folder / "field.nii.gz"),
        "--mask",
        str(folder / "mask.nii.gz"),
        "--method",
        "pdf",
        "--weight",
        str(folder / "weight.nii.gz"),
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    local, out_affine, _ = load_nifti(out / "local_field_hz.nii.gz")
    mask, _, _ = load_nifti(out / "mask.nii.gz")
    np.testing.assert_allclose(out_affine, affine, atol=1e-5)
    direct = pdf(c["total"], c["mask"], c["voxel_size"], b0_dir=OBLIQUE)
    np.testing.assert_allclose(local, direct.field_hz, atol=1e-3 * np.abs(direct.field_hz).max())
    np.testing.assert_array_equal(mask > 0, direct.mask)
    record = json.loads((out / "qsmkit.json").read_text())
    assert record["command"] == "bgremove" and record["config"]["method"] == "pdf"
    assert record["result"]["kernel"] == "kspace"
    np.testing.assert_allclose(record["b0_dir_voxel"], OBLIQUE, atol=1e-5)
    assert len(record["inputs"]) == 3
    # Refuses to overwrite without --force, then replaces with it.
    assert main(argv) == 2
    assert main([*argv, "--force"]) == 0


def test_cli_vsharp_with_radii(nifti_inputs, tmp_path):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import load_nifti

    folder, c, _ = nifti_inputs
    out = tmp_path / "vs"
    argv = [
        "bgremove",
        str(folder / "field.nii.gz"),
        "--mask",
        str(folder / "mask.nii.gz"),
        "--method",
        "vsharp",
        "--radii",
        "15,10,5",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    mask, _, _ = load_nifti(out / "mask.nii.gz")
    expected = vsharp(c["total"], c["mask"], c["voxel_size"], radii_mm=(15, 10, 5))
    np.testing.assert_array_equal(mask > 0, expected.mask)
    record = json.loads((out / "qsmkit.json").read_text())
    assert record["config"] == {"method": "vsharp", "options": {"radii_mm": [15.0, 10.0, 5.0]}}


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "pdf", "--radius", "5"],
        ["--method", "lbv", "--threshold", "0.1"],
        ["--method", "sharp", "--radii", "8,4"],
        ["--method", "lbv", "--weight", "w.nii.gz"],
    ],
)
def test_cli_rejects_options_the_method_does_not_take(nifti_inputs, tmp_path, extra, capsys):
    from qsmkit.cli.main import main

    folder, _, _ = nifti_inputs
    argv = [
        "bgremove",
        str(folder / "field.nii.gz"),
        "--mask",
        str(folder / "mask.nii.gz"),
        "-o",
        str(tmp_path / "x"),
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not apply" in err or "only" in err
    assert not (tmp_path / "x").exists()

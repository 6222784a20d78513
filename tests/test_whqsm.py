"""WH-QSM (``whtv``): the weak-harmonic term must take up a residual harmonic field.

The field comes from the independent head phantom (its own continuous dipole kernel on a 2x
finer grid); the harmonic field is that of a magnetised sphere (air-like, +9.4 ppm, radius
6 mm) 20 mm below the brain, written here in closed form (a uniformly magnetised sphere's
exterior field is a pure dipole: dB/B0 = dchi/3 (R/r)^3 (3 cos^2 theta - 1); Jackson,
Classical Electrodynamics, 3rd ed., section 5.10) - the kind of source background removal
leaves behind near the mask surface. Measured (64 x 64 x 48, 1 mm): TV 10.1 % on the clean
local field and 43.6 % with the sphere's field; WH-QSM 13.4 % and 12.8 %, its harmonic part
within 7 % of the sphere's field (converged, tol 1e-4: 13.1 % with or without the sphere).
"""

from __future__ import annotations

import numpy as np
import pytest

from independent_phantom import GAMMA_BAR_MHZ_PER_T, make_independent_phantom
from qsmkit import inversion
from qsmkit.errors import InputError
from qsmkit.inversion.whqsm import fit_whtv
from validation_metrics import score_chi


@pytest.fixture(scope="module")
def phantom():
    ph = make_independent_phantom((64, 64, 48), snr=None, with_local_field=True, seed=1)
    mask = ph.brain_mask
    idx = np.argwhere(mask)
    axes = [(np.arange(n) - (n - 1) / 2) * v for n, v in zip(mask.shape, ph.voxel_size_mm,
                                                            strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    centre_z = -(idx.max(0)[2] - idx.min(0)[2]) / 2 - 20.0
    r = np.sqrt(x ** 2 + y ** 2 + (z - centre_z) ** 2)
    cos = (z - centre_z) / np.maximum(r, 1e-6)
    radius_mm, dchi_ppm, b0 = 6.0, 9.4, 3.0
    sphere_hz = (GAMMA_BAR_MHZ_PER_T * b0 * dchi_ppm / 3.0
                 * (radius_mm / np.maximum(r, radius_mm)) ** 3 * (3 * cos ** 2 - 1))
    return ph, sphere_hz.astype(np.float32)


def _nrmse(chi, ph):
    return score_chi(chi, ph.chi_ppm, ph.brain_mask, ph.brain_mask)["nrmse_percent"]


def test_harmonic_field_is_absorbed(phantom):
    """With a residual harmonic field WH-QSM must beat TV by a wide margin and return that
    field as its harmonic part (both fail if the harmonic term is removed)."""
    ph, sphere_hz = phantom
    mask, kw = ph.brain_mask, {"b0_dir": ph.b0_dir_voxel, "b0_tesla": 3.0}
    field = ph.local_field_hz + sphere_hz
    assert float(np.std(sphere_hz[mask])) > 2.0  # a strong residual, not a nuisance
    tv_err = _nrmse(inversion.tv(field, mask, ph.voxel_size_mm, **kw), ph)
    chi, harmonic_hz = fit_whtv(field, mask, ph.voxel_size_mm, **kw)
    wh_err = _nrmse(chi, ph)
    assert wh_err < 20.0 and wh_err < tv_err - 15.0, (wh_err, tv_err)
    miss = harmonic_hz[mask] - sphere_hz[mask]
    miss -= miss.mean()
    ref = sphere_hz[mask] - sphere_hz[mask].mean()
    assert np.linalg.norm(miss) < 0.2 * np.linalg.norm(ref)


def test_clean_field_costs_little(phantom):
    """Without a background residual WH-QSM stays close to TV (the harmonic part must not eat
    the brain's own field)."""
    ph, _ = phantom
    mask, kw = ph.brain_mask, {"b0_dir": ph.b0_dir_voxel, "b0_tesla": 3.0}
    tv_err = _nrmse(inversion.tv(ph.local_field_hz, mask, ph.voxel_size_mm, **kw), ph)
    chi = inversion.invert(ph.local_field_hz, mask, ph.voxel_size_mm, method="whtv", **kw)
    assert chi.dtype == np.float32 and np.all(chi[~mask] == 0)
    assert _nrmse(chi, ph) < tv_err + 4.5  # measured 13.4 against 10.1


@pytest.mark.parametrize("option", [{"beta": -1.0}, {"beta": 0.0}, {"rho_harmonic": "x"},
                                    {"max_iter": 0}])
def test_bad_options_raise(option):
    field = np.zeros((8, 8, 8), np.float32)
    mask = np.ones((8, 8, 8), bool)
    with pytest.raises(InputError):
        inversion.invert(field, mask, (1, 1, 1), method="whtv", **option)


def test_invivo_like_hematoma_not_compressed():
    """On the in-vivo-like head (hematoma, vein, bleeds, noise 1 Hz, residual background) after
    qsmkit's PDF, WH-QSM keeps the hematoma's mean within 15 % where TV loses about 28 %.
    Measured (64 x 64 x 52, 2.25 mm): TV 77.2 % NRMSE, hematoma 0.72; WH-QSM 62.3 %, 0.88."""
    from invivo_like import make_invivo_like, region_ratio
    from qsmkit import bgremove

    case = make_invivo_like((64, 64, 52), (2.25, 2.25, 2.25), noise_hz=1.0, seed=0)
    local = bgremove.pdf(case.total_field_hz, case.brain_mask, case.voxel_size_mm,
                         b0_dir=case.b0_dir_voxel)
    results = {}
    for method in ("tv", "whtv"):
        chi = inversion.invert(local.field_hz, local.mask, case.voxel_size_mm, method=method,
                               b0_dir=case.b0_dir_voxel, lam=5e-4)
        results[method] = (
            score_chi(chi, case.chi_ppm, case.brain_mask, local.mask)["nrmse_percent"],
            region_ratio(chi, case, "hematoma", local.mask))
    assert 0.85 <= results["whtv"][1] <= 1.15, results
    assert results["whtv"][0] < results["tv"][0] - 8.0, results

"""Field (susceptometry) estimate of vein chi and Yv on analytic infinite-cylinder fields.

The fields are written here from the textbook solution of a long cylinder in a uniform field
(angles theta and phi explicit, averaged over 4^3 points per voxel), not with qsmkit's model
or dipole kernel: inside ``dchi (3 cos^2 theta - 1) / 6``, outside
``(dchi / 2) sin^2 theta (a / r)^2 cos 2 phi`` (relative field, Lorentz-sphere convention).
"""

import numpy as np
import pytest

from qsmkit.analysis import oximetry as ox
from qsmkit.analysis import vein_field as vf

LARMOR_3T_HZ_PER_PPM = 42.577478 * 3.0  # CODATA 2018 proton gamma/2pi x 3 T
DCHI_DEOXY_PPM = 4 * np.pi * 0.27  # Spees 2001 (cgs 0.27 ppm per unit Hct)
DCHI_OXY_PPM = -0.1  # Jain 2012


def _blood_chi(yv, hct):
    return hct * (DCHI_DEOXY_PPM * (1.0 - yv) + DCHI_OXY_PPM)


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _cylinder_field_hz(shape, voxel_mm, point_mm, axis, b0, radius_mm, dchi_ppm, n_sub=4):
    """Voxel-averaged field (Hz) of an infinite cylinder, with explicit theta and phi."""
    axis, b0 = _unit(axis), _unit(b0)
    theta = np.arccos(np.clip(axis @ b0, -1, 1))
    b_perp = b0 - (b0 @ axis) * axis
    e1 = _unit(b_perp) if np.linalg.norm(b_perp) > 1e-9 else _unit(np.cross(axis, [1, 0, 0]))
    e2 = np.cross(axis, e1)
    grid = np.stack(np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel_mm, strict=True)],
                                indexing="ij"), -1)
    out = np.zeros(shape)
    subs = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    for dx in subs:
        for dy in subs:
            for dz in subs:
                p = grid + np.array([dx, dy, dz]) * voxel_mm - point_mm
                u, w = p @ e1, p @ e2
                r = np.hypot(u, w)
                phi = np.arctan2(w, u)
                inside = dchi_ppm * (3 * np.cos(theta) ** 2 - 1) / 6
                outside = (dchi_ppm / 2 * np.sin(theta) ** 2 * (radius_mm / np.maximum(r, 1e-9))
                           ** 2 * np.cos(2 * phi))
                out += np.where(r < radius_mm, inside, outside)
    return out / n_sub**3 * LARMOR_3T_HZ_PER_PPM, grid


def _line(point_mm, axis, half_length_mm):
    t = np.arange(-half_length_mm, half_length_mm + 1e-9, 0.5)
    return np.asarray(point_mm) + t[:, None] * _unit(axis)


@pytest.mark.parametrize("theta_deg", [90.0, 25.0])
def test_fit_recovers_dchi_and_moment_of_an_analytic_cylinder(theta_deg):
    """Oblique cylinder on anisotropic voxels with a linear background and noise: the
    intravascular dchi within 4 % and the moment dchi a^2 within 6 %, standard error honest."""
    shape, voxel = (40, 40, 28), np.array([1.0, 1.0, 1.5])
    b0 = _unit([np.sin(np.radians(10)), 0.0, np.cos(np.radians(10))])
    # Axis at theta_deg to B0, in the plane of B0 and y.
    helper = _unit(np.cross(b0, [0.0, 1.0, 0.0]))
    axis = np.cos(np.radians(theta_deg)) * b0 + np.sin(np.radians(theta_deg)) * _unit(
        np.cross(helper, b0))
    centre = (np.asarray(shape) - 1) / 2 * voxel + [0.3, -0.2, 0.1]
    radius, dchi = 2.5, 0.45
    field, grid = _cylinder_field_hz(shape, voxel, centre, axis, b0, radius, dchi)
    rng = np.random.default_rng(7)
    field += 3.0 + 0.4 * (grid[..., 0] - 20) - 0.2 * (grid[..., 2] - 20)
    field += rng.normal(0, 0.5, shape)
    mask = np.ones(shape, bool)
    fit = vf.fit_vein_field(field, mask, voxel, _line(centre, axis, 16.0), radius, b0, 3.0)
    assert fit is not None and fit.n_inside > 20 and fit.n_outside > 500
    assert fit.dchi_ppm == pytest.approx(dchi, rel=0.04)
    assert fit.moment_ppm_mm2 == pytest.approx(dchi * radius**2, rel=0.06)
    assert abs(fit.dchi_ppm - dchi) < 5 * fit.dchi_se_ppm + 0.01
    assert fit.rms_hz == pytest.approx(0.5, rel=0.25)
    expected_weight = abs(3 * np.cos(np.radians(theta_deg)) ** 2 - 1) / 6
    assert fit.inside_weight == pytest.approx(expected_weight, abs=0.01)


def test_magic_angle_gives_no_precision_and_sign_of_the_field_matters():
    """At the magic angle the inside field is zero: the fit says so with a large standard
    error. A sign error of the model would turn dchi negative at 90 degrees."""
    shape, voxel = (36, 36, 36), np.array([1.0, 1.0, 1.0])
    b0 = np.array([0.0, 0.0, 1.0])
    centre = (np.asarray(shape) - 1) / 2 * voxel
    magic = np.degrees(np.arccos(1 / np.sqrt(3)))
    axis = [np.sin(np.radians(magic)), 0.0, np.cos(np.radians(magic))]
    field, _ = _cylinder_field_hz(shape, voxel, centre, axis, b0, 2.5, 0.45)
    field += np.random.default_rng(1).normal(0, 0.5, shape)
    fit = vf.fit_vein_field(field, np.ones(shape, bool), voxel, _line(centre, axis, 14.0), 2.5,
                            b0, 3.0)
    assert fit.inside_weight < 0.01
    assert np.isnan(fit.dchi_ppm) and fit.dchi_se_ppm == np.inf
    assert fit.moment_ppm_mm2 == pytest.approx(0.45 * 2.5**2, rel=0.06)
    field90, _ = _cylinder_field_hz(shape, voxel, centre, [1, 0, 0], b0, 2.5, 0.45)
    field90 += np.random.default_rng(1).normal(0, 0.5, shape)
    fit90 = vf.fit_vein_field(field90, np.ones(shape, bool), voxel, _line(centre, [1, 0, 0],
                                                                          14.0), 2.5, b0, 3.0)
    assert fit90.dchi_ppm == pytest.approx(0.45, rel=0.03)
    # 4 degrees off the magic angle the inside field is five times weaker than at 90 degrees:
    # still unbiased, with a standard error that many times larger.
    axis = [np.sin(np.radians(magic + 4)), 0.0, np.cos(np.radians(magic + 4))]
    field, _ = _cylinder_field_hz(shape, voxel, centre, axis, b0, 2.5, 0.45)
    field += np.random.default_rng(1).normal(0, 0.5, shape)
    near = vf.fit_vein_field(field, np.ones(shape, bool), voxel, _line(centre, axis, 14.0),
                             2.5, b0, 3.0)
    assert near.inside_weight < 0.04
    assert near.dchi_se_ppm > 3 * fit90.dchi_se_ppm
    assert near.dchi_ppm == pytest.approx(0.45, abs=4 * near.dchi_se_ppm)


def _scene(offset_ppm=0.0, chi_bias=1.17):
    """A vein perpendicular to B0 in tissue at -0.03 ppm (relative to CSF), a CSF block, and a
    bleed 7 mm from the vein; the chi map reads the vein ``chi_bias`` times too high (as the
    wall voxels make a reconstruction do) while the field is that of the true vein."""
    shape, voxel = (56, 48, 40), np.array([1.2, 1.2, 1.2])
    b0 = np.array([0.0, 0.0, 1.0])
    hct, yv, tissue = 0.42, 0.62, -0.03
    blood = _blood_chi(yv, hct)
    centre = np.array([33.0, 28.0, 24.0])
    axis = np.array([1.0, 0.0, 0.0])
    field, grid = _cylinder_field_hz(shape, voxel, centre, axis, b0, 2.5, blood - tissue)
    r_vein = np.hypot(grid[..., 1] - centre[1], grid[..., 2] - centre[2])
    bleed_at, bleed_r, bleed_chi = centre + [0.0, 7.0, 0.0], 2.0, 0.8
    d = grid - bleed_at
    rb = np.linalg.norm(d, axis=-1)
    cos2 = (d[..., 2] / np.maximum(rb, 1e-9)) ** 2
    # Sphere outside: (dchi / 3) (R / r)^3 (3 cos^2 - 1); inside: zero (Lorentz convention).
    field += np.where(rb > bleed_r, (bleed_chi - tissue) / 3 * (bleed_r / np.maximum(rb, 1e-9))
                      ** 3 * (3 * cos2 - 1), 0.0) * LARMOR_3T_HZ_PER_PPM
    field += np.random.default_rng(3).normal(0, 0.3, shape)
    chi = np.full(shape, tissue)
    chi[r_vein <= 2.5] = tissue + chi_bias * (blood - tissue)
    chi[rb <= bleed_r] = bleed_chi
    csf = np.zeros(shape, bool)
    csf[4:10, 4:12, 4:12] = True
    chi[csf] = 0.0
    return (chi + offset_ppm).astype(np.float32), field.astype(np.float32), csf, voxel, b0, yv


@pytest.mark.parametrize("offset_ppm", [0.0, 0.07])
def test_oximetry_uses_the_field_estimate_and_ignores_the_chi_reference(offset_ppm):
    """The chi map reads the vein 17 % high: the chi estimate misses Yv by about 0.05, the
    field estimate (chosen) gets it within 0.02, whatever the offset of the chi map, with the
    bleed next to the vein removed from the field by its own chi."""
    chi, field, csf, voxel, b0, yv = _scene(offset_ppm)
    mask = np.ones(chi.shape, bool)
    res = ox.venous_oximetry(chi, mask, voxel, hct=0.42, reference_mask=csf, b0_dir=b0,
                             local_field_hz=field, b0_tesla=3.0)
    row = max(res.rows, key=lambda r: r["length_mm"])
    assert row["usable"] and row["estimate"] == "field"
    assert abs(row["yv_chi"] - yv) > 0.04
    assert row["yv"] == pytest.approx(yv, abs=0.02)
    assert row["yv_field_sd"] < 0.01
    assert row["tissue_chi_ppm"] == pytest.approx(-0.03, abs=0.005)
    assert res.parameters["field_estimate"] is True
    without = ox.venous_oximetry(chi, mask, voxel, hct=0.42, reference_mask=csf, b0_dir=b0)
    plain = max(without.rows, key=lambda r: r["length_mm"])
    assert plain["estimate"] == "chi" and plain["yv_field"] is None
    assert plain["yv"] == pytest.approx(row["yv_chi"])


def test_bleed_field_is_removed_before_the_fit():
    """Without removing the bleed's field (a chi map without the bleed), the fit is worse."""
    chi, field, csf, voxel, b0, yv = _scene()
    mask = np.ones(chi.shape, bool)
    chi_no_bleed = np.where(chi > 0.6, -0.03, chi).astype(np.float32)
    kw = dict(hct=0.42, reference_mask=csf, b0_dir=b0, local_field_hz=field, b0_tesla=3.0)
    good = max(ox.venous_oximetry(chi, mask, voxel, **kw).rows, key=lambda r: r["length_mm"])
    blind = ox.venous_oximetry(chi_no_bleed, mask, voxel, **kw)
    bad = max(blind.rows, key=lambda r: r["length_mm"])
    assert abs(good["yv_field"] - yv) < 0.5 * abs(bad["yv_field"] - yv)


def test_field_needs_b0_and_the_same_grid():
    from qsmkit.errors import InputError

    chi, field, csf, voxel, b0, _ = _scene()
    mask = np.ones(chi.shape, bool)
    with pytest.raises(InputError, match="b0_tesla"):
        ox.venous_oximetry(chi, mask, voxel, reference_mask=csf, local_field_hz=field)
    with pytest.raises(InputError):
        ox.venous_oximetry(chi, mask, voxel, reference_mask=csf, local_field_hz=field[:-1],
                           b0_tesla=3.0)
    # NaN in the field (a failed voxel fit) is left out, not propagated.
    field[20:30, 20:25, 20:25] = np.nan
    res = ox.venous_oximetry(chi, mask, voxel, hct=0.42, reference_mask=csf, b0_dir=b0,
                             local_field_hz=field, b0_tesla=3.0)
    row = max(res.rows, key=lambda r: r["length_mm"])
    assert row["estimate"] == "field" and np.isfinite(row["yv"])


def test_cli_reads_the_local_field_beside_the_map(tmp_path):
    """`qsmkit oximetry run/chi.nii.gz ...` finds run/local_field_hz.nii.gz and B0 in
    run/qsmkit.json; --no-field keeps the chi estimate; a field without B0 is refused."""
    import json

    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti

    chi, field, csf, voxel, _, yv = _scene()
    affine = np.diag([*voxel, 1.0])
    run = tmp_path / "run"
    run.mkdir()
    for name, data in (("chi", chi), ("mask", np.ones(chi.shape, np.uint8)),
                       ("csf", csf.astype(np.uint8)), ("local_field_hz", field)):
        save_nifti(run / f"{name}.nii.gz", data, affine)
    (run / "qsmkit.json").write_text(json.dumps({"b0_tesla": 3.0}))
    args = ["oximetry", str(run / "chi.nii.gz"), str(run / "mask.nii.gz"), "--csf",
            str(run / "csf.nii.gz"), "--hct", "0.42"]

    def longest(path):
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
        return max(rows, key=lambda r: float(r["length_mm"]))

    assert main([*args, "-o", str(tmp_path / "v.tsv")]) == 0
    row = longest(tmp_path / "v.tsv")
    assert row["estimate"] == "field" and abs(float(row["yv"]) - yv) < 0.02
    assert main([*args, "--no-field", "-o", str(tmp_path / "c.tsv")]) == 0
    assert longest(tmp_path / "c.tsv")["estimate"] == "chi"
    (run / "qsmkit.json").unlink()
    assert main([*args, "--local-field", str(run / "local_field_hz.nii.gz"), "-o",
                 str(tmp_path / "x.tsv")]) == 2
    assert main([*args, "--local-field", str(run / "local_field_hz.nii.gz"), "--b0", "3",
                 "-o", str(tmp_path / "y.tsv")]) == 0
    assert longest(tmp_path / "y.tsv")["estimate"] == "field"


def test_forward_field_and_kept_sources_cover_the_whole_grid():
    """The dipole field of a ball (1 ppm, radius 3 mm) against the analytic field outside it,
    everywhere on the grid; removing 'every other source' from that field leaves the ball's
    own field within ``reach_mm`` of it (also beyond the ball's bounding box) and nothing
    farther out."""
    shape, voxel = (48, 48, 48), np.array([1.0, 1.0, 1.0])
    b0 = np.array([0.0, 0.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, voxel, strict=True)],
                                indexing="ij"), -1)
    d = grid - 23.5
    r = np.linalg.norm(d, axis=-1)
    # Partial-volume ball: fraction of 4^3 sub-points inside radius 3 mm.
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    ball = np.mean([np.linalg.norm(d + [a, b, c], axis=-1) <= 3.0 for a in sub for b in sub
                    for c in sub], axis=0).astype(np.float32)
    analytic = np.where(r > 3.0, 1.0 / 3 * (3.0 / np.maximum(r, 1e-9)) ** 3
                        * (3 * (d[..., 2] / np.maximum(r, 1e-9)) ** 2 - 1), 0.0)
    analytic_hz = analytic * LARMOR_3T_HZ_PER_PPM
    forward = vf.forward_field_hz(ball, voxel, b0, 3.0)
    shell = (r > 6.0) & (r < 14.0)
    assert np.abs(forward - analytic_hz)[shell].max() < 0.05 * np.abs(analytic_hz[shell]).max()
    mask = np.ones(shape, bool)
    kept = vf.field_without_other_sources(analytic_hz, ball, mask, voxel, b0, 3.0, ball > 0,
                                          np.zeros(shape, np.float32), reach_mm=12.0)
    near = shell & (np.abs(d).max(axis=-1) > 5.0) & (np.abs(d).max(axis=-1) < 12.0)
    assert near.sum() > 1000
    assert np.abs(kept - analytic_hz)[near].max() < 0.05 * np.abs(analytic_hz[near]).max()
    far = np.abs(d).max(axis=-1) > 20.0
    assert np.abs(kept[far]).max() < 0.05 * np.abs(analytic_hz[near]).max()

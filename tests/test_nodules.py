"""Nodule detection on a cirrhotic liver built here (maps, not signals), independent of qsmkit.

The phantom is drawn on a grid 2× finer in-plane and 4× finer through-plane than the
2 × 2 × 4 mm image grid and block-averaged (partial volume). Its background is a siderotic
cirrhotic liver: iron concentration with smooth heterogeneity, a cellular texture of small
regenerative nodules (Voronoi cells ~6 mm) separated by iron-poor fibrotic septa, and a tree of
portal/hepatic vessels (blood: no storage iron) that runs inside the liver mask. χ and R2* are
computed from the local iron with round-number rates of this file's own (not qsmkit's
calibrations) and Gaussian noise is added. Optionally R2* is that of the sub-voxels' summed
multi-echo signal (as a fit measures a mixed voxel) and the field of χ is computed with this
file's own dipole kernel on the fine grid.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from qsmkit.body.nodules import STATEMENT, find_nodules, write_nodule_json, write_thumbnails
from qsmkit.errors import InputError

VOXEL_MM = (2.0, 2.0, 4.0)
SHAPE = (72, 64, 16)
FINE = (2, 2, 4)
# this phantom's own tissue model: R2* = 25 + 30 * LIC (1/s), chi = 0.3 * LIC - 0.1 (ppm)
R2_BASE, R2_PER_LIC = 25.0, 30.0
CHI_BASE, CHI_PER_LIC = -0.1, 0.3


def _fine_coords():
    fshape = tuple(s * f for s, f in zip(SHAPE, FINE, strict=True))
    step = [v / f for v, f in zip(VOXEL_MM, FINE, strict=True)]
    axes = [(np.arange(n) + 0.5) * d for n, d in zip(fshape, step, strict=True)]
    return np.meshgrid(*axes, indexing="ij"), step


def _down(a):
    s = a.reshape(SHAPE[0], FINE[0], SHAPE[1], FINE[1], SHAPE[2], FINE[2])
    return s.mean(axis=(1, 3, 5))


def _segment_distance(x, y, z, p0, p1):
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / (d @ d)
    t = np.clip(t, 0, 1)
    return np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2
                   + (z - p0[2] - t * d[2]) ** 2)


def _r2star_of_mixed_signal(r2_fine, echo_times_s=tuple(1.2e-3 * k for k in range(1, 7))):
    """R2* (1/s) of each image voxel as a multi-echo fit measures it: the fine sub-voxels'
    decays summed into one signal, then a log-linear fit weighted by the signal (not the
    mean of their R2*: the slower decay dominates the later echoes of a mixed voxel)."""
    te = np.asarray(echo_times_s, float)
    signal = np.stack([_down(np.exp(-r2_fine * t)) for t in te], axis=-1)
    log_s = np.log(np.maximum(signal, 1e-12))
    w = signal**2
    tm = (w * te).sum(-1) / w.sum(-1)
    lm = (w * log_s).sum(-1) / w.sum(-1)
    slope = (w * (te - tm[..., None]) * (log_s - lm[..., None])).sum(-1) / (
        w * (te - tm[..., None]) ** 2).sum(-1)
    return -slope


def _field_hz_of(chi_fine_ppm, b0_tesla: float, step_mm):
    """Field (Hz, B0 along z) of a susceptibility distribution on the fine grid: the
    continuous dipole kernel 1/3 - kz²/k² sampled on that grid, zero-padded twice, then
    block-averaged to the image grid. gamma-bar 42.577478 MHz/T (CODATA 2018)."""
    padded = tuple(2 * n for n in chi_fine_ppm.shape)
    k = np.meshgrid(*[np.fft.fftfreq(n, d) for n, d in zip(padded, step_mm, strict=True)],
                    indexing="ij", sparse=True)
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    kernel = np.where(k2 > 0, 1 / 3 - k[2] ** 2 / np.where(k2 > 0, k2, 1), 0.0)
    field_ppm = np.fft.ifftn(kernel * np.fft.fftn(chi_fine_ppm, padded, axes=(0, 1, 2))).real
    n = chi_fine_ppm.shape
    return _down(field_ppm[: n[0], : n[1], : n[2]]) * 42.577478 * b0_tesla


def cirrhotic_liver(seed: int, nodules=(), *, background_lic=6.0, noise_chi_ppm=0.12,
                    noise_r2_frac=0.08, r2_from_signal=False, field_b0_tesla=None):
    """Maps (chi_ppm, r2star_per_s, pdff_percent, liver) on the image grid and truth masks.

    ``nodules``: (centre_mm, diameter_mm, lic) tuples; a nodule's iron replaces the liver's.
    ``r2_from_signal``: R2* of each image voxel from its sub-voxels' summed multi-echo
    signal (:func:`_r2star_of_mixed_signal`) instead of the mean of their R2*.
    ``field_b0_tesla``: also return the field (Hz) of the liver's χ at that B0
    (:func:`_field_hz_of`, noise 0.5 Hz) as a seventh element.
    """
    rng = np.random.default_rng(seed)
    (x, y, z), step = _fine_coords()
    centre = np.array([72.0, 64.0, 32.0])
    liver = (((x - centre[0]) / 64) ** 2 + ((y - centre[1]) / 56) ** 2
             + ((z - centre[2]) / 44) ** 2) <= 1
    # smooth LIC heterogeneity (+-10 %, ~2 cm scale) on the image grid, upsampled
    smooth = ndimage.gaussian_filter(rng.standard_normal(SHAPE), (10, 10, 5))
    smooth /= smooth.std() + 1e-12
    lic = background_lic * (1 + 0.10 * np.repeat(np.repeat(np.repeat(
        smooth, FINE[0], 0), FINE[1], 1), FINE[2], 2))
    # regenerative nodules of cirrhosis: Voronoi cells, each its own iron (+-15 %), septa
    n_cells = 5000
    seeds = rng.uniform([0, 0, 0], [144, 128, 64], size=(n_cells, 3))
    from scipy.spatial import cKDTree

    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    dist, idx = cKDTree(seeds).query(pts, k=2)
    cell = idx[:, 0].reshape(x.shape)
    gap = (dist[:, 1] - dist[:, 0]).reshape(x.shape)
    lic = lic * (1 + 0.15 * rng.standard_normal(n_cells))[cell]
    septa = gap < 0.6  # ~0.6 mm fibrous septa, iron-poor
    lic = np.where(septa, 0.3 * lic, lic)
    # vessels: a portal trunk from the hilum and branches, radius 3-5 mm, blood has no iron
    vessels = np.zeros(x.shape, bool)
    hilum = (60.0, 40.0, 30.0)
    branches = [(hilum, (110.0, 95.0, 34.0), 4.5), ((85.0, 67.0, 32.0), (40.0, 105.0, 30.0), 3.5),
                ((95.0, 80.0, 33.0), (125.0, 50.0, 28.0), 3.0)]
    for p0, p1, radius in branches:
        vessels |= _segment_distance(x, y, z, p0, p1) <= radius
    truth = []
    balls = []
    for centre_mm, diam_mm, nod_lic, *override in nodules:
        ball = ((x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2
                + (z - centre_mm[2]) ** 2) <= (diam_mm / 2) ** 2
        lic = np.where(ball, nod_lic * (1 + 0.05 * rng.standard_normal(x.shape)), lic)
        truth.append(_down(ball.astype(np.float32)) >= 0.5)
        balls.append((ball, override))
    lic = np.where(vessels, 0.0, lic)
    chi = np.where(vessels, 0.05, CHI_BASE + CHI_PER_LIC * lic)  # venous blood
    r2 = np.where(vessels, 20.0, R2_BASE + R2_PER_LIC * lic)
    for ball, override in balls:
        if override:  # (chi_ppm, r2star_per_s) of a nodule that is not iron (calcification)
            chi = np.where(ball, override[0][0], chi)
            r2 = np.where(ball, override[0][1], r2)
    liver_img = _down(liver.astype(np.float32)) >= 0.5
    chi_img = _down(np.where(liver, chi, 0.0))
    r2_img = (_r2star_of_mixed_signal(np.where(liver, r2, 15.0)) if r2_from_signal
              else _down(np.where(liver, r2, 15.0)))
    chi_img = chi_img + noise_chi_ppm * rng.standard_normal(SHAPE)
    r2_img = r2_img * (1 + noise_r2_frac * rng.standard_normal(SHAPE))
    pdff = np.where(liver_img, 4.0 + rng.standard_normal(SHAPE), 0.0)
    vessel_img = _down(vessels.astype(np.float32)) >= 0.3
    maps = (chi_img.astype(np.float32), r2_img.astype(np.float32), pdff.astype(np.float32),
            liver_img, truth, vessel_img)
    if field_b0_tesla is None:
        return maps
    field_hz = _field_hz_of(np.where(liver, chi, 0.0), field_b0_tesla, step)
    field_hz = field_hz + 0.5 * rng.standard_normal(SHAPE)
    return maps + (field_hz.astype(np.float32),)


NODULES = (
    ((50.0, 60.0, 30.0), 20.0, 18.0),   # siderotic, 2 cm
    ((100.0, 40.0, 34.0), 12.0, 20.0),  # siderotic, 1.2 cm
    ((78.0, 100.0, 30.0), 20.0, 0.8),   # iron-sparing, 2 cm
    ((40.0, 80.0, 22.0), 12.0, 0.5),   # iron-sparing, 1.2 cm
)
EXPECTED = ("siderotic", "siderotic", "iron-sparing", "iron-sparing")


def _match(result, truth):
    found = []
    for t in truth:
        ids = np.unique(result.labels[t])
        ids = ids[ids > 0]
        found.append(int(ids[0]) if len(ids) == 1 else None)
    return found


@pytest.mark.parametrize("seed", [1, 2])
def test_nodules_found_and_classed(seed):
    chi, r2, pdff, liver, truth, vessels = cirrhotic_liver(seed, NODULES)
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff)
    found = _match(result, truth)
    assert all(f is not None for f in found), (found, result.rejected)
    by_id = {n.id: n for n in result.nodules}
    for f, expected, (_, diam, _) in zip(found, EXPECTED, NODULES, strict=True):
        nod = by_id[f]
        assert nod.nodule_class == expected, nod
        assert abs(nod.diameter_mm - diam) < 0.35 * diam, nod
        assert 2.0 < nod.pdff_percent < 6.0
    # no other findings: every reported nodule is one of the truth nodules
    assert len(result.nodules) == len(NODULES), [n.row() for n in result.nodules]
    # vessels are not reported
    assert not np.any(result.labels[vessels & ~np.any(truth, axis=0)] > 0)


# seed 20: a stretch of a portal branch that partial volume thickened was cut off as a thick
# part and reported iron-sparing (9.8 mm) until thick parts had to hold a blob
@pytest.mark.parametrize("seed", [11, 12, 13, 20])
def test_no_false_positives_on_controls(seed):
    chi, r2, pdff, liver, _, _ = cirrhotic_liver(seed, ())
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff)
    assert result.nodules == [], [n.row() for n in result.nodules]


def test_outputs_and_statement(tmp_path):
    chi, r2, pdff, liver, _, _ = cirrhotic_liver(3, NODULES[:1])
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff)
    names = write_thumbnails(tmp_path, result, chi, r2, liver, VOXEL_MM)
    write_nodule_json(tmp_path / "nodules.json", result)
    assert names and all((tmp_path / n).stat().st_size > 1000 for n in names)
    doc = json.loads((tmp_path / "nodules.json").read_text())
    assert doc["statement"] == STATEMENT and "LI-RADS" in STATEMENT
    assert doc["nodules"][0]["class"] == "siderotic"


def test_bad_input():
    with pytest.raises(InputError):
        find_nodules(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), np.ones((4, 4, 4), bool),
                     VOXEL_MM)


def test_liver_command_nodules(tmp_path, capsys):
    """`qsmkit liver --nodules` on qsmkit's own abdomen phantom (signals, full pipeline): its
    iron-rich nodule (label 20) reads siderotic and its iron-poor one (21) iron-sparing."""
    import nibabel as nib

    from qsmkit.cli.main import main
    from qsmkit.phantom.liver import write_liver_simulation

    sim = tmp_path / "sim"
    write_liver_simulation(sim, shape=(48, 36, 12), voxel_size=(8.0, 8.0, 8.0), b0_tesla=3.0,
                           echo_times_s=None, b0_dir=(0, 0, 1), snr=100, seed=2)
    out = tmp_path / "out"
    assert main(["liver", "--mag", str(sim / "mag.nii.gz"), "--phase", str(sim / "phase.nii.gz"),
                 "--labels", str(sim / "labels.nii.gz"), "--nodules",
                 "-o", str(out)]) == 0
    labels = np.asarray(nib.load(sim / "labels.nii.gz").dataobj)
    doc = json.loads((out / "nodules.json").read_text())
    found = {int(labels[tuple(n["centroid_voxel"])]): n["class"] for n in doc["nodules"]}
    assert found == {20: "siderotic", 21: "iron-sparing"}, doc
    lines = (out / "nodules.tsv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("id\tclass\tvolume_ml\tdiameter_mm\t"
                                                   "largest_dimension_mm")
    assert all((out / n["thumbnail"]).exists() for n in doc["nodules"])
    assert "not a diagnosis" in capsys.readouterr().out


def test_disagreeing_contrasts_are_indeterminate():
    """A calcified nodule (diamagnetic: chi below the liver, R2* above it) is neither
    siderotic nor iron-sparing, and is reported once."""
    calcified = ((50.0, 60.0, 30.0), 20.0, 6.0, (-0.8, 500.0))
    chi, r2, pdff, liver, truth, _ = cirrhotic_liver(4, (calcified,))
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff)
    assert [n.nodule_class for n in result.nodules] == ["indeterminate"], result.nodules
    assert _match(result, truth)[0] == result.nodules[0].id
    assert result.nodules[0].z_chi < -2 < 2 < result.nodules[0].z_r2star


def test_region_found_by_both_passes_leaves_no_gap_in_the_labels():
    """A region bright in χ and dark in R2* (found by the bright and by the dark pass, kept
    once) before an iron-sparing nodule in scan order: the label number it leaves unused
    must not stop the analysis (it raised IndexError through ``qsmkit liver --nodules``)."""
    nodules = (((40.0, 60.0, 30.0), 20.0, 6.0, (2.5, 20.0)),
               ((100.0, 60.0, 30.0), 20.0, 0.5))
    chi, r2, pdff, liver, truth, _ = cirrhotic_liver(5, nodules)
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff)
    found = _match(result, truth)
    assert found[1] is not None, result.rejected
    assert {n.id: n for n in result.nodules}[found[1]].nodule_class == "iron-sparing"


def test_local_field_susceptibility_of_a_sphere():
    """Δχ of a sphere from its analytic field (Δχ/3 · (R/r)³ · (3cos²θ − 1) outside, 0
    inside, in units of B0) on a sloping background field with noise: within 10 %."""
    from qsmkit.body.nodules import local_field_susceptibility

    rng = np.random.default_rng(0)
    vs = (2.0, 2.0, 4.0)
    shape = (48, 48, 16)
    axes = [(np.arange(n) - (n - 1) / 2) * v for n, v in zip(shape, vs, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2) + 1e-9
    radius, dchi, b0 = 8.0, 0.8, 1.5
    larmor_mhz = 42.577478 * b0
    dipole = np.where(r > radius, dchi / 3 * (radius / r) ** 3 * (3 * (z / r) ** 2 - 1), 0.0)
    field = dipole * larmor_mhz + 0.3 * x + 0.1 * y - 0.2 * z + 0.002 * x * y
    field += rng.normal(0, 1.0, shape)
    # the sphere as voxels whose centre lies inside (a detected component, not partial volume)
    comp = r <= radius
    liver = np.ones(shape, bool)
    est, sd = local_field_susceptibility(field, np.ones(shape), comp, liver, vs, b0_tesla=b0)
    # the voxelised sphere's volume differs from the ball's: compare moments
    scale = (4 / 3 * np.pi * radius**3) / (comp.sum() * np.prod(vs))
    assert abs(est - dchi * scale) < 0.1 * dchi, (est, sd)
    assert 0 < sd < 0.05


def test_field_arguments_are_checked():
    chi, r2, pdff, liver, truth, _ = cirrhotic_liver(1, NODULES[:1])
    with pytest.raises(InputError, match="b0_tesla"):
        find_nodules(chi, r2, liver, VOXEL_MM, field_hz=np.zeros_like(chi))
    with pytest.raises(InputError, match="grid"):
        find_nodules(chi, r2, liver, VOXEL_MM, field_hz=np.zeros((3, 3, 3)), b0_tesla=3.0)
    with pytest.raises(InputError, match="positive"):
        find_nodules(chi, r2, liver, VOXEL_MM, b0_tesla=-1.0)


def _beside_portal_branch(gap_mm: float, radius_mm: float) -> tuple:
    """Centre (mm) of a ball of ``radius_mm`` whose surface lies ``gap_mm`` from the second
    portal branch of :func:`cirrhotic_liver` (radius 3.5 mm), at its midpoint, in-plane."""
    p0, p1 = np.array([85.0, 67.0, 32.0]), np.array([40.0, 105.0, 30.0])
    axis = (p1 - p0) / np.linalg.norm(p1 - p0)
    across = np.array([axis[1], -axis[0], 0.0]) / np.hypot(axis[0], axis[1])
    return tuple(0.5 * (p0 + p1) - across * (3.5 + gap_mm + radius_mm))


@pytest.mark.parametrize("seed", [1, 2])
def test_one_centimetre_nodules_beside_a_vessel_and_under_the_surface(seed):
    """1 cm nodules lying across a slice boundary (two 4 mm slices): an iron-sparing one
    3 mm from a portal branch (it merges with the vessel tree, dark like it) and a siderotic
    one 3 mm under the liver surface. Both are found and classed; the vessel is not
    reported and nothing else is. (Before: the iron-sparing one was lost in the vessel tree
    and thinner than the 5 mm ball needed three slices.)"""
    centre = _beside_portal_branch(3.0, 5.0)
    small = ((centre[:2] + (32.0,), 10.0, 0.6), ((16.0, 64.0, 32.0), 10.0, 20.0))
    chi, r2, pdff, liver, truth, vessels = cirrhotic_liver(seed, small)
    assert [len(np.unique(np.nonzero(t)[2])) for t in truth] == [2, 2]
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff)
    found = _match(result, truth)
    assert all(f is not None for f in found), (found, result.rejected)
    by_id = {n.id: n for n in result.nodules}
    assert [by_id[f].nodule_class for f in found] == ["iron-sparing", "siderotic"]
    assert all(abs(by_id[f].diameter_mm - 10.0) < 3.5 for f in found)
    assert len(result.nodules) == 2, [n.row() for n in result.nodules]
    assert not np.any(result.labels[vessels & ~np.any(truth, axis=0)] > 0)


def test_grid_inscribed_radius_and_thickness():
    """A 1 cm ball on 2 × 2 × 4 mm voxels keeps two slices (half-thickness 4 mm); one slice
    measures 2 mm, two 4 mm, three 6 mm (not 4, 4, 8 as the distance to voxel centres)."""
    from qsmkit.body.nodules import grid_inscribed_radius_mm, thickness_radius_mm

    assert grid_inscribed_radius_mm(5.0, VOXEL_MM) == pytest.approx(4.0)
    assert grid_inscribed_radius_mm(5.0, (1.0, 1.0, 1.0)) == pytest.approx(5.0)
    for n_slices, expected in ((1, 2.0), (2, 4.0), (3, 6.0)):
        block = np.zeros((12, 12, 6), bool)
        block[1:11, 1:11, 1:1 + n_slices] = True
        assert thickness_radius_mm(block, VOXEL_MM) == pytest.approx(expected)


def test_iron_rich_centimetre_nodule_seen_on_one_slice_beside_a_vessel():
    """A 1 cm siderotic nodule (LIC 20) centred in a 4 mm slice and indented by a portal
    branch (its centre 5.5 mm from the vessel axis: 3 mm of its diameter is blood, as S3 of
    the independent cirrhotic liver), with R2* measured as a multi-echo fit does and the
    field of the liver's χ, as `qsmkit liver` hands them over. In the two slices the
    nodule fills only in part the liver's slower decay dominates, so its R2* contrast is
    one slice thick: thinner than a 1 cm ball on this grid and about 8 mm as a sphere of
    equal volume. It is found by its in-plane size and classed siderotic; the vessel is not
    reported and nothing else is. (Before: rejected as thinner than the 1 cm ball; on
    seeds 5 and 6 also, or as smaller than 8 mm.)"""
    centre = _beside_portal_branch(-3.0, 5.0)
    nodule = ((centre[:2] + (30.0,), 10.0, 20.0),)  # slice 7 spans 28-32 mm
    chi, r2, pdff, liver, truth, vessels, field_hz = cirrhotic_liver(
        4, nodule, r2_from_signal=True, field_b0_tesla=1.5)
    # the premise: on R2* the nodule is one slice (over its central section, the slices
    # beside it read less than half its log-R2* contrast)
    z_nod = int(np.argmax(truth[0].sum((0, 1))))
    section = truth[0][..., z_nod]
    log_ratio = np.log(r2 / np.median(r2[liver]))
    peak = np.median(log_ratio[..., z_nod][section])
    assert peak > np.log(2.5)
    for dz in (-1, 1):
        assert np.median(log_ratio[..., z_nod + dz][section]) < 0.5 * peak, dz
    # as `qsmkit liver` calls it: with the field, R2* draws the candidates, χ is fitted
    result = find_nodules(chi, r2, liver, VOXEL_MM, pdff_percent=pdff, field_hz=field_hz,
                          b0_tesla=1.5)
    found = _match(result, truth)
    assert found[0] is not None, result.rejected
    nod = {n.id: n for n in result.nodules}[found[0]]
    assert nod.nodule_class == "siderotic", nod
    # sized as on images: its largest in-plane dimension is the nodule's (within a voxel)
    assert abs(nod.largest_dimension_mm - 10.0) <= 2.0, nod
    assert len(result.nodules) == 1, [n.row() for n in result.nodules]
    assert not np.any(result.labels[vessels & ~truth[0]] > 0)


def test_largest_section():
    """Outer edge to outer edge within one slice: a 5 × 3 block of 2 mm voxels is 10.8 mm
    across its diagonal (8 × 4 mm between centres, plus one voxel); slices are not summed."""
    from qsmkit.body.nodules import largest_section_mm

    block = np.zeros((10, 10, 4), bool)
    block[2:7, 2:5, 1] = True
    block[4, 3, 2] = True
    assert largest_section_mm(block, VOXEL_MM) == pytest.approx(np.hypot(8, 4) + 2)


@pytest.mark.parametrize("seed", [1, 2])
def test_contrast_outline_restores_a_one_centimetre_nodule_from_its_core(seed):
    """A 1 cm iron-sparing ball across a slice boundary (log R2* contrast of its share of
    each voxel, ln(1 - 0.65 f), with noise; Δχ -0.3 ppm in a textured liver, the field from
    this file's own kernel at 1.5 T). From its core (voxels it fills >= 90 %, as a detection
    threshold on a smoothed map leaves it), contrast_outline gives back the voxels the ball
    fills at least half, not more, and keeps out what it may not enter (a vessel beside
    it). The χ contrast fitted over that outline is closer to the one fitted over the
    ball's own outline than the core's is (on the independent cirrhotic liver the core of
    N3 read -0.12 ppm, its outline -0.20, truth -0.25)."""
    from qsmkit.body.nodules import contrast_outline, local_field_susceptibility

    (x, y, z), step = _fine_coords()
    rng = np.random.default_rng(seed)
    liver_fine = (((x - 72) / 64) ** 2 + ((y - 64) / 56) ** 2 + ((z - 32) / 44) ** 2) <= 1
    ball = (x - 40.0) ** 2 + (y - 60.0) ** 2 + (z - 32.0) ** 2 <= 5.0**2
    texture = ndimage.gaussian_filter(rng.standard_normal(x.shape), 3)
    texture *= 0.05 / texture.std()
    chi = np.where(liver_fine, texture + np.where(ball, -0.3, 0.0), 0.0)
    field_hz = _field_hz_of(chi, 1.5, step) + 0.5 * rng.standard_normal(SHAPE)
    liver = _down(liver_fine.astype(np.float32)) >= 0.5
    filled = _down(ball.astype(np.float32))
    own = filled >= 0.5
    contrast = np.log(1 - 0.65 * filled) + 0.08 * rng.standard_normal(SHAPE)
    core = filled >= 0.9
    region = contrast_outline(core, contrast, liver)
    assert core.sum() < 0.8 * own.sum()
    assert (region & own).sum() >= 0.8 * own.sum()
    assert (region & ~own).sum() <= 0.1 * own.sum()
    # a dark vessel beside it, excluded by ``allowed``, is not entered
    vessel = np.roll(own, 3, axis=0) & ~own
    dark = np.where(vessel, np.log(0.2), contrast)
    assert not np.any(contrast_outline(core, dark, liver & ~vessel) & vessel)
    fits = [local_field_susceptibility(field_hz, np.ones(SHAPE), m, liver, VOXEL_MM,
                                       b0_tesla=1.5)[0] for m in (own, region, core)]
    assert abs(fits[1] - fits[0]) < abs(fits[2] - fits[0]), fits

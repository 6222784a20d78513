"""The numerical head phantom: structures, susceptibilities, records that match the maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from qsmkit.errors import InputError
from qsmkit.phantom import HeadPhantom, head_phantom
from qsmkit.phantom.head import vein_angles_deg
from qsmkit.physiology import blood_chi_ppm

SHAPE, VOXEL = (64, 64, 64), (3.0, 3.0, 3.0)

# Literature ranges (ppm relative to CSF) quoted in the module docstring.
EXPECTED_RANGES = {
    "caudate": (0.06, 0.09),
    "putamen": (0.05, 0.09),
    "globus_pallidus": (0.15, 0.20),
    "thalamus": (0.02, 0.04),
    "substantia_nigra": (0.13, 0.17),
    "red_nucleus": (0.10, 0.14),
    "dentate": (0.10, 0.15),
}


@pytest.fixture(scope="module")
def ph() -> HeadPhantom:
    return head_phantom(SHAPE, VOXEL, seed=1)


@pytest.fixture(scope="module")
def ph_aniso() -> HeadPhantom:
    return head_phantom((64, 72, 48), (3.0, 2.5, 4.0), seed=4, yv=0.7, hct=0.40)


def _index(ph, name):
    matches = [i for i, n in ph.label_names.items() if n == name]
    assert len(matches) == 1, name
    return matches[0]


def _centroid_mm(ph, label):
    idx = np.argwhere(ph.labels == label).mean(axis=0)
    return (idx - (np.asarray(ph.shape) - 1) / 2) * np.asarray(ph.voxel_size)


def test_types_and_shapes(ph):
    assert ph.chi_ppm.shape == SHAPE and ph.chi_ppm.dtype == np.float32
    assert ph.labels.dtype == np.int16
    assert ph.proton_density.dtype == np.float32 and ph.r2star_per_s_3t.dtype == np.float32
    assert ph.brain_mask.dtype == bool and ph.head_mask.dtype == bool
    assert ph.voxel_size == VOXEL and ph.shape == SHAPE


def test_every_label_present_and_lut_complete(ph):
    present = set(np.unique(ph.labels).tolist())
    assert present == set(ph.label_names), "labels map and lookup table disagree"
    assert set(ph.label_chi_ppm) == set(ph.label_names)
    table = ph.label_table()
    assert [row[0] for row in table] == sorted(ph.label_names)
    assert len({row[1] for row in table}) == len(table), "label names must be unique"


def test_uniform_structures_have_their_table_chi(ph):
    textured = {_index(ph, "cortical_gm"), _index(ph, "white_matter")}
    for index, chi in ph.label_chi_ppm.items():
        values = ph.chi_ppm[ph.labels == index]
        if index in textured:
            continue
        np.testing.assert_allclose(values, chi, atol=1e-6, err_msg=ph.label_names[index])


def test_grey_white_texture_around_nominal(ph):
    for name, nominal in (("cortical_gm", 0.02), ("white_matter", -0.03)):
        values = ph.chi_ppm[ph.labels == _index(ph, name)]
        assert ph.label_chi_ppm[_index(ph, name)] == pytest.approx(nominal)
        assert abs(values.mean() - nominal) < 0.002, name
        assert 0.002 < values.std() < 0.01, name  # smooth texture, not flat, not noisy


def test_literature_values(ph):
    for name, (lo, hi) in EXPECTED_RANGES.items():
        for side in ("left", "right"):
            chi = ph.label_chi_ppm[_index(ph, f"{name}_{side}")]
            assert lo <= chi <= hi, f"{name}_{side} chi {chi} outside {lo}..{hi}"
    assert ph.label_chi_ppm[_index(ph, "air")] == pytest.approx(9.4, abs=0.05)
    assert ph.label_chi_ppm[_index(ph, "sinus_air")] == pytest.approx(9.4, abs=0.05)
    assert -2.5 <= ph.label_chi_ppm[_index(ph, "skull")] <= -1.5
    assert ph.label_chi_ppm[_index(ph, "csf")] == 0.0
    assert ph.label_chi_ppm[_index(ph, "ventricles")] == 0.0


def test_bilateral_nuclei_mirror_and_anatomical_order(ph):
    cent = {}
    for name in EXPECTED_RANGES:
        left = _centroid_mm(ph, _index(ph, f"{name}_left"))
        right = _centroid_mm(ph, _index(ph, f"{name}_right"))
        assert left[0] < 0 < right[0], f"{name}: left must be at -x (RAS)"
        np.testing.assert_allclose(left[0], -right[0], atol=1.5, err_msg=name)
        np.testing.assert_allclose(left[1:], right[1:], atol=1.5, err_msg=name)
        cent[name] = right
    # Globus pallidus medial to putamen; caudate above putamen; thalamus behind the pallidum;
    # substantia nigra below the thalamus; red nucleus medial to the nigra; dentate most
    # posterior and inferior.
    assert cent["globus_pallidus"][0] < cent["putamen"][0]
    assert cent["caudate"][2] > cent["putamen"][2]
    assert cent["thalamus"][1] < cent["globus_pallidus"][1]
    assert cent["substantia_nigra"][2] < cent["thalamus"][2]
    assert cent["red_nucleus"][0] < cent["substantia_nigra"][0]
    assert cent["dentate"][1] == min(c[1] for c in cent.values())
    assert cent["dentate"][2] == min(c[2] for c in cent.values())


def test_masks(ph):
    inside = {"ventricles", "cortical_gm", "white_matter"}
    outside = {"air", "scalp", "skull", "sinus_air", "csf", "soft_tissue"}
    for index, name in ph.label_names.items():
        region = ph.labels == index
        if name in outside:
            assert not np.any(ph.brain_mask[region]), name
        else:
            assert np.all(ph.brain_mask[region]), name
            inside.add(name)
    assert not np.any(ph.head_mask[np.isin(ph.labels, [0, _index(ph, "sinus_air")])])
    assert np.all(ph.head_mask[np.isin(ph.labels, [_index(ph, "skull"), _index(ph, "scalp")])])
    # The head spans about 85 % of the field of view (front to back).
    extent = np.flatnonzero(ph.head_mask.any(axis=(0, 2)))
    assert 0.75 <= (extent[-1] - extent[0] + 1) / SHAPE[1] <= 0.95
    # The sinus sits below the frontal lobe (anterior, inferior to the brain centre).
    sinus, brain = _centroid_mm(ph, _index(ph, "sinus_air")), np.argwhere(ph.brain_mask).mean(0)
    brain = (brain - (np.asarray(SHAPE) - 1) / 2) * np.asarray(VOXEL)
    assert sinus[1] > brain[1] + 20 and sinus[2] < brain[2]


def _sphere(shape, voxel_size, centre_vox, radius_mm):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    d2 = sum(((g - c) * v) ** 2 for g, c, v in zip(grids, centre_vox, voxel_size, strict=True))
    return d2


def _cylinder(shape, voxel_size, start_vox, end_vox):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    vs = np.asarray(voxel_size)
    a = np.asarray(start_vox) * vs
    axis = (np.asarray(end_vox) - np.asarray(start_vox)) * vs
    length = np.linalg.norm(axis)
    u = axis / length
    p = [g * v - a_ for g, v, a_ in zip(grids, vs, a, strict=True)]
    t = p[0] * u[0] + p[1] * u[1] + p[2] * u[2]
    d2 = p[0] ** 2 + p[1] ** 2 + p[2] ** 2 - t**2
    return t, d2, length


def _check_lesions(ph):
    kinds = [les["kind"] for les in ph.lesions]
    assert kinds.count("microbleed") == 3 and kinds.count("calcification") == 2
    assert kinds.count("ms_rim") == 2 and kinds.count("ms_norim") == 2
    wm = ph.label_chi_ppm[_index(ph, "white_matter")]
    for les in ph.lesions:
        r = les["radius_mm"]
        assert r >= 1.5 * max(ph.voxel_size) - 1e-9
        d2 = _sphere(ph.shape, ph.voxel_size, les["center_vox"], r)
        whole = ph.labels == les["label"]
        if les["kind"] == "ms_rim":
            rim = ph.labels == les["rim_label"]
            assert np.all(ph.chi_ppm[rim] == np.float32(les["rim_chi_ppm"]))
            assert les["rim_chi_ppm"] - wm == pytest.approx(0.08, abs=0.03)
            thickness = les["rim_thickness_mm"]
            assert np.all(d2[rim] > (r - thickness) ** 2 - 1e-6)
            assert rim.sum() > 0 and whole.sum() > 0
            whole = whole | rim
        # The record reproduces the map: the sphere of the record is the labelled region.
        np.testing.assert_array_equal(whole, d2 <= r**2 + 1e-9, err_msg=str(les))
        core = ph.labels == les["label"]
        assert np.all(ph.chi_ppm[core] == np.float32(les["chi_ppm"]))
        if les["kind"] == "microbleed":
            assert 0.5 <= les["chi_ppm"] <= 1.5
        elif les["kind"] == "calcification":
            assert -2.0 <= les["chi_ppm"] <= -0.5
        else:
            assert les["chi_ppm"] - wm == pytest.approx(0.01, abs=0.01)
        assert ph.label_names[les["label"]].startswith(les["kind"])


def _check_veins(ph):
    vs_max = max(ph.voxel_size)
    assert len(ph.veins) >= 5
    assert sum(v["radius_mm"] >= 2.5 * vs_max - 1e-9 for v in ph.veins) >= 2
    assert all(v["radius_mm"] >= 1.0 * vs_max - 1e-9 for v in ph.veins)
    thetas = vein_angles_deg(ph.veins, ph.voxel_size, (0, 0, 1))
    assert len({round(t / 10) for t in thetas}) >= 4, "veins need several orientations to B0"
    assert min(thetas) < 10 and max(thetas) > 80
    for vein, theta in zip(ph.veins, thetas, strict=True):
        assert vein["theta_deg"] == pytest.approx(theta, abs=1e-6)
        assert vein["chi_ppm"] == pytest.approx(float(blood_chi_ppm(ph.yv, ph.hct)))
        assert vein["yv"] == ph.yv and vein["hct"] == ph.hct
        t, d2, length = _cylinder(ph.shape, ph.voxel_size, vein["start_vox"], vein["end_vox"])
        region = ph.labels == vein["label"]
        # The record reproduces the map up to voxels lying on the cylinder surface (1e-4 mm).
        eps, r = 1e-4, vein["radius_mm"]
        outer = (t >= -eps) & (t <= length + eps) & (d2 <= (r + eps) ** 2)
        inner = (t >= eps) & (t <= length - eps) & (d2 <= (r - eps) ** 2)
        assert np.all(outer[region]), vein["name"]
        assert np.all(region[inner]), vein["name"]
        assert region.sum() >= 0.9 * outer.sum(), vein["name"]
        assert np.all(ph.chi_ppm[region] == np.float32(vein["chi_ppm"]))
        assert np.all(ph.brain_mask[region])


def _check_no_overlap(ph):
    nuclei = [i for i, n in ph.label_names.items() if any(n.startswith(k) for k in EXPECTED_RANGES)]
    objects = []
    for les in ph.lesions:
        d2 = _sphere(ph.shape, ph.voxel_size, les["center_vox"], les["radius_mm"])
        objects.append((f"lesion {les['id']}", d2 <= les["radius_mm"] ** 2))
    for vein in ph.veins:
        t, d2, length = _cylinder(ph.shape, ph.voxel_size, vein["start_vox"], vein["end_vox"])
        objects.append((vein["name"], (t >= 0) & (t <= length) & (d2 <= vein["radius_mm"] ** 2)))
    nuclei_mask = np.isin(ph.labels, nuclei)
    total = np.zeros(ph.shape, dtype=int)
    for name, footprint in objects:
        assert not np.any(nuclei_mask & footprint), f"{name} overlaps a deep grey nucleus"
        assert not np.any(ph.labels[footprint] == _index(ph, "ventricles")), name
        total += footprint
    assert total.max() == 1, "lesions and veins overlap each other"
    # Lesions keep at least one voxel of white matter around them.
    for les in ph.lesions:
        region = np.isin(ph.labels, [les["label"], les.get("rim_label", -1)])
        shell = ndimage.binary_dilation(region) & ~region
        assert np.all(ph.labels[shell] == _index(ph, "white_matter")), les


def test_lesions_match_records(ph):
    _check_lesions(ph)


def test_veins_match_records(ph):
    _check_veins(ph)


def test_no_overlaps(ph):
    _check_no_overlap(ph)


def test_anisotropic_grid(ph_aniso):
    assert ph_aniso.shape == (64, 72, 48)
    _check_lesions(ph_aniso)
    _check_veins(ph_aniso)
    _check_no_overlap(ph_aniso)
    assert set(np.unique(ph_aniso.labels).tolist()) == set(ph_aniso.label_names)
    vein_chi = float(blood_chi_ppm(0.7, 0.40))
    assert all(v["chi_ppm"] == pytest.approx(vein_chi) for v in ph_aniso.veins)


def test_same_anatomy_at_other_resolution(ph):
    fine = head_phantom((96, 96, 96), (2.0, 2.0, 2.0), seed=1, lesions=False)
    for name in ("globus_pallidus_left", "thalamus_right", "dentate_left", "ventricles"):
        coarse_c = _centroid_mm(ph, _index(ph, name))
        fine_c = _centroid_mm(fine, _index(fine, name))
        np.testing.assert_allclose(coarse_c, fine_c, atol=2.0, err_msg=name)
    coarse_ml, fine_ml = (p.brain_mask.sum() * np.prod(p.voxel_size) / 1e3 for p in (ph, fine))
    assert coarse_ml == pytest.approx(fine_ml, rel=0.05)
    assert 700 < fine_ml < 1500, "brain volume (mL) of an adult-sized head"
    lesion_kinds = ("microbleed", "ms_", "calcification")
    assert not any(n.startswith(lesion_kinds) for n in fine.label_names.values())


def test_seed_reproducible_and_changes_lesions(ph):
    again = head_phantom(SHAPE, VOXEL, seed=1)
    np.testing.assert_array_equal(again.chi_ppm, ph.chi_ppm)
    other = head_phantom(SHAPE, VOXEL, seed=2)
    assert [le["center_vox"] for le in other.lesions] != [le["center_vox"] for le in ph.lesions]


def test_relaxation_and_density(ph):
    def r2(name):
        return float(np.median(ph.r2star_per_s_3t[ph.labels == _index(ph, name)]))

    assert (
        r2("globus_pallidus_left")
        > r2("putamen_left")
        > r2("white_matter")
        > r2("cortical_gm")
        > r2("csf")
    )
    assert 18 <= r2("white_matter") <= 23 and 13 <= r2("cortical_gm") <= 17
    assert 40 <= r2("globus_pallidus_left") <= 50 and 2 <= r2("csf") <= 4
    bleed = ph.lesions[0]
    assert r2(ph.label_names[bleed["label"]]) > 5 * r2("globus_pallidus_left")
    assert np.all(ph.proton_density[ph.labels == 0] == 0)
    assert float(np.median(ph.proton_density[ph.labels == _index(ph, "csf")])) == 1.0
    np.testing.assert_allclose(ph.r2star_per_s(7.0), ph.r2star_per_s_3t * 7.0 / 3.0, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (64, 64)},
        {"shape": (8, 64, 64)},
        {"shape": (64.5, 64, 64)},
        {"voxel_size": (3.0, 0.0, 3.0)},
        {"voxel_size": (6.0, 6.0, 6.0), "shape": (32, 32, 32)},
        {"shape": (16, 16, 16), "voxel_size": (1.0, 1.0, 1.0)},
        {"yv": 1.5},
        {"hct": 0.0},
    ],
)
def test_bad_input(kwargs):
    args = {"shape": SHAPE, "voxel_size": VOXEL, **kwargs}
    with pytest.raises(InputError):
        head_phantom(args.pop("shape"), args.pop("voxel_size"), **args)

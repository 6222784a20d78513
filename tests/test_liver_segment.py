"""Automatic liver (qsmkit.body.segment.find_liver) on independently built abdomens: a
textured cirrhotic liver with focal nodules (tests/independent_cirrhosis.py) and a liver of
LIC 1-35 mg/g x PDFF 0-30 % patches (tests/independent_abdomen.py). Issue 13: nodules must be
found without a drawn liver, so the automatic liver must hold the textured organ and its
nodules, and iron-rich parts must not be cut off."""

from __future__ import annotations

import numpy as np
import pytest

from independent_abdomen import TISSUE_CODES, make_abdomen_phantom
from independent_cirrhosis import make_cirrhosis_phantom
from qsmkit.body.fatwater import FatWaterModel
from qsmkit.body.segment import body_mask, decayed_tissue, find_liver


def _maps(ph):
    mag = ph.magnitude
    support = mag[..., 0] > 0.05 * np.percentile(mag[..., 0], 99)
    fit = FatWaterModel(ph.echo_times_s, ph.b0_tesla).fit(mag, ph.phase, mask=support)
    body = body_mask(mag[..., 0], fit.noise_sd) & support
    pdff = np.where(body, fit.pdff_percent, 0)
    r2 = np.where(body, fit.r2star_per_s, 0)
    return fit.s0, pdff, r2, body


def _dice(a, b):
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def cirrhosis():
    ph = make_cirrhosis_phantom(shape=(64, 64, 6), voxel_mm=(4.0, 4.0, 4.0), b0_tesla=1.5,
                                seed=3)
    return ph, _maps(ph)


def test_textured_cirrhotic_liver_found_whole(cirrhosis):
    ph, (s0, pdff, r2, body) = cirrhosis
    found = find_liver(s0, pdff, r2, body, ph.voxel_mm, affine=ph.affine)
    truth = ph.liver_mask
    # the liver mask counts voxels at least half liver, the automatic one is eroded by a
    # voxel (4 mm here): 0.89 measured; the growth on the seed's statistics of before, which
    # the nodular texture broke up, gave 0.40
    assert _dice(found, truth) >= 0.8
    assert (found & truth).sum() / found.sum() >= 0.97  # no leak into wall, spleen, kidney
    tissue = ph.tissue[found & ~truth]
    for organ in ("spleen", "kidney", "wall", "sat"):
        assert (tissue == TISSUE_CODES[organ]).sum() <= 0.01 * found.sum(), organ
    # focal nodules of other iron and fat are part of the organ
    held = [(found & (ph.structures == k)).sum() / max((ph.structures == k).sum(), 1)
            for k in range(1, len(ph.nodules) + 1)]
    assert sum(h >= 0.9 for h in held) >= 6, held  # 7 of 8 measured; before: none


def test_iron_rich_liver_parts_stay():
    # the patches are 10 mm squares: a finer grid than the cirrhotic liver's
    ph = make_abdomen_phantom(shape=(96, 96, 6), voxel_mm=(2.67, 2.67, 4.0), b0_tesla=1.5,
                              seed=5)
    s0, pdff, r2, body = _maps(ph)
    # the abdomen puts the liver at negative x with a RAS affine: flip the first axis so
    # that the liver lies on the subject's right, as in a patient
    affine = ph.affine.copy()
    affine[0] *= -1
    found = find_liver(s0, pdff, r2, body, ph.voxel_mm, affine=affine)
    truth = ph.liver_mask
    assert _dice(found, truth) >= 0.9  # 0.96 measured; before: 0.005
    assert (found & truth).sum() / found.sum() >= 0.97
    # LIC 20 and 35 patches: all held (measured 1.00; before: none)
    iron = [p["label"] for p in ph.patches if p["lic_mg_per_g"] >= 20]
    patch = np.isin(ph.patch_labels, iron) & truth
    assert (found & patch).sum() >= 0.9 * patch.sum()


def test_liver_found_when_the_affine_puts_it_on_the_left():
    # the abdomen's own RAS affine puts its liver at negative x, the subject's left: the
    # growth from the right starts in the spleen and leaks into the liver; the organ grown
    # from the left is then taken (0.96 measured; before: the leaky spleen-seeded region)
    ph = make_abdomen_phantom(shape=(96, 96, 6), voxel_mm=(2.67, 2.67, 4.0), b0_tesla=1.5,
                              seed=5)
    s0, pdff, r2, body = _maps(ph)
    found = find_liver(s0, pdff, r2, body, ph.voxel_mm, affine=ph.affine)
    assert _dice(found, ph.liver_mask) >= 0.9
    assert (found & ph.liver_mask).sum() / found.sum() >= 0.97


@pytest.mark.parametrize("seed", [5, 21])
def test_iron_loaded_liver_found_when_its_seed_lies_in_an_iron_sparing_patch(seed):
    # a liver of LIC 30 (R2* ~1130 1/s at 1.5 T) and PDFF 10 % around the patches of LIC
    # 1-35: the deepest point lies in a patch of low iron, whose statistics the grown liver
    # fails; the growth followed the seed's neighbourhood and returned the patch (14-75
    # voxels), now it keeps the component holding most of what it had grown
    ph = make_abdomen_phantom(shape=(96, 96, 6), voxel_mm=(2.67, 2.67, 4.0), b0_tesla=1.5,
                              seed=seed, liver_lic_mg_per_g=30.0, liver_pdff_percent=10.0)
    s0, pdff, r2, body = _maps(ph)
    found = find_liver(s0, pdff, r2, body, ph.voxel_mm, affine=ph.affine)
    assert _dice(found, ph.liver_mask) >= 0.9
    assert (found & ph.liver_mask).sum() / found.sum() >= 0.97


def test_iron_loaded_liver_at_3t_found_though_its_proton_density_scatters():
    # 3 T, LIC 20 (R2* ~1500 1/s): the proton density of the liver is an extrapolation from
    # one or two echoes and scatters (log SD 0.45); the growth held to the proton density of
    # normal tissue broke the liver into pieces (dice 0.01: the wall and spleen were taken),
    # now an organ beyond the fat-blind R2* is grown on its R2* (0.88 measured)
    ph = make_abdomen_phantom(shape=(96, 96, 6), voxel_mm=(2.67, 2.67, 4.0), b0_tesla=3.0,
                              seed=21, liver_lic_mg_per_g=20.0, liver_pdff_percent=10.0)
    s0, pdff, r2, body = _maps(ph)
    affine = ph.affine.copy()
    affine[0] *= -1  # the liver on the subject's right, as in a patient
    found = find_liver(s0, pdff, r2, body, ph.voxel_mm, affine=affine)
    assert _dice(found, ph.liver_mask) >= 0.8
    assert (found & ph.liver_mask).sum() / found.sum() >= 0.97


@pytest.mark.parametrize("b0,lic,decayed", [(3.0, 35.0, True), (1.5, 30.0, False),
                                            (3.0, 1.2, False)])
def test_a_liver_whose_signal_has_gone_is_not_taken_for_air_silently(b0, lic, decayed):
    # 3 T, LIC 35 (R2* ~2700 1/s): 4 % of the signal is left at the first echo, below the
    # body mask's threshold, so the whole liver was taken for air and the automatic liver
    # grew into the wall and spleen with nothing said. Its first echo is still signal with a
    # phase that holds: the holes of the body that are tissue are found (and warned of);
    # lung, stomach gas and livers that keep their first echo are not
    ph = make_abdomen_phantom(shape=(96, 96, 6), voxel_mm=(2.67, 2.67, 4.0), b0_tesla=b0,
                              seed=21, liver_lic_mg_per_g=lic, liver_pdff_percent=10.0)
    air = ph.tissue == TISSUE_CODES["air"]
    sigma = float(np.mean(ph.magnitude[..., 0][air])) / np.sqrt(np.pi / 2)
    body = body_mask(ph.magnitude[..., 0], sigma)
    first = ph.magnitude[..., 0] * np.exp(1j * ph.phase[..., 0])
    found = decayed_tissue(first, body, sigma, ph.voxel_mm)
    if decayed:
        assert (body & ph.liver_mask).sum() < 0.05 * ph.liver_mask.sum()  # the failure
        assert (found & ph.liver_mask).sum() > 0.5 * ph.liver_mask.sum()
    assert (found & ~ph.liver_mask).sum() == 0
    assert bool(found.any()) is decayed

"""Liver QSM on the independent abdomen (tests/independent_abdomen.py): a slab through a body
that continues beyond it, lung bases over the liver dome, its own kernel, grid and fat
spectrum. The regions' χ must not depend on their fat or iron (their weight), only on their
susceptibility; the regions whose signal has gone are flagged, and measured by the phase of
their first echoes (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import qsmkit.body.liver as liver_module
from independent_abdomen import make_abdomen_phantom
from qsmkit.body.liver import analyse_liver
from qsmkit.body.liver_qsm import liver_qsm


@pytest.fixture(scope="module")
def recorded():
    """The analysis, and the arguments of its (first) liver QSM solve."""
    ph = make_abdomen_phantom(shape=(64, 64, 8), voxel_mm=(4.0, 4.0, 8.0), b0_tesla=1.5)
    calls = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return liver_qsm(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(liver_module, "liver_qsm", recording)
        an = analyse_liver(ph.magnitude, ph.phase, ph.echo_times_s, 1.5, ph.voxel_mm,
                           labels=ph.patch_labels)
    return ph, {row["label"]: row for row in an.rows}, calls[0]


@pytest.fixture(scope="module")
def analysis(recorded):
    return recorded[:2]


def test_patch_chi_independent_of_fat_and_weight(analysis):
    ph, rows = analysis
    assert set(rows) == {p["label"] for p in ph.patches}
    measured = [p for p in ph.patches if p["lic_mg_per_g"] <= 12]
    err = np.array([rows[p["label"]]["chi_ppm"] - p["chi_ppm"] for p in measured])
    offset = float(np.median(err))
    # one offset for all (the reference: qsmkit's fat χ is not the phantom's), no spread
    # with fat or iron; before the face guard and the own-field refit, the 30 % fat row at
    # LIC 12 read 0.7 ppm low and the fat-free row 0.5 ppm high
    assert abs(offset) < 0.25, err
    assert np.all(np.abs(err - offset) < 0.12), err
    fat_free = [p for p in ph.patches if p["pdff_percent"] == 0 and p["lic_mg_per_g"] <= 20]
    truth = np.array([p["chi_ppm"] for p in fat_free])
    meas = np.array([rows[p["label"]]["chi_ppm"] for p in fat_free])
    slope = np.polyfit(truth, meas, 1)[0]
    assert 0.85 <= slope <= 1.15, (truth, meas)


def test_patches_without_signal_are_flagged_and_measured_by_their_first_echoes(analysis):
    ph, rows = analysis
    for p in ph.patches:
        row = rows[p["label"]]
        if p["lic_mg_per_g"] >= 35:
            # R2* ≈ 1400 1/s: the signal has gone after the first echo or two (flagged), yet
            # with the initial phase of the neighbourhood that echo gives the patch's own field
            # (before: no field, χ taken from the surroundings); on this coarse slab (patches
            # 2.5 voxels wide) within 30 % and with an SE that says it is less sure
            assert "r2star_out_of_range" in row["flags"], row
            assert "chi_from_surroundings" not in row["flags"], row
            assert abs(row["chi_ppm"] - p["chi_ppm"]) < 0.3 * p["chi_ppm"], row
            assert 0.05 < row["chi_se_ppm"] < 0.5, row
        if p["lic_mg_per_g"] <= 7:
            assert "chi_from_surroundings" not in row["flags"], row
            assert row["chi_se_ppm"] < 0.05, row


def _patch_flags_at_3t(snr, seed):
    """``[(patch, flags)]`` of the quick independent abdomen at 3 T."""
    ph = make_abdomen_phantom(shape=(64, 64, 8), voxel_mm=(4.0, 4.0, 8.0), b0_tesla=3.0,
                              snr=snr, seed=seed)
    an = analyse_liver(ph.magnitude, ph.phase, ph.echo_times_s, 3.0, ph.voxel_mm,
                       labels=ph.patch_labels)
    rows = {row["label"]: row for row in an.rows}
    return [(p, rows[p["label"]]["flags"].split(";")) for p in ph.patches]


def test_chi_from_a_first_echo_near_the_noise_is_flagged():
    # 3 T, SNR 30: LIC 35 (R2* ≈ 2700 1/s) leaves a first echo of about 1.5 noise SDs, whose
    # phase still gives a field, but one biased towards the surroundings
    for p, flags in _patch_flags_at_3t(30.0, 5):
        if p["lic_mg_per_g"] >= 35:
            assert "chi_low_snr" in flags or "chi_from_surroundings" in flags, flags
        if p["lic_mg_per_g"] <= 12:
            assert "chi_low_snr" not in flags, (p, flags)


def test_chi_from_a_decayed_first_echo_is_flagged_at_high_snr():
    # 3 T, SNR 120: LIC 35 keeps 4 % of its signal at 1.2 ms, well above the noise now, yet its
    # χ reads 8-21 % low (partial volume with brighter tissue pulls the phase); before, no χ
    # flag said so once chi_low_snr stopped firing
    for p, flags in _patch_flags_at_3t(120.0, 13):
        if p["lic_mg_per_g"] >= 35:
            assert ("chi_first_echo_decayed" in flags or "chi_from_surroundings" in flags), flags
        if p["lic_mg_per_g"] <= 20:
            assert "chi_first_echo_decayed" not in flags, (p, flags)


def test_slices_first_storage_gives_the_same_table_through_the_api(analysis):
    # the same slab stored with the slice axis first (B0 along voxel axis 0): internal air
    # is filled across the slab's own slices, not across whatever axis comes last
    ph, rows = analysis
    perm = (2, 0, 1)
    mag = np.transpose(ph.magnitude, perm + (3,))
    pha = np.transpose(ph.phase, perm + (3,))
    vox = tuple(ph.voxel_mm[i] for i in perm)
    an = analyse_liver(mag, pha, ph.echo_times_s, 1.5, vox, b0_dir=(1.0, 0.0, 0.0),
                       labels=np.transpose(ph.patch_labels, perm))
    other = {row["label"]: row for row in an.rows}
    for label, row in rows.items():
        assert abs(other[label]["chi_ppm"] - row["chi_ppm"]) < 0.02, (label, row, other[label])


def test_chi_level_does_not_drift_with_the_solver_iterations(recorded):
    # With the subcutaneous-fat reference solved voxel by voxel, running the solve on from
    # its 400-iteration cap moved every patch: the fat ring took up the misfit at the body's
    # surface (+0.3 ppm on the whole liver at 3000 iterations, full slab at 3 T). Solved as
    # one region of constant χ it holds the level better (this slab, 400 -> 1500
    # iterations: +0.08 ppm, against +0.22 voxel by voxel).
    ph, _, (args, kwargs) = recorded
    rois = kwargs["rois"]
    measured = [p for p in ph.patches if p["lic_mg_per_g"] <= 12]

    def level(**options):
        chi = liver_qsm(*args, **{**kwargs, **options}).chi_ppm
        return np.median([chi[rois == p["label"]].mean() - p["chi_ppm"] for p in measured])

    assert abs(level(max_iter=1500, tol=1e-7) - level()) < 0.12


def _central_voxels(labels, n):
    """Each label cut to its ``n`` voxels nearest its centre (slices count double)."""
    small = np.zeros_like(labels)
    for label in np.unique(labels[labels > 0]):
        idx = np.argwhere(labels == label)
        dist = np.linalg.norm((idx - idx.mean(axis=0)) / [1.0, 1.0, 0.5], axis=1)
        small[tuple(idx[np.argsort(dist)[:n]].T)] = label
    return small


def test_small_labels_inside_iron_loaded_tissue():
    # A clinician's ROI is a small part of a liver of the same iron. Each 400-voxel patch of
    # the full slab at 3 T cut to its central 40 voxels: the unlabelled rest of an iron-rich
    # patch has little data weight, and the gradient penalty tied it to the liver around it,
    # so the ROI had to explain the patch's field alone (LIC 1 read 0.47 ppm for 0.07, LIC 20
    # rows 0.0, -2.1, -0.2 and 0.7 for 2.35-2.56). The penalty now stops at the jumps of the
    # data weight, where iron changes.
    ph = make_abdomen_phantom(b0_tesla=3.0, seed=13)
    an = analyse_liver(ph.magnitude, ph.phase, ph.echo_times_s, 3.0, ph.voxel_mm,
                       labels=_central_voxels(ph.patch_labels, 40))
    rows = {row["label"]: row for row in an.rows}
    for p in ph.patches:
        err = rows[p["label"]]["chi_ppm"] - p["chi_ppm"]
        if p["lic_mg_per_g"] <= 3:
            assert abs(err) < 0.1, (p, rows[p["label"]])
        if p["lic_mg_per_g"] == 20:
            assert abs(err) < 0.5, (p, rows[p["label"]])


@pytest.mark.parametrize("lic,flagged", [(30.0, True), (1.2, False)])
def test_whole_liver_without_signal_is_flagged(lic, flagged):
    """A whole liver of LIC 30 at 1.5 T: its own field weighs about 1 % of the body's and the
    organs around it have a χ of their own; on the full slab it read 0.08 ppm for 3.0 with
    no flag. It is now flagged ``chi_from_surroundings``, and so is a 1 mL ROI drawn inside
    it (read −7.7 ppm for 3.62); in a liver of normal iron neither is flagged. The automatic
    liver of this abdomen is tested in test_liver_segment.py."""
    ph = make_abdomen_phantom(shape=(96, 96, 6), voxel_mm=(2.67, 2.67, 4.0), b0_tesla=1.5,
                              seed=21, liver_lic_mg_per_g=lic, liver_pdff_percent=10.0)
    # the ROI in the liver's own tissue (not in one of its patches of LIC 1-35), in the
    # middle slices, away from the faces
    depth = ndimage.distance_transform_edt(ph.liver_mask & (ph.patch_labels == 0),
                                           sampling=ph.voxel_mm)
    depth[..., [0, 1, 4, 5]] = 0
    c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    labels = ph.liver_mask.astype(np.int64)
    labels[c[0] - 2:c[0] + 2, c[1] - 2:c[1] + 2, c[2] - 1:c[2] + 1] = 2
    labels[~ph.liver_mask] = 0
    assert (ph.chi_ppm[labels == 2] == ph.chi_ppm[labels == 2].max()).all()  # one tissue
    an = analyse_liver(ph.magnitude, ph.phase, ph.echo_times_s, 1.5, ph.voxel_mm,
                       labels=labels)
    rows = {r["label"]: r for r in an.rows}
    assert rows[2]["n_voxels"] == 32
    for label in (1, 2):
        assert ("chi_from_surroundings" in rows[label]["flags"]) is flagged, rows[label]
    # a liver of LIC 30 at 1.5 T keeps its first echo: it is not mistaken for air
    assert an.info["decayed_tissue_ml"] == 0.0


def test_silent_area_counts_the_low_weight_tissue_a_region_lies_in():
    weight = np.ones((40, 40, 10), np.float32)
    mask = np.ones(weight.shape, bool)
    weight[5:35, 5:35, :] = 0.01  # a silent organ of 9000 voxels
    weight[20:24, 20:24, 4:6] = 0.02  # an ROI drawn in it, as silent
    roi = np.zeros(weight.shape, bool)
    roi[20:24, 20:24, 4:6] = True
    island = np.zeros(weight.shape, bool)
    island[36:39, 36:39, 4:6] = True  # a silent patch in measured tissue
    weight[island] = 0.01
    measured = np.zeros(weight.shape, bool)
    measured[1:4, 1:4, :] = True
    vs = (2.0, 2.0, 4.0)  # 16 uL voxels
    assert liver_module.silent_area_ml(weight, mask, roi, vs, 1.0) == pytest.approx(
        900 * 10 * 0.016)
    assert liver_module.silent_area_ml(weight, mask, island, vs, 1.0) == pytest.approx(
        18 * 0.016)
    assert liver_module.silent_area_ml(weight, mask, measured, vs, 1.0) == 0.0

"""The default background removal keeps the cortex (issue 11), on a phantom qsmkit did not make.

The phantom (``tests/textured_brain.py``) has a cortical ribbon and a vein at the mask edge,
a local field computed with a continuous kernel on a 2x finer grid and averaged down, and an
exact air-sphere background. Figures measured when the default became PDF are in
``docs/bgremove.md`` ("Keeping the cortex").
"""

from __future__ import annotations

import numpy as np
import pytest

from qsmkit import bgremove
from qsmkit.pipeline import PRESETS, QSMConfig
from textured_brain import textured_brain

# Measured 2024 (this test's phantom, 1 mm): PDF NRMSE 0.47 on the whole mask and 0.40 on the
# region V-SHARP keeps; V-SHARP 0.86 on its 87 %. The tolerance leaves room for solver changes
# but not for an eroding or background-leaking method.
NRMSE_TOLERANCE = 0.60


def _default(name="default"):
    config = QSMConfig.from_preset(name)
    return bgremove.METHODS[config.bgremove], config.bgremove_options


def _nrmse(estimate, truth, region):
    return float(np.linalg.norm(estimate[region] - truth[region]) / np.linalg.norm(truth[region]))


@pytest.fixture(scope="module")
def brain_1mm():
    return textured_brain((1.0, 1.0, 1.0), semi_axes_mm=(36.0, 44.0, 32.0), margin_mm=8.0)


@pytest.fixture(scope="module")
def default_1mm(brain_1mm):
    p = brain_1mm
    method, options = _default()
    return method(p["total_hz"], p["mask"], p["voxel_size"], b0_dir=p["b0_dir"], **options)


@pytest.fixture(scope="module")
def vsharp_1mm(brain_1mm):
    p = brain_1mm
    return bgremove.vsharp(p["total_hz"], p["mask"], p["voxel_size"])


def test_default_keeps_95_percent_of_1mm_brain(brain_1mm, default_1mm):
    kept = (default_1mm.mask & brain_1mm["mask"]).sum() / brain_1mm["mask"].sum()
    assert kept >= 0.95


def test_default_local_field_within_tolerance(brain_1mm, default_1mm):
    p = brain_1mm
    assert _nrmse(default_1mm.field_hz, p["local_hz"], default_1mm.mask) < NRMSE_TOLERANCE
    # No background left: the error is not aligned with the (much larger) background.
    region = default_1mm.mask
    err = (default_1mm.field_hz - p["local_hz"])[region].astype(float)
    bg = p["background_hz"][region].astype(float)
    bg -= bg.mean()
    assert abs(np.dot(err - err.mean(), bg) / np.dot(bg, bg)) < 0.01


def test_default_at_least_as_accurate_as_vsharp_where_vsharp_has_values(
    brain_1mm, default_1mm, vsharp_1mm
):
    common = vsharp_1mm.mask & default_1mm.mask
    ours = _nrmse(default_1mm.field_hz, brain_1mm["local_hz"], common)
    old = _nrmse(vsharp_1mm.field_hz, brain_1mm["local_hz"], common)
    assert ours <= old


def test_eroding_method_would_fail_the_coverage_test(brain_1mm, vsharp_1mm):
    # The check above must be able to fail: V-SHARP (the 0.1.0 default) erodes the cortex.
    kept = vsharp_1mm.mask.sum() / brain_1mm["mask"].sum()
    assert kept < 0.95


@pytest.mark.parametrize("voxel_size", [(2.0, 2.0, 2.0), (0.8, 0.8, 1.6)])
def test_default_keeps_cortex_at_other_voxel_sizes(voxel_size):
    p = textured_brain(voxel_size, semi_axes_mm=(30.0, 36.0, 26.0), margin_mm=8.0)
    method, options = _default()
    res = method(p["total_hz"], p["mask"], p["voxel_size"], b0_dir=p["b0_dir"], **options)
    assert res.mask.sum() / p["mask"].sum() >= 0.95
    assert _nrmse(res.field_hz, p["local_hz"], res.mask) < NRMSE_TOLERANCE


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_keeps_the_mask(preset, brain_1mm):
    p = brain_1mm
    method, options = _default(preset)
    small = tuple(slice(None, None, 2) for _ in range(3))  # 2 mm copy: fast
    res = method(p["total_hz"][small], p["mask"][small], (2.0, 2.0, 2.0), b0_dir=p["b0_dir"],
                 **options)
    assert res.mask.sum() / p["mask"][small].sum() >= 0.95

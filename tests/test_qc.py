"""Quality gates (qsmkit.qc): each check fires on a crafted bad input and stays quiet on a good
one; a run with a bad condition records its warning in qsmkit.json and report.html."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qsmkit import qc
from qsmkit.errors import InputError

RNG = np.random.default_rng(11)


def _ball(shape, voxel_size, radius_mm):
    grid = np.indices(shape).astype(float)
    centre = (np.asarray(shape, float)[:, None, None, None] - 1) / 2
    dist = np.sqrt((((grid - centre) * np.asarray(voxel_size)[:, None, None, None]) ** 2).sum(0))
    return dist <= radius_mm


def test_warning_line_and_dict():
    w = qc.QCWarning("CODE", "something", 0.25, 0.1, "do this")
    assert w.line() == "warning [CODE]: something (value 0.25, threshold 0.1) — do this"
    d = w.as_dict()
    assert d == {"code": "CODE", "message": "something", "value": 0.25, "threshold": 0.1,
                 "advice": "do this"}
    assert qc.QCWarning.from_dict(json.loads(json.dumps(d))) == w
    assert qc.QCWarning("X", "m", float("nan"), 1.0, "a").as_dict()["value"] is None


def test_phase_unit_note():
    assert qc.check_phase_unit_notes(["magnitude files sorted by their sidecar echo times"]) is None
    w = qc.check_phase_unit_notes(["phase in degrees (values -180..180) converted to radians"])
    assert w is not None and w.code == "PHASE_UNIT"


def test_phase_range():
    good = RNG.uniform(-np.pi, np.pi, (8, 8, 8, 3))
    assert qc.check_phase_range(good) is None
    w = qc.check_phase_range(good * 0.0037 / np.pi)  # the real crop's stored range
    assert w is not None and w.code == "PHASE_RANGE" and w.value < 0.01


def test_weight_concentration():
    mask = np.ones((20, 20, 20), bool)
    uniform = np.ones(mask.shape)
    assert qc.weight_concentration(uniform, mask) == pytest.approx(0.01, abs=1e-3)
    assert qc.check_weight_concentration(uniform, mask) is None
    assert qc.check_weight_concentration(None, mask) is None
    spiky = uniform.copy()
    spiky[:2, :2, :2] = 1e4  # 8 voxels carry almost everything
    w = qc.check_weight_concentration(spiky, mask)
    assert w is not None and w.code == "WEIGHT_CONCENTRATION" and w.value > 0.9


def test_mask_volume_whole_head():
    voxel = (2.0, 2.0, 2.0)
    shape = (96, 96, 80)  # 192 x 192 x 160 mm: holds a head
    brain = _ball(shape, voxel, 68.0)  # 1317 mL
    assert qc.check_mask_volume(brain, voxel) is None
    small = _ball(shape, voxel, 40.0)  # 268 mL: a cut brain
    w = qc.check_mask_volume(small, voxel)
    assert w is not None and w.code == "MASK_VOLUME" and w.value < 800
    # a crop (field of view too small for a head) or a mask touching the faces: no judgement
    assert qc.check_mask_volume(small[:40, :40, :40], voxel) is None
    touching = small.copy()
    touching[0, 48, 40] = True
    assert qc.check_mask_volume(touching, voxel) is None


def test_mask_fraction():
    voxel = (2.0, 2.0, 2.0)
    shape = (96, 96, 80)
    assert qc.check_mask_fraction(_ball(shape, voxel, 68.0), voxel) is None
    everything = np.ones(shape, bool)
    w = qc.check_mask_fraction(everything, voxel)
    assert w is not None and w.code == "MASK_FRACTION" and w.value == 1.0
    assert qc.check_mask_fraction(np.ones((40, 40, 40), bool), voxel) is None  # a crop


def test_residual_background():
    voxel = (2.0, 2.0, 2.0)
    shape = (48, 48, 48)
    mask = _ball(shape, voxel, 40.0)
    tissue = RNG.normal(0, 1.0, shape).astype(np.float32)  # fine-grained local field
    assert qc.check_residual_background(tissue, mask, voxel) is None
    x = np.indices(shape)[0].astype(np.float32)
    gradient = tissue + 0.2 * (x - 24)  # a background gradient left behind (±4.8 Hz)
    w = qc.check_residual_background(gradient, mask, voxel)
    assert w is not None and w.code == "RESIDUAL_BACKGROUND"


def test_implausible_chi():
    mask = np.ones((10, 10, 10), bool)
    good = RNG.normal(0, 0.08, mask.shape)
    assert qc.check_implausible_chi(good, mask) is None
    w = qc.check_implausible_chi(good * 10, mask)  # e.g. B0 off by ten
    assert w is not None and w.code == "CHI_IMPLAUSIBLE" and w.value > 0.5


def test_fit_residual():
    mask = np.ones((6, 6, 6), bool)
    assert qc.check_fit_residual(np.full(mask.shape, 1e-3), mask, "complex") is None
    assert qc.check_fit_residual(None, mask) is None
    w = qc.check_fit_residual(np.full(mask.shape, 0.3), mask, "complex")
    assert w is not None and w.code == "FIT_RESIDUAL"
    assert qc.check_fit_residual(np.full(mask.shape, 0.05), mask, "linear") is None
    assert qc.check_fit_residual(np.full(mask.shape, 0.5), mask, "linear") is not None


def test_fit_residual_of_wrong_echo_times_fires():
    """A real echo-fit failure: echo times given 4, 8, 12 ms for data acquired at 4, 8, 16."""
    from qsmkit.echo import ComplexFit

    tes_true = np.array([0.004, 0.008, 0.016])
    field = RNG.uniform(-100, 100, (6, 6, 6, 1))
    phase = np.angle(np.exp(1j * (0.2 + 2 * np.pi * field * tes_true)))
    mask = np.ones((6, 6, 6), bool)
    right = ComplexFit(tes_true).fit(np.ones_like(phase), phase)
    wrong = ComplexFit([0.004, 0.008, 0.012]).fit(np.ones_like(phase), phase)
    assert qc.check_fit_residual(right.residual, mask) is None
    assert qc.check_fit_residual(wrong.residual, mask) is not None


def test_meaningless_maps_raise():
    mask = np.ones((4, 4, 4), bool)
    good = RNG.normal(size=mask.shape)
    qc.check_finite_maps({"chi": good}, mask)
    bad = good.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        qc.check_finite_maps({"chi": bad}, mask)
    with pytest.raises(InputError, match="zero"):
        qc.check_finite_maps({"chi": np.zeros(mask.shape)}, mask)
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    with pytest.raises(InputError):
        qc.judge_inversion(inf, good, mask, (1, 1, 1))


def test_judge_reconstruction_collects():
    voxel = (2.0, 2.0, 2.0)
    shape = (32, 32, 32)
    mask = _ball(shape, voxel, 24.0)
    chi = np.where(mask, RNG.normal(0, 0.05, shape), 0)
    field = np.where(mask, RNG.normal(0, 1, shape), 0)
    kwargs = dict(chi_ppm=chi, local_field_hz=field, local_mask=mask, mask=mask,
                  voxel_size=voxel, phase_rad=RNG.uniform(-np.pi, np.pi, (*shape, 2)),
                  weight=mask.astype(float), fit_residual=np.zeros(shape))
    assert qc.judge_reconstruction(**kwargs) == []
    kwargs["chi_ppm"] = chi * 20
    kwargs["notes"] = ["phase values -0.0037..0.0037 mapped linearly to -pi..pi"]
    codes = {w.code for w in qc.judge_reconstruction(**kwargs)}
    assert codes == {"CHI_IMPLAUSIBLE", "PHASE_UNIT"}


@pytest.mark.filterwarnings("ignore")
def test_run_records_warning_in_json_and_report(tmp_path, capsys):
    """End to end: B0 given ten times too low scales chi tenfold; the run says so in stderr,
    qsmkit.json and at the top of report.html."""
    from qsmkit.cli.main import main

    sim = tmp_path / "sim"
    assert main(["simulate", str(sim), "--shape", "40,40,40", "--voxel-size", "4,4,4",
                 "--echo-times", "0.004,0.008,0.012", "--no-lesions"]) == 0
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", "--mag", str(sim / "mag.nii.gz"), "--phase", str(sim / "phase.nii.gz"),
                 "--b0", "0.3", "--preset", "fast", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning [CHI_IMPLAUSIBLE]:" in err and "threshold 0.05" in err
    record = json.loads((out / "qsmkit.json").read_text())
    codes = [w["code"] for w in record["warnings"]]
    assert "CHI_IMPLAUSIBLE" in codes
    report = (out / "report.html").read_text()
    assert "Quality warnings" in report and "[CHI_IMPLAUSIBLE]" in report
    # the box comes first: before every other section of the report
    assert report[report.index("<main>"):].startswith("<main><section id='warnings'")

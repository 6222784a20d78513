"""The terminal side of issue 14: number lists with commas or spaces, progress bars only on a
terminal, the true total time of ``qsmkit run``, and swapped magnitude/phase refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qsmkit.cli.common import join_number_lists, parse_floats
from qsmkit.cli.main import get_parser, main
from qsmkit.errors import InputError
from qsmkit.qc import check_magnitude_phase_order

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _parse(argv):
    return get_parser().parse_args(join_number_lists(argv))


@pytest.mark.parametrize("words", [["64,64,48"], ["64", "64", "48"], ["64,", "64,", "48"],
                                   ["64, 64, 48"]])
def test_number_lists_take_commas_or_spaces(words):
    args = _parse(["simulate", "--shape", *words, "OUT", "--b0-dir", "-0.3", "0", "0.95"])
    assert args.outdir == "OUT"  # the positional after the list stays positional
    assert parse_floats(args.shape, "--shape") == [64, 64, 48]
    assert parse_floats(args.b0_dir, "--b0-dir") == [-0.3, 0, 0.95]
    args = _parse(["run", "--mag", "m.nii", "--phase", "p.nii", "--echo-times", "0.004",
                   "0.008", "-o", "out"])
    assert args.echo_times == "0.004,0.008" and args.mag == ["m.nii"]
    args = _parse(["bgremove", "f.nii", "--mask", "m.nii", "--radii", "12", "8", "4", "-o",
                   "o"])
    assert args.radii == "12,8,4"


def test_number_lists_refuse_words_that_are_not_numbers():
    args = _parse(["simulate", "OUT", "--shape", "big"])
    with pytest.raises(InputError, match="numbers separated by commas or spaces"):
        parse_floats(args.shape, "--shape")
    assert join_number_lists(["x", "--", "--shape", "1", "2"]) == ["x", "--", "--shape", "1",
                                                                    "2"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small simulated acquisition written by `qsmkit simulate` (spaces in --shape)."""
    folder = tmp_path_factory.mktemp("terminal") / "sim"
    assert main(["simulate", str(folder), "--shape", "48", "48", "40", "--no-lesions"]) == 0
    assert nib.load(folder / "mag.nii.gz").shape[:3] == (48, 48, 40)
    return folder


def test_run_shows_stages_on_a_terminal_and_prints_the_true_total(simulated, tmp_path, capsys,
                                                                  monkeypatch):
    import qsmkit.progress

    monkeypatch.setattr(qsmkit.progress, "stderr_is_terminal", lambda: True)
    started = time.perf_counter()
    code = main(["run", "--mag", str(simulated / "mag.nii.gz"), "--phase",
                 str(simulated / "phase.nii.gz"), "-o", str(tmp_path / "out"), "--preset",
                 "fast", "--no-report"])
    wall = time.perf_counter() - started
    assert code == 0
    out, err = capsys.readouterr()
    for stage in ("mask", "invert", "save maps", "figures"):
        assert f"qsmkit run: {stage}" in err
    assert "stages |" not in out  # the bar goes to stderr only
    total, reconstruction = map(float, re.search(
        r"total ([\d.]+) s \(reconstruction ([\d.]+) s", out).groups())
    assert reconstruction < total <= wall + 0.1
    assert total >= 0.8 * wall  # reading, writing, figures and the report are counted


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    from qsmkit.progress import StageProgress, iterations, terminal_progress

    with terminal_progress():  # pytest captures stderr: not a terminal
        stages = StageProgress(3, desc="x")
        stages("a")
        assert list(iterations(3, "y")) == [1, 2, 3]
        stages.close()
    assert capsys.readouterr().err == ""


def test_swapped_or_duplicated_inputs_are_refused(simulated, tmp_path, capsys):
    mag, phase = simulated / "mag.nii.gz", simulated / "phase.nii.gz"
    out = str(tmp_path / "out")
    assert main(["run", "--mag", str(mag), "--phase", str(mag), "-o", out]) == 2
    assert "holds the same image as the magnitude" in capsys.readouterr().err
    assert main(["run", "--mag", str(phase), "--phase", str(mag), "-o", out]) == 2
    err = capsys.readouterr().err
    assert "negative values: it looks like phase (the two look swapped)" in err
    assert "phase.nii.gz" in err and "mag.nii.gz" in err
    # Unsigned integers (a 12-bit phase and an integer magnitude), swapped.
    image = nib.load(mag)
    m = np.asarray(image.dataobj, np.float64)
    p = np.asarray(nib.load(phase).dataobj, np.float64)
    m_int = np.round(4000 * m / m.max()).astype(np.int16)
    p_int = np.round((p + np.pi) / (2 * np.pi) * 4095).astype(np.int16)
    for name, data in (("m.nii.gz", m_int), ("p.nii.gz", p_int)):
        nib.save(nib.Nifti1Image(data, image.affine), tmp_path / name)
    shutil.copy(simulated / "mag.json", tmp_path / "p.json")
    shutil.copy(simulated / "mag.json", tmp_path / "m.json")
    assert main(["run", "--mag", str(tmp_path / "p.nii.gz"), "--phase",
                 str(tmp_path / "m.nii.gz"), "-o", out]) == 2
    assert "falls with echo time like magnitude" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # ...and the same files the right way round pass the check.
    check_magnitude_phase_order(m_int, p_int)


def _stack(paths):
    return np.stack([np.asarray(nib.load(p).dataobj, np.float64) for p in paths], axis=-1)


def test_real_phase_is_not_refused():
    crop = DATA / "real" / "romeo_small"
    ref = DATA / "dicom"
    if not crop.exists():
        pytest.skip("../shared/data is absent")
    check_magnitude_phase_order(np.asarray(nib.load(crop / "Mag.nii").dataobj),
                                np.asarray(nib.load(crop / "Phase.nii").dataobj))
    for folder, stem in (("philips_2d_phantom", "Ph_727468159_1301_Dual-echo_iso_e{}"),
                         ("philips_classic", "2001_WIP_fcMRI_Field_Mapping_cl_e{}")):
        files = sorted((ref / folder / "Ref").glob(stem.format("*")))
        mags = [f for f in files if "_ph." not in f.name and f.suffix != ".json"]
        phases = [f for f in files if "_ph." in f.name and f.suffix != ".json"]
        assert len(mags) == len(phases) == 2
        check_magnitude_phase_order(_stack(mags), _stack(phases))


def test_qsm_forward_phase_is_not_refused(tmp_path):
    exe = Path(sys.executable).with_name("qsm-forward")
    if not exe.exists():
        pytest.skip("qsm-forward is a test dependency")
    subprocess.run([str(exe), "simple", str(tmp_path / "qf"), "--resolution", "48", "48", "48",
                    "--TEs", "0.004", "0.008", "0.012", "--B0", "3", "--peak-snr", "100"],
                   check=True, capture_output=True, timeout=120)
    anat = tmp_path / "qf" / "sub-1" / "anat"
    mags = [anat / f"sub-1_echo-{e}_part-mag_MEGRE.nii" for e in (1, 2, 3)]
    phases = [anat / f"sub-1_echo-{e}_part-phase_MEGRE.nii" for e in (1, 2, 3)]
    check_magnitude_phase_order(_stack(mags), _stack(phases))
    with pytest.raises(InputError, match="same image"):
        check_magnitude_phase_order(_stack(mags), _stack(mags))

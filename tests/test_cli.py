"""The command line as a new user meets it: help everywhere, exit 2 on bad input."""

import subprocess
import sys

import pytest

from qsmkit.cli.main import get_parser, main

COMMANDS = sorted(get_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001


def test_contract_commands_exist():
    contract = {"demo", "simulate", "import", "run", "mask", "fieldmap", "unwrap", "bgremove",
                "invert", "r2star", "reference", "metrics", "roi", "lesions", "rims",
                "oximetry", "iron-model", "liver", "bids", "report"}
    assert contract <= set(COMMANDS)


def test_top_level_help_lists_commands(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    for command in ("demo", "run", "simulate", "bids"):
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_missing_input_is_exit_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "qsmkit", "run", "--mag", str(tmp_path / "no.nii.gz"),
         "--phase", str(tmp_path / "no.nii.gz"), "-o", str(tmp_path / "out")],
        capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_echo_times_in_ms_are_refused(tmp_path, capsys):
    code = main(["run", "--mag", "m.nii.gz", "--phase", "p.nii.gz", "--echo-times", "4,8,12",
                 "-o", str(tmp_path / "out")])
    assert code == 2
    assert "milliseconds" in capsys.readouterr().err


def test_internal_errors_are_one_line_with_a_pointer_to_verbose(monkeypatch, capsys):
    """An unexpected exception never reaches the user as a bare traceback: one line, exit 1;
    with -v (before or after the command) the traceback is printed too."""
    import qsmkit.cli.metrics as metrics_cmd
    from qsmkit.cli.main import main

    def broken(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(metrics_cmd, "run", broken)
    assert main(["metrics", "a.nii", "b.nii", "--mask", "m.nii"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error: RuntimeError: something broke" in err and "-v" in err
    assert main(["metrics", "a.nii", "b.nii", "--mask", "m.nii", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_file_system_refusals_are_usage_errors(tmp_path, capsys):
    from qsmkit.cli.main import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for target in (blocker / "out", tmp_path / ("x" * 300)):
        code = main(["simulate", str(target), "--shape", "48,48,48", "--voxel-size", "4,4,4"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_invert_refuses_a_singular_affine_cleanly(tmp_path, capsys):
    """numpy's LinAlgError from the B0 direction was a traceback in invert (issue 16)."""
    import nibabel as nib
    import numpy as np

    from qsmkit.cli.main import main

    affine = np.array([[2.0, 2.0, 0, 0], [0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    field = np.zeros((16, 16, 16), np.float32)
    field[4:12, 4:12, 4:12] = 1.0
    nib.save(nib.Nifti1Image(field, affine), str(tmp_path / "f.nii.gz"))
    nib.save(nib.Nifti1Image((field > 0).astype(np.uint8), affine), str(tmp_path / "m.nii.gz"))
    code = main(["invert", str(tmp_path / "f.nii.gz"), "--mask", str(tmp_path / "m.nii.gz"),
                 "--b0", "3", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err


def test_outputs_never_land_in_an_input(tmp_path, capsys):
    """`qsmkit bids DS DS` rewrote the raw dataset (issue 16): an output equal to or inside an
    input folder is refused, except the BIDS derivatives/ convention."""
    import numpy as np

    from qsmkit.cli.main import main
    from qsmkit.io.bids import write_megre_subject

    ds = tmp_path / "ds"
    tes = (0.005, 0.010, 0.015)
    rng = np.random.default_rng(0)
    write_megre_subject(ds, "01", np.ones((24, 24, 16, 3), np.float32),
                        rng.uniform(-3, 3, (24, 24, 16, 3)).astype(np.float32),
                        np.diag([2.0, 2.0, 2.0, 1.0]), tes, 3.0)
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    for argv in (["bids", str(ds), str(ds)], ["bids", str(ds), str(ds / "sub-01" / "out")],
                 ["run", str(ds / "sub-01"), "-o", str(ds / "sub-01" / "qsm")],
                 ["run", str(ds / "sub-01"), "-o", str(ds / "sub-01")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "input" in err and "Traceback" not in err, err
    after = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    assert after == before


def test_a_mask_on_another_grid_is_refused(tmp_path, capsys):
    """Same shape, shifted affine: the mask would silently cover other tissue."""
    import nibabel as nib
    import numpy as np

    from qsmkit.cli.main import main

    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    field = np.zeros((16, 16, 16), np.float32)
    field[4:12, 4:12, 4:12] = 1.0
    shifted = affine.copy()
    shifted[:3, 3] += 10.0
    nib.save(nib.Nifti1Image(field, affine), str(tmp_path / "f.nii.gz"))
    nib.save(nib.Nifti1Image((field > 0).astype(np.uint8), shifted), str(tmp_path / "m.nii.gz"))
    code = main(["invert", str(tmp_path / "f.nii.gz"), "--mask", str(tmp_path / "m.nii.gz"),
                 "--b0", "3", "-o", str(tmp_path / "out")])
    assert code == 2 and "grid" in capsys.readouterr().err

"""``qsmkit run`` with the default preset, then ``qsmkit rims RUN/chi.nii.gz LESIONS``: the route
a user takes. The default inversion (weak-harmonic TV) flattens rims about 1 mm thick into the
lesion core, so ``qsmkit rims`` re-inverts the run's saved local field with iLSQR and classifies
that map (issue 15). On the independent MS head of ``tests/independent_lesions.py`` (its own
forward model: fine grid, continuous kernel, B0 tilted 20 degrees, 1 x 1 x 1.5 mm voxels) the
three rim lesions must be found and the three without a rim (iso, diffusely paramagnetic, a
rim over a third of the edge) must stay rim-.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from independent_lesions import make_lesion_head
from qsmkit.cli.main import main
from qsmkit.pipeline import PRESETS, QSMConfig


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The independent MS head reconstructed by ``qsmkit run`` with the default preset."""
    import nibabel as nib

    head = make_lesion_head("ms")
    root = tmp_path_factory.mktemp("ms_default")
    for name, data in (("mag", head.magnitude), ("phase", head.phase_rad),
                       ("brain", head.brain_mask.astype(np.uint8)),
                       ("lesions", head.ms_labels.astype(np.int16))):
        nib.save(nib.Nifti1Image(data, head.affine), root / f"{name}.nii.gz")
    assert main(["run", "--mag", str(root / "mag.nii.gz"), "--phase", str(root / "phase.nii.gz"),
                 "--echo-times", ",".join(str(t) for t in head.echo_times_s), "--b0",
                 str(head.b0_tesla), "--mask", str(root / "brain.nii.gz"), "-o",
                 str(root / "run"), "--no-report"]) == 0
    assert json.loads((root / "run" / "qsmkit.json").read_text())["config"]["invert"] == "whtv"
    return head, root


def _rims(root, chi, name, *extra):
    table = root / f"{name}.tsv"
    assert main(["rims", str(chi), str(root / "lesions.nii.gz"), "--mask",
                 str(root / "brain.nii.gz"), "-o", str(table), *extra]) == 0
    return json.loads(table.with_suffix(".json").read_text())


def test_default_route_keeps_rims(default_run, capsys):
    head, root = default_run
    payload = _rims(root, root / "run" / "chi.nii.gz", "rims")
    got = {r["id"]: r["class"] for r in payload["rows"]}
    truth = {m["id"]: m["kind"] for m in head.ms}
    assert got == truth, [(m["id"], m["pattern"], m["radius_mm"], got[m["id"]])
                          for m in head.ms]
    classified = payload["summary"]["classified_map"]
    assert classified["reinverted"] and classified["inversion"] == "ilsqr"
    assert classified["options"] == QSMConfig.from_preset("rims").invert_options
    assert classified["given_inversion"] == "whtv"
    assert (root / "rims_chi_ilsqr.nii.gz").is_file()
    assert classified["file"] == str(root / "rims_chi_ilsqr.nii.gz")
    assert classified["seconds"] < 60
    out = capsys.readouterr().out
    assert "re-inverted with ilsqr" in out and "--use-given-chi" in out
    # The rim of every rim+ lesion stands above its core by more than the threshold.
    rows = {r["id"]: r for r in payload["rows"]}
    for m in head.ms:
        if m["kind"] == "rim+":
            assert rows[m["id"]]["rim_ppm"] - rows[m["id"]]["core_ppm"] > 0.01, rows[m["id"]]


def test_given_chi_on_request_and_warning_without_local_field(default_run, capsys):
    """--use-given-chi classifies the whtv map as is, with the warning; a whtv chi whose run
    folder lost its local field is classified as is, with the same warning."""
    _, root = default_run
    payload = _rims(root, root / "run" / "chi.nii.gz", "given", "--use-given-chi")
    assert payload["summary"]["classified_map"]["file"] == str(root / "run" / "chi.nii.gz")
    assert not payload["summary"]["classified_map"]["reinverted"]
    assert "not trustworthy" in payload["summary"]["inversion_note"]
    assert "warning:" in capsys.readouterr().out
    bare = root / "bare"
    bare.mkdir()
    for name in ("chi.nii.gz", "qsmkit.json"):
        shutil.copy(root / "run" / name, bare / name)
    payload = _rims(root, bare / "chi.nii.gz", "bare")
    assert not payload["summary"]["classified_map"]["reinverted"]
    assert "not trustworthy" in payload["summary"]["inversion_note"]
    assert "local_field_hz" in payload["summary"]["classified_map"]["how"]
    assert "warning:" in capsys.readouterr().out
    # A local field without a recorded field strength is not re-inverted at a guessed B0.
    for name in ("local_field_hz.nii.gz", "mask.nii.gz"):
        shutil.copy(root / "run" / name, bare / name)
    record = json.loads((root / "run" / "qsmkit.json").read_text())
    record.pop("b0_tesla")
    record["info"].pop("b0_tesla")
    (bare / "qsmkit.json").write_text(json.dumps(record))
    payload = _rims(root, bare / "chi.nii.gz", "no_b0")
    assert not payload["summary"]["classified_map"]["reinverted"]
    assert "field strength" in payload["summary"]["classified_map"]["how"]
    assert "not trustworthy" in payload["summary"]["inversion_note"]


def test_rims_preset_options_stay_with_its_method():
    """The re-inversion uses the rims preset's method and options (streak cone |D| < 0.15);
    another --invert drops them, and a config never writes back into the preset."""
    config = QSMConfig.from_preset("rims")
    assert config.invert == "ilsqr" and config.invert_options == {"threshold": 0.15}
    config.invert_options["lam"] = 1.0
    assert PRESETS["rims"]["invert_options"] == {"threshold": 0.15}
    other = QSMConfig.from_preset("rims", invert="tv")
    assert other.invert_options == {}
    other.validate()

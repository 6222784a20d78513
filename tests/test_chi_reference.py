"""The reference of chi travels with the map (ChiReference) and every analysis reads it.

Synthetic scene built here (not the head phantom): tissue with a texture, a ventricle-like
CSF block with low R2*, straight veins of known saturation. The same chi is written referenced
to CSF and to the whole-brain mean; Yv must not change.
"""

import json

import numpy as np
import pytest

from qsmkit import physiology
from qsmkit.errors import InputError
from qsmkit.reference import (
    find_csf,
    offset_to_reference,
    reference,
    reference_record,
)

SHAPE = (64, 64, 40)
VS = (2.0, 2.0, 2.0)
HCT = 0.42


def _rod(start, end, radius):
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"), -1)
    a, b = np.asarray(start, float), np.asarray(end, float)
    t = np.clip(((g - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(g - (a + t[..., None] * (b - a)), axis=-1) <= radius


@pytest.fixture(scope="module")
def scene():
    """chi relative to CSF (CSF = 0), R2* with low-R2* ventricles, a brain mask."""
    rng = np.random.default_rng(11)
    x, y, z = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    mask = ((x - 31.5) / 29) ** 2 + ((y - 31.5) / 29) ** 2 + ((z - 19.5) / 18) ** 2 <= 1
    chi = np.where(mask, 0.03 + rng.normal(0, 0.01, SHAPE), 0).astype(np.float32)
    r2 = np.where(mask, 20 + rng.normal(0, 1, SHAPE), 0).astype(np.float32)
    csf = (np.abs(x - 31.5) <= 4) & (np.abs(y - 31.5) <= 6) & (np.abs(z - 19.5) <= 4)
    chi[csf] = rng.normal(0, 0.005, int(csf.sum()))
    r2[csf] = 2.0 + rng.normal(0, 0.5, int(csf.sum()))
    for (start, end, radius), yv in zip(
        [((6, 12, 10), (58, 14, 10), 2.5), ((10, 50, 30), (56, 52, 30), 2.5)], (0.60, 0.70),
        strict=True,
    ):
        rod = _rod(start, end, radius) & mask
        chi[rod] = physiology.blood_chi_ppm(yv, HCT)
        r2[rod] = 45.0
    return chi, r2, mask, csf


def test_record_converts_between_references(scene):
    chi, r2, mask, csf = scene
    chi_brain, info = reference(chi, mask, method="brain")
    rec = reference_record(chi_brain, mask, info, voxel_size=VS, r2star_per_s=r2)
    assert rec["Method"] == "brain" and rec["Region"] == "whole-brain mean"
    assert rec["BrainMeanPpm"] == pytest.approx(0.0, abs=1e-6)
    assert offset_to_reference(rec, "brain") == 0.0
    # the CSF level in the brain frame is minus the brain mean of the CSF-referenced map
    assert rec["CSFPpm"] == pytest.approx(-float(chi[mask].mean()), abs=0.003)
    back = chi_brain - offset_to_reference(rec, "csf")
    assert np.abs(back[mask] - chi[mask]).max() < 0.003
    chi_csf, info_csf = reference(chi, mask, method="csf", r2star_per_s=r2, voxel_size=VS)
    rec_csf = reference_record(chi_csf, mask, info_csf, voxel_size=VS, r2star_per_s=r2)
    assert rec_csf["Method"] == "csf" and offset_to_reference(rec_csf, "csf") == 0.0
    assert offset_to_reference(rec_csf, "brain") == pytest.approx(chi[mask].mean(), abs=0.003)
    # no reference and no way to find CSF: nothing to convert with
    bare = reference_record(chi, mask, None)
    assert bare["Method"] == "none" and offset_to_reference(bare, "csf") is None
    assert offset_to_reference(None, "csf") is None
    with pytest.raises(InputError):
        offset_to_reference(rec, "white matter")
    found, _ = find_csf(chi, mask, VS, r2star_per_s=r2)
    assert (found & csf).sum() >= 0.8 * csf.sum()


def _write_run(folder, chi, mask, r2, record, *, with_r2=True):
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.sidecar import chi_sidecar, write_sidecar

    folder.mkdir()
    save_nifti(folder / "chi.nii.gz", chi, np.diag([*VS, 1.0]))
    save_nifti(folder / "mask.nii.gz", mask.astype(np.uint8), np.diag([*VS, 1.0]))
    if with_r2:
        save_nifti(folder / "r2star.nii.gz", r2, np.diag([*VS, 1.0]))
    if record is not None:
        write_sidecar(folder / "chi.json", chi_sidecar(record))


def _yv(folder, *extra):
    from qsmkit.cli.main import main

    out = folder / "veins.tsv"
    code = main(["oximetry", str(folder / "chi.nii.gz"), str(folder / "mask.nii.gz"),
                 "--hct", str(HCT), "-o", str(out), *extra])
    if code != 0:
        return code, None
    return code, json.loads(out.with_suffix(".json").read_text())


def test_yv_does_not_depend_on_the_reference(tmp_path, scene, capsys):
    chi, r2, mask, _ = scene
    chi_csf, info_csf = reference(chi, mask, method="csf", r2star_per_s=r2, voxel_size=VS)
    chi_brain, info_brain = reference(chi, mask, method="brain")
    assert abs(float(np.median(chi_csf[mask] - chi_brain[mask]))) > 0.02  # 0.03 ppm apart
    _write_run(tmp_path / "csf", chi_csf, mask, r2,
               reference_record(chi_csf, mask, info_csf, voxel_size=VS, r2star_per_s=r2))
    _write_run(tmp_path / "brain", chi_brain, mask, r2,
               reference_record(chi_brain, mask, info_brain, voxel_size=VS, r2star_per_s=r2))
    code_c, csf_run = _yv(tmp_path / "csf")
    code_b, brain_run = _yv(tmp_path / "brain")
    assert code_c == 0 and code_b == 0
    yv_c = csf_run["summary"]["yv_length_weighted"]
    yv_b = brain_run["summary"]["yv_length_weighted"]
    assert yv_c == pytest.approx(0.65, abs=0.03)
    assert yv_b == pytest.approx(yv_c, abs=0.005)
    assert "ChiReference" in brain_run["chi_reference"]["source"]
    # no sidecar, but the run's R2* beside the map: CSF found now, same Yv
    _write_run(tmp_path / "bare_r2", chi_brain, mask, r2, None)
    code, bare = _yv(tmp_path / "bare_r2")
    assert code == 0 and bare["summary"]["yv_length_weighted"] == pytest.approx(yv_c, abs=0.005)
    assert "r2star.nii.gz" in bare["chi_reference"]["source"]
    # nothing says where CSF is: a clear refusal naming the options, not a silent assumption
    _write_run(tmp_path / "bare", chi_brain, mask, r2, None, with_r2=False)
    capsys.readouterr()
    code, _ = _yv(tmp_path / "bare")
    assert code == 2
    err = capsys.readouterr().err
    assert "--csf" in err and "--labels" in err and "--reference-ppm" in err
    # and the user's value wins
    offset = reference_record(chi_brain, mask, info_brain, voxel_size=VS,
                              r2star_per_s=r2)["CSFPpm"]
    code, given = _yv(tmp_path / "bare", "--reference-ppm", f"{offset:.6f}", "--force")
    assert code == 0
    assert given["summary"]["yv_length_weighted"] == pytest.approx(yv_c, abs=0.005)


def test_library_refuses_a_non_csf_map_without_csf_level(scene):
    from qsmkit.analysis import oximetry as ox

    chi, _, mask, _ = scene
    with pytest.raises(InputError, match="CSF"):
        ox.venous_oximetry(chi, mask, VS, hct=HCT,
                           chi_reference={"Method": "brain", "Region": "whole-brain mean",
                                          "BrainMeanPpm": 0.0, "CSFPpm": None})


def test_sidecar_reading_order(tmp_path):
    from qsmkit.io.sidecar import read_chi_reference

    (tmp_path / "chi.nii.gz").write_bytes(b"")
    rec, where = read_chi_reference(tmp_path / "chi.nii.gz")
    assert rec is None and "ChiReference" in where
    (tmp_path / "qsmkit.json").write_text(json.dumps(
        {"info": {"reference": {"method": "brain", "statistic": "mean", "offset_ppm": 0.01}}}))
    rec, where = read_chi_reference(tmp_path / "chi.nii.gz")
    assert rec["Method"] == "brain" and rec["BrainMeanPpm"] == 0.0 and rec["CSFPpm"] is None
    (tmp_path / "chi.json").write_text(json.dumps({"ChiReference": {"Method": "csf",
                                                                     "CSFPpm": 0.0}}))
    rec, where = read_chi_reference(tmp_path / "chi.nii.gz")
    assert rec["Method"] == "csf" and where.endswith("chi.json")


@pytest.mark.parametrize("ref", ["brain", "csf"])
def test_run_records_the_reference(tmp_path, ref):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import load_nifti, save_nifti
    from qsmkit.io.sidecar import read_chi_reference
    from qsmkit.phantom import head_phantom, simulate_gre

    ph = head_phantom(shape=(48, 48, 48), voxel_size=(4.0, 4.0, 4.0), seed=2)
    sim = simulate_gre(ph, echo_times_s=[0.004, 0.012, 0.020], b0_tesla=3.0, snr=100.0, seed=2)
    acq = sim.acquisition
    save_nifti(tmp_path / "mag.nii.gz", acq.magnitude, acq.affine)
    save_nifti(tmp_path / "phase.nii.gz", acq.phase, acq.affine)
    out = tmp_path / "out"
    assert main(["run", "--mag", str(tmp_path / "mag.nii.gz"), "--phase",
                 str(tmp_path / "phase.nii.gz"), "--echo-times", "0.004,0.012,0.020",
                 "--b0", "3", "-o", str(out), "--preset", "fast", "--reference", ref,
                 "--no-report"]) == 0
    sidecar = json.loads((out / "chi.json").read_text())
    run = json.loads((out / "qsmkit.json").read_text())
    assert sidecar["ChiReference"] == run["ChiReference"]
    rec, _ = read_chi_reference(out / "chi.nii.gz")
    assert rec["Method"] == ref
    chi, _, _ = load_nifti(out / "chi.nii.gz")
    valid, _, _ = load_nifti(out / "mask.nii.gz")
    valid = valid > 0
    assert rec["BrainMeanPpm"] == pytest.approx(float(chi[valid].mean()), abs=1e-4)
    # the ventricles of the phantom are found at run time, so the map converts to CSF
    assert rec["CSFPpm"] is not None
    # the level recorded is the chi of the phantom's ventricles in this map (found from R2*)
    vent = np.isin(ph.labels, [k for k, v in ph.label_names.items() if v == "ventricles"])
    expected = 0.0 if ref == "csf" else float(np.median(chi[vent & valid]))
    assert rec["CSFPpm"] == pytest.approx(expected, abs=0.003)


def test_reference_command_records_the_reference(tmp_path, scene):
    from qsmkit.cli.main import main
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.sidecar import read_chi_reference

    chi, r2, mask, _ = scene
    affine = np.diag([*VS, 1.0])
    save_nifti(tmp_path / "chi.nii.gz", chi + 0.05, affine)
    save_nifti(tmp_path / "mask.nii.gz", mask.astype(np.uint8), affine)
    save_nifti(tmp_path / "r2star.nii.gz", r2, affine)
    out = tmp_path / "chi_brain.nii.gz"
    assert main(["reference", str(tmp_path / "chi.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"),
                 "--r2star", str(tmp_path / "r2star.nii.gz"), "-o", str(out)]) == 0
    rec, where = read_chi_reference(out)
    assert where.endswith("chi_brain.json") and rec["Method"] == "brain"
    assert rec["CSFPpm"] == pytest.approx(-float(chi[mask].mean()), abs=0.003)

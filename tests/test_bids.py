"""BIDS MEGRE writing, discovery and reading (including vendor phase units and inheritance)."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from qsmkit.cli.main import main
from qsmkit.errors import InputError
from qsmkit.geometry import affine_from_geometry, b0_dir_from_affine
from qsmkit.io.bids import (
    build_name,
    find_megre,
    parse_name,
    read_megre,
    scale_phase_to_radians,
    write_megre_subject,
)

TES = (0.005, 0.010, 0.015)


def _scan(seed=0, shape=(12, 10, 8), n=3):
    rng = np.random.default_rng(seed)
    mag = rng.uniform(0.1, 1.0, (*shape, n)).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, (*shape, n)).astype(np.float32)
    affine = affine_from_geometry(shape, (2.0, 2.0, 2.5), (0.0, 0.3, 0.95))
    return mag, phase, affine


def _save(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def test_names_round_trip():
    name = build_name(
        {"sub": "01", "ses": "a", "echo": 2, "part": "phase", "run": 1}, "MEGRE", ".nii.gz"
    )
    assert name == "sub-01_ses-a_run-1_echo-2_part-phase_MEGRE.nii.gz"
    entities, suffix, ext = parse_name(name)
    assert entities == {"sub": "01", "ses": "a", "run": "1", "echo": "2", "part": "phase"}
    assert (suffix, ext) == ("MEGRE", ".nii.gz")
    assert parse_name("notes.txt") is None


def test_write_find_read_round_trip(tmp_path):
    mag, phase, affine = _scan()
    written = write_megre_subject(
        tmp_path, "sub-01", mag, phase, affine, TES, 3.0, session="pre", acq="qsm", run=1
    )
    anat = tmp_path / "sub-01" / "ses-pre" / "anat"
    expected = anat / "sub-01_ses-pre_acq-qsm_run-1_echo-2_part-phase_MEGRE.nii.gz"
    assert expected in written and expected.exists()
    assert len(written) == 4 * len(TES)
    sidecar = json.loads(expected.with_name(expected.name[:-7] + ".json").read_text())
    assert sidecar["EchoTime"] == 0.010 and sidecar["MagneticFieldStrength"] == 3.0
    assert sidecar["Manufacturer"] == "qsmkit-simulator" and sidecar["Units"] == "rad"
    description = json.loads((tmp_path / "dataset_description.json").read_text())
    assert description["BIDSVersion"] and description["DatasetType"] == "raw"
    write_megre_subject(tmp_path, "02", mag, phase, affine, TES, 3.0)
    participants = (tmp_path / "participants.tsv").read_text().split()
    assert participants == ["participant_id", "sub-01", "sub-02"]

    refs = find_megre(tmp_path)
    assert [(r.subject, r.session, r.acq, r.run) for r in refs] == [
        ("01", "pre", "qsm", "1"),
        ("02", None, None, None),
    ]
    ref = refs[0]
    assert ref.echo_numbers == [1, 2, 3]
    assert [p.name.split("_echo-")[1][0] for p in ref.phase_files] == ["1", "2", "3"]
    assert all("part-mag" in p.name for p in ref.magnitude_files)
    assert ref.name == "sub-01_ses-pre_acq-qsm_run-1"
    acq = read_megre(ref)
    np.testing.assert_allclose(acq.magnitude, mag, rtol=1e-6)
    np.testing.assert_allclose(acq.phase, phase, atol=1e-6)
    np.testing.assert_allclose(acq.echo_times_s, TES)
    assert acq.b0_tesla == 3.0 and acq.manufacturer == "qsmkit-simulator"
    np.testing.assert_allclose(acq.affine, affine, atol=1e-5)
    np.testing.assert_allclose(acq.b0_dir, b0_dir_from_affine(affine), atol=1e-6)


def test_filters(tmp_path):
    mag, phase, affine = _scan()
    for sub, ses in (("01", "a"), ("01", "b"), ("02", "a"), ("03", None)):
        write_megre_subject(tmp_path, sub, mag, phase, affine, TES, 3.0, session=ses)
    assert len(find_megre(tmp_path)) == 4
    assert [r.subject for r in find_megre(tmp_path, participant_label="sub-02")] == ["02"]
    assert len(find_megre(tmp_path, participant_label=["01", "03"])) == 3
    assert [(r.subject, r.session) for r in find_megre(tmp_path, session="ses-a")] == [
        ("01", "a"),
        ("02", "a"),
    ]
    assert find_megre(tmp_path, participant_label="04") == []
    with pytest.raises(InputError):
        find_megre(tmp_path / "missing")
    with pytest.raises(InputError):
        find_megre(tmp_path, participant_label="0 1")


def test_gre_suffix_4d_file_and_inherited_sidecar(tmp_path):
    mag, phase, affine = _scan(n=2)
    anat = tmp_path / "sub-07" / "anat"
    _save(anat / "sub-07_part-mag_GRE.nii.gz", mag, affine)
    _save(anat / "sub-07_part-phase_GRE.nii.gz", phase, affine)
    # Echo times in the subject's sidecars, field strength inherited from the dataset root.
    for part in ("mag", "phase"):
        (anat / f"sub-07_part-{part}_GRE.json").write_text(json.dumps({"EchoTime": [0.004, 0.011]}))
    (tmp_path / "GRE.json").write_text(
        json.dumps({"MagneticFieldStrength": 7.0, "Manufacturer": "Siemens"})
    )
    refs = find_megre(tmp_path)
    assert len(refs) == 1 and refs[0].suffix == "GRE" and refs[0].echo_numbers == [0]
    assert tmp_path / "GRE.json" in refs[0].sidecars
    acq = read_megre(refs[0])
    assert acq.b0_tesla == 7.0 and acq.manufacturer == "Siemens"
    np.testing.assert_allclose(acq.echo_times_s, [0.004, 0.011])
    assert acq.magnitude.shape == mag.shape


def _write_vendor_scan(root, phase_values, units=None):
    mag, _, affine = _scan(n=2)
    anat = root / "sub-01" / "anat"
    for e in range(2):
        for part, data in (("mag", mag[..., e]), ("phase", phase_values[..., e])):
            stem = f"sub-01_echo-{e + 1}_part-{part}_MEGRE"
            _save(anat / f"{stem}.nii.gz", data, affine)
            meta = {"EchoTime": TES[e], "MagneticFieldStrength": 3.0}
            if units and part == "phase":
                meta["Units"] = units
            (anat / f"{stem}.json").write_text(json.dumps(meta))
    return find_megre(root)[0]


@pytest.mark.parametrize(
    ("kind", "to_raw"),
    [
        ("siemens", lambda p: np.round(p * 4096 / np.pi).clip(-4096, 4095).astype(np.int16)),
        (
            "unsigned",
            lambda p: np.round((p + np.pi) * 4096 / (2 * np.pi)).clip(0, 4095).astype(np.uint16),
        ),
        ("milliradian", lambda p: np.round(p * 1000).astype(np.int16)),
    ],
)
def test_vendor_phase_units_are_rescaled(tmp_path, kind, to_raw):
    _, phase, _ = _scan(n=2)
    phase[0, 0, 0, :] = -np.pi  # make sure the full range is used
    phase[1, 0, 0, :] = np.pi * 0.9995
    # A sidecar claiming radians does not override the range (noted when they disagree).
    units = "rad" if kind == "siemens" else None
    ref = _write_vendor_scan(tmp_path, to_raw(phase), units=units)
    acq = read_megre(ref)
    residual = np.angle(np.exp(1j * (acq.phase - phase)))
    assert np.abs(residual).max() < 2e-3, kind
    assert any(("rescaled" in note or "milliradians" in note) for note in acq.notes), kind
    assert any("although" in note for note in acq.notes) == (units is not None)
    assert acq.phase.min() >= -np.pi and acq.phase.max() < np.pi


def test_radians_in_zero_to_two_pi_are_wrapped():
    phase = np.linspace(0, 2 * np.pi, 50, endpoint=False).reshape(5, 5, 2)
    out, note = scale_phase_to_radians(phase)
    assert "wrapped" in note and out.min() >= -np.pi and out.max() < np.pi
    np.testing.assert_allclose(np.angle(np.exp(1j * (out - phase))), 0, atol=1e-6)
    with pytest.raises(InputError):
        scale_phase_to_radians(np.array([0.5, 100.25, 3000.7]))


def test_missing_metadata_names_the_file(tmp_path):
    mag, phase, affine = _scan(n=2)
    write_megre_subject(tmp_path, "01", mag, phase, affine, TES[:2], 3.0)
    anat = tmp_path / "sub-01" / "anat"
    for json_path in anat.glob("*echo-2*.json"):
        meta = json.loads(json_path.read_text())
        del meta["EchoTime"]
        json_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="echo-2_part-phase_MEGRE"):
        read_megre(find_megre(tmp_path)[0])
    for json_path in anat.glob("*.json"):
        json_path.write_text(json.dumps({"EchoTime": 0.01 if "echo-1" in json_path.name else 0.02}))
    with pytest.raises(InputError, match="MagneticFieldStrength.*echo-1_part-phase"):
        read_megre(find_megre(tmp_path)[0])


def test_incomplete_scans_are_skipped_with_a_warning(tmp_path, caplog):
    mag, phase, affine = _scan(n=2)
    write_megre_subject(tmp_path, "01", mag, phase, affine, TES[:2], 3.0)
    write_megre_subject(tmp_path, "02", mag, phase, affine, TES[:2], 3.0)
    for path in (tmp_path / "sub-02" / "anat").glob("*part-phase*"):
        path.unlink()
    with caplog.at_level(logging.WARNING):
        refs = find_megre(tmp_path)
    assert [r.subject for r in refs] == ["01"]
    assert "sub-02" in caplog.text and "phase" in caplog.text


def test_mismatched_grids_are_refused(tmp_path):
    mag, phase, affine = _scan(n=2)
    write_megre_subject(tmp_path, "01", mag, phase, affine, TES[:2], 3.0)
    other = tmp_path / "sub-01" / "anat" / "sub-01_echo-2_part-phase_MEGRE.nii.gz"
    _save(other, phase[:-1, ..., 1], affine)
    with pytest.raises(InputError, match="grid"):
        read_megre(find_megre(tmp_path)[0])


def test_write_rejects_bad_input(tmp_path):
    mag, phase, affine = _scan(n=2)
    with pytest.raises(InputError):
        write_megre_subject(tmp_path, "01", mag, phase, affine, TES, 3.0)  # 3 TEs, 2 echoes
    with pytest.raises(InputError):
        write_megre_subject(tmp_path, "sub_01", mag, phase, affine, TES[:2], 3.0)


def test_simulate_bids_dataset_is_readable(tmp_path):
    out = tmp_path / "ds"
    b0_dir = (0.0, 0.2588, 0.9659)
    args = [
        "simulate",
        str(out),
        "--shape",
        "48,48,48",
        "--voxel-size",
        "4,4,4",
        "--echo-times",
        "0.005,0.01,0.015",
        "--b0",
        "7",
        "--b0-dir",
        "0,0.2588,0.9659",
        "--bids",
        "sub-01",
        "--seed",
        "2",
    ]
    assert main(args) == 0
    assert (out / "dataset_description.json").exists()
    assert "sub-01" in (out / "participants.tsv").read_text()
    truth = out / "derivatives" / "truth" / "sub-01" / "anat"
    for name in (
        "sub-01_Chimap.nii.gz",
        "sub-01_desc-brain_mask.nii.gz",
        "sub-01_dseg.nii.gz",
        "sub-01_dseg.tsv",
        "sub-01_desc-local_fieldmap.nii.gz",
        "sub-01_phantom.json",
    ):
        assert (truth / name).exists(), name
    assert (
        json.loads((out / "derivatives" / "truth" / "dataset_description.json").read_text())[
            "DatasetType"
        ]
        == "derivative"
    )
    (ref,) = find_megre(out)  # the truth derivatives are not mistaken for raw data
    assert ref.subject == "01" and ref.echo_numbers == [1, 2, 3]
    acq = read_megre(ref)
    assert acq.magnitude.shape == (48, 48, 48, 3)
    assert acq.b0_tesla == 7.0 and acq.manufacturer == "qsmkit-simulator"
    np.testing.assert_allclose(acq.echo_times_s, [0.005, 0.01, 0.015])
    np.testing.assert_allclose(acq.b0_dir, np.asarray(b0_dir) / np.linalg.norm(b0_dir), atol=1e-4)
    chi_img = nib.load(str(truth / "sub-01_Chimap.nii.gz"))
    np.testing.assert_allclose(chi_img.affine, acq.affine, atol=1e-4)
    # A second subject joins the same dataset (shared files replaced only with --force).
    assert main([*args[:-4], "--bids", "02", "--seed", "3"]) == 2
    assert main([*args[:-4], "--bids", "02", "--seed", "3", "--force"]) == 0
    assert [r.subject for r in find_megre(out)] == ["01", "02"]
    assert (out / "participants.tsv").read_text().split() == ["participant_id", "sub-01", "sub-02"]


def test_field_strength_that_is_not_a_number_is_a_clear_error(tmp_path, capsys):
    """"3T" in a sidecar was a ValueError traceback (issue 16)."""
    from qsmkit.cli.main import main

    shape = (24, 24, 16)
    rng = np.random.default_rng(0)
    mag = np.ones(shape + (len(TES),), np.float32)
    phase = rng.uniform(-np.pi, np.pi, shape + (len(TES),)).astype(np.float32)
    write_megre_subject(tmp_path / "ds", "01", mag, phase, np.diag([2.0, 2.0, 2.0, 1.0]),
                        TES, 3.0)
    for sidecar in (tmp_path / "ds").rglob("*_MEGRE.json"):
        meta = json.loads(sidecar.read_text())
        meta["MagneticFieldStrength"] = "3T"
        sidecar.write_text(json.dumps(meta))
    assert main(["run", str(tmp_path / "ds" / "sub-01"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "MagneticFieldStrength" in err and "'3T'" in err and "Traceback" not in err


def test_derivative_description_links_and_bidsignore(tmp_path):
    """Derivative metadata (issue 14): the source linked relatively inside it, by file:// URI
    elsewhere; BIDS URIs within a dataset; .bidsignore lines merged, never duplicated."""
    from qsmkit.io.bids import (
        bids_uri,
        dataset_link,
        write_bidsignore,
        write_derivative_description,
    )

    raw = tmp_path / "ds"
    inside, outside = raw / "derivatives" / "qsm", tmp_path / "elsewhere" / "qsm"
    assert dataset_link(inside, raw) == "../.."
    assert dataset_link(outside, raw) == raw.resolve().as_uri()
    image = raw / "sub-01" / "anat" / "sub-01_echo-1_part-mag_MEGRE.nii.gz"
    assert bids_uri(image, raw, "raw") == "bids:raw:sub-01/anat/sub-01_echo-1_part-mag_MEGRE.nii.gz"
    assert bids_uri(inside / "sub-01" / "x.nii.gz", inside) == "bids::sub-01/x.nii.gz"
    with pytest.raises(InputError, match="not inside"):
        bids_uri(tmp_path / "other.nii.gz", raw)
    # a DataLad/git-annex file is a link into .git/annex: its name in the dataset is cited
    annexed = raw / ".git" / "annex" / "objects" / "MD5E-s1--x.nii.gz"
    annexed.parent.mkdir(parents=True)
    annexed.write_bytes(b"x")
    image.parent.mkdir(parents=True)
    image.symlink_to(annexed)
    assert bids_uri(image, raw, "raw") == "bids:raw:sub-01/anat/sub-01_echo-1_part-mag_MEGRE.nii.gz"

    write_derivative_description(outside, name="n", description="d", source=raw)
    meta = json.loads((outside / "dataset_description.json").read_text())
    assert meta["DatasetType"] == "derivative" and meta["GeneratedBy"][0]["Name"] == "qsmkit"
    assert meta["SourceDatasets"] == [{"URL": raw.resolve().as_uri()}]
    assert meta["DatasetLinks"] == {"raw": raw.resolve().as_uri()}
    write_derivative_description(inside, name="n", description="d", source=raw,
                                 source_is_input=False)
    meta = json.loads((inside / "dataset_description.json").read_text())
    assert "SourceDatasets" not in meta and meta["DatasetLinks"] == {"raw": "../.."}

    (outside / ".bidsignore").write_text("mine.txt\n")
    write_bidsignore(outside, ["group", "*.html"])
    write_bidsignore(outside, ["*.html", "sub-*/qsmkit"])
    assert (outside / ".bidsignore").read_text().split() == [
        "mine.txt", "group", "*.html", "sub-*/qsmkit"]

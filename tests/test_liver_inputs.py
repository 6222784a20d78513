"""``qsmkit liver`` reads every reasonable encoding of one acquisition to the same data, or
refuses it with one line (issue 13: "when a real input is odd, qsmkit must notice and say so").

The acquisition is the independent abdomen phantom (tests/independent_abdomen.py, shared with
no qsmkit code) on a small slab, written by tests/liver_encodings.py with nibabel the ways
other tools write it: 4D files, EchoTime lists, Siemens/unsigned integer or degree phase,
scaled integer magnitude, BIDS folders, flipped or permuted voxel axes, an oblique slab.
Equivalent encodings must give the analysis the same arrays (to the quantisation of the
encoding); wrong ones must exit 2 with one line and write nothing; a permuted axis order must
give the same liver.tsv.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

import liver_encodings as enc
from independent_abdomen import make_abdomen_phantom
from qsmkit.cli.common import join_number_lists
from qsmkit.cli.liver import b0_axis_last, load_inputs
from qsmkit.cli.main import get_parser, main

SHAPE, VOXEL_MM = (40, 40, 6), (6.4, 6.4, 64.0 / 6)  # the quick slab's field of view, coarser
PHASE_STEP_RAD = 2 * np.pi / 4096  # one step of a 12-bit phase encoding


@pytest.fixture(scope="module")
def phantom():
    return make_abdomen_phantom(shape=SHAPE, voxel_mm=VOXEL_MM, b0_tesla=1.5, snr=60.0)


def _args(argv, out):
    return get_parser().parse_args(join_number_lists(["liver", *argv, "-o", str(out)]))


def _load(phantom, name, folder):
    argv = enc.ENCODINGS[name](phantom, folder / name)
    return load_inputs(_args(argv, folder / name / "out"))


@pytest.fixture(scope="module")
def reference(phantom, tmp_path_factory):
    return _load(phantom, "reference", tmp_path_factory.mktemp("ref"))


SAME_DATA = ["4d_echotime_list", "4d_echotimes_key", "4d_command_line", "5d_echoes",
             "phase_siemens_int16", "phase_siemens_scaled", "phase_uint12",
             "phase_int16_radian_slope", "phase_degrees", "magnitude_int16_slope",
             "labels_flipped_grid", "bids_per_echo", "bids_4d", "bids_no_field_strength_cli",
             "bids_real_imag", "bids_dataset_root", "echoes_shuffled"]


@pytest.mark.parametrize("name", SAME_DATA)
def test_equivalent_encodings_give_the_same_data(phantom, reference, name, tmp_path, capsys):
    acq, labels, _, _ = _load(phantom, name, tmp_path)
    ref, ref_labels, _, _ = reference
    assert acq.shape == ref.shape and acq.n_echoes == ref.n_echoes
    np.testing.assert_allclose(acq.echo_times_s, ref.echo_times_s, rtol=0, atol=1e-9)
    assert acq.b0_tesla == pytest.approx(ref.b0_tesla)
    np.testing.assert_allclose(acq.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(acq.b0_dir, ref.b0_dir, atol=1e-6)
    scale = float(ref.magnitude.max())
    assert float(np.max(np.abs(acq.magnitude - ref.magnitude))) <= 1e-4 * scale
    dphi = np.angle(np.exp(1j * (acq.phase.astype(np.float64) - ref.phase)))
    assert float(np.max(np.abs(dphi))) <= PHASE_STEP_RAD
    np.testing.assert_array_equal(labels, ref_labels)
    if name.startswith("phase_") and name != "phase_int16_radian_slope":
        assert "note: phase in" in capsys.readouterr().out  # the conversion is reported


REFUSED = {
    "echo_times_ms_sidecar": "look like milliseconds",
    "echo_times_ms_list": "look like milliseconds",
    "echo_times_ms_command_line": "look like milliseconds",
    "no_field_strength": "--b0",
    "echo_count_mismatch_files": "6 magnitude files but 5 phase files",
    "echo_count_mismatch_4d": "differ in shape",
    "labels_other_shape": "do not lie on the data's grid",
    "labels_shifted_grid": "do not lie on the data's grid",
    "nan_magnitude": "NaN",
    "nan_phase": "NaN",
    "bids_echo_mismatch": "phase echoes [1, 2, 3, 4, 5] differ",
    "bids_echo_times_ms": "look like milliseconds",
    "echo_times_submillisecond_as_seconds": "too long for a chemical-shift-encoded GRE",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_wrong_inputs_are_refused_in_one_line(phantom, name, tmp_path, capsys):
    argv = enc.ENCODINGS[name](phantom, tmp_path / name)
    out = tmp_path / "out"
    assert main(["liver", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qsmkit liver: error: "), err
    assert REFUSED[name] in err[0]
    assert not out.exists()


def test_axis_order_is_undone_exactly(phantom, reference, tmp_path):
    """Slices stored first (B0 along voxel axis 0): the analysis gets the reference arrays."""
    ref, ref_labels, _, _ = reference
    acq, labels, _, _ = _load(phantom, "slice_axis_first", tmp_path)
    assert acq.shape == (SHAPE[2], SHAPE[0], SHAPE[1])
    np.testing.assert_allclose(acq.b0_dir, [1, 0, 0], atol=1e-9)  # taken from the affine
    moved, moved_labels, _, to_input = b0_axis_last(acq, labels)
    np.testing.assert_array_equal(moved.magnitude, ref.magnitude)
    np.testing.assert_array_equal(moved.phase, ref.phase)
    np.testing.assert_array_equal(moved_labels, ref_labels)
    np.testing.assert_allclose(moved.affine, ref.affine)
    np.testing.assert_array_equal(to_input(moved_labels), labels)
    ijk = tuple(int(i) for i in np.argwhere(moved_labels == 7)[0])
    assert labels[to_input.point(ijk)] == 7  # voxel indices (nodule centroids) map back too


def test_oblique_b0_direction_comes_from_the_affine(tmp_path, monkeypatch):
    tilted = enc.make_oblique_phantom(15.0, shape=(24, 24, 4), voxel_mm=(10.0, 10.0, 16.0),
                                      b0_tesla=3.0, snr=60.0)
    argv = enc.write_reference(tilted, tmp_path / "oblique")
    seen = {}

    class Stop(Exception):
        pass

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    import qsmkit.body.liver

    monkeypatch.setattr(qsmkit.body.liver, "analyse_liver", capture)
    with pytest.raises(Stop):
        from qsmkit.cli.liver import run

        run(_args(argv, tmp_path / "out"))
    tilt = np.deg2rad(15.0)
    np.testing.assert_allclose(seen["b0_dir"], [0.0, np.sin(tilt), np.cos(tilt)], atol=1e-6)


def _table(folder):
    with open(folder / "liver.tsv") as fh:
        return {int(r["label"]): r for r in csv.DictReader(fh, delimiter="\t")}


def test_axis_order_gives_the_same_liver_table(tmp_path):
    """End to end: the slab stored slices-first reads to the reference's liver.tsv, and its
    maps are written on its own (input) grid. Before the axis order was normalised the
    chi of the fat-free patches differed by 0.1 ppm (internal air filled in other planes)."""
    import nibabel as nib

    shape = (32, 32, 6)  # coarser still: 8 x 8 x 10.7 mm, 6 patches of 6 voxels
    phantom = make_abdomen_phantom(shape=shape, voxel_mm=(8.0, 8.0, 64.0 / 6), b0_tesla=1.5,
                                   snr=60.0)
    outs = {}
    for name in ("reference", "slice_axis_first"):
        argv = enc.ENCODINGS[name](phantom, tmp_path / name)
        outs[name] = tmp_path / name / "out"
        assert main(["liver", *argv, "-o", str(outs[name])]) == 0
    ref, perm = _table(outs["reference"]), _table(outs["slice_axis_first"])
    assert sorted(ref) == sorted(perm) and len(ref) >= 6
    for label, row in ref.items():
        for key, tol in (("pdff_percent", 0.05), ("r2star_per_s", 0.5), ("chi_ppm", 0.005)):
            a, b = float(row[key]), float(perm[label][key])
            assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol, (label, key, a, b)
    chi = nib.load(outs["slice_axis_first"] / "chi.nii.gz")
    assert chi.shape == (shape[2], shape[0], shape[1])
    ref_chi = np.asarray(nib.load(outs["reference"] / "chi.nii.gz").dataobj)
    np.testing.assert_allclose(np.transpose(np.asarray(chi.dataobj), (1, 2, 0)), ref_chi,
                               atol=0.01)


def test_blank_end_slices_are_left_out_and_the_maps_written_on_the_input_grid(tmp_path):
    """A slab zero-filled by one slice at each end (a reformat's padding) reads to the
    liver.tsv of the slab itself: before, the blank slices were air to the liver model (a
    body ending at the faces; LIC 20 patches +35-40 % on the independent abdomen)."""
    import json

    import nibabel as nib

    shape = (32, 32, 6)
    phantom = make_abdomen_phantom(shape=shape, voxel_mm=(8.0, 8.0, 64.0 / 6), b0_tesla=1.5,
                                   snr=60.0)
    pad = ((0, 0), (0, 0), (1, 1), (0, 0))
    affine = phantom.affine.copy()
    affine[:3, 3] -= affine[:3, 2]  # one slice further down: the padded grid's origin
    padded = enc._per_echo(phantom, tmp_path / "padded", np.pad(phantom.magnitude, pad),
                           np.pad(phantom.phase, pad), affine=affine)
    labels = enc._labels(phantom, tmp_path / "padded", affine=affine,
                         data=np.pad(phantom.patch_labels, pad[:3]))
    outs = {"padded": tmp_path / "padded" / "out", "reference": tmp_path / "reference" / "out"}
    assert main(["liver", *enc._argv(*padded, labels), "-o", str(outs["padded"])]) == 0
    argv = enc.write_reference(phantom, tmp_path / "reference")
    assert main(["liver", *argv, "-o", str(outs["reference"])]) == 0
    ref, got = _table(outs["reference"]), _table(outs["padded"])
    assert sorted(ref) == sorted(got) and len(ref) >= 6
    for label, row in ref.items():
        for key in ("pdff_percent", "r2star_per_s", "chi_ppm"):
            a, b = float(row[key]), float(got[label][key])
            assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-4, (label, key, a, b)
    chi = nib.load(outs["padded"] / "chi.nii.gz")
    assert chi.shape == (32, 32, 8)
    np.testing.assert_allclose(chi.affine, affine, atol=1e-5)
    data = np.asarray(chi.dataobj)
    assert not data[:, :, 0].any() and not data[:, :, -1].any()
    ref_chi = np.asarray(nib.load(outs["reference"] / "chi.nii.gz").dataobj)
    np.testing.assert_allclose(data[:, :, 1:-1], ref_chi, atol=1e-4)
    notes = json.loads((outs["padded"] / "qsmkit.json").read_text())["acquisition_notes"]
    assert any("zero magnitude at every echo left out" in n for n in notes), notes


def test_a_label_with_no_voxel_in_the_body_is_warned_not_silently_dropped(tmp_path, capsys):
    import json

    shape = (32, 32, 6)
    phantom = make_abdomen_phantom(shape=shape, voxel_mm=(8.0, 8.0, 64.0 / 6), b0_tesla=1.5,
                                   snr=60.0)
    labels = phantom.patch_labels.astype(np.int16).copy()
    labels[0:2, 0:2, :] = 99  # a corner of the field of view: air
    folder = tmp_path / "data"
    mags, phases = enc._per_echo(phantom, folder, phantom.magnitude, phantom.phase)
    argv = enc._argv(mags, phases, enc._labels(phantom, folder, data=labels))
    out = tmp_path / "out"
    assert main(["liver", *argv, "-o", str(out)]) == 0
    assert "warning [LABELS_OUTSIDE]: label(s) [99] have no voxel inside" in capsys.readouterr().err
    codes = [w["code"] for w in json.loads((out / "qsmkit.json").read_text())["warnings"]]
    assert codes == ["LABELS_OUTSIDE"]
    assert 99 not in _table(out) and len(_table(out)) >= 6

"""The same abdomen acquisition written the ways other tools write it (issue 13, inputs).

Each ``write_<name>(phantom, folder)`` writes the independent abdomen phantom
(:mod:`independent_abdomen`) into ``folder`` with nibabel and plain ``json`` (never qsmkit's
writers) and returns the ``qsmkit liver`` arguments that name it (without ``-o``). The
reference encoding is :func:`write_reference`: one float NIfTI per echo, phase in radians,
BIDS sidecars with ``EchoTime`` (s) and ``MagneticFieldStrength`` (T), patch labels.

Integer phase encodings follow the vendors' conventions as documented by dcm2niix
(Siemens phase: stored 0..4095 with RescaleSlope 2 and RescaleIntercept -4096, i.e.
-4096..4094 for -pi..pi; Philips/unsigned 12-bit: 0..4095 for -pi..pi).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import nibabel as nib
import numpy as np

import independent_abdomen
from independent_abdomen import write_nifti


def _save(path: Path, data, affine, *, slope=None, inter=None, dtype=None) -> Path:
    image = nib.Nifti1Image(np.asarray(data) if dtype is None else np.asarray(data).astype(dtype),
                            affine)
    if dtype is not None:
        image.set_data_dtype(dtype)
    if slope is not None:
        image.header.set_slope_inter(slope, inter if inter is not None else 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def _sidecar(path: Path, meta: dict) -> None:
    name = path.name.replace(".nii.gz", "").replace(".nii", "")
    path.with_name(name + ".json").write_text(json.dumps(meta))


def _labels(phantom, folder: Path, affine=None, data=None) -> Path:
    return _save(folder / "labels.nii.gz",
                 (phantom.patch_labels if data is None else data).astype(np.int16),
                 phantom.affine if affine is None else affine)


def _per_echo(phantom, folder: Path, mag, phase, *, affine=None, meta=None, mag_kw=None,
              phase_kw=None, echo_times=None) -> tuple[list[Path], list[Path]]:
    """One 3D file per echo with a sidecar each; ``meta`` adds/overrides sidecar keys."""
    affine = phantom.affine if affine is None else affine
    tes = phantom.echo_times_s if echo_times is None else echo_times
    mags, phases = [], []
    for e, te in enumerate(tes):
        side = {"EchoTime": float(te), "MagneticFieldStrength": phantom.b0_tesla, **(meta or {})}
        side = {k: v for k, v in side.items() if v is not None}
        for kind, data, kw, out in (("mag", mag, mag_kw, mags),
                                    ("phase", phase, phase_kw, phases)):
            if e >= data.shape[3]:
                continue
            path = _save(folder / f"{kind}_echo-{e + 1}.nii.gz", data[..., e], affine,
                         **(kw or {}))
            _sidecar(path, side)
            out.append(path)
    return mags, phases


def _argv(mags, phases, labels, *extra) -> list[str]:
    return ["--mag", *map(str, mags), "--phase", *map(str, phases),
            *(["--labels", str(labels)] if labels else []), *extra]


# ------------------------------------------------------------------------------------------
# 0. the reference


def write_reference(phantom, folder) -> list[str]:
    paths = write_nifti(phantom, Path(folder))
    return _argv(paths["mag"], paths["phase"], paths["labels"])


# ------------------------------------------------------------------------------------------
# 1. one 4D magnitude and one 4D phase


def _four_d(phantom, folder: Path, meta: dict | None, mag=None, phase=None, affine=None):
    affine = phantom.affine if affine is None else affine
    mag_path = _save(folder / "mag.nii.gz", phantom.magnitude if mag is None else mag, affine)
    phase_path = _save(folder / "phase.nii.gz", phantom.phase if phase is None else phase, affine)
    if meta is not None:
        _sidecar(mag_path, meta)
        _sidecar(phase_path, meta)
    return mag_path, phase_path


def _four_d_argv(phantom, folder: Path, meta: dict | None, *extra, **four_d) -> list[str]:
    """:func:`_four_d` files (and the patch labels) as a ``qsmkit liver`` command line."""
    m, p = _four_d(phantom, folder, meta, **four_d)
    return _argv([m], [p], _labels(phantom, folder), *extra)


def write_4d_echotime_list(phantom, folder) -> list[str]:
    """BIDS-style ``EchoTime`` holding a list (one per volume)."""
    folder = Path(folder)
    meta = {"EchoTime": [float(t) for t in phantom.echo_times_s],
            "MagneticFieldStrength": phantom.b0_tesla}
    return _four_d_argv(phantom, folder, meta)


def write_4d_echotimes_key(phantom, folder) -> list[str]:
    """``EchoTimes`` (a list), as qsmkit import writes it."""
    folder = Path(folder)
    meta = {"EchoTime": float(phantom.echo_times_s[0]),
            "EchoTimes": [float(t) for t in phantom.echo_times_s],
            "MagneticFieldStrength": phantom.b0_tesla}
    return _four_d_argv(phantom, folder, meta)


def write_4d_command_line(phantom, folder) -> list[str]:
    """No sidecars: echo times and field strength on the command line."""
    folder = Path(folder)
    return _four_d_argv(phantom, folder, None, "--echo-times",
                        ",".join(f"{t:g}" for t in phantom.echo_times_s),
                        "--b0", f"{phantom.b0_tesla:g}")


def write_5d_echoes(phantom, folder) -> list[str]:
    """Echoes along the NIfTI's fifth axis (X, Y, Z, 1, E), as some converters store them."""
    folder = Path(folder)
    meta = {"EchoTime": [float(t) for t in phantom.echo_times_s],
            "MagneticFieldStrength": phantom.b0_tesla}
    return _four_d_argv(phantom, folder, meta, mag=phantom.magnitude[:, :, :, None, :],
                        phase=phantom.phase[:, :, :, None, :])


# ------------------------------------------------------------------------------------------
# 2. integer and degree phase, integer magnitude


def siemens_phase(phase_rad) -> np.ndarray:
    """Radians -> Siemens signed 12-bit values -4096..4095 (-pi..pi)."""
    value = np.round(np.asarray(phase_rad, float) * 4096.0 / np.pi)
    return np.where(value > 4095, value - 8192, value).astype(np.int16)


def uint12_phase(phase_rad) -> np.ndarray:
    """Radians -> unsigned 12-bit 0..4095 (-pi -> 0)."""
    value = np.round((np.asarray(phase_rad, float) + np.pi) * 4096.0 / (2 * np.pi))
    return (value % 4096).astype(np.uint16)


def write_phase_siemens_int16(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, siemens_phase(phantom.phase))
    return _argv(mags, phases, _labels(phantom, folder))


def write_phase_siemens_scaled(phantom, folder) -> list[str]:
    """Raw 0..4095 stored as uint16 with scl_slope 2, scl_inter -4096 (dcm2niix style)."""
    folder = Path(folder)
    raw = ((siemens_phase(phantom.phase).astype(np.int32) + 4096) // 2).astype(np.uint16)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, raw,
                             phase_kw={"slope": 2.0, "inter": -4096.0, "dtype": np.uint16})
    return _argv(mags, phases, _labels(phantom, folder))


def write_phase_uint12(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, uint12_phase(phantom.phase),
                             phase_kw={"dtype": np.uint16})
    return _argv(mags, phases, _labels(phantom, folder))


def write_phase_int16_radian_slope(phantom, folder) -> list[str]:
    """Siemens integers with scl_slope pi/4096: the file reads back as radians."""
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, siemens_phase(phantom.phase),
                             phase_kw={"slope": np.pi / 4096, "inter": 0.0, "dtype": np.int16})
    return _argv(mags, phases, _labels(phantom, folder))


def write_phase_degrees(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude,
                             np.rad2deg(phantom.phase).astype(np.float32))
    return _argv(mags, phases, _labels(phantom, folder))


def write_magnitude_int16_slope(phantom, folder) -> list[str]:
    folder = Path(folder)
    slope = float(phantom.magnitude.max()) / 32000.0
    stored = np.round(phantom.magnitude / slope).astype(np.int16)
    mags, phases = _per_echo(phantom, folder, stored, phantom.phase,
                             mag_kw={"slope": slope, "inter": 0.0, "dtype": np.int16})
    return _argv(mags, phases, _labels(phantom, folder))


# ------------------------------------------------------------------------------------------
# 3. echo times in milliseconds


def write_echo_times_ms_sidecar(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phantom.phase,
                             echo_times=np.asarray(phantom.echo_times_s) * 1e3)
    return _argv(mags, phases, _labels(phantom, folder))


def write_echo_times_ms_list(phantom, folder) -> list[str]:
    folder = Path(folder)
    meta = {"EchoTime": [float(t) * 1e3 for t in phantom.echo_times_s],
            "MagneticFieldStrength": phantom.b0_tesla}
    return _four_d_argv(phantom, folder, meta)


def write_echo_times_ms_command_line(phantom, folder) -> list[str]:
    folder = Path(folder)
    return _four_d_argv(phantom, folder, None, "--echo-times",
                        ",".join(f"{1e3 * t:g}" for t in phantom.echo_times_s),
                        "--b0", f"{phantom.b0_tesla:g}")


def write_echo_times_submillisecond_as_seconds(phantom, folder) -> list[str]:
    """Echo times of 0.12-0.72 "s": a short-echo protocol's milliseconds (all below 1, so not
    recognisable by their size) given as seconds."""
    folder = Path(folder)
    return _four_d_argv(phantom, folder, None, "--echo-times",
                        ",".join(f"{100 * t:g}" for t in phantom.echo_times_s),
                        "--b0", f"{phantom.b0_tesla:g}")


# ------------------------------------------------------------------------------------------
# 4. missing or inconsistent pieces


def write_no_field_strength(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phantom.phase,
                             meta={"MagneticFieldStrength": None})
    return _argv(mags, phases, _labels(phantom, folder))


def write_echo_count_mismatch_files(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phantom.phase[..., :-1])
    return _argv(mags, phases, _labels(phantom, folder))


def write_echo_count_mismatch_4d(phantom, folder) -> list[str]:
    folder = Path(folder)
    tes = [float(t) for t in phantom.echo_times_s]
    mag_path = _save(folder / "mag.nii.gz", phantom.magnitude, phantom.affine)
    phase_path = _save(folder / "phase.nii.gz", phantom.phase[..., :-1], phantom.affine)
    _sidecar(mag_path, {"EchoTime": tes, "MagneticFieldStrength": phantom.b0_tesla})
    _sidecar(phase_path, {"EchoTime": tes[:-1], "MagneticFieldStrength": phantom.b0_tesla})
    return _argv([mag_path], [phase_path], _labels(phantom, folder))


def write_labels_other_shape(phantom, folder) -> list[str]:
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phantom.phase)
    half = phantom.patch_labels[::2, ::2, :]
    affine = phantom.affine.copy()
    affine[:3, :3] = affine[:3, :3] @ np.diag([2.0, 2.0, 1.0])
    return _argv(mags, phases, _labels(phantom, folder, affine, half))


def write_labels_flipped_grid(phantom, folder) -> list[str]:
    """Labels in the same place in the world, stored with the first axis flipped."""
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phantom.phase)
    affine = flip_affine(phantom.affine, phantom.patch_labels.shape, (0,))
    return _argv(mags, phases, _labels(phantom, folder, affine, phantom.patch_labels[::-1]))


def write_labels_shifted_grid(phantom, folder) -> list[str]:
    """Labels of the same shape on a grid shifted by 10 mm: not the data's grid."""
    folder = Path(folder)
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phantom.phase)
    affine = phantom.affine.copy()
    affine[0, 3] += 10.0
    return _argv(mags, phases, _labels(phantom, folder, affine))


def write_nan_magnitude(phantom, folder) -> list[str]:
    """NaN in the air outside the body (as masked or resampled data carry it)."""
    folder = Path(folder)
    mag = phantom.magnitude.copy()
    mag[:3] = np.nan
    mags, phases = _per_echo(phantom, folder, mag, phantom.phase)
    return _argv(mags, phases, _labels(phantom, folder))


def write_nan_phase(phantom, folder) -> list[str]:
    folder = Path(folder)
    phase = phantom.phase.copy()
    phase[:3] = np.nan
    mags, phases = _per_echo(phantom, folder, phantom.magnitude, phase)
    return _argv(mags, phases, _labels(phantom, folder))


# ------------------------------------------------------------------------------------------
# 5. other axis orders and orientations


def flip_affine(affine, shape, axes) -> np.ndarray:
    """The affine of an array flipped along ``axes`` that keeps every voxel's world place."""
    out = np.asarray(affine, float).copy()
    for a in axes:
        out[:3, 3] += out[:3, a] * (shape[a] - 1)
        out[:3, a] = -out[:3, a]
    return out


def permute_affine(affine, order) -> np.ndarray:
    """The affine of ``np.transpose(data, order)`` that keeps every voxel's world place."""
    out = np.asarray(affine, float).copy()
    out[:3, :3] = out[:3, :3][:, list(order)]
    return out


def write_lps_flipped(phantom, folder) -> list[str]:
    """First two axes stored flipped (LPS-like voxel order), affine saying so."""
    folder = Path(folder)
    aff = flip_affine(phantom.affine, phantom.magnitude.shape, (0, 1))
    mag, phase = phantom.magnitude[::-1, ::-1], phantom.phase[::-1, ::-1]
    mags, phases = _per_echo(phantom, folder, mag, phase, affine=aff)
    return _argv(mags, phases, _labels(phantom, folder, aff, phantom.patch_labels[::-1, ::-1]))


def write_slice_axis_first(phantom, folder) -> list[str]:
    """Voxel order (z, x, y): the slice axis (and B0) first, the affine saying so."""
    folder = Path(folder)
    order = (2, 0, 1)
    aff = permute_affine(phantom.affine, order)
    mag = np.transpose(phantom.magnitude, order + (3,))
    phase = np.transpose(phantom.phase, order + (3,))
    mags, phases = _per_echo(phantom, folder, mag, phase, affine=aff)
    return _argv(mags, phases,
                 _labels(phantom, folder, aff, np.transpose(phantom.patch_labels, order)))


# ------------------------------------------------------------------------------------------
# 6. BIDS


def write_bids_per_echo(phantom, folder) -> list[str]:
    """sub-x/anat/sub-x_echo-N_part-{mag,phase}_MEGRE.nii.gz with sidecars."""
    folder = Path(folder)
    anat = folder / "bids" / "sub-x" / "anat"
    (folder / "bids" / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "bids" / "dataset_description.json").write_text(
        json.dumps({"Name": "abdomen", "BIDSVersion": "1.9.0"}))
    for e, te in enumerate(phantom.echo_times_s):
        for part, data in (("mag", phantom.magnitude), ("phase", phantom.phase)):
            path = _save(anat / f"sub-x_echo-{e + 1}_part-{part}_MEGRE.nii.gz", data[..., e],
                         phantom.affine)
            _sidecar(path, {"EchoTime": float(te), "MagneticFieldStrength": phantom.b0_tesla,
                            **({"Units": "rad"} if part == "phase" else {})})
    return [str(folder / "bids" / "sub-x"), "--labels", str(_labels(phantom, folder))]


def write_bids_4d(phantom, folder) -> list[str]:
    """sub-x/anat/sub-x_part-{mag,phase}_MEGRE.nii.gz, 4D, EchoTime lists."""
    folder = Path(folder)
    anat = folder / "bids" / "sub-x" / "anat"
    for part, data in (("mag", phantom.magnitude), ("phase", phantom.phase)):
        path = _save(anat / f"sub-x_part-{part}_MEGRE.nii.gz", data, phantom.affine)
        _sidecar(path, {"EchoTime": [float(t) for t in phantom.echo_times_s],
                        "MagneticFieldStrength": phantom.b0_tesla})
    return [str(folder / "bids" / "sub-x"), "--labels", str(_labels(phantom, folder))]


def write_bids_no_field_strength_cli(phantom, folder) -> list[str]:
    """BIDS without MagneticFieldStrength, the field given by --b0."""
    folder = Path(folder)
    anat = folder / "bids" / "sub-x" / "anat"
    for e, te in enumerate(phantom.echo_times_s):
        for part, data in (("mag", phantom.magnitude), ("phase", phantom.phase)):
            path = _save(anat / f"sub-x_echo-{e + 1}_part-{part}_MEGRE.nii.gz", data[..., e],
                         phantom.affine)
            _sidecar(path, {"EchoTime": float(te)})
    return [str(folder / "bids" / "sub-x"), "--b0", f"{phantom.b0_tesla:g}",
            "--labels", str(_labels(phantom, folder))]


def write_bids_echo_mismatch(phantom, folder) -> list[str]:
    """BIDS with one phase echo missing."""
    folder = Path(folder)
    anat = folder / "bids" / "sub-x" / "anat"
    for e, te in enumerate(phantom.echo_times_s):
        for part, data in (("mag", phantom.magnitude), ("phase", phantom.phase)):
            if part == "phase" and e == len(phantom.echo_times_s) - 1:
                continue
            path = _save(anat / f"sub-x_echo-{e + 1}_part-{part}_MEGRE.nii.gz", data[..., e],
                         phantom.affine)
            _sidecar(path, {"EchoTime": float(te), "MagneticFieldStrength": phantom.b0_tesla})
    return [str(folder / "bids" / "sub-x"), "--labels", str(_labels(phantom, folder))]


def make_oblique_phantom(tilt_deg: float = 15.0, **kwargs):
    """The abdomen phantom acquired on slices tilted by ``tilt_deg`` about the first voxel axis
    (an oblique axial slab): B0 (world z) lies at ``tilt_deg`` from the slab normal, along
    ``(0, sin, cos)`` in voxel coordinates, and the affine's rotation says so. The field is
    simulated with that direction (the phantom's own kernel, its ``b0_dir`` argument)."""
    tilt = np.deg2rad(tilt_deg)
    rot = np.array([[1.0, 0.0, 0.0],
                    [0.0, np.cos(tilt), -np.sin(tilt)],
                    [0.0, np.sin(tilt), np.cos(tilt)]])
    b0_voxel = rot.T @ np.array([0.0, 0.0, 1.0])
    original = independent_abdomen.dipole_field_ppm
    independent_abdomen.dipole_field_ppm = functools.partial(original, b0_dir=tuple(b0_voxel))
    try:
        phantom = independent_abdomen.make_abdomen_phantom(**kwargs)
    finally:
        independent_abdomen.dipole_field_ppm = original
    affine = phantom.affine.copy()
    affine[:3, :3] = rot @ affine[:3, :3]
    affine[:3, 3] = rot @ affine[:3, 3]
    return dataclasses.replace(phantom, affine=affine)


def axial_twin(phantom):
    """The same data with the oblique rotation dropped from the affine (B0 wrongly along the
    slab normal): what a reader ignoring obliquity would see."""
    affine = np.diag([*phantom.voxel_mm, 1.0])
    affine[:3, 3] = -(np.array(phantom.magnitude.shape[:3]) - 1) / 2.0 * np.array(phantom.voxel_mm)
    return dataclasses.replace(phantom, affine=affine)


def write_bids_echo_times_ms(phantom, folder) -> list[str]:
    """BIDS with EchoTime in milliseconds."""
    folder = Path(folder)
    anat = folder / "bids" / "sub-x" / "anat"
    for e, te in enumerate(phantom.echo_times_s):
        for part, data in (("mag", phantom.magnitude), ("phase", phantom.phase)):
            path = _save(anat / f"sub-x_echo-{e + 1}_part-{part}_MEGRE.nii.gz", data[..., e],
                         phantom.affine)
            _sidecar(path, {"EchoTime": 1e3 * float(te),
                            "MagneticFieldStrength": phantom.b0_tesla})
    return [str(folder / "bids" / "sub-x"), "--labels", str(_labels(phantom, folder))]


def write_bids_real_imag(phantom, folder) -> list[str]:
    """BIDS with the real and imaginary parts (part-real, part-imag) instead of mag/phase."""
    folder = Path(folder)
    anat = folder / "bids" / "sub-x" / "anat"
    signal = phantom.magnitude * np.exp(1j * phantom.phase)
    for e, te in enumerate(phantom.echo_times_s):
        for part, data in (("real", signal.real), ("imag", signal.imag)):
            path = _save(anat / f"sub-x_echo-{e + 1}_part-{part}_MEGRE.nii.gz",
                         data[..., e].astype(np.float32), phantom.affine)
            _sidecar(path, {"EchoTime": float(te), "MagneticFieldStrength": phantom.b0_tesla})
    return [str(folder / "bids" / "sub-x"), "--labels", str(_labels(phantom, folder))]


def write_bids_dataset_root(phantom, folder) -> list[str]:
    """The BIDS dataset root (one subject) instead of the subject folder."""
    argv = write_bids_per_echo(phantom, folder)
    return [str(Path(argv[0]).parent), *argv[1:]]


def write_echoes_shuffled(phantom, folder) -> list[str]:
    """Per-echo files named on the command line in another order (their sidecars say which)."""
    argv = write_reference(phantom, folder)
    n = len(phantom.echo_times_s)
    mags, phases = argv[1:1 + n], argv[2 + n:2 + 2 * n]
    order = [3, 0, 5, 1, 4, 2][:n] if n == 6 else list(range(n))[::-1]
    return ["--mag", *[mags[i] for i in order], "--phase", *[phases[i] for i in order[::-1]],
            *argv[2 + 2 * n:]]


ENCODINGS = {name[len("write_"):]: fn for name, fn in dict(globals()).items()
             if name.startswith("write_") and callable(fn) and name != "write_nifti"}

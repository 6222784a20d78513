"""``qsmkit simulate``: head (or liver) phantom and multi-echo GRE data with their ground truth.

Plain output folder::

    mag.nii.gz, phase.nii.gz        (X, Y, Z, E) magnitude and phase (radians)
    mag.json, phase.json            dcm2niix-style sidecars (EchoTime, EchoTimes, B0, ...)
    chi.nii.gz                      true susceptibility (ppm, relative to water)
    mask.nii.gz, labels.nii.gz      brain mask, tissue labels; labels.tsv (index, name, chi_ppm)
    field_hz.nii.gz                 total field = local + background (+ shim), Hz
    local_field_hz.nii.gz           field of chi inside the brain mask, Hz
    background_field_hz.nii.gz      the rest of the field, Hz
    shim_field_hz.nii.gz            second-order shim field, Hz (unless --no-shim)
    phase_offset_rad.nii.gz         receive-phase offset common to all echoes
    r2star.nii.gz                   true R2* at the simulated field strength, s^-1
    phantom.json, qsmkit.json       simulation parameters, lesions and veins; provenance

With ``--bids SUBJECT`` the folder becomes a BIDS dataset with ``MEGRE`` files and the truth
under ``derivatives/truth``. To add another subject to a dataset simulated before, run again
with a new ``--bids`` label and ``--force``: ``participants.tsv`` is merged.
"""

from __future__ import annotations

import argparse

from qsmkit.cli.common import add_force

COMMAND = "simulate"
HELP = "simulate multi-echo GRE data of the head phantom (or liver) with ground truth"
DESCRIPTION = __doc__
ORDER = 20

HEAD_DEFAULTS = {
    "shape": (128, 128, 128),
    "voxel_size": (1.5, 1.5, 1.5),
    "echo_times_s": (0.004, 0.008, 0.012, 0.016, 0.020),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", help="output folder (created; never overwritten without --force)")
    parser.add_argument(
        "--shape", default=None, help="grid size X,Y,Z (default 128,128,128; liver 64,48,16)"
    )
    parser.add_argument(
        "--voxel-size", default=None, help="voxel size in mm (default 1.5,1.5,1.5; liver 6,6,6)"
    )
    parser.add_argument("--b0", type=float, default=3.0, help="field strength in tesla (3.0)")
    parser.add_argument(
        "--echo-times",
        default=None,
        help="echo times in seconds (default 0.004,0.008,0.012,0.016,0.020)",
    )
    parser.add_argument(
        "--b0-dir",
        default="0,0,1",
        help="B0 direction in voxel coordinates, e.g. 0,0.34,0.94 for an "
        "oblique acquisition (default 0,0,1)",
    )
    parser.add_argument(
        "--snr",
        type=float,
        default=100.0,
        help="first-echo brain magnitude over noise sigma (default 100; inf: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--hct", type=float, default=0.42, help="haematocrit of the veins (0.42)")
    parser.add_argument(
        "--yv", type=float, default=0.60, help="venous oxygen saturation of the veins (0.60)"
    )
    parser.add_argument(
        "--kernel",
        choices=("ispace", "kspace"),
        default="ispace",
        help="dipole kernel of the forward field: ispace (accurate at any B0 direction, "
        "default) or kspace (the kernel of the inversions; rings for oblique B0)",
    )
    parser.add_argument("--no-shim", action="store_true", help="leave the background unshimmed")
    parser.add_argument(
        "--no-lesions",
        action="store_true",
        help="head phantom without microbleeds, calcifications and MS lesions",
    )
    parser.add_argument(
        "--body", choices=("head", "liver"), default="head", help="which phantom to simulate (head)"
    )
    parser.add_argument(
        "--bids",
        metavar="SUBJECT",
        default=None,
        help="write a BIDS dataset with this subject label instead of plain files",
    )
    add_force(parser)


def _options(args):
    import numpy as np

    from qsmkit.cli.common import parse_echo_times, parse_floats, parse_vector3
    from qsmkit.errors import InputError

    # The liver phantom has its own defaults (qsmkit.phantom.liver); None leaves them be.
    defaults = {k: None for k in HEAD_DEFAULTS} if args.body == "liver" else HEAD_DEFAULTS
    if args.shape is None:
        shape = defaults["shape"]
    else:
        values = parse_floats(args.shape, "--shape")
        if len(values) != 3 or any(v != int(v) or v < 1 for v in values):
            raise InputError(f"--shape needs three positive integers, got {args.shape!r}")
        shape = tuple(int(v) for v in values)
    voxel_size = (
        defaults["voxel_size"]
        if args.voxel_size is None
        else parse_vector3(args.voxel_size, "--voxel-size")
    )
    echo_times = (
        defaults["echo_times_s"] if args.echo_times is None else parse_echo_times(args.echo_times)
    )
    b0_dir = np.asarray(parse_vector3(args.b0_dir, "--b0-dir"), dtype=float)
    if not np.all(np.isfinite(b0_dir)) or np.linalg.norm(b0_dir) == 0:
        raise InputError(f"--b0-dir must be a non-zero vector, got {args.b0_dir!r}")
    b0_dir = b0_dir / np.linalg.norm(b0_dir)
    if not args.snr > 0:
        raise InputError(f"--snr must be positive (inf for no noise), got {args.snr}")
    return {
        "body": args.body,
        "shape": shape,
        "voxel_size": None if voxel_size is None else tuple(float(v) for v in voxel_size),
        "b0_tesla": float(args.b0),
        "echo_times_s": None if echo_times is None else [float(t) for t in echo_times],
        "b0_dir": [float(v) for v in b0_dir],
        "snr": float(args.snr),
        "seed": int(args.seed),
        "hct": float(args.hct),
        "yv": float(args.yv),
        "shim": not args.no_shim,
        "lesions": not args.no_lesions,
        "kernel": args.kernel,
        "bids_subject": args.bids,
    }


def run(args) -> int:
    import logging
    from pathlib import Path

    from qsmkit.cli.common import Timer
    from qsmkit.errors import InputError
    from qsmkit.io.bids import entity_label
    from qsmkit.io.output import staged_output
    from qsmkit.io.provenance import write_provenance

    options = _options(args)
    timer = Timer()
    outdir = Path(args.outdir)
    if options["body"] == "liver":
        if args.bids:
            raise InputError("--bids is available for --body head only")
        try:
            from qsmkit.phantom.liver import write_liver_simulation
        except ImportError as err:
            raise InputError(
                f"the liver phantom is not available in this installation ({err})"
            ) from None
        with staged_output(outdir, force=args.force) as stage:
            with timer("simulate"):
                given = {k: options[k] for k in ("shape", "voxel_size", "echo_times_s")}
                summary = write_liver_simulation(
                    stage,
                    **{k: v for k, v in given.items() if v is not None},
                    b0_tesla=options["b0_tesla"],
                    b0_dir=options["b0_dir"],
                    snr=options["snr"],
                    seed=options["seed"],
                )
            write_provenance(
                stage,
                command="simulate",
                config=options,
                extra={
                    "timings_s": timer.seconds,
                    "b0_tesla": options["b0_tesla"],
                    "echo_times_s": (summary or {}).get("echo_times_s", options["echo_times_s"]),
                    "liver": summary or {},
                },
            )
        logging.getLogger(__name__).info("liver simulation written to %s", outdir)
        print(f"liver simulation written to {outdir}")
        return 0

    from qsmkit.io.output import check_not_overwriting
    from qsmkit.phantom import head_phantom, simulate_gre

    # Fail before the work if the final move would refuse to overwrite.
    if options["bids_subject"] is not None:
        sub = entity_label(options["bids_subject"], "sub", "subject")
        first = f"sub-{sub}/anat/sub-{sub}_echo-1_part-mag_MEGRE.nii.gz"
        check_not_overwriting(
            outdir, [first, "dataset_description.json", "qsmkit.json"], args.force
        )
    else:
        check_not_overwriting(outdir, ["mag.nii.gz", "phase.nii.gz", "qsmkit.json"], args.force)

    with timer("phantom"):
        ph = head_phantom(
            options["shape"],
            options["voxel_size"],
            seed=options["seed"],
            hct=options["hct"],
            yv=options["yv"],
            lesions=options["lesions"],
        )
    with timer("simulate"):
        sim = simulate_gre(
            ph,
            options["echo_times_s"],
            b0_tesla=options["b0_tesla"],
            b0_dir=options["b0_dir"],
            snr=options["snr"],
            seed=options["seed"],
            shim=options["shim"],
            kernel=options["kernel"],
        )
    with staged_output(outdir, force=args.force) as stage:
        with timer("write"):
            if options["bids_subject"] is not None:
                _write_bids(stage, outdir, options["bids_subject"], ph, sim, options)
            else:
                _write_plain(stage, ph, sim, options)
        write_provenance(
            stage,
            command="simulate",
            config=options,
            extra={
                "timings_s": timer.seconds,
                "b0_tesla": sim.b0_tesla,
                "echo_times_s": sim.echo_times_s,
                "b0_dir": sim.b0_dir,
                "noise_sigma": sim.noise_sigma,
            },
        )
    print(
        f"simulated {len(sim.echo_times_s)} echoes on a {'x'.join(map(str, ph.shape))} grid "
        f"into {outdir}"
    )
    return 0


def _phantom_record(ph, sim, options) -> dict:
    from qsmkit.phantom.head import vein_angles_deg

    veins = []
    for vein, theta in zip(
        ph.veins, vein_angles_deg(ph.veins, ph.voxel_size, sim.b0_dir), strict=True
    ):
        veins.append({**vein, "theta_b0_deg": theta})
    return {
        "body": "head",
        "b0_tesla": sim.b0_tesla,
        "echo_times_s": sim.echo_times_s,
        "b0_dir": sim.b0_dir,
        "voxel_size": ph.voxel_size,
        "shape": ph.shape,
        "snr": sim.snr,
        "noise_sigma": sim.noise_sigma,
        "seed": options["seed"],
        "hct": ph.hct,
        "yv": ph.yv,
        "shim": options["shim"],
        "kernel": sim.kernel,
        "chi_reference": "water (CSF = 0 ppm)",
        "lesions": ph.lesions,
        "veins": veins,
        "labels": [{"index": i, "name": n, "chi_ppm": c} for i, n, c in ph.label_table()],
    }


def _labels_tsv(ph) -> str:
    rows = ["index\tname\tchi_ppm"]
    rows += [f"{i}\t{name}\t{chi:.6g}" for i, name, chi in ph.label_table()]
    return "\n".join(rows) + "\n"


def _sidecar(sim, part: str) -> dict:
    kind = "M" if part == "mag" else "P"
    payload = {
        "Manufacturer": "qsmkit-simulator",
        "MagneticFieldStrength": sim.b0_tesla,
        "EchoTime": float(sim.echo_times_s[0]),
        "EchoTimes": [float(t) for t in sim.echo_times_s],
        "EchoTrainLength": int(len(sim.echo_times_s)),
        "ImageType": ["ORIGINAL", "PRIMARY", kind, "ND"],
        "MRAcquisitionType": "3D",
        "SeriesDescription": f"qsmkit head phantom GRE {'magnitude' if part == 'mag' else 'phase'}",
    }
    if part == "phase":
        payload["Units"] = "rad"
    return payload


def _save_all(jobs) -> None:
    """Write NIfTI files concurrently (gzip releases the GIL); ``jobs``: (path, data, kw)."""
    from concurrent.futures import ThreadPoolExecutor

    from qsmkit.io.nifti import save_nifti

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(save_nifti, path, data, **kw) for path, data, kw in jobs]
        for future in futures:
            future.result()


def _write_plain(stage, ph, sim, options) -> None:
    from qsmkit.cli.common import write_json

    affine = sim.affine
    jobs = [
        (stage / "mag.nii.gz", sim.magnitude, {"description": "GRE magnitude"}),
        (stage / "phase.nii.gz", sim.phase, {"description": "GRE phase", "unit": "rad"}),
    ]
    jobs += _truth_jobs(stage, "", ph, sim)
    _save_all([(path, data, {"affine": affine, **kw}) for path, data, kw in jobs])
    write_json(stage / "mag.json", _sidecar(sim, "mag"))
    write_json(stage / "phase.json", _sidecar(sim, "phase"))
    (stage / "labels.tsv").write_text(_labels_tsv(ph))
    write_json(stage / "phantom.json", _phantom_record(ph, sim, options))


_TRUTH_NAMES = {
    # key: (plain name, BIDS derivative suffix)
    "chi": ("chi.nii.gz", "_Chimap.nii.gz"),
    "mask": ("mask.nii.gz", "_desc-brain_mask.nii.gz"),
    "labels": ("labels.nii.gz", "_dseg.nii.gz"),
    "field": ("field_hz.nii.gz", "_desc-total_fieldmap.nii.gz"),
    "local": ("local_field_hz.nii.gz", "_desc-local_fieldmap.nii.gz"),
    "background": ("background_field_hz.nii.gz", "_desc-background_fieldmap.nii.gz"),
    "shim": ("shim_field_hz.nii.gz", "_desc-shim_fieldmap.nii.gz"),
    "offset": ("phase_offset_rad.nii.gz", "_desc-offset_phase.nii.gz"),
    "r2star": ("r2star.nii.gz", "_R2starmap.nii.gz"),
}


def _truth_jobs(folder, prefix: str, ph, sim) -> list:
    """(path, data, save_nifti keywords) of every ground-truth map; BIDS names if prefix."""
    import numpy as np

    def path(key):
        plain, suffix = _TRUTH_NAMES[key]
        return folder / (f"{prefix}{suffix}" if prefix else plain)

    jobs = [
        (path("chi"), ph.chi_ppm, {"description": "true chi", "unit": "ppm"}),
        (path("mask"), ph.brain_mask.astype(np.uint8), {"description": "brain mask"}),
        (path("labels"), ph.labels.astype(np.int16), {"description": "phantom labels"}),
        (path("field"), sim.field_hz, {"description": "total field", "unit": "Hz"}),
        (path("local"), sim.local_field_hz, {"description": "local field", "unit": "Hz"}),
        (
            path("background"),
            sim.background_field_hz,
            {"description": "background field", "unit": "Hz"},
        ),
        (
            path("offset"),
            sim.receive_phase_rad,
            {"description": "receive phase offset", "unit": "rad"},
        ),
        (
            path("r2star"),
            ph.r2star_per_s(sim.b0_tesla),
            {"description": f"true R2* at {sim.b0_tesla:g} T", "unit": "1/s"},
        ),
    ]
    if np.any(sim.shim_field_hz):
        jobs.append((path("shim"), sim.shim_field_hz, {"description": "shim field", "unit": "Hz"}))
    return jobs


def _write_bids(stage, outdir, subject, ph, sim, options) -> None:
    import shutil
    from pathlib import Path

    from qsmkit.cli.common import write_json
    from qsmkit.io.bids import (
        bids_uri,
        entity_label,
        write_bidsignore,
        write_dataset_description,
        write_derivative_description,
        write_megre_subject,
    )

    sub = entity_label(subject, "sub", "subject")
    existing = Path(outdir) / "participants.tsv"
    if existing.is_file():  # adding a subject to a dataset simulated before (with --force)
        shutil.copyfile(existing, stage / "participants.tsv")
    write_dataset_description(stage, name="qsmkit simulated head phantom")
    write_megre_subject(
        stage,
        sub,
        sim.magnitude,
        sim.phase,
        sim.affine,
        sim.echo_times_s,
        sim.b0_tesla,
        manufacturer="qsmkit-simulator",
    )
    write_bidsignore(stage, ["qsmkit.json"])
    (stage / "README.md").write_text(RAW_README)
    truth_root = stage / "derivatives" / "truth"
    write_derivative_description(
        truth_root,
        name="qsmkit phantom ground truth",
        description="ground truth of the simulated head phantom (qsmkit simulate)",
        source=stage,
        source_is_input=False,
    )
    # Truth maps BIDS has no name for stay beside the standard ones, listed in .bidsignore.
    write_bidsignore(truth_root, TRUTH_BIDSIGNORE)
    (truth_root / "README.md").write_text(TRUTH_README)
    anat = truth_root / f"sub-{sub}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    jobs = _truth_jobs(anat, f"sub-{sub}", ph, sim)
    _save_all([(path, data, {"affine": sim.affine, **kw}) for path, data, kw in jobs])
    (anat / f"sub-{sub}_dseg.tsv").write_text(_labels_tsv(ph))
    for name, units in (("total", "Hz"), ("local", "Hz"), ("background", "Hz"), ("shim", "Hz")):
        image = anat / f"sub-{sub}_desc-{name}_fieldmap.nii.gz"
        if image.exists():
            write_json(
                image.with_name(image.name.replace(".nii.gz", ".json")),
                {"Units": units, "Description": f"{name} field of the phantom"},
            )
    # The truth shares the grid of the raw images: their first magnitude is the reference.
    grid = bids_uri(
        stage / f"sub-{sub}" / "anat" / f"sub-{sub}_echo-1_part-mag_MEGRE.nii.gz", stage, "raw"
    )
    for suffix, sidecar in _truth_sidecars(grid, sim.b0_tesla).items():
        write_json(anat / f"sub-{sub}_{suffix}.json", sidecar)
    write_json(anat / f"sub-{sub}_phantom.json", _phantom_record(ph, sim, options))


RAW_README = """\
# qsmkit simulated head phantom

Multi-echo gradient-echo (`MEGRE`) magnitude and phase of a numerical head phantom, written by
`qsmkit simulate --bids` (settings and provenance in `qsmkit.json`, listed in `.bidsignore`).
The ground truth (susceptibility, R2*, brain mask, tissue labels, fields) of every subject is
in `derivatives/truth/`.
"""

# Truth files without a BIDS suffix (field maps in Hz outside fmap/, the phase offset, the
# phantom record): the validator is told to skip them.
TRUTH_BIDSIGNORE = ("*_fieldmap.nii.gz", "*_fieldmap.json", "*_desc-offset_phase.nii.gz",
                    "*_phantom.json")

TRUTH_README = """\
# Ground truth of the qsmkit head phantom

Written by `qsmkit simulate --bids`; each `sub-<label>/anat/` holds, on the grid of the raw
`MEGRE` images:

- `_Chimap.nii.gz`: true susceptibility, ppm, relative to water (CSF 0 ppm), whole head
- `_R2starmap.nii.gz`: true R2* (1/s) at the simulated field strength
- `_desc-brain_mask.nii.gz`: brain mask (Type Brain)
- `_dseg.nii.gz` / `_dseg.tsv`: tissue labels, their names and true chi (ppm)
- `_desc-{total,local,background,shim}_fieldmap.nii.gz`: fields in Hz (total = local +
  background + shim), `_desc-offset_phase.nii.gz`: receive-phase offset (rad),
  `_phantom.json`: simulation parameters, lesions and veins. BIDS has no name for these
  outside `fmap/`; `.bidsignore` lists them.
"""


def _truth_sidecars(grid_uri: str, b0_tesla: float) -> dict[str, dict]:
    """Sidecars of the standard truth maps (BIDS derivatives: masks, segmentations, qMRI)."""
    return {
        "Chimap": {
            "Units": "ppm",
            "Description": "true susceptibility relative to water (CSF 0 ppm), whole head",
            "SkullStripped": False,
            "SpatialReference": grid_uri,
        },
        "R2starmap": {
            "Units": "1/s",
            "Description": f"true R2* at {b0_tesla:g} T, whole head",
            "SkullStripped": False,
            "SpatialReference": grid_uri,
        },
        "desc-brain_mask": {
            "Type": "Brain",
            "Description": "brain of the phantom: tissue, deep grey matter, ventricles, "
            "lesions and veins",
            "SpatialReference": grid_uri,
        },
        "dseg": {
            "Description": "tissue labels of the phantom; dseg.tsv gives name and true chi",
            "SpatialReference": grid_uri,
            "chi_ppm": {"Description": "true susceptibility of the tissue", "Units": "ppm"},
        },
    }

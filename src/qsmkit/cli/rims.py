"""``qsmkit rims``: multiple-sclerosis paramagnetic rim lesions."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "rims"
ORDER = 52
HELP = "MS lesions: paramagnetic rim (rim+/rim-) per lesion, patient PRL count"
DESCRIPTION = """For each lesion of LESION_MASK (binary: one lesion per connected component,
or integer labels; e.g. a FLAIR lesion segmentation registered to the chi grid) measure chi in
the core, the rim and the surrounding white matter, the fraction of the lesion edge that is
paramagnetic on each slice and on how many consecutive slices it holds, and classify rim+ when
the rim covers >= 2/3 of the edge on >= 2 consecutive slices around a non-paramagnetic core
(consensus criteria, Bagnato et al. Brain 2024). Patients with >= 4 rim+ lesions are flagged
(Absinta et al. JAMA Neurol 2019).

Example:
  qsmkit rims run/chi.nii.gz flair_lesions_in_gre.nii.gz --mask run/mask.nii.gz -o rims.tsv

Which map is classified: total-variation-type inversions (whtv, the default of qsmkit run;
tv, nltv, tgv, medi) flatten rims about 1 mm thick into the lesion core. When CHI comes from
such a run (its qsmkit.json says so) and the run folder holds local_field_hz.nii.gz and
mask.nii.gz, the rims are classified on a map re-inverted from that local field with iLSQR
(the inversion of --preset rims; seconds), written as OUTPUT_chi_ilsqr.nii.gz and named in
OUTPUT.json (summary.classified_map). --use-given-chi classifies CHI as given. Without the
local field a warning says that rim- calls on a TV-type map are not trustworthy.

Writes OUTPUT (id, x, y, z, core_ppm, rim_ppm, rim_fraction, rim_slices, class, ...; chi
relative to the surrounding white matter), OUTPUT.json and OUTPUT.png."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chi", help="chi map (NIfTI, ppm)")
    parser.add_argument("lesion_mask", help="lesion mask or lesion labels (NIfTI)")
    parser.add_argument("-o", "--output", required=True, help="output table (.tsv)")
    parser.add_argument("--mask", help="brain mask (keeps the white-matter shell inside)")
    parser.add_argument("--slice-axis", type=int, default=2, choices=(0, 1, 2),
                        help="array axis across the slices read (2: axial, default)")
    parser.add_argument("--threshold", type=float, default=None, metavar="PPM",
                        help="rim threshold over white matter (default: max(0.015, 1.5 SD "
                        "of white matter))")
    parser.add_argument("--min-fraction", type=float, default=2.0 / 3.0,
                        help="fraction of the edge that must be paramagnetic (2/3)")
    parser.add_argument("--min-slices", type=int, default=2,
                        help="consecutive slices required (2)")
    parser.add_argument("--use-given-chi", action="store_true",
                        help="classify CHI as given, even when it comes from a TV-type "
                        "inversion and the run's local field could be re-inverted with iLSQR")
    add_force(parser)


def run(args) -> int:
    from qsmkit.analysis import format_tsv, rims
    from qsmkit.cli.common import load_chi, load_mask, print_table, write_analysis_outputs
    from qsmkit.io.nifti import load_nifti

    given_chi, affine, voxel_size = load_chi(args.chi)
    lesion_mask, _, _ = load_nifti(args.lesion_mask, dtype=float)
    if lesion_mask.ndim == 4 and lesion_mask.shape[3] == 1:
        lesion_mask = lesion_mask[..., 0]
    from qsmkit.cli.common import check_labels

    check_labels(lesion_mask, args.lesion_mask, integers=False)
    brain = load_mask(args.mask, given_chi.shape) if args.mask else None
    chi, classified, note = _map_to_classify(args, given_chi, affine, voxel_size)
    result = rims.rim_lesions(chi, lesion_mask, voxel_size, brain_mask=brain,
                              slice_axis=args.slice_axis, rim_threshold_ppm=args.threshold,
                              min_fraction=args.min_fraction, min_slices=args.min_slices)
    result.summary["classified_map"] = classified
    if note:
        result.summary["inversion_note"] = note
    payload = {"summary": result.summary, "parameters": result.parameters,
               "rows": result.rows,
               "slices": {str(k): v for k, v in result.slices.items()}}
    figure = rims.plot_rims(result, chi, lesion_mask, slice_axis=args.slice_axis,
                            affine=affine)
    extra = {}
    if classified["file"] != str(args.chi):
        from qsmkit.io.nifti import save_nifti

        extra[Path(classified["file"]).name] = lambda path: save_nifti(
            path, chi, affine, description=f"susceptibility ({classified['inversion']})",
            unit="ppm")
    paths = write_analysis_outputs(
        args.output, format_tsv(result.rows, rims.RIM_COLUMNS), payload, figure,
        command="rims", inputs=[p for p in (args.chi, args.lesion_mask, args.mask,
                                            *classified.get("inputs", ())) if p],
        force=args.force, extra_files=extra,
    )
    print_table(result.rows, ("id", "x", "y", "z", "core_ppm", "rim_ppm", "rim_fraction",
                              "rim_slices", "class"))
    s = result.summary
    print(f"rim+ {s['n_rim_positive']} of {s['n_lesions']} lesions; PRL flag (>= "
          f"{rims.PRL_COUNT_FLAG}): {'YES' if s['prl_flag'] else 'no'}; threshold "
          f"{s['threshold_ppm']:.3f} ppm")
    print(f"classified: {classified['file']} ({classified['how']})")
    if note:
        print(f"{'note' if classified['reinverted'] else 'warning'}: {note}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _map_to_classify(args, given_chi, affine, voxel_size):
    """(chi to classify, a record of which map it is, note or None).

    A chi map from a TV-type inversion is replaced by an iLSQR map re-inverted from the
    local field saved beside it (``qsmkit run`` folders), unless ``--use-given-chi``.
    """
    from qsmkit.analysis import rims
    from qsmkit.cli.common import output_paths

    record = _run_record(args.chi)
    method = _inversion_of(record)
    given = {"file": str(args.chi), "inversion": method, "reinverted": False,
             "how": f"as given; inversion {method or 'not recorded'}"}
    if method not in rims.SMOOTHING_INVERSIONS:
        return given_chi, given, None
    if args.use_given_chi:
        given["how"] += " (--use-given-chi)"
        return given_chi, given, rims.inversion_note(method)
    loaded = _saved_local_field(Path(args.chi).parent, given_chi.shape, affine)
    if loaded is None:
        given["how"] += "; no local_field_hz.nii.gz and mask.nii.gz beside it to re-invert"
        return given_chi, given, rims.inversion_note(method)
    field_hz, mask, magnitude, r2star, inputs = loaded
    info = record.get("info") if isinstance(record.get("info"), dict) else {}
    b0_dir = info.get("b0_dir_voxel")
    if not (isinstance(b0_dir, list) and len(b0_dir) == 3):
        from qsmkit.geometry import b0_dir_from_affine

        b0_dir = b0_dir_from_affine(affine)
    b0_tesla = _field_strength(record, info)
    if b0_tesla is None:
        given["how"] += "; its qsmkit.json records no field strength to re-invert with"
        return given_chi, given, rims.inversion_note(method)
    reference = (info.get("reference") or {}).get("method") if isinstance(
        info.get("reference"), dict) else None
    chi, done = rims.rim_preserving_chi(
        field_hz, mask, voxel_size, b0_dir=b0_dir, b0_tesla=float(b0_tesla), weight=magnitude,
        reference=reference if reference in ("brain", "csf") else "none",
        r2star_per_s=r2star, magnitude=magnitude)
    tsv = output_paths(args.output)[0]
    name = f"{tsv.stem}_chi_{done['inversion']}.nii.gz"
    classified = {
        "file": str(tsv.with_name(name)), "inversion": done["inversion"],
        "options": done["options"], "reinverted": True,
        "given_chi": str(args.chi), "given_inversion": method,
        "how": (f"re-inverted with {done['inversion']} from {inputs[0]} in {done['seconds']:.1f}"
                f" s; the given chi came from {method}"),
        "reference": done["reference"], "seconds": done["seconds"], "inputs": inputs,
    }
    return chi, classified, rims.inversion_note(method, reinverted=True)


def _saved_local_field(folder: Path, shape, affine):
    """(local field Hz, mask, magnitude or None, R2* or None, paths) of a run folder, or None
    when its local field or mask is missing or on another grid."""
    import numpy as np

    from qsmkit.io.nifti import load_nifti

    def load(name):
        path = folder / name
        if not path.is_file():
            return None
        data, aff, _ = load_nifti(path)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.shape != tuple(shape) or not np.allclose(aff, affine, atol=1e-3):
            return None
        return data

    field, mask = load("local_field_hz.nii.gz"), load("mask.nii.gz")
    if field is None or mask is None or not (mask > 0).any():
        return None
    magnitude, r2star = load("magnitude.nii.gz"), load("r2star.nii.gz")
    inputs = [str(folder / n) for n, d in (("local_field_hz.nii.gz", field),
                                           ("mask.nii.gz", mask), ("magnitude.nii.gz",
                                                                   magnitude))
              if d is not None]
    return (field.astype(np.float32), mask > 0,
            None if magnitude is None else magnitude.astype(np.float32),
            None if r2star is None else r2star.astype(np.float32), inputs)


def _field_strength(record: dict, info: dict) -> float | None:
    """B0 (T) recorded by ``qsmkit run`` (None when absent or not a plausible number)."""
    value = record.get("b0_tesla", info.get("b0_tesla"))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if 0.05 <= value <= 21.2 else None


def _run_record(chi_path) -> dict:
    """qsmkit.json beside CHI ({} if there is none or it is unreadable)."""
    import json

    record = Path(chi_path).with_name("qsmkit.json")
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _inversion_of(record: dict) -> str | None:
    """The inversion method recorded in a run's qsmkit.json (None if there is none)."""
    config = record.get("config", {})
    method = config.get("invert") if isinstance(config, dict) else None
    return method if isinstance(method, str) else None

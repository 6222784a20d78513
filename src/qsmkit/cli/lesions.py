"""``qsmkit lesions``: microbleeds, calcifications and vein mimics on a chi map."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "lesions"
ORDER = 51
HELP = "find focal chi sources: microbleeds (+), calcifications (-), vein mimics"
DESCRIPTION = """Find focal susceptibility sources in a chi map, measure each against a
surrounding shell (mean chi, volume, magnetic moment) and classify it: microbleed
(paramagnetic), calcification (diamagnetic), indeterminate (inside the noise dead zone or of
mixed sign) or vein (tubular, elongated or on the vessel tree).

Example:
  qsmkit lesions run/chi.nii.gz run/mask.nii.gz -o run/lesions.tsv
  qsmkit lesions run/chi.nii.gz run/mask.nii.gz --truth sim/phantom.json -o run/lesions.tsv

Writes OUTPUT (one row per finding: id, x, y, z (centroid, voxel indices), volume_mm3,
mean_ppm, moment_ppm_mm3, class, ...), OUTPUT.json (summary, parameters, evaluation against
--truth: sensitivity, specificity with Wilson intervals, AUC with DeLong interval),
OUTPUT.png and OUTPUT_labels.nii.gz (the region of each finding)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chi", help="chi map (NIfTI, ppm)")
    parser.add_argument("mask", help="brain mask (NIfTI)")
    parser.add_argument("-o", "--output", required=True, help="output table (.tsv)")
    parser.add_argument("--min-contrast", type=float, default=0.25, metavar="PPM",
                        help="smallest |chi - background| that seeds a finding (0.25)")
    parser.add_argument("--max-diameter", type=float, default=10.0, metavar="MM",
                        help="largest focal lesion (10 mm, Greenberg 2009)")
    parser.add_argument("--dead-zone", type=float, default=3.0, metavar="SIGMA",
                        help="|moment| below this many noise SDs is indeterminate (3)")
    parser.add_argument("--edge", type=float, default=0.0, metavar="MM",
                        help="ignore seeds within MM of the mask edge (0)")
    parser.add_argument("--no-vessel-tree", action="store_true",
                        help="do not reject findings touching the segmented veins")
    parser.add_argument("--truth", help="reference lesions: phantom.json of qsmkit simulate, "
                        "or a TSV with kind, x, y, z, radius_mm (and x1, y1, z1 for veins)")
    add_force(parser)


def read_truth(path) -> tuple[list[dict], list[dict]]:
    """(lesions, veins) reference records from phantom.json or a TSV."""
    import json

    from qsmkit.errors import InputError

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read --truth {path}: {err}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"--truth {path} is not valid JSON: {err}") from None
        return list(data.get("lesions", [])), list(data.get("veins", []))
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    header = [h.strip().lower() for h in lines[0].split("\t")]
    if not {"kind", "x", "y", "z", "radius_mm"} <= set(header):
        raise InputError(f"--truth {path} needs columns kind, x, y, z, radius_mm")
    lesions, veins = [], []
    for k, line in enumerate(lines[1:], start=1):
        row = dict(zip(header, line.split("\t"), strict=False))
        try:
            point = [float(row[c]) for c in ("x", "y", "z")]
            radius = float(row["radius_mm"])
            if row["kind"] == "vein":
                end = [float(row[c]) for c in ("x1", "y1", "z1")]
                veins.append({"id": k, "start_vox": point, "end_vox": end, "radius_mm": radius})
            else:
                lesions.append({"id": k, "kind": row["kind"], "center_vox": point,
                                "radius_mm": radius})
        except (KeyError, ValueError):
            raise InputError(f"--truth {path} line {k + 1} cannot be read") from None
    return lesions, veins


def run(args) -> int:
    from qsmkit.analysis import format_tsv, lesions
    from qsmkit.cli.common import (
        load_chi,
        load_mask,
        output_paths,
        print_table,
        write_analysis_outputs,
    )
    from qsmkit.io.nifti import save_nifti

    chi, affine, voxel_size = load_chi(args.chi)
    mask = load_mask(args.mask, chi.shape, affine)
    result = lesions.detect_lesions(
        chi, mask, voxel_size, min_contrast_ppm=args.min_contrast,
        max_diameter_mm=args.max_diameter, dead_zone_sigma=args.dead_zone, edge_mm=args.edge,
        vessel_tree=not args.no_vessel_tree,
    )
    payload = {"summary": result.summary, "parameters": result.parameters,
               "rows": result.rows, "rejected": result.rejected}
    evaluation = None
    if args.truth:
        ref_lesions, ref_veins = read_truth(args.truth)
        evaluation = lesions.evaluate_lesions(result, ref_lesions, ref_veins, voxel_size)
        payload["evaluation"] = evaluation
    tsv_path, _, _ = output_paths(args.output)
    label_name = tsv_path.stem + "_labels.nii.gz"
    figure = lesions.plot_lesions(result, chi, mask)
    inputs = [p for p in (args.chi, args.mask, args.truth) if p]
    paths = write_analysis_outputs(
        args.output, format_tsv(result.rows, lesions.LESION_COLUMNS), payload, figure,
        command="lesions", inputs=inputs, force=args.force,
        extra_files={label_name: lambda p: save_nifti(p, result.finding_labels, affine,
                                                      description="lesion findings")},
    )
    print_table(result.rows, ("id", "x", "y", "z", "volume_mm3", "mean_ppm",
                              "moment_ppm_mm3", "class"))
    counts = result.summary["counts"]
    print("findings: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; not focal (rejected) {result.summary['n_rejected']}")
    if evaluation is not None:
        lo, hi = evaluation["sensitivity_ci"]
        slo, shi = evaluation["specificity_ci"]
        print(f"against --truth: sensitivity {evaluation['sensitivity']:.2f} "
              f"[{lo:.2f}, {hi:.2f}], specificity {evaluation['specificity']:.2f} "
              f"[{slo:.2f}, {shi:.2f}], AUC {evaluation['auc']:.2f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

"""``qsmkit lesions``: microbleeds, calcifications and vein mimics on a chi map."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "lesions"
ORDER = 51
HELP = ("find focal chi sources: microbleeds (+), calcifications (-), vein mimics, "
        "large haemorrhages")
DESCRIPTION = """Find focal susceptibility sources in a chi map, measure each against a
surrounding shell (mean chi, volume, magnetic moment) and classify it: microbleed
(paramagnetic), calcification (diamagnetic), indeterminate (inside the noise dead zone or of
mixed sign), vein (on a tubular structure followed along its course, elongated, or on the
vessel tree), large_hemorrhage (a compact paramagnetic source over 0.5 mL or 10 mm: haematoma,
cavernoma, tumour bleed; reported with its volume and moment), artefact (mask edge, streak,
high echo-fit residual) or not_focal. Every finding is listed with the reason for its class.

Example:
  qsmkit lesions run/chi.nii.gz run/mask.nii.gz -o run/lesions.tsv
  qsmkit lesions run/chi.nii.gz run/mask.nii.gz --truth sim/phantom.json -o run/lesions.tsv

Writes OUTPUT (one row per finding: id, x, y, z (centroid, voxel indices), volume_mm3,
mean_ppm, moment_ppm_mm3, class, ...), OUTPUT.json (summary, parameters, evaluation against
--truth: sensitivity, specificity with Wilson intervals, AUC with DeLong interval),
OUTPUT.png, OUTPUT_labels.nii.gz (the region of each finding) and OUTPUT_thumbnails/ (one PNG
per finding: three orthogonal chi patches with orientation letters)."""


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
    parser.add_argument("--edge-artefact", type=float, default=2.0, metavar="MM",
                        help="findings within MM of the mask edge are artefacts (2)")
    parser.add_argument("--residual", metavar="NIFTI",
                        help="echo-fit residual map (fit_residual.nii.gz of the run); findings "
                        "where it exceeds 3x the brain median are artefacts (strong sources "
                        "raise it too: use on maps with vessel or streak artefacts)")
    parser.add_argument("--no-thumbnails", action="store_true",
                        help="do not write one PNG per finding")
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

    if args.min_contrast <= 0:  # skimage's reconstruction failed on it (issue 16)
        from qsmkit.errors import InputError

        raise InputError(f"--min-contrast must be a positive chi step in ppm, got "
                         f"{args.min_contrast:g}")
    chi, affine, voxel_size = load_chi(args.chi)
    mask = load_mask(args.mask, chi.shape, affine)
    residual_path = args.residual
    residual = None
    if residual_path:
        residual, _, _ = load_chi(residual_path)
        if residual.shape != chi.shape:
            from qsmkit.errors import InputError

            raise InputError(f"--residual {residual_path} has shape {residual.shape}, chi "
                             f"{chi.shape}; give the residual map of the same run")
    result = lesions.detect_lesions(
        chi, mask, voxel_size, min_contrast_ppm=args.min_contrast,
        max_diameter_mm=args.max_diameter, dead_zone_sigma=args.dead_zone, edge_mm=args.edge,
        edge_artefact_mm=args.edge_artefact, residual=residual,
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
    figure = lesions.plot_lesions(result, chi, mask, affine=affine)
    inputs = [p for p in (args.chi, args.mask, args.truth, args.residual) if p]
    extra = {label_name: lambda p: save_nifti(p, result.finding_labels, affine,
                                              description="lesion findings")}
    rows = result.rows
    if not args.no_thumbnails:
        thumbs = tsv_path.stem + "_thumbnails"
        rows = [dict(r, thumbnail=f"{thumbs}/finding_{r['id']:03d}.png") for r in rows]
        payload["rows"] = rows
        extra[thumbs] = lambda folder: _write_thumbnails(folder, result, chi, affine)
    columns = lesions.LESION_COLUMNS + (("thumbnail",) if not args.no_thumbnails else ())
    paths = write_analysis_outputs(
        args.output, format_tsv(rows, columns), payload, figure,
        command="lesions", inputs=inputs, force=args.force, extra_files=extra,
    )
    print_table(result.rows, ("id", "x", "y", "z", "volume_mm3", "mean_ppm",
                              "moment_ppm_mm3", "class", "reason"))
    counts = result.summary["counts"]
    print("findings: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    for big in result.summary["large_hemorrhage"]:
        print(f"ATTENTION: large paramagnetic source #{big['id']} (haematoma, cavernoma or "
              f"tumour bleed?): volume {big['volume_ml']:.2f} mL, moment "
              f"{big['moment_ppm_ml']:.3f} ppm.mL, mean {big['mean_ppm']:+.2f} ppm; "
              "not a microbleed, review the images")
    if evaluation is not None:
        lo, hi = evaluation["sensitivity_ci"]
        slo, shi = evaluation["specificity_ci"]
        print(f"against --truth: sensitivity {evaluation['sensitivity']:.2f} "
              f"[{lo:.2f}, {hi:.2f}], specificity {evaluation['specificity']:.2f} "
              f"[{slo:.2f}, {shi:.2f}], AUC {evaluation['auc']:.2f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _write_thumbnails(folder, result, chi, affine) -> None:
    import matplotlib.pyplot as plt

    from qsmkit.analysis import lesions

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for row in result.rows:
        fig = lesions.plot_thumbnail(row, chi, affine, labels=result.finding_labels)
        fig.savefig(folder / f"finding_{row['id']:03d}.png", dpi=80)
        plt.close(fig)

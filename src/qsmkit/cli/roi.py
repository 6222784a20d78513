"""``qsmkit roi``: chi statistics, iron and z-scores per labelled region.

Writes OUTPUT (TSV, one row per label: label, name, n_voxels, volume_mm3, mean_ppm,
median_ppm, sd_ppm, total_ppm_mm3, iron_mg_per_kg, z, ...), a JSON with the same stem
(summary, reference, parameters, input checksums, rows) and a PNG figure.

The helpers at the end of this module (loading a chi map, writing TSV + JSON + PNG
atomically) are shared by the other analysis commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qsmkit.cli.common import (
    add_force,
    load_chi,
    print_table,
    sibling_lut,
    write_analysis_outputs,
)

COMMAND = "roi"
ORDER = 50
HELP = "regional chi, iron and z-scores per label (FreeSurfer aseg, FSL FIRST, phantom)"
DESCRIPTION = """Statistics of chi per label of a label image on the chi grid.

Examples:
  qsmkit roi run/chi.nii.gz aseg_in_gre.nii.gz --lut FreeSurferColorLUT.txt -o run/roi.tsv
  qsmkit roi run/chi.nii.gz sim/labels.nii.gz --reference csf -o run/roi.tsv

Values are relative to --reference: csf (labels named CSF/ventricle), brain (the brain mask
or all labels), none, or a label number or name; the default 'auto' is csf when such labels
exist, else brain. Iron uses 0.00097 ppm per mg Fe/kg wet tissue (Langkammer et al.,
NeuroImage 2012); z-scores compare that iron with the normative table shipped with qsmkit
(Hallgren & Sourander 1958) or the one given with --normative.
A lookup table named like the label image (labels.nii.gz -> labels.tsv) is used when --lut is
not given; otherwise the FreeSurfer aseg names shipped with qsmkit apply."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chi", help="chi map (NIfTI, ppm), e.g. chi.nii.gz from qsmkit run")
    parser.add_argument("labels", help="label image on the same grid (integers)")
    parser.add_argument("-o", "--output", required=True, help="output table (.tsv)")
    parser.add_argument("--lut", help="lookup table: FreeSurferColorLUT.txt, index/name TSV "
                        "(labels.tsv, dseg.tsv) or JSON")
    parser.add_argument("--reference", default="auto",
                        help="csf, brain, none, or a label number/name (default auto)")
    parser.add_argument("--mask", help="brain mask (restricts every region; defines 'brain')")
    parser.add_argument("--erode", type=float, default=0.0, metavar="MM",
                        help="erode each region by MM before measuring (default 0)")
    parser.add_argument("--normative", help="normative table TSV replacing the shipped one "
                        "(columns name, aliases, quantity, mean, sd, ...)")
    parser.add_argument("--no-z", action="store_true", help="no z-scores")
    parser.add_argument("--iron-factor", type=float, default=None, metavar="PPM_PER_MG_KG",
                        help="chi per iron concentration (default 0.00097)")
    add_force(parser)


def run(args) -> int:
    import numpy as np

    from qsmkit.analysis import format_tsv, iron, roi
    from qsmkit.cli.common import load_mask
    from qsmkit.errors import InputError
    from qsmkit.io.nifti import load_nifti

    chi, affine, voxel_size = load_chi(args.chi)
    labels, _, _ = load_nifti(args.labels, dtype=np.float64)
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    lut_path = Path(args.lut) if args.lut else sibling_lut(Path(args.labels))
    lut = roi.read_lut(lut_path) if lut_path else None
    if lut is not None and args.lut is None:
        # A sibling table may lack numbers the default table knows; merge, sibling first.
        lut = {**roi.default_lut(), **lut}
    mask = load_mask(args.mask, chi.shape, affine) if args.mask else None
    if args.no_z:
        normative = None
    elif args.normative:
        try:
            normative = iron.load_normative(Path(args.normative).read_text())
        except OSError as err:
            raise InputError(f"cannot read --normative {args.normative}: {err}") from None
    else:
        normative = "default"
    options = {}
    if args.iron_factor is not None:
        options["ppm_per_mg_per_kg"] = args.iron_factor
    reference = args.reference
    result = roi.roi_statistics(chi, np.rint(labels).astype(np.int32), voxel_size, lut=lut,
                                reference=reference, mask=mask, erode_mm=args.erode,
                                normative=normative, **options)
    tsv = format_tsv(result.rows, roi.ROI_COLUMNS)
    payload = {"summary": result.summary, "reference": result.reference,
               "parameters": {**result.parameters, "lut": str(lut_path) if lut_path else
                              "qsmkit/data/freesurfer_aseg_lut.tsv",
                              "normative": args.normative or ("none" if args.no_z else
                                                              "qsmkit/data/normative_dgm.tsv")},
               "rows": result.rows}
    inputs = [p for p in (args.chi, args.labels, args.mask, lut_path, args.normative) if p]
    figure = roi.plot_roi(result, chi, labels)
    paths = write_analysis_outputs(args.output, tsv, payload, figure, command="roi",
                                   inputs=inputs, force=args.force)
    print_table(result.rows, ("label", "name", "n_voxels", "mean_ppm", "sd_ppm",
                              "iron_mg_per_kg", "z"))
    print(f"reference: {result.reference['description']} = "
          f"{result.reference['value_ppm']:.4f} ppm")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------- shared by analysis commands



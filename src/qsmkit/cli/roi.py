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
HELP = "regional chi, R2*, iron and z-scores per label (FreeSurfer aseg, FSL FIRST, phantom)"
DESCRIPTION = """Statistics of chi per label of a label image on the chi grid.

Examples:
  qsmkit roi run/chi.nii.gz aseg_in_gre.nii.gz --lut FreeSurferColorLUT.txt -o run/roi.tsv
  qsmkit roi run/chi.nii.gz sim/labels.nii.gz --reference csf -o run/roi.tsv

Values are relative to --reference: csf (labels named CSF/ventricle), brain (the brain mask
or all labels), none (the map's own reference, read from its ChiReference), or a label number
or name; the default 'auto' is csf when such labels exist, else brain. Iron uses 0.00097 ppm
per mg Fe/kg wet tissue (Langkammer et al., NeuroImage 2012).

z-scores: with --age, each nucleus is compared with the age-dependent in-vivo chi norms
(--norms TABLE, or the table shipped with qsmkit), on the norm's own reference region: the
values are re-expressed on it from the CSF labels, the brain mask or the map's ChiReference
(chi.json / qsmkit.json of qsmkit run); z = (x - mu(age)) / sqrt(SD^2 + SE^2). Where that is
impossible z is empty and z_note says why. --normative postmortem (or a TSV) adds the older
post-mortem iron table (Hallgren & Sourander 1958) for regions without an in-vivo norm.

R2*: the r2star.nii.gz beside the chi map (the same run), or --r2star, gives r2star_mean_per_s,
r2star_sd_per_s and r2star_n per region next to chi.
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
    parser.add_argument("--normative", help="post-mortem/user table for z where no in-vivo "
                        "norm applies: 'postmortem' (Hallgren & Sourander 1958, shipped) or a "
                        "TSV (columns name, aliases, quantity, mean, sd, ...)")
    parser.add_argument("--norms", metavar="TABLE", help="in-vivo normative chi table (TSV, "
                        "see qsmkit/data/README.md) replacing the shipped one")
    parser.add_argument("--age", type=float, metavar="YEARS",
                        help="the subject's age, for the age-dependent norms")
    parser.add_argument("--r2star", metavar="R2STAR",
                        help="R2* map (1/s) of the same run (default: r2star.nii.gz beside "
                        "the chi map, when present)")
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
    from qsmkit.cli.common import check_labels

    check_labels(labels, args.labels)
    lut_path = Path(args.lut) if args.lut else sibling_lut(Path(args.labels))
    lut = roi.read_lut(lut_path) if lut_path else None
    if lut is not None and args.lut is None:
        # A sibling table may lack numbers the default table knows; merge, sibling first.
        lut = {**roi.default_lut(), **lut}
    mask = load_mask(args.mask, chi.shape, affine) if args.mask else None
    from qsmkit.analysis import norms as norms_mod
    from qsmkit.io.sidecar import read_chi_reference

    normative = None
    if args.normative and not args.no_z:
        if args.normative.strip().lower() == "postmortem":
            normative = "default"
        else:
            try:
                normative = iron.load_normative(Path(args.normative).read_text())
            except OSError as err:
                raise InputError(f"cannot read --normative {args.normative}: {err}") from None
    if args.no_z:
        norms = None
    else:
        norms = norms_mod.read_norms(args.norms) if args.norms else "default"
    if args.age is not None and not 0 <= args.age <= 120:
        raise InputError(f"--age {args.age} must be in years (0-120)")
    chi_reference, reference_source = read_chi_reference(args.chi)
    r2_path = Path(args.r2star) if args.r2star else Path(args.chi).with_name("r2star.nii.gz")
    r2star = None
    if args.r2star or r2_path.exists():
        r2_data, _, _ = load_nifti(r2_path)
        if r2_data.ndim == 4 and r2_data.shape[3] == 1:
            r2_data = r2_data[..., 0]
        if r2_data.shape != chi.shape:
            if args.r2star:
                raise InputError(f"--r2star {r2_path} has shape {r2_data.shape}, chi has "
                                 f"{chi.shape}; give the R2* map of the same run")
            r2_path = None
        else:
            r2star = r2_data
    else:
        r2_path = None
    options = {}
    if args.iron_factor is not None:
        options["ppm_per_mg_per_kg"] = args.iron_factor
    reference = args.reference
    result = roi.roi_statistics(chi, np.rint(labels).astype(np.int32), voxel_size, lut=lut,
                                reference=reference, mask=mask, erode_mm=args.erode,
                                normative=normative, norms=norms, age_years=args.age,
                                chi_reference=chi_reference, r2star_per_s=r2star, **options)
    tsv = format_tsv(result.rows, roi.ROI_COLUMNS)
    payload = {"summary": result.summary, "reference": result.reference,
               "parameters": {**result.parameters, "lut": str(lut_path) if lut_path else
                              "qsmkit/data/freesurfer_aseg_lut.tsv",
                              "normative": None if args.no_z else args.normative,
                              "norms": "none" if args.no_z else (
                                  args.norms or f"qsmkit/data/{norms_mod.NORMS_RESOURCE}"),
                              "chi_reference_source": reference_source,
                              "r2star": str(r2_path) if r2_path else None},
               "rows": result.rows}
    inputs = [p for p in (args.chi, args.labels, args.mask, lut_path, args.norms, r2_path,
                          None if normative == "default" else args.normative) if p]
    figure = roi.plot_roi(result, chi, labels, affine=affine)
    paths = write_analysis_outputs(args.output, tsv, payload, figure, command="roi",
                                   inputs=inputs, force=args.force)
    shown = ("label", "name", "n_voxels", "mean_ppm", "sd_ppm", "iron_mg_per_kg", "z")
    if r2star is not None:
        shown += ("r2star_mean_per_s", "r2star_sd_per_s")
    print_table(result.rows, shown)
    print(f"reference: {result.reference['description']} = "
          f"{result.reference['value_ppm']:.4f} ppm")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---------------------------------------------------------------- shared by analysis commands



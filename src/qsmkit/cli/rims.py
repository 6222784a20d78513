"""``qsmkit rims``: multiple-sclerosis paramagnetic rim lesions."""

from __future__ import annotations

import argparse

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
    add_force(parser)


def run(args) -> int:
    from qsmkit.analysis import format_tsv, rims
    from qsmkit.cli.common import load_chi, load_mask, print_table, write_analysis_outputs
    from qsmkit.io.nifti import load_nifti

    chi, affine, voxel_size = load_chi(args.chi)
    lesion_mask, _, _ = load_nifti(args.lesion_mask, dtype=float)
    if lesion_mask.ndim == 4 and lesion_mask.shape[3] == 1:
        lesion_mask = lesion_mask[..., 0]
    from qsmkit.cli.common import check_labels

    check_labels(lesion_mask, args.lesion_mask, integers=False)
    brain = load_mask(args.mask, chi.shape) if args.mask else None
    result = rims.rim_lesions(chi, lesion_mask, voxel_size, brain_mask=brain,
                              slice_axis=args.slice_axis, rim_threshold_ppm=args.threshold,
                              min_fraction=args.min_fraction, min_slices=args.min_slices)
    note = rims.inversion_note(_inversion_of(args.chi))
    if note:
        result.summary["inversion_note"] = note
    payload = {"summary": result.summary, "parameters": result.parameters,
               "rows": result.rows,
               "slices": {str(k): v for k, v in result.slices.items()}}
    figure = rims.plot_rims(result, chi, lesion_mask, slice_axis=args.slice_axis,
                            affine=affine)
    paths = write_analysis_outputs(
        args.output, format_tsv(result.rows, rims.RIM_COLUMNS), payload, figure,
        command="rims", inputs=[p for p in (args.chi, args.lesion_mask, args.mask) if p],
        force=args.force,
    )
    print_table(result.rows, ("id", "x", "y", "z", "core_ppm", "rim_ppm", "rim_fraction",
                              "rim_slices", "class"))
    s = result.summary
    print(f"rim+ {s['n_rim_positive']} of {s['n_lesions']} lesions; PRL flag (>= "
          f"{rims.PRL_COUNT_FLAG}): {'YES' if s['prl_flag'] else 'no'}; threshold "
          f"{s['threshold_ppm']:.3f} ppm")
    if note:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _inversion_of(chi_path) -> str | None:
    """The inversion method recorded in qsmkit.json beside CHI (None if there is none)."""
    import json
    from pathlib import Path

    record = Path(chi_path).with_name("qsmkit.json")
    try:
        config = json.loads(record.read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return None
    method = config.get("invert") if isinstance(config, dict) else None
    return method if isinstance(method, str) else None

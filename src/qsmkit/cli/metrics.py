"""``qsmkit metrics``: challenge error metrics of a chi map against a reference, as JSON."""

from __future__ import annotations

import re
from pathlib import Path

from qsmkit.cli.common import add_force

COMMAND = "metrics"
ORDER = 40
HELP = "error metrics of a chi map against a known truth (RMSE, NRMSE, HFEN, SSIM, XSIM...)"
DESCRIPTION = """Compare a susceptibility map with a reference (ground truth) inside a mask.

Prints JSON with RMSE, demeaned NRMSE and HFEN (percent), SSIM and XSIM (see
docs/metrics.md for the definitions and sources). With --labels (an integer segmentation on
the same grid) it adds per-region means and the slope of estimated against true region
means; deep-grey-matter regions (--dgm-labels, or found by name in --lut: caudate, putamen,
pallidum, red nucleus, substantia nigra, subthalamic, dentate) give the RC2 DGM slope.
A calcification (--calc MASK, or labels named "calcification" in --lut) gives the
relative error of its susceptibility moment.

--lut reads a TSV with 'index' and 'name' columns (BIDS dseg.tsv, qsmkit simulate) or a
FreeSurferColorLUT.txt-style list ("index name R G B A").

examples:
  qsmkit metrics chi.nii.gz truth/chi.nii.gz --mask truth/mask.nii.gz
  qsmkit metrics chi.nii.gz truth/chi.nii.gz --mask truth/mask.nii.gz \\
      --labels truth/labels.nii.gz --lut truth/labels.tsv -o metrics.json
"""

DGM_PATTERNS = (
    "caudate", "putamen", "pallid", "red nucleus", "nigra", "subthalamic", "dentate",
)
"""Name fragments (lower case, separators as spaces) of the RC2 deep-grey-matter regions."""

CALC_PATTERN = "calcification"


def add_arguments(parser) -> None:
    parser.add_argument("estimate", metavar="ESTIMATE", help="chi map to evaluate (ppm)")
    parser.add_argument("reference", metavar="REFERENCE", help="true chi map (ppm)")
    parser.add_argument("--mask", required=True, metavar="M", help="evaluation mask NIfTI")
    parser.add_argument("--labels", metavar="L", help="integer label image NIfTI")
    parser.add_argument("--lut", metavar="LUT", help="label names: TSV (index, name) or "
                        "FreeSurfer colour LUT")
    parser.add_argument("--dgm-labels", metavar="N,N,...",
                        help="label numbers of the deep grey matter (default: from --lut names)")
    parser.add_argument("--calc", metavar="CALC", help="calcification mask NIfTI")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="also write the JSON to FILE (.json) or into a folder "
                        "(metrics.json)")
    add_force(parser)


def read_lut(path) -> dict[int, str]:
    """Label number -> name from a TSV with ``index``/``name`` columns or a FreeSurfer LUT."""
    from qsmkit.errors import InputError

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise InputError(f"cannot read label table {path}: {err}") from None
    rows = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise InputError(f"label table {path} is empty")
    header = [h.strip().lower() for h in rows[0].split("\t")]
    names: dict[int, str] = {}
    if "index" in header and "name" in header:
        i_col, n_col = header.index("index"), header.index("name")
        for ln in rows[1:]:
            cells = ln.split("\t")
            try:
                names[int(cells[i_col])] = cells[n_col].strip()
            except (ValueError, IndexError):
                raise InputError(f"bad row in label table {path}: {ln!r}") from None
    else:
        for ln in rows:
            cells = ln.split()
            if len(cells) < 2 or not re.fullmatch(r"-?\d+", cells[0]):
                raise InputError(
                    f"label table {path} must have 'index' and 'name' columns (TSV) or lines "
                    f"'index name ...'; found {ln!r}"
                )
            names[int(cells[0])] = cells[1]
    return names


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", " ", name.lower())


def labels_matching(names: dict[int, str], patterns) -> list[int]:
    """Label numbers whose normalised name contains one of ``patterns``."""
    return sorted(k for k, v in names.items() if any(p in _normalised(v) for p in patterns))


def run(args) -> int:
    import numpy as np

    from qsmkit.cli.common import check_same_grid, load_mask, parse_floats, write_json
    from qsmkit.errors import InputError
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.io.nifti import load_nifti
    from qsmkit.io.output import staged_output
    from qsmkit.io.provenance import sha256_file, to_json
    from qsmkit.metrics import all_metrics

    def load3d(path, what):
        data, aff, _ = load_nifti(path)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(f"{what} {path} must be 3D, got shape {data.shape}")
        return data, aff

    estimate, affine = load3d(args.estimate, "estimate")
    truth, truth_affine = load3d(args.reference, "reference")
    check_same_grid(f"reference {args.reference}", truth_affine, truth.shape, affine,
                    estimate.shape)
    mask = load_mask(args.mask, estimate.shape, affine)
    inputs = [args.estimate, args.reference, args.mask]

    labels = names = None
    if args.labels:
        labels, lab_affine = load3d(args.labels, "labels")
        check_same_grid(f"labels {args.labels}", lab_affine, labels.shape, affine,
                        estimate.shape)
        labels = np.rint(labels).astype(np.int64)
        inputs.append(args.labels)
    if args.lut:
        names = read_lut(args.lut)
        inputs.append(args.lut)

    dgm = None
    if args.dgm_labels:
        if labels is None:
            raise InputError("--dgm-labels needs --labels")
        dgm = [int(round(v)) for v in parse_floats(args.dgm_labels, "--dgm-labels")]
    elif names is not None and labels is not None:
        present = set(np.unique(labels[mask]).tolist())
        dgm = [k for k in labels_matching(names, DGM_PATTERNS) if k in present] or None

    calc = None
    if args.calc:
        calc_data, calc_affine = load3d(args.calc, "calcification mask")
        check_same_grid(f"--calc {args.calc}", calc_affine, calc_data.shape, affine,
                        estimate.shape)
        calc = calc_data > 0.5
        inputs.append(args.calc)
    elif names is not None and labels is not None:
        calc_ids = labels_matching(names, (CALC_PATTERN,))
        if calc_ids and np.isin(labels, calc_ids).any():
            calc = np.isin(labels, calc_ids)

    result = all_metrics(estimate, truth, mask, voxel_size=voxel_size_from_affine(affine),
                         labels=labels, dgm_labels=dgm, calc_mask=calc)
    if dgm is not None:
        result["dgm_labels"] = dgm
    if names is not None and "roi_means_ppm" in result:
        for key, entry in result["roi_means_ppm"].items():
            entry["name"] = names.get(int(key), "")
    from qsmkit import __version__

    result["qsmkit_version"] = __version__
    result["inputs"] = {str(p): sha256_file(p) for p in inputs}
    print(to_json(result))
    if args.output:
        out = Path(args.output)
        folder, name = (out.parent, out.name) if out.suffix == ".json" else (out, "metrics.json")
        with staged_output(folder, force=args.force, protect=[Path(p) for p in inputs]) as stage:
            write_json(stage / name, result)
    return 0

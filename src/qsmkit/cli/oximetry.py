"""``qsmkit oximetry``: veins, venous oxygen saturation, OEF and CMRO2 from a chi map."""

from __future__ import annotations

import argparse

from qsmkit.cli.common import add_force

COMMAND = "oximetry"
ORDER = 53
HELP = "vein segments: Yv, OEF (and CMRO2 with --cbf) from chi"
DESCRIPTION = """Segment veins (Frangi vesselness on chi + threshold + connected components),
trace their centre lines, and convert the centre-line chi of each segment (relative to CSF)
to venous oxygen saturation: dchi = Hct (dchi_oxy + dchi_do (1 - Yv)), dchi_do = 3.39 ppm
(Spees 2001), dchi_oxy = -0.10 ppm (Jain 2012). OEF = (Ya - Yv) / Ya; with --cbf,
CMRO2 = CBF x OEF x CaO2 (umol O2/100 g/min), CaO2 = 1.34 Hb SaO2 + 0.003 PaO2.
Only tubes are veins: a component needs a branch at least 3 diameters long with a round
cross-section (deep grey nuclei are as long as they are wide). Segments with a radius of at
least 1.5 voxels (partial volume) that are such tubes are 'usable'.

Example:
  qsmkit oximetry run/chi.nii.gz run/mask.nii.gz --labels sim/labels.nii.gz --hct 0.42 \\
      --cbf 50 -o run/veins.tsv

Yv needs chi relative to CSF (water). The CSF level is taken, in this order, from
--reference-ppm (the chi of CSF in this map), --csf (a mask: its mean), --labels (labels named
CSF or ventricle: their mean), the map's own ChiReference (chi.json or the run's qsmkit.json,
written by qsmkit run: CSF-referenced maps need nothing, others carry the median chi of the
ventricular CSF found at run time from R2* < 5 1/s), or ventricular CSF found now from the
r2star.nii.gz beside the map (qsmkit.reference.find_csf). Without any of these the command
stops and says which option to pass; it never assumes a reference.
With the local field (--local-field; by default the local_field_hz.nii.gz beside the map,
with B0 from the run's qsmkit.json or --b0), each usable vein also gets a field estimate:
the intravascular field of the infinite-cylinder model, fitted with the extravascular
dipole pattern around the vein as reference and the wall voxels left out (MR
susceptometry, Haacke 1997, Fernandez-Seara 2006, Langham 2009). It replaces the chi
estimate (column 'estimate' = field) when its standard error in Yv is at most 0.01: the
chi of voxels straddling the vein wall is biased (up to +17 % for veins perpendicular to B0).
--no-field keeps the chi estimate only.
Writes OUTPUT (one row per vein segment: id, x, y, z, length_mm, radius_mm, theta_deg,
chi_ppm, yv, oef, ...), OUTPUT_regions.tsv (per region), OUTPUT.json and OUTPUT.png."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chi", help="chi map (NIfTI, ppm)")
    parser.add_argument("mask", help="brain mask (NIfTI)")
    parser.add_argument("-o", "--output", required=True, help="output table (.tsv)")
    parser.add_argument("--hct", type=float, default=None,
                        help="haematocrit, fraction (default 0.42)")
    parser.add_argument("--ya", type=float, default=None,
                        help="arterial saturation SaO2 (default 0.98)")
    parser.add_argument("--hb", type=float, default=None, metavar="G_PER_DL",
                        help="haemoglobin (default Hct x 33.3 g/dL)")
    parser.add_argument("--pao2", type=float, default=95.0, metavar="MMHG",
                        help="arterial O2 partial pressure (95)")
    parser.add_argument("--cbf", default=None,
                        help="cerebral blood flow: a number (mL/100 g/min) or a NIfTI map")
    parser.add_argument("--csf", help="CSF mask used as the chi reference (water)")
    parser.add_argument("--labels", help="label image: CSF reference and per-region table")
    parser.add_argument("--lut", help="lookup table of --labels (default: sibling .tsv)")
    parser.add_argument("--reference-ppm", type=float, default=None,
                        help="chi of water/CSF in the map (instead of --csf/--labels)")
    parser.add_argument("--min-radius", type=float, default=None, metavar="MM",
                        help="smallest usable vein radius (default 1.5 voxels)")
    parser.add_argument("--min-aspect", type=float, default=3.0, metavar="RATIO",
                        help="a vein is a tube at least RATIO diameters long (3; deep grey "
                             "nuclei are about as long as they are wide)")
    parser.add_argument("--b0-dir", default=None,
                        help="B0 direction in voxel coordinates (default: from the affine)")
    parser.add_argument("--local-field", default=None, metavar="NIFTI",
                        help="local field (Hz) for the field estimate of Yv (default: "
                             "local_field_hz.nii.gz beside the chi map, when present)")
    parser.add_argument("--b0", type=float, default=None, metavar="TESLA",
                        help="field strength for the field estimate (default: b0_tesla of "
                             "the qsmkit.json beside the chi map)")
    parser.add_argument("--no-field", action="store_true",
                        help="chi estimate only (no field fit)")
    add_force(parser)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from qsmkit import physiology
    from qsmkit.analysis import format_tsv, oximetry, roi
    from qsmkit.cli.common import (
        load_chi,
        load_mask,
        parse_vector3,
        print_table,
        sibling_lut,
        write_analysis_outputs,
    )
    from qsmkit.errors import InputError
    from qsmkit.geometry import b0_dir_from_affine
    from qsmkit.io.nifti import load_nifti

    chi, affine, voxel_size = load_chi(args.chi)
    mask = load_mask(args.mask, chi.shape)
    b0_dir = (np.asarray(parse_vector3(args.b0_dir, "--b0-dir")) if args.b0_dir
              else b0_dir_from_affine(affine))
    labels = names = reference_mask = None
    if args.labels:
        data, _, _ = load_nifti(args.labels, dtype=np.float64)
        from qsmkit.cli.common import check_labels

        check_labels(data, args.labels)
        labels = np.rint(data[..., 0] if data.ndim == 4 else data).astype(np.int32)
        lut_path = Path(args.lut) if args.lut else sibling_lut(Path(args.labels))
        names = {**roi.default_lut(), **(roi.read_lut(lut_path) if lut_path else {})}
        region, _ = roi.csf_region(labels, names, mask)
        if args.csf is None and args.reference_ppm is None and region.any():
            reference_mask = region
    if args.csf:
        reference_mask = load_mask(args.csf, chi.shape)
    chi_reference = None
    reference_ppm = args.reference_ppm
    if reference_mask is None and reference_ppm is None:
        reference_ppm, chi_reference = csf_level_of_map(args.chi, chi, mask, voxel_size)
    cbf = None
    if args.cbf is not None:
        try:
            cbf = float(args.cbf)
        except ValueError:
            if not Path(args.cbf).exists():
                raise InputError(f"--cbf {args.cbf} is neither a number nor a file") from None
            cbf_map, _, _ = load_nifti(args.cbf)
            cbf = cbf_map[..., 0] if cbf_map.ndim == 4 else cbf_map
    local_field, b0_tesla = (None, None) if args.no_field else local_field_of_map(
        args.chi, args.local_field, args.b0, chi.shape)
    hct = physiology.DEFAULT_HCT if args.hct is None else args.hct
    ya = oximetry.DEFAULT_YA if args.ya is None else args.ya
    result = oximetry.venous_oximetry(
        chi, mask, voxel_size, b0_dir=b0_dir, hct=hct, ya=ya, hb_g_per_dl=args.hb,
        pao2_mmhg=args.pao2, cbf=cbf, reference_mask=reference_mask,
        reference_ppm=reference_ppm, labels=labels, label_names=names,
        min_radius_mm=args.min_radius, min_aspect=args.min_aspect,
        local_field_hz=local_field, b0_tesla=b0_tesla,
        field_mask=None if local_field is None else local_field != 0,
    )
    if chi_reference is not None:
        result.summary["reference"]["description"] = chi_reference["source"]
    payload = {"summary": result.summary, "parameters": result.parameters,
               "rows": result.rows, "regions": result.regions,
               "chi_reference": chi_reference}
    figure = oximetry.plot_oximetry(result, chi, mask, affine=affine)
    if local_field is not None:
        n_field = sum(r["estimate"] == "field" for r in result.rows)
        print(f"field estimate (B0 {b0_tesla} T) used for {n_field} of "
              f"{sum(r['yv_field'] is not None for r in result.rows)} fitted segments")
    inputs = [p for p in (args.chi, args.mask, args.csf, args.labels,
                          args.cbf if isinstance(cbf, np.ndarray) else None) if p]
    paths = write_analysis_outputs(
        args.output, format_tsv(result.rows, oximetry.VEIN_COLUMNS), payload, figure,
        command="oximetry", inputs=inputs, force=args.force,
        extra_tables={"_regions": format_tsv(result.regions, oximetry.REGION_COLUMNS)},
    )
    print_table(result.rows, ("id", "x", "y", "z", "length_mm", "radius_mm", "theta_deg",
                              "chi_ppm", "yv", "estimate", "oef", "usable"))
    s = result.summary
    if s["yv_length_weighted"] is not None:
        line = (f"length-weighted Yv {s['yv_length_weighted']:.3f}, OEF {s['oef']:.3f} over "
                f"{s['n_usable']} usable of {s['n_segments']} segments (Hct {hct}, Ya {ya})")
        if s["cmro2_umol_per_100g_per_min"] is not None:
            line += f"; CMRO2 {s['cmro2_umol_per_100g_per_min']:.0f} umol/100 g/min"
        print(line)
    else:
        print(f"no usable vein segment among {s['n_segments']} (radius >= "
              f"{result.parameters['min_radius_mm']:.2f} mm and 0 < Yv < 1)")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def local_field_of_map(chi_path, field_path, b0_tesla, shape):
    """(local field (X, Y, Z) Hz, B0 in T) for the field estimate, or (None, None).

    ``field_path`` (else ``local_field_hz.nii.gz`` beside the chi map, when present) and
    ``b0_tesla`` (else ``b0_tesla`` of the ``qsmkit.json`` beside the map). A field given
    explicitly without a known B0, or on another grid, is an InputError; a field found beside
    the map without a known B0 is skipped with a note.
    """
    import json
    from pathlib import Path

    import numpy as np

    from qsmkit.errors import InputError
    from qsmkit.io.nifti import load_nifti

    folder = Path(chi_path).parent
    path = Path(field_path) if field_path else folder / "local_field_hz.nii.gz"
    if not path.exists():
        if field_path:
            raise InputError(f"--local-field {field_path} does not exist")
        return None, None
    if b0_tesla is None and (folder / "qsmkit.json").exists():
        try:
            b0_tesla = json.loads((folder / "qsmkit.json").read_text()).get("b0_tesla")
        except (OSError, ValueError):
            b0_tesla = None
    if b0_tesla is None or not float(b0_tesla) > 0:
        if field_path:
            raise InputError("the field estimate needs the field strength: pass --b0 TESLA")
        print(f"note: {path.name} found but B0 is unknown (no qsmkit.json); pass --b0 for the "
              "field estimate of Yv")
        return None, None
    data, _, _ = load_nifti(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape):
        raise InputError(f"the local field {path} has shape {data.shape}, the chi map "
                         f"{tuple(shape)}: give the local field of this reconstruction")
    return data.astype(np.float32), float(b0_tesla)


def csf_level_of_map(chi_path, chi, mask, voxel_size) -> tuple[float, dict]:
    """The chi of CSF in a map without --csf/--labels/--reference-ppm, and how it was found.

    From the map's ``ChiReference`` (0 for a CSF-referenced map, else its ``CSFPpm``), else
    from ventricular CSF found in the ``r2star.nii.gz`` beside the map
    (:func:`qsmkit.reference.find_csf`, R2* < 5 1/s). Raises InputError naming the options
    when neither gives a level.
    """
    from pathlib import Path

    from qsmkit.errors import InputError
    from qsmkit.io.sidecar import read_chi_reference
    from qsmkit.reference import find_csf, offset_to_reference

    record, where = read_chi_reference(chi_path)
    offset = offset_to_reference(record, "csf")
    if offset is not None:
        return offset, {"record": record, "source": f"CSF level of the map's ChiReference "
                        f"({where}: {record.get('Region')})"}
    r2_path = Path(chi_path).with_name("r2star.nii.gz")
    if r2_path.exists():
        import numpy as np

        from qsmkit.io.nifti import load_nifti

        r2, _, _ = load_nifti(r2_path)
        if r2.shape[:3] == chi.shape and np.any(r2[mask] > 0):
            csf, criteria = find_csf(chi, mask, voxel_size, r2star_per_s=r2[..., 0]
                                     if r2.ndim == 4 else r2)
            if csf.any():
                value = float(np.median(chi[csf]))
                return value, {"record": record, "source": f"ventricular CSF from {r2_path.name}"
                               f" ({criteria}; {int(csf.sum())} voxels)"}
    known = (f"chi is referenced to {record.get('Region')}" if record
             else f"the reference of chi is unknown ({where})")
    raise InputError(
        f"{known} and no CSF level was found; Yv needs chi relative to CSF: pass --csf "
        "CSF_MASK, --labels LABELS (with CSF or ventricle labels) or --reference-ppm "
        "CHI_OF_CSF")

"""``qsmkit liver``: fat–water separation, PDFF, R2*, liver χ and liver iron by R2* and QSM."""

from __future__ import annotations

from pathlib import Path

from qsmkit.cli.common import add_acquisition_arguments, add_force, print_warnings

COMMAND = "liver"
ORDER = 58
HELP = "liver fat (PDFF), R2*, susceptibility and iron (LIC by R2* and by QSM)"
DESCRIPTION = """Liver fat and iron from chemical-shift-encoded multi-echo GRE (1.5 T or 3 T).

Separates water and fat with a six-peak fat model, a field map and a shared R2*; computes the
proton-density fat fraction, the fat-corrected R2* and the liver iron concentration (LIC,
mg Fe/g dry weight) through a published R2* calibration for the field strength (flagged when
R2* is beyond what the echo times can measure); maps susceptibility from the chemical-shift-
free field (air-aware background model, fat- and decay-aware weighting, referenced to
subcutaneous fat by default) and converts it to LIC with the susceptibility of storage iron.

Inputs as for `qsmkit run`: a DICOM folder, a BIDS subject folder, or --mag/--phase NIfTI
(4D, echoes last) with JSON sidecars or --echo-times/--b0.

Outputs in OUTDIR: water.nii.gz, fat.nii.gz, pdff.nii.gz (%), field_hz.nii.gz,
r2star.nii.gz (1/s), r2star_in_range.nii.gz, chi.nii.gz (ppm), lic_r2star.nii.gz and
lic_qsm.nii.gz (mg Fe/g dw), regions.nii.gz, liver.tsv (one row per --labels region, or one
for the automatically found liver: its PDFF from one pooled complex fit of its voxels, its
R2* from that pooled fit where the signal has decayed before the third echo, its χ refitted
to its own field with a standard error; a region is never dropped, and its row flags what
could not be measured), liver_maps.png, liver_lic.png and qsmkit.json. Data within 8 mm of
the faces that the body runs through (a slab through a longer body) are not fitted.

examples:
  qsmkit liver --mag mag.nii.gz --phase phase.nii.gz -o out/
  qsmkit liver --mag mag.nii.gz --phase phase.nii.gz --labels labels.nii.gz --compare 20,21 -o out/
  qsmkit liver dicom/ --b0 3 --reference air -o out/
"""

MAX_ECHO_TIME_S = 0.1
"""Longest echo time accepted (s). Chemical-shift-encoded liver protocols sample 3-6 (or
more) echoes about 1-2.5 ms apart, the last well below 30 ms (Reeder SB, Cruite I, Hamilton G,
Sirlin CB. Quantitative assessment of liver fat with magnetic resonance imaging and
spectroscopy. J Magn Reson Imaging 2011;34:729-749); a longer one is milliseconds below 1
read as seconds, or another scan."""

OUTPUTS = (
    "water.nii.gz", "fat.nii.gz", "pdff.nii.gz", "field_hz.nii.gz", "r2star.nii.gz",
    "r2star_in_range.nii.gz", "chi.nii.gz", "lic_r2star.nii.gz", "lic_qsm.nii.gz",
    "regions.nii.gz", "liver.tsv", "liver_maps.png", "liver_lic.png", "qsmkit.json",
)


def add_arguments(parser) -> None:
    add_acquisition_arguments(parser, inputs_help="DICOM folder or BIDS subject folder")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--labels", metavar="LABELS",
                        help="integer label NIfTI: one table row per region (liver segments, "
                        "nodules); default: an automatically found liver")
    parser.add_argument("--mask", metavar="MASK",
                        help="body mask NIfTI without air (default: from the signal)")
    parser.add_argument("--reference", default="sat", choices=["sat", "air", "mask"],
                        help="chi reference: subcutaneous fat (0.6 ppm x its PDFF), air "
                        "(+9.4 ppm; needs the whole body cross-section in the field of view) "
                        "or the body mean (default: %(default)s)")
    parser.add_argument("--calibration", metavar="NAME",
                        help="R2*->LIC calibration: hernando2023_1.5T, hernando2023_3T, "
                        "wood2005, hankins2009 (default: Hernando 2023 at the data's field)")
    parser.add_argument("--chi-slope", default="buelo2025", metavar="NAME|PPM",
                        help="chi-LIC slope: buelo2025 (in-vivo liver-QSM calibration, 0.112 "
                        "ppm per mg/g dw), physical (0.48 ppm per mg/g, SQUID per wet weight "
                        "/ 3.33) or a number in ppm per mg Fe/g dw (default: %(default)s)")
    parser.add_argument("--background", default="air", metavar="METHOD",
                        help="air (joint air-aware model, default) or a background removal "
                        "method: pdf | lbv | vsharp ...")
    parser.add_argument("--invert", default="wls", metavar="METHOD",
                        help="wls (default) or an inversion method (tv, medi, ...) when "
                        "--background is not air")
    parser.add_argument("--harmonic-order", type=int, default=2, choices=[0, 1, 2],
                        help="harmonic background terms (shim, distant sources) (default 2)")
    parser.add_argument("--voxelwise", action="store_true",
                        help="estimate chi voxel by voxel inside the regions too (default: "
                        "one value per region, as in susceptometry)")
    parser.add_argument("--compare", metavar="A,B",
                        help="compare two labels, e.g. a siderotic and a non-siderotic nodule")
    parser.add_argument("--nodules", action="store_true",
                        help="find focal nodules whose chi and R2* differ from the surrounding "
                        "liver, classed siderotic / iron-sparing / indeterminate: nodules.tsv, "
                        "nodules.json, nodules.nii.gz (ids), nodule_NN.png; implies "
                        "--voxelwise, since chi is otherwise one value per region (see "
                        "docs/liver.md)")
    add_force(parser)


def _parse_slope(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _figures(stage: Path, analysis, affine, rows) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    body = analysis.body_mask
    z = int(np.argmax(body.sum(axis=(0, 1))))
    maps = [
        ("PDFF (%)", analysis.pdff_percent, "magma", 0, 50),
        ("R2* (1/s)", analysis.r2star_per_s, "viridis", 0,
         float(np.percentile(analysis.r2star_per_s[body], 99))),
        ("chi (ppm)", analysis.chi_ppm, "RdBu_r", None, None),
        ("LIC by R2* (mg/g)", analysis.lic_r2star, "inferno", 0, 30),
        ("LIC by QSM (mg/g)", analysis.lic_qsm, "inferno", 0, 30),
    ]
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 3.6), dpi=100,
                             constrained_layout=True)
    for ax, (title, vol, cmap, lo, hi) in zip(axes, maps, strict=True):
        plane = np.where(body[:, :, z], vol[:, :, z], np.nan).T
        if lo is None:
            lim = float(np.nanpercentile(np.abs(plane), 99)) or 1.0
            lo, hi = -lim, lim
        image = ax.imshow(plane, cmap=cmap, vmin=lo, vmax=hi, origin="lower",
                          interpolation="nearest")
        ax.set_title(f"{title}, slice {z}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(stage / "liver_maps.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.6), dpi=100,
                           constrained_layout=True)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["lic_r2star"] for r in rows], 0.4, label="LIC by R2*",
           color=["tab:blue" if r["r2star_in_range"] else "lightgrey" for r in rows])
    ax.bar(x + 0.2, [r["lic_qsm"] for r in rows], 0.4, label="LIC by QSM", color="tab:orange")
    ax.set_xticks(x, [str(r["label"]) for r in rows])
    ax.set_ylabel("LIC (mg Fe/g dry weight)")
    ax.set_title("Liver iron per region (grey: R2* beyond the measurable range)", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(stage / "liver_lic.png")
    plt.close(fig)
    return ["liver_maps.png", "liver_lic.png"]


def _nodules(stage: Path, analysis, labels, voxel_size, affine, b0_dir, *,
             to_input=None) -> list[str]:
    """Nodule detection inside the liver (the --labels regions, or the automatic liver with
    its holes filled, since the automatic liver leaves out tissue unlike its seed);
    ``to_input`` puts a map back on the input grid of ``affine`` (see :func:`b0_axis_last`)."""
    import numpy as np
    from scipy import ndimage

    from qsmkit.body.nodules import (
        STATEMENT,
        find_nodules,
        write_nodule_json,
        write_nodule_table,
        write_thumbnails,
    )

    if labels is not None:
        liver = labels > 0
    else:
        liver = np.zeros(analysis.body_mask.shape, bool)
        for region in analysis.regions.values():
            liver |= region
        for z in range(liver.shape[2]):
            liver[:, :, z] = ndimage.binary_fill_holes(liver[:, :, z])
    # each finding's susceptibility contrast is measured from the field it makes (one
    # number per nodule), not read from the voxel-wise map (see docs/liver.md)
    result = find_nodules(analysis.chi_ppm, analysis.r2star_per_s, liver, voxel_size,
                          pdff_percent=analysis.pdff_percent, field_hz=analysis.field_hz,
                          field_weight=analysis.weight, b0_tesla=analysis.b0_tesla,
                          b0_dir=b0_dir)
    names = write_thumbnails(stage, result, analysis.chi_ppm, analysis.r2star_per_s, liver,
                             voxel_size)
    if to_input is not None:  # voxel indices and ids on the input grid
        import dataclasses

        result = dataclasses.replace(result, labels=to_input(result.labels), nodules=[
            dataclasses.replace(n, centroid_voxel=to_input.point(n.centroid_voxel))
            for n in result.nodules], rejected=[
            {**r, "centroid_voxel": list(to_input.point(r["centroid_voxel"]))}
            if "centroid_voxel" in r else r for r in result.rejected])
    write_nodule_table(stage / "nodules.tsv", result)
    from qsmkit.io.nifti import save_nifti

    save_nifti(stage / "nodules.nii.gz", result.labels, affine,
               description="nodule findings (id as in nodules.tsv)", unit="")
    write_nodule_json(stage / "nodules.json", result)
    for nod in result.nodules:
        print(f"nodule {nod.id}: {nod.nodule_class}, {nod.diameter_mm:.0f} mm "
              f"({nod.volume_ml:.2f} mL; largest in-plane {nod.largest_dimension_mm:.0f} mm), "
              f"chi {nod.chi_ppm:+.2f} ppm (background "
              f"{nod.background_chi_ppm:+.2f}), R2* {nod.r2star_per_s:.0f} 1/s (x"
              f"{nod.r2star_ratio:.2f}), z {nod.z_chi:+.1f} / {nod.z_r2star:+.1f}"
              f" (chi contrast from the {nod.chi_source})")
    print(f"{len(result.nodules)} nodule(s) found. {STATEMENT}")
    return names


def load_inputs(args):
    """The acquisition, labels, body mask and ``--compare`` pair named on the command line.

    Every input form of :func:`qsmkit.io.load.load_acquisition` is accepted (its notes say
    what was converted: phase units, sorted echoes, ...); a liver analysis further needs at
    least 3 echoes. Labels must lie on the data's grid; labels stored with the data's voxel
    axes flipped or permuted (the same voxels in the world) are reoriented exactly, with a
    note. Every refusal is an :class:`~qsmkit.errors.InputError`.

    Returns
    -------
    (Acquisition, labels or None, mask or None, (int, int) or None)
    """
    import numpy as np

    from qsmkit.cli.common import check_labels, load_acquisition_from_args, load_mask
    from qsmkit.errors import InputError
    from qsmkit.io.nifti import load_nifti

    acq = load_acquisition_from_args(args)
    if acq.n_echoes < 3:
        raise InputError(
            f"liver analysis needs a chemical-shift-encoded acquisition (at least 3, ideally 6 "
            f"echoes); got {acq.n_echoes}"
        )
    if float(acq.echo_times_s.max()) > MAX_ECHO_TIME_S:
        raise InputError(
            f"echo times {', '.join(f'{t:g}' for t in acq.echo_times_s)} s are too long for a "
            f"chemical-shift-encoded GRE (echoes at 1-2.5 ms spacing, the last below "
            f"{1e3 * MAX_ECHO_TIME_S:g} ms); milliseconds given as seconds? give the echo "
            "times in seconds"
        )
    labels = None
    if args.labels:
        data, labels_affine, _ = load_nifti(args.labels)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(f"labels {args.labels} must be a 3D image, got shape {data.shape}")
        data = _on_data_grid(data, labels_affine, acq, f"labels {args.labels}")
        if np.any(np.abs(data - np.rint(data)) > 1e-3) or np.any(data < 0):
            raise InputError(f"labels {args.labels} must hold non-negative integers")
        check_labels(data, args.labels)
        labels = np.rint(data).astype(np.int64)
    mask = load_mask(args.mask, acq.shape, acq.affine) if args.mask else None
    compare = None
    if args.compare:
        parts = [p for p in args.compare.replace(",", " ").split() if p]
        if len(parts) != 2 or labels is None:
            raise InputError("--compare needs --labels and two label values, e.g. --compare 20,21")
        try:
            compare = (int(parts[0]), int(parts[1]))
        except ValueError:
            raise InputError(f"--compare needs two integer labels, got {args.compare!r}") from None
    return acq, labels, mask, compare


def _on_data_grid(data, affine, acq, name: str):
    """``data`` (3D, stored with ``affine``) on the grid of ``acq``: as it is, or with its voxel
    axes flipped/permuted when that puts every voxel exactly where the data's voxel is (no
    interpolation); :class:`~qsmkit.errors.InputError` for any other grid."""
    import numpy as np
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    from qsmkit.errors import InputError

    def same(a, shape):
        return tuple(shape) == tuple(acq.shape) and np.allclose(a, acq.affine, atol=1e-3)

    if same(affine, data.shape):
        return data
    transform = ornt_transform(io_orientation(affine), io_orientation(acq.affine))
    moved = apply_orientation(data, transform)
    if same(affine @ inv_ornt_aff(transform, data.shape), moved.shape):
        print(f"note: {name} are stored with the voxel axes flipped or permuted relative to the "
              "data; reoriented onto the data's grid (exact, no interpolation)")
        return np.ascontiguousarray(moved)
    raise InputError(
        f"{name} (shape {'x'.join(map(str, data.shape))}) do not lie on the data's grid "
        f"(shape {'x'.join(map(str, acq.shape))} and its affine); resample them onto the "
        "magnitude image (nearest neighbour) and retry"
    )


def crop_blank_slices(acq, labels=None, mask=None):
    """Leave out the slices at the ends of the slab axis (the voxel axis nearest to B0) whose
    magnitude is exactly zero at every echo (zero-filled by a reformat or a reconstruction
    that padded the field of view).

    Such slices hold no measurement, yet the liver analysis would read them as air: a slab
    through a body that continues would be modelled as a body ending in air at its faces
    (on the independent abdomen one blank slice at each end raised the χ of LIC 20 patches
    by 35–40 %, without a flag). In-plane, zero padding lies in the air around the body,
    which the model takes as air anyway, and is kept. Returns ``(acq, labels, mask,
    to_input)``; ``to_input`` puts a 3D map of the cropped grid back on the input grid
    (zero in the blank slices).
    """
    import dataclasses

    import numpy as np

    signal = np.any(acq.magnitude != 0, axis=3)
    if not signal.any():
        from qsmkit.errors import InputError

        raise InputError("the magnitude is zero everywhere; check the magnitude files")
    axis = int(np.argmax(np.abs(acq.b0_dir)))
    filled = np.flatnonzero(signal.any(axis=tuple(a for a in range(3) if a != axis)))
    keep = [slice(0, n) for n in signal.shape]
    keep[axis] = slice(int(filled[0]), int(filled[-1]) + 1)
    keep = tuple(keep)
    shape = signal.shape
    if all(k.stop - k.start == n for k, n in zip(keep, shape, strict=True)):
        return acq, labels, mask, _Uncrop(keep, shape)
    affine = acq.affine.copy()
    affine[:3, 3] = acq.affine[:3, :3] @ np.array([k.start for k in keep], float) + \
        acq.affine[:3, 3]
    removed = f"axis {axis}: {keep[axis].start} + {shape[axis] - keep[axis].stop}"
    acq = dataclasses.replace(
        acq, magnitude=np.ascontiguousarray(acq.magnitude[keep]),
        phase=np.ascontiguousarray(acq.phase[keep]), affine=affine,
        notes=[*acq.notes, f"slices of zero magnitude at every echo left out at the ends "
               f"({removed}); maps are written on the input grid, zero there"])

    def cut(v):
        return None if v is None else np.ascontiguousarray(np.asarray(v)[keep])

    return acq, cut(labels), cut(mask), _Uncrop(keep, shape)


class _Uncrop:
    """Maps of the grid of :func:`crop_blank_slices` back on the input grid: ``to(v)`` for a
    3D volume (zero outside), ``to.point(ijk)`` for a voxel index."""

    def __init__(self, keep, shape):
        self.keep = keep
        self.shape = tuple(shape)

    def __call__(self, volume):
        import numpy as np

        volume = np.asarray(volume)
        if volume.shape == self.shape:
            return volume
        out = np.zeros(self.shape, volume.dtype)
        out[self.keep] = volume
        return out

    def point(self, ijk):
        return tuple(int(i) + k.start for i, k in zip(ijk, self.keep, strict=True))


class _Then:
    """``second(first(v))``, for volumes and voxel indices."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __call__(self, volume):
        return self.second(self.first(volume))

    def point(self, ijk):
        return self.second.point(self.first.point(ijk))


def b0_axis_last(acq, labels=None, mask=None):
    """Put the voxel axis nearest to B0 last (a permutation of the voxel axes, exact).

    The liver analysis fills internal air in the body's cross-sections slice by slice across
    the last axis, as an axial slab is stored; an acquisition stored in another axis order
    (slices first, or a coronal slab, whose B0 axis lies in-plane) would otherwise be
    analysed with other cross-sections and give other numbers. Each voxel keeps its place in
    the world (the affine's columns are permuted with the data), so ``b0_dir`` and the
    voxel sizes follow. Returns ``(acq, labels, mask, to_input)``; ``to_input`` puts a 3D map
    of the permuted grid back on the input grid.
    """
    import dataclasses

    import numpy as np

    axis = int(np.argmax(np.abs(acq.b0_dir)))
    if axis == 2:
        return acq, labels, mask, _ToInput()
    order = tuple(a for a in range(3) if a != axis) + (axis,)
    affine = acq.affine.copy()
    affine[:3, :3] = acq.affine[:3, list(order)]

    def move(v, axes):
        return None if v is None else np.ascontiguousarray(np.transpose(v, axes))

    acq = dataclasses.replace(
        acq, magnitude=move(acq.magnitude, order + (3,)), phase=move(acq.phase, order + (3,)),
        affine=affine,
        notes=[*acq.notes, f"voxel axes permuted to {order} for the analysis (B0 nearest "
               "to the last axis); maps are written on the input grid"])
    return acq, move(labels, order), move(mask, order), _ToInput(order)


class _ToInput:
    """Maps of the permuted grid of :func:`b0_axis_last` back to the input grid: ``to(v)`` for a
    3D volume, ``to.point(ijk)`` for a voxel index."""

    def __init__(self, order=(0, 1, 2)):
        import numpy as np

        self.inverse = tuple(int(i) for i in np.argsort(order))

    def __call__(self, volume):
        import numpy as np

        return np.ascontiguousarray(np.transpose(volume, self.inverse))

    def point(self, ijk):
        return tuple(ijk[i] for i in self.inverse)


def run(args) -> int:
    import numpy as np

    from qsmkit.body.liver import analyse_liver, compare_regions, write_table
    from qsmkit.cli.common import Timer, acquisition_input_paths, check_acquisition_arguments
    from qsmkit.errors import InputError
    from qsmkit.io.nifti import save_nifti
    from qsmkit.io.output import check_not_overwriting, staged_output
    from qsmkit.io.provenance import write_provenance

    check_acquisition_arguments(args)
    outdir = Path(args.output)
    check_not_overwriting(outdir, OUTPUTS, args.force)
    timer = Timer()
    with timer("load"):
        acq, labels, mask, compare = load_inputs(args)
        affine = acq.affine  # outputs are written on the input grid
        acq, labels, mask, uncrop = crop_blank_slices(acq, labels, mask)
        acq, labels, mask, to_input = b0_axis_last(acq, labels, mask)
        to_input = _Then(to_input, uncrop)
    with timer("analysis"):
        analysis = analyse_liver(
            acq.magnitude, acq.phase, acq.echo_times_s, acq.b0_tesla, acq.voxel_size,
            b0_dir=acq.b0_dir, affine=acq.affine, mask=mask, labels=labels,
            reference=args.reference, calibration=args.calibration,
            chi_slope=_parse_slope(args.chi_slope), background=args.background,
            invert=args.invert, air="fixed" if args.reference == "air" else "free",
            harmonic_order=args.harmonic_order,
            roi_constant=not (args.voxelwise or args.nodules),
        )
    rows = analysis.rows
    comparison = None
    if compare is not None:
        by_label = {r["label"]: r for r in rows}
        missing = [c for c in compare if c not in by_label]
        if missing:
            raise InputError(f"--compare label(s) {missing} not found inside the body")
        comparison = compare_regions(by_label[compare[0]], by_label[compare[1]])

    inputs = acquisition_input_paths(args)
    inputs += [Path(p) for p in (args.labels, args.mask) if p]
    with staged_output(outdir, force=args.force, protect=inputs) as stage:
        with timer("write"):
            region_map = np.zeros(acq.shape, np.int16)
            for i, (label, region) in enumerate(analysis.regions.items()):
                region_map[region] = label if isinstance(label, (int, np.integer)) else i + 1
            for name, data, desc, unit in (
                ("water.nii.gz", analysis.water, "water proton density", "a.u."),
                ("fat.nii.gz", analysis.fat, "fat proton density", "a.u."),
                ("pdff.nii.gz", analysis.pdff_percent, "proton-density fat fraction", "%"),
                ("field_hz.nii.gz", analysis.field_hz, "B0 field (chemical shift free)", "Hz"),
                ("r2star.nii.gz", analysis.r2star_per_s, "fat-corrected R2*", "1/s"),
                ("r2star_in_range.nii.gz", analysis.r2star_in_range.astype(np.uint8),
                 "R2* within measurable range", ""),
                ("chi.nii.gz", analysis.chi_ppm, "susceptibility", "ppm"),
                ("lic_r2star.nii.gz", analysis.lic_r2star, "LIC by R2*", "mg Fe/g dw"),
                ("lic_qsm.nii.gz", analysis.lic_qsm, "LIC by QSM", "mg Fe/g dw"),
                ("regions.nii.gz", region_map, "analysed regions", ""),
            ):
                save_nifti(stage / name, to_input(data), affine, description=desc, unit=unit)
            write_table(stage / "liver.tsv", rows)
            figures = _figures(stage, analysis, affine, rows)
            if args.nodules:
                figures += _nodules(stage, analysis, labels, acq.voxel_size, affine,
                                    acq.b0_dir, to_input=to_input)
        write_provenance(
            stage,
            command="liver",
            config={
                "reference": args.reference,
                "calibration": (analysis.calibration.name if analysis.calibration is not None
                                else None),
                "chi_slope": args.chi_slope,
                "background": args.background,
                "invert": args.invert,
                "harmonic_order": args.harmonic_order,
                "roi_constant": not (args.voxelwise or args.nodules),
                "labels": args.labels,
                "mask": args.mask,
            },
            inputs=inputs,
            extra={
                "b0_tesla": float(acq.b0_tesla),
                "echo_times_s": [float(t) for t in acq.echo_times_s],
                "timings_s": timer.seconds,
                "figures": figures,
                "table": rows,
                "comparison": comparison,
                "analysis": analysis.info,
                "acquisition_notes": list(acq.notes),
                "warnings": analysis.info.get("warnings", []),
            },
        )
    print_warnings(analysis.info.get("warnings"))
    for row in rows:
        flag = ("" if row["r2star_in_range"]
                else " (no R2*->LIC calibration at this field)"
                if "no_r2star_calibration" in row["flags"]
                else " (R2* beyond measurable range)")
        pdff_sd = row.get("pdff_sd_percent", float("nan"))
        pdff = (f"PDFF {row['pdff_percent']:.1f} ± {pdff_sd:.1f} %"
                if np.isfinite(row["pdff_percent"]) and np.isfinite(pdff_sd)
                else "PDFF not measurable")
        pooled = " [low signal: pooled fit]" if row.get("estimate") == "pooled" else ""
        print(f"region {row['label']}: {row['n_voxels']} voxels{pooled}, {pdff}, "
              f"R2* {row['r2star_per_s']:.0f} 1/s{flag}, chi {row['chi_ppm']:+.3f} ppm, "
              f"LIC R2* {row['lic_r2star']:.2f}, LIC QSM {row['lic_qsm']:.2f} mg/g"
              + (f" [flags: {row['flags'].replace(';', ', ')}]" if row["flags"] else ""))
    if comparison is not None:
        print(f"region {comparison['a']} - region {comparison['b']}: "
              f"delta chi {comparison['delta_chi_ppm']:+.3f} ppm, "
              f"delta LIC (QSM) {comparison['delta_lic_qsm']:+.2f} mg/g")
    print(f"liver results written to {outdir}")
    return 0

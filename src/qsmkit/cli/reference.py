"""``qsmkit reference``: subtract the whole-brain, ventricular-CSF or ROI value from chi."""

from __future__ import annotations

from qsmkit.cli.common import add_force

COMMAND = "reference"
ORDER = 36
HELP = "reference a chi map to the whole brain, ventricular CSF or a user ROI"
DESCRIPTION = """Reference a susceptibility map: subtract the value of a reference region.

--method brain (default) subtracts the mean over the mask; --method csf finds ventricular CSF
automatically (R2* below --r2star-max when --r2star is given, else bright late-echo
--magnitude; central, chi not an outlier) and subtracts its median, falling back to the brain
mean with a message when none is found; --method roi subtracts the mean over --roi.

OUT is a .nii/.nii.gz file name (writes it, <stem>_region.nii.gz with the reference region
and a <stem>.json sidecar) or a folder (writes chi.nii.gz, chi_region.nii.gz, qsmkit.json).
The sidecar / qsmkit.json carries ChiReference (how the map is referenced, with the whole-brain
and ventricular-CSF levels in its frame), which roi and oximetry read.

examples:
  qsmkit reference chi.nii.gz --mask mask.nii.gz -o chi_ref.nii.gz
  qsmkit reference chi.nii.gz --mask mask.nii.gz --method csf --r2star r2star.nii.gz -o out/
  qsmkit reference chi.nii.gz --mask mask.nii.gz --method roi --roi wm_roi.nii.gz -o chi_wm.nii.gz
"""


def add_arguments(parser) -> None:
    parser.add_argument("chi", metavar="CHI", help="susceptibility map NIfTI (ppm)")
    parser.add_argument("--mask", required=True, metavar="MASK", help="brain mask NIfTI")
    parser.add_argument("--method", choices=["brain", "csf", "roi"], default="brain",
                        help="reference region (default: %(default)s)")
    parser.add_argument("--roi", metavar="ROI", help="reference region NIfTI for --method roi")
    parser.add_argument("--r2star", metavar="R2S", help="R2* map NIfTI (1/s) for --method csf")
    parser.add_argument("--magnitude", metavar="MAG",
                        help="magnitude NIfTI (3D or 4D) for --method csf without --r2star")
    parser.add_argument("--r2star-max", type=float, default=5.0, metavar="PER_S",
                        help="CSF R2* limit in 1/s (default: %(default)s, for 3 T)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output .nii/.nii.gz file, or folder")
    add_force(parser)


def run(args) -> int:
    from qsmkit.cli.common import check_same_grid, load_mask, write_volumes
    from qsmkit.errors import InputError
    from qsmkit.geometry import voxel_size_from_affine
    from qsmkit.io.nifti import load_nifti
    from qsmkit.reference import reference_record, reference_region, subtract_reference

    chi, affine, _ = load_nifti(args.chi)
    if chi.ndim == 4 and chi.shape[3] == 1:
        chi = chi[..., 0]
    if chi.ndim != 3:
        raise InputError(f"{args.chi} must be a 3D chi map, got shape {chi.shape}")
    mask = load_mask(args.mask, chi.shape, affine)
    inputs = [args.chi, args.mask]
    extra_maps = {}
    for name, path in (("roi", args.roi), ("r2star", args.r2star),
                       ("magnitude", args.magnitude)):
        if path is None:
            continue
        data, aff, _ = load_nifti(path)
        check_same_grid(f"--{name} {path}", aff, data.shape, affine, chi.shape)
        extra_maps[name] = data
        inputs.append(path)
    if args.method == "roi" and "roi" not in extra_maps:
        raise InputError("--method roi needs --roi REGION.nii.gz")
    if args.method != "roi" and "roi" in extra_maps:
        raise InputError("--roi is only used with --method roi")
    roi = extra_maps.get("roi")
    if roi is not None:
        roi = (roi[..., 0] if roi.ndim == 4 else roi) > 0.5
    r2star = extra_maps.get("r2star")
    if r2star is not None and r2star.ndim == 4:
        r2star = r2star[..., 0]

    voxel_size = voxel_size_from_affine(affine)
    region, info = reference_region(
        chi, mask, method=args.method, roi=roi, r2star_per_s=r2star,
        magnitude=extra_maps.get("magnitude"), voxel_size=voxel_size,
        r2star_max_per_s=args.r2star_max,
    )
    out, offset = subtract_reference(chi, mask, region, info["statistic"])
    info.update(offset_ppm=offset, n_voxels=int(region.sum()),
                volume_mm3=float(region.sum()) * float(voxel_size[0] * voxel_size[1]
                                                       * voxel_size[2]))
    path = write_volumes(
        args, args.output, "chi.nii.gz",
        [("", out, affine, f"chi referenced to {info['method']}", "ppm"),
         ("_region", region, affine, "reference region", "")],
        inputs=inputs,
        config={"method": args.method, "r2star_max_per_s": args.r2star_max},
        extra={"reference": info,
               # how the written map is referenced, with its CSF and brain levels
               "ChiReference": reference_record(
                   out, mask, info, voxel_size=voxel_size, r2star_per_s=r2star,
                   magnitude=extra_maps.get("magnitude"), r2star_max_per_s=args.r2star_max)},
    )
    if info["fallback"]:
        print(f"note: {info['fallback']}")
    print(f"referenced chi written to {path}: {info['method']} {info['statistic']} "
          f"{offset:+.4f} ppm subtracted ({info['n_voxels']} voxels)")
    return 0

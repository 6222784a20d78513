"""``qsmkit iron-model``: labile iron and hydroxyl-radical production from total iron (a model)."""

from __future__ import annotations

import argparse

from qsmkit.cli.common import add_force

COMMAND = "iron-model"
ORDER = 54
HELP = "MODEL: labile Fe2+ and OH. production for a total iron and a rise of it"
DESCRIPTION = """A model, not a measurement. Ferritin buffering (total = labile + bound,
saturable binding: bound = Bmax L / (Kd + L)) and Fenton kinetics (k = 76 /M/s, Walling 1975)
give the labile iron pool and the hydroxyl-radical production rate for a total iron
concentration, before and after a relative rise (default +33 %), for several ferritin
capacities Bmax = ratio x total. It shows when the rise is amplified (near buffer saturation)
and when it is proportional (spare capacity).

Total iron comes from --iron (mg/kg), from --chi (ppm, converted with 0.00097 ppm per mg/kg),
or from the normative mean of --region (default substantia_nigra, Hallgren & Sourander 1958).

Example:
  qsmkit iron-model --chi 0.18 --rise 0.33 -o iron_model.tsv"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--iron", type=float, help="total iron, mg Fe / kg wet tissue")
    source.add_argument("--chi", type=float, help="regional chi (ppm, referenced to CSF)")
    source.add_argument("--region", default=None,
                        help="normative region whose mean iron to use (default "
                        "substantia_nigra)")
    parser.add_argument("--rise", type=float, default=0.33,
                        help="relative rise of total iron (0.33 = +33 %%)")
    parser.add_argument("--capacity-ratios", default="1.1,1.25,1.5,2,4,10",
                        help="ferritin capacity Bmax / total iron, comma-separated")
    parser.add_argument("--kd", type=float, default=1.0, metavar="UM",
                        help="effective dissociation constant of ferritin-bound iron (1 uM)")
    parser.add_argument("--h2o2", type=float, default=0.01, metavar="UM",
                        help="steady-state H2O2 (0.01 uM = 10 nM)")
    parser.add_argument("--ferrous-fraction", type=float, default=1.0,
                        help="share of labile iron that is Fe2+ (1.0, an upper bound)")
    parser.add_argument("-o", "--output", required=True, help="output table (.tsv)")
    add_force(parser)


def run(args) -> int:
    from qsmkit.analysis import format_tsv, iron, labile_iron
    from qsmkit.cli.common import parse_floats, print_table, write_analysis_outputs
    from qsmkit.errors import InputError

    if args.iron is not None:
        total, source = args.iron, "--iron"
    elif args.chi is not None:
        total = float(iron.iron_from_chi(args.chi))
        source = f"--chi {args.chi} ppm / {iron.IRON_PPM_PER_MG_PER_KG} ppm per mg/kg"
    else:
        region = args.region or "substantia_nigra"
        entry = iron.match_normative(region, iron.load_normative())
        if entry is None or entry.quantity != "iron_mg_per_kg":
            raise InputError(f"no normative iron for region {region!r}; give --iron or --chi")
        total, source = entry.mean, f"normative {entry.name}: {entry.source}"
    result = labile_iron.iron_rise_scenarios(
        total, rise=args.rise, capacity_ratios=parse_floats(args.capacity_ratios,
                                                            "--capacity-ratios"),
        kd_uM=args.kd, h2o2_uM=args.h2o2, ferrous_fraction=args.ferrous_fraction,
    )
    payload = {"summary": {**result.summary, "total_iron_source": source},
               "parameters": result.parameters, "rows": result.rows}
    figure = labile_iron.plot_scenarios(result)
    paths = write_analysis_outputs(args.output, format_tsv(result.rows,
                                                           labile_iron.MODEL_COLUMNS),
                                   payload, figure, command="iron-model", force=args.force)
    print("MODEL, not a measurement: ferritin buffer + Fenton kinetics with assumed parameters.")
    print(f"total iron {total:.1f} mg/kg ({result.summary['total_iron_uM']:.0f} uM) from "
          f"{source}; rise +{100 * args.rise:.0f} %")
    print_table(result.rows, ("capacity_ratio", "loading_before", "labile_before_uM",
                              "labile_after_uM", "labile_ratio", "oh_rate_before_pM_per_s",
                              "oh_ratio", "disproportionate"), digits=3)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

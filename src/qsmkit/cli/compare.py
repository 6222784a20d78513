"""``qsmkit compare``: two groups compared per region from a long table (one row per subject x
region), e.g. ``group/roi_stats.tsv`` of ``qsmkit bids``.

Writes OUTPUT (TSV, one row per region: region, n_a, n_b, mean_a, mean_b, difference,
cohens_d, d_ci_low, d_ci_high, test, statistic, p, p_adjusted, auc, auc_ci_low, auc_ci_high,
direction), a JSON with the same stem (summary, parameters, input checksums, rows) and a PNG
(box and strip plot of each region by group).

Orientation: ``--groups A,B`` names the reference group first (controls) and the group
compared with it second (cases). ``difference = mean_b - mean_a``; Cohen's d, the test
statistic and the ROC AUC = P(b > a) + P(b == a) / 2 are of B against A, so that d > 0 and
AUC > 0.5 mean "higher in B". The statistics are those of :mod:`qsmkit.analysis.stats`
(whose group ``a`` is the cases group: it is called with B first).
"""

from __future__ import annotations

import argparse
import csv
import math

from qsmkit.cli.common import add_force, print_table, write_analysis_outputs
from qsmkit.errors import InputError

COMMAND = "compare"
ORDER = 55
HELP = "two groups per region from a cohort table: Cohen's d, Welch/Mann-Whitney, ROC AUC, FDR"
DESCRIPTION = """Compare two groups region by region from a long table with one row per
subject x region, such as group/roi_stats.tsv of 'qsmkit bids' (or any TSV with a subject
column, a region column 'name', the value column and the group column).

Examples:
  qsmkit compare derivatives/qsmkit/group/roi_stats.tsv --groups control,pd -o pd.tsv
  qsmkit compare roi_stats.tsv --participants participants.tsv --groups control,rls \\
      --regions substantia_nigra_left,substantia_nigra_right --test mannwhitney -o rls.tsv

--groups A,B: A is the reference group (e.g. controls), B the group compared with it.
difference = mean(B) - mean(A); Cohen's d (pooled SD, exact noncentral-t interval), the
Welch t or Mann-Whitney U of B, and the ROC AUC = P(B > A) are of B against A, so d > 0 and
AUC > 0.5 mean higher in B; 'direction' is the sign of the difference (higher/lower in B), not
a significance verdict: read p_adjusted, corrected across the compared regions
(Benjamini-Hochberg by default).

When the group column is not in TABLE, --participants joins it from a BIDS participants.tsv
on the subject (participant_id with or without 'sub-'). Cells 'n/a', 'nan' or empty are
missing values and are left out. Without --regions, every region of the two groups is
compared, except regions with fewer than 2 values or no variance in a group (listed).

R2* beside chi: when TABLE has the column r2star_mean_per_s (qsmkit roi and qsmkit bids write
it when the run has an R2* map) and another column is compared, the same regions are also
compared on R2*, corrected across them the same way, in the columns r2star_mean_a,
r2star_mean_b, r2star_difference, r2star_cohens_d, r2star_p_adjusted and r2star_auc (empty
where a region has too few R2* values). Iron raises both; myelin and calcium move them apart."""

MISSING = {"", "n/a", "na", "nan", "none", "null"}
OUTPUT_COLUMNS = (
    "region", "n_a", "n_b", "mean_a", "mean_b", "difference", "cohens_d", "d_ci_low",
    "d_ci_high", "test", "statistic", "p", "p_adjusted", "auc", "auc_ci_low", "auc_ci_high",
    "direction",
)
# Units shown on the figure's axis, from the suffix of the value column.
_UNIT_SUFFIXES = (
    ("_ppm_mm3", "ppm·mm³"), ("_mg_per_kg", "mg/kg"), ("_mm3", "mm³"), ("_ppm", "ppm"),
    ("_ppb", "ppb"), ("_ml", "mL"), ("_hz", "Hz"), ("_per_s", "1/s"), ("_ms", "ms"),
    ("_mm", "mm"), ("_s", "s"),
)
R2STAR_COLUMN = "r2star_mean_per_s"
R2STAR_COLUMNS = ("r2star_mean_a", "r2star_mean_b", "r2star_difference", "r2star_cohens_d",
                  "r2star_p_adjusted", "r2star_auc")
_UNIT_NAMES = {"n_voxels": "voxels", "z": "SD of the normative table"}
MAX_PANELS = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", metavar="TABLE",
                        help="long TSV, one row per subject x region (group/roi_stats.tsv)")
    parser.add_argument("--groups", required=True, metavar="A,B",
                        help="reference group and compared group, e.g. control,pd")
    parser.add_argument("--group-column", default="group",
                        help="column holding the group (default group)")
    parser.add_argument("--value", default="mean_ppm",
                        help="column to compare (default mean_ppm)")
    parser.add_argument("--regions", metavar="NAME,...",
                        help="regions to compare, comma-separated (default: all)")
    parser.add_argument("--participants", metavar="TSV",
                        help="participants.tsv to join the group column from, on subject")
    parser.add_argument("--test", default="welch", choices=["welch", "mannwhitney"],
                        help="Welch t test or Mann-Whitney U test (default welch)")
    parser.add_argument("--correction", default="fdr_bh",
                        choices=["fdr_bh", "holm", "bonferroni", "none"],
                        help="multiple-comparison correction across regions (default fdr_bh)")
    parser.add_argument("--auc-ci", default="delong", choices=["delong", "bootstrap"],
                        help="AUC confidence interval (default delong)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--session", help="use only the rows of this session (column session)")
    parser.add_argument("--subject-column",
                        help="subject column (default subject, else participant_id)")
    parser.add_argument("--region-column", default="name",
                        help="region column (default name)")
    parser.add_argument("--unit", help="unit of the value for the figure's axis "
                        "(default from the column name: _ppm -> ppm, _mg_per_kg -> mg/kg, ...)")
    parser.add_argument("-o", "--output", required=True, help="output table (.tsv)")
    add_force(parser)


# ---------------------------------------------------------------- reading and checking


def _subject_key(text: str) -> str:
    text = text.strip()
    return text[4:] if text.startswith("sub-") else text


def _read_tsv(path, what: str) -> tuple[list[str], list[dict]]:
    """(columns, rows as dicts of stripped strings) of a tab-separated file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{c.strip(): (v or "").strip() for c, v in row.items() if c is not None}
                    for row in reader]
    except OSError as err:
        raise InputError(f"cannot read {what} {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a UTF-8 text table") from None
    if not columns:
        raise InputError(f"{what} {path} is empty; it needs a header line")
    if not rows:
        raise InputError(f"{what} {path} has a header but no rows")
    return columns, rows


def _require(columns: list[str], needed: dict[str, str], path, what: str) -> None:
    missing = [f"{name} ({role})" for role, name in needed.items() if name not in columns]
    if missing:
        shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
        hint = " Is it tab-separated?" if len(columns) == 1 and "," in columns[0] else ""
        raise InputError(f"{what} {path} lacks the column(s) {', '.join(missing)}; it has: "
                         f"{shown}.{hint}")


def _join_participants(rows, subject_column, group_column, path) -> tuple[list[dict], list]:
    """Rows with the group column joined from participants.tsv; also the unmatched subjects."""
    columns, participants = _read_tsv(path, "--participants")
    _require(columns, {"subject": "participant_id", "group": group_column}, path,
             "--participants")
    groups: dict[str, str] = {}
    for p in participants:
        key = _subject_key(p["participant_id"])
        if key in groups and groups[key] != p[group_column]:
            raise InputError(f"--participants {path} lists participant {key} twice with "
                             f"different {group_column} values")
        groups[key] = p[group_column]
    joined, unmatched = [], []
    for row in rows:
        key = _subject_key(row.get(subject_column, ""))
        if key not in groups:
            unmatched.append(key)
        joined.append({**row, group_column: groups.get(key, "")})
    subjects = {_subject_key(r.get(subject_column, "")) for r in rows}
    if not subjects & set(groups):
        raise InputError(
            f"no subject of the table is in --participants {path}: the table has "
            f"{', '.join(sorted(subjects)[:5])}..., participants.tsv has "
            f"{', '.join(sorted(groups)[:5])}...")
    return joined, sorted(set(unmatched))


def _parse_groups(text: str) -> tuple[str, str]:
    names = [g.strip() for g in text.split(",")]
    if len(names) != 2 or not all(names):
        raise InputError(f"--groups needs two group names separated by a comma, e.g. "
                         f"control,pd; got {text!r}")
    if names[0] == names[1]:
        raise InputError(f"--groups names the same group twice ({names[0]!r})")
    return names[0], names[1]


def _parse_value(text: str, *, column: str, line: int, subject: str, region: str):
    """A float, or None for a missing cell; InputError for anything else."""
    if text.lower() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"column {column} holds the non-numeric value {text!r} (line {line}, "
                         f"subject {subject}, region {region}); write n/a for a missing value "
                         f"or choose a numeric column with --value") from None
    if not math.isfinite(value):
        raise InputError(f"column {column} holds {text!r} (line {line}, subject {subject}, "
                         f"region {region}); write n/a for a missing value")
    return value


def _collect(rows, *, subject_column, region_column, group_column, groups, value_column,
             session):
    """{region: {group: {subject: value}}} of the rows of the two groups (missing values
    left out), the regions in table order and the subjects seen per group."""
    values: dict[str, dict[str, dict[str, float]]] = {}
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    subjects = {g: set() for g in groups}
    for line, row in enumerate(rows, start=2):
        group = row.get(group_column, "")
        if group not in groups:
            continue
        if session is not None and row.get("session", "") != session:
            continue
        subject = _subject_key(row.get(subject_column, ""))
        region = row.get(region_column, "")
        if not subject or not region:
            empty = region_column if subject else subject_column
            raise InputError(f"line {line} of the table has an empty {empty} cell")
        key = (subject, region)
        if key in seen:
            first_line, first_session = seen[key]
            sessions = sorted({r.get("session", "") for r in rows} - {""})
            hint = (f"; the table has sessions {', '.join(sessions)}: choose one with --session"
                    if len(sessions) > 1 and session is None else
                    "; give one row per subject and region (e.g. one acquisition per subject)")
            raise InputError(f"subject {subject} has more than one row for region {region} "
                             f"(lines {first_line} and {line}){hint}")
        seen[key] = (line, row.get("session", ""))
        subjects[group].add(subject)
        value = _parse_value(row.get(value_column, ""), column=value_column, line=line,
                             subject=subject, region=region)
        if value is not None:
            values.setdefault(region, {g: {} for g in groups})[group][subject] = value
        else:
            values.setdefault(region, {g: {} for g in groups})
    return values, subjects


def _usable(per_group: dict[str, dict[str, float]], groups, scale: float) -> str | None:
    """Why a region cannot be compared, or None when it can.

    A region is constant when its values spread by no more than 1e-9 x ``scale`` (the largest
    |value| of the table) in both groups: exactly, or up to rounding such as the reference
    region of a referenced table (CSF at +-1e-11 ppm).
    """
    for g in groups:
        n = len(per_group[g])
        if n < 2:
            return f"{n} value{'s' if n != 1 else ''} in group {g} (needs at least 2)"
    spreads = [max(per_group[g].values()) - min(per_group[g].values()) for g in groups]
    if all(s <= 1e-9 * scale for s in spreads):
        return ("no variance in either group, e.g. the reference region (Cohen's d and the "
                "tests are undefined)")
    return None


def _unit_of(column: str) -> str:
    if column in _UNIT_NAMES:
        return _UNIT_NAMES[column]
    lower = column.lower()
    for suffix, unit in _UNIT_SUFFIXES:
        if lower.endswith(suffix):
            return unit
    return ""


def _r2star_beside(out_rows, r2_values, groups, args) -> None:
    """Add the R2* comparison of the same regions (B against A) to each output row."""
    from qsmkit.analysis import stats

    group_a, group_b = groups
    scale = max((abs(v) for per_group in r2_values.values() for by_subject in per_group.values()
                 for v in by_subject.values()), default=0.0)
    usable = [r["region"] for r in out_rows if r["region"] in r2_values
              and _usable(r2_values[r["region"]], groups, scale) is None]
    found = {}
    if usable:
        for r in stats.compare_regions(
                {k: list(r2_values[k][group_b].values()) for k in usable},
                {k: list(r2_values[k][group_a].values()) for k in usable},
                test=args.test, correction=args.correction, auc_ci=args.auc_ci,
                confidence=args.confidence):
            found[r["region"]] = {
                "r2star_mean_a": r["mean_b"], "r2star_mean_b": r["mean_a"],
                "r2star_difference": r["difference"], "r2star_cohens_d": r["cohens_d"],
                "r2star_p_adjusted": r["p_adjusted"], "r2star_auc": r["auc"]}
    for row in out_rows:
        row.update(found.get(row["region"], dict.fromkeys(R2STAR_COLUMNS)))


# ---------------------------------------------------------------- figure


def plot_comparison(rows, values, groups, value_column: str, unit: str):
    """Box and strip plot of each compared region (up to 24 panels) by group."""
    import numpy as np

    from qsmkit.analysis import new_figure

    shown = rows[:MAX_PANELS]
    ncols = min(4, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = new_figure(3.0 * ncols + 0.6, 2.9 * nrows + 0.6)
    rng = np.random.default_rng(0)
    label = f"{value_column} ({unit})" if unit else value_column
    colours = ("tab:blue", "tab:red")
    for k, row in enumerate(shown):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        data = [np.array(list(values[row["region"]][g].values())) for g in groups]
        ax.boxplot(data, positions=[0, 1], widths=0.5, showfliers=False,
                   medianprops={"color": "k"})
        for i, (vals, colour) in enumerate(zip(data, colours, strict=True)):
            ax.scatter(i + rng.uniform(-0.12, 0.12, vals.size), vals, s=10, color=colour,
                       alpha=0.7, zorder=3)
        ax.set_xticks([0, 1], [f"{g}\n(n={len(v)})" for g, v in zip(groups, data,
                                                                   strict=True)], fontsize=7)
        ax.set_title(f"{row['region']}\nd={row['cohens_d']:.2f}, "
                     f"p_adj={row['p_adjusted']:.2g}, AUC={row['auc']:.2f}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        if k % ncols == 0:
            ax.set_ylabel(label, fontsize=8)
    title = f"{groups[1]} vs {groups[0]}: {value_column} per region"
    if len(rows) > MAX_PANELS:
        title += f" (first {MAX_PANELS} of {len(rows)} regions; all in the TSV)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- command


def run(args) -> int:
    from qsmkit.analysis import format_tsv, stats

    group_a, group_b = _parse_groups(args.groups)
    groups = (group_a, group_b)
    columns, rows = _read_tsv(args.table, "table")
    subject_column = args.subject_column or ("participant_id" if "subject" not in columns
                                             and "participant_id" in columns else "subject")
    needed = {"subject": subject_column, "region": args.region_column, "value": args.value}
    if args.session is not None:
        needed["session"] = "session"
    _require(columns, needed, args.table, "table")

    notes = []
    unmatched: list[str] = []
    if args.group_column in columns:
        if args.participants:
            notes.append(f"the table has a column {args.group_column}; --participants was not "
                         f"used")
    elif args.participants:
        rows, unmatched = _join_participants(rows, subject_column, args.group_column,
                                             args.participants)
        if unmatched:
            notes.append(f"{len(unmatched)} subject(s) of the table are not in --participants "
                         f"and are left out: {', '.join(unmatched[:10])}"
                         + (" ..." if len(unmatched) > 10 else ""))
    else:
        shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
        raise InputError(f"table {args.table} has no column {args.group_column} (it has: "
                         f"{shown}); name the group column with --group-column or join it "
                         f"with --participants participants.tsv")

    present = sorted({r.get(args.group_column, "") for r in rows} - {""})
    absent = [g for g in groups if g not in present]
    if absent:
        raise InputError(f"group{'s' if len(absent) > 1 else ''} {', '.join(absent)} not found "
                         f"in column {args.group_column}; present: "
                         f"{', '.join(present) or 'none'}")

    values, subjects = _collect(rows, subject_column=subject_column,
                                region_column=args.region_column,
                                group_column=args.group_column, groups=groups,
                                value_column=args.value, session=args.session)
    for g in groups:
        if len(subjects[g]) < 2:
            raise InputError(f"group {g} has {len(subjects[g])} subject(s)"
                             + (f" ({', '.join(sorted(subjects[g]))})" if subjects[g] else "")
                             + " in the table; a comparison needs at least 2 per group")

    scale = max((abs(v) for per_group in values.values() for by_subject in per_group.values()
                 for v in by_subject.values()), default=0.0)
    skipped = {}
    if args.regions:
        regions = list(dict.fromkeys(r.strip() for r in args.regions.split(",") if r.strip()))
        unknown = [r for r in regions if r not in values]
        if unknown:
            raise InputError(f"region(s) {', '.join(unknown)} not in column "
                             f"{args.region_column} for groups {group_a}, {group_b}; "
                             f"present: {', '.join(list(values)[:40])}"
                             + (" ..." if len(values) > 40 else ""))
        for region in regions:
            reason = _usable(values[region], groups, scale)
            if reason:
                raise InputError(f"region {region} cannot be compared: {reason}")
    else:
        regions = []
        for region, per_group in values.items():
            reason = _usable(per_group, groups, scale)
            if reason:
                skipped[region] = reason
            else:
                regions.append(region)
        if not regions:
            raise InputError("no region can be compared: " + "; ".join(
                f"{r}: {why}" for r, why in list(skipped.items())[:5]))

    # stats' group a is the cases group: B first, so differences, d and AUC are of B vs A.
    result = stats.compare_regions(
        {r: list(values[r][group_b].values()) for r in regions},
        {r: list(values[r][group_a].values()) for r in regions},
        test=args.test, correction=args.correction, auc_ci=args.auc_ci,
        confidence=args.confidence)
    out_rows = []
    for r in result:
        diff = r["difference"]
        out_rows.append({
            "region": r["region"], "n_a": r["n_b"], "n_b": r["n_a"],
            "mean_a": r["mean_b"], "mean_b": r["mean_a"], "difference": diff,
            "cohens_d": r["cohens_d"], "d_ci_low": r["d_ci_low"], "d_ci_high": r["d_ci_high"],
            "test": r["test"], "statistic": r["statistic"], "p": r["p"],
            "p_adjusted": r["p_adjusted"], "auc": r["auc"], "auc_ci_low": r["auc_ci_low"],
            "auc_ci_high": r["auc_ci_high"],
            "direction": "higher" if diff > 0 else "lower" if diff < 0 else "equal",
        })

    columns_out = OUTPUT_COLUMNS
    if R2STAR_COLUMN in columns and args.value != R2STAR_COLUMN:
        r2_values, _ = _collect(rows, subject_column=subject_column,
                                region_column=args.region_column,
                                group_column=args.group_column, groups=groups,
                                value_column=R2STAR_COLUMN, session=args.session)
        _r2star_beside(out_rows, r2_values, groups, args)
        columns_out = OUTPUT_COLUMNS + R2STAR_COLUMNS

    unit = args.unit if args.unit is not None else _unit_of(args.value)
    significant = [r for r in out_rows if r["p_adjusted"] < 0.05]
    summary = {
        "group_a": group_a, "group_b": group_b,
        "n_subjects_a": len(subjects[group_a]), "n_subjects_b": len(subjects[group_b]),
        "value": args.value, "unit": unit, "n_regions": len(out_rows),
        "higher_in_b_p_adjusted_below_0.05": [r["region"] for r in significant
                                              if r["direction"] == "higher"],
        "lower_in_b_p_adjusted_below_0.05": [r["region"] for r in significant
                                             if r["direction"] == "lower"],
        "skipped_regions": skipped, "subjects_not_in_participants": unmatched,
        "orientation": "difference = mean_b - mean_a; cohens_d, statistic and auc = "
                       "P(b > a) + P(b == a)/2 are of group b against group a",
    }
    parameters = {
        "table": str(args.table), "participants": args.participants,
        "group_column": args.group_column, "groups": [group_a, group_b],
        "value": args.value, "regions": regions, "subject_column": subject_column,
        "region_column": args.region_column, "session": args.session, "test": args.test,
        "correction": args.correction, "auc_ci": args.auc_ci, "confidence": args.confidence,
        "auc_bootstrap": {"n_boot": 2000, "seed": 0} if args.auc_ci == "bootstrap" else None,
    }
    payload = {"summary": summary, "parameters": parameters, "rows": out_rows}
    figure = plot_comparison(out_rows, values, groups, args.value, unit)
    inputs = [p for p in (args.table, args.participants) if p]
    paths = write_analysis_outputs(args.output, format_tsv(out_rows, columns_out), payload,
                                   figure, command=getattr(args, "command_line",
                                                           "qsmkit compare"),
                                   inputs=inputs, force=args.force)
    print(f"a = {group_a} ({len(subjects[group_a])} subjects), b = {group_b} "
          f"({len(subjects[group_b])} subjects); {args.value}"
          + (f" ({unit})" if unit else "") + f"; {args.test}, {args.correction} over "
          f"{len(out_rows)} region(s), AUC = P(b > a) with {args.auc_ci} "
          f"{100 * args.confidence:g} % CI")
    print_table(out_rows, ("region", "n_a", "n_b", "mean_a", "mean_b", "difference",
                           "cohens_d", "p_adjusted", "auc", "auc_ci_low", "auc_ci_high",
                           "direction"), digits=3)
    for region, reason in skipped.items():
        print(f"skipped {region}: {reason}")
    for note in notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0

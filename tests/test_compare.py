"""``qsmkit compare``: seeded synthetic cohorts with known group differences per region.

The cohort: 20 controls, 20 Parkinson's disease (PD) and 20 restless-legs syndrome (RLS)
subjects; substantia nigra chi 0.15 ppm in controls, +0.03 ppm in PD and -0.03 ppm in RLS
(between-subject SD 0.015 ppm, d = 2, expected AUC = Phi(2 / sqrt 2) = 0.92); putamen,
pallidum, caudate and thalamus equal in all groups.

The assertions are about one seeded cohort (seed 0). How often they hold over cohorts, from
``analysis.stats`` on seeds 0-399 of this generator: the nigra claims of both comparisons
(p_adjusted < 0.05, AUC beyond 0.8 / 0.2, CI excluding 0.5) in 97.5 %; p_adjusted > 0.05 in
all four equal regions of both comparisons in 80 % (FDR control bounds false discoveries on
average, not per region). With SD 0.02 ppm (d = 1.5, AUC 0.86) an AUC above 0.8 in both nigrae
is a coin flip, hence 0.015.
"""

from __future__ import annotations

import csv
import json
import math
import types

import numpy as np
import pytest

from qsmkit.analysis import stats
from qsmkit.cli.main import main

REGIONS = {  # name: (label number, control mean chi in ppm); aseg numbers, which lack a nigra
    "substantia_nigra_left": (101, 0.15), "substantia_nigra_right": (102, 0.15),
    "putamen_left": (12, 0.06), "globus_pallidus_left": (13, 0.17),
    "caudate_left": (11, 0.07), "thalamus_left": (10, 0.03),
}
NIGRA = ("substantia_nigra_left", "substantia_nigra_right")
EQUAL = ("putamen_left", "globus_pallidus_left", "caudate_left", "thalamus_left")
NIGRA_SHIFT_PPM = {"control": 0.0, "pd": 0.03, "rls": -0.03}
SD_PPM = 0.015
# The columns of group/roi_stats.tsv written by qsmkit bids (cohort.group.write_tsv).
GROUP_TABLE_COLUMNS = (
    "subject", "session", "label", "name", "n_voxels", "volume_mm3", "mean_ppm", "median_ppm",
    "sd_ppm", "total_ppm_mm3", "iron_mg_per_kg", "z", "z_quantity", "normative_name",
)


def cohort_rows(seed: int = 0, n_per_group: int = 20, sessions=("",)) -> list[dict]:
    """One row per subject x region (x session) in the format of group/roi_stats.tsv."""
    rng = np.random.default_rng(seed)
    rows, k = [], 0
    for group in ("control", "pd", "rls"):
        for _ in range(n_per_group):
            k += 1
            age = int(rng.integers(50, 80))
            for session in sessions:
                for name, (label, base) in REGIONS.items():
                    chi = base + (NIGRA_SHIFT_PPM[group] if name in NIGRA else 0.0)
                    chi += rng.normal(0.0, SD_PPM)
                    n_voxels = int(rng.integers(60, 80))
                    rows.append({
                        "subject": f"{k:02d}", "session": session, "label": label,
                        "name": name, "n_voxels": n_voxels, "volume_mm3": 8.0 * n_voxels,
                        "mean_ppm": round(chi, 7), "median_ppm": round(chi + 0.001, 7),
                        "sd_ppm": 0.02, "total_ppm_mm3": round(chi * 8.0 * n_voxels, 5),
                        "iron_mg_per_kg": round(chi / 0.00097, 3), "z": "",
                        "z_quantity": "", "normative_name": "", "group": group, "age": age,
                    })
    return rows


def write_table(path, rows, columns=None):
    columns = list(columns or rows[0].keys())
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_participants(path, rows, prefix="sub-"):
    seen = {}
    for r in rows:
        seen.setdefault(r["subject"], (r["group"], r["age"]))
    lines = ["participant_id\tgroup\tage"]
    lines += [f"{prefix}{s}\t{g}\t{a}" for s, (g, a) in seen.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_output(path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {r["region"]: r for r in csv.DictReader(handle, delimiter="\t")}


def values_of(rows, group, region, column="mean_ppm"):
    return np.array([float(r[column]) for r in rows if r["group"] == group
                     and r["name"] == region])


@pytest.fixture
def cohort(tmp_path):
    rows = cohort_rows()
    return rows, write_table(tmp_path / "roi_stats.tsv", rows)


def test_parkinson_nigra_higher_other_regions_equal(cohort, tmp_path, capsys):
    rows, table = cohort
    out = tmp_path / "res" / "pd.tsv"
    assert main(["compare", str(table), "--groups", "control,pd", "-o", str(out)]) == 0
    result = read_output(out)
    assert list(result) == list(REGIONS)  # table order, every region
    assert list(next(iter(result.values()))) == [
        "region", "n_a", "n_b", "mean_a", "mean_b", "difference", "cohens_d", "d_ci_low",
        "d_ci_high", "test", "statistic", "p", "p_adjusted", "auc", "auc_ci_low",
        "auc_ci_high", "direction"]
    for region in NIGRA:
        r = result[region]
        assert r["direction"] == "higher"
        assert float(r["p_adjusted"]) < 0.05
        assert float(r["auc"]) > 0.8 and float(r["auc_ci_low"]) > 0.5
        assert float(r["d_ci_low"]) > 0 and float(r["statistic"]) > 0
        # The true shift (0.03 ppm) is recovered within 3 standard errors.
        assert float(r["difference"]) == pytest.approx(0.03, abs=3 * SD_PPM * math.sqrt(0.1))
    for region in EQUAL:
        assert float(result[region]["p_adjusted"]) > 0.05
    # Orientation: a = control, b = pd; statistics of b against a, as analysis.stats gives
    # them with the cases first.
    control = values_of(rows, "control", "substantia_nigra_left")
    pd_ = values_of(rows, "pd", "substantia_nigra_left")
    r = result["substantia_nigra_left"]
    assert (int(r["n_a"]), int(r["n_b"])) == (20, 20)
    assert float(r["mean_a"]) == pytest.approx(control.mean(), rel=1e-5)
    assert float(r["mean_b"]) == pytest.approx(pd_.mean(), rel=1e-5)
    assert float(r["difference"]) == pytest.approx(pd_.mean() - control.mean(), rel=1e-5)
    assert float(r["auc"]) == pytest.approx(stats.roc_auc(pd_, control), rel=1e-5)
    assert float(r["cohens_d"]) == pytest.approx(stats.cohens_d(pd_, control).d, rel=1e-5)
    assert float(r["statistic"]) == pytest.approx(stats.welch_test(pd_, control)[0], rel=1e-5)
    # p_adjusted is Benjamini-Hochberg over the six regions.
    raw = [float(result[k]["p"]) for k in REGIONS]
    assert [float(result[k]["p_adjusted"]) for k in REGIONS] == pytest.approx(
        list(stats.adjust_pvalues(raw, "fdr_bh")), rel=1e-4)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["summary"]["group_a"] == "control" and record["summary"]["group_b"] == "pd"
    assert record["summary"]["higher_in_b_p_adjusted_below_0.05"] == list(NIGRA)
    assert record["summary"]["lower_in_b_p_adjusted_below_0.05"] == []
    assert record["parameters"]["test"] == "welch" and len(record["rows"]) == 6
    assert str(table) in record["inputs"]
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    text = capsys.readouterr().out
    assert "substantia_nigra_left" in text and "higher" in text


def test_restless_legs_nigra_lower(cohort, tmp_path):
    _, table = cohort
    out = tmp_path / "rls.tsv"
    assert main(["compare", str(table), "--groups", "control,rls", "--test", "mannwhitney",
                 "--auc-ci", "bootstrap", "-o", str(out)]) == 0
    result = read_output(out)
    for region in NIGRA:
        r = result[region]
        assert r["direction"] == "lower" and r["test"] == "mannwhitney"
        assert float(r["difference"]) < 0 and float(r["d_ci_high"]) < 0
        assert float(r["p_adjusted"]) < 0.05
        assert float(r["auc"]) < 0.2 and float(r["auc_ci_high"]) < 0.5
    for region in EQUAL:
        assert float(result[region]["p_adjusted"]) > 0.05
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert summary["lower_in_b_p_adjusted_below_0.05"] == list(NIGRA)


@pytest.mark.parametrize("auc_ci", ["delong", "bootstrap"])
def test_separable_groups_give_auc_one_and_zero_reversed(tmp_path, auc_ci):
    rows = []
    for i in range(6):
        rows.append({"subject": f"c{i}", "name": "nigra", "mean_ppm": 0.10 + 0.005 * i,
                     "group": "control"})
        rows.append({"subject": f"p{i}", "name": "nigra", "mean_ppm": 0.20 + 0.004 * i,
                     "group": "pd"})
    table = write_table(tmp_path / "t.tsv", rows)
    assert main(["compare", str(table), "--groups", "control,pd", "--auc-ci", auc_ci,
                 "-o", str(tmp_path / "ab.tsv")]) == 0
    r = read_output(tmp_path / "ab.tsv")["nigra"]
    assert float(r["auc"]) == 1.0
    assert float(r["auc_ci_low"]) == 1.0 and float(r["auc_ci_high"]) == 1.0
    assert r["direction"] == "higher"
    assert main(["compare", str(table), "--groups", "pd,control", "--auc-ci", auc_ci,
                 "-o", str(tmp_path / "ba.tsv")]) == 0
    r = read_output(tmp_path / "ba.tsv")["nigra"]
    assert float(r["auc"]) == 0.0 and r["direction"] == "lower"
    assert float(r["difference"]) == pytest.approx((0.10 + 0.0125) - (0.20 + 0.01), rel=1e-5)


@pytest.mark.parametrize("prefix", ["sub-", ""])
def test_participants_join_matches_the_table_with_groups(cohort, tmp_path, prefix, capsys):
    rows, table = cohort
    direct = tmp_path / "direct.tsv"
    assert main(["compare", str(table), "--groups", "control,pd", "-o", str(direct)]) == 0
    # The same table without its group column, plus a subject participants.tsv lacks.
    extra = [{**r, "subject": "99", "group": "pd"} for r in rows[:6]]
    bare = write_table(tmp_path / "bare.tsv", rows + extra,
                       [c for c in rows[0] if c != "group"])
    participants = write_participants(tmp_path / "participants.tsv", rows, prefix=prefix)
    joined = tmp_path / "joined.tsv"
    capsys.readouterr()
    assert main(["compare", str(bare), "--participants", str(participants),
                 "--groups", "control,pd", "-o", str(joined)]) == 0
    assert read_output(joined) == read_output(direct)
    record = json.loads(joined.with_suffix(".json").read_text())
    assert record["summary"]["subjects_not_in_participants"] == ["99"]
    assert str(participants) in record["inputs"]
    assert "not in --participants" in capsys.readouterr().out


def test_group_column_of_the_table_wins_and_unit_override(cohort, tmp_path, capsys):
    rows, table = cohort
    participants = write_participants(tmp_path / "participants.tsv",
                                      [{**r, "group": "control"} for r in rows])
    out = tmp_path / "c.tsv"
    assert main(["compare", str(table), "--participants", str(participants), "--groups",
                 "control,pd", "--value", "iron_mg_per_kg", "--unit", "mg Fe/kg",
                 "-o", str(out)]) == 0
    assert "--participants was not used" in capsys.readouterr().out
    assert int(read_output(out)["substantia_nigra_left"]["n_b"]) == 20
    assert json.loads(out.with_suffix(".json").read_text())["summary"]["unit"] == "mg Fe/kg"


def test_corrections_and_region_selection(cohort, tmp_path):
    _, table = cohort
    regions = "substantia_nigra_left,putamen_left,caudate_left,putamen_left"  # repeat: once
    out = {}
    for method in ("none", "bonferroni", "holm"):
        path = tmp_path / f"{method}.tsv"
        assert main(["compare", str(table), "--groups", "control,pd", "--regions", regions,
                     "--correction", method, "-o", str(path)]) == 0
        out[method] = read_output(path)
    assert list(out["none"]) == regions.split(",")[:3]
    for region, r in out["none"].items():
        p = float(r["p"])
        assert float(r["p_adjusted"]) == pytest.approx(p, rel=1e-5)
        assert float(out["bonferroni"][region]["p_adjusted"]) == pytest.approx(
            min(3 * p, 1.0), rel=1e-5)
        assert p <= float(out["holm"][region]["p_adjusted"]) <= float(
            out["bonferroni"][region]["p_adjusted"]) + 1e-12


def test_missing_values_are_left_out_and_empty_regions_skipped(cohort, tmp_path, capsys):
    rows, _ = cohort
    edited = []
    for r in rows:
        r = dict(r)
        if r["name"] == "thalamus_left":
            r["iron_mg_per_kg"] = ""  # e.g. a region without an iron conversion
        if r["name"] == "substantia_nigra_left" and r["group"] == "pd" and \
                int(r["subject"]) % 5 == 0:
            r["iron_mg_per_kg"] = "n/a"
        edited.append(r)
    table = write_table(tmp_path / "t.tsv", edited)
    out = tmp_path / "iron.tsv"
    assert main(["compare", str(table), "--groups", "control,pd", "--value", "iron_mg_per_kg",
                 "-o", str(out)]) == 0
    result = read_output(out)
    assert "thalamus_left" not in result
    assert int(result["substantia_nigra_left"]["n_b"]) == 16
    assert int(result["substantia_nigra_right"]["n_b"]) == 20
    pd_ = [float(r["iron_mg_per_kg"]) for r in edited if r["group"] == "pd"
           and r["name"] == "substantia_nigra_left" and r["iron_mg_per_kg"] != "n/a"]
    assert float(result["substantia_nigra_left"]["mean_b"]) == pytest.approx(np.mean(pd_),
                                                                          rel=1e-5)
    record = json.loads(out.with_suffix(".json").read_text())
    assert "thalamus_left" in record["summary"]["skipped_regions"]
    assert record["summary"]["unit"] == "mg/kg"
    assert "skipped thalamus_left" in capsys.readouterr().out


def test_session_selects_one_row_per_subject(tmp_path):
    rows = cohort_rows(sessions=("pre", "post"))
    table = write_table(tmp_path / "t.tsv", rows)
    out = tmp_path / "pre.tsv"
    assert main(["compare", str(table), "--groups", "control,pd", "--session", "pre",
                 "-o", str(out)]) == 0
    r = read_output(out)["substantia_nigra_left"]
    pre = [float(x["mean_ppm"]) for x in rows if x["session"] == "pre" and x["group"] == "pd"
           and x["name"] == "substantia_nigra_left"]
    assert int(r["n_b"]) == 20 and float(r["mean_b"]) == pytest.approx(np.mean(pre), rel=1e-5)


def test_figure_axis_carries_the_unit():
    from qsmkit.cli import compare

    assert compare._unit_of("mean_ppm") == "ppm"
    assert compare._unit_of("iron_mg_per_kg") == "mg/kg"
    assert compare._unit_of("total_ppm_mm3") == "ppm·mm³"
    assert compare._unit_of("volume_mm3") == "mm³"
    assert compare._unit_of("score") == ""
    row = {"region": "nigra", "cohens_d": 1.0, "p_adjusted": 0.01, "auc": 0.8}
    values = {"nigra": {"control": {"1": 0.1, "2": 0.12}, "pd": {"3": 0.15, "4": 0.16}}}
    fig = compare.plot_comparison([row], values, ("control", "pd"), "mean_ppm", "ppm")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "mean_ppm (ppm)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["control\n(n=2)", "pd\n(n=2)"]


def _error_cases(tmp_path, rows):
    """(arguments, expected message fragment) for each kind of bad input."""
    table = write_table(tmp_path / "roi_stats.tsv", rows)
    bad = [dict(r) for r in rows]
    bad[7]["mean_ppm"] = "0.1O"
    single = [r for r in rows if r["group"] != "rls" or r["subject"] == "07"]
    two_sessions = cohort_rows(sessions=("pre", "post"))
    no_pid = tmp_path / "no_pid.tsv"
    no_pid.write_text("subject\tgroup\n01\tcontrol\n")
    few = [r for r in rows if not (r["name"] == "putamen_left" and r["group"] == "pd"
                                   and r["subject"] != "04")]
    files = {
        "bad": write_table(tmp_path / "bad.tsv", bad),
        "single": write_table(tmp_path / "single.tsv", single),
        "sessions": write_table(tmp_path / "sessions.tsv", two_sessions),
        "bare": write_table(tmp_path / "bare.tsv", rows, [c for c in rows[0] if c != "group"]),
        "few": write_table(tmp_path / "few.tsv", few),
        "csv": tmp_path / "comma.tsv",
    }
    files["csv"].write_text("subject,name,mean_ppm,group\n01,nigra,0.1,control\n")
    t = str(table)
    return [
        ([t, "--groups", "control,pd", "--value", "chi_ppm"], "lacks the column(s) chi_ppm"),
        ([str(files["bare"]), "--groups", "control,pd"], "no column group"),
        ([t, "--groups", "control,ms"], "ms not found in column group; present: control, pd, "
                                        "rls"),
        ([t, "--groups", "control"], "two group names"),
        ([t, "--groups", "pd,pd"], "same group twice"),
        ([str(files["single"]), "--groups", "control,rls"], "group rls has 1 subject(s) (07)"),
        ([str(files["bad"]), "--groups", "control,pd"], "non-numeric value '0.1O' (line 9"),
        ([t, "--groups", "control,pd", "--value", "normative_name", "--regions",
          "putamen_left"], "0 values in group control"),  # all cells empty
        ([t, "--groups", "control,pd", "--value", "name"], "non-numeric value"),
        ([t, "--groups", "control,pd", "--value", "sd_ppm", "--regions", "putamen_left"],
         "no variance in either group"),  # sd_ppm is 0.02 in every row
        ([t, "--groups", "control,pd", "--value", "sd_ppm"], "no region can be compared"),
        ([t, "--groups", "control,pd", "--regions", "nucleus_x"],
         "nucleus_x not in column name"),
        ([str(files["few"]), "--groups", "control,pd", "--regions", "putamen_left"],
         "1 value in group pd"),
        ([str(files["sessions"]), "--groups", "control,pd"], "choose one with --session"),
        ([str(tmp_path / "missing.tsv"), "--groups", "control,pd"], "cannot read table"),
        ([str(files["csv"]), "--groups", "control,pd"], "tab-separated"),
        ([str(files["bare"]), "--participants", str(no_pid), "--groups", "control,pd"],
         "participant_id"),
        ([t, "--groups", "control,pd", "--confidence", "1.5"], "confidence"),
    ]


def test_each_bad_input_exits_2_with_a_message(tmp_path, capsys):
    rows = cohort_rows(n_per_group=3)
    for k, (args, message) in enumerate(_error_cases(tmp_path, rows)):
        out = tmp_path / f"out{k}" / "c.tsv"
        code = main(["compare", *args, "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("qsmkit compare: error: "), (args, err)
        assert message in err, (args, message, err)
        assert "Traceback" not in err
        assert not out.parent.exists()


def test_existing_output_needs_force(cohort, tmp_path, capsys):
    _, table = cohort
    out = tmp_path / "c.tsv"
    args = ["compare", str(table), "--groups", "control,pd", "-o", str(out)]
    assert main(args) == 0
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_end_to_end_from_the_cohort_group_table(tmp_path):
    """Per-subject chi maps -> the runner's region table -> group/roi_stats.tsv written by the
    cohort writer (participants.tsv joined) -> qsmkit compare."""
    from qsmkit.analysis.roi import region_table
    from qsmkit.cohort.group import write_group_outputs

    rng = np.random.default_rng(7)
    shape, voxel = (24, 24, 8), (2.0, 2.0, 2.0)
    labels = np.zeros(shape, dtype=int)
    blocks = {24: (slice(2, 10), slice(2, 10)), **{label: (slice(2 + 7 * (i % 3), 8 + 7 * (
        i % 3)), slice(12 + 6 * (i // 3), 17 + 6 * (i // 3))) for i, (label, _) in enumerate(
        REGIONS.values())}}
    for label, (sx, sy) in blocks.items():
        labels[sx, sy, 2:6] = label
    lut = {24: "CSF", **{label: name for name, (label, _) in REGIONS.items()}}
    dataset = tmp_path / "study"
    dataset.mkdir()
    results, participants = [], ["participant_id\tgroup\tage"]
    for k, group in enumerate(["control"] * 20 + ["pd"] * 20 + ["rls"] * 4, start=1):
        subject = f"{k:02d}"
        participants.append(f"sub-{subject}\t{group}\t{60 + k % 20}")
        chi = rng.normal(0.0, 0.01, shape).astype(np.float32)  # voxel noise, CSF at 0
        for name, (label, base) in REGIONS.items():
            shift = NIGRA_SHIFT_PPM[group] if name in NIGRA else 0.0
            chi[labels == label] += base + shift + rng.normal(0.0, SD_PPM)
        roi = region_table(chi, labels, voxel, lut=lut, mask=labels > 0)
        results.append({"label": f"sub-{subject}", "subject": subject, "session": "",
                        "status": "done", "seconds": 1.0,
                        "roi": [{"subject": subject, "session": "", **r} for r in roi]})
    (dataset / "participants.tsv").write_text("\n".join(participants) + "\n")
    output = tmp_path / "derivatives"
    written = write_group_outputs(types.SimpleNamespace(results=results), dataset, output)
    table = written["roi_stats"]
    with open(table, newline="") as handle:
        header = next(csv.reader(handle, delimiter="\t"))
    assert header[:len(GROUP_TABLE_COLUMNS)] == list(GROUP_TABLE_COLUMNS)
    assert "group" in header and "age" in header
    out = tmp_path / "compare" / "pd.tsv"
    assert main(["compare", str(table), "--groups", "control,pd", "-o", str(out)]) == 0
    result = read_output(out)
    # CSF, the reference of every subject, is 0 up to rounding (+-1e-11 ppm): not compared.
    assert list(result) == sorted(REGIONS, key=lambda name: REGIONS[name][0])  # label order
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert list(summary["skipped_regions"]) == ["CSF"]
    for region in NIGRA:
        assert result[region]["direction"] == "higher"
        assert float(result[region]["p_adjusted"]) < 0.05 and float(result[region]["auc"]) > 0.8
        assert float(result[region]["difference"]) == pytest.approx(0.03, abs=0.02)
    for region in EQUAL:
        assert float(result[region]["p_adjusted"]) > 0.05
    assert main(["compare", str(table), "--groups", "control,rls", "--value", "iron_mg_per_kg",
                 "--regions", ",".join(NIGRA), "-o", str(tmp_path / "compare" / "rls.tsv")]) == 0
    rls = read_output(tmp_path / "compare" / "rls.tsv")
    assert all(rls[r]["direction"] == "lower" and int(rls[r]["n_b"]) == 4 for r in NIGRA)

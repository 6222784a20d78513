"""The cohort page ``index.html``: every subject linked, group plots, QC outliers.

Self-contained like the subject reports: plots are embedded PNG data URIs, CSS is inline and
the page loads nothing from the network. Links point to the subjects' ``report.html`` and to
the group tables, relative to the page, so the folder can be moved or archived as a whole.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qsmkit.report.html import CSS  # noqa: E402

QC_METRICS = ("chi_sd_ppm", "local_field_sd_hz", "fit_residual_median", "chi_mask_ml")
QC_LABELS = {
    "chi_sd_ppm": "χ SD in the mask",
    "local_field_sd_hz": "local-field SD",
    "fit_residual_median": "median echo-fit residual",
    "chi_mask_ml": "χ mask volume",
}
QC_UNITS = {"chi_sd_ppm": "ppm", "local_field_sd_hz": "Hz",
            "fit_residual_median": "unit of the field fit", "chi_mask_ml": "mL"}
STATUS_COLOURS = {"done": ("#2f9e44", "#fff"), "skipped": ("#868e96", "#fff"),
                  "failed": ("#d9302c", "#fff")}
GROUP_TABLES = ("group/roi_stats.tsv", "group/qc.tsv", "group/summary.tsv")

COHORT_CSS = """
.tag.flag{background:#fff3bf;color:#5c4400;margin-right:3px}
td.error{max-width:420px;color:#8a1c1c;font-size:11px}
"""


def _png_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _group_column(rows: list[dict]) -> str | None:
    for key in ("group", "diagnosis", "dx", "condition"):
        if any(key in r and r[key] not in ("", None) for r in rows):
            return key
    return None


REGIONS_PER_PLOT = 12


def regional_plots(roi_rows: list[dict], *, per_plot: int = REGIONS_PER_PLOT
                   ) -> list[tuple[list[str], str]]:
    """Strip plots of regional mean chi for every region, ``per_plot`` regions a figure.

    Returns ``(regions, PNG data URI)`` pairs covering every region of ``roi_rows`` (in
    alphabetical order), so a cohort with 40 regions gets 4 readable plots instead of one
    crowded or truncated one.
    """
    rows = [r for r in roi_rows if r.get("name") and np.isfinite(_float(r.get("mean_ppm")))]
    regions = sorted({str(r["name"]) for r in rows})
    pages = [regions[i:i + per_plot] for i in range(0, len(regions), per_plot)]
    plots = []
    for number, page in enumerate(pages, start=1):
        part = f" ({number} of {len(pages)})" if len(pages) > 1 else ""
        uri = regional_plot(rows, regions=page, part=part)
        if uri:
            plots.append((page, uri))
    return plots


def regional_plot(roi_rows: list[dict], *, regions=None, part: str = "") -> str | None:
    """Strip plot of regional mean chi by region (and by group when participants.tsv has one)
    for ``regions`` (default: every region of ``roi_rows``)."""
    rows = [r for r in roi_rows if r.get("name") and np.isfinite(_float(r.get("mean_ppm")))]
    if not rows:
        return None
    group_key = _group_column(rows)
    regions = sorted({str(r["name"]) for r in rows}) if regions is None else list(regions)
    rows = [r for r in rows if str(r["name"]) in set(regions)]
    if not rows:
        return None
    groups = sorted({str(r.get(group_key, "")) for r in rows}) if group_key else [""]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(regions) + 2), 4), constrained_layout=True)
    width = 0.8 / max(len(groups), 1)
    labelled: set[str] = set()
    for g_index, group in enumerate(groups):
        for r_index, region in enumerate(regions):
            values = [_float(r["mean_ppm"]) for r in rows if str(r["name"]) == region
                      and (not group_key or str(r.get(group_key, "")) == group)]
            if not values:
                continue
            x = r_index + (g_index - (len(groups) - 1) / 2) * width
            jitter = np.linspace(-width / 4, width / 4, len(values))
            ax.scatter(x + jitter, values, s=12, color=f"C{g_index}",
                       label=group if group_key and group not in labelled else None)
            labelled.add(group)
            ax.hlines(np.mean(values), x - width / 2.5, x + width / 2.5, color=f"C{g_index}")
    ax.set_xticks(range(len(regions)))
    ax.set_xticklabels(regions, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("region")
    ax.set_ylabel("mean χ (ppm)")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_title("Regional susceptibility" + (f" by {group_key}" if group_key else "")
                 + f"{part} (points: subjects, bars: means)", fontsize=10)
    if group_key:
        ax.legend(title=group_key, fontsize=8)
    return _png_uri(fig)


def qc_outliers(qc_rows: list[dict], threshold: float = 3.0) -> dict[str, list[str]]:
    """Subjects whose QC metric deviates from the cohort median by > threshold robust SDs."""
    flagged: dict[str, list[str]] = {}
    for metric in QC_METRICS:
        values = np.array([_float(r.get(metric, np.nan)) for r in qc_rows], dtype=float)
        ok = np.isfinite(values)
        if ok.sum() < 3:
            continue
        median = np.median(values[ok])
        mad = 1.4826 * np.median(np.abs(values[ok] - median))
        if mad == 0:
            continue
        for row, value in zip(qc_rows, values, strict=True):
            if np.isfinite(value) and abs(value - median) > threshold * mad:
                flagged.setdefault(row["subject"], []).append(metric)
    return flagged


def qc_plot(qc_rows: list[dict], flagged: dict[str, list[str]]) -> str | None:
    """One panel per QC metric: every subject, outliers in red and labelled, median dashed."""
    if not qc_rows:
        return None
    fig, axes = plt.subplots(1, len(QC_METRICS), figsize=(3.2 * len(QC_METRICS), 3.2),
                             constrained_layout=True)
    subjects = [str(r.get("subject", "")) for r in qc_rows]
    for ax, metric in zip(axes, QC_METRICS, strict=True):
        values = np.array([_float(r.get(metric, np.nan)) for r in qc_rows])
        bad = np.array([metric in flagged.get(s, []) for s in subjects])
        index = np.arange(len(values))
        ax.scatter(index[~bad], values[~bad], color="C0", s=16, label="within range")
        ax.scatter(index[bad], values[bad], color="C3", s=22, label="outlier")
        for i in np.flatnonzero(bad):
            ax.annotate(subjects[i], (index[i], values[i]), fontsize=7, color="C3",
                        xytext=(3, 3), textcoords="offset points")
        if np.isfinite(values).any():
            ax.axhline(np.nanmedian(values), color="0.6", lw=0.8, ls="--")
        ax.set_title(QC_LABELS.get(metric, metric), fontsize=9)
        ax.set_ylabel(QC_UNITS.get(metric, metric), fontsize=8)
        ax.margins(x=0.12, y=0.15)
        ax.set_xlabel("subject (order of qc.tsv)", fontsize=8)
        if len(subjects) <= 12:
            ax.set_xticks(index)
            ax.set_xticklabels(subjects, rotation=60, ha="right", fontsize=7)
        ax.tick_params(labelsize=7)
    return _png_uri(fig)


def _status_tag(status: str) -> str:
    background, colour = STATUS_COLOURS.get(status, ("#eef1f6", "#1d2330"))
    return (f"<span class='tag status' style='background:{background};color:{colour}'>"
            f"{html.escape(status)}</span>")


def write_cohort_page(output: Path, results: list[dict], roi_rows, qc_rows) -> Path:
    """Write ``OUTPUT/index.html`` (atomically) and return its path."""
    output = Path(output)
    qc_rows = list(qc_rows or [])
    flagged = qc_outliers(qc_rows)
    rows = []
    for r in sorted(results, key=lambda r: r["label"]):
        sub_dir = Path(f"sub-{r['subject']}") / (f"ses-{r['session']}" if r.get("session") else "")
        report = sub_dir / "qsmkit" / r["label"] / "report.html"
        link = (f"<a href='{html.escape(report.as_posix())}'>report</a>"
                if (output / report).exists() else "<span class='muted'>none</span>")
        flags = "".join(f"<span class='tag flag'>{html.escape(QC_LABELS.get(m, m))}</span>"
                        for m in flagged.get(r.get("subject", ""), []))
        error = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
        seconds = _float(r.get("seconds", 0))
        rows.append(f"<tr data-status='{html.escape(str(r['status']))}'>"
                    f"<td class='text'>{html.escape(r['label'])}</td>"
                    f"<td class='text'>{_status_tag(str(r['status']))}</td>"
                    f"<td>{seconds:.1f}</td><td class='text'>{link}</td>"
                    f"<td class='text'>{flags}</td>"
                    f"<td class='text error'>{html.escape(error[:160])}</td></tr>")
    plots = []
    regional = regional_plots(list(roi_rows or []))
    for number, (regions, uri) in enumerate(regional, start=1):
        part = f" ({number} of {len(regional)})" if len(regional) > 1 else ""
        names = ", ".join(regions)
        plots.append(f"<figure class='regional'><img src='{uri}' "
                     f"alt='Regional χ{part}: {html.escape(names)}' "
                     f"data-regions='{html.escape(json.dumps(regions))}'>"
                     f"<figcaption>Regional χ{part}: {html.escape(names)}</figcaption>"
                     "</figure>")
    for title, uri in (("QC metrics (red: outliers, more than 3 robust SD from the median)",
                        qc_plot(qc_rows, flagged)),):
        if uri:
            plots.append(f"<figure><img src='{uri}' alt='{html.escape(title)}'>"
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
    outlier_rows = "".join(
        f"<tr><td class='text'>{html.escape(s)}</td><td class='text'>"
        + ", ".join(html.escape(QC_LABELS.get(m, m)) for m in metrics) + "</td></tr>"
        for s, metrics in sorted(flagged.items()))
    outliers = ("<section id='outliers'><h2>QC outliers</h2>"
                + (f"<table><thead><tr><th class='text'>subject</th><th class='text'>metrics"
                   f"</th></tr></thead><tbody>{outlier_rows}</tbody></table>" if outlier_rows
                   else "<p>No subject deviates by more than 3 robust SD on any QC metric"
                        + (" (fewer than 3 subjects: not assessed)." if len(qc_rows) < 3
                           else ".") + "</p>")
                + "</section>")
    tables = [name for name in GROUP_TABLES if (output / name).exists()]
    table_links = " · ".join(f"<a href='{html.escape(n)}'>{html.escape(n)}</a>" for n in tables)
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'><title>qsmkit cohort</title>"
        f"<link rel='icon' href='data:,'><style>{CSS}{COHORT_CSS}</style></head><body><header>"
        f"<h1>qsmkit cohort</h1><p>{len(results)} acquisitions: {counts['done']} done, "
        f"{counts['skipped']} skipped, {counts['failed']} failed</p></header>"
        "<nav><a href='#subjects'>Subjects</a><a href='#outliers'>QC outliers</a>"
        + ("<a href='#plots'>Group plots</a>" if plots else "")
        + ("<a href='#tables'>Tables</a>" if tables else "") + "</nav><main>"
        "<section id='subjects'><h2>Subjects</h2><div class='tablewrap'><table><thead><tr>"
        "<th class='text'>acquisition</th><th class='text'>status</th><th>seconds</th>"
        "<th class='text'>report</th><th class='text'>QC flags</th><th class='text'>error</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>"
        + outliers
        + (f"<section id='plots'><h2>Group plots</h2>{''.join(plots)}</section>" if plots else "")
        + (f"<section id='tables'><h2>Tables</h2><p>{table_links}</p></section>" if tables
           else "")
        + "</main></body></html>"
    )
    path = output / "index.html"
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path

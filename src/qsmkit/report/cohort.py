"""The cohort page ``index.html``: every subject linked, group plots, QC outliers."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qsmkit.report.html import CSS  # noqa: E402

QC_METRICS = ("chi_sd_ppm", "local_field_sd_hz", "fit_residual_median", "chi_mask_ml")


def _png_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _group_column(rows: list[dict]) -> str | None:
    for key in ("group", "diagnosis", "dx", "condition"):
        if any(key in r and r[key] not in ("", None) for r in rows):
            return key
    return None


def regional_plot(roi_rows: list[dict]) -> str | None:
    """Strip plot of regional mean chi by region (and by group when participants.tsv has one)."""
    if not roi_rows:
        return None
    group_key = _group_column(roi_rows)
    regions = sorted({r["name"] for r in roi_rows if r.get("name")})[:20]
    groups = sorted({r.get(group_key, "") for r in roi_rows}) if group_key else [""]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(regions) + 2), 4), constrained_layout=True)
    width = 0.8 / max(len(groups), 1)
    for g_index, group in enumerate(groups):
        for r_index, region in enumerate(regions):
            values = [float(r["mean_ppm"]) for r in roi_rows if r["name"] == region
                      and (not group_key or r.get(group_key, "") == group)]
            if not values:
                continue
            x = r_index + (g_index - (len(groups) - 1) / 2) * width
            jitter = np.linspace(-width / 4, width / 4, len(values))
            ax.scatter(x + jitter, values, s=12, color=f"C{g_index}",
                       label=group if r_index == 0 and group_key else None)
            ax.hlines(np.mean(values), x - width / 2.5, x + width / 2.5, color=f"C{g_index}")
    ax.set_xticks(range(len(regions)))
    ax.set_xticklabels(regions, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean χ (ppm)")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_title("Regional susceptibility" + (f" by {group_key}" if group_key else ""))
    if group_key:
        ax.legend(title=group_key, fontsize=8)
    return _png_uri(fig)


def qc_outliers(qc_rows: list[dict], threshold: float = 3.0) -> dict[str, list[str]]:
    """Subjects whose QC metric deviates from the cohort median by > threshold robust SDs."""
    flagged: dict[str, list[str]] = {}
    for metric in QC_METRICS:
        values = np.array([float(r.get(metric, np.nan)) for r in qc_rows], dtype=float)
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
    if not qc_rows:
        return None
    fig, axes = plt.subplots(1, len(QC_METRICS), figsize=(3 * len(QC_METRICS), 3),
                             constrained_layout=True)
    for ax, metric in zip(axes, QC_METRICS, strict=True):
        values = [float(r.get(metric, np.nan)) for r in qc_rows]
        colours = ["C3" if metric in flagged.get(r["subject"], []) else "C0" for r in qc_rows]
        ax.scatter(np.arange(len(values)), values, c=colours, s=14)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("subject index")
    return _png_uri(fig)


def write_cohort_page(output: Path, results: list[dict], roi_rows, qc_rows) -> Path:
    output = Path(output)
    flagged = qc_outliers(qc_rows)
    rows = []
    for r in sorted(results, key=lambda r: r["label"]):
        sub_dir = Path(f"sub-{r['subject']}") / (f"ses-{r['session']}" if r.get("session") else "")
        report = sub_dir / "qsmkit" / r["label"] / "report.html"
        link = (f"<a href='{html.escape(report.as_posix())}'>report</a>"
                if (output / report).exists() else "")
        note = ", ".join(flagged.get(r.get("subject", ""), []))
        error = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
        rows.append(f"<tr><td class='text'>{html.escape(r['label'])}</td>"
                    f"<td class='text'><span class='tag'>{r['status']}</span></td>"
                    f"<td>{r.get('seconds', 0):.1f}</td><td class='text'>{link}</td>"
                    f"<td class='text'>{html.escape(note)}</td>"
                    f"<td class='text'>{html.escape(error[:160])}</td></tr>")
    plots = []
    for title, uri in (("Regional χ", regional_plot(roi_rows)),
                       ("QC metrics (red: outliers, > 3 robust SD)", qc_plot(qc_rows, flagged))):
        if uri:
            plots.append(f"<figure><img src='{uri}' alt='{html.escape(title)}'>"
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>qsmkit cohort</title>"
        f"<style>{CSS}</style></head><body><header><h1>qsmkit cohort</h1><p>{len(results)} "
        f"acquisitions: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} "
        "failed</p></header><main>"
        "<section><h2>Subjects</h2><table><thead><tr><th class='text'>acquisition</th>"
        "<th class='text'>status</th><th>seconds</th><th class='text'>report</th>"
        "<th class='text'>QC flags</th><th class='text'>error</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></section>"
        + (f"<section><h2>Group plots</h2>{''.join(plots)}</section>" if plots else "")
        + "<section><h2>Tables</h2><p><a href='group/roi_stats.tsv'>group/roi_stats.tsv</a> · "
        "<a href='group/qc.tsv'>group/qc.tsv</a> · <a href='group/summary.tsv'>group/summary.tsv"
        "</a></p></section></main></body></html>"
    )
    path = output / "index.html"
    tmp = output / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path

"""Group tables of a cohort run: regional chi per subject x region, QC, run summary."""

from __future__ import annotations

import csv
from pathlib import Path


def read_participants(dataset: Path) -> dict[str, dict]:
    """participants.tsv rows keyed by subject label (without ``sub-``)."""
    path = Path(dataset) / "participants.tsv"
    if not path.exists():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    out = {}
    for row in rows:
        pid = row.get("participant_id", "")
        out[pid[4:] if pid.startswith("sub-") else pid] = row
    return out


def write_tsv(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    tmp.replace(path)


def _join(rows: list[dict], participants: dict[str, dict]) -> list[dict]:
    joined = []
    for row in rows:
        extra = {k: v for k, v in participants.get(row.get("subject", ""), {}).items()
                 if k != "participant_id"}
        joined.append({**row, **{k: v for k, v in extra.items() if k not in row}})
    return joined


def write_group_outputs(summary, dataset: Path, output: Path) -> dict[str, Path]:
    """Write group/roi_stats.tsv (+ .parquet with pyarrow), group/qc.tsv, group/summary.tsv
    and the cohort page ``index.html``."""
    participants = read_participants(dataset)
    group = output / "group"
    written = {}
    roi_rows = [r for res in summary.results for r in (res.get("roi") or [])]
    if roi_rows:
        roi_rows = _join(roi_rows, participants)
        write_tsv(roi_rows, group / "roi_stats.tsv")
        written["roi_stats"] = group / "roi_stats.tsv"
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(roi_rows), group / "roi_stats.parquet")
            written["roi_parquet"] = group / "roi_stats.parquet"
        except ImportError:
            pass
    qc_rows = _join([res["qc"] for res in summary.results if res.get("qc")], participants)
    write_tsv(qc_rows or [{"subject": ""}], group / "qc.tsv")
    written["qc"] = group / "qc.tsv"
    status_rows = [{"label": r["label"], "subject": r.get("subject", ""), "status": r["status"],
                    "seconds": r.get("seconds", ""),
                    "error": (r.get("error") or "").splitlines()[0] if r.get("error") else ""}
                   for r in sorted(summary.results, key=lambda r: r["label"])]
    write_tsv(status_rows, group / "summary.tsv")
    written["summary"] = group / "summary.tsv"
    from qsmkit.report.cohort import write_cohort_page

    written["page"] = write_cohort_page(output, summary.results, roi_rows, qc_rows)
    return written

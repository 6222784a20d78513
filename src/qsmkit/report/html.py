"""The self-contained ``report.html`` of a run folder.

Everything is embedded (PNG as data URIs, plain JavaScript, inline CSS): the page opens
offline from any location. It is rebuilt from the files of the folder alone, so
``qsmkit report OUTDIR`` can regenerate it after analyses add their tables.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from qsmkit.io.provenance import read_provenance

# Figures in display order: file name -> caption.
FIGURES = {
    "magnitude.png": "Magnitude (root-sum-of-squares of echoes) with the brain-mask outline",
    "field.png": "Total field (Hz) after multi-echo fit and unwrapping",
    "local_field.png": "Local field (Hz) after background removal",
    "chi.png": "Susceptibility χ (ppm)",
    "chi_error.png": "Error against the phantom truth (ppm)",
    "r2star.png": "R2* (1/s)",
    "qc_background.png": "QC: residual background field",
    "qc_mask.png": "QC: mask coverage",
    "qc_residual.png": "QC: echo-fit residual",
    "roi.png": "Regional χ",
    "lesions.png": "Focal lesions",
    "rims.png": "Rim lesions",
    "veins.png": "Veins and oxygenation",
    "dgm_scatter.png": "Deep grey matter: reconstruction against truth",
    "liver.png": "Liver maps",
}

# Analysis tables: file -> section title.
TABLES = {
    "metrics.tsv": "Accuracy against the truth",
    "roi.tsv": "Regional susceptibility and iron",
    "lesions.tsv": "Focal lesions (microbleeds, calcifications, vein mimics)",
    "rims.tsv": "MS lesions: paramagnetic rims",
    "veins.tsv": "Veins: oxygen saturation and extraction",
    "liver.tsv": "Liver: fat, R2*, susceptibility and iron",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
 color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#c9cfdb;font-size:13px}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border-radius:6px;padding:12px 16px;margin:0 0 16px;
 box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:16px;margin:4px 0 10px}
figure{margin:0 0 12px} figure img{max-width:100%;height:auto;border:1px solid #e3e6ec}
figcaption{font-size:12px;color:#556}
table{border-collapse:collapse;font-size:12px;margin-bottom:8px}
th,td{border:1px solid #dde1e8;padding:3px 7px;text-align:right}
th{background:#eef1f6} td.text,th.text{text-align:left}
.tag{display:inline-block;padding:1px 6px;border-radius:8px;font-size:11px;background:#eef1f6}
.viewer{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.viewer img{image-rendering:pixelated;width:420px;border:1px solid #e3e6ec}
pre{font-size:11px;background:#f5f6f8;padding:8px;overflow:auto;max-height:320px}
.thumb{width:64px;height:64px;image-rendering:pixelated}
"""

VIEWER_JS = """
(function(){
  var slices = JSON.parse(document.getElementById('chi-slices').textContent);
  var img = document.getElementById('viewer-image');
  var slider = document.getElementById('viewer-slider');
  var label = document.getElementById('viewer-label');
  function show(i){
    i = Math.max(0, Math.min(slices.length - 1, i|0));
    img.src = slices[i]; slider.value = i;
    label.textContent = 'axial slice ' + (i + 1) + ' / ' + slices.length;
    img.setAttribute('data-slice', String(i));
  }
  slider.max = slices.length - 1;
  slider.addEventListener('input', function(){ show(parseInt(slider.value, 10)); });
  img.addEventListener('wheel', function(e){
    e.preventDefault(); show(parseInt(slider.value, 10) + (e.deltaY > 0 ? -1 : 1));
  });
  document.addEventListener('keydown', function(e){
    if (e.key === 'ArrowUp') show(parseInt(slider.value, 10) + 1);
    if (e.key === 'ArrowDown') show(parseInt(slider.value, 10) - 1);
  });
  show(Math.floor(slices.length / 2));
})();
"""


def _data_uri_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _png_bytes(rgb: np.ndarray) -> bytes:
    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, rgb, format="png")
    return buffer.getvalue()


def chi_slice_uris(chi: np.ndarray, affine, mask=None, *, limit=None) -> tuple[list[str], float]:
    """Axial slices of chi (RAS, anterior up) as PNG data URIs with a fixed signed window."""
    import matplotlib

    from qsmkit.report.figures import SIGNED_CMAP, robust_limits, to_ras

    data = to_ras(np.asarray(chi, np.float32), affine)
    region = to_ras(np.asarray(mask, bool), affine) if mask is not None else None
    limit = limit or robust_limits(data, region, signed=True)[1]
    cmap = matplotlib.colormaps[SIGNED_CMAP]
    uris = []
    for k in range(data.shape[2]):
        plane = np.clip((data[:, :, k].T[::-1] / limit + 1) / 2, 0, 1)
        rgb = (cmap(plane)[..., :3] * 255).astype(np.uint8)
        uris.append("data:image/png;base64," + base64.b64encode(_png_bytes(rgb)).decode("ascii"))
    return uris, float(limit)


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return (rows[0], rows[1:]) if rows else ([], [])


def _format_cell(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return html.escape(value)
    if number.is_integer() and abs(number) < 1e9 and "." not in value:
        return str(int(number))
    return f"{number:.4g}"


def table_html(path: Path, *, max_rows: int = 200, thumbnails: dict | None = None) -> str:
    header, rows = _read_tsv(path)
    if not header:
        return "<p>(empty table)</p>"
    numeric = []
    for j in range(len(header)):
        try:
            [float(r[j]) for r in rows if j < len(r) and r[j] not in ("", "nan", "NaN")]
            numeric.append(True)
        except ValueError:
            numeric.append(False)
    extra = ["image"] if thumbnails else []
    head = "".join(f'<th class="{"" if numeric[j] else "text"}">{html.escape(h)}</th>'
                   for j, h in enumerate(header)) + "".join(f"<th>{e}</th>" for e in extra)
    body = []
    for row in rows[:max_rows]:
        cells = "".join(
            f'<td class="{"" if numeric[j] else "text"}">{_format_cell(v)}</td>'
            for j, v in enumerate(row)
        )
        if thumbnails:
            uri = thumbnails.get(row[0])
            cells += f'<td><img class="thumb" src="{uri}" alt="lesion {html.escape(row[0])}"></td>' \
                if uri else "<td></td>"
        body.append(f"<tr>{cells}</tr>")
    more = f"<p>{len(rows) - max_rows} more rows in {path.name}</p>" if len(rows) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def lesion_thumbnails(folder: Path) -> dict[str, str]:
    """A small axial chi patch around each lesion of lesions.tsv, keyed by lesion id."""
    from qsmkit.io.nifti import load_nifti

    table, chi_path = folder / "lesions.tsv", folder / "chi.nii.gz"
    if not (table.exists() and chi_path.exists()):
        return {}
    import matplotlib

    from qsmkit.report.figures import SIGNED_CMAP

    chi, _, _ = load_nifti(chi_path)
    header, rows = _read_tsv(table)
    col = {h: i for i, h in enumerate(header)}
    if not {"id", "x", "y", "z"} <= col.keys():
        return {}
    cmap = matplotlib.colormaps[SIGNED_CMAP]
    thumbs = {}
    for row in rows[:100]:
        x, y, z = (int(round(float(row[col[k]]))) for k in ("x", "y", "z"))
        half = 8
        patch = chi[max(x - half, 0): x + half + 1, max(y - half, 0): y + half + 1,
                    int(np.clip(z, 0, chi.shape[2] - 1))]
        if patch.size == 0:
            continue
        limit = max(float(np.abs(patch).max()), 1e-3)
        rgb = (cmap(np.clip((patch.T[::-1] / limit + 1) / 2, 0, 1))[..., :3] * 255).astype(np.uint8)
        thumbs[row[col["id"]]] = "data:image/png;base64," + base64.b64encode(
            _png_bytes(rgb)).decode("ascii")
    return thumbs


def build_report(folder) -> str:
    """HTML text of the report for a run folder."""
    from qsmkit import __version__

    folder = Path(folder)
    prov = read_provenance(folder)
    title = prov.get("title") or f"qsmkit report: {folder.resolve().name}"
    parts = []
    summary = prov.get("summary")
    if summary:
        items = "".join(f"<tr><td class='text'>{html.escape(str(k))}</td><td>"
                        f"{html.escape(str(v))}</td></tr>" for k, v in summary.items())
        parts.append(f"<section><h2>Summary</h2><table>{items}</table></section>")
    figures = [(n, c) for n, c in FIGURES.items() if (folder / n).exists()]
    if figures:
        figs = "".join(
            f'<figure><img src="{_data_uri_png(folder / n)}" alt="{html.escape(c)}">'
            f"<figcaption>{html.escape(c)}</figcaption></figure>" for n, c in figures
        )
        parts.append(f"<section><h2>Maps</h2>{figs}</section>")
    chi_path = folder / "chi.nii.gz"
    if chi_path.exists():
        from qsmkit.io.nifti import load_nifti

        chi, affine, _ = load_nifti(chi_path)
        mask = None
        if (folder / "mask.nii.gz").exists():
            mask = load_nifti(folder / "mask.nii.gz")[0] > 0.5
        uris, limit = chi_slice_uris(chi, affine, mask)
        parts.append(
            "<section><h2>χ slice viewer</h2><div class='viewer'>"
            f"<img id='viewer-image' alt='chi axial slice' src='{uris[len(uris) // 2]}'>"
            "<div><input id='viewer-slider' type='range' min='0' value='0' step='1' "
            "aria-label='slice'><p id='viewer-label'></p>"
            f"<p>colour window ±{limit:.3f} ppm (red paramagnetic, blue diamagnetic);"
            " scroll the image or use the arrow keys</p></div></div>"
            f"<script type='application/json' id='chi-slices'>{json.dumps(uris)}</script>"
            f"<script>{VIEWER_JS}</script></section>"
        )
    for name, heading in TABLES.items():
        if (folder / name).exists():
            thumbs = lesion_thumbnails(folder) if name == "lesions.tsv" else None
            parts.append(f"<section><h2>{html.escape(heading)}</h2>"
                         f"{table_html(folder / name, thumbnails=thumbs)}</section>")
    if prov:
        timings = prov.get("timings_s") or {}
        rows = "".join(f"<tr><td class='text'>{html.escape(k)}</td><td>{v:.2f}</td></tr>"
                       for k, v in timings.items())
        inputs = prov.get("inputs") or {}
        input_rows = "".join(f"<tr><td class='text'>{html.escape(k)}</td>"
                             f"<td class='text'><code>{v[:16]}…</code></td></tr>"
                             for k, v in inputs.items())
        parts.append(
            "<section><h2>Provenance</h2>"
            f"<p>qsmkit {html.escape(str(prov.get('qsmkit_version', '')))}, "
            f"{html.escape(str(prov.get('created', '')))}<br><code>"
            f"{html.escape(str(prov.get('command', '')))}</code></p>"
            + (f"<h3>Timings (s)</h3><table>{rows}</table>" if rows else "")
            + (f"<h3>Inputs (SHA-256)</h3><table>{input_rows}</table>" if input_rows else "")
            + "<h3>Configuration</h3><pre>"
            + html.escape(json.dumps(prov.get("config"), indent=2)) + "</pre></section>"
        )
    acq_bits = []
    if prov.get("b0_tesla"):
        acq_bits.append(f"B0 {prov['b0_tesla']:g} T")
    if prov.get("echo_times_s"):
        acq_bits.append(f"{len(prov['echo_times_s'])} echoes, TE "
                        + ", ".join(f"{1000 * t:.1f}" for t in prov["echo_times_s"]) + " ms")
    subtitle = " · ".join(acq_bits) or "quantitative susceptibility mapping"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(subtitle)} · qsmkit {__version__}</p></header><main>"
        + "".join(parts) + "</main></body></html>"
    )


def write_report(folder) -> Path:
    """Write ``report.html`` into ``folder`` (atomically: temp file then rename)."""
    folder = Path(folder)
    text = build_report(folder)
    tmp = folder / ".report.html.tmp"
    tmp.write_text(text, encoding="utf-8")
    target = folder / "report.html"
    tmp.replace(target)
    return target

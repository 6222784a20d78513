"""The self-contained ``report.html`` of a run folder.

Everything is embedded (PNG as data URIs, plain JavaScript, inline CSS): the page opens
offline from any location and loads nothing from the network. It is rebuilt from the files
of the folder alone, so ``qsmkit report OUTDIR`` can regenerate it after analyses add their
tables.

Images drawn here (slice viewer, lesion thumbnails) are reoriented to RAS and shown in
radiological convention: anterior up, patient right on the image left, with orientation
letters derived from the affine (:func:`qsmkit.report.figures.plane_views`). χ is drawn in
grey scale (paramagnetic bright) in a window from robust percentiles in the χ mask; the
viewer has a colour toggle (red paramagnetic, blue diamagnetic). Every figure made of
anatomical panels carries its orientation letters in its caption and ``data-orientation``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from qsmkit.io.output import output_name
from qsmkit.io.provenance import read_provenance

# Figures in display order: file name -> caption.
FIGURES = {
    "magnitude.png": "Magnitude (root-sum-of-squares of echoes) with the brain-mask outline",
    "field.png": "Total field (Hz) after multi-echo fit and unwrapping",
    "local_field.png": "Local field (Hz) after background removal",
    "chi.png": "Susceptibility χ (ppm)",
    "chi_error.png": "Error against the phantom truth (ppm)",
    "r2star.png": "R2* (1/s)",
    "lcurve.png": "Regularisation weight chosen automatically (lam=auto): L-curve and GCV of "
                  "closed-form Tikhonov, chosen point in red (docs/inversion.md)",
    "qc_background.png": "QC: residual background field (smooth part of the local field; "
                         "should be small and without a gradient across the brain)",
    "qc_mask.png": "QC: mask coverage (brain mask yellow, χ mask cyan)",
    "qc_residual.png": "QC: echo-fit residual (high values: phase wraps between echoes, flow, "
                       "motion)",
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
    "veins_regions.tsv": "Oxygenation by region",
    "liver.tsv": "Liver: fat, R2*, susceptibility and iron",
}

# Report sections: (anchor, heading, figures, tables) in page order.
SECTIONS = (
    ("maps", "Maps", ("magnitude.png", "field.png", "local_field.png", "chi.png",
                      "chi_error.png", "r2star.png", "lcurve.png"), ()),
    ("qc", "Quality control", ("qc_background.png", "qc_mask.png", "qc_residual.png"), ()),
    ("accuracy", "Accuracy against the truth", ("dgm_scatter.png",), ("metrics.tsv",)),
    ("regions", "Regional susceptibility and iron", ("roi.png",), ("roi.tsv",)),
    ("lesions", "Focal lesions", ("lesions.png",), ("lesions.tsv",)),
    ("rims", "MS lesions: paramagnetic rims", ("rims.png",), ("rims.tsv",)),
    ("veins", "Veins and oxygenation", ("veins.png",), ("veins.tsv", "veins_regions.tsv")),
    ("liver", "Liver", ("liver.png",), ("liver.tsv",)),
)

# Colours of the classes of lesions.tsv and rims.tsv (as in the analysis figures).
CLASS_COLOURS = {
    "microbleed": ("#d9302c", "#fff"),
    "calcification": ("#17b3cf", "#10222a"),
    "indeterminate": ("#f2c12e", "#2a2206"),
    "vein": ("#3fbf4f", "#08240c"),
    "large_hemorrhage": ("#c2189b", "#fff"),
    "artefact": ("#8a94a6", "#fff"),
    "rim+": ("#d9302c", "#fff"),
    "rim-": ("#3b8fd9", "#fff"),
}
CLASS_MEANING = {
    "microbleed": "paramagnetic focus (haemosiderin)",
    "calcification": "diamagnetic focus",
    "indeterminate": "focal but not classifiable with confidence",
    "vein": "on a tubular structure followed along its course (a mimic, not a lesion)",
    "large_hemorrhage": "paramagnetic source over 10 mm or 0.5 mL (haematoma, cavernoma, "
                        "tumour bleed): review",
    "artefact": "mask edge, streak or high echo-fit residual",
    "not_focal": "wider than 10 mm, not paramagnetic enough for a haemorrhage",
    "rim+": "paramagnetic rim lesion",
    "rim-": "no paramagnetic rim",
}
_DEFAULT_CLASS_COLOUR = ("#8a94a6", "#fff")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
 color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#c9cfdb;font-size:13px}
nav{background:#2a3242;padding:6px 24px;font-size:13px}
nav a{color:#dfe6f3;margin-right:14px;text-decoration:none} nav a:hover{text-decoration:underline}
main{padding:16px 24px;max-width:1240px}
section{background:#fff;border-radius:6px;padding:12px 16px;margin:0 0 16px;
 box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:16px;margin:4px 0 10px} h3{font-size:13px;margin:12px 0 6px}
figure{margin:0 0 14px} figure img{max-width:100%;height:auto;border:1px solid #e3e6ec}
figcaption{font-size:12px;color:#556}
table{border-collapse:collapse;font-size:12px;margin-bottom:8px}
th,td{border:1px solid #dde1e8;padding:3px 7px;text-align:right;vertical-align:middle}
th{background:#eef1f6} td.text,th.text{text-align:left}
.tablewrap{overflow-x:auto}
.tag{display:inline-block;padding:1px 7px;border-radius:8px;font-size:11px;background:#eef1f6;
 white-space:nowrap}
.legend{font-size:12px;color:#445;margin:4px 0 10px} .legend .tag{margin-right:4px}
.counts{margin:4px 0 8px;font-size:13px} .counts .tag{font-size:12px;margin-right:6px}
.viewer{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
.viewer-frame{position:relative;display:inline-block;background:#000;line-height:0}
.viewer-frame img{image-rendering:pixelated;display:block}
.orient{position:absolute;color:#1d2330;font:bold 13px system-ui,sans-serif;line-height:1;
 text-shadow:0 0 2px #fff,0 0 3px #fff}
.viewer-frame:focus{outline:2px solid #3b8fd9}
.orientation{color:#334;font-size:11px}
.orient.top{top:4px;left:50%;transform:translateX(-50%)}
.orient.bottom{bottom:4px;left:50%;transform:translateX(-50%)}
.orient.left{left:5px;top:50%;transform:translateY(-50%)}
.orient.right{right:5px;top:50%;transform:translateY(-50%)}
.colourbar{display:flex;gap:6px;align-items:stretch;font-size:11px;max-height:560px}
.colourbar .bar{width:16px;border:1px solid #99a}
.colourbar .ticks{display:flex;flex-direction:column;justify-content:space-between}
.controls{font-size:13px;max-width:300px} .controls input{width:260px}
pre{font-size:11px;background:#f5f6f8;padding:8px;overflow:auto;max-height:320px}
.provline{font-size:13px}
.thumb{width:85px;height:85px;image-rendering:pixelated;border:2px solid #ccd;display:block}
.muted{color:#667;font-size:12px}
section.warnings{background:#fff4e5;border:2px solid #d9822b}
section.warnings li{margin:4px 0;font-size:13px} .warncode{font-weight:bold;color:#a04e00}
"""

VIEWER_JS = """
(function(){
  var slices = JSON.parse(document.getElementById('chi-slices').textContent);
  var lut = JSON.parse(document.getElementById('chi-colour-lut').textContent);
  var img = document.getElementById('viewer-image');
  var toggle = document.getElementById('viewer-colour');
  var bar = document.getElementById('viewer-bar');
  var colourUris = {};
  function coloured(i, done){
    // Grey level g of the stored slice -> the diverging colour map (same window).
    if (colourUris[i]) { done(colourUris[i]); return; }
    var source = new Image();
    source.onload = function(){
      var canvas = document.createElement('canvas');
      canvas.width = source.naturalWidth; canvas.height = source.naturalHeight;
      var ctx = canvas.getContext('2d');
      ctx.drawImage(source, 0, 0);
      var data = ctx.getImageData(0, 0, canvas.width, canvas.height);
      for (var p = 0; p < data.data.length; p += 4) {
        var c = lut[data.data[p]];
        data.data[p] = c[0]; data.data[p + 1] = c[1]; data.data[p + 2] = c[2];
      }
      ctx.putImageData(data, 0, 0);
      colourUris[i] = canvas.toDataURL('image/png');
      done(colourUris[i]);
    };
    source.src = slices[i];
  }
  function paint(i){
    if (toggle && toggle.checked) {
      coloured(i, function(uri){ if (img.getAttribute('data-slice') === String(i)) {
        img.src = uri; img.setAttribute('data-cmap', 'colour'); } });
    } else { img.src = slices[i]; img.setAttribute('data-cmap', 'grey'); }
  }
  var slider = document.getElementById('viewer-slider');
  var label = document.getElementById('viewer-label');
  function current(){ return parseInt(slider.value, 10) || 0; }
  function show(i){
    i = Math.max(0, Math.min(slices.length - 1, i|0));
    var changed = img.getAttribute('data-slice') !== String(i);
    img.setAttribute('data-slice', String(i));
    if (changed) { paint(i); }
    slider.value = String(i);
    label.textContent = 'axial slice ' + i + ' (' + (i + 1) + ' of ' + slices.length +
      ', inferior to superior)';
  }
  slider.max = String(slices.length - 1);
  slider.addEventListener('input', function(){ show(current()); });
  img.addEventListener('wheel', function(e){
    e.preventDefault(); show(current() + (e.deltaY > 0 ? -1 : 1));
  }, {passive: false});
  document.getElementById('viewer-frame').addEventListener('keydown', function(e){
    if (e.key === 'ArrowUp' || e.key === 'PageUp') { show(current() + 1); e.preventDefault(); }
    if (e.key === 'ArrowDown' || e.key === 'PageDown') { show(current() - 1); e.preventDefault(); }
  });
  if (toggle) {
    toggle.addEventListener('change', function(){
      bar.style.background = bar.getAttribute(toggle.checked ? 'data-colour' : 'data-grey');
      paint(current());
    });
  }
  show(parseInt(img.getAttribute('data-slice'), 10) || 0);
})();
"""


def _b64_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _data_uri_png(path: Path) -> str:
    return _b64_uri(path.read_bytes())


def _png_bytes(rgb: np.ndarray) -> bytes:
    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, rgb, format="png")
    return buffer.getvalue()


def _radiological(plane_xy: np.ndarray, affine=None) -> np.ndarray:
    """An axial (x, y) plane of an RAS volume as PNG rows (row 0 at the top): anterior up,
    patient right on the left (the flips of :func:`qsmkit.report.figures.plane_views`)."""
    from qsmkit.report.figures import plane_views

    view = plane_views(np.eye(4) if affine is None else affine)["axial"]
    return view.image(plane_xy[:, :, None], 0)[::-1]


def _grey_rgb(plane: np.ndarray, limit: float) -> np.ndarray:
    """χ in grey scale in the window ±limit (paramagnetic bright), as 8-bit RGB."""
    scaled = np.clip((np.nan_to_num(plane) / limit + 1) / 2, 0, 1)
    grey = np.round(scaled * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def colour_lut() -> list[list[int]]:
    """256 RGB entries of the diverging χ colour map, indexed by the grey level of
    :func:`_grey_rgb` (the viewer's colour toggle)."""
    import matplotlib

    from qsmkit.report.figures import SIGNED_CMAP

    cmap = matplotlib.colormaps[SIGNED_CMAP]
    return [[int(round(255 * c)) for c in cmap(g / 255)[:3]] for g in range(256)]


def _ras_zooms(affine) -> np.ndarray:
    import nibabel as nib

    affine = np.asarray(affine, dtype=float)
    order = nib.orientations.io_orientation(affine)[:, 0].astype(int)
    zooms = np.empty(3)
    zooms[order] = nib.affines.voxel_sizes(affine)
    return zooms


def _mask_box(region, margin: int = 3) -> tuple[slice, slice]:
    """In-plane (x, y) bounding box of a 3D mask over all slices, with a margin."""
    if region is None or not region.any():
        shape = region.shape if region is not None else (None, None)
        return slice(0, shape[0]), slice(0, shape[1])
    points = np.argwhere(region)
    low, high = points.min(axis=0), points.max(axis=0)
    return tuple(slice(max(int(low[a]) - margin, 0), min(int(high[a]) + margin + 1,
                                                        region.shape[a])) for a in (0, 1))


def chi_slice_uris(chi: np.ndarray, affine, mask=None, *, limit=None,
                   crop_to_mask: bool = False) -> tuple[list[str], float]:
    """Axial slices of chi as grey-scale PNG data URIs in one window, inferior to superior.

    Slices are reoriented to RAS and drawn in radiological convention (anterior up, patient
    right on the image left), cropped in-plane to the mask (plus 3 voxels) when
    ``crop_to_mask``. The window is symmetric about zero, ±``limit`` ppm (default: the
    robust percentiles of :func:`qsmkit.report.figures.chi_window` in ``mask``); grey level
    ``g`` is χ = (2 g / 255 − 1) × limit. Returns the URIs and the window half-width (ppm).
    """
    from qsmkit.report.figures import chi_window, ras_affine, to_ras

    data = to_ras(np.asarray(chi, np.float32), affine)
    region = to_ras(np.asarray(mask, bool), affine) if mask is not None else None
    limit = limit or chi_window(data, region)
    if crop_to_mask and region is not None:
        data = data[_mask_box(region)]
    display = ras_affine(affine, np.shape(chi))
    uris = [_b64_uri(_png_bytes(_grey_rgb(_radiological(data[:, :, k], display), limit)))
            for k in range(data.shape[2])]
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
    if not math.isfinite(number):
        return html.escape(value)
    if number.is_integer() and abs(number) < 1e9 and "." not in value and "e" not in value.lower():
        return str(int(number))
    return f"{number:.4g}"


def class_tag(name: str) -> str:
    """A coloured tag for a lesion or rim class."""
    background, colour = CLASS_COLOURS.get(name, _DEFAULT_CLASS_COLOUR)
    title = CLASS_MEANING.get(name, "")
    return (f"<span class='tag class-tag' data-class='{html.escape(name)}' "
            f"title='{html.escape(title)}' style='background:{background};color:{colour}'>"
            f"{html.escape(name)}</span>")


def _class_summary(classes: list[str]) -> str:
    """Counts per class (known classes first) and a legend of the classes present."""
    order = [c for c in CLASS_COLOURS if c in classes] + sorted(
        {c for c in classes if c not in CLASS_COLOURS})
    if not order:
        return ""
    counts = " ".join(f"<b>{classes.count(c)}</b> {class_tag(c)}" for c in order)
    legend = "".join(f"{class_tag(c)} {html.escape(CLASS_MEANING[c])}; " for c in order
                     if c in CLASS_MEANING)
    total = len(classes)
    return (f"<p class='counts'>{total} finding{'s' if total != 1 else ''}: {counts}</p>"
            + (f"<p class='legend'>{legend.rstrip('; ')}</p>" if legend else ""))


def table_html(path: Path, *, max_rows: int = 200, thumbnails: dict | None = None,
               tag_column: str = "class") -> str:
    """An HTML table of a TSV file; the ``tag_column`` is drawn as coloured class tags, and
    ``thumbnails`` (first-column value -> image URI) add an image column."""
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
    tag_index = header.index(tag_column) if tag_column in header else None
    head_cells = [f'<th class="{"" if numeric[j] else "text"}">{html.escape(h)}</th>'
                  for j, h in enumerate(header)]
    if thumbnails:  # the image goes next to the id, where it is seen without scrolling
        head_cells.insert(1, "<th class='text'>axial χ</th>")
    head = "".join(head_cells)
    body = []
    for row in rows[:max_rows]:
        cells = []
        for j, value in enumerate(row):
            kind = "" if j < len(numeric) and numeric[j] else "text"
            text = class_tag(value) if j == tag_index and value else _format_cell(value)
            cells.append(f'<td class="{kind}">{text}</td>')
        if thumbnails:
            uri = thumbnails.get(row[0]) if row else None
            if uri:
                colour = CLASS_COLOURS.get(row[tag_index] if tag_index is not None
                                           and tag_index < len(row) else "",
                                           _DEFAULT_CLASS_COLOUR)[0]
                cells.insert(1, f'<td><img class="thumb" style="border-color:{colour}" '
                                f'src="{uri}" alt="axial χ around {html.escape(row[0])}"></td>')
            else:
                cells.insert(1, "<td></td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = (f"<p class='muted'>{len(rows) - max_rows} more rows in {html.escape(path.name)}</p>"
            if len(rows) > max_rows else "")
    return (f"<div class='tablewrap'><table data-source='{html.escape(path.name)}'><thead><tr>"
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{more}")


def _thumbnails(folder: Path, table_name: str, *, half: int = 8) -> dict[str, str]:
    """Axial chi patches (RAS, radiological, grey: paramagnetic bright, in ±max|χ| of the
    patch) centred on each row's voxel (x, y, z)."""
    from qsmkit.io.nifti import load_nifti
    from qsmkit.report.figures import to_ras

    table, chi_path = folder / table_name, folder / "chi.nii.gz"
    if not (table.exists() and chi_path.exists()):
        return {}
    header, rows = _read_tsv(table)
    col = {h: i for i, h in enumerate(header)}
    if not {"id", "x", "y", "z"} <= col.keys():
        return {}
    chi, affine, _ = load_nifti(chi_path)
    chi = np.asarray(chi, np.float32)
    if chi.ndim != 3:
        return {}
    from qsmkit.report.figures import ras_affine

    display = ras_affine(affine, chi.shape)
    padded = np.pad(chi, half)
    thumbs = {}
    for row in rows[:200]:
        try:
            centre = [int(round(float(row[col[k]]))) for k in ("x", "y", "z")]
        except (ValueError, IndexError):
            continue
        if not all(0 <= c < n for c, n in zip(centre, chi.shape, strict=True)):
            continue
        box = padded[tuple(slice(c, c + 2 * half + 1) for c in centre)]
        # A cube centred on the lesion stays centred under axis flips and permutations.
        plane = to_ras(box, affine)[:, :, half]
        limit = max(float(np.abs(plane).max()), 1e-3)
        thumbs[row[col["id"]]] = _b64_uri(_png_bytes(_grey_rgb(_radiological(plane, display),
                                                               limit)))
    return thumbs


def lesion_thumbnails(folder: Path) -> dict[str, str]:
    """A small axial chi patch around each lesion of lesions.tsv, keyed by lesion id."""
    return _thumbnails(Path(folder), "lesions.tsv")


def _colourbar_css(limit: float, height: int) -> str:
    import matplotlib

    from qsmkit.report.figures import SIGNED_CMAP

    cmap = matplotlib.colormaps[SIGNED_CMAP]
    stops = ", ".join(
        "#{:02x}{:02x}{:02x}".format(*(int(255 * c) for c in cmap(t)[:3]))
        for t in np.linspace(1, 0, 11)
    )
    grey = "linear-gradient(to bottom, #ffffff, #000000)"
    colour = f"linear-gradient(to bottom, {stops})"
    return (f"<div class='colourbar' title='χ scale' style='height:{height}px'>"
            f"<div class='bar' id='viewer-bar' style='background:{grey}' data-grey='{grey}' "
            f"data-colour='{colour}'></div><div class='ticks'>"
            f"<span>+{limit:.3g} ppm</span><span>0 ppm</span><span>−{limit:.3g} ppm</span></div>"
            "</div>")


def _viewer_section(folder: Path) -> str:
    from qsmkit.io.nifti import load_nifti
    from qsmkit.report.figures import to_ras

    chi, affine, _ = load_nifti(folder / "chi.nii.gz")
    if np.asarray(chi).ndim != 3:
        return ""
    mask = None
    if (folder / "mask.nii.gz").exists():
        mask = np.asarray(load_nifti(folder / "mask.nii.gz")[0]) > 0.5
    uris, limit = chi_slice_uris(chi, affine, mask, crop_to_mask=True)
    shape = to_ras(np.zeros(np.asarray(chi).shape, np.uint8), affine).shape
    if mask is not None:
        box = _mask_box(to_ras(mask, affine))
        shape = (len(range(*box[0].indices(shape[0]))), len(range(*box[1].indices(shape[1]))),
                 shape[2])
    zooms = _ras_zooms(affine)
    width = 440
    height = max(1, round(width * shape[1] * zooms[1] / (shape[0] * zooms[0])))
    if height > 560:
        width, height = max(1, round(width * 560 / height)), 560
    start = len(uris) // 2
    if mask is not None and mask.any():
        ras_mask = to_ras(mask, affine)
        start = int(round(np.argwhere(ras_mask)[:, 2].mean()))
    from qsmkit.report.figures import plane_views

    left, right, bottom, top = plane_views(affine, np.shape(chi))["axial"].letters
    letters = "".join(f"<span class='orient {pos}'>{text}</span>" for pos, text in
                      (("top", top), ("bottom", bottom), ("left", left), ("right", right)))
    return (
        "<section id='viewer'><h2>χ slice viewer</h2><div class='viewer'>"
        f"<div class='viewer-frame' id='viewer-frame' tabindex='0' title='click, then ↑/↓'>"
        f"<img id='viewer-image' alt='χ axial slice, {left} on the left, {top} at the top' "
        f"data-orientation='axial: left {left} right {right} bottom {bottom} top {top}' "
        f"width='{width}' height='{height}' data-slice='{start}' data-cmap='grey' "
        f"src='{uris[start]}'>"
        f"{letters}</div>{_colourbar_css(limit, height)}"
        "<div class='controls'><label for='viewer-slider'>slice</label><br>"
        f"<input id='viewer-slider' type='range' min='0' max='{len(uris) - 1}' value='{start}' "
        "step='1' aria-label='axial slice'><p id='viewer-label'></p>"
        "<p><label><input type='checkbox' id='viewer-colour'> colour (red paramagnetic, "
        "blue diamagnetic)</label></p>"
        f"<p class='muted'>Axial χ, window ±{limit:.3g} ppm (2nd–98th percentile of χ in the "
        "mask, symmetric about 0): bright paramagnetic (iron, blood), dark diamagnetic "
        "(calcium, myelin). Radiological view: patient right on the left, anterior up. "
        "Drag the slider, scroll over the image, or click it and press ↑/↓.</p></div></div>"
        f"<script type='application/json' id='chi-slices'>{json.dumps(uris)}</script>"
        f"<script type='application/json' id='chi-colour-lut'>{json.dumps(colour_lut())}"
        "</script>"
        f"<script>{VIEWER_JS}</script></section>"
    )


def figure_orientation(path: Path) -> str:
    """The orientation letters a figure recorded in its PNG (``Description`` text chunk,
    written by :func:`qsmkit.report.figures.orientation_metadata`), or ""."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            text = str(image.info.get("Description", ""))
    except (OSError, ValueError, ImportError):
        return ""
    return text.removeprefix("orientation ") if text.startswith("orientation ") else ""


def _figure_html(folder: Path, name: str) -> str:
    caption = FIGURES.get(name, name)
    orientation = figure_orientation(folder / name)
    extra = (f" data-orientation=\"{html.escape(orientation)}\"" if orientation else "")
    note = (f"<br><span class='orientation'>Orientation (radiological): "
            f"{html.escape(orientation)}</span>" if orientation else "")
    return (f'<figure><img src="{_data_uri_png(folder / name)}" alt="{html.escape(caption)}" '
            f'data-file="{html.escape(name)}"{extra}><figcaption>{html.escape(caption)}'
            f"{note}</figcaption></figure>")


def _kv_table(items: dict) -> str:
    rows = []
    for key, value in items.items():
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value)
        else:
            text = str(value)
        rows.append(f"<tr><td class='text'>{html.escape(str(key))}</td>"
                    f"<td class='text'>{html.escape(text)}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _qc_numbers(folder: Path, prov: dict) -> dict:
    numbers = dict(prov.get("qc") or {})
    path = folder / "qc.json"
    if path.exists():
        try:
            numbers.update(json.loads(path.read_text()))
        except (ValueError, OSError):
            pass
    return {k: v for k, v in numbers.items() if isinstance(v, (int, float, str))}


def _warnings_section(prov: dict) -> str:
    """The quality-gate findings of ``qsmkit.json`` (see :mod:`qsmkit.qc`) in a visible box."""
    items = []
    for w in prov.get("warnings") or []:
        if not isinstance(w, dict):
            continue
        value, threshold = w.get("value"), w.get("threshold")
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in (("value", value),
                                                       ("threshold", threshold))
                            if isinstance(v, (int, float)))
        items.append(f"<li><span class='warncode'>[{html.escape(str(w.get('code', '')))}]"
                     f"</span> {html.escape(str(w.get('message', '')))}"
                     + (f" ({html.escape(numbers)})" if numbers else "")
                     + f" — {html.escape(str(w.get('advice', '')))}</li>")
    if not items:
        return ""
    return ("<section id='warnings' class='warnings'><h2>Quality warnings "
            f"({len(items)})</h2><ul>{''.join(items)}</ul></section>")


def _provenance_section(prov: dict) -> str:
    timings = {k: v for k, v in (prov.get("timings_s") or {}).items()
               if isinstance(v, (int, float))}
    rows = "".join(f"<tr><td class='text'>{html.escape(str(k))}</td><td>{v:.2f}</td></tr>"
                   for k, v in timings.items())
    if timings:
        rows += f"<tr><th class='text'>total</th><th>{sum(timings.values()):.2f}</th></tr>"
    inputs = prov.get("inputs") or {}
    input_rows = "".join(
        f"<tr><td class='text'>{html.escape(str(k))}</td><td class='text' "
        f"title='{html.escape(str(v))}'><code>{html.escape(str(v)[:16])}…</code></td></tr>"
        for k, v in inputs.items())
    acquisition = {k: prov[k] for k in ("b0_tesla", "echo_times_s", "manufacturer",
                                        "series_description") if prov.get(k) not in (None, "")}
    info = prov.get("info") or {}
    for key in ("voxel_size_mm", "b0_dir_voxel", "mask_voxels"):
        if key in info:
            acquisition[key] = info[key]
    return (
        "<section id='provenance'><h2>Provenance</h2>"
        f"<p class='provline'>qsmkit {html.escape(str(prov.get('qsmkit_version', '')))}, "
        f"{html.escape(str(prov.get('created', '')))}, Python "
        f"{html.escape(str(prov.get('python', '')))} on "
        f"{html.escape(str(prov.get('platform', '')))}<br><code>"
        f"{html.escape(str(prov.get('command', '')))}</code></p>"
        + (f"<h3>Acquisition</h3>{_kv_table(acquisition)}" if acquisition else "")
        + (f"<h3>Timings (s)</h3><table>{rows}</table>" if rows else "")
        + (f"<h3>Inputs (SHA-256)</h3><table>{input_rows}</table>" if input_rows else "")
        + "<h3>Configuration</h3><pre>"
        + html.escape(json.dumps(prov.get("config"), indent=2)) + "</pre></section>"
    )


def build_report(folder) -> str:
    """HTML text of the report for a run folder."""
    from qsmkit import __version__

    folder = Path(folder)
    prov = read_provenance(folder)
    title = prov.get("title") or f"qsmkit report: {output_name(folder)}"
    parts: list[tuple[str, str, str]] = []  # (anchor, nav label, html)
    warnings = _warnings_section(prov)
    if warnings:
        parts.append(("warnings", "Warnings", warnings))
    summary = prov.get("summary")
    if summary:
        parts.append(("summary", "Summary",
                      f"<section id='summary'><h2>Summary</h2>{_kv_table(summary)}</section>"))
    shown = set()
    for anchor, heading, figures, tables in SECTIONS:
        body = []
        if anchor == "qc":
            numbers = _qc_numbers(folder, prov)
            if numbers:
                body.append(_kv_table(numbers))
        for name in figures:
            if (folder / name).exists():
                body.append(_figure_html(folder, name))
                shown.add(name)
        for name in tables:
            if not (folder / name).exists():
                continue
            header, rows = _read_tsv(folder / name)
            thumbs = None
            if name in ("lesions.tsv", "rims.tsv"):
                thumbs = _thumbnails(folder, name)
                if "class" in header:
                    j = header.index("class")
                    body.append(_class_summary([r[j] for r in rows if j < len(r) and r[j]]))
            if len(tables) > 1:
                body.append(f"<h3>{html.escape(TABLES[name])}</h3>")
            body.append(table_html(folder / name, thumbnails=thumbs))
        if anchor == "maps" and (folder / "chi.nii.gz").exists():
            viewer = _viewer_section(folder)
            if viewer:
                parts.append(("viewer", "χ viewer", viewer))
        if body:
            parts.append((anchor, heading, f"<section id='{anchor}'><h2>{html.escape(heading)}"
                                            f"</h2>{''.join(body)}</section>"))
    others = [n for n in FIGURES if n not in shown and (folder / n).exists()]
    if others:
        parts.append(("figures", "Other figures", "<section id='figures'><h2>Other figures</h2>"
                      + "".join(_figure_html(folder, n) for n in others) + "</section>"))
    if prov:
        parts.append(("provenance", "Provenance", _provenance_section(prov)))
    acq_bits = []
    if prov.get("b0_tesla"):
        acq_bits.append(f"B0 {prov['b0_tesla']:g} T")
    if prov.get("echo_times_s"):
        acq_bits.append(f"{len(prov['echo_times_s'])} echoes, TE "
                        + ", ".join(f"{1000 * t:.1f}" for t in prov["echo_times_s"]) + " ms")
    subtitle = " · ".join(acq_bits) or "quantitative susceptibility mapping"
    nav = "".join(f"<a href='#{a}'>{html.escape(label)}</a>" for a, label, _ in parts)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        "<link rel='icon' href='data:,'>"
        f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(subtitle)} · qsmkit {__version__}</p></header>"
        + (f"<nav>{nav}</nav>" if nav else "") + "<main>"
        + "".join(text for _, _, text in parts) + "</main></body></html>"
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

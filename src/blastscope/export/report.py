"""One self-contained HTML report per slide, with its plots also written as PNG files.

The report shows the slide call (class, per-class probabilities with their 95% interval, as a
table and a bar chart), the cell counts and blast percentage, a histogram of ``p_blast`` with
the blast threshold, a gallery of the cells to review (the highest ``p_blast`` first, each with
its label id, so a haematologist can check the calls the count rests on), a thumbnail of the
overlay, the models' hashes and the parameters from the provenance, and the notices. Plots
are drawn with matplotlib's Agg renderer (no GUI backend) and embedded as base64 PNG, so the
HTML file stands alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.export._atomic import AtomicFiles
from blastscope.export._style import NO_CALL, class_colour
from blastscope.export.geojson import slide_call_dict
from blastscope.export.images import overlay_rgb, png_bytes
from blastscope.jsonable import dumps_json
from blastscope.result import SlideResult, utc_timestamp
from blastscope.slide_call import call_details, call_headline

THUMBNAIL_MAX_SIDE_PX = 800
GALLERY_CELLS = 24
GALLERY_WINDOW_UM = 24.0
GALLERY_CELL_PX = 96
DISCLAIMER = "Demonstration models: not for diagnosis."
PAGE_STYLE = (
    "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "text-align:left}.warning{color:#a00;font-weight:bold}.call{font-size:1.3em}"
    "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:0.8em}"
)
"""The CSS of blastscope's HTML reports."""


def report_plot_paths(path: str | Path) -> dict[str, Path]:
    """The PNG files written beside a report: ``x_report.html`` -> ``x_report_call.png``, ..."""
    path = Path(path)
    return {
        name: path.with_name(f"{path.stem}_{name}.png")
        for name in ("call", "p_blast", "gallery", "overlay")
    }


def review_cells(cells: pd.DataFrame, n: int = GALLERY_CELLS) -> pd.DataFrame:
    """The nucleated cells to review first: the highest ``p_blast`` (at most ``n``)."""
    if "p_blast" not in cells:
        return cells.iloc[:0]
    scored = cells[cells["p_blast"].notna()]
    return scored.sort_values("p_blast", ascending=False, kind="stable").head(n)


def review_gallery(
    image: np.ndarray, result: SlideResult, n: int = GALLERY_CELLS
) -> np.ndarray | None:
    """A grid (RGB uint8) of the cells :func:`review_cells` picks, each a ``GALLERY_WINDOW_UM``
    window around the cell with its label id and p_blast written under it; None without
    scored cells."""
    from PIL import Image, ImageDraw

    from blastscope.crops import extract_crops

    chosen = review_cells(result.cells, n)
    if chosen.empty:
        return None
    crops = extract_crops(
        np.asarray(image)[..., :3],
        chosen[["centroid_y", "centroid_x"]].to_numpy(),
        pixel_size_um=result.pixel_size_um,
        window_um=GALLERY_WINDOW_UM,
        out_pixel_size_um=GALLERY_WINDOW_UM / GALLERY_CELL_PX,
    )
    columns = min(len(crops), 8)
    rows = math.ceil(len(crops) / columns)
    caption = 16
    sheet = Image.new(
        "RGB", (columns * GALLERY_CELL_PX, rows * (GALLERY_CELL_PX + caption)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for k, (crop, (_, cell)) in enumerate(zip(crops, chosen.iterrows(), strict=True)):
        x, y = (k % columns) * GALLERY_CELL_PX, (k // columns) * (GALLERY_CELL_PX + caption)
        sheet.paste(Image.fromarray(crop), (x, y))
        text = f"#{int(cell['label'])} p={cell['p_blast']:.2f}"
        draw.text((x + 3, y + GALLERY_CELL_PX + 2), text, fill=(0, 0, 0))
    return np.asarray(sheet)


def blast_threshold(provenance: Mapping[str, Any]) -> float | None:
    """The blast threshold recorded in the provenance: the first number in [0, 1] under a key
    ``threshold`` inside a section whose key mentions ``blast`` (e.g. ``{"blast": {"threshold":
    0.5}}``); None if there is none."""
    for path, value in _walk(provenance, ()):
        inside_blast = any("blast" in str(key).lower() for key in path[:-1])
        if path[-1] == "threshold" and inside_blast and _number(value) and 0 <= value <= 1:
            return float(value)
    return None


def model_hashes(provenance: Mapping[str, Any]) -> dict[str, str]:
    """Every ``*sha256*`` entry of the provenance, by its dotted key path."""
    return {
        ".".join(str(key) for key in path): str(value)
        for path, value in _walk(provenance, ())
        if "sha256" in str(path[-1]).lower() and isinstance(value, str)
    }


def _walk(value: Any, path: tuple) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, (*path, key))
    elif path:
        yield path, value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def report_files(
    path: str | Path,
    result: SlideResult,
    image: np.ndarray,
    *,
    threshold: float | None = None,
    title: str | None = None,
) -> dict[Path, bytes]:
    """The report's files (HTML and PNG plots) as bytes by path; see :func:`write_report`."""
    path = Path(path)
    plot_paths = report_plot_paths(path)
    call = slide_call_dict(result.slide_call)
    threshold = blast_threshold(result.provenance) if threshold is None else float(threshold)
    plots: dict[str, bytes] = {}
    if call is not None and call.get("probabilities"):
        plots["call"] = _call_figure(call)
    if "p_blast" in result.cells and result.cells["p_blast"].notna().any():
        plots["p_blast"] = _p_blast_figure(result.cells["p_blast"], threshold)
    gallery = review_gallery(image, result)
    if gallery is not None:
        plots["gallery"] = png_bytes(gallery)
    plots["overlay"] = png_bytes(_thumbnail(overlay_rgb(image, result.labels, result.cells)))
    page = _page(title or path.stem, result, call, threshold, plots, plot_paths)
    files = {path: page.encode("utf-8")}
    files.update({plot_paths[name]: data for name, data in plots.items()})
    return files


def write_report(
    path: str | Path,
    result: SlideResult,
    image: np.ndarray,
    *,
    threshold: float | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the HTML report of one slide and its PNG plots beside it; returns the paths.

    ``image`` (Y, X, 3) is the analysed field (for the overlay thumbnail); ``threshold`` the
    blast threshold drawn on the ``p_blast`` histogram (default: from the provenance, see
    :func:`blast_threshold`); ``title`` defaults to the file's stem.
    """
    files = report_files(path, result, image, threshold=threshold, title=title)
    with AtomicFiles(overwrite=overwrite) as pending:
        for target, data in files.items():
            pending.temporary(target).write_bytes(data)
    return list(files)


def _figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _call_figure(call: Mapping[str, Any]) -> bytes:
    """Bar chart of the pooled probability per class with its 95% interval."""
    from matplotlib.figure import Figure

    names = list(call["probabilities"])
    values = np.array([_or_nan(call["probabilities"][name]) for name in names])
    intervals = call.get("interval") or {}
    low = np.array([_or_nan((intervals.get(name) or [None, None])[0]) for name in names])
    high = np.array([_or_nan((intervals.get(name) or [None, None])[1]) for name in names])
    errors = np.nan_to_num(np.vstack([values - low, high - values]).clip(0.0, None))
    figure = Figure(figsize=(6.0, 0.6 + 0.5 * len(names)))
    axes = figure.subplots()
    colours = [np.array(class_colour(name, names)) / 255.0 for name in names]
    axes.barh(names, np.nan_to_num(values), xerr=errors, color=colours, capsize=4)
    axes.set_xlim(0.0, 1.0)
    axes.invert_yaxis()
    axes.set_xlabel("pooled probability (bars: 95% bootstrap interval)")
    axes.set_title(f"Slide call: {call.get('call') or NO_CALL}")
    return _figure_png(figure)


def _p_blast_figure(p_blast: pd.Series, threshold: float | None) -> bytes:
    """Histogram of the cells' blast probabilities with the threshold as a vertical line."""
    from matplotlib.figure import Figure

    values = p_blast.to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    figure = Figure(figsize=(6.0, 3.2))
    axes = figure.subplots()
    axes.hist(values, bins=np.linspace(0.0, 1.0, 26), color="#4a7fb5", edgecolor="white")
    if threshold is not None:
        axes.axvline(threshold, color="#d62728", linewidth=2, label=f"threshold {threshold:g}")
        axes.legend(loc="upper center")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("p_blast")
    axes.set_ylabel("cells")
    axes.set_title(f"Blast probability of {len(values)} nucleated cells")
    return _figure_png(figure)


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    scale = THUMBNAIL_MAX_SIDE_PX / max(rgb.shape[:2])
    if scale >= 1.0:
        return rgb
    shape = (max(1, round(rgb.shape[0] * scale)), max(1, round(rgb.shape[1] * scale)))
    small = resize(rgb, shape, anti_aliasing=True, preserve_range=True)
    return np.round(small).astype(np.uint8)


def _or_nan(value: Any) -> float:
    return float(value) if _number(value) else math.nan


def _cell_counts(result: SlideResult, call: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    cells = result.cells
    n_nucleated = result.n_nucleated
    n_blasts = result.n_blasts
    rows = [("Cells segmented", str(len(cells))), ("Nucleated cells", str(n_nucleated))]
    if "is_blast" in cells:
        rows.append(("Blasts", str(n_blasts)))
        fraction = 100.0 * n_blasts / n_nucleated if n_nucleated else math.nan
        rows.append(("Blast percentage (blasts / nucleated)", _percent(fraction)))
    if "blast_override" in cells:
        overrides = int(cells["blast_override"].notna().sum())
        rows.append(("Blast calls set by the user", str(overrides)))
    if call is not None:
        rows.append(("Blasts pooled for the slide call", str(call.get("n_blasts"))))
    return rows


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1f}%"


def _image_tag(data: bytes, alt: str, file_name: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(alt)} (also saved as {html.escape(file_name)})</figcaption>"
        "</figure>"
    )


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...] | None = None) -> str:
    head = ""
    if header:
        head = "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table>{head}{body}</table>"


def _call_section(call: Mapping[str, Any] | None, plots: Mapping[str, bytes], names) -> str:
    if call is None:
        return "<p>No slide call: the mutation stage has not run on this slide.</p>"
    headline = f"<strong>{html.escape(call_headline(call))}</strong>"
    intervals = call.get("interval") or {}
    rows = []
    for name, probability in (call.get("probabilities") or {}).items():
        low, high = [*(intervals.get(name) or []), None, None][:2]
        rows.append(
            (
                str(name),
                _fixed(probability),
                f"{_fixed(low)} – {_fixed(high)}",
            )
        )
    details = (
        f"{call_details(call)}; {call.get('n_images')} image(s), minimum probability "
        f"{call.get('min_probability')}, {call.get('n_bootstrap')} bootstrap resamples"
    )
    parts = [
        f'<p class="call">{headline}</p>',
        _table(rows, ("class", "probability", "95% interval")),
        f"<p>{html.escape(details)}</p>",
    ]
    if "call" in plots:
        parts.append(_image_tag(plots["call"], "Pooled class probabilities", names["call"].name))
    return "".join(parts)


def _fixed(value: Any) -> str:
    return f"{value:.3f}" if _number(value) else "n/a"


def _call_name(value: Any) -> str:
    return {True: "blast", False: "non-blast"}.get(value, "the model's call")


def _override_section(overrides: list[Mapping[str, Any]]) -> list[str]:
    """The audit of manual blast calls: which cell changed, from what to what, when."""
    if not overrides:
        return []
    rows = [
        (
            str(record.get("time", "")),
            f"cell {record.get('label')}",
            _call_name(record.get("before")),
            _call_name(record.get("after")),
            _fixed(record.get("p_blast")),
            "undo" if record.get("action") == "undo" else "",
        )
        for record in overrides
    ]
    header = ("when (UTC)", "cell", "from", "to", "p_blast", "")
    return ["<h2>Blast calls changed by hand</h2>", _table(rows, header)]


def _page(
    title: str,
    result: SlideResult,
    call: Mapping[str, Any] | None,
    threshold: float | None,
    plots: Mapping[str, bytes],
    names: Mapping[str, Path],
) -> str:
    provenance = result.provenance or {}
    hashes = sorted(model_hashes(provenance).items())
    threshold_text = "not recorded" if threshold is None else f"{threshold:g}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="warning">{html.escape(DISCLAIMER)}</p>',
        f"<p>Report written {html.escape(utc_timestamp())}; pixel size "
        f"{result.pixel_size_um:g} µm; blast threshold {html.escape(threshold_text)}.</p>",
        "<h2>Slide call</h2>",
        _call_section(call, plots, names),
        "<h2>Cells</h2>",
        _table(_cell_counts(result, call)),
    ]
    if "p_blast" in plots:
        sections.append(_image_tag(plots["p_blast"], "Histogram of p_blast", names["p_blast"].name))
    if "gallery" in plots:
        sections += [
            "<h2>Cells to review</h2>",
            f"<p>The {len(review_cells(result.cells))} cells with the highest blast probability, "
            f"each a {GALLERY_WINDOW_UM:g} µm window (label id and p_blast below it).</p>",
            _image_tag(plots["gallery"], "Cells with the highest p_blast", names["gallery"].name),
        ]
    sections += _override_section(provenance.get("review", {}).get("overrides", []))
    sections += [
        "<h2>Overlay</h2>",
        _image_tag(
            plots["overlay"],
            "Cells coloured by blast probability (viridis, as in the viewer: dark purple 0, "
            "yellow 1; grey: not nucleated)",
            names["overlay"].name,
        ),
        "<h2>Models and parameters</h2>",
        _table([(key, value) for key, value in hashes], ("item", "sha256"))
        if hashes
        else "<p>No model hashes recorded.</p>",
        f"<pre>{html.escape(dumps_json(provenance, where='provenance'))}</pre>",
    ]
    if result.notices:
        items = "".join(f"<li>{html.escape(notice)}</li>" for notice in result.notices)
        sections += ["<h2>Notices</h2>", f"<ul>{items}</ul>"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )

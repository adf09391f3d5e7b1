"""The report of a whole slide's tiled run: the call, the counts and the area they were counted
over, a thumbnail of the slide with every blast marked, and a map of where the blasts are.

Built from what the run streamed to disk (the cells table with level-0 centroids, the slide
record) and one low pyramid level of the slide, never its full resolution, so it is written in
the memory of a thumbnail whatever the slide's size. Only the slide's image pyramid is read
(never a scanner's label or macro image).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.export._style import BLAST, class_colour
from blastscope.export.report import (
    DISCLAIMER,
    PAGE_STYLE,
    _call_section,
    _figure_png,
    _image_tag,
    _p_blast_figure,
    _table,
)
from blastscope.jsonable import dumps_json
from blastscope.palette import P_BLAST_COLORMAP
from blastscope.result import utc_timestamp

THUMBNAIL_SIDE_PX = 1600
"""The thumbnail's longer side, at most."""
MAP_BINS = 48
"""The blast map divides the analysed area into at most this many squares along its longer side."""
BLAST_DIAMETER_UM = 14.0
"""A typical blast's diameter, for the size of the rings on the thumbnail."""
CELLS_PER_SQUARE = 20
"""The blast map aims at about this many nucleated cells per square."""
MIN_NUCLEATED_PER_SQUARE = 5
"""A square of the map with fewer nucleated cells shows no blast percentage."""


def slide_report_paths(folder: Path, stem: str) -> dict[str, Path]:
    """Where the report of a tiled run in ``folder`` goes: the HTML and its two PNG figures."""
    return {
        "html": folder / f"{stem}.report.html",
        "thumbnail": folder / f"{stem}.thumbnail.png",
        "blast_map": folder / f"{stem}.blast_map.png",
        "p_blast": folder / f"{stem}.p_blast.png",
    }


def slide_report_files(
    folder: Path,
    stem: str,
    record: Mapping[str, Any],
    cells: pd.DataFrame,
    thumbnail: np.ndarray,
    thumbnail_downsample: float,
) -> dict[Path, bytes]:
    """The report's files (HTML and PNGs) as bytes by path. ``record`` is the run's slide
    record (``slide.json``), ``cells`` every tile's cells (level-0 centroids), ``thumbnail``
    (Y, X, 3) uint8 the analysed area seen from a low pyramid level, ``thumbnail_downsample``
    level-0 pixels per thumbnail pixel."""
    paths = slide_report_paths(folder, stem)
    top, left = record["offset_yx"]
    xs = (cells["centroid_x"].to_numpy(float) - left) / thumbnail_downsample if len(cells) else []
    ys = (cells["centroid_y"].to_numpy(float) - top) / thumbnail_downsample if len(cells) else []
    blasts = _flag(cells, "is_blast")
    nucleated = _flag(cells, "is_nucleated")
    plots = {
        "thumbnail": _thumbnail_figure(
            thumbnail,
            np.asarray(xs),
            np.asarray(ys),
            blasts,
            BLAST_DIAMETER_UM / (record["pixel_size_um"] * thumbnail_downsample),
        ),
        "blast_map": _blast_map_figure(
            thumbnail, np.asarray(xs), np.asarray(ys), blasts, nucleated
        ),
    }
    if "p_blast" in cells and cells["p_blast"].notna().any():
        plots["p_blast"] = _p_blast_figure(cells["p_blast"], record["settings"]["blast_threshold"])
    page = _page(stem, record, plots, paths)
    return {
        paths["html"]: page.encode("utf-8"),
        **{paths[name]: data for name, data in plots.items()},
    }


def _flag(cells: pd.DataFrame, column: str) -> np.ndarray:
    if column not in cells or not len(cells):
        return np.zeros(len(cells), bool)
    return cells[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


FIGURE_PX = 800
"""Pixels the report's figures draw the thumbnail at (8 inches at 100 dpi)."""


def _as_drawn(thumbnail: np.ndarray) -> np.ndarray:
    """``thumbnail`` averaged down to about :data:`FIGURE_PX` along its longer side, which is
    what the figure draws: matplotlib would otherwise resample the whole thumbnail in floats
    (about a quarter of a GB for both figures)."""
    step = max(1, int(max(thumbnail.shape[:2]) // FIGURE_PX))
    if step == 1:
        return thumbnail
    height, width = (side // step * step for side in thumbnail.shape[:2])
    blocks = thumbnail[:height, :width].reshape(height // step, step, width // step, step, -1)
    return blocks.mean(axis=(1, 3), dtype=np.float32).round().astype(np.uint8)


def _thumbnail_figure(
    thumbnail: np.ndarray, xs: np.ndarray, ys: np.ndarray, blasts: np.ndarray, cell_px: float
) -> bytes:
    """The slide with each blast ringed in the blast colour (on a white halo, to stand out
    from the stain); a ring is a third larger than a blast (``cell_px`` thumbnail pixels), at
    least a few points, so that the blasts of a whole slide stay dots."""
    from matplotlib.figure import Figure

    height, width = thumbnail.shape[:2]
    figure = Figure(figsize=(8.0, 8.0 * height / max(width, 1) + 0.4))
    ring_points = max(3.0, 1.3 * cell_px * 8.0 * 72.0 / max(width, 1))
    axes = figure.subplots()
    axes.imshow(_as_drawn(thumbnail), extent=(0, width, height, 0))
    if blasts.any():
        colour = np.array(class_colour(BLAST)) / 255.0
        for edge, line in (("white", 3.0), (colour, 1.6)):
            axes.scatter(
                xs[blasts],
                ys[blasts],
                s=ring_points**2,
                facecolors="none",
                edgecolors=[edge],
                linewidths=line,
            )
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_title(f"{int(blasts.sum())} blasts ringed on the analysed area", fontsize=11)
    axes.set_axis_off()
    return _figure_png(figure)


def map_squares(shape: tuple[int, int], n_nucleated: int) -> tuple[int, int]:
    """Rows and columns of the blast map: about :data:`CELLS_PER_SQUARE` nucleated cells per
    square on average, at most :data:`MAP_BINS` along the longer side."""
    height, width = shape
    squares = max(1.0, n_nucleated / CELLS_PER_SQUARE)
    long_side = int(
        np.clip(round(np.sqrt(squares * max(height, width) / min(height, width))), 1, MAP_BINS)
    )
    side = max(height, width) / long_side
    return max(1, round(height / side)), max(1, round(width / side))


def _blast_map_figure(
    thumbnail: np.ndarray, xs: np.ndarray, ys: np.ndarray, blasts, nucleated
) -> bytes:
    """Blast percentage of the nucleated cells per square, over a faded thumbnail (squares
    with fewer than :data:`MIN_NUCLEATED_PER_SQUARE` nucleated cells are left clear)."""
    import matplotlib
    from matplotlib.figure import Figure

    height, width = thumbnail.shape[:2]
    rows, cols = map_squares((height, width), int(nucleated.sum()))
    edges = (np.linspace(0, height, rows + 1), np.linspace(0, width, cols + 1))
    counted, _, _ = np.histogram2d(ys[nucleated], xs[nucleated], bins=edges)
    found, _, _ = np.histogram2d(ys[blasts], xs[blasts], bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(counted >= MIN_NUCLEATED_PER_SQUARE, 100.0 * found / counted, np.nan)
    colours = matplotlib.colormaps[P_BLAST_COLORMAP].with_extremes(bad=(0, 0, 0, 0))
    figure = Figure(figsize=(8.8, 8.0 * height / max(width, 1) + 0.4))
    axes = figure.subplots()
    axes.imshow(_as_drawn(thumbnail), alpha=0.35, extent=(0, width, height, 0))
    image = axes.imshow(
        percent,
        cmap=colours,
        vmin=0,
        vmax=100,
        alpha=0.8,
        interpolation="nearest",
        extent=(0, width, height, 0),
    )
    figure.colorbar(image, ax=axes, shrink=0.8, label="blasts, % of nucleated cells")
    axes.set_title(
        f"Blast percentage in {rows} x {cols} squares (clear: fewer than "
        f"{MIN_NUCLEATED_PER_SQUARE} nucleated cells)",
        fontsize=11,
    )
    axes.set_axis_off()
    return _figure_png(figure)


def _page(
    stem: str,
    record: Mapping[str, Any],
    plots: Mapping[str, bytes],
    paths: Mapping[str, Path],
) -> str:
    counts = record["counts"]
    tiles = record["tiles"]
    nucleated = counts.get("nucleated", 0)
    share = f"{100.0 * counts.get('blasts', 0) / nucleated:.1f}%" if nucleated else "n/a"
    rows = [
        ("cells (all objects)", str(counts.get("cells", 0))),
        ("nucleated cells", str(nucleated)),
        ("blasts", f"{counts.get('blasts', 0)} ({share} of nucleated cells)"),
        ("area analysed", f"{record['area_analysed_mm2']:.3f} mm²"),
        (
            "tiles analysed",
            f"{tiles['analysed']} of {tiles['total']}"
            + (" (the rest empty glass)" if tiles["analysed"] < tiles["total"] else ""),
        ),
        ("pixel size", f"{record['pixel_size_um']:g} µm"),
        ("region (x, y, width, height, level-0 px)", record["settings"]["region"]),
    ]
    sections = [
        f"<h1>{html.escape(stem)}: whole slide</h1>",
        f'<p class="warning">{html.escape(DISCLAIMER)}</p>',
        f"<p>Report written {html.escape(utc_timestamp())} from the tiled run in this folder.</p>",
        "<h2>Slide call</h2>",
        _call_section(record.get("slide_call"), {}, {}),
        "<h2>Cells and the area they were counted over</h2>",
        _table(rows),
        "<h2>The slide</h2>",
        _image_tag(plots["thumbnail"], "Blasts on the slide", paths["thumbnail"].name),
        _image_tag(plots["blast_map"], "Blast map", paths["blast_map"].name),
    ]
    if "p_blast" in plots:
        sections.append(_image_tag(plots["p_blast"], "Histogram of p_blast", paths["p_blast"].name))
    sections += [
        "<h2>Settings</h2>",
        f"<pre>{html.escape(dumps_json(record['settings'], where='the settings'))}</pre>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(stem)}</title><style>{PAGE_STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )

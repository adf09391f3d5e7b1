"""Threshold-slider recolour in napari, end to end, for 1k / 10k / 50k cells, against rebuilding
the cells layer from scratch and against rebuilding a per-cell DirectLabelColormap.

    xvfb-run -a -s "-screen 0 1600x1000x24" nice -n 10 .venv/bin/python \
        benchmarks/bench_recolour.py [--cells 1000 10000 50000] [--repeats 15]

Each field is a 2048 × 2048 Voronoi tessellation into N cells (a real cells table from
``blastscope.cells.measure_cells``, 40 % of the cells nucleated, ``p_blast`` and four mutation
probabilities drawn at random, a slide call from ``blastscope.slide_call``), shown in a real
viewer with the Classify blasts and Predict mutation docks open. One timing is one threshold
change made on the slider, up to the end of the next canvas frame:

- **blastscope**: the Classify dock's slider: ``is_blast`` / ``blast_call`` / ``mutation_call``
  written into the layer's ``features``, counts, the slide call's preview (class, pooled
  probabilities, abstention), the veil's contrast limits, both docks' panels, and the frame;
- **colormap rebuild**: the same change drawn the naive way, a ``DirectLabelColormap`` with one
  colour per cell (p_blast quantised to 256 viridis levels, dimmed below the threshold) assigned
  to the Labels layer, and the frame;
- **layer rebuild**: the cells Labels layer removed and added again with its features and that
  colormap, and the frame;
- **frame only**: a repaint with nothing changed (this machine's fixed cost of drawing the
  canvas; software OpenGL under Xvfb).

Each timing is printed as two numbers: until the change's code returned (what the design
costs) / until the next frame was drawn (end to end). On a machine without a GPU the frame is
drawn by software OpenGL and costs the same whatever the design ("frame only").

The exact result (the core's ``rethreshold``, whose bootstrap interval is the costly part) is
computed off the UI thread after the slider rests; "exact, worker" is its cost, "exact, flush"
computing and applying it on the UI thread (as an export does first). Between timings it is
brought up to date outside the timed region. The target: blastscope under 50 ms end to end
for 10,000 cells.
"""

from __future__ import annotations

import argparse
import statistics
import time

import napari
import numpy as np
import pandas as pd
from napari.utils.colormaps import DirectLabelColormap, ensure_colormap
from qtpy.QtWidgets import QApplication
from scipy import ndimage as ndi

from blastscope.cells import measure_cells
from blastscope.predict import apply_blast_threshold, refresh_mutation_calls
from blastscope.result import SlideResult
from blastscope.slide_call import call_slide
from blastscope.synthetic import MUTATION_CLASSES
from blastscope.widgets._colours import VEIL_RGBA
from blastscope.widgets._layers import layer_features
from blastscope.widgets._session import show_result

SHAPE = (2048, 2048)
PIXEL_SIZE_UM = 0.25
PLUGIN = "napari-blastscope"
MEASURED = ("blastscope", "colormap rebuild", "layer rebuild")


def field(n_cells: int, seed: int = 0) -> tuple[np.ndarray, SlideResult]:
    """A smear-coloured image and a classified SlideResult of ``n_cells`` Voronoi cells."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(SHAPE, bool)
    flat = rng.choice(seeds.size, n_cells, replace=False)
    seeds.flat[flat] = True
    _, (rows, cols) = ndi.distance_transform_edt(~seeds, return_indices=True)
    ids = np.zeros(SHAPE, np.int32)
    ids.flat[flat] = np.arange(1, n_cells + 1)
    labels = ids[rows, cols]
    image = np.full((*SHAPE, 3), (230, 200, 215), np.uint8)
    image[labels % 7 == 0] = (120, 80, 170)
    cells = measure_cells(image, labels, PIXEL_SIZE_UM)
    nucleated = rng.random(len(cells)) < 0.4
    cells["is_nucleated"] = nucleated
    cells["p_blast"] = np.where(nucleated, rng.beta(0.8, 1.2, len(cells)), np.nan)
    cells = apply_blast_threshold(cells, 0.5)
    probabilities = rng.dirichlet(np.ones(len(MUTATION_CLASSES)), size=len(cells))
    for index, name in enumerate(MUTATION_CLASSES):
        cells[f"p_{name}"] = np.where(nucleated, probabilities[:, index], np.nan)
    cells = refresh_mutation_calls(cells, MUTATION_CLASSES)
    call = call_slide(cells, MUTATION_CLASSES)
    provenance = {"blast": {"threshold": 0.5}, "mutation": {"classes": list(MUTATION_CLASSES)}}
    result = SlideResult(labels, cells, PIXEL_SIZE_UM, slide_call=call, provenance=provenance)
    return image, result


def per_cell_colormap(cells: pd.DataFrame, threshold: float) -> DirectLabelColormap:
    """The naive design: one colour per cell (viridis of p_blast, dimmed below threshold)."""
    viridis = ensure_colormap("viridis")
    p_blast = cells["p_blast"].to_numpy()
    levels = np.round(np.nan_to_num(p_blast) * 255) / 255
    colours = viridis.map(levels)
    colours[:, 3] = np.where(p_blast >= threshold, 1.0, 1.0 - VEIL_RGBA[3])
    colours[np.isnan(p_blast), 3] = 0.0
    mapping = dict(zip(cells["label"].tolist(), colours, strict=True))
    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **mapping})


class Frames:
    """Counts the canvas's finished frames."""

    def __init__(self, viewer: napari.Viewer):
        self.canvas = viewer.window._qt_viewer.canvas
        self.count = 0
        self.canvas._scene_canvas.events.draw.connect(self._drawn, position="last")

    def _drawn(self, event) -> None:
        self.count += 1

    def wait(self, previous: int) -> None:
        """Process events until a frame after ``previous`` has been drawn."""
        deadline = time.perf_counter() + 10
        while self.count == previous and time.perf_counter() < deadline:
            QApplication.processEvents()


def timed(action, frames: Frames, settle) -> tuple[float, float]:
    """(ms until ``action()`` returned, ms until the end of the next frame); ``settle()`` runs
    after, outside the timing."""
    previous = frames.count
    start = time.perf_counter()
    action()
    returned = time.perf_counter()
    frames.wait(previous)
    done = time.perf_counter()
    settle()
    return (returned - start) * 1e3, (done - start) * 1e3


def medians(timings: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in timings), statistics.median(t[1] for t in timings)


def measure(n_cells: int, repeats: int) -> dict[str, float]:
    image, result = field(n_cells)
    viewer = napari.Viewer()
    viewer.window.resize(1600, 1000)
    image_layer = viewer.add_image(image, name="field", rgb=True)
    session = show_result(viewer, image_layer, result)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Predict mutation")
    frames = Frames(viewer)
    for _ in range(20):
        QApplication.processEvents()
    thresholds = [0.3 + 0.4 * (k % 2) + 0.001 * k for k in range(repeats)]

    def settle() -> None:
        session.flush()
        QApplication.processEvents()

    ours = [
        timed(lambda t=t: setattr(classify.threshold, "value", round(t, 3)), frames, settle)
        for t in thresholds
    ]

    worker, flush = [], []
    for t in thresholds[:5]:
        start = time.perf_counter()
        session.review.snapshot().exact()
        worker.append((time.perf_counter() - start) * 1e3)
        classify.threshold.value = round(t + 0.05, 3)
        start = time.perf_counter()
        session.flush()
        flush.append((time.perf_counter() - start) * 1e3)
        QApplication.processEvents()

    layer = session.layer
    cells = session.result.cells
    colormap_rebuild = [
        timed(
            lambda t=t: (
                setattr(layer, "colormap", per_cell_colormap(cells, t)),
                setattr(layer, "features", layer_features(apply_blast_threshold(cells, t))),
            ),
            frames,
            QApplication.processEvents,
        )
        for t in thresholds
    ]

    def rebuild(t: float) -> None:
        name = layer.name
        viewer.layers.remove(name)
        viewer.add_labels(
            result.labels,
            name=name,
            features=layer_features(apply_blast_threshold(cells, t)),
            colormap=per_cell_colormap(cells, t),
            scale=layer.scale,
        )

    layer_rebuild = [
        timed(lambda t=t: rebuild(t), frames, QApplication.processEvents) for t in thresholds
    ]
    frame_only = [
        timed(frames.canvas._scene_canvas.update, frames, QApplication.processEvents)
        for _ in thresholds
    ]
    viewer.close()
    return {
        "blastscope": medians(ours),
        "colormap rebuild": medians(colormap_rebuild),
        "layer rebuild": medians(layer_rebuild),
        "frame only": medians(frame_only),
        "exact, worker": statistics.median(worker),
        "exact, flush": statistics.median(flush),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(
        f"field {SHAPE[0]} x {SHAPE[1]} px; median of {args.repeats} threshold changes, in ms "
        "until the change's code returned / until the next frame was drawn"
    )
    header = (
        f"{'cells':>7} {'blastscope':>15} {'colormap rebuild':>17} {'layer rebuild':>15} "
        f"{'frame only':>11} {'× vs layer':>11} {'× vs colormap':>14} "
        f"{'exact, worker':>14} {'exact, flush':>13}"
    )
    print(header)
    for n_cells in args.cells:
        row = measure(n_cells, args.repeats)
        cells = [f"{row[name][0]:.1f} / {row[name][1]:.1f}" for name in MEASURED]
        print(
            f"{n_cells:>7} {cells[0]:>15} {cells[1]:>17} {cells[2]:>15} "
            f"{row['frame only'][1]:>11.1f} "
            f"{row['layer rebuild'][1] / row['blastscope'][1]:>11.1f} "
            f"{row['colormap rebuild'][1] / row['blastscope'][1]:>14.1f} "
            f"{row['exact, worker']:>14.1f} {row['exact, flush']:>13.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

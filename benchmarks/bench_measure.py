"""Memory and time of the cells table (``blastscope.cells.measure_cells``): per-cell bounding
boxes against the former full-image measurement, on the same fields in the same run.

    .venv/bin/python benchmarks/bench_measure.py [--sizes 2048 4096 8192] [--repeats 3]

Each field is one 1024 x 1024 synthetic smear (``generate_field``, its own truth labels) tiled to
N x N pixels, every tile's labels offset so that ids stay unique. "full image" is a compact copy
of the former implementation (row / column index grids, a ones image, the optical density and
the nuclear-stain index of every pixel, all summed per label with ``ndimage.sum_labels``);
"per cell" is the current ``measure_cells``. Peak memory is traced by ``tracemalloc`` (numpy
registers its buffers there), in a run of its own; time is the best of ``--repeats`` runs
without tracing. The two tables are checked to be identical.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from blastscope.cells import (
    BLUE_WEIGHT,
    NUCLEAR_INDEX_LEVEL,
    background_rgb,
    cells_table,
    measure_cells,
    optical_density,
)
from blastscope.synthetic import generate_field


def full_image_measure(image: np.ndarray, labels: np.ndarray, pixel_size_um: float):
    """The former measure_cells: every measure as a whole-image float array."""
    ids = np.unique(labels)
    ids = ids[ids > 0].astype(np.int64)
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    area = ndi.sum_labels(np.ones(labels.shape, np.float64), labels, ids)
    centroid_y = ndi.sum_labels(rows, labels, ids) / area
    centroid_x = ndi.sum_labels(cols, labels, ids) / area
    border = np.zeros(labels.shape, bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    touches = ndi.maximum(border.astype(np.uint8), labels, ids) > 0
    density = optical_density(image, background_rgb(image))
    index = density[..., 0] - BLUE_WEIGHT * density[..., 2]
    purple = (index > NUCLEAR_INDEX_LEVEL).astype(np.float64)
    nuclear_fraction = ndi.sum_labels(purple, labels, ids) / area
    index_mean = ndi.sum_labels(index.astype(np.float64), labels, ids) / area
    od_mean = ndi.sum_labels(density.sum(axis=-1).astype(np.float64), labels, ids) / area
    return cells_table(
        ids,
        area,
        (centroid_y, centroid_x),
        touches,
        (nuclear_fraction, index_mean, od_mean),
        pixel_size_um,
    )


def tiled_field(size: int, tile: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``tile`` (image, labels) repeated to ``size`` x ``size``, label ids kept unique."""
    image, labels = tile
    reps = -(-size // image.shape[0])
    big_image = np.tile(image, (reps, reps, 1))[:size, :size]
    offsets = np.arange(reps * reps, dtype=np.int32).reshape(reps, reps) * int(labels.max())
    big_labels = np.tile(labels, (reps, reps))
    big_labels += np.kron(offsets, np.ones(labels.shape, np.int32)) * (big_labels > 0)
    return np.ascontiguousarray(big_image), np.ascontiguousarray(big_labels[:size, :size])


def traced_peak(function, *args) -> int:
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def best_time(function, args, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    synthetic = generate_field(21, "default", shape=(1024, 1024))
    pixel_size = synthetic.pixel_size_um
    print(f"{'field':>12} {'cells':>7} {'method':>11} {'peak MB':>9} {'B/px':>6} {'time s':>7}")
    for size in args.sizes:
        image, labels = tiled_field(size, (synthetic.image, synthetic.labels))
        n_cells = len(np.unique(labels)) - 1
        tables = {}
        for name, function in (("full image", full_image_measure), ("per cell", measure_cells)):
            peak = traced_peak(function, image, labels, pixel_size)
            seconds = best_time(function, (image, labels, pixel_size), args.repeats)
            tables[name] = function(image, labels, pixel_size)
            print(
                f"{size:>5} x {size:<5}{n_cells:>7} {name:>11} {peak / 2**20:>9.1f} "
                f"{peak / labels.size:>6.1f} {seconds:>7.2f}"
            )
        pd.testing.assert_frame_equal(tables["full image"], tables["per cell"], check_exact=True)
    print("tables identical (to the last bit) at every size")


if __name__ == "__main__":
    main()

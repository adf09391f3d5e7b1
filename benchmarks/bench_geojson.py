"""Cost of the QuPath GeoJSON export and import of one field, and of its outline tracing.

    nice -n 10 .venv/bin/python benchmarks/bench_geojson.py [--size 2048] [--baseline-cells 300]

The field is a synthetic smear (``blastscope.synthetic``, seed 0, default preset) of
``--size`` × ``--size`` pixels; every cell (red cells included) is exported. Rows:

- ``trace`` our corner tracer (:func:`blastscope.export.geojson.labels_geometries`) on the first
  ``--baseline-cells`` cells, against the baseline on the same cells: the union of each cell's
  pixel squares with shapely (``unary_union`` of boxes), the obvious way to get the same exact,
  valid polygons. Both give identical geometries (checked); the ratio is baseline / ours.
- ``write`` / ``read`` the whole field: :func:`write_geojson` (trace, measurements, JSON, atomic
  write) and :func:`read_geojson` (parse, rasterise, table), in cells per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely.geometry
from scipy import ndimage as ndi
from shapely.ops import unary_union

from blastscope.export import read_geojson, write_geojson
from blastscope.export.geojson import labels_geometries
from blastscope.synthetic import generate_field


def _shapely_union(labels: np.ndarray, ids: list[int]) -> dict[int, object]:
    windows = ndi.find_objects(labels)
    shapes = {}
    for label in ids:
        window = windows[label - 1]
        rows, cols = np.nonzero(labels[window] == label)
        rows, cols = rows + window[0].start, cols + window[1].start
        boxes = [shapely.geometry.box(c, r, c + 1, r + 1) for r, c in zip(rows, cols, strict=True)]
        shapes[label] = unary_union(boxes)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="field side in pixels")
    parser.add_argument("--baseline-cells", type=int, default=300, help="cells for the baseline")
    args = parser.parse_args()

    field = generate_field(0, shape=(args.size, args.size))
    labels, cells = field.labels, field.cells
    n_cells = len(cells)
    ids = [int(label) for label in cells["label"][: args.baseline_cells]]
    print(
        f"field {args.size} x {args.size} px, {n_cells} cells, mean area "
        f"{np.bincount(labels.ravel())[1:].mean():.0f} px"
    )

    start = time.perf_counter()
    ours = labels_geometries(labels, ids)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    baseline = _shapely_union(labels, ids)
    baseline_s = time.perf_counter() - start
    same = all(shapely.geometry.shape(ours[label]).equals(baseline[label]) for label in ids)
    print(
        f"trace {len(ids)} cells: ours {ours_s:.3f} s, shapely box union {baseline_s:.3f} s, "
        f"ratio {baseline_s / ours_s:.1f}x, identical geometries: {same}"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "field.geojson"
        start = time.perf_counter()
        write_geojson(
            path, labels, cells, pixel_size_um=field.pixel_size_um, include_non_nucleated=True
        )
        write_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        start = time.perf_counter()
        read_labels, _, _ = read_geojson(path)
        read_s = time.perf_counter() - start
    exact = np.array_equal(read_labels, labels)
    print(
        f"write {n_cells} cells: {write_s:.2f} s ({n_cells / write_s:,.0f} cells/s, "
        f"{size_mb:.1f} MB)"
    )
    print(
        f"read  {n_cells} cells: {read_s:.2f} s ({n_cells / read_s:,.0f} cells/s), "
        f"labels identical: {exact}"
    )


if __name__ == "__main__":
    main()

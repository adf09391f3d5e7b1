"""Whole slides: time, cells per second, napari opening time and peak memory of the tiled
pipeline, in this process and on dask LocalClusters, against the one-piece field path.

    xvfb-run -a nice -n 10 .venv/bin/python benchmarks/bench_wholeslide.py \\
        [--sides 4096 10240 20480] [--tile 1536] [--repeats 3] [--one-piece-max 4096]

For each side, a synthetic smear of that many pixels is written as a pyramidal OME-TIFF tile
by tile (bands of synthetic fields, so the writer never holds the slide). Then, each run in its
own process tree, interleaved ``--repeats`` times (the median is printed):

- ``one piece``: ``blastscope run SLIDE --roi 0,0,side,side`` (the area read and analysed as one
  field; only up to ``--one-piece-max``, it needs memory in proportion to the area);
- ``in process``: ``run --tiled --workers 0`` (the tiled pipeline before dask: the baseline);
- ``1 x 1``: ``run --tiled --workers 1 --threads 1``;
- ``2 x 1``: ``run --tiled --workers 2 --threads 1``.

Printed per run: wall seconds, cells per second and the peak resident memory summed over the
whole process tree (the command, its dask scheduler and workers), sampled at 10 Hz; then the
napari opening time of the slide and of the tiled result, and the ratios the issue asks for
(``2 x 1`` against ``1 x 1`` and against ``in process``; memory growth from the smallest to the
largest side, per cell).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile

from blastscope.slide import DEFAULT_TILE_PX
from blastscope.synthetic import generate_field

COMMAND = str(Path(sys.executable).parent / "blastscope")
BAND_PX = 1024
"""The slide is written in bands of synthetic fields this many pixels square."""
LEVELS = (4, 16)
"""Downsampling of the pyramid levels written below level 0."""

GROWTH_FRACTION = 0.10
GROWTH_BYTES_PER_CELL = 1024
"""The issue's bound on peak memory from the smallest slide to the largest: this fraction of
the smallest slide's peak plus these bytes per added cell."""


def write_slide(path: Path, side: int, seed: int = 11) -> int:
    """A pyramidal OME-TIFF of ``side`` x ``side`` synthetic smear, written a band at a time;
    returns how many cells the generator placed."""
    pixel_size = generate_field(seed, "default", shape=(256, 256)).pixel_size_um
    bands = -(-side // BAND_PX)
    lows = {factor: np.zeros((side // factor, side // factor, 3), np.uint8) for factor in LEVELS}
    placed = 0

    def tiles():
        nonlocal placed
        for band in range(bands):
            rows = min(BAND_PX, side - band * BAND_PX)
            strip = np.empty((rows, side, 3), np.uint8)
            for column in range(-(-side // BAND_PX)):
                cols = min(BAND_PX, side - column * BAND_PX)
                field = generate_field(
                    seed + band * 1000 + column, "default", shape=(rows, cols), mutation="NPM1"
                )
                placed += int(field.labels.max())
                strip[:, column * BAND_PX : column * BAND_PX + cols] = field.image
            for factor, low in lows.items():
                top = band * BAND_PX // factor
                part = strip[::factor, ::factor][: low.shape[0] - top, : low.shape[1]]
                low[top : top + part.shape[0]] = part
            for y in range(0, rows, 256):
                for x in range(0, side, 256):
                    tile = np.zeros((256, 256, 3), np.uint8)
                    piece = strip[y : y + 256, x : x + 256]
                    tile[: piece.shape[0], : piece.shape[1]] = piece
                    yield tile

    metadata = {"axes": "YXS", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        tiff.write(
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            subifds=len(LEVELS),
            metadata=metadata,
            **options,
        )
        for factor in LEVELS:
            tiff.write(lows[factor], subfiletype=1, **options)
    return placed


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants now."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def measured(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak process-tree RSS in GB sampled at 10 Hz, the run's stdout)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    out, err = child.communicate()
    if child.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    return seconds, peak / 1e9, out


OPEN_IN_NAPARI = """
import sys, time
import napari
viewer = napari.Viewer(show=False)
start = time.perf_counter()
viewer.open(sys.argv[1], plugin="napari-blastscope")
viewer.reset_view()
from qtpy.QtWidgets import QApplication
QApplication.processEvents()
print(time.perf_counter() - start)
viewer.close()
"""


def napari_open_seconds(path: Path) -> float:
    """Seconds napari takes to open ``path`` through blastscope's reader (a fresh process)."""
    done = subprocess.run(
        [sys.executable, "-c", OPEN_IN_NAPARI, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[4096, 10240, 20480])
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE_PX)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one-piece-max", type=int, default=4096)
    parser.add_argument("--runs", nargs="+", default=["one piece", "in process", "1x1", "2x1"])
    args = parser.parse_args()
    header = f"{'side':>6} {'run':>10} {'seconds':>8} {'cells':>7} {'cells/s':>8} {'peak GB':>8}"
    print(header)
    peaks: dict[str, dict[int, tuple[float, int]]] = {}
    times: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sides:
            slide = Path(folder) / f"slide{side}.ome.tif"
            write_slide(slide, side)
            tiled = ["run", str(slide), "--tiled", "--slide-tile", str(args.tile)]
            runs = {
                "one piece": ["run", str(slide), "--roi", f"0,0,{side},{side}"],
                "in process": [*tiled, "--workers", "0"],
                "1x1": [*tiled, "--workers", "1", "--threads", "1"],
                "2x1": [*tiled, "--workers", "2", "--threads", "1"],
            }
            runs = {name: argv for name, argv in runs.items() if name in args.runs}
            if side > args.one_piece_max:
                runs.pop("one piece", None)
            samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
            for repeat in range(args.repeats):  # interleaved: a busy spell hits every run
                for name, argv in runs.items():
                    out = Path(folder) / f"out{side}-{name.replace(' ', '')}-{repeat}"
                    seconds, peak, _ = measured([COMMAND, *argv, "--out", str(out)])
                    record = next(out.glob("*/slide.json"), None) or next(out.glob("*/run.json"))
                    cells = _cells(json.loads(record.read_text()))
                    samples[name].append((seconds, peak, cells))
            for name, values in samples.items():
                seconds = statistics.median(value[0] for value in values)
                peak = max(value[1] for value in values)
                cells = values[0][2]
                peaks.setdefault(name, {})[side] = (peak, cells)
                times.setdefault(name, {})[side] = seconds
                print(
                    f"{side:>6} {name:>10} {seconds:>8.1f} {cells:>7} {cells / seconds:>8.1f} "
                    f"{peak:>8.2f}"
                )
            result = next((Path(folder) / f"out{side}-2x1-0").glob("*.tiled"), None)
            opened = napari_open_seconds(slide)
            line = f"{side:>6} napari opens the slide in {opened:.2f} s"
            if result is not None:
                line += f", the tiled result in {napari_open_seconds(result):.2f} s"
            print(line)
    print()
    for side in args.sides:
        if "2x1" in times and "1x1" in times:
            ratio = times["1x1"][side] / times["2x1"][side]
            print(f"{side:>6} 2x1 speed-up over 1x1: {ratio:.2f}x")
        if "2x1" in times and "in process" in times:
            ratio = times["in process"][side] / times["2x1"][side]
            print(f"{side:>6} 2x1 speed-up over in process: {ratio:.2f}x")
    small, large = min(args.sides), max(args.sides)
    if small != large:
        for name, by_side in peaks.items():
            if small in by_side and large in by_side:
                (low, low_cells), (high, high_cells) = by_side[small], by_side[large]
                per_cell = (high - low) * 1e9 / max(1, high_cells - low_cells)
                # the bound: 10% of the smallest slide's peak plus 1 KB per added cell
                added = high_cells - low_cells
                allowed = GROWTH_FRACTION * low + GROWTH_BYTES_PER_CELL * added / 1e9
                verdict = "within" if high - low <= allowed else "over"
                print(
                    f"{name:>10}: peak {low:.2f} -> {high:.2f} GB ({high / low - 1:+.0%}), "
                    f"{per_cell:.0f} bytes per added cell; growth {high - low:.2f} GB, "
                    f"{verdict} the {allowed:.2f} GB that 10% + 1 KB per added cell allow"
                )


def _cells(record: dict) -> int:
    counts = record.get("counts") or {}
    if "cells" in counts:
        return int(counts["cells"])
    return int(record.get("summary", {}).get("cells", 0))


if __name__ == "__main__":
    main()

"""Whole slide tile by tile against the one-piece field path: time and peak memory.

    nice -n 10 .venv/bin/python benchmarks/bench_wholeslide.py [--sides 2048 4096] [--tile 1024]

For each side, a synthetic smear of that many pixels is written as a pyramidal OME-TIFF; then,
each in its own process (so its peak resident memory is its own): ``blastscope run SLIDE
--roi 0,0,side,side`` (the whole area read and analysed as one field) and ``blastscope run
SLIDE --tiled --slide-tile TILE`` (tiles streamed to disk). Printed: wall time, cells per
second and peak RSS of each, and their ratios. The tiled path's memory should stay flat as the
slide grows; the one-piece path's grows with the area.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile

from blastscope.synthetic import generate_field

COMMAND = str(Path(sys.executable).parent / "blastscope")


def write_slide(path: Path, side: int) -> None:
    field = generate_field(11, "default", shape=(side, side), mutation="NPM1")
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": field.pixel_size_um,
        "PhysicalSizeY": field.pixel_size_um,
    }
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        tiff.write(field.image, subifds=2, metadata=metadata, **options)
        tiff.write(field.image[::2, ::2], subfiletype=1, **options)
        tiff.write(field.image[::4, ::4], subfiletype=1, **options)


WRAPPER = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, "
    "text=True, check=True); print(done.stdout.strip().splitlines()[-2]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measured(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, the run's summary line): the run in a wrapper process of its
    own, whose children's peak RSS is the run's alone."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - start
    line, peak_kb = done.stdout.strip().splitlines()[-2:]
    return seconds, int(peak_kb) / 1e6, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--tile", type=int, default=1024)
    args = parser.parse_args()
    print(f"{'side':>6} {'path':>10} {'seconds':>8} {'cells/s':>8} {'peak RSS GB':>12}")
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sides:
            slide = Path(folder) / f"slide{side}.ome.tif"
            write_slide(slide, side)
            out = Path(folder) / f"out{side}"
            runs = {
                "tiled": [
                    COMMAND,
                    "run",
                    str(slide),
                    "--tiled",
                    "--slide-tile",
                    str(args.tile),
                    "--out",
                    str(out / "tiled"),
                ],
                "one piece": [
                    COMMAND,
                    "run",
                    str(slide),
                    "--roi",
                    f"0,0,{side},{side}",
                    "--tile-size",
                    str(max(1024, side)),
                    "--out",
                    str(out / "piece"),
                ],
            }
            for name, argv in runs.items():
                seconds, peak, line = measured(argv)
                cells = int(re.search(r"(\d+) cells", line).group(1))
                print(f"{side:>6} {name:>10} {seconds:>8.1f} {cells / seconds:>8.0f} {peak:>12.2f}")


if __name__ == "__main__":
    main()

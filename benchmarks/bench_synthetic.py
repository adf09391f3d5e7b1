"""Speed of the synthetic smear generator: time per field for presets and sizes, crops per second.

    python benchmarks/bench_synthetic.py                 # presets x 512/1024/2048, 5 repeats
    python benchmarks/bench_synthetic.py --sizes 1024 --repeats 10 --crops 0

Prints, per preset and size, the median and best wall time per field and the CPU time of the
best run (wall time includes waiting for a busy machine; CPU time does not), the number of cells
and of nucleated cells per field, and the ratio of the best wall time to the 0.4 s target for a
1024 x 1024 field scaled by area. ``--crops N`` also times ``render_crops`` (crops per second).
"""

from __future__ import annotations

import argparse
import statistics
import time

from blastscope.synthetic import PRESETS, generate_field, render_crops

TARGET_S_PER_MEGAPIXEL = 0.4 / (1024 * 1024 / 1e6)


def time_fields(preset: str, side: int, repeats: int) -> dict[str, float]:
    """Wall and CPU seconds per field of ``side`` x ``side`` pixels (seeds 0..repeats-1)."""
    generate_field(10_000, preset, shape=(side, side))  # warm caches and imports
    walls, cpus, cells, nucleated = [], [], [], []
    for seed in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        field = generate_field(seed, preset, shape=(side, side))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        cells.append(len(field.cells))
        nucleated.append(int(field.cells["is_nucleated"].sum()))
    best = min(range(repeats), key=walls.__getitem__)
    return {
        "median_s": statistics.median(walls),
        "best_s": walls[best],
        "best_cpu_s": cpus[best],
        "cells": statistics.mean(cells),
        "nucleated": statistics.mean(nucleated),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--crops", type=int, default=500, help="crops to time (0: skip)")
    args = parser.parse_args()

    print(
        f"{'preset':8s} {'size':>9s} {'median s':>9s} {'best s':>7s} {'cpu s':>7s} "
        f"{'cells':>6s} {'nucl.':>6s} {'best/target':>11s}"
    )
    for preset in args.presets:
        for side in args.sizes:
            result = time_fields(preset, side, args.repeats)
            target = TARGET_S_PER_MEGAPIXEL * side * side / 1e6
            print(
                f"{preset:8s} {side:>4d}x{side:<4d} {result['median_s']:9.3f} "
                f"{result['best_s']:7.3f} {result['best_cpu_s']:7.3f} {result['cells']:6.0f} "
                f"{result['nucleated']:6.0f} {result['best_s'] / target:11.2f}",
                flush=True,
            )
    if args.crops:
        render_crops(10, 10_000)  # imports torch, warms the crop cutter
        wall, cpu = time.perf_counter(), time.process_time()
        batch = render_crops(args.crops, 0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"render_crops: {len(batch.images)} crops of {batch.images.shape[1]} px from "
            f"{batch.cells['slide'].nunique()} slides in {wall:.1f} s "
            f"({len(batch.images) / wall:.0f} crops/s wall, "
            f"{len(batch.images) / cpu:.0f} per CPU s)"
        )


if __name__ == "__main__":
    main()

"""Segmenting without a pixel size: the estimate path against the known-size path.

    nice -n 10 .venv/bin/python benchmarks/bench_pixel_size.py [--quick] [--device cpu]

Real fields rarely record their pixel size; blastscope then estimates the cell diameter (and
from it the pixel size) with trial passes of the network. In the same run, on the same fields:

- **BCCD val** (87 fields, ``--quick`` 20; real blood at 0.08 µm/px): time per field with the
  pixel size given and without it (median of ``--repeats`` after a warm-up, over the first 10
  fields), their ratio, and the white-cell recall at bounding-box IoU >= 0.5 and >= 0.7 both
  ways.
- **Synthetic fields of other scanners** (512 x 512, ``default`` preset at 0.10, 0.15 and
  0.25 µm/px): time both ways, their ratio, and the estimated pixel size against the truth.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import SegmentationParams, segment
from blastscope.synthetic import generate_field
from blastscope.train.bccd_masks import bccd_root, read_fields, read_split
from blastscope.train.boxes import wbc_box_matches, wbc_recall_summary

OTHER_SCANNERS_UM = (0.10, 0.15, 0.25)


def median_time(image: np.ndarray, pixel_size: float | None, params, repeats: int) -> float:
    segment(image, pixel_size, params)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segment(image, pixel_size, params)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 BCCD val fields")
    parser.add_argument("--bccd", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = SegmentationParams(device=args.device, nucleated_model=None)
    print(f"torch threads {torch.get_num_threads()}; device {args.device}")
    root = bccd_root(args.bccd)
    fields = read_fields(root, read_split(root, "val")[: 20 if args.quick else None])

    recall = {}
    for name, pixel_size in (("given", BCCD_PIXEL_SIZE_UM), ("estimated", None)):
        rows = [
            wbc_box_matches(segment(f.image, pixel_size, params).labels, f.boxes) for f in fields
        ]
        recall[name] = wbc_recall_summary(pd.concat(rows, ignore_index=True))["all"]
    print(f"\nBCCD val, {len(fields)} fields: white-cell recall (one-to-one, box IoU)")
    print(f"{'pixel size':<11} {'IoU>=0.5':>9} {'IoU>=0.7':>9}")
    for name, summary in recall.items():
        print(f"{name:<11} {summary['recall_iou50']:>9.3f} {summary['recall_iou70']:>9.3f}")

    known, estimated = [], []
    for bccd_field in fields[:10]:
        known.append(median_time(bccd_field.image, BCCD_PIXEL_SIZE_UM, params, args.repeats))
        estimated.append(median_time(bccd_field.image, None, params, args.repeats))
    print("\nTime per field, s (median over fields of the median of repeats)")
    print(f"{'field':<28} {'given':>7} {'estimated':>10} {'ratio':>6} {'estimated µm/px':>16}")
    given_s, estimated_s = float(np.median(known)), float(np.median(estimated))
    print(
        f"{'BCCD 640 x 480 (0.08 µm/px)':<28} {given_s:>7.2f} {estimated_s:>10.2f} "
        f"{estimated_s / given_s:>6.2f} {'':>16}"
    )
    for index, pixel_size in enumerate(OTHER_SCANNERS_UM):
        field = generate_field(
            90_000 + index, "default", shape=(512, 512), pixel_size_um=pixel_size
        )
        given_s = median_time(field.image, pixel_size, params, args.repeats)
        estimated_s = median_time(field.image, None, params, args.repeats)
        found = segment(field.image, None, params).pixel_size_um
        label = f"synthetic 512 x 512 ({pixel_size:.2f})"
        print(
            f"{label:<28} {given_s:>7.2f} {estimated_s:>10.2f} {estimated_s / given_s:>6.2f} "
            f"{found:>16.3f}"
        )


if __name__ == "__main__":
    main()

"""Segmentation quality and speed: the shipped Cellpose model against a classical baseline.

    nice -n 10 .venv/bin/python benchmarks/bench_segmentation.py [--quick] [--model smear-cellpose]
        [--bccd ../shared/data/bccd_smear] [--device cpu]

Both methods run in the same process on the same fields:

- **BCCD val** (real Wright-Giemsa blood, the 87 fields of ``splits/val.txt``, never used for
  training; ``--quick``: the first 20): the share of white-cell boxes matched one-to-one
  (Hungarian assignment on bounding-box IoU) by a segmented object whose bounding box has
  IoU >= 0.5 and >= 0.7 with the box, for all boxes, boxes off the border and boxes touching it.
  Fields are segmented at the BCCD pixel size (``bccd_masks.BCCD_PIXEL_SIZE_UM``).
- **Synthetic held-out** fields (seeds from ``SYNTHETIC_EVAL_SEED``, presets default and blood,
  512 x 512): AP at mask IoU 0.5 = TP / (TP + FP + FN), pooled over fields.
- **Time** per 640 x 480 field (BCCD) and per 1024 x 1024 field (synthetic, 0.25 µm/px): the
  median of ``--repeats`` runs after one warm-up, and the ratio model / classical.

The classical baseline is ``benchmarks/classical_segmentation.py`` (haematoxylin nuclei from a
colour deconvolution as markers plus red-cell distance peaks, watershed on the foreground).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))

from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import SHIPPED_SEGMENTER, SegmentationParams, segment
from blastscope.synthetic import generate_field
from blastscope.train.bccd_masks import (
    bccd_root,
    read_fields,
    read_split,
)
from blastscope.train.boxes import wbc_box_matches, wbc_recall_summary
from blastscope.train.segmenter_data import SYNTHETIC_PRESETS
from blastscope.train.segmenter_eval import SYNTHETIC_EVAL_SEED
from classical_segmentation import classical_segment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 val fields, 4 synthetic fields")
    parser.add_argument("--model", default=SHIPPED_SEGMENTER)
    parser.add_argument("--bccd", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-fields", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    params = SegmentationParams(model=args.model, device=args.device)
    root = bccd_root(args.bccd)
    val_ids = read_split(root, "val")[: 20 if args.quick else None]
    n_synthetic = 4 if args.quick else args.synthetic_fields

    methods = {
        "cellpose": lambda image, pixel_size: segment(image, pixel_size, params).labels,
        "classical": classical_segment,
    }
    print(f"model {args.model} on {args.device}; torch threads {torch.get_num_threads()}")

    fields = read_fields(root, val_ids)
    recall = {}
    for name, method in methods.items():
        rows = [wbc_box_matches(method(f.image, BCCD_PIXEL_SIZE_UM), f.boxes) for f in fields]
        recall[name] = wbc_recall_summary(pd.concat(rows, ignore_index=True))
    print(f"\nBCCD val, {len(fields)} fields: WBC-box recall (one-to-one, bounding-box IoU)")
    print(f"{'method':<10} {'subset':<9} {'n':>4} {'IoU>=0.5':>9} {'IoU>=0.7':>9}")
    for name, summary in recall.items():
        for subset in ("all", "interior", "border"):
            s = summary[subset]
            print(
                f"{name:<10} {subset:<9} {s['n']:>4} {s['recall_iou50']:>9.3f} "
                f"{s['recall_iou70']:>9.3f}"
            )
    gap = recall["cellpose"]["all"]["recall_iou70"] - recall["classical"]["all"]["recall_iou70"]
    print(f"cellpose - classical at IoU >= 0.7: {100 * gap:+.1f} points")

    print(f"\nSynthetic held-out, {n_synthetic} fields of 512 x 512: AP at mask IoU 0.5")
    for name, method in methods.items():
        print(f"{name:<10} AP50 {synthetic_ap(method, n_synthetic):.3f}")

    bccd_image = fields[0].image
    large = generate_field(SYNTHETIC_EVAL_SEED + 500, "default", shape=(1024, 1024))
    print(f"\nTime per field (median of {args.repeats} after a warm-up)")
    print(f"{'field':<22} {'cellpose s':>11} {'classical s':>12} {'ratio':>7}")
    for label, image, pixel_size in (
        ("640 x 480 BCCD", bccd_image, BCCD_PIXEL_SIZE_UM),
        ("1024 x 1024 synthetic", large.image, large.pixel_size_um),
    ):
        times = {
            name: median_time(method, image, pixel_size, args.repeats)
            for name, method in methods.items()
        }
        print(
            f"{label:<22} {times['cellpose']:>11.2f} {times['classical']:>12.2f} "
            f"{times['cellpose'] / times['classical']:>7.2f}"
        )


def synthetic_ap(method, n_fields: int) -> float:
    from cellpose import metrics

    counts = np.zeros(3)
    for index in range(n_fields):
        preset = SYNTHETIC_PRESETS[index % len(SYNTHETIC_PRESETS)]
        truth = generate_field(SYNTHETIC_EVAL_SEED + index, preset, shape=(512, 512))
        labels = method(truth.image, truth.pixel_size_um)
        _, tp, fp, fn = metrics.average_precision(
            [truth.labels.astype(np.int32)], [labels.astype(np.int32)], threshold=[0.5]
        )
        counts += [tp[0, 0], fp[0, 0], fn[0, 0]]
    return float(counts[0] / max(counts.sum(), 1))


def median_time(method, image: np.ndarray, pixel_size: float, repeats: int) -> float:
    method(image, pixel_size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        method(image, pixel_size)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


if __name__ == "__main__":
    main()

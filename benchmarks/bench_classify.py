"""Throughput of the whole blast-classification stage (crops + network) at several batch sizes.

    nice -n 10 .venv/bin/python benchmarks/bench_classify.py [--device cpu] \
        [--batch-sizes 1 32 128 512] [--bundle blast-demo] [--threads 2]
    .venv/bin/python benchmarks/bench_classify.py --device cuda    # on a machine with a GPU

The field is one synthetic smear of 4096 × 5120 px at 0.25 µm/px (``blastscope.synthetic``,
seed 0, the default preset with 80 nucleated cells per 100 × 100 µm and thin red cells), about
9,200 cells. Every cell of it is classified (``is_nucleated`` set for all, so the stage cuts and
classifies ~10k crops; the work per cell does not depend on its type). Each row times one full
``predict.classify_blasts_steps`` run: the crop cutter's set-up on the field, all batches, the
probabilities back in the table. The bundle is ``--bundle`` (default: the shipped ``blast-demo``
when present, else an untrained bundle of the default architecture, which costs the same).
Target: the stage under 10 s for 10k cells on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from blastscope.crops import CropCutter
from blastscope.devices import resolve_device
from blastscope.models.architectures import count_parameters
from blastscope.models.bundle import shipped_bundles
from blastscope.models.classifier import Classifier, load_classifier, write_random_classifier
from blastscope.predict import classify_blasts_steps
from blastscope.progress import run_steps
from blastscope.synthetic import generate_field, get_preset

FIELD_SHAPE = (4096, 5120)


def _classifier(bundle: str | None, scratch: Path) -> tuple[Classifier, str]:
    if bundle is not None:
        return load_classifier(bundle, "blast"), bundle
    if "blast-demo" in shipped_bundles():
        return load_classifier("blast-demo", "blast"), "blast-demo (shipped)"
    path = write_random_classifier(scratch / "untrained-blast", "blast")
    return load_classifier(path, "blast"), "untrained bundle, default architecture"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128, 512])
    parser.add_argument("--bundle", default=None, help="a blast bundle (name or directory)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    start = time.perf_counter()
    preset = replace(
        get_preset("default"),
        name="dense",
        nucleated_per_10k_um2=(80.0, 80.0),
        rbc_coverage=(0.3, 0.3),
    )
    field = generate_field(0, preset, shape=FIELD_SHAPE, pixel_size_um=0.25)
    cells = field.cells.assign(is_nucleated=True)
    print(
        f"field {FIELD_SHAPE[1]}x{FIELD_SHAPE[0]} px at {field.pixel_size_um} µm/px, "
        f"{len(cells)} cells classified (made in {time.perf_counter() - start:.1f} s)"
    )
    with tempfile.TemporaryDirectory() as scratch:
        classifier, source = _classifier(args.bundle, Path(scratch))
    crop = classifier.input
    print(
        f"bundle: {source}; {count_parameters(classifier.network) / 1e6:.2f} M parameters; "
        f"crops {crop.window_um} µm at {crop.pixel_size_um} µm/px = {crop.crop_px} px; "
        f"device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f"; torch threads {torch.get_num_threads()}"
    )

    def classify(batch_size: int) -> float:
        begin = time.perf_counter()
        run_steps(
            classify_blasts_steps(
                field.image,
                field.labels,
                cells,
                field.pixel_size_um,
                classifier,
                device=device,
                batch_size=batch_size,
            )
        )
        return time.perf_counter() - begin

    classify(64)  # warm-up: kernels, allocator, thread pool
    print(f"{'batch':>6s} {'seconds':>9s} {'cells/s':>9s} {'per 10k cells':>14s}")
    for batch_size in args.batch_sizes:
        seconds = classify(batch_size)
        rate = len(cells) / seconds
        print(f"{batch_size:6d} {seconds:9.2f} {rate:9.0f} {10_000 / rate:12.2f} s")

    begin = time.perf_counter()
    cutter = CropCutter(
        field.image,
        pixel_size_um=field.pixel_size_um,
        window_um=crop.window_um,
        out_pixel_size_um=crop.pixel_size_um,
        labels=field.labels,
        mask_to_cell=crop.mask_to_cell,
        device=device,
    )
    centres = cells[["centroid_y", "centroid_x"]].to_numpy()
    labels = cells["label"].to_numpy()
    for first in range(0, len(cells), 512):
        cutter.cut(centres[first : first + 512], labels[first : first + 512])
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(
        f"of which crops alone (set-up + cutting, batch 512): {time.perf_counter() - begin:.2f} s"
    )


if __name__ == "__main__":
    main()

"""Cancel during segmentation: time from Cancel to "cancelled" on the 1024 x 1024 sample.

    nice -n 10 .venv/bin/python benchmarks/bench_cancel.py [--cancels 10] [--device cpu]

A worker thread drives :func:`blastscope.segment.segment_steps` (as the Segment dock's worker
does); after a random delay the main thread asks it to stop, and the worker closes the stage
generator at its next progress event (as ``worker.quit()`` does). Printed: each delay, where the
run was (the last progress message) and the time from Cancel to the generator closed; then the
median and the 95th percentile against the time of a whole run measured in the same session
(the baseline a user waited for before the stage yielded between network batches).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from blastscope.progress import run_steps
from blastscope.segment import SegmentationParams, segment_steps
from blastscope.synthetic import generate_field


def cancelled_after(image, pixel_size, params, delay_s: float) -> tuple[float, str]:
    """(seconds from Cancel to closed, the last progress message before Cancel)."""
    stop = threading.Event()
    closed_at: list[float] = []
    last: list[str] = [""]

    def work() -> None:
        steps = segment_steps(image, pixel_size, params)
        for event in steps:
            last[0] = f"{event.message}"
            if stop.is_set():
                steps.close()
                break
        closed_at.append(time.perf_counter())

    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(delay_s)
    asked = time.perf_counter()
    message = last[0]
    stop.set()
    thread.join()
    return max(0.0, closed_at[0] - asked), message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cancels", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    field = generate_field(7, "default", shape=(1024, 1024), mutation="NPM1")
    params = SegmentationParams(device=args.device)
    run_steps(segment_steps(field.image, field.pixel_size_um, params))  # warm-up
    start = time.perf_counter()
    run_steps(segment_steps(field.image, field.pixel_size_um, params))
    whole_s = time.perf_counter() - start
    print(f"whole run: {whole_s:.2f} s (1024 x 1024, {field.pixel_size_um} µm/px)")
    rng = np.random.default_rng(args.seed)
    waits = []
    for delay in rng.uniform(0.05, 0.95 * whole_s, args.cancels):
        wait, where = cancelled_after(field.image, field.pixel_size_um, params, float(delay))
        waits.append(wait)
        print(f"cancel after {delay:5.2f} s ({where or 'starting'}): closed in {wait:.3f} s")
    waits = np.array(waits)
    p95 = float(np.percentile(waits, 95))
    print(
        f"Cancel -> cancelled: median {np.median(waits):.3f} s, 95th percentile {p95:.3f} s "
        f"(target <= 1 s); a whole run {whole_s:.2f} s: p95 / whole run = {p95 / whole_s:.2f}"
    )


if __name__ == "__main__":
    main()

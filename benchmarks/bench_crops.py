"""Crop extraction: all cells at once (``blastscope.crops``) against per-cell Python loops.

    nice -n 10 .venv/bin/python benchmarks/bench_crops.py [--cells 2000] [--device cpu] \
        [--threads 2]

The field is the package's real BCCD sample (0.08 µm/px) tiled 4 × 4 (1920 × 2560 px); cell
centres are drawn uniformly over it and a little beyond (border crops included). Crops are the
classifier's default: a 24 µm window at 0.5 µm/px (48 × 48 px), so the image is block-averaged
(5 × 5) before sampling. Three per-cell loops produce the same crops (asserted within one grey
level):

- ``loop: grid_sample``: the block-averaged image prepared once, then one
  ``torch.nn.functional.grid_sample`` call per cell (the strictest baseline: only the cutting is
  per cell);
- ``loop: map_coordinates``: the same prepared image, ``scipy.ndimage.map_coordinates`` (order 1)
  per cell and channel;
- ``loop: window per cell``: the straightforward per-cell code: cut the cell's window from the
  uint8 image, block-average it, resample it with ``map_coordinates``.

Every timing includes the per-image work (background fill, and where shared, the block
average). Prints one table with cells/s and the speed-up of ``extract_crops`` over each loop
(target >= 20x).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from blastscope.crops import background_fill, crop_size_px, extract_crops
from blastscope.devices import resolve_device
from blastscope.samples import BCCD_PIXEL_SIZE_UM, bccd_sample

WINDOW_UM = 24.0
CROP_PIXEL_SIZE_UM = 0.5


def _prepare(image: np.ndarray, pixel_size_um: float):
    """What both loops share: fill colour, block-averaged (image - fill), offsets (crop px)."""
    fill = background_fill(image)
    scale = CROP_PIXEL_SIZE_UM / pixel_size_um
    pool = max(1, math.floor(scale + 1e-6))
    planes = torch.from_numpy(image).permute(2, 0, 1).contiguous()[None].float()
    pooled = F.avg_pool2d(planes, pool, stride=pool, ceil_mode=True)
    pooled -= torch.from_numpy(fill)[:, None, None]
    side = crop_size_px(WINDOW_UM, CROP_PIXEL_SIZE_UM)
    offsets = (np.arange(side, dtype=np.float32) - (side - 1) / 2) * scale
    return fill, pool, pooled, offsets


def _to_uint8(crop: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.clip(np.round(crop + fill), 0, 255).astype(np.uint8)


def loop_grid_sample(image: np.ndarray, centres: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """One grid_sample call per cell: crops (N, h, w, 3) uint8."""
    fill, pool, pooled, offsets = _prepare(image, pixel_size_um)
    side = len(offsets)
    out = np.empty((len(centres), side, side, 3), np.uint8)
    for index, (y, x) in enumerate(centres):
        rows = torch.from_numpy(y + offsets)
        cols = torch.from_numpy(x + offsets)
        _, _, pooled_h, pooled_w = pooled.shape
        grid_x = ((2 * cols + 1) / (pooled_w * pool) - 1)[None, :].expand(side, side)
        grid_y = ((2 * rows + 1) / (pooled_h * pool) - 1)[:, None].expand(side, side)
        grid = torch.stack((grid_x, grid_y), dim=-1)[None]
        crop = F.grid_sample(pooled, grid, mode="bilinear", align_corners=False)[0]
        out[index] = _to_uint8(crop.permute(1, 2, 0).numpy(), fill)
    return out


def loop_map_coordinates(
    image: np.ndarray, centres: np.ndarray, pixel_size_um: float
) -> np.ndarray:
    """scipy map_coordinates per cell and channel: crops (N, h, w, 3) uint8."""
    fill, pool, pooled, offsets = _prepare(image, pixel_size_um)
    channels = pooled[0].numpy()
    side = len(offsets)
    out = np.empty((len(centres), side, side, 3), np.uint8)
    for index, (y, x) in enumerate(centres):
        rows = (y + offsets - (pool - 1) / 2) / pool
        cols = (x + offsets - (pool - 1) / 2) / pool
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"))
        crop = np.stack(
            [
                ndi.map_coordinates(channel, grid, order=1, mode="grid-constant", cval=0.0)
                for channel in channels
            ],
            axis=-1,
        )
        out[index] = _to_uint8(crop, fill)
    return out


def loop_per_cell_window(
    image: np.ndarray, centres: np.ndarray, pixel_size_um: float
) -> np.ndarray:
    """Everything per cell: cut the window, block-average it, resample it (map_coordinates)."""
    fill = background_fill(image)
    scale = CROP_PIXEL_SIZE_UM / pixel_size_um
    pool = max(1, math.floor(scale + 1e-6))
    side = crop_size_px(WINDOW_UM, CROP_PIXEL_SIZE_UM)
    offsets = (np.arange(side, dtype=np.float32) - (side - 1) / 2) * scale
    height, width = image.shape[:2]
    out = np.empty((len(centres), side, side, 3), np.uint8)
    for index, (y, x) in enumerate(centres):
        rows = (y + offsets - (pool - 1) / 2) / pool  # in blocks
        cols = (x + offsets - (pool - 1) / 2) / pool
        top, left = math.floor(rows[0]) - 1, math.floor(cols[0]) - 1
        n_rows, n_cols = math.floor(rows[-1]) + 2 - top + 1, math.floor(cols[-1]) + 2 - left + 1
        window = np.zeros((n_rows * pool, n_cols * pool, 3), np.float32)
        present = np.zeros((n_rows * pool, n_cols * pool), np.float32)
        y0, x0 = top * pool, left * pool
        ys = slice(max(y0, 0), min(y0 + n_rows * pool, height))
        xs = slice(max(x0, 0), min(x0 + n_cols * pool, width))
        if ys.start < ys.stop and xs.start < xs.stop:
            inner = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
            window[inner] = image[ys, xs]
            present[inner] = 1.0
        sums = window.reshape(n_rows, pool, n_cols, pool, 3).sum(axis=(1, 3))
        counts = present.reshape(n_rows, pool, n_cols, pool).sum(axis=(1, 3))[..., None]
        blocks = np.where(counts > 0, sums / np.maximum(counts, 1) - fill, 0.0)
        grid = np.stack(np.meshgrid(rows - top, cols - left, indexing="ij"))
        crop = np.stack(
            [
                ndi.map_coordinates(blocks[..., c], grid, order=1, mode="grid-constant", cval=0.0)
                for c in range(3)
            ],
            axis=-1,
        )
        out[index] = _to_uint8(crop, fill)
    return out


def vectorised(
    image: np.ndarray, centres: np.ndarray, pixel_size_um: float, device: str
) -> np.ndarray:
    """blastscope.crops.extract_crops: all cells at once."""
    return extract_crops(
        image,
        centres,
        pixel_size_um=pixel_size_um,
        window_um=WINDOW_UM,
        out_pixel_size_um=CROP_PIXEL_SIZE_UM,
        device=device,
    )


def _timed(function, *args) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = function(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000, help="number of crops (default 2000)")
    parser.add_argument("--device", default="cpu", help="device of the vectorised cutter")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))

    image = np.ascontiguousarray(np.tile(bccd_sample().image, (4, 4, 1)))
    pixel_size_um = BCCD_PIXEL_SIZE_UM
    rng = np.random.default_rng(0)
    centres = rng.uniform(-20, 1, (args.cells, 2)) + rng.uniform(0, 1, (args.cells, 2)) * (
        np.array(image.shape[:2]) + 40
    )
    centres = centres.astype(np.float32)
    print(
        f"field {image.shape[1]}x{image.shape[0]} px at {pixel_size_um} µm/px, {args.cells} "
        f"cells, window {WINDOW_UM} µm -> {crop_size_px(WINDOW_UM, CROP_PIXEL_SIZE_UM)} px at "
        f"{CROP_PIXEL_SIZE_UM} µm/px, torch threads {torch.get_num_threads()}"
    )
    vectorised(image, centres[:10], pixel_size_um, device)  # warm-up
    reference, best = None, math.inf
    for _ in range(args.repeats):
        reference, seconds = _timed(vectorised, image, centres, pixel_size_um, device)
        best = min(best, seconds)
    rows = [(f"extract_crops ({device})", best)]
    for name, loop in (
        ("loop: grid_sample (cpu)", loop_grid_sample),
        ("loop: map_coordinates", loop_map_coordinates),
        ("loop: window per cell", loop_per_cell_window),
    ):
        crops, seconds = _timed(loop, image, centres, pixel_size_um)
        difference = np.abs(crops.astype(int) - reference.astype(int)).max()
        assert difference <= 1, f"{name} differs from extract_crops by {difference} grey levels"
        rows.append((name, seconds))
    print(f"{'method':32s} {'seconds':>9s} {'cells/s':>10s} {'extract_crops is':>18s}")
    for name, seconds in rows:
        speedup = seconds / best
        print(f"{name:32s} {seconds:9.3f} {args.cells / seconds:10.0f} {speedup:16.1f}x")


if __name__ == "__main__":
    main()

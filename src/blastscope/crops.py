"""Single-cell crops: a fixed physical window around each cell, cut for all cells at once.

Every crop covers ``window_um`` × ``window_um`` µm around a cell centre and is resampled to
``out_pixel_size_um`` (µm per pixel of the crop), so it is ``crop_px = round(window_um /
out_pixel_size_um)`` pixels square. The physical scale is the same for every cell: a large blast
fills more of its crop than a small lymphocyte, and the network sees that (cells are never
stretched to fill the crop).

Geometry: pixel ``(i, j)`` of a crop samples the analysed image at (row, column)
``centre + ((i, j) - (crop_px - 1) / 2) * out_pixel_size_um / pixel_size_um``, where pixel ``k``
of the image has its centre at coordinate ``k`` (the convention of the cells table's centroids).
The image is sampled bilinearly, the labels image by nearest neighbour. Where a crop pixel spans
``k >= 2`` image pixels (e.g. a 0.09 µm/px field cut at 0.5 µm/px), the image is first averaged
over k × k blocks, once per image, so fine detail does not alias.

Outside the image a crop is filled with a background-like colour, not black: by default the
per-channel median of the background pixels (label 0) when a labels image is given, else of the
whole image (a smear is mostly background); or a colour the caller gives. With
``mask_to_cell=True`` the pixels of *other* cells (a label that is neither 0 nor the cell's own)
are set to the fill as well; background pixels are kept, so a mask a little too small does not
cut off the cell's own cytoplasm.

All cells are cut by one ``torch.nn.functional.grid_sample`` call per chunk (one affine grid per
cell, stacked into a single (1, C, N·h, w) sample of the image), with no per-cell Python loop.
Chunks bound the memory: about ``chunk_size`` crops exist at a time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from blastscope.devices import resolve_device
from blastscope.errors import BlastscopeError
from blastscope.io import to_rgb_uint8

DEFAULT_CHUNK_SIZE = 1024
_MAX_MEDIAN_SAMPLES = 250_000

Fill = str | Sequence[float]


class CropError(BlastscopeError):
    """Crop parameters or inputs that cannot be used; the message says what to change."""


def crop_size_px(window_um: float, out_pixel_size_um: float) -> int:
    """Side of a crop in pixels: ``round(window_um / out_pixel_size_um)``."""
    if not (np.isfinite(window_um) and window_um > 0):
        raise CropError(f"window_um must be a positive number of µm, got {window_um!r}.")
    if not (np.isfinite(out_pixel_size_um) and out_pixel_size_um > 0):
        raise CropError(
            f"out_pixel_size_um must be a positive number of µm per pixel, got "
            f"{out_pixel_size_um!r}."
        )
    size = round(window_um / out_pixel_size_um)
    if size < 1:
        raise CropError(
            f"A window of {window_um} µm at {out_pixel_size_um} µm per pixel is less than one "
            "pixel wide; use a larger window or a smaller crop pixel size."
        )
    return size


def background_fill(image: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Per-channel median colour (3,) float of the background (label 0), else of the whole image.

    At most about 250,000 pixels are looked at (an even subsample), so this stays fast on
    whole-slide fields.
    """
    pixels = image.reshape(-1, image.shape[-1])
    if labels is not None:
        background = labels.reshape(-1) == 0
        if background.any():
            pixels = pixels[background]
    step = max(1, pixels.shape[0] // _MAX_MEDIAN_SAMPLES)
    return np.median(pixels[::step], axis=0).astype(np.float32)


def _check_image(image: np.ndarray, labels: np.ndarray | None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3:
        shape = getattr(image, "shape", None)
        raise CropError(
            f"Crops need an RGB image of shape (Y, X, 3), got shape {shape}. "
            "Convert it with blastscope.io.to_rgb_uint8 first."
        )
    if image.dtype != np.uint8:
        raise CropError(
            f"Crops need a uint8 RGB image, got {image.dtype}. "
            "Convert it with blastscope.io.to_rgb_uint8 first."
        )
    if labels is not None and labels.shape != image.shape[:2]:
        raise CropError(
            f"The labels image has shape {labels.shape} but the image is {image.shape[:2]}; "
            "give the labels that were segmented from this image."
        )


def _as_centres(centres_yx: np.ndarray | torch.Tensor) -> np.ndarray:
    """Check and convert centres to a float32 array (N, 2) of (row, column) pixels."""
    if isinstance(centres_yx, torch.Tensor):
        centres_yx = centres_yx.detach().cpu().numpy()
    centres = np.asarray(centres_yx, dtype=np.float32)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise CropError(
            f"centres_yx must have shape (N, 2) (row, column per cell), got {centres.shape}."
        )
    if not np.isfinite(centres).all():
        raise CropError("centres_yx holds NaN or infinite values; give every cell a centre.")
    return centres


class CropCutter:
    """Cuts crops from one image, kept on ``device`` as a float tensor between calls.

    ``image`` (Y, X, 3) uint8 at ``pixel_size_um`` µm per pixel; ``labels`` (Y, X) integer
    instance labels (needed for ``mask_to_cell``; also used for the default fill). Build it once
    per image and call :meth:`cut` per batch of cells.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        pixel_size_um: float,
        window_um: float,
        out_pixel_size_um: float,
        labels: np.ndarray | None = None,
        mask_to_cell: bool = False,
        fill: Fill = "median",
        device: str | torch.device = "cpu",
    ) -> None:
        _check_image(image, labels)
        if not (isinstance(pixel_size_um, numbers.Real) and 0 < pixel_size_um < np.inf):
            raise CropError(
                f"pixel_size_um must be a positive number of µm per pixel, got {pixel_size_um!r}; "
                "give the image's pixel size (from its metadata or the microscope)."
            )
        if mask_to_cell and labels is None:
            raise CropError(
                "mask_to_cell=True needs the labels image; pass labels=... or mask_to_cell=False."
            )
        self.crop_px = crop_size_px(window_um, out_pixel_size_um)
        self.device = resolve_device(device)
        self.mask_to_cell = mask_to_cell
        self.height, self.width = image.shape[:2]
        self.fill = self._resolve_fill(fill, image, labels)
        pinned = self.device.type == "cuda"
        image_t = torch.from_numpy(np.require(image, requirements=["C", "W"]))
        if pinned:
            image_t = image_t.pin_memory()
        image_t = image_t.to(self.device, non_blocking=pinned)
        fill_t = torch.as_tensor(self.fill, dtype=torch.float32, device=self.device)
        # Anti-aliasing: where a crop pixel spans two or more image pixels, the image is first
        # averaged over blocks of `pool` x `pool` pixels (once per image), then sampled.
        scale = out_pixel_size_um / pixel_size_um  # image pixels per crop pixel
        self._pool = max(1, int(np.floor(scale + 1e-6)))
        planes = image_t.permute(2, 0, 1).contiguous().unsqueeze(0).float()  # (1, 3, Y, X)
        if self._pool > 1:
            planes = F.avg_pool2d(planes, self._pool, stride=self._pool, ceil_mode=True)
        # Sampling (image - fill) with zero padding and adding the fill back pads with the fill
        # and blends it smoothly at the border. Values are scaled to [0, 1] here, once.
        fill_t = fill_t / 255.0
        self._image = planes.div_(255.0).sub_(fill_t[:, None, None])
        self._fill = fill_t
        self._labels = None
        if labels is not None and mask_to_cell:
            labels_t = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64, copy=False))
            self._labels = labels_t.to(self.device)
        # Offsets of the crop's pixel centres from the cell centre, in image pixels.
        self._offsets = (
            torch.arange(self.crop_px, dtype=torch.float32, device=self.device)
            - (self.crop_px - 1) / 2
        ) * scale

    @staticmethod
    def _resolve_fill(fill: Fill, image: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if isinstance(fill, str):
            if fill != "median":
                raise CropError(
                    f"fill must be 'median' or an RGB colour (3 numbers, 0-255), got {fill!r}."
                )
            return background_fill(image, labels)
        colour = np.asarray(fill, dtype=np.float32)
        if colour.shape != (3,) or not np.all((colour >= 0) & (colour <= 255)):
            raise CropError(
                f"fill must be 'median' or an RGB colour (3 numbers, 0-255), got {fill!r}."
            )
        return colour

    def cut(
        self,
        centres_yx: np.ndarray | torch.Tensor,
        cell_labels: np.ndarray | None = None,
        zoom_out: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Crops (N, 3, crop_px, crop_px) float32 in [0, 1] on the device, for centres (N, 2).

        ``centres_yx`` are (row, column) in pixels of the image; ``cell_labels`` (N,) the cells'
        label ids (needed when masking to the cell); ``zoom_out`` (N,) >= 1: each crop covers
        that many times the window, shrunk to the same crop size (None: 1 for all).
        """
        centres = torch.tensor(_as_centres(centres_yx), device=self.device)
        n, h = centres.shape[0], self.crop_px
        if n == 0:
            return torch.empty((0, 3, h, h), dtype=torch.float32, device=self.device)
        if self.mask_to_cell and (cell_labels is None or len(cell_labels) != n):
            raise CropError(
                "mask_to_cell=True needs cell_labels, one label id per centre; pass the cells "
                "table's label column."
            )
        offsets = self._offsets[None, :]
        if zoom_out is not None:
            zoom = torch.as_tensor(np.asarray(zoom_out, np.float32), device=self.device)
            if zoom.shape != (n,) or bool((zoom < 1).any()):
                raise CropError("zoom_out must hold one factor >= 1 per centre.")
            offsets = offsets * zoom[:, None]
        rows = centres[:, 0:1] + offsets  # (N, h)
        cols = centres[:, 1:2] + offsets  # (N, w)
        # In the (pooled) sampled image, pixel m is centred on image pixel m * pool + (pool-1)/2.
        # grid_sample with align_corners=False: normalised -1 is the outer edge of pixel 0, +1
        # the outer edge of the last pixel, i.e. normalised = (2 * image coordinate + 1) / side - 1
        # in image pixels, whatever the pooling (pooled side = side / pool).
        _, _, pooled_height, pooled_width = self._image.shape
        grid_x = ((2 * cols + 1) / (pooled_width * self._pool) - 1)[:, None, :]
        grid_y = ((2 * rows + 1) / (pooled_height * self._pool) - 1)[:, :, None]
        grid = torch.empty((n, h, h, 2), dtype=torch.float32, device=self.device)
        grid[..., 0] = grid_x
        grid[..., 1] = grid_y
        grid = grid.reshape(1, n * h, h, 2)
        sampled = F.grid_sample(
            self._image, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (1, 3, N*h, w)
        crops = sampled.reshape(3, n, h, h).add_(self._fill[:, None, None, None])
        crops = crops.clamp_(0.0, 1.0).permute(1, 0, 2, 3)
        if self.mask_to_cell:
            own = torch.tensor(np.asarray(cell_labels, dtype=np.int64), device=self.device)
            nearest_rows = torch.floor(rows + 0.5).long()  # (N, h)
            nearest_cols = torch.floor(cols + 0.5).long()  # (N, w)
            inside = ((nearest_rows >= 0) & (nearest_rows < self.height))[:, :, None] & (
                (nearest_cols >= 0) & (nearest_cols < self.width)
            )[:, None, :]
            flat = (
                nearest_rows.clamp(0, self.height - 1)[:, :, None] * self.width
                + nearest_cols.clamp(0, self.width - 1)[:, None, :]
            )
            crop_labels = torch.where(inside, self._labels.reshape(-1)[flat], 0)  # (N, h, w)
            other = (crop_labels != 0) & (crop_labels != own[:, None, None])
            crops = torch.where(other[:, None], self._fill[None, :, None, None], crops)
        return crops


def crop_tensor(
    image: np.ndarray,
    centres_yx: np.ndarray,
    *,
    pixel_size_um: float,
    window_um: float,
    out_pixel_size_um: float,
    labels: np.ndarray | None = None,
    cell_labels: np.ndarray | None = None,
    mask_to_cell: bool = False,
    fill: Fill = "median",
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """All crops at once as a float32 tensor (N, 3, crop_px, crop_px) in [0, 1] on ``device``.

    For many cells on one image prefer a :class:`CropCutter` and cut in batches.
    """
    cutter = CropCutter(
        image,
        pixel_size_um=pixel_size_um,
        window_um=window_um,
        out_pixel_size_um=out_pixel_size_um,
        labels=labels,
        mask_to_cell=mask_to_cell,
        fill=fill,
        device=device,
    )
    return cutter.cut(centres_yx, cell_labels)


def extract_crops(
    image: np.ndarray,
    centres_yx: np.ndarray,
    *,
    pixel_size_um: float,
    window_um: float,
    out_pixel_size_um: float,
    labels: np.ndarray | None = None,
    cell_labels: np.ndarray | None = None,
    mask_to_cell: bool = False,
    fill: Fill = "median",
    device: str | torch.device = "cpu",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
    """Crops as a uint8 array (N, crop_px, crop_px, 3), cut ``chunk_size`` cells at a time.

    ``image`` (Y, X, 3) uint8 at ``pixel_size_um`` µm per pixel; ``centres_yx`` (N, 2) in
    pixels (row, column); the window is ``window_um`` µm resampled to ``out_pixel_size_um``.
    """
    if chunk_size < 1:
        raise CropError(f"chunk_size must be at least 1, got {chunk_size}.")
    cutter = CropCutter(
        image,
        pixel_size_um=pixel_size_um,
        window_um=window_um,
        out_pixel_size_um=out_pixel_size_um,
        labels=labels,
        mask_to_cell=mask_to_cell,
        fill=fill,
        device=device,
    )
    centres = _as_centres(centres_yx)
    cell_labels = None if cell_labels is None else np.asarray(cell_labels)
    out = np.empty((len(centres), cutter.crop_px, cutter.crop_px, 3), dtype=np.uint8)
    for start in range(0, len(centres), chunk_size):
        stop = start + chunk_size
        chunk_labels = None if cell_labels is None else cell_labels[start:stop]
        crops = cutter.cut(centres[start:stop], chunk_labels)
        out[start:stop] = crops_to_uint8(crops)
    return out


def crops_to_uint8(crops: torch.Tensor) -> np.ndarray:
    """Float crops (N, 3, h, w) in [0, 1] -> uint8 array (N, h, w, 3) (rounded)."""
    scaled = (crops.detach().float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def uint8_to_crops(crops: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 crops (N, h, w, 3) -> float32 tensor (N, 3, h, w) in [0, 1] (for training)."""
    array = np.asarray(crops)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise CropError(
            f"Expected uint8 crops of shape (N, h, w, 3), got {array.dtype} {array.shape}."
        )
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(resolve_device(device))
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)


def cell_crop(
    image: np.ndarray,
    centre_yx: Sequence[float],
    *,
    pixel_size_um: float,
    window_um: float,
    out_pixel_size_um: float,
    labels: np.ndarray | None = None,
    cell_label: int | None = None,
    mask_to_cell: bool = False,
    fill: Fill = "median",
) -> np.ndarray:
    """One cell's crop (crop_px, crop_px, 3) uint8 as :func:`extract_crops` cuts it, reading
    and converting only the cell's neighbourhood of ``image`` (for a click on a large field).

    ``fill`` is best given (``background_fill`` of the whole field, computed once): "median"
    takes the neighbourhood's background instead.
    """
    # anti-aliasing pools blocks of `pool` pixels from the image's origin: the neighbourhood
    # starts on a block edge and reaches a block past the window, so its pools are the field's
    pool = max(1, int(np.floor(out_pixel_size_um / pixel_size_um + 1e-6)))
    half = math.ceil(window_um / pixel_size_um / 2) + 2 * pool + 2
    row, col = (round(float(value)) for value in centre_yx)
    top, left = (max(0, start - half) // pool * pool for start in (row, col))
    rows = slice(top, min(image.shape[0], row + half + 1))
    cols = slice(left, min(image.shape[1], col + half + 1))
    region, _ = to_rgb_uint8(np.asarray(image[rows, cols]))
    centre = np.array([[float(centre_yx[0]) - rows.start, float(centre_yx[1]) - cols.start]])
    return extract_crops(
        region,
        centre,
        pixel_size_um=pixel_size_um,
        window_um=window_um,
        out_pixel_size_um=out_pixel_size_um,
        labels=None if labels is None else labels[rows, cols],
        cell_labels=None if cell_label is None else np.array([cell_label]),
        mask_to_cell=mask_to_cell,
        fill=fill,
    )[0]

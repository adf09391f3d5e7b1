"""Whole-slide images: pyramidal TIFF, OME-TIFF and Aperio SVS, read lazily level by level and
tile by tile through tifffile's zarr store, never the full resolution into memory.

Coordinates are **level-0 pixels**, (row, column) from the top-left corner of the
full-resolution image; a region is ``Region(x, y, width, height)`` in those pixels (the order
QuPath and OpenSlide use). Only the slide's image pyramid is read: the label and macro images
of scanner files (they carry patient identifiers) are never opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blastscope.errors import BlastscopeError
from blastscope.io import (
    PIXEL_SIZE_RANGE_UM,
    ImageInputError,
    check_pixel_size,
    tiff_pixel_size_um,
    to_rgb_uint8,
)

SLIDE_SUFFIXES = (".svs", ".ndpi", ".ome.tif", ".ome.tiff", ".tif", ".tiff")
FIELD_LIMIT_PX = 12_000**2
"""Level-0 pixels above which a file is read as a whole slide only through a region
(``--roi``): reading it whole would take gigabytes before any check could run."""


class SlideError(BlastscopeError):
    """A whole-slide file or region that cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Region:
    """A rectangle of a slide in level-0 pixels: ``x`` and ``y`` of its top-left corner,
    ``width`` and ``height``."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Region:
        """``"x,y,width,height"`` (level-0 pixels, as QuPath shows them) -> a Region."""
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) != 4 or not all(re.fullmatch(r"\d+", part) for part in parts):
            raise SlideError(
                f"A region is four whole numbers x,y,width,height in level-0 pixels (for "
                f"example 12000,8000,2048,2048), not {text!r}."
            )
        x, y, width, height = (int(part) for part in parts)
        if width < 1 or height < 1:
            raise SlideError(f"The region {text!r} is empty: give a width and a height >= 1.")
        return cls(x, y, width, height)

    def as_text(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


@dataclass
class SlideImage:
    """An open pyramidal image: ``levels`` are lazy dask arrays (Y, X, C), level 0 first;
    ``downsamples`` their size ratio to level 0; ``pixel_size_um`` level 0's µm per pixel (None
    when the file does not say); close it (or use it as a context manager) when done."""

    path: Path
    levels: list[Any]
    downsamples: list[float]
    pixel_size_um: float | None
    notices: list[str] = field(default_factory=list)
    _tiff: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """Level 0's (height, width) in pixels."""
        return tuple(int(side) for side in self.levels[0].shape[:2])

    def level_pixel_size_um(self, level: int) -> float | None:
        """µm per pixel of ``level`` (None when level 0's is unknown)."""
        if self.pixel_size_um is None:
            return None
        return self.pixel_size_um * self.downsamples[level]

    def read_region(self, region: Region, level: int = 0) -> np.ndarray:
        """The region (level-0 pixels) read from ``level`` as (Y, X, 3) uint8; only the tiles
        it overlaps are decoded."""
        height, width = self.shape
        if region.x >= width or region.y >= height:
            raise SlideError(
                f"The region {region.as_text()} starts outside the slide ({width} x {height} "
                "level-0 pixels, x by y): give x < width and y < height."
            )
        right = min(width, region.x + region.width)
        bottom = min(height, region.y + region.height)
        scale = self.downsamples[level]
        rows = slice(int(region.y / scale), max(int(region.y / scale) + 1, int(bottom / scale)))
        cols = slice(int(region.x / scale), max(int(region.x / scale) + 1, int(right / scale)))
        rgb, _ = to_rgb_uint8(self.read_window(level, rows, cols))
        return rgb

    def read_window(self, level: int, rows: slice, cols: slice, step: int = 1) -> np.ndarray:
        """Pixels ``rows`` x ``cols`` of ``level`` (its own pixels), every ``step``-th, as they
        are stored: decoded here, even where a dask cluster is the default scheduler (a
        slide's reads belong to the process that opened it)."""
        import dask

        with dask.config.set(scheduler="synchronous"):
            return np.asarray(self.levels[level][rows, cols][::step, ::step])

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None

    def __enter__(self) -> SlideImage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_slide(path: str | Path) -> SlideImage:
    """Open a pyramidal TIFF, OME-TIFF or Aperio SVS lazily (see the module text).

    The pixel size comes from the OME metadata, Aperio's ``MPP`` or the resolution tags, and is
    kept only inside :data:`blastscope.io.PIXEL_SIZE_RANGE_UM` (else None, with a notice).
    """
    import dask.array as da
    import tifffile
    import zarr

    path = Path(path)
    if not path.is_file():
        raise SlideError(f"No slide file at {path}: check the path.")
    try:
        tiff = tifffile.TiffFile(path)
    except Exception as error:
        raise SlideError(
            f"Could not open {path.name} as a TIFF slide ({type(error).__name__}: {error}); "
            "blastscope reads pyramidal TIFF, OME-TIFF and Aperio SVS."
        ) from error
    try:
        series = tiff.series[0]  # the pyramid; SVS label and macro images are other series
        group = zarr.open(series.aszarr(), mode="r")
        keys = sorted(group.keys(), key=int) if hasattr(group, "keys") else []
        arrays = [group[key] for key in keys] or [group]
        levels = [da.from_zarr(array) for array in arrays]
        levels = [_yxc(level, series.axes) for level in levels]
        base = levels[0].shape[0]
        downsamples = [base / level.shape[0] for level in levels]
        pixel_size, notices = _checked_pixel_size(tiff, path)
    except SlideError:
        tiff.close()
        raise
    except Exception as error:
        tiff.close()
        raise SlideError(
            f"Could not read the image pyramid of {path.name} ({type(error).__name__}: {error})."
        ) from error
    return SlideImage(path, levels, downsamples, pixel_size, notices, tiff)


def _yxc(level: Any, axes: str) -> Any:
    """A level as (Y, X, C): channel-first moved last, leading page axes dropped (first)."""
    axes = axes[-level.ndim :] if len(axes) >= level.ndim else axes
    if axes.endswith(("CYX", "SYX")) and level.ndim >= 3:
        level = level.transpose(*range(level.ndim - 3), level.ndim - 2, level.ndim - 1, -3)
    while level.ndim > 3 or (level.ndim == 3 and level.shape[-1] > 4):
        level = level[0]
    if level.ndim == 2:
        level = level[..., None]
    return level


def _checked_pixel_size(tiff: Any, path: Path) -> tuple[float | None, list[str]]:
    size = tiff_pixel_size_um(tiff)
    if size is None:
        return None, [f"{path.name} records no pixel size: give --pixel-size (µm per pixel)."]
    try:
        return check_pixel_size(size), []
    except ImageInputError:
        low, high = PIXEL_SIZE_RANGE_UM
        return None, [
            f"Ignored {path.name}'s pixel size of {size:g} µm per pixel: outside the {low:g}-"
            f"{high:g} µm a light microscope gives. Give --pixel-size (µm per pixel)."
        ]


def is_whole_slide(path: str | Path) -> bool:
    """Whether ``path`` is a TIFF or SVS too large to read whole as a field
    (:data:`FIELD_LIMIT_PX`); such files are read through a region. A small SVS is a field."""
    import tifffile

    path = Path(path)
    if not path.name.lower().endswith(SLIDE_SUFFIXES):
        return False
    try:
        with tifffile.TiffFile(path) as tiff:
            shape = tiff.series[0].levels[0].shape
            axes = tiff.series[0].axes
    except Exception:
        return False  # not a readable TIFF: the field reader says why
    sizes = dict(zip(axes, shape, strict=False))
    return sizes.get("Y", 0) * sizes.get("X", 0) > FIELD_LIMIT_PX

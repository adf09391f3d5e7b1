"""Whole-slide images: pyramidal TIFF, OME-TIFF, Aperio SVS and Hamamatsu NDPI, read lazily
level by level and tile by tile through tifffile's zarr store, never the full resolution into
memory; 3DHISTECH MRXS and the other OpenSlide formats (:data:`OPENSLIDE_SUFFIXES`) through
OpenSlide, an optional extra (``pip install 'napari-blastscope[openslide]'``, LGPL).

Coordinates are **level-0 pixels**, (row, column) from the top-left corner of the
full-resolution image; a region is ``Region(x, y, width, height)`` in those pixels (the order
QuPath and OpenSlide use). For an OpenSlide file whose scan covers only part of its frame
(MRXS, ``openslide.bounds-*``), the image starts at the bounds' corner, as QuPath shows it.
An NDPI's level 0 starts at its image's top-left corner too: its stage offsets
(``XOffsetFromSlideCentre``, ``YOffsetFromSlideCentre``, tags 65422-65423, nm from the glass's
centre) are not applied, as neither OpenSlide (which keeps them as ``hamamatsu.*`` properties
only, with no bounds) nor QuPath applies them. Its pixel size is its resolution tags' (pixels
per centimetre).
Only the slide's image pyramid is read: the label and macro images of scanner files (they carry
patient identifiers) are never opened.
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
    companion_folder,
    tiff_pixel_size_um,
    to_rgb_uint8,
)

OPENSLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide")
"""Scanner formats tifffile cannot read, opened through OpenSlide (the ``openslide`` extra)."""
SLIDE_SUFFIXES = (".svs", ".ndpi", ".ome.tif", ".ome.tiff", ".tif", ".tiff", *OPENSLIDE_SUFFIXES)
DEFAULT_TILE_PX = 1536
"""The tiled pipeline's tile side in level-0 pixels (``--slide-tile``), before its halo: on a
6,144^2 slide in process as fast as 2,048 (223-228 s either way) with a lower peak (1.07-1.20
against 1.24-1.27 GB), since a tile's peak follows its area (docs/benchmarks.md)."""
OPENSLIDE_CHUNK_PX = 1024
"""The chunk side of an OpenSlide level as a dask array (one ``read_region`` each)."""
SLIDE_CHUNK_MIN_PX = 256
"""The least height and width of a TIFF level's dask chunk: an NDPI's JPEG restart intervals
(tiles 8 or 16 rows high) and thin strips are grouped into chunks this tall, since each read of
a level pays for every chunk of the level (docs/architecture.md); 256-pixel tiles and larger
are kept as the file has them."""
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


BITS_SAMPLE_SIDE_PX = 2048
"""Side (pixels) to which the coarsest level is thinned when finding a slide's bit depth."""


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
    _file: Any = field(default=None, repr=False)
    bits: int | None = None
    """Bits the values use (None: found on first need, :meth:`value_bits`)."""

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
        return self.to_uint8(self.read_window(level, rows, cols))

    def thumbnail(self, region: Region, max_side: int) -> tuple[np.ndarray, float]:
        """``region`` seen from the coarsest pyramid level that keeps its longer side at least
        ``max_side`` pixels (thinned to about that): (Y, X, 3) uint8 and the level-0 pixels
        per thumbnail pixel."""
        wanted = max(1.0, max(region.width, region.height) / max_side)
        level = max(
            (index for index, factor in enumerate(self.downsamples) if factor <= wanted),
            default=0,
        )
        factor = self.downsamples[level]
        step = max(1, int(wanted / factor))
        rows = slice(int(region.y / factor), int((region.y + region.height) / factor))
        cols = slice(int(region.x / factor), int((region.x + region.width) / factor))
        return self.to_uint8(self.read_window(level, rows, cols, step)), factor * step

    def to_uint8(self, pixels: np.ndarray) -> np.ndarray:
        """Stored pixels as (Y, X, 3) uint8, with one scale for the whole slide: an integer
        slide of more than 8 bits by the bit depth of its values (:meth:`value_bits`), so that
        a dark tile is not brightened as a field of its own would be; anything else as
        :func:`~blastscope.io.to_rgb_uint8` converts it."""
        if pixels.dtype.kind == "u" and pixels.dtype.itemsize > 1:
            scale = 255.0 / (2 ** self.value_bits() - 1)
            pixels = np.round(pixels.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)
        return to_rgb_uint8(pixels)[0]

    def value_bits(self) -> int:
        """Bits the slide's values use (8, 10, 12, 14 or 16), from its coarsest level (thinned
        to about :data:`BITS_SAMPLE_SIDE_PX` a side); found once."""
        if self.bits is None:
            level = len(self.levels) - 1
            height, width = self.levels[level].shape[:2]
            step = max(1, max(height, width) // BITS_SAMPLE_SIDE_PX)
            high = int(self.read_window(level, slice(None), slice(None), step).max(initial=0))
            self.bits = next((bits for bits in (8, 10, 12, 14) if high < 2**bits), 16)
        return self.bits

    def read_window(self, level: int, rows: slice, cols: slice, step: int = 1) -> np.ndarray:
        """Pixels ``rows`` x ``cols`` of ``level`` (its own pixels), every ``step``-th, as they
        are stored: decoded here, even where a dask cluster is the default scheduler (a
        slide's reads belong to the process that opened it)."""
        import dask

        with dask.config.set(scheduler="synchronous"):
            return np.asarray(self.levels[level][rows, cols][::step, ::step])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> SlideImage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_slide(path: str | Path) -> SlideImage:
    """Open a pyramidal TIFF, OME-TIFF, Aperio SVS, NDPI or an OpenSlide format lazily (see
    the module text).

    The pixel size comes from the OME metadata, Aperio's ``MPP``, the resolution tags or
    OpenSlide's ``openslide.mpp-x``, and is kept only inside
    :data:`blastscope.io.PIXEL_SIZE_RANGE_UM` (else None, with a notice).
    """
    import dask.array as da
    import tifffile
    import zarr

    path = Path(path)
    if not path.is_file():
        raise SlideError(f"No slide file at {path}: check the path.")
    if path.name.lower().endswith(OPENSLIDE_SUFFIXES):
        return open_with_openslide(path)
    try:
        tiff = tifffile.TiffFile(path)
    except Exception as error:
        raise SlideError(
            f"Could not open {path.name} as a TIFF slide ({type(error).__name__}: {error}); "
            "blastscope reads pyramidal TIFF, OME-TIFF, Aperio SVS and Hamamatsu NDPI."
        ) from error
    try:
        series = tiff.series[0]  # the pyramid; SVS label and macro images are other series
        group = zarr.open(series.aszarr(), mode="r")
        keys = sorted(group.keys(), key=int) if hasattr(group, "keys") else []
        arrays = [group[key] for key in keys] or [group]
        levels = [da.from_zarr(array, chunks=_read_chunks(array, series.axes)) for array in arrays]
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


def open_with_openslide(path: str | Path) -> SlideImage:
    """Open ``path`` through OpenSlide: each level a lazy dask array of
    :data:`OPENSLIDE_CHUNK_PX` chunks, cropped to the scanned bounds where the file records
    them (module text). Raises :class:`SlideError` naming the extra when OpenSlide is missing."""
    path = Path(path)
    try:
        import openslide
    except ImportError:
        raise SlideError(
            f"{path.name} is a scanner format that blastscope reads through OpenSlide, which is "
            "not installed: pip install 'napari-blastscope[openslide]' (openslide-python and "
            "openslide-bin, LGPL), or convert the slide to OME-TIFF (e.g. bfconvert, QuPath)."
        ) from None
    folder = companion_folder(path)
    if folder is not None and not folder.is_dir():
        raise SlideError(
            f"{path.name} holds no pixels: an MRXS slide's are in the folder {folder.name}/ "
            "beside it (Slidedat.ini, Index.dat, Data*.dat). Copy that folder with the file."
        )
    try:
        handle = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as error:
        raise SlideError(
            f"OpenSlide could not open {path.name} ({error}). Check that the file"
            + (f" and its folder {folder.name}/ were" if folder is not None else " was")
            + " copied completely."
        ) from None
    properties = handle.properties
    x0 = int(properties.get(openslide.PROPERTY_NAME_BOUNDS_X, 0) or 0)
    y0 = int(properties.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0) or 0)
    full_width, full_height = handle.dimensions
    width = int(properties.get(openslide.PROPERTY_NAME_BOUNDS_WIDTH, full_width) or full_width)
    height = int(properties.get(openslide.PROPERTY_NAME_BOUNDS_HEIGHT, full_height) or full_height)
    downsamples = [float(factor) for factor in handle.level_downsamples]
    fill = _background_rgb(properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR))
    levels = [
        _openslide_level(handle, level, (x0, y0), (width, height), factor, fill)
        for level, factor in enumerate(downsamples)
    ]
    size = properties.get(openslide.PROPERTY_NAME_MPP_X)
    notices: list[str] = []
    pixel_size = None
    if size is None:
        notices.append(f"{path.name} records no pixel size: give --pixel-size (µm per pixel).")
    else:
        try:
            pixel_size = check_pixel_size(float(size))
        except (ImageInputError, ValueError):
            notices.append(
                f"Ignored {path.name}'s pixel size of {size} µm per pixel: give --pixel-size."
            )
    return SlideImage(path, levels, downsamples, pixel_size, notices, handle)


def _background_rgb(hex_colour: str | None) -> np.ndarray:
    """OpenSlide's ``openslide.background-color`` (``RRGGBB``) as RGB, white where absent."""
    try:
        return np.frombuffer(bytes.fromhex(hex_colour or ""), np.uint8)[:3].reshape(3)
    except ValueError:
        return np.full(3, 255, np.uint8)


def _openslide_level(
    handle: Any, level: int, origin: tuple[int, int], size, factor: float, fill: np.ndarray
):
    """One OpenSlide level as a lazy (Y, X, 3) uint8 dask array, each chunk one
    ``read_region`` (level-0 location from the bounds' corner). Its RGBA is composited over the
    slide's background colour ``fill``, as QuPath shows it: what the scanner skipped inside the
    bounds (transparent) reads as empty glass, not as black."""
    import dask.array as da

    width, height = int(size[0] // factor), int(size[1] // factor)
    chunk = OPENSLIDE_CHUNK_PX
    rows = tuple(min(chunk, height - start) for start in range(0, height, chunk))
    cols = tuple(min(chunk, width - start) for start in range(0, width, chunk))

    def read(block_info=None):
        (top, bottom), (left, right), _ = block_info[None]["array-location"]
        location = (origin[0] + int(left * factor), origin[1] + int(top * factor))
        rgba = np.asarray(handle.read_region(location, level, (right - left, bottom - top)))
        alpha = rgba[..., 3:].astype(np.uint16)
        blended = rgba[..., :3] * alpha + fill * (255 - alpha) + 127
        return (blended // 255).astype(np.uint8)

    return da.map_blocks(read, chunks=(rows, cols, (3,)), dtype=np.uint8)


def _read_chunks(array: Any, axes: str) -> tuple[int, ...]:
    """A level's dask chunks: the file's, grown along Y and X to whole multiples of at least
    :data:`SLIDE_CHUNK_MIN_PX` (each chunk still decodes only the file's pieces it covers)."""
    chunks = []
    for axis, size, chunk in zip(axes[-array.ndim :], array.shape, array.chunks, strict=True):
        if axis in "YX" and chunk < SLIDE_CHUNK_MIN_PX:
            chunk = min(size, chunk * -(-SLIDE_CHUNK_MIN_PX // chunk))
        chunks.append(chunk)
    return tuple(chunks)


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


def slide_stem(path: str | Path) -> str:
    """The slide's name without its format's suffix: ``scan.ome.tif`` -> ``scan``,
    ``patient.7.svs`` -> ``patient.7``."""
    name = Path(path).name
    for suffix in sorted(SLIDE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_whole_slide(path: str | Path) -> bool:
    """Whether ``path`` is a TIFF or SVS too large to read whole as a field
    (:data:`FIELD_LIMIT_PX`); such files are read through a region. A small SVS is a field."""
    import tifffile

    path = Path(path)
    if not path.name.lower().endswith(SLIDE_SUFFIXES):
        return False
    if path.name.lower().endswith(OPENSLIDE_SUFFIXES):
        return True  # scanner formats are whole slides
    try:
        with tifffile.TiffFile(path) as tiff:
            shape = tiff.series[0].levels[0].shape
            axes = tiff.series[0].axes
    except Exception:
        return False  # not a readable TIFF: the field reader says why
    sizes = dict(zip(axes, shape, strict=False))
    return sizes.get("Y", 0) * sizes.get("X", 0) > FIELD_LIMIT_PX

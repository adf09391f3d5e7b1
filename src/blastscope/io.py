"""Reading fields into RGB uint8 arrays with their pixel size.

Everything that enters the pipeline passes :func:`to_rgb_uint8`, which converts what it safely
can (grayscale, RGBA, channel-first, 16-bit, float) and says so in a notice, and refuses the rest
with an :class:`ImageInputError` that names the problem and the fix.

Pixel sizes (µm per pixel) pass :func:`check_pixel_size`, wherever they come from (the CLI, the
Python API, the segmenter): one range, :data:`PIXEL_SIZE_RANGE_UM`, for what a light microscope
produces. A pixel size read from a file's metadata that falls outside it is ignored with a notice
(the file still opens, and the pipeline estimates the pixel size from the cell size): such values
come from a wrong unit in the metadata or a scanner's placeholder, not from the slide, and a user
expects the field to open; the notice names ``--pixel-size`` to give the right value.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blastscope.errors import BlastscopeError

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs")
MIN_SIDE_PX = 16
PIXEL_SIZE_RANGE_UM = (0.02, 5.0)
"""µm per pixel a light microscope can produce: about 0.03 with a 100x oil objective on a camera
of small pixels (0.02 leaves room for super-sampled scans) to about 3-5 with a 2x objective."""
ACCEPTED_SHAPES = "(Y, X) grey, (Y, X, 3) RGB or (Y, X, 4) RGBA (channels last, or first)"

_UNIT_TO_UM = {
    "m": 1e6,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "\\u00B5m": 1.0,
}


class ImageInputError(BlastscopeError):
    """An image the pipeline cannot analyse; the message says why and what to do."""


def check_pixel_size(value: float | str, name: str = "pixel_size_um") -> float:
    """``value`` (µm per pixel; a number or a numeric string such as ``"0.25"``) as a float.

    Raises :class:`ImageInputError`, naming ``name``, for anything that is not a number or lies
    outside :data:`PIXEL_SIZE_RANGE_UM` (with a hint when the value looks like nm or mm).
    """
    low, high = PIXEL_SIZE_RANGE_UM
    expected = (
        f"{name} must be a number between {low:g} and {high:g} µm per pixel (what a light "
        "microscope gives, for example 0.25 for a 40x scan, 0.1 for a 100x oil objective)"
    )
    number = None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise ImageInputError(f"{expected}; got {value!r}, which is not a number.")
    if not (np.isfinite(number) and low <= number <= high):
        hint = ""
        if 1e3 * low <= number <= 1e3 * high:
            hint = f" If it is in nanometres, give {number / 1e3:g}."
        elif 1e-3 * low <= number <= 1e-3 * high:
            hint = f" If it is in millimetres, give {number * 1e3:g}."
        raise ImageInputError(f"{expected}; got {number:g}.{hint}")
    return number


@dataclass
class Field:
    """An RGB field of view: ``image`` is (Y, X, 3) uint8; ``pixel_size_um`` is µm per pixel."""

    image: np.ndarray
    pixel_size_um: float | None = None
    path: Path | None = None
    sha256: str | None = None
    notices: list[str] = field(default_factory=list)
    region: Any = None
    """The :class:`~blastscope.slide.Region` of a whole slide this field is (level-0 pixels),
    else None."""


def to_rgb_uint8(image: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Return ``image`` as a (Y, X, 3) uint8 array and the notices about what was converted.

    Raises :class:`ImageInputError` for stacks, empty images and anything else that is not one
    2-D field.
    """
    array = np.asarray(image)
    notices: list[str] = []
    if array.dtype == bool or array.dtype.kind not in "uif":
        raise ImageInputError(
            f"Unsupported pixel type {array.dtype}: expected an RGB image of integers or floats. "
            "Open the field itself (not a mask or a label image)."
        )
    array = _to_yxc(array, notices)
    if min(array.shape[:2]) < MIN_SIDE_PX:
        raise ImageInputError(
            f"Image of {array.shape[0]}x{array.shape[1]} pixels is too small to hold a cell; "
            f"give a field of at least {MIN_SIDE_PX}x{MIN_SIDE_PX} pixels."
        )
    array = _to_uint8(array, notices)
    if not array.any():
        raise ImageInputError(
            "The image is empty (every pixel is 0). Check that the file holds the stained field "
            "and was exported with its pixel values."
        )
    return np.ascontiguousarray(array), notices


def _to_yxc(array: np.ndarray, notices: list[str]) -> np.ndarray:
    if array.ndim == 2:
        notices.append(
            "Single-channel image: replicated to RGB. The models were trained on colour "
            "(Wright-Giemsa) stains, so expect weaker results; open the RGB field if you have it."
        )
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.shape[-1] == 4:
            notices.append("RGBA image: the alpha channel was dropped.")
            array = array[..., :3]
        return array
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] > 4:
        notices.append(f"Channel-first image {array.shape}: channels moved to the last axis.")
        return _to_yxc(np.moveaxis(array, 0, -1), notices)
    if array.ndim == 3 and array.shape[-1] == 1:
        return _to_yxc(array[..., 0], notices)
    if array.ndim == 3 and array.shape[-1] < min(array.shape[:2]):
        raise ImageInputError(
            f"Got an image of shape {array.shape}, a field with {array.shape[-1]} channels. "
            f"blastscope accepts {ACCEPTED_SHAPES}. Save the field as an RGB image (for "
            "separate stain channels, combine them into RGB first)."
        )
    raise ImageInputError(
        f"Got an array of shape {array.shape}, which looks like a stack, not one field. "
        f"blastscope analyses one 2-D field, {ACCEPTED_SHAPES}: pick one plane (for example "
        "image[0]) or save the field as an RGB image."
    )


def _to_uint8(array: np.ndarray, notices: list[str]) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ImageInputError(
                "The image holds NaN or infinite values; replace them (for example with "
                "np.nan_to_num) before analysing it."
            )
        low, high = float(array.min()), float(array.max())
        if low >= 0.0 and high <= 1.0:
            notices.append("Float image in [0, 1]: scaled to 8-bit (x255).")
            return np.round(array * 255.0).astype(np.uint8)
        notices.append(f"Float image with values in [{low:.3g}, {high:.3g}]: stretched to 8-bit.")
        span = high - low if high > low else 1.0
        return np.round((array - low) / span * 255.0).astype(np.uint8)
    high = int(array.max())
    if array.dtype.kind == "i" and int(array.min()) < 0:
        raise ImageInputError(
            "The image holds negative values; a stained field has non-negative intensities. "
            "Convert it to unsigned integers or floats in [0, 1] first."
        )
    if high <= 255:
        return array.astype(np.uint8)
    bits = next(b for b in (10, 12, 14, 16, 32, 64) if high < 2**b)
    notices.append(f"{array.dtype} image with {bits}-bit values: scaled to 8-bit.")
    return np.round(array.astype(np.float64) * (255.0 / (2**bits - 1))).astype(np.uint8)


def companion_folder(path: str | Path) -> Path | None:
    """The folder that holds a 3DHISTECH MRXS slide's pixels (``scan/`` beside ``scan.mrxs``:
    ``Slidedat.ini``, ``Index.dat``, ``Data*.dat``); None for a one-file format."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() == ".mrxs" else None


def image_sha256(path: str | Path) -> str:
    """SHA-256 of an image's bytes, read in chunks: the file's, and for an MRXS slide then the
    name and bytes of each file in its companion folder (by name), since its small ``.mrxs``
    file is alike for every slide. A one-file image hashes as its bytes alone."""
    path = Path(path)
    folder = companion_folder(path)
    parts = [path]
    if folder is not None and folder.is_dir():
        parts += sorted(item for item in folder.iterdir() if item.is_file())
    digest = hashlib.sha256()
    for part in parts:
        if part is not path:
            digest.update(part.name.encode() + b"\0")
        with open(part, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_field(
    path: str | Path, pixel_size_um: float | None = None, *, region: Any = None
) -> Field:
    """Read an image file as an RGB field; ``region`` (a :class:`~blastscope.slide.Region`)
    reads only that rectangle of a whole slide, lazily. A whole slide without a region is
    refused with the fix (reading it whole would take gigabytes).

    The pixel size comes from ``pixel_size_um`` when given (µm per pixel, checked by
    :func:`check_pixel_size`; a notice says so when the file's metadata disagrees), else from
    the file's metadata (OME, ImageJ or TIFF resolution tags), else it stays ``None`` and later
    stages estimate it. A metadata pixel size outside :data:`PIXEL_SIZE_RANGE_UM` is ignored
    with a notice (it stays ``None``) rather than refused. A TIFF of several pages or series is
    read as its first, with a notice that says how many there are.
    """
    path = Path(path)
    if pixel_size_um is not None:
        pixel_size_um = check_pixel_size(pixel_size_um)
    if not path.is_file():
        raise ImageInputError(f"No image file at {path}: check the path.")
    if path.stat().st_size == 0 and companion_folder(path) is None:  # an MRXS's may be empty
        raise ImageInputError(
            f"Could not read {path.name}: the file is empty (0 bytes). Copy or export it again."
        )
    file_pixel_size, read_notices = None, []
    slide = _whole_slide_field(path, region)
    try:
        if slide is not None:
            raw, file_pixel_size, read_notices = slide
        elif path.name.lower().endswith(TIFF_SUFFIXES):
            raw, file_pixel_size, read_notices = _read_tiff(path)
        else:
            import imageio.v3 as iio

            raw = iio.imread(path)
    except ImageInputError:
        raise
    except Exception as error:
        raise ImageInputError(
            f"Could not read {path.name}: the file is damaged or is not a "
            f"{path.suffix.lstrip('.').upper() or 'image'} file ({_reason(error)}). Check that "
            "it was copied completely and opens in an image viewer; blastscope reads TIFF, PNG "
            "and JPEG."
        ) from error
    image, notices = to_rgb_uint8(raw)
    notices[:0] = read_notices
    if file_pixel_size is not None and pixel_size_um is None:
        try:
            check_pixel_size(file_pixel_size)
        except ImageInputError:
            low, high = PIXEL_SIZE_RANGE_UM
            notices.append(
                f"Ignored the file's pixel size of {file_pixel_size:g} µm per pixel: it is "
                f"outside the {low:g}-{high:g} µm a light microscope gives (a wrong unit in the "
                "metadata?). The pixel size will be estimated from the cell size; give the "
                "right one with --pixel-size (pixel_size_um in Python)."
            )
            file_pixel_size = None
    if pixel_size_um is not None:
        disagrees = file_pixel_size is not None and not np.isclose(
            pixel_size_um, file_pixel_size, rtol=0.01
        )
        if disagrees:
            notices.append(
                f"Using the given pixel size {pixel_size_um:g} µm instead of the file's "
                f"{file_pixel_size:g} µm."
            )
    else:
        pixel_size_um = file_pixel_size
    if region is not None:  # the part of it on the slide
        read = type(region)(region.x, region.y, image.shape[1], image.shape[0])
        if read != region:
            notices.append(
                f"The region runs past the slide's edge: only {read.as_text()} of it was read "
                "and analysed."
            )
        region = read
    return Field(image, pixel_size_um, path, image_sha256(path), notices, region)


def _whole_slide_field(path: Path, region: Any) -> tuple[np.ndarray, float | None, list] | None:
    """(pixels, pixel size, notices) of ``region`` of a whole slide; None for a plain field.
    A whole slide without a region is refused with the fix."""
    from blastscope.slide import SlideError, is_whole_slide, open_slide

    if region is None and not is_whole_slide(path):
        return None
    try:
        with open_slide(path) as slide:
            if region is None:
                height, width = slide.shape
                raise ImageInputError(
                    f"{path.name} is a whole slide ({width} x {height} pixels): analyse a region "
                    "of it with --roi x,y,width,height (level-0 pixels, e.g. --roi "
                    f"0,0,{min(width, 4096)},{min(height, 4096)}), or all of it tile by tile "
                    "with --tiled; region= or blastscope.wholeslide in Python."
                )
            pixels = slide.read_region(region)
            notices = [
                *slide.notices,
                f"Region {region.as_text()} (x,y,width,height, level-0 pixels) of "
                f"{path.name} ({slide.shape[1]} x {slide.shape[0]} pixels).",
            ]
            return pixels, slide.pixel_size_um, notices
    except SlideError as error:
        raise ImageInputError(str(error)) from error


def _reason(error: Exception) -> str:
    """The first line of a reader's error; imageio's "no backend" advice becomes plain words."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "Could not find a backend" in text:
        return "no reader recognised its contents"
    return text


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None, list[str]]:
    """The first image of a TIFF (its full-resolution level), its pixel size and notices."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        image = series.levels[0].asarray()
        pages = _leading_pages(series.axes, image.shape)
        count = int(np.prod(image.shape[:pages])) + len(tif.series) - 1
        if pages:
            image = image[(0,) * pages]
        notices = []
        if count > 1:
            field_axes = series.axes[pages:] if len(series.axes) == series.ndim else ""
            size = ""
            if "Y" in field_axes and "X" in field_axes:
                height, width = (image.shape[field_axes.index(axis)] for axis in "YX")
                size = f", {height} x {width} pixels"
            notices.append(
                f"{path.name} holds {count} images (pages or series); analysing the first "
                f"(image 1 of {count}{size}). Save another as its own file to analyse it."
            )
        return image, tiff_pixel_size_um(tif), notices


def _leading_pages(axes: str, shape: tuple[int, ...]) -> int:
    """How many leading axes of a TIFF series index pages (not Y, X, channels or samples)."""
    field_axes = 3 if axes.endswith(("YXS", "CYX", "SYX")) else 2
    return max(0, len(shape) - field_axes) if len(axes) == len(shape) else 0


def tiff_pixel_size_um(tif) -> float | None:
    """µm per pixel from OME-XML, Aperio's ``MPP``, ImageJ metadata or the resolution tags;
    None if absent (not range-checked: see :func:`check_pixel_size`)."""
    if tif.is_svs:
        match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", tif.pages[0].description or "")
        if match:
            return float(match.group(1))
    if tif.is_ome and tif.ome_metadata:
        root = ET.fromstring(tif.ome_metadata)
        for element in root.iter():
            if element.tag.endswith("Pixels") and "PhysicalSizeX" in element.attrib:
                unit = element.attrib.get("PhysicalSizeXUnit", "µm")
                factor = _UNIT_TO_UM.get(unit)
                if factor is not None:
                    return float(element.attrib["PhysicalSizeX"]) * factor
    page = tif.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    numerator, denominator = tag.value
    if numerator == 0:
        return None
    pixels_per_unit = numerator / denominator
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    if tif.is_imagej and tif.imagej_metadata:
        imagej_unit = str(tif.imagej_metadata.get("unit", "")).strip()
        factor = _UNIT_TO_UM.get(re.sub(r"\s", "", imagej_unit))
        if factor is not None:
            return factor / pixels_per_unit
    if unit == 3:  # centimetre
        size = 1e4 / pixels_per_unit
    elif unit == 2:  # inch; 72 dpi (and 1 dpi) are screen defaults, not a microscope's
        if pixels_per_unit in (1.0, 72.0, 96.0, 300.0):
            return None
        size = 25400.0 / pixels_per_unit
    else:
        return None
    return size

"""Reading fields into RGB uint8 arrays with their pixel size.

Everything that enters the pipeline passes :func:`to_rgb_uint8`, which converts what it safely
can (grayscale, RGBA, channel-first, 16-bit, float) and says so in a notice, and refuses the rest
with an :class:`ImageInputError` that names the problem and the fix.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs")
MIN_SIDE_PX = 16

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


class ImageInputError(ValueError):
    """An image the pipeline cannot analyse; the message says why and what to do."""


@dataclass
class Field:
    """An RGB field of view: ``image`` is (Y, X, 3) uint8; ``pixel_size_um`` is µm per pixel."""

    image: np.ndarray
    pixel_size_um: float | None = None
    path: Path | None = None
    sha256: str | None = None
    notices: list[str] = field(default_factory=list)


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
    raise ImageInputError(
        f"Got an array of shape {array.shape}, which looks like a stack, not one field. "
        "blastscope analyses one 2-D RGB field (Y, X, 3): pick one plane (for example "
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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_field(path: str | Path, pixel_size_um: float | None = None) -> Field:
    """Read an image file as an RGB field.

    The pixel size comes from ``pixel_size_um`` when given (a notice says so when the file's
    metadata disagrees), else from the file's metadata (OME, ImageJ or TIFF resolution tags),
    else it stays ``None`` and later stages use the model's default.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageInputError(f"No image file at {path}: check the path.")
    file_pixel_size = None
    try:
        if path.name.lower().endswith(TIFF_SUFFIXES):
            raw, file_pixel_size = _read_tiff(path)
        else:
            import imageio.v3 as iio

            raw = iio.imread(path)
    except ImageInputError:
        raise
    except Exception as error:
        raise ImageInputError(
            f"Could not read {path.name} as an image ({type(error).__name__}: {error}). "
            "Check that the file is a complete TIFF, PNG or JPEG."
        ) from error
    image, notices = to_rgb_uint8(raw)
    if pixel_size_um is not None:
        _check_pixel_size(pixel_size_um)
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
    return Field(image, pixel_size_um, path, file_sha256(path), notices)


def _check_pixel_size(pixel_size_um: float) -> None:
    if not np.isfinite(pixel_size_um) or not 0.01 <= pixel_size_um <= 10.0:
        raise ImageInputError(
            f"Pixel size {pixel_size_um} µm is outside 0.01-10 µm per pixel; give it in microns "
            "per pixel (for example 0.25 for a 40x scan)."
        )


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        image = tif.series[0].levels[0].asarray()
        return image, _tiff_pixel_size_um(tif)


def _tiff_pixel_size_um(tif) -> float | None:
    """µm per pixel from OME-XML, ImageJ metadata or the resolution tags; None if absent."""
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
    return size if 0.01 <= size <= 10.0 else None

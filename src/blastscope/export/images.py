"""Raster exports: the labels image as a compressed OME-TIFF, and an RGB overlay PNG."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from skimage.segmentation import find_boundaries

from blastscope.classes import mutation_classes_of
from blastscope.export._atomic import AtomicFiles, ExportError
from blastscope.export._style import cell_classes, class_colour, probability_colours
from blastscope.io import ImageInputError, to_rgb_uint8

ColourBy = Literal["p_blast", "class"]


def labels_tiff_bytes(labels: np.ndarray, pixel_size_um: float | None = None) -> bytes:
    """A zlib-compressed OME-TIFF of ``labels`` (Y, X) as int32, with the physical pixel size
    (µm) in the OME metadata when given."""
    import tifffile

    array = np.asarray(labels)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ExportError(
            f"labels must be a 2-D integer image (Y, X), got {array.dtype} of shape {array.shape}."
        )
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise ExportError("labels must hold ids from 0 to 2**31 - 1 to be written as int32.")
    metadata: dict[str, object] = {"axes": "YX"}
    if pixel_size_um is not None:
        metadata.update(
            PhysicalSizeX=float(pixel_size_um),
            PhysicalSizeXUnit="µm",
            PhysicalSizeY=float(pixel_size_um),
            PhysicalSizeYUnit="µm",
        )
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        array.astype(np.int32, copy=False),
        ome=True,
        photometric="minisblack",
        compression="zlib",
        metadata=metadata,
    )
    return buffer.getvalue()


def write_labels_tiff(
    path: str | Path,
    labels: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``labels`` (Y, X) as a compressed OME-TIFF (int32, zlib; pixel size in µm)."""
    data = labels_tiff_bytes(labels, pixel_size_um)
    with AtomicFiles(overwrite=overwrite) as files:
        files.temporary(path).write_bytes(data)
    return Path(path)


def read_labels_tiff(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read a labels TIFF: ((Y, X) labels, pixel size in µm from the OME metadata or None)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        labels = tif.series[0].asarray()
        pixel_size_um = None
        if tif.ome_metadata:
            for element in ET.fromstring(tif.ome_metadata).iter():
                attributes = element.attrib
                if (
                    element.tag.endswith("Pixels")
                    and "PhysicalSizeX" in attributes
                    and attributes.get("PhysicalSizeXUnit", "µm") == "µm"
                ):
                    pixel_size_um = float(attributes["PhysicalSizeX"])
    return labels, pixel_size_um


def overlay_rgb(
    image: np.ndarray,
    labels: np.ndarray,
    cells: pd.DataFrame,
    *,
    colour_by: ColourBy = "p_blast",
    fill_alpha: float = 0.25,
) -> np.ndarray:
    """The image (Y, X, 3) uint8 with each cell's outline drawn and its area tinted.

    ``colour_by="p_blast"`` colours cells blue (0) to red (1) by blast probability, grey where
    it is NaN (non-nucleated cells); ``"class"`` uses the class colours of the GeoJSON. Labels
    missing from the table are drawn in the ``Unmeasured`` colour. ``fill_alpha`` (0..1) is the
    tint's opacity; outlines are opaque, one pixel inside each cell.
    """
    try:
        rgb, _ = to_rgb_uint8(image)
    except ImageInputError as error:
        raise ExportError(f"The overlay needs the analysed image: {error}") from error
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ExportError(
            f"The labels ({labels.shape}) and the image ({rgb.shape[:2]}) differ in size; give "
            "the image the labels were made from."
        )
    if not 0.0 <= fill_alpha <= 1.0:
        raise ExportError(f"fill_alpha must be between 0 and 1, got {fill_alpha!r}.")
    lut = _colour_table(labels, cells, colour_by)
    colours = lut[labels]
    cell = labels > 0
    blended = rgb.astype(np.float32)
    blended[cell] = (1.0 - fill_alpha) * blended[cell] + fill_alpha * colours[cell]
    outline = find_boundaries(labels, mode="inner") & cell
    blended[outline] = colours[outline]
    return np.round(blended).astype(np.uint8)


def _colour_table(labels: np.ndarray, cells: pd.DataFrame, colour_by: ColourBy) -> np.ndarray:
    """(max label + 1, 3) float colours indexed by label id."""
    if colour_by not in ("p_blast", "class"):
        raise ExportError(f"colour_by must be 'p_blast' or 'class', got {colour_by!r}.")
    size = int(labels.max(initial=0)) + 1
    lut = np.tile(np.array(class_colour("Unmeasured"), dtype=np.float32), (size, 1))
    table = cells[(cells["label"] > 0) & (cells["label"] < size)]
    ids = table["label"].to_numpy(dtype=np.int64)
    if colour_by == "p_blast":
        probability = (
            table["p_blast"].to_numpy(dtype=np.float64)
            if "p_blast" in table
            else np.full(len(table), np.nan)
        )
        lut[ids] = probability_colours(probability)
    else:
        names = cell_classes(table)
        model_classes = mutation_classes_of(cells.columns)
        colours = [class_colour(name, model_classes) for name in names]
        lut[ids] = np.array(colours, dtype=np.float32).reshape(-1, 3)
    return lut


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an RGB (Y, X, 3) uint8 image."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.asarray(rgb, dtype=np.uint8), extension=".png")


def write_overlay_png(
    path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    cells: pd.DataFrame,
    *,
    colour_by: ColourBy = "p_blast",
    overwrite: bool = False,
) -> Path:
    """Write the overlay (see :func:`overlay_rgb`) as an RGB PNG."""
    data = png_bytes(overlay_rgb(image, labels, cells, colour_by=colour_by))
    with AtomicFiles(overwrite=overwrite) as files:
        files.temporary(path).write_bytes(data)
    return Path(path)

"""A 3DHISTECH MIRAX (MRXS) slide written from an array, as OpenSlide reads it: the ``.mrxs``
file, and beside it a folder of the same name holding ``Slidedat.ini``, ``Index.dat`` and one
``Data0000.dat`` of JPEG camera images (the layout of OpenSlide's ``openslide-vendor-mirax.c``
and its ``misc/parse-mirax.py``: no position buffer, no overlap, one image per camera field).

Only the images the caller names as scanned are written, so OpenSlide's
``openslide.bounds-*`` give the scanned rectangle inside a larger frame, and an image left
out inside that rectangle reads as transparent: the two things a real MRXS scan has that an
OME-TIFF does not.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_PX = 256
"""The side of one camera image (``DIGITIZER_WIDTH`` / ``DIGITIZER_HEIGHT``)."""
SLIDE_ID = "0123456789abcdef0123456789abcdef"


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


def write_mrxs(
    path: Path,
    frame: np.ndarray,
    mpp: float,
    scanned: Iterable[tuple[int, int]],
    levels: int = 2,
) -> None:
    """Write ``frame`` (Y, X, 3 uint8, sides a multiple of ``IMAGE_PX * 2**(levels - 1)``) as
    ``path`` (``.mrxs``) with only the camera images at ``scanned`` (column, row) present;
    level ``k`` is every ``2**k``-th pixel of the frame, white where nothing was scanned."""
    scanned = sorted(set(scanned))
    images_y, images_x = frame.shape[0] // IMAGE_PX, frame.shape[1] // IMAGE_PX
    folder = path.with_suffix("")
    folder.mkdir()
    path.write_bytes(b"")  # OpenSlide reads the folder; the .mrxs only has to exist

    as_scanned = np.full_like(frame, 255)  # white glass where the scanner skipped, at every level
    for column, row in scanned:
        area = np.s_[
            row * IMAGE_PX : (row + 1) * IMAGE_PX, column * IMAGE_PX : (column + 1) * IMAGE_PX
        ]
        as_scanned[area] = frame[area]
    data = bytearray()
    records: list[list[tuple[int, int, int]]] = []  # per level: (image index, offset, length)
    for level in range(levels):
        step = 2**level
        starts = sorted({(column - column % step, row - row % step) for column, row in scanned})
        entries = []
        for column, row in starts:
            block = as_scanned[
                row * IMAGE_PX : (row + step) * IMAGE_PX,
                column * IMAGE_PX : (column + step) * IMAGE_PX,
            ][::step, ::step]
            encoded = _jpeg(np.ascontiguousarray(block))
            entries.append((row * images_x + column, len(data), len(encoded)))
            data += encoded
        records.append(entries)
    (folder / "Data0000.dat").write_bytes(bytes(data))

    header = b"01.02" + SLIDE_ID.encode()
    table = len(header) + 8  # the hier and nonhier roots, then the table of level lists
    index = bytearray(header)
    index += struct.pack("<ii", table, table + 4 * levels)
    heads = table + 4 * levels
    pages = heads + 8 * levels
    page_at = []
    for entries in records:
        page_at.append(pages)
        pages += 8 + 16 * len(entries)
    index += struct.pack(f"<{levels}i", *(heads + 8 * level for level in range(levels)))
    for level in range(levels):
        index += struct.pack("<ii", 0, page_at[level])
    for entries in records:
        index += struct.pack("<ii", len(entries), 0)
        for image_index, offset, length in entries:
            index += struct.pack("<iiii", image_index, offset, length, 0)
    (folder / "Index.dat").write_bytes(bytes(index))

    lines = [
        "[GENERAL]",
        f"SLIDE_ID = {SLIDE_ID}",
        f"IMAGENUMBER_X = {images_x}",
        f"IMAGENUMBER_Y = {images_y}",
        "OBJECTIVE_MAGNIFICATION = 40",
        "CameraImageDivisionsPerSide = 1",
        "[HIERARCHICAL]",
        "HIER_COUNT = 1",
        "HIER_0_NAME = Slide zoom level",
        f"HIER_0_COUNT = {levels}",
        *[
            line
            for level in range(levels)
            for line in (
                f"HIER_0_VAL_{level} = ZoomLevel_{level}",
                f"HIER_0_VAL_{level}_SECTION = LAYER_0_LEVEL_{level}_SECTION",
            )
        ],
        "NONHIER_COUNT = 0",
        "INDEXFILE = Index.dat",
        "[DATAFILE]",
        "FILE_COUNT = 1",
        "FILE_0 = Data0000.dat",
    ]
    for level in range(levels):
        lines += [
            f"[LAYER_0_LEVEL_{level}_SECTION]",
            "OVERLAP_X = 0",
            "OVERLAP_Y = 0",
            f"MICROMETER_PER_PIXEL_X = {mpp * 2**level}",
            f"MICROMETER_PER_PIXEL_Y = {mpp * 2**level}",
            "IMAGE_FORMAT = JPEG",
            "IMAGE_FILL_COLOR_BGR = 16777215",
            f"DIGITIZER_WIDTH = {IMAGE_PX}",
            f"DIGITIZER_HEIGHT = {IMAGE_PX}",
            f"IMAGE_CONCAT_FACTOR = {0 if level == 0 else 1}",
        ]
    (folder / "Slidedat.ini").write_text("\n".join(lines) + "\n")

"""A Hamamatsu NDPI written from an array, as OpenSlide's ``misc/imhex/hamamatsu-ndpi.hexpat``
and tifffile read it (tifffile cannot write NDPI's layout: 64-bit IFD offsets with high words
stored after each IFD): one JPEG strip per pyramid level with restart markers, then a macro."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def _ndpi_jpeg(image: np.ndarray, tile_width: int = 0) -> tuple[bytes, list[int]]:
    """``image`` as a JPEG (4:4:4, quality 95) with a restart marker every ``tile_width``
    pixels of each 8-pixel MCU row (none for 0), and where each restart interval's data
    starts (NDPI's McuStarts)."""
    buffer = io.BytesIO()
    restarts = {"restart_marker_blocks": tile_width // 8} if tile_width else {}
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, subsampling=0, **restarts)
    data = buffer.getvalue()
    scan = data.index(b"\xff\xda")
    starts = [scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")]
    starts += [
        i + 2
        for i in range(starts[0], len(data) - 2)
        if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7
    ]
    return data, starts


def write_ndpi(
    path: Path, image: np.ndarray, mpp: float, offset_nm: tuple[int, int], levels: int = 3
) -> None:
    """A Hamamatsu NDPI laid out as OpenSlide's ``misc/imhex/hamamatsu-ndpi.hexpat`` reads
    it: a classic TIFF header with a 64-bit first-IFD offset; per IFD the 12-byte entries, a
    64-bit next-IFD offset and a 4-byte high word per entry; one JPEG strip per pyramid level
    (every 2nd pixel) with its McuStarts (65426), source lens (65421), offsets from the
    slide's centre in nm (65422-65423) and resolution in pixels per cm; then a macro image
    (source lens -1)."""
    kinds = {3: "H", 4: "I", 5: "I", 9: "i", 11: "f"}  # SHORT, LONG, RATIONAL, SLONG, FLOAT
    out = bytearray(b"II*\0" + bytes(8))
    link = 4  # where the offset of the next IFD goes
    pages = [(image[:: 2**level, :: 2**level], 40.0 / 2**level) for level in range(levels)]
    pages.append((image[::16, ::16], -1.0))
    for page, lens in pages:
        jpeg, starts = _ndpi_jpeg(np.ascontiguousarray(page), 256 if lens > 0 else 0)
        strip = len(out)
        out += jpeg
        per_cm = round(1e4 / (mpp * image.shape[1] / page.shape[1]))
        entries = [
            (256, 4, [page.shape[1]]),
            (257, 4, [page.shape[0]]),
            (258, 3, [8, 8, 8]),
            (259, 3, [7]),  # JPEG
            (262, 3, [6]),  # YCbCr
            (271, 2, b"Hamamatsu\0"),
            (272, 2, b"C13220\0"),
            (273, 4, [strip]),
            (277, 3, [3]),
            (278, 4, [page.shape[0]]),
            (279, 4, [len(jpeg)]),
            (282, 5, [per_cm, 1]),
            (283, 5, [per_cm, 1]),
            (296, 3, [3]),  # centimetre
            (305, 2, b"NDP.scan 3.4.0\0"),
            (65420, 4, [1]),
            (65421, 11, [lens]),
            (65422, 9, [offset_nm[0]]),
            (65423, 9, [offset_nm[1]]),
            (65424, 9, [0]),
            *([(65426, 4, starts)] if lens > 0 else []),
        ]
        fields = []
        for code, kind, values in entries:
            if kind == 2:
                value, count = bytes(values), len(values)
            else:
                value = struct.pack(f"<{len(values)}{kinds[kind]}", *values)
                count = len(values) // 2 if kind == 5 else len(values)
            if len(value) > 4 or kind == 2:  # NDPI keeps even short text out of the entry
                offset = len(out)
                out += value
                value = struct.pack("<I", offset)
            fields.append(struct.pack("<HHI", code, kind, count) + value.ljust(4, b"\0"))
        out[link : link + 8] = struct.pack("<Q", len(out))
        out += struct.pack("<H", len(entries)) + b"".join(fields)
        link = len(out)
        out += bytes(8) + bytes(4 * len(entries))  # next IFD (0: the last), high words
    path.write_bytes(bytes(out))

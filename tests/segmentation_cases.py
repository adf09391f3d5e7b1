"""Segmentations shared by the segmentation and cells tests (computed once per test session).

The 22 BCCD validation fields in tests/data/bccd, segmented with the shipped smear model at the
BCCD pixel size; a missing field fails the test that asks for them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import Segmentation, SegmentationParams, segment
from blastscope.train.bccd_masks import BccdField, read_fields

BCCD_DIR = Path(__file__).parent / "data" / "bccd"


@functools.cache
def bccd_val_segmentations() -> tuple[tuple[BccdField, Segmentation], ...]:
    """(field, segmentation) for each of the 22 BCCD test fields, shipped model, CPU."""
    names = (BCCD_DIR / "fields.txt").read_text().split()
    fields = read_fields(BCCD_DIR, names)
    assert len(fields) == 22, f"expected 22 BCCD test fields, found {len(fields)}"
    params = SegmentationParams(device="cpu")
    return tuple((field, segment(field.image, BCCD_PIXEL_SIZE_UM, params)) for field in fields)

"""Shared fixtures. Test data lives in tests/data; a missing file fails the test, never skips it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
BCCD_DIR = DATA_DIR / "bccd"


@pytest.fixture(scope="session")
def bccd_fields() -> list[Path]:
    """The BCCD validation fields copied into tests/data/bccd (22 JPEGs)."""
    names = (BCCD_DIR / "fields.txt").read_text().split()
    paths = [BCCD_DIR / "images" / f"{name}.jpg" for name in names]
    missing = [str(path) for path in paths if not path.is_file()]
    assert not missing, f"test data missing: {missing}"
    return paths


@pytest.fixture(scope="session")
def bccd_boxes() -> dict[str, list[dict]]:
    """Boxes per field name: dicts with class, xmin, ymin, xmax, ymax (pixels)."""
    boxes: dict[str, list[dict]] = {}
    with open(BCCD_DIR / "boxes.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            name = row["filename"].removesuffix(".jpg")
            coords = {key: int(row[key]) for key in ("xmin", "ymin", "xmax", "ymax")}
            boxes.setdefault(name, []).append({"class": row["class"], **coords})
    return boxes

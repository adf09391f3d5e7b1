"""A tiny CellaVision-style export written from BCCD crops, in DeepAPL's layout.

``ROOT/Patient_XX/Signed slides/<cell type>/<id>.jpg`` (one patient with an extra date level),
``Unsigned slides`` crops, ``Thumbs.db`` files, one oversized overview field, one truncated
JPEG, and a patient table with Discovery and Validation cohorts. BCCD is normal blood at
0.08 µm/px: the "blast" folders hold white-cell crops like the others, so the labels are for
the reader and the protocol, not a learnable truth.
"""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np

BCCD_PIXEL_SIZE_UM = 0.08
CROP_PX = 320
CELL_TYPES = (
    "Blast, no lineage spec",
    "Promyelocyte",
    "Lymphocyte",
    "Lymphocyte, variant",
    "Segmented neutrophils",
    "Smudge cells",
)
DISCOVERY = {
    "Patient_00": "APL",
    "Patient_01": "AML",
    "Patient_02": "APL",
    "Patient_03": "AML",
    "Patient_04": "APL",
    "Patient_05": "AML",
    "Patient_06": "AML",
    "Patient_07": "APL",
    "Patient_08": "AML",
    "Patient_09": "AML",
}
VALIDATION = {"Patient_90": "APL", "Patient_91": "AML"}


def white_cell_crops(fields: list[Path], boxes: dict[str, list[dict]]) -> list[np.ndarray]:
    """CROP_PX-square crops centred on each white-cell box of the fields (edges reflected)."""
    crops = []
    half = CROP_PX // 2
    for path in fields:
        image = iio.imread(path)[..., :3]
        padded = np.pad(image, ((half, half), (half, half), (0, 0)), mode="reflect")
        for box in boxes[path.stem]:
            if box["class"] != "WBC":
                continue
            y = (box["ymin"] + box["ymax"]) // 2 + half
            x = (box["xmin"] + box["xmax"]) // 2 + half
            crops.append(padded[y - half : y + half, x - half : x + half])
    return crops


def write_export(root: Path, crops: list[np.ndarray], cells_per_type: int = 3) -> tuple[Path, Path]:
    """Write the export of ``crops`` (RGB uint8, used in turn) under ``root / "export"`` and the
    patient table; (export, csv)."""
    export = root / "export"
    counter = 0
    for patient in [*DISCOVERY, *VALIDATION]:
        level = export / patient
        if patient == "Patient_00":
            level = level / "2019-02-11_1635"  # the extra level some exports have
        for cell_type in CELL_TYPES:
            folder = level / "Signed slides" / cell_type
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(cells_per_type):
                crop = crops[counter % len(crops)]
                iio.imwrite(folder / f"C_{counter:05d}.jpg", crop, quality=92)
                counter += 1
            (folder / "Thumbs.db").write_bytes(b"\x00" * 16)
        unsigned = level / "Unsigned slides"
        unsigned.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            iio.imwrite(unsigned / f"U_{counter:05d}.jpg", crops[counter % len(crops)])
            counter += 1
    overview = np.tile(crops[0], (4, 4, 1))  # 1280 px: an overview field, not a cell
    iio.imwrite(export / "Patient_01" / "Signed slides" / "Lymphocyte" / "OVERVIEW.jpg", overview)
    good = (export / "Patient_03" / "Signed slides" / "Lymphocyte").iterdir()
    data = next(path for path in sorted(good) if path.suffix == ".jpg").read_bytes()
    truncated = export / "Patient_03" / "Signed slides" / "Lymphocyte" / "TRUNCATED.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    table = root / "master.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Patient_ID", "Diagnosis", "Cohort", "Age"])
        for patient, diagnosis in DISCOVERY.items():
            writer.writerow([patient, diagnosis, "Discovery", 50])
        for patient, diagnosis in VALIDATION.items():
            writer.writerow([patient, diagnosis, "Validation", 50])
    return export, table

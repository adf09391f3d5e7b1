"""CellaVision-style exports: single-cell images filed per patient and per cell type.

The layout, as CellaVision DM96 / DI-60 exports are kept in haematology labs (and as the public
DeepAPL cohort is published)::

    ROOT/<patient>/[<slide or date>/...]/Signed slides/<cell type>/<image>.jpg
    ROOT/<patient>/[...]/Unsigned slides/<image>.jpg      (not reviewed by a technologist)

- **The patient is the bag.** Every folder level between the patient folder and the cell-type
  folder is walked (scan dates, slide numbers, a patient's second slide); the levels are kept in
  the index (``slide``) for the shortcut audit, never given to a model.
- **Cell types map to classes** with one map for every patient (:data:`DEFAULT_CELL_TYPE_MAP`, or
  a CSV ``folder,class`` given with ``--folder-map FILE``): ``blast``, ``non-blast`` or
  ``exclude``. A cell-type folder the map does not know is an error naming it (a misspelt folder
  must not silently become a class).
- **What is skipped is counted**, never silently dropped: unsigned crops (no cell type), files that
  are not images (``Thumbs.db``), images wider or taller than ``max_image_side_px`` (CellaVision's
  overview fields), unreadable or truncated files, excluded cell types, patients of another
  cohort.
- **Patients** come from a CSV (``--patients``) with an id column, a label column (the diagnosis
  or mutation every cell of the patient inherits) and optionally a cohort column. When the CSV has
  a cohort column the caller must choose the cohort (:class:`DatasetError` otherwise): a held-out
  validation cohort must not enter training by default.
- **Pixel size**: CellaVision JPEGs record none. :func:`measure_pixel_size` measures it from the
  red cells around the white cells: whole, isolated, disc-shaped red cells (at least
  :data:`MIN_RED_CELLS`) and a mean red-cell diameter of :data:`RED_CELL_DIAMETER_UM` µm.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.crops import crop_size_px, extract_crops
from blastscope.io import ImageInputError, read_field
from blastscope.progress import Progress
from blastscope.train.datasets import IMAGE_SUFFIXES, CellSet, DatasetError

CELL_TYPE_CLASSES = ("blast", "non-blast", "exclude")

DEFAULT_CELL_TYPE_MAP: dict[str, str] = {
    # Blast equivalents: abnormal promyelocytes are blast equivalents in APL (WHO), and
    # promonocytes in monocytic leukaemias.
    "Blast, no lineage spec": "blast",
    "Promonocyte": "blast",
    "Promyelocyte": "blast",
    # Not a cell, or not one a technologist could name.
    "Smudge cells": "exclude",
    "Arifact": "exclude",  # sic, as CellaVision exports spell it in DeepAPL
    "Artifact": "exclude",
    "Artefact": "exclude",
    "Unidentified": "exclude",
    "Young Unidentified": "exclude",
    "Not identified": "exclude",
    "Giant thrombocyte": "exclude",
    "Thrombocyte aggregation": "exclude",
    "Thrombocyte": "exclude",
    "Prolymphocyte": "exclude",  # too rare to learn and neither clearly blast nor mature
    # Everything else is a nucleated non-blast; "Lymphocyte, variant" is the key hard negative.
    "Lymphocyte": "non-blast",
    "Lymphocyte, variant": "non-blast",
    "Segmented neutrophils": "non-blast",
    "Band neutrophils": "non-blast",
    "Eosinophils": "non-blast",
    "Basophil": "non-blast",
    "Basophils": "non-blast",
    "Monocyte": "non-blast",
    "Monocytes": "non-blast",
    "Myelocyte": "non-blast",
    "Metamyelocyte": "non-blast",
    "Erythroblast": "non-blast",
    "Plasma cells": "non-blast",
}
"""Cell-type folder -> class; the same for every patient (no label leakage between bags)."""

SIGNED_FOLDER = "signed slides"
UNSIGNED_FOLDER = "unsigned slides"
DEFAULT_MAX_IMAGE_SIDE_PX = 1000
RED_CELL_DIAMETER_UM = 7.5
"""Mean diameter of a normal red cell in a dried, stained smear (µm); the pixel-size yardstick."""
MIN_RED_CELLS = 200
_RED_CELL_IMAGES_MAX = 1200
_PROGRESS_EVERY = 250


@dataclass(frozen=True)
class Patients:
    """The patients of one cohort: id -> label (None without a label column), and where from."""

    labels: dict[str, str | None]
    source: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return sorted(self.labels)


def _find_column(columns: Sequence[str], wanted: str, csv_name: str, option: str) -> str:
    for column in columns:
        if column == wanted:
            return column
    for column in columns:
        if column.lower() == wanted.lower():
            return column
    raise DatasetError(
        f"{csv_name} has no column {wanted!r} (it has {', '.join(columns)}); name the column "
        f"with {option}."
    )


def read_patients(
    csv_path: str | os.PathLike,
    *,
    id_column: str | None = None,
    label_column: str | None = None,
    cohort_column: str | None = None,
    cohort: str | None = None,
) -> Patients:
    """Read the patient table; keep the patients of ``cohort`` (comma-separated names allowed).

    ``id_column`` defaults to the first column. Without ``cohort_column`` a column named
    ``cohort`` (any case) is used when present. Raises :class:`DatasetError` when the CSV has a
    cohort column and ``cohort`` is None, for an unknown cohort, duplicate ids with different
    labels, empty ids and missing columns.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(
            f"No patient table at {csv_path}: give a CSV with one row per patient (an id column "
            "and a label column) with --patients."
        )
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or [] if name is not None]
        rows = [
            {(key or "").strip(): (value or "").strip() for key, value in row.items()}
            for row in reader
        ]
    if not columns:
        raise DatasetError(
            f"{csv_path.name} is empty: it needs a header row and one patient a row."
        )
    name = csv_path.name
    id_col = _find_column(columns, id_column, name, "--id-column") if id_column else columns[0]
    label_col = (
        _find_column(columns, label_column, name, "--label-column") if label_column else None
    )
    if cohort_column:
        cohort_col: str | None = _find_column(columns, cohort_column, name, "--cohort-column")
    else:
        cohort_col = next((c for c in columns if c.lower() == "cohort"), None)
    cohorts_present = sorted({row.get(cohort_col, "") for row in rows}) if cohort_col else []
    chosen: set[str] | None = None
    if cohort_col is not None:
        if not cohort:
            raise DatasetError(
                f"{name} has a cohort column {cohort_col!r} ({', '.join(cohorts_present)}): "
                f"choose the cohort to use with --cohort (e.g. --cohort {cohorts_present[0]}). "
                "A held-out validation cohort must never enter training or model selection."
            )
        chosen = {part.strip() for part in cohort.split(",") if part.strip()}
        unknown = sorted(chosen - set(cohorts_present))
        if unknown:
            raise DatasetError(
                f"Cohort {', '.join(unknown)} is not in {name}'s column {cohort_col!r} (it holds "
                f"{', '.join(cohorts_present)})."
            )
    elif cohort:
        raise DatasetError(
            f"--cohort {cohort} was given but {name} has no cohort column; name it with "
            "--cohort-column or leave --cohort out."
        )
    labels: dict[str, str | None] = {}
    other_cohort = 0
    for line, row in enumerate(rows, start=2):
        patient = row.get(id_col, "")
        if not patient:
            raise DatasetError(f"{name} line {line}: empty patient id in column {id_col!r}.")
        if chosen is not None and row.get(cohort_col, "") not in chosen:
            other_cohort += 1
            continue
        label = row.get(label_col, "") if label_col else None
        if label_col and not label:
            raise DatasetError(
                f"{name} line {line}: patient {patient!r} has no {label_col!r}; give every "
                "patient a label or remove the row."
            )
        if patient in labels and labels[patient] != label:
            raise DatasetError(
                f"{name} gives patient {patient!r} two labels ({labels[patient]!r} and "
                f"{label!r}); keep one row per patient."
            )
        labels[patient] = label
    if not labels:
        raise DatasetError(f"No patient of {name} is left after choosing cohort {cohort!r}.")
    return Patients(
        labels=labels,
        source={
            "patients_csv": str(csv_path),
            "id_column": id_col,
            "label_column": label_col,
            "cohort_column": cohort_col,
            "cohort": sorted(chosen) if chosen is not None else None,
            "n_patients": len(labels),
            "patients_of_other_cohorts": other_cohort,
        },
    )


def classes_from_labels(
    labels: Iterable[str | None], label_names: Mapping[str, str] | None = None
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The classes the labels hold (sorted), renamed by ``label_names``; and raw -> class name.

    Raises :class:`DatasetError` for fewer than two classes or a rename of a label that is not
    in the data.
    """
    raw = sorted({label for label in labels if label})
    names = dict(label_names or {})
    unknown = sorted(set(names) - set(raw))
    if unknown:
        raise DatasetError(
            f"--label-names renames {', '.join(unknown)}, which is not a label in the data "
            f"({', '.join(raw)})."
        )
    rename = {label: names.get(label, label) for label in raw}
    classes = tuple(dict.fromkeys(rename[label] for label in raw))
    if len(classes) < 2:
        raise DatasetError(
            f"The labels hold {len(classes)} class(es) ({', '.join(classes)}): a classifier "
            "needs two or more. Check the label column and the cohort."
        )
    return classes, rename


def parse_label_names(text: str | None) -> dict[str, str]:
    """``"APL=PML::RARA,AML=other AML"`` -> {"APL": "PML::RARA", "AML": "other AML"}."""
    names: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        raw, sep, new = item.partition("=")
        if not sep or not raw.strip() or not new.strip():
            raise DatasetError(
                f"Cannot read {item!r} in --label-names: write LABEL=NAME pairs separated by "
                "commas, e.g. APL=PML::RARA,AML=other AML."
            )
        names[raw.strip()] = new.strip()
    return names


def check_cell_type_map(mapping: Mapping[str, str]) -> dict[str, str]:
    """``mapping`` with its classes checked: each is blast, non-blast or exclude."""
    wrong = {folder: name for folder, name in mapping.items() if name not in CELL_TYPE_CLASSES}
    if wrong:
        folder = next(iter(wrong))
        raise DatasetError(
            f"The cell-type map sends {folder!r} to {wrong[folder]!r}; a CellaVision cell type "
            f"maps to one of {', '.join(CELL_TYPE_CLASSES)}."
        )
    return dict(mapping)


@dataclass
class ExportIndex:
    """The cell images of an export, one row each (``cells``), and what was skipped (counts).

    ``cells`` columns: ``path``, ``patient``, ``slide`` (the folder levels between the patient
    and "Signed slides", "" when none), ``cell_type``, ``cell_class`` (blast / non-blast /
    exclude), ``label`` (the patient's label, None without a label column).
    ``unsigned_per_patient`` counts the unsigned images of each patient (for the shortcut audit:
    how many a patient has is a property of the export, not of the disease).
    """

    cells: pd.DataFrame
    skipped: dict[str, int]
    patients_without_folder: list[str]
    cell_type_map: dict[str, str]
    unsigned_per_patient: dict[str, int]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def index_export(
    root: str | os.PathLike, patients: Patients, cell_type_map: Mapping[str, str] | None = None
) -> ExportIndex:
    """Walk ``root/<patient>/...`` for the patients given; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"No folder at {root}: give the export folder that holds one folder per patient "
            "(--cellavision DIR)."
        )
    mapping = check_cell_type_map(DEFAULT_CELL_TYPE_MAP if cell_type_map is None else cell_type_map)
    skipped: Counter[str] = Counter()
    unsigned: Counter[str] = Counter()
    rows: list[tuple[str, str, str, str, str, str | None]] = []
    unknown_types: dict[str, str] = {}
    folders = {path.name: path for path in root.iterdir() if path.is_dir()}
    for patient in patients.ids:
        folder = folders.get(patient)
        if folder is None:
            continue
        for directory, subfolders, files in os.walk(folder):
            subfolders.sort()
            here = Path(directory)
            parts = here.relative_to(folder).parts
            lowered = [part.lower() for part in parts]
            for name in sorted(files):
                if not _is_image(name):
                    skipped["not an image (e.g. Thumbs.db)"] += 1
                elif UNSIGNED_FOLDER in lowered:
                    skipped["unsigned (no cell type)"] += 1
                    unsigned[patient] += 1
                elif SIGNED_FOLDER not in lowered or lowered[-1] == SIGNED_FOLDER:
                    skipped["outside a cell-type folder"] += 1
                else:
                    cell_type = parts[-1]
                    cell_class = mapping.get(cell_type)
                    if cell_class is None:
                        unknown_types.setdefault(cell_type, str(here))
                        continue
                    slide = "/".join(parts[: lowered.index(SIGNED_FOLDER)])
                    rows.append(
                        (
                            str(here / name),
                            patient,
                            slide,
                            cell_type,
                            cell_class,
                            patients.labels[patient],
                        )
                    )
    if unknown_types:
        first = next(iter(unknown_types))
        raise DatasetError(
            f"Cell-type folder(s) {', '.join(repr(t) for t in sorted(unknown_types))} (e.g. "
            f"{unknown_types[first]}) are not in the cell-type map. Give a --folder-map CSV "
            f"(folder,class with class blast, non-blast or exclude) that maps every folder, "
            f'e.g. a row "{first},exclude".'
        )
    without_folder = [patient for patient in patients.ids if patient not in folders]
    cells = pd.DataFrame(
        rows, columns=["path", "patient", "slide", "cell_type", "cell_class", "label"]
    )
    if cells.empty:
        raise DatasetError(
            f"No signed cell images under {root} for the {len(patients.labels)} patients chosen: "
            "expected ROOT/<patient>/.../Signed slides/<cell type>/<image>. Check the folder "
            "names against the patient ids of the CSV."
        )
    return ExportIndex(
        cells, dict(skipped), without_folder, mapping, {p: unsigned[p] for p in patients.ids}
    )


@dataclass(frozen=True)
class PixelSizeMeasurement:
    """A pixel size measured from red cells: µm per pixel and what it rests on."""

    pixel_size_um: float
    n_red_cells: int
    n_images: int
    median_diameter_px: float
    iqr_diameter_px: tuple[float, float]
    reference_diameter_um: float

    def describe(self) -> dict[str, Any]:
        """JSON-ready fields, with the method in words."""
        return {
            **asdict(self),
            "method": (
                "median equivalent diameter of whole, isolated, disc-shaped red cells (not "
                f"touching the image border, solidity >= 0.9, eccentricity <= 0.75) taken as "
                f"{self.reference_diameter_um:g} µm"
            ),
        }


def red_cell_diameters_px(image: np.ndarray) -> np.ndarray:
    """Equivalent diameters (px) of the whole, isolated, disc-shaped red cells of ``image``.

    Foreground by Otsu's level on the optical density; central pallor filled; purple objects
    (nuclei), objects cut by the border, clumps (solidity < 0.9) and elongated objects
    (eccentricity > 0.75) are left out.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops

    from blastscope.cells import BLUE_WEIGHT, NUCLEAR_INDEX_LEVEL, optical_density

    density = optical_density(image)
    total = density.sum(axis=-1)
    if float(total.max()) <= float(total.min()):
        return np.empty(0)
    foreground = total > threshold_otsu(total)
    foreground = ndi.binary_fill_holes(ndi.binary_opening(foreground, iterations=2))
    purple = (density[..., 0] - BLUE_WEIGHT * density[..., 2]) > NUCLEAR_INDEX_LEVEL
    labels, _ = ndi.label(foreground)
    height, width = labels.shape
    diameters = []
    for region in regionprops(labels):
        top, left, bottom, right = region.bbox
        if top == 0 or left == 0 or bottom == height or right == width or region.area < 50:
            continue
        if region.solidity < 0.9 or region.eccentricity > 0.75:
            continue
        if purple[region.slice][region.image].mean() > 0.05:
            continue
        diameters.append(region.equivalent_diameter_area)
    return np.asarray(diameters, dtype=np.float64)


def measure_pixel_size(
    images: Iterable[np.ndarray],
    *,
    min_red_cells: int = MIN_RED_CELLS,
    reference_diameter_um: float = RED_CELL_DIAMETER_UM,
    max_images: int = _RED_CELL_IMAGES_MAX,
) -> PixelSizeMeasurement:
    """µm per pixel from the red cells of ``images`` (RGB uint8), read until ``min_red_cells``.

    Raises :class:`DatasetError` when fewer than ``min_red_cells`` red cells are found in
    ``max_images`` images: give the pixel size instead.
    """
    found: list[np.ndarray] = []
    count = used = 0
    for image in images:
        if used >= max_images:
            break
        diameters = red_cell_diameters_px(image)
        found.append(diameters)
        count += diameters.size
        used += 1
        if count >= min_red_cells and used >= 20:
            break
    diameters = np.concatenate(found) if found else np.empty(0)
    if diameters.size < min_red_cells:
        raise DatasetError(
            f"Found {diameters.size} whole red cells in {used} images, fewer than the "
            f"{min_red_cells} needed to measure the pixel size. Give it with "
            "--source-pixel-size-um (µm per pixel of the images)."
        )
    median = float(np.median(diameters))
    q1, q3 = (float(v) for v in np.percentile(diameters, [25, 75]))
    return PixelSizeMeasurement(
        pixel_size_um=reference_diameter_um / median,
        n_red_cells=int(diameters.size),
        n_images=used,
        median_diameter_px=median,
        iqr_diameter_px=(q1, q3),
        reference_diameter_um=reference_diameter_um,
    )


def _image_side(path: str) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding, None when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _read_rgb(path: str) -> np.ndarray | None:
    try:
        return read_field(path).image
    except ImageInputError:
        return None


@dataclass
class ReadCrops:
    """Crops of the readable images of an index, the rows kept, and the files that failed."""

    crops: np.ndarray
    kept: np.ndarray
    image_sizes: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    failed_examples: list[str] = field(default_factory=list)


def read_export_crops_steps(
    paths: Sequence[str],
    *,
    window_um: float,
    pixel_size_um: float,
    source_pixel_size_um: float,
    max_image_side_px: int = DEFAULT_MAX_IMAGE_SIDE_PX,
) -> Generator[Progress, None, ReadCrops]:
    """Cut each image's centre window; oversized and unreadable files are skipped and counted.

    ``kept`` (N,) bool marks the paths that gave a crop; ``image_sizes`` (N, 2) is each file's
    (height, width), (0, 0) where unreadable. Yields a Progress every 250 images.
    """
    crop_px = crop_size_px(window_um, pixel_size_um)
    crops = np.empty((len(paths), crop_px, crop_px, 3), dtype=np.uint8)
    kept = np.zeros(len(paths), dtype=bool)
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    skipped: Counter[str] = Counter()
    failed: list[str] = []
    for index, path in enumerate(paths):
        side = _image_side(path)
        if side is not None and max(side) > max_image_side_px:
            skipped[f"larger than {max_image_side_px} px (overview field)"] += 1
            sizes[index] = side[::-1]
            continue
        image = None if side is None else _read_rgb(path)
        if image is None:
            skipped["unreadable or truncated"] += 1
            failed.append(path)
            continue
        height, width = image.shape[:2]
        sizes[index] = (height, width)
        crops[index] = extract_crops(
            image,
            np.array([[(height - 1) / 2.0, (width - 1) / 2.0]]),
            pixel_size_um=source_pixel_size_um,
            window_um=window_um,
            out_pixel_size_um=pixel_size_um,
        )[0]
        kept[index] = True
        if (index + 1) % _PROGRESS_EVERY == 0 or index + 1 == len(paths):
            yield Progress("read cells", index + 1, len(paths))
    return ReadCrops(crops[kept], kept, sizes, dict(skipped), failed[:5])


def _sample_images(paths: Sequence[str], n: int, seed: int = 0) -> Iterable[np.ndarray]:
    """Readable images of an even random sample of ``paths`` (for the pixel-size measurement)."""
    order = np.random.default_rng(seed).permutation(len(paths))[:n]
    for index in order:
        side = _image_side(paths[index])
        if side is None or max(side) > DEFAULT_MAX_IMAGE_SIDE_PX:
            continue
        image = _read_rgb(paths[index])
        if image is not None:
            yield image


def cellavision_cells_steps(
    root: str | os.PathLike,
    patients: Patients,
    *,
    kind: str,
    window_um: float,
    pixel_size_um: float,
    classes: Sequence[str] | None = None,
    label_names: Mapping[str, str] | None = None,
    cell_type_map: Mapping[str, str] | None = None,
    source_pixel_size_um: float | None = None,
    max_image_side_px: int = DEFAULT_MAX_IMAGE_SIDE_PX,
) -> Generator[Progress, None, CellSet]:
    """The signed cells of an export as a :class:`CellSet` (slide ids = patient ids).

    ``kind="blast"``: classes ("non-blast", "blast") from the cell-type map, excluded types
    dropped. ``kind="mutation"``: every cell that is not excluded, labelled with its patient's
    label (``classes`` default: the labels in the CSV, renamed by ``label_names``), with
    ``is_blast`` from the cell-type map (the technologist's call, the default blast filter).
    ``annotations`` holds per cell: patient, slide, cell_type, cell_class, label (raw),
    image_height, image_width, path. Without ``source_pixel_size_um`` the pixel size is measured
    from red cells (:func:`measure_pixel_size`); the measurement is recorded in ``source``.
    """
    if kind not in ("blast", "mutation"):
        raise ValueError(f"kind must be 'blast' or 'mutation', got {kind!r}.")
    index = index_export(root, patients, cell_type_map)
    table = index.cells
    excluded = table["cell_class"] == "exclude"
    excluded_counts = table.loc[excluded, "cell_type"].value_counts().to_dict()
    table = table.loc[~excluded].reset_index(drop=True)
    rename: dict[str, str] = {}
    if kind == "blast":
        class_names: tuple[str, ...] = ("non-blast", "blast")
    else:
        if table["label"].isna().any():
            raise DatasetError(
                "The mutation model needs each patient's label: give the label column of the "
                "patient table with --label-column."
            )
        data_classes, rename = classes_from_labels(table["label"], label_names)
        class_names = tuple(classes) if classes else data_classes
        unknown = sorted(set(rename.values()) - set(class_names))
        if unknown:
            raise DatasetError(
                f"The data hold label(s) {', '.join(unknown)} that are not among the classes "
                f"({', '.join(class_names)}); drop --classes to take them from the data, or "
                "rename them with --label-names."
            )
    measurement = None
    if source_pixel_size_um is None:
        yield Progress("pixel size", 0, 1, "measuring the pixel size from red cells")
        measurement = measure_pixel_size(_sample_images(list(table["path"]), _RED_CELL_IMAGES_MAX))
        source_pixel_size_um = measurement.pixel_size_um
        yield Progress("pixel size", 1, 1, f"{source_pixel_size_um:.4f} µm/px")
    read = yield from read_export_crops_steps(
        list(table["path"]),
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        source_pixel_size_um=source_pixel_size_um,
        max_image_side_px=max_image_side_px,
    )
    sizes = read.image_sizes[read.kept]
    table = table.loc[read.kept].reset_index(drop=True)
    table["image_height"] = sizes[:, 0]
    table["image_width"] = sizes[:, 1]
    is_blast = (table["cell_class"] == "blast").to_numpy()
    if kind == "blast":
        labels = is_blast.astype(np.int64)
    else:
        labels = np.array(
            [class_names.index(rename[label]) for label in table["label"]], dtype=np.int64
        )
    missing = [name for k, name in enumerate(class_names) if not (labels == k).any()]
    if missing:
        raise DatasetError(
            f"No cells of class {', '.join(missing)} in {root} for the patients chosen: a "
            "classifier needs examples of every class."
        )
    skipped = {**index.skipped, **read.skipped}
    source = {
        "kind": "cellavision",
        "root": str(root),
        **patients.source,
        "cell_type_map": index.cell_type_map,
        "label_names": dict(label_names or {}),
        "n_images": len(table),
        "n_patients_with_cells": int(table["patient"].nunique()),
        "patients_without_folder": index.patients_without_folder,
        "cells_per_cell_type": table["cell_type"].value_counts().sort_index().to_dict(),
        "excluded_cells_per_cell_type": excluded_counts,
        "skipped": skipped,
        "unsigned_per_patient": index.unsigned_per_patient,
        "unreadable_examples": read.failed_examples,
        "source_pixel_size_um": source_pixel_size_um,
        "pixel_size_measurement": measurement.describe() if measurement else None,
    }
    return CellSet(
        crops=read.crops,
        labels=labels,
        classes=class_names,
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        slide_ids=table["patient"].to_numpy(dtype=object),
        is_blast=is_blast,
        source=source,
        annotations=table,
    )

"""Training data: single-cell crops with labels, read from class folders, slide bags or made.

Three sources, one in-memory result, :class:`CellSet` (uint8 crops (N, h, w, 3) at the bundle's
crop window and pixel size, integer labels, slide ids):

- **class folders** (ImageFolder layout, read without torchvision): ``ROOT/<folder>/<image>``; a
  map sends each folder name to a class. :data:`LMU_BLAST_FOLDERS` is the map for the public
  AML-Cytomorphology_LMU set (Matek et al. 2019), where MYO (myeloblast) and MOB (monoblast) are
  blasts and the other 13 classes are not. A folder missing from the map is an error (a
  misspelt folder must not silently become a class).
- **bags** (the AML-Cytomorphology_MLL_Helmholtz layout, Hehr et al. 2023): ``ROOT/<slide_id>/
  <image>`` plus a CSV with columns ``slide_id,label``; every cell inherits its slide's label.
- **the generator** (:mod:`blastscope.synthetic`): whole synthetic slides (fields sharing one
  mutation and stain), their nucleated cells cut exactly as at inference (a window around each
  cell's centroid, :func:`blastscope.crops.extract_crops`, neighbours and all), with the truth
  (blast or not, the slide's mutation) kept beside the labels.

Real single-cell images come in any size and pixel size. Each is brought to the bundle's input
the way inference cuts cells (:func:`blastscope.crops.extract_crops`): a ``window_um`` window around
the image centre, resampled bilinearly from the image's pixel size (``source_pixel_size_um``, or
the file's metadata) to the crop pixel size; where the window is larger than the image it is padded
with the image's median colour. Cells are therefore never stretched to fill the crop, and their
size stays a feature, as at inference.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.crops import crop_size_px, extract_crops
from blastscope.errors import BlastscopeError
from blastscope.io import ImageInputError, read_field
from blastscope.progress import Progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# AML-Cytomorphology_LMU (Matek et al. 2019): 15 morphological classes; MYO and MOB are blasts.
LMU_BLAST_FOLDERS: dict[str, str] = {
    "MYO": "blast",  # myeloblast
    "MOB": "blast",  # monoblast
    "BAS": "non-blast",  # basophil
    "EBO": "non-blast",  # erythroblast
    "EOS": "non-blast",  # eosinophil
    "KSC": "non-blast",  # smudge cell
    "LYA": "non-blast",  # atypical lymphocyte
    "LYT": "non-blast",  # typical lymphocyte
    "MMZ": "non-blast",  # metamyelocyte
    "MON": "non-blast",  # monocyte
    "MYB": "non-blast",  # myelocyte
    "NGB": "non-blast",  # band neutrophil
    "NGS": "non-blast",  # segmented neutrophil
    "PMB": "non-blast",  # promyelocyte (bilobed)
    "PMO": "non-blast",  # promyelocyte
}
NAMED_FOLDER_MAPS: dict[str, dict[str, str]] = {"lmu": LMU_BLAST_FOLDERS}


class DatasetError(BlastscopeError):
    """Training data that cannot be read as asked; the message says what is wrong and the fix."""


@dataclass
class CellSet:
    """Single-cell crops and their labels, all arrays over the same N cells.

    ``crops`` (N, h, w, 3) uint8 at ``pixel_size_um`` µm per pixel covering ``window_um`` µm;
    ``labels`` (N,) int64 indices into ``classes``: the labels training sees (inherited from the
    slide for bags); ``slide_ids`` (N,) str, "" where unknown; ``true_labels`` (N,) the clean
    labels where known (the generator), else None; ``is_blast`` (N,) bool truth where known;
    ``source`` a JSON-ready description of where the cells came from; ``annotations`` an
    optional per-cell table (N rows; e.g. a CellaVision export's patient, slide and cell type).
    """

    crops: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    window_um: float
    pixel_size_um: float
    slide_ids: np.ndarray
    true_labels: np.ndarray | None = None
    is_blast: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    annotations: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> CellSet:
        """The cells at ``index`` (integer indices or a boolean mask)."""

        def pick(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[index]

        return CellSet(
            crops=self.crops[index],
            labels=self.labels[index],
            classes=self.classes,
            window_um=self.window_um,
            pixel_size_um=self.pixel_size_um,
            slide_ids=self.slide_ids[index],
            true_labels=pick(self.true_labels),
            is_blast=pick(self.is_blast),
            source=self.source,
            annotations=None
            if self.annotations is None
            else self.annotations.iloc[np.arange(len(self))[index]].reset_index(drop=True),
        )

    def concat(self, other: CellSet) -> CellSet:
        """These cells followed by ``other``'s (same classes, window and pixel size); truth
        arrays are kept where both sets have them."""
        if (self.classes, self.window_um, self.pixel_size_um) != (
            other.classes,
            other.window_um,
            other.pixel_size_um,
        ):
            raise DatasetError(
                "Cannot pool cells of different classes, crop windows or crop pixel sizes: "
                f"{self.classes} {self.window_um:g} µm / {self.pixel_size_um:g} µm/px against "
                f"{other.classes} {other.window_um:g} µm / {other.pixel_size_um:g} µm/px."
            )

        def joined(mine: np.ndarray | None, theirs: np.ndarray | None) -> np.ndarray | None:
            return None if mine is None or theirs is None else np.concatenate([mine, theirs])

        return CellSet(
            crops=np.concatenate([self.crops, other.crops]),
            labels=np.concatenate([self.labels, other.labels]),
            classes=self.classes,
            window_um=self.window_um,
            pixel_size_um=self.pixel_size_um,
            slide_ids=np.concatenate([self.slide_ids, other.slide_ids]),
            true_labels=joined(self.true_labels, other.true_labels),
            is_blast=joined(self.is_blast, other.is_blast),
            source={"kind": "pooled", "parts": [self.source, other.source]},
        )

    def class_counts(self, labels: np.ndarray | None = None) -> dict[str, int]:
        """Cells per class (of ``labels``, default the training labels)."""
        values = self.labels if labels is None else labels
        counts = np.bincount(values, minlength=len(self.classes))
        return {name: int(count) for name, count in zip(self.classes, counts, strict=True)}


def parse_folder_map(text: str) -> dict[str, str]:
    """Folder -> class from ``"lmu"`` (a named map), ``"MYO=blast,LYT=non-blast"`` or the path of
    a CSV file with the header ``folder,class`` (folder names may hold commas there)."""
    text = text.strip()
    if text.lower() in NAMED_FOLDER_MAPS:
        return dict(NAMED_FOLDER_MAPS[text.lower()])
    if text.lower().endswith(".csv") or Path(text).is_file():
        return read_folder_map_file(text)
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        folder, sep, name = item.partition("=")
        if not sep or not folder.strip() or not name.strip():
            raise DatasetError(
                f"Cannot read {item!r} in the folder map {text!r}: write FOLDER=CLASS pairs "
                f"separated by commas (e.g. MYO=blast,LYT=non-blast) or a named map "
                f"({', '.join(NAMED_FOLDER_MAPS)})."
            )
        mapping[folder.strip()] = name.strip()
    return mapping


def read_folder_map_file(path: str | os.PathLike) -> dict[str, str]:
    """A CSV with the header ``folder,class``, one folder a row -> folder -> class."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"No folder-map file at {path}: give a CSV with the header folder,class, or a map "
            "written as FOLDER=CLASS,..."
        )
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if header[:2] != ["folder", "class"]:
        raise DatasetError(
            f"{path.name} must start with the header folder,class (got {','.join(header)})."
        )
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(
                f"{path.name} line {line}: expected folder,class (quote a folder name that holds "
                'a comma, e.g. "Blast, no lineage spec",blast).'
            )
        mapping[row[0].strip()] = row[1].strip()
    if not mapping:
        raise DatasetError(f"{path.name} maps no folder: add rows folder,class.")
    return mapping


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)
    )


def read_cell_images(
    paths: Sequence[Path],
    *,
    window_um: float,
    pixel_size_um: float,
    source_pixel_size_um: float | None,
) -> np.ndarray:
    """Single-cell images -> crops (N, h, w, 3) uint8 of ``window_um`` at ``pixel_size_um``.

    Each image's pixel size is ``source_pixel_size_um`` when given, else read from the file's
    metadata; the crop is a window around the image centre (see the module docstring).
    """
    crop_px = crop_size_px(window_um, pixel_size_um)
    crops = np.empty((len(paths), crop_px, crop_px, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        try:
            cell = read_field(path, pixel_size_um=source_pixel_size_um)
        except ImageInputError as error:
            raise DatasetError(f"Cannot use {path} as a cell image: {error}") from error
        if cell.pixel_size_um is None:
            raise DatasetError(
                f"{path} has no pixel size in its metadata. Give the images' pixel size with "
                "--source-pixel-size-um (µm per pixel of the images in the folders) so that "
                "cells are cut at their true physical size."
            )
        height, width = cell.image.shape[:2]
        crops[index] = extract_crops(
            cell.image,
            np.array([[(height - 1) / 2.0, (width - 1) / 2.0]]),
            pixel_size_um=cell.pixel_size_um,
            window_um=window_um,
            out_pixel_size_um=pixel_size_um,
        )[0]
    return crops


def load_class_folders(
    root: str | os.PathLike,
    classes: Sequence[str],
    *,
    folder_map: Mapping[str, str] | None = None,
    window_um: float,
    pixel_size_um: float,
    source_pixel_size_um: float | None = None,
) -> CellSet:
    """Read ``root/<folder>/<image>`` with each folder mapped to one of ``classes``.

    Without ``folder_map`` folders must be named after the classes. Raises :class:`DatasetError`
    for a missing root, a folder the map does not know, a class the map does not use, an empty
    folder and unreadable images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"No folder at {root}: give the folder that holds one folder per class.")
    mapping = dict(folder_map) if folder_map is not None else {name: name for name in classes}
    unknown_classes = sorted(set(mapping.values()) - set(classes))
    if unknown_classes:
        raise DatasetError(
            f"The folder map sends folders to {', '.join(unknown_classes)}, which is not one of "
            f"the classes ({', '.join(classes)}). Fix the map."
        )
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if not folders:
        raise DatasetError(f"{root} holds no class folders: expected ROOT/<class>/<image files>.")
    unknown = [folder.name for folder in folders if folder.name not in mapping]
    if unknown:
        raise DatasetError(
            f"Folder(s) {', '.join(unknown)} in {root} are not in the folder map (it knows "
            f"{', '.join(sorted(mapping))}). Map each to a class, e.g. --folder-map "
            f"{unknown[0]}={classes[0]},... (or --folder-map lmu for the AML-Cytomorphology_LMU "
            f"folders), or move the folder out of {root}."
        )
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        files = _image_files(folder)
        if not files:
            raise DatasetError(
                f"Folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it or "
                "add the cell images."
            )
        paths += files
        labels += [classes.index(mapping[folder.name])] * len(files)
    label_array = np.asarray(labels, dtype=np.int64)
    missing = [name for k, name in enumerate(classes) if not (label_array == k).any()]
    if missing:
        raise DatasetError(
            f"No images of class {', '.join(missing)} in {root}: a classifier needs examples of "
            "every class. Add a folder for it (and map it)."
        )
    crops = read_cell_images(
        paths,
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        source_pixel_size_um=source_pixel_size_um,
    )
    return CellSet(
        crops=crops,
        labels=label_array,
        classes=tuple(classes),
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        slide_ids=np.full(len(paths), "", dtype=object),
        source={
            "kind": "class folders",
            "root": str(root),
            "folder_map": mapping,
            "n_images": len(paths),
            "source_pixel_size_um": source_pixel_size_um,
        },
    )


def slide_label_classes(csv_path: str | os.PathLike) -> tuple[str, ...]:
    """The distinct labels of a ``slide_id,label`` CSV, sorted: the classes it defines."""
    with open(_slide_label_file(csv_path), newline="", encoding="utf-8-sig") as handle:
        labels = sorted({(row.get("label") or "").strip() for row in csv.DictReader(handle)} - {""})
    if len(labels) < 2:
        raise DatasetError(
            f"{Path(csv_path).name} holds {len(labels)} distinct label(s); a classifier needs two "
            "or more (or pass the classes with --classes)."
        )
    return tuple(labels)


def _slide_label_file(csv_path: str | os.PathLike) -> Path:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(
            f"No slide label file at {csv_path}: give a CSV with columns slide_id,label."
        )
    return csv_path


def read_slide_labels(csv_path: str | os.PathLike, classes: Sequence[str]) -> dict[str, str]:
    """Read a ``slide_id,label`` CSV -> slide id -> class name, checking every row."""
    csv_path = _slide_label_file(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in ("slide_id", "label") if name not in columns]
        if missing:
            raise DatasetError(
                f"{csv_path.name} has columns {columns} but lacks {', '.join(missing)}: the slide "
                "label file needs a header row with the columns slide_id,label."
            )
        labels: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            slide, label = row["slide_id"], row["label"]
            if not slide:
                raise DatasetError(f"{csv_path.name} line {line}: empty slide_id.")
            if label not in classes:
                raise DatasetError(
                    f"{csv_path.name} line {line} gives slide {slide!r} the label {label!r}, which "
                    f"is not one of the classes ({', '.join(classes)}). Fix the CSV or pass the "
                    "classes it uses with --classes."
                )
            if slide in labels and labels[slide] != label:
                raise DatasetError(
                    f"{csv_path.name} gives slide {slide!r} two labels ({labels[slide]!r} and "
                    f"{label!r}); keep one row per slide."
                )
            labels[slide] = label
    return labels


def load_bags(
    root: str | os.PathLike,
    labels_csv: str | os.PathLike,
    classes: Sequence[str],
    *,
    window_um: float,
    pixel_size_um: float,
    source_pixel_size_um: float | None = None,
) -> CellSet:
    """Read ``root/<slide_id>/<image>``; every cell inherits its slide's label from the CSV.

    Raises :class:`DatasetError` for a slide folder without a row in the CSV, a CSV without the
    ``slide_id`` / ``label`` columns, labels outside ``classes`` and empty slide folders. CSV rows
    without a folder are allowed (a subset of a cohort) and listed in ``source``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"No folder at {root}: give the folder that holds one folder per slide.")
    slide_labels = read_slide_labels(labels_csv, classes)
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if not folders:
        raise DatasetError(f"{root} holds no slide folders: expected ROOT/<slide_id>/<images>.")
    unlabelled = [folder.name for folder in folders if folder.name not in slide_labels]
    if unlabelled:
        raise DatasetError(
            f"Slide folder(s) {', '.join(unlabelled)} in {root} have no label in "
            f"{Path(labels_csv).name}. Add a row '{unlabelled[0]},<label>' for each, or move "
            "the folder out."
        )
    paths: list[Path] = []
    slides: list[str] = []
    for folder in folders:
        files = _image_files(folder)
        if not files:
            raise DatasetError(
                f"Slide folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it "
                "or add its cell images."
            )
        paths += files
        slides += [folder.name] * len(files)
    crops = read_cell_images(
        paths,
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        source_pixel_size_um=source_pixel_size_um,
    )
    labels = np.array([classes.index(slide_labels[slide]) for slide in slides], dtype=np.int64)
    without_folder = sorted(set(slide_labels) - {folder.name for folder in folders})
    return CellSet(
        crops=crops,
        labels=labels,
        classes=tuple(classes),
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        slide_ids=np.asarray(slides, dtype=object),
        source={
            "kind": "slide bags",
            "root": str(root),
            "labels_csv": str(labels_csv),
            "n_slides": len(folders),
            "n_images": len(paths),
            "slides_in_csv_without_folder": without_folder,
            "source_pixel_size_um": source_pixel_size_um,
        },
    )


@dataclass(frozen=True)
class Split:
    """Indices of the train, validation and test cells; ``by`` is ``"slide"`` or ``"cell"``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    by: str

    def describe(self, cells: CellSet) -> dict[str, Any]:
        """Cells (and slides, for a slide split) per part, JSON-ready."""
        summary: dict[str, Any] = {"by": self.by}
        for part in ("train", "val", "test"):
            index = getattr(self, part)
            summary[f"{part}_cells"] = int(index.size)
            if self.by == "slide":
                summary[f"{part}_slides"] = sorted({str(s) for s in cells.slide_ids[index]})
        return summary


def _stratified_order(groups: list[np.ndarray], rng: np.random.Generator) -> list:
    """Items of all groups, each group shuffled, dealt round-robin (group 0, 1, ..., 0, 1, ...)."""
    shuffled = [list(rng.permutation(group)) for group in groups]
    order = []
    for position in range(max((len(group) for group in shuffled), default=0)):
        order += [group[position] for group in shuffled if position < len(group)]
    return order


def _cut(order: list, val_fraction: float, test_fraction: float) -> tuple[list, list, list]:
    """Cut an ordering into train / val / test; val and test get at least one item each."""
    n = len(order)
    n_val = max(1, round(val_fraction * n))
    n_test = max(1, round(test_fraction * n))
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def split_cells(
    cells: CellSet, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> Split:
    """Split into train / validation / test, by slide when slides are known, else by cell.

    By slide: every cell of a slide goes to the same part (no slide's stain or patient leaks from
    training into evaluation); slides are stratified by their majority label (each label's slides
    are dealt in turn). By cell: stratified by label. The fractions are of slides (or cells).
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(
            f"val and test fractions must be in (0, 1) and sum below 1, got {val_fraction} and "
            f"{test_fraction}."
        )
    rng = np.random.default_rng(seed)
    by_slide = bool(np.any(cells.slide_ids != ""))
    if by_slide:
        slides = np.unique(cells.slide_ids.astype(str))
        if slides.size < 3:
            raise DatasetError(
                f"Splitting by slide needs at least 3 slides (train, validation, test), got "
                f"{slides.size}. Add slides."
            )
        majority = np.array(
            [np.bincount(cells.labels[cells.slide_ids == slide]).argmax() for slide in slides]
        )
        groups = [slides[majority == k] for k in np.unique(majority)]
        parts = _cut(_stratified_order(groups, rng), val_fraction, test_fraction)
        index = [np.flatnonzero(np.isin(cells.slide_ids, part)) for part in parts]
    else:
        if len(cells) < 3:
            raise DatasetError(f"Splitting needs at least 3 cells, got {len(cells)}.")
        groups = [np.flatnonzero(cells.labels == k) for k in range(len(cells.classes))]
        parts = _cut(_stratified_order(groups, rng), val_fraction, test_fraction)
        index = [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    return Split(*index, by="slide" if by_slide else "cell")


def bccd_white_cells(
    root: str | os.PathLike | None,
    *,
    split: str = "train",
    listed: str | os.PathLike | None = None,
    window_um: float,
    pixel_size_um: float,
    stain_normalisation: str = "none",
) -> CellSet:
    """The white cells of BCCD's ``split`` fields as real non-blasts (normal blood, MIT).

    Each white-cell box's centre is cut like a cell at inference (the bundle's window around it,
    at BCCD's 0.08 µm per pixel); each field is a slide of its own, so a split by slide keeps a
    field's cells together. Labels are ("non-blast", "blast") = 0, and they are the truth.
    ``stain_normalisation="cells"`` normalises each field against the objects the shipped
    segmenter finds in it before cutting.
    """
    from blastscope.samples import BCCD_PIXEL_SIZE_UM
    from blastscope.segment import SegmentationParams, segment
    from blastscope.train.bccd_masks import bccd_field_ids, bccd_root, read_fields

    folder = bccd_root(root)
    crops, slides = [], []
    for bccd_field in read_fields(folder, bccd_field_ids(folder, split, listed)):
        boxes = bccd_field.boxes[bccd_field.boxes["class"] == "WBC"]
        if boxes.empty:
            continue
        centres = np.stack(
            [
                (boxes["ymin"] + boxes["ymax"]).to_numpy() / 2.0,
                (boxes["xmin"] + boxes["xmax"]).to_numpy() / 2.0,
            ],
            axis=1,
        )
        image = bccd_field.image
        if stain_normalisation != "none":
            labels = segment(image, BCCD_PIXEL_SIZE_UM, SegmentationParams()).labels
            image = _stained(image, labels, stain_normalisation)
        crops.append(
            extract_crops(
                image,
                centres,
                pixel_size_um=BCCD_PIXEL_SIZE_UM,
                window_um=window_um,
                out_pixel_size_um=pixel_size_um,
            )
        )
        slides += [f"bccd-{bccd_field.field_id}"] * len(centres)
    labels = np.zeros(len(slides), dtype=np.int64)
    return CellSet(
        crops=np.concatenate(crops),
        labels=labels,
        classes=("non-blast", "blast"),
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        slide_ids=np.asarray(slides, dtype=object),
        true_labels=labels.copy(),
        is_blast=np.zeros(len(slides), dtype=bool),
        source={
            "kind": "BCCD white cells",
            "root": str(folder),
            "fields": f"listed in {listed}" if listed else f"splits/{split}.txt",
            "n_fields": len(set(slides)),
            "n_cells": len(slides),
            "source_pixel_size_um": BCCD_PIXEL_SIZE_UM,
            "licence": "MIT (BCCD_Dataset, Shenggan)",
            "stain_normalisation": stain_normalisation,
        },
    )


def _stained(image: np.ndarray, labels: np.ndarray, stain_normalisation: str) -> np.ndarray:
    """``image`` as a bundle with this ``stain_normalisation`` sees it."""
    if stain_normalisation == "none":
        return image
    if stain_normalisation != "cells":
        raise DatasetError(
            f"Unknown stain normalisation {stain_normalisation!r}: choose none or cells."
        )
    from blastscope.stain import normalise_to_cells

    return normalise_to_cells(image, labels)


SYNTHETIC_FIELD_SHAPE = (1024, 1024)
_NUCLEATED_PER_FIELD_GUESS = 60  # first guess of fields per slide; topped up when short


def synthetic_cells_steps(
    kind: str,
    preset: str,
    n_slides: int,
    cells_per_slide: int,
    *,
    seed: int,
    window_um: float,
    pixel_size_um: float,
    classes: Sequence[str],
    field_shape: tuple[int, int] = SYNTHETIC_FIELD_SHAPE,
    stain_normalisation: str = "none",
) -> Generator[Progress, None, CellSet]:
    """Nucleated cells of ``n_slides`` synthetic slides, ``cells_per_slide`` from each.

    ``stain_normalisation="cells"`` normalises each field against its (true) cells before the
    crops are cut (:mod:`blastscope.stain`), as inference does for bundles that ask for it.

    The cells of a slide are a random sample (seeded) of the nucleated cells of its fields.
    ``kind="blast"``: labels are blast / non-blast (``classes`` = ("non-blast", "blast")).
    ``kind="mutation"``: labels are the slide's mutation (bag labels; ``classes`` the mutation
    classes), assigned round-robin over the slides so that every class has slides; the truth
    ``is_blast`` is kept for filtering. Slide ``i`` is generated with seed ``seed * 100_000 + i``.
    Yields one Progress per slide.
    """
    if n_slides < 3 or cells_per_slide < 1:
        raise DatasetError(
            f"Synthetic data needs at least 3 slides (train, validation, test) and 1 cell per "
            f"slide, got {n_slides} slides of {cells_per_slide} cells."
        )
    from blastscope.synthetic import generate_slide

    crops, labels, blasts, slides = [], [], [], []
    fields_per_slide = max(1, math.ceil(cells_per_slide / _NUCLEATED_PER_FIELD_GUESS))
    for index in range(n_slides):
        slide_seed = seed * 100_000 + index
        mutation = classes[index % len(classes)] if kind == "mutation" else None
        n_fields = fields_per_slide
        while True:
            fields = generate_slide(
                slide_seed, preset, n_fields=n_fields, shape=field_shape, mutation=mutation
            )
            found = sum(int(f.cells["is_nucleated"].sum()) for f in fields)
            if found >= cells_per_slide or n_fields >= 8 * fields_per_slide:
                break
            n_fields = math.ceil(n_fields * cells_per_slide / max(found, 1)) + 1
        slide_crops, slide_blasts = [], []
        for synthetic_field in fields:
            nucleated = synthetic_field.cells[synthetic_field.cells["is_nucleated"]]
            slide_crops.append(
                extract_crops(
                    _stained(synthetic_field.image, synthetic_field.labels, stain_normalisation),
                    nucleated[["centroid_y", "centroid_x"]].to_numpy(),
                    pixel_size_um=synthetic_field.pixel_size_um,
                    window_um=window_um,
                    out_pixel_size_um=pixel_size_um,
                )
            )
            slide_blasts.append(nucleated["is_blast"].to_numpy(dtype=bool))
        # A random sample: the table lists cells by type, so its first rows are not a sample.
        found_blasts = np.concatenate(slide_blasts)
        chosen = np.sort(
            np.random.default_rng(slide_seed).choice(
                found_blasts.size, size=min(found_blasts.size, cells_per_slide), replace=False
            )
        )
        slide_crops_array = np.concatenate(slide_crops)[chosen]
        slide_blast_array = found_blasts[chosen]
        crops.append(slide_crops_array)
        blasts.append(slide_blast_array)
        if kind == "mutation":
            labels.append(np.full(len(slide_blast_array), classes.index(fields[0].mutation)))
        else:
            labels.append(slide_blast_array.astype(np.int64))
        slides += [f"{preset}-{seed}-{index:04d}"] * len(slide_blast_array)
        yield Progress("synthetic slides", index + 1, n_slides, f"slide {index + 1}/{n_slides}")
    label_array = np.concatenate(labels).astype(np.int64)
    return CellSet(
        crops=np.concatenate(crops),
        labels=label_array,
        classes=tuple(classes),
        window_um=window_um,
        pixel_size_um=pixel_size_um,
        slide_ids=np.asarray(slides, dtype=object),
        true_labels=label_array.copy(),
        is_blast=np.concatenate(blasts),
        source={
            "kind": "synthetic",
            "preset": preset,
            "n_slides": n_slides,
            "cells_per_slide": cells_per_slide,
            "seed": seed,
            "field_shape": list(field_shape),
            "cells": "nucleated cells, crops cut around their centroids",
            "stain_normalisation": stain_normalisation,
        },
    )

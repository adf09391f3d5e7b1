"""Slides as units of work: finding them, analysing their fields, pooling one call per slide,
exporting, resuming and summarising a batch.

A *slide* is one image file, or a folder holding several fields (images) of the same slide,
whose blasts are pooled into one slide call. :func:`find_slides` turns a file, a folder or a glob
pattern into slides; :func:`slide_steps` analyses and exports one; :func:`batch_steps` runs many,
skipping slides already done (a ``slide.json`` marker written last) unless ``force``, and
recording a failure without stopping the others. The CLI and the dask runner call these.
"""

from __future__ import annotations

import glob
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from blastscope.export import DEFAULT_FORMATS, ExportError, export_result
from blastscope.export._atomic import AtomicFiles, dumps_json, ensure_folder
from blastscope.io import ImageInputError, read_field
from blastscope.pipeline import PipelineConfig, analyse_steps
from blastscope.progress import Progress, Steps
from blastscope.slide_call import SlideCall, call_slide

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
MARKER_NAME = "slide.json"
SUMMARY_NAME = "summary.csv"


@dataclass(frozen=True)
class Slide:
    """One slide: an id (used for the output folder) and its field images."""

    slide_id: str
    fields: tuple[Path, ...]


@dataclass
class SlideOutcome:
    """What became of one slide in a batch: ``status`` is done, skipped or failed."""

    slide: Slide
    status: str
    slide_call: SlideCall | None = None
    counts: dict[str, int] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    error: str = ""

    def summary_row(self) -> dict[str, Any]:
        """One row of the batch summary: the call, its probabilities and the counts."""
        row: dict[str, Any] = {
            "slide_id": self.slide.slide_id,
            "status": self.status,
            "n_fields": len(self.slide.fields),
            **self.counts,
        }
        call = self.slide_call
        if call is not None:
            row.update(
                call=call.call or "no call",
                reason=call.reason,
                blast_percentage=call.blast_percentage,
                blasts_pooled=call.n_blasts,
            )
            for name, probability in call.probabilities.items():
                low, high = call.interval[name]
                row[f"p_{name}"] = probability
                row[f"p_{name}_low"] = low
                row[f"p_{name}_high"] = high
        row["error"] = self.error
        return row


def _is_image(path: Path) -> bool:
    hidden = path.name.startswith(".")
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def find_slides(source: str | Path) -> list[Slide]:
    """The slides in ``source``: an image file, a folder, or a glob pattern of images.

    In a folder, each image directly inside is a slide of its own and each sub-folder holding
    images is one slide whose images are its fields. Raises ``FileNotFoundError`` naming the
    source when nothing is found.
    """
    text = str(source)
    path = Path(source)
    if path.is_file():
        return [Slide(path.stem, (path,))]
    if path.is_dir():
        slides = [Slide(item.stem, (item,)) for item in sorted(path.iterdir()) if _is_image(item)]
        for folder in sorted(item for item in path.iterdir() if item.is_dir()):
            fields = tuple(sorted(item for item in folder.iterdir() if _is_image(item)))
            if fields:
                slides.append(Slide(folder.name, fields))
    elif glob.has_magic(text):
        slides = [Slide(Path(item).stem, (Path(item),)) for item in sorted(glob.glob(text))]
        slides = [slide for slide in slides if _is_image(slide.fields[0])]
    else:
        raise FileNotFoundError(f"No file or folder at {text}: check the path.")
    if not slides:
        raise FileNotFoundError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {text}: point at an image, a "
            "folder of images, a folder of slide folders, or a glob pattern such as 'runs/*.tif'."
        )
    duplicates = pd.Series([slide.slide_id for slide in slides]).duplicated()
    if duplicates.any():
        names = sorted({slides[i].slide_id for i in duplicates[duplicates].index})
        raise ValueError(
            f"Several slides share the id(s) {names} (same file name in different forms); "
            "rename them so that each slide's outputs get their own folder."
        )
    return slides


def slide_steps(
    slide: Slide,
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    pixel_size_um: float | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    overwrite: bool = False,
) -> Steps[SlideOutcome]:
    """Analyse every field of ``slide``, export each, pool one slide call and mark it done.

    Outputs go to ``out_dir/<slide_id>/``; the ``slide.json`` marker (the pooled call, counts and
    outputs) is written last, so a slide without it was not finished.
    """
    config = config or PipelineConfig()
    folder = Path(out_dir) / slide.slide_id
    tables, outputs, classes = [], [], None
    for index, path in enumerate(slide.fields):
        yield Progress("fields", index, len(slide.fields), path.name)
        image_field = read_field(path, pixel_size_um)
        result = yield from analyse_steps(
            image_field.image,
            image_field.pixel_size_um,
            config,
            input_sha256=image_field.sha256,
        )
        result.notices[:0] = image_field.notices
        result.provenance["input_file"] = str(path)
        outputs += export_result(
            result,
            image_field.image,
            folder,
            stem=path.stem,
            formats=formats,
            overwrite=overwrite,
        )
        tables.append(result.cells)
        if result.slide_call is not None:
            classes = result.slide_call.classes
    yield Progress("fields", len(slide.fields), len(slide.fields))
    slide_call = None
    if classes is not None:
        settings = config.slide_call
        slide_call = call_slide(
            tables,
            classes,
            pooling=settings.pooling,
            min_blasts=settings.min_blasts,
            min_probability=settings.min_probability,
        )
    cells = pd.concat(tables, ignore_index=True)
    counts = {
        "cells": len(cells),
        "nucleated": int(cells["is_nucleated"].sum()) if len(cells) else 0,
        "blasts": int(cells["is_blast"].sum()) if "is_blast" in cells and len(cells) else 0,
    }
    outcome = SlideOutcome(slide, "done", slide_call, counts, outputs)
    marker = {
        "slide_id": slide.slide_id,
        "fields": [str(path) for path in slide.fields],
        "counts": counts,
        "slide_call": slide_call.to_dict() if slide_call is not None else None,
        "outputs": [path.name for path in outputs],
    }
    with AtomicFiles(overwrite=True) as files:
        files.temporary(folder / MARKER_NAME).write_text(
            dumps_json(marker, where="the slide record"), encoding="utf-8"
        )
    return outcome


def finished_outcome(slide: Slide, out_dir: str | Path) -> SlideOutcome | None:
    """The outcome recorded by an earlier run of ``slide`` in ``out_dir``, or None."""
    marker = Path(out_dir) / slide.slide_id / MARKER_NAME
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    call = record.get("slide_call")
    slide_call = None
    if call is not None:
        call["classes"] = tuple(call["classes"])
        call["interval"] = {name: tuple(pair) for name, pair in call["interval"].items()}
        call["probabilities"] = {
            name: float("nan") if value is None else value
            for name, value in call["probabilities"].items()
        }
        slide_call = SlideCall(**call)
    return SlideOutcome(slide, "skipped", slide_call, record.get("counts", {}))


# Errors that concern one slide (its file, its content, its outputs); others are bugs and raise.
SLIDE_ERRORS = (ImageInputError, ExportError, ValueError, OSError)


def batch_steps(
    slides: list[Slide],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    pixel_size_um: float | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    force: bool = False,
) -> Steps[list[SlideOutcome]]:
    """Run :func:`slide_steps` over ``slides``; writes ``summary.csv`` (one row per slide).

    Slides already finished in ``out_dir`` are skipped unless ``force`` (which also replaces
    their files). A slide that fails is recorded with its error and the batch goes on.
    """
    out_dir = ensure_folder(out_dir)
    outcomes: list[SlideOutcome] = []
    for index, slide in enumerate(slides):
        yield Progress("slides", index, len(slides), slide.slide_id)
        previous = None if force else finished_outcome(slide, out_dir)
        if previous is not None:
            outcomes.append(previous)
            continue
        try:
            outcome = yield from slide_steps(
                slide,
                out_dir,
                config,
                pixel_size_um=pixel_size_um,
                formats=formats,
                overwrite=force,
            )
        except SLIDE_ERRORS as error:
            message = str(error) or traceback.format_exception_only(error)[-1].strip()
            outcome = SlideOutcome(slide, "failed", error=message)
        outcomes.append(outcome)
    yield Progress("slides", len(slides), len(slides))
    write_summary(outcomes, Path(out_dir) / SUMMARY_NAME)
    return outcomes


def write_summary(outcomes: list[SlideOutcome], path: Path) -> Path:
    """The batch summary CSV: one row per slide (call, probabilities, counts, status, error)."""
    table = pd.DataFrame([outcome.summary_row() for outcome in outcomes])
    for column in ("n_fields", "cells", "nucleated", "blasts", "blasts_pooled"):
        if column in table:
            table[column] = table[column].astype("Int64")
    with AtomicFiles(overwrite=True) as files:
        table.to_csv(files.temporary(path), index=False)
    return path

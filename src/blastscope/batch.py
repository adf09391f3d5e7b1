"""Slides as units of work: finding them, analysing their fields, pooling one call per slide,
exporting, resuming and summarising a batch.

A *slide* is one image file, or a folder holding several fields (images) of the same slide,
whose blasts are pooled into one slide call. :func:`find_slides` turns a file, a folder or a glob
pattern into slides (:func:`find_slide`: the one slide of ``blastscope run``); :func:`slide_steps`
analyses and exports one; :func:`batch_steps` runs many, recording a failure without stopping
the others. The CLI calls these.

Each slide's outputs go to ``OUT/<slide id>/``, a plain folder name checked to stay inside
``OUT``. Before analysing, every field is read and the output folder is checked, so a corrupt
field or an unwritable folder fails the slide before anything is written. ``slide.json``,
written last, records each field's name and sha256 and the settings (models, thresholds, pixel
size, formats); a resumed batch skips a slide only when all of them match and otherwise redoes
it with a note saying why. A slide folder without a valid ``slide.json`` holds the files of an
unfinished run, which the next run replaces.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from blastscope.distributed import (
    Cluster,
    check_workers_see,
    portable_config,
    use_threads,
    worker_config,
)
from blastscope.errors import BlastscopeError
from blastscope.export import (
    ALL_FORMATS,
    DEFAULT_FORMATS,
    ExportError,
    export_paths,
    export_result,
)
from blastscope.export._atomic import (
    AtomicFiles,
    OutputExistsError,
    check_writable,
    remove_stale_temporaries,
)
from blastscope.export._spreadsheet import escape_text_columns
from blastscope.export.geojson_writer import check_shapes
from blastscope.export.report import report_plot_paths
from blastscope.export.tables import sidecar_path
from blastscope.io import ImageInputError, image_sha256, read_field
from blastscope.jsonable import dumps_json, jsonable
from blastscope.pipeline import PipelineConfig, analyse_steps, loaded
from blastscope.progress import Progress, Steps, run_steps
from blastscope.slide import (
    OPENSLIDE_SUFFIXES,
    SLIDE_SUFFIXES,
    Region,
    SlideError,
    is_whole_slide,
    slide_stem,
)
from blastscope.slide_call import SlideCall
from blastscope.wholeslide import (
    DEFAULT_TILE_PX,
    WholeSlideOutcome,
    whole_slide_steps,
    write_cohort_cells,
)

IMAGE_SUFFIXES = (
    ".tif",
    ".tiff",
    ".svs",
    ".ndpi",
    *OPENSLIDE_SUFFIXES,
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
)
MARKER_NAME = "slide.json"
MARKER_FORMAT = "blastscope-slide"
MARKER_VERSION = 2
SUMMARY_NAME = "summary.csv"


def check_slide_id(slide_id: str) -> str:
    """``slide_id`` when it is a plain folder name (the slide's output folder), else a ValueError.

    Refused: empty, ``.`` or ``..``, path separators, a leading ``.`` (hidden), the summary's
    file name.
    """
    problem = ""
    if not isinstance(slide_id, str) or not slide_id.strip():
        problem = "is empty"
    elif slide_id in (".", ".."):
        problem = "is a step between folders, not a name"
    elif "/" in slide_id or "\\" in slide_id:
        problem = "contains a path separator"
    elif slide_id.startswith("."):
        problem = "starts with '.' (a hidden name)"
    elif "\0" in slide_id:
        problem = "contains a NUL character"
    elif slide_id == SUMMARY_NAME:
        problem = "is the name of the batch summary file"
    if problem:
        raise ValueError(
            f"The slide id {slide_id!r} {problem}: a slide id names its output folder "
            "OUT/<slide id>/, so it must be a plain folder name; rename the image or folder."
        )
    return slide_id


@dataclass(frozen=True)
class Slide:
    """One slide: an id (its output folder's name, see :func:`check_slide_id`) and its fields."""

    slide_id: str
    fields: tuple[Path, ...]

    def __post_init__(self) -> None:
        check_slide_id(self.slide_id)
        object.__setattr__(self, "fields", tuple(Path(path) for path in self.fields))


@dataclass
class SlideOutcome:
    """What became of one slide in a batch: ``status`` is done, skipped or failed.

    ``notes`` say what the run found and did besides analysing: its fields' notices (an
    estimated pixel size, no nucleated cell found...), why a slide was redone, what was cleaned.
    """

    slide: Slide
    status: str
    slide_call: SlideCall | None = None
    counts: dict[str, int] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    error: str = ""
    notes: list[str] = field(default_factory=list)

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
        row["notes"] = "; ".join(self.notes)
        row["error"] = self.error
        return row


def _is_image(path: Path) -> bool:
    hidden = path.name.startswith(".")
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not hidden


def find_slides(source: str | Path) -> list[Slide]:
    """The slides in ``source``: an image file, a folder, or a glob pattern of images.

    In a folder, each image directly inside is a slide of its own and each sub-folder holding
    images is one slide whose images are its fields; hidden files and folders are left out.
    Raises ``FileNotFoundError`` naming the source when nothing is found, ``ValueError`` when
    two slides would share an output folder or a name cannot be one (see :func:`check_slide_id`).
    """
    text = str(source)
    path = Path(source)
    if path.is_file():
        return [Slide(slide_stem(path), (path,))]
    if path.is_dir():
        slides = [
            Slide(slide_stem(item), (item,)) for item in sorted(path.iterdir()) if _is_image(item)
        ]
        folders = (item for item in path.iterdir() if item.is_dir())
        for folder in sorted(item for item in folders if not item.name.startswith(".")):
            fields = tuple(sorted(item for item in folder.iterdir() if _is_image(item)))
            if fields:
                slides.append(Slide(folder.name, fields))
    elif glob.has_magic(text):
        images = [Path(item) for item in sorted(glob.glob(text)) if _is_image(Path(item))]
        slides = [Slide(slide_stem(image), (image,)) for image in images]
    else:
        raise FileNotFoundError(f"No file or folder at {text}: check the path.")
    if not slides:
        raise FileNotFoundError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {text}: point at an image, a "
            "folder of images, a folder of slide folders, or a glob pattern such as 'runs/*.tif'."
        )
    # case-insensitive file systems (macOS, Windows) would merge "A" and "a" into one folder
    duplicates = pd.Series([slide.slide_id.casefold() for slide in slides]).duplicated(keep=False)
    if duplicates.any():
        names = sorted({slides[i].slide_id for i in duplicates[duplicates].index})
        raise ValueError(
            f"Several slides share the id(s) {names} (same file name in different forms or "
            "letter case); rename them so that each slide's outputs get their own folder."
        )
    return slides


def find_slide(source: str | Path) -> Slide:
    """The one slide at ``source``: an image file, or a folder of one slide's fields.

    A folder's fields are the images in it and in its sub-folders; the slide is named after the
    folder as resolved (so ``a/b/..`` and ``.`` name the real folder, ``a`` and the current one).
    """
    path = Path(source)
    if path.is_dir():
        folder = path.resolve()
        fields = tuple(item for slide in find_slides(folder) for item in slide.fields)
        try:
            return Slide(folder.name, fields)
        except ValueError as error:
            raise ValueError(f"Cannot analyse {source} as one slide: {error}") from None
    slides = find_slides(path)
    if len(slides) != 1:
        raise ValueError(
            f"{source} matches {len(slides)} images; give one image or one slide folder (a batch "
            "analyses several slides)."
        )
    return slides[0]


def slide_folder(out_dir: str | Path, slide_id: str) -> Path:
    """``out_dir/<slide_id>``, checked to lie directly inside ``out_dir`` (a ValueError if not)."""
    folder = Path(out_dir) / check_slide_id(slide_id)
    if folder.resolve().parent != Path(out_dir).resolve():
        raise ValueError(
            f"The output folder of slide {slide_id!r}, {folder}, leads outside {out_dir} (a "
            "link?); remove the link or choose another output folder."
        )
    return folder


# --------------------------------------------------------------------------- the slide record


def slide_settings(
    config: PipelineConfig,
    pixel_size_um: float | None,
    formats: Sequence[str],
    region: Region | None = None,
    geojson_shapes: str = "outline",
) -> dict[str, Any]:
    """What a slide's outputs depend on besides its images (JSON-ready): the segmentation
    settings, the models (names and weight hashes), the blast threshold, the slide-call settings,
    the pixel size given (µm per pixel, None = from the files), the export formats and how the
    GeoJSON draws the cells.

    The device and batch sizes are left out: they do not change the results.
    """
    segmentation = asdict(config.segmentation)
    for name in ("device", "batch_size"):
        segmentation.pop(name, None)
    settings = {
        "segmentation": segmentation,
        "blast_model": _model_record(config.blast_model),
        "mutation_model": _model_record(config.mutation_model),
        "blast_threshold": config.blast_threshold,
        "slide_call": asdict(config.slide_call),
        "pixel_size_um": pixel_size_um,
        "formats": sorted(formats),
    }
    if region is not None:  # only then: records of whole-field runs keep their settings key
        settings["region"] = region.as_text()
    if geojson_shapes != "outline":  # likewise: records of outline exports keep theirs
        settings["geojson_shapes"] = geojson_shapes
    return jsonable(settings, "the slide settings")


def _model_record(model: Any) -> Any:
    if model is None or isinstance(model, str):
        return model
    metadata = getattr(model, "metadata", {}) or {}
    return {"name": getattr(model, "name", None), "sha256": metadata.get("weights_sha256")}


def settings_key(settings: dict[str, Any]) -> str:
    """A short hash of :func:`slide_settings` (16 hex digits)."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class SlideRecordError(BlastscopeError):
    """A ``slide.json`` that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class SlideRecord:
    """What ``slide.json`` says of a finished slide: its fields (name -> sha256), the settings
    and their key, the counts, the slide call and the names of the files written."""

    fields: dict[str, str]
    settings: dict[str, Any]
    settings_key: str
    counts: dict[str, int]
    slide_call: SlideCall | None
    outputs: tuple[str, ...]


def read_slide_record(path: str | Path) -> SlideRecord:
    """Read and check a ``slide.json``; a :class:`SlideRecordError` saying what is wrong."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SlideRecordError(f"cannot be read ({error})") from error
    except json.JSONDecodeError as error:
        raise SlideRecordError(f"is not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(record, dict):
        raise SlideRecordError(f"holds a JSON {type(record).__name__}, not a slide record")
    if record.get("format") != MARKER_FORMAT or record.get("version") != MARKER_VERSION:
        raise SlideRecordError(
            "comes from an older blastscope or another program (no field checksums)"
        )
    try:
        fields = {_text(item["name"]): _text(item["sha256"]) for item in record["fields"]}
        settings = record["settings"]
        if not isinstance(settings, dict):
            raise TypeError("settings is not an object")
        counts = {_text(name): _count(value) for name, value in record["counts"].items()}
        call = record["slide_call"]
        slide_call = None if call is None else _slide_call(call)
        outputs = tuple(_text(name) for name in record["outputs"])
        key = _text(record["settings_key"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        detail = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise SlideRecordError(f"is damaged ({detail})") from None
    return SlideRecord(fields, settings, key, counts, slide_call, outputs)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r:.40} is not text")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r:.40} is not a count")
    return value


def _number(value: Any) -> float:
    """A probability or percentage from JSON: None (written for NaN) becomes NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r:.40} is not a number")
    return float(value)


def _slide_call(call: dict[str, Any]) -> SlideCall:
    values = dict(call)
    values["classes"] = tuple(_text(name) for name in values["classes"])
    values["probabilities"] = {
        _text(name): _number(value) for name, value in values["probabilities"].items()
    }
    values["interval"] = {
        _text(name): (_number(low), _number(high))
        for name, (low, high) in values["interval"].items()
    }
    values["blast_percentage"] = _number(values["blast_percentage"])
    values["reason"] = _text(values["reason"])
    values["n_blasts"] = _count(values["n_blasts"])
    verdict = values["call"]
    if verdict is not None and not (
        verdict in values["probabilities"] and verdict in values["interval"]
    ):
        raise ValueError(f"the call {verdict!r:.40} is not one of its classes")
    return SlideCall(**values)


@dataclass(frozen=True)
class SlideState:
    """What an earlier run left of one slide: its valid record (or None) and why the slide must
    be (re)done ("" when the record matches the fields and settings, or nothing was there)."""

    record: SlideRecord | None
    reason: str

    @property
    def up_to_date(self) -> bool:
        """Finished with the same fields (by sha256) and settings: nothing to redo."""
        return self.record is not None and not self.reason


def slide_state(folder: Path, fields: dict[str, str], settings: dict[str, Any]) -> SlideState:
    """Compare ``folder/slide.json`` with the slide's ``fields`` (name -> sha256) and settings."""
    marker = folder / MARKER_NAME
    if not marker.exists():
        leftovers = folder.is_dir() and any(folder.iterdir())
        reason = "an earlier run left it unfinished (no slide.json)" if leftovers else ""
        return SlideState(None, reason)
    try:
        record = read_slide_record(marker)
    except SlideRecordError as error:
        return SlideState(None, f"its slide.json {error}")
    reasons = _field_changes(record.fields, fields)
    if record.settings_key != settings_key(settings):
        changed = _changed_settings(record.settings, settings)
        reasons.append(f"settings changed ({', '.join(changed) or 'settings key'})")
    return SlideState(record, "; ".join(reasons))


def _field_changes(before: dict[str, str], now: dict[str, str]) -> list[str]:
    added = [name for name in now if name not in before]
    removed = [name for name in before if name not in now]
    changed = [name for name in now if name in before and before[name] != now[name]]
    reasons = []
    for names, words in ((added, "added"), (removed, "removed")):
        if names:
            noun = "field" if len(names) == 1 else "fields"
            reasons.append(f"{noun} {_names(names)} {words}")
    if changed:
        reasons.append(f"{_names(changed)} changed")
    return reasons


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The names of the settings that differ (``segmentation.flow_threshold``, ``blast_model``)."""
    changed = []
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if name.endswith("_model") or not (isinstance(old, dict) and isinstance(new, dict)):
            changed.append(name)
            continue
        keys = sorted(set(old) | set(new))
        changed += [f"{name}.{key}" for key in keys if old.get(key) != new.get(key)]
    return changed


# --------------------------------------------------------------------------- one slide


def _field_hashes(slide: Slide) -> dict[str, str]:
    hashes = {}
    for path in slide.fields:
        if not path.is_file():
            raise ImageInputError(f"No image file at {path}: check the path.")
        try:
            hashes[path.name] = image_sha256(path)
        except OSError as error:
            raise ImageInputError(
                f"Cannot read {path} ({error.strerror or error}); check that you may read it."
            ) from error
    return hashes


def _check_field_names(slide: Slide) -> None:
    """Two fields whose names give the same output files (``f0.png`` and ``f0.jpg``) are refused."""
    by_stem: dict[str, Path] = {}
    for path in slide.fields:
        other = by_stem.setdefault(slide_stem(path).casefold(), path)
        if other != path:
            raise ValueError(
                f"Fields {other} and {path} of slide {slide.slide_id} would write the same output "
                f"files ({slide_stem(path)}.*); rename one of them."
            )


def check_formats(formats: Sequence[str]) -> None:
    """An :class:`ExportError` for unknown export formats, or Parquet without pyarrow."""
    unknown = [name for name in formats if name not in ALL_FORMATS]
    if unknown:
        raise ExportError(
            f"Unknown export formats {unknown}; choose from {', '.join(ALL_FORMATS)}."
        )
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError(
                "Parquet needs pyarrow: pip install pyarrow (or napari-blastscope[all]), or "
                "leave parquet out of the formats (csv writes the same table)."
            ) from None


def _expected_outputs(folder: Path, slide: Slide, formats: Sequence[str]) -> list[Path]:
    """Every file the export of ``slide`` may write into ``folder`` (and ``slide.json``)."""
    paths = []
    for path in slide.fields:
        main = export_paths(folder, slide_stem(path))
        for name in (*formats, "run"):
            paths.append(main[name])
            if name in ("csv", "parquet"):
                paths.append(sidecar_path(main[name]))
            if name == "report":
                paths += report_plot_paths(main[name]).values()
    return [*paths, folder / MARKER_NAME]


def _read_every_field(
    slide: Slide, pixel_size_um: float | None, region: Region | None = None
) -> Steps[None]:
    """Open and decode every field, so an unreadable one fails the slide before any analysis."""
    for index, path in enumerate(slide.fields):
        yield Progress("checking fields", index, len(slide.fields), path.name)
        read_field(path, pixel_size_um, region=region)
    yield Progress("checking fields", len(slide.fields), len(slide.fields))


def _remove_obsolete(folder: Path, record: SlideRecord | None, written: list[Path]) -> int:
    """Delete the files an earlier record lists that this run did not write (a removed field,
    a format no longer asked for); returns how many."""
    if record is None:
        return 0
    kept = {path.name for path in written} | {MARKER_NAME}
    removed = 0
    for name in record.outputs:
        plain = bool(name) and Path(name).name == name and not name.startswith(".")
        if plain and name not in kept and (folder / name).is_file():
            (folder / name).unlink()
            removed += 1
    return removed


def slide_steps(
    slide: Slide,
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    pixel_size_um: float | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    overwrite: bool = False,
    resume: bool = False,
    flag: str = "overwrite=True",
    region: Region | None = None,
    geojson_shapes: str = "outline",
) -> Steps[SlideOutcome]:
    """Analyse every field of ``slide``, export each, pool one slide call and mark it done;
    ``region`` analyses only that rectangle of a whole slide (level-0 pixels; the GeoJSON is
    written in level-0 coordinates); ``geojson_shapes`` how the GeoJSON draws the cells
    (:data:`~blastscope.export.geojson_writer.GEOJSON_SHAPES`).

    Outputs go to ``out_dir/<slide_id>/``; the ``slide.json`` record (fields with their sha256,
    settings, pooled call, counts, outputs) is written last. First every field is read and the
    folder checked: an unreadable field, an unwritable folder or files that may not be replaced
    fail the slide before any analysis. Files of an unfinished earlier run (no valid
    ``slide.json``) are replaced; those of a finished one only with ``overwrite`` (``flag`` is
    how error messages name it). ``resume``: a slide whose record matches its fields and
    settings is not redone (status "skipped"); one whose record differs is redone, replacing its
    files. ``SlideOutcome.notes`` say why a slide was redone and what was cleaned up.
    """
    check_formats(formats)
    config = loaded(config or PipelineConfig())
    folder = slide_folder(out_dir, slide.slide_id)
    _check_field_names(slide)
    settings = slide_settings(config, pixel_size_um, formats, region, geojson_shapes)
    state = slide_state(folder, _field_hashes(slide), settings)
    if resume and not overwrite and state.up_to_date:
        return _recorded_outcome(slide, folder, state.record)
    may_replace = overwrite or resume or state.record is None
    notes = [f"redone: {state.reason}"] if state.reason and may_replace else []

    yield from _read_every_field(slide, pixel_size_um, region)
    check_writable(folder)
    if not may_replace:
        since = f"; since then {state.reason}" if state.reason else ""
        context = f" (written by an earlier run of slide {slide.slide_id}{since})"
        for path in _expected_outputs(folder, slide, formats):
            if path.exists():
                raise OutputExistsError(path, flag=flag, context=context)
    removed = remove_stale_temporaries(folder)
    if removed:
        notes.append(f"removed {len(removed)} temporary file(s) left by an interrupted run")

    marker = folder / MARKER_NAME
    tables, outputs, fields, classes = [], [], [], None
    for index, path in enumerate(slide.fields):
        yield Progress("fields", index, len(slide.fields), path.name)
        image_field = read_field(path, pixel_size_um, region=region)
        result = yield from analyse_steps(
            image_field.image,
            image_field.pixel_size_um,
            config,
            input_sha256=image_field.sha256,
        )
        result.notices[:0] = image_field.notices
        for notice in result.notices:  # shown by the CLI (stderr, --json) and the summary
            note = notice if len(slide.fields) == 1 else f"{path.name}: {notice}"
            if note not in notes:
                notes.append(note)
        result.provenance["input_file"] = str(path)
        if region is not None:  # as read: cut at the slide's edge
            result.provenance["region"] = {
                "x_y_width_height": image_field.region.as_text(),
                "offset_yx": [region.y, region.x],
                "coordinates": "level-0 pixels of the slide",
            }
        # from here on the folder no longer matches the old record
        marker.unlink(missing_ok=True)
        try:
            outputs += export_result(
                result,
                image_field.image,
                folder,
                stem=slide_stem(path),
                formats=formats,
                overwrite=may_replace,
                geojson_shapes=geojson_shapes,
            )
        except OutputExistsError as error:
            raise error.with_flag(flag) from None
        fields.append({"name": path.name, "sha256": image_field.sha256, "path": str(path)})
        tables.append(result.cells)
        if result.slide_call is not None:
            classes = result.slide_call.classes
    yield Progress("fields", len(slide.fields), len(slide.fields))
    obsolete = _remove_obsolete(folder, state.record, outputs)
    if obsolete:
        notes.append(f"removed {obsolete} file(s) of the earlier run that no longer belong")
    slide_call = None
    if classes is not None:
        slide_call = config.slide_call.call(tables, classes)
    names = [item["name"] for item in fields]
    cells = pd.concat(
        [table.assign(field=name) for table, name in zip(tables, names, strict=True)],
        ignore_index=True,
    )
    write_cohort_cells(out_dir, slide.slide_id, cells)
    counts = {
        "cells": len(cells),
        "nucleated": int(cells["is_nucleated"].sum()) if len(cells) else 0,
        "blasts": int(cells["is_blast"].sum()) if "is_blast" in cells and len(cells) else 0,
    }
    record = {
        "format": MARKER_FORMAT,
        "version": MARKER_VERSION,
        "slide_id": slide.slide_id,
        "fields": fields,
        "settings_key": settings_key(settings),
        "settings": settings,
        "counts": counts,
        "slide_call": slide_call.to_dict() if slide_call is not None else None,
        "outputs": [path.name for path in outputs],
    }
    with AtomicFiles(overwrite=True) as files:
        files.temporary(marker).write_text(
            dumps_json(record, where="the slide record"), encoding="utf-8"
        )
    return SlideOutcome(slide, "done", slide_call, counts, outputs, notes=notes)


def _recorded_outcome(slide: Slide, folder: Path, record: SlideRecord) -> SlideOutcome:
    outputs = [folder / name for name in record.outputs]
    return SlideOutcome(slide, "skipped", record.slide_call, dict(record.counts), outputs)


def finished_outcome(
    slide: Slide,
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    pixel_size_um: float | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> SlideOutcome | None:
    """The outcome an earlier run recorded for ``slide`` in ``out_dir`` when its fields (by
    sha256) and settings are the same now; else None (not finished, stale or damaged)."""
    folder = slide_folder(out_dir, slide.slide_id)
    settings = slide_settings(loaded(config or PipelineConfig()), pixel_size_um, formats)
    state = slide_state(folder, _field_hashes(slide), settings)
    return _recorded_outcome(slide, folder, state.record) if state.up_to_date else None


# --------------------------------------------------------------------------- many slides

# Errors that concern one slide (its file, its content, its outputs); others are bugs and raise.
SLIDE_ERRORS = (ImageInputError, SlideError, ExportError, ValueError, OSError)


def batch_steps(
    slides: list[Slide],
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    pixel_size_um: float | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    force: bool = False,
    flag: str = "force=True",
    tiled: bool = False,
    tile_px: int = DEFAULT_TILE_PX,
    cluster: Cluster | None = None,
    write_labels: bool = True,
    geojson_shapes: str = "outline",
) -> Steps[list[SlideOutcome]]:
    """Run :func:`slide_steps` over ``slides``; writes ``summary.csv`` (one row per slide).

    Slides finished in ``out_dir`` with the same fields and settings are skipped unless
    ``force`` (which also replaces their files); others are (re)done, with a note saying why.
    A slide that fails is recorded with its error and the batch goes on. ``flag`` is how error
    messages name ``force``. A whole-slide file (:func:`runs_tiled`) is analysed tile by tile
    (:func:`blastscope.wholeslide.whole_slide_steps`, resuming its tiles; on ``cluster``'s
    workers when given) into ``OUT/<slide>.tiled/`` (without ``labels.zarr`` when not
    ``write_labels``); ``geojson_shapes`` as in :func:`slide_steps`. With a ``cluster``,
    every slide of fields is one task on its workers (:func:`analyse_slide_task`; they write
    its folder, so ``out_dir`` must be one they share, which is checked first), run while the
    whole slides' tiles are; stopping the batch cancels the slides not done.
    """
    check_formats(formats)
    out_dir = check_writable(out_dir)
    summary = out_dir / SUMMARY_NAME
    if summary.is_dir():
        raise ExportError(
            f"{summary} is a folder, where the batch summary goes; move it away or choose "
            "another output folder."
        )
    remove_stale_temporaries(out_dir)
    config = loaded(config or PipelineConfig())
    check_shapes(geojson_shapes)
    options = {
        "pixel_size_um": pixel_size_um,
        "formats": formats,
        "force": force,
        "flag": flag,
        "geojson_shapes": geojson_shapes,
    }
    fields = [slide for slide in slides if not runs_tiled(slide, tiled)]
    tasks = {}
    if cluster is not None and fields:
        tasks = _submit_slides(cluster, fields, out_dir, config, options)
    outcomes: list[SlideOutcome] = []
    try:
        for index, slide in enumerate(slides):
            yield Progress("slides", index, len(slides), slide.slide_id)
            if slide in tasks:
                outcome = yield from _task_outcome(tasks.pop(slide), index, len(slides))
            else:
                outcome = yield from _slide_here(
                    slide, out_dir, config, options, tiled, tile_px, cluster, write_labels
                )
            outcomes.append(outcome)
    finally:
        if tasks:  # stopped early: the slides not started are cancelled
            cluster.client.cancel(list(tasks.values()))
    yield Progress("slides", len(slides), len(slides))
    write_summary(outcomes, summary)
    return outcomes


def _slide_here(
    slide: Slide,
    out_dir: Path,
    config: PipelineConfig,
    options: dict[str, Any],
    tiled: bool,
    tile_px: int,
    cluster: Cluster | None,
    write_labels: bool,
) -> Steps[SlideOutcome]:
    """One slide of a batch, driven from this process (a whole slide's tiles on ``cluster``
    when given); a failure that concerns the slide becomes a failed outcome."""
    try:
        if runs_tiled(slide, tiled):
            return (
                yield from _whole_slide_outcome(
                    slide,
                    out_dir,
                    config,
                    options["pixel_size_um"],
                    tile_px,
                    cluster,
                    options["force"],
                    write_labels,
                    options["geojson_shapes"],
                    options["flag"],
                )
            )
        return (yield from _field_slide_steps(slide, out_dir, config, options))
    except SLIDE_ERRORS as error:
        return _failed(slide, error)


def _field_slide_steps(
    slide: Slide, out_dir: Path, config: PipelineConfig, options: dict[str, Any]
) -> Steps[SlideOutcome]:
    return (
        yield from slide_steps(
            slide,
            out_dir,
            config,
            pixel_size_um=options["pixel_size_um"],
            formats=options["formats"],
            overwrite=options["force"],
            resume=True,
            flag=options["flag"],
            geojson_shapes=options["geojson_shapes"],
        )
    )


def _failed(slide: Slide, error: BaseException) -> SlideOutcome:
    message = str(error) or traceback.format_exception_only(error)[-1].strip()
    return SlideOutcome(slide, "failed", error=message)


def analyse_slide_task(
    slide: Slide,
    out_dir: Path,
    config: PipelineConfig,
    options: dict[str, Any],
    threads: int | None,
) -> SlideOutcome:
    """A slide of fields as one task on a dask worker: analysed and exported into
    ``out_dir/<slide>/`` by the worker (the output folder is shared), with the models this
    worker has loaded already and ``threads`` torch threads (None: the worker's own count)."""
    from dask.distributed import get_worker

    use_threads(threads)
    try:
        outcome = run_steps(_field_slide_steps(slide, out_dir, worker_config(config), options))
    except SLIDE_ERRORS as error:
        return _failed(slide, error)
    if outcome.status == "done":
        outcome.notes.append(f"analysed on dask worker {get_worker().address}")
    return outcome


def _submit_slides(
    cluster: Cluster,
    slides: list[Slide],
    out_dir: Path,
    config: PipelineConfig,
    options: dict[str, Any],
) -> dict[Slide, Any]:
    """Each slide of fields as a task on the cluster (after checking that every worker sees
    ``out_dir``), its paths absolute (a worker may run in another folder); the futures by
    slide."""
    out_dir = out_dir.absolute()
    check_workers_see(cluster, out_dir)
    client = cluster.client
    portable = client.scatter(portable_config(config), broadcast=True)
    return {
        slide: client.submit(
            analyse_slide_task,
            replace(slide, fields=tuple(path.absolute() for path in slide.fields)),
            out_dir,
            portable,
            options,
            cluster.threads,
            pure=False,
        )
        for slide in slides
    }


TASK_POLL_S = 0.2
"""How often the batch looks at a slide task it waits for (and so how soon Ctrl-C stops it)."""


def _task_outcome(future: Any, index: int, n_slides: int) -> Steps[SlideOutcome]:
    """The outcome of a slide task, yielding a Progress while it runs."""
    while not future.done():
        time.sleep(TASK_POLL_S)
        yield Progress("slides", index, n_slides, "on the cluster")
    return future.result()  # a bug on the worker is raised here, with its own message


def runs_tiled(slide: Slide, tiled: bool = False) -> bool:
    """Whether a batch analyses ``slide`` tile by tile: a one-file slide too large to read
    whole (:func:`blastscope.slide.is_whole_slide`), or with ``tiled`` any one-file TIFF or
    scanner slide (a PNG or JPEG field is always read whole)."""
    if len(slide.fields) != 1:
        return False
    path = slide.fields[0]
    return (tiled and path.name.lower().endswith(SLIDE_SUFFIXES)) or is_whole_slide(path)


def _whole_slide_outcome(
    slide: Slide,
    out_dir: Path,
    config: PipelineConfig,
    pixel_size_um: float | None,
    tile_px: int,
    cluster: Cluster | None,
    force: bool,
    write_labels: bool,
    geojson_shapes: str,
    flag: str,
) -> Steps[SlideOutcome]:
    """One whole slide of a batch, tile by tile; ``force`` (named ``flag``) redoes every tile
    and replaces a finished run of other settings."""
    whole = yield from whole_slide_steps(
        slide.fields[0],
        out_dir,
        config,
        pixel_size_um=pixel_size_um,
        tile_px=tile_px,
        cluster=cluster,
        restart=force,
        write_labels=write_labels,
        geojson_shapes=geojson_shapes,
        flag=flag,
    )
    return whole_slide_outcome(slide, whole)


def whole_slide_outcome(slide: Slide, whole: WholeSlideOutcome) -> SlideOutcome:
    """A finished whole slide as a batch's (and ``run --json``'s) outcome: its call, counts,
    files and a note of its tiles and area."""
    notes = [f"whole slide: {whole.tiles_text()}; {whole.area_mm2:.2f} mm² analysed"]
    outputs = sorted(path for path in whole.folder.iterdir() if path.is_file())
    return SlideOutcome(slide, "done", whole.slide_call, whole.counts, outputs, notes=notes)


def write_summary(outcomes: list[SlideOutcome], path: Path) -> Path:
    """The batch summary CSV: one row per slide (call, probabilities, counts, status, notes,
    error); text a spreadsheet would run as a formula is escaped with a leading quote."""
    table = pd.DataFrame([outcome.summary_row() for outcome in outcomes])
    for column in ("n_fields", "cells", "nucleated", "blasts", "blasts_pooled"):
        if column in table:
            table[column] = table[column].astype("Int64")
    with AtomicFiles(overwrite=True) as files:
        escape_text_columns(table).to_csv(files.temporary(path), index=False)
    return path

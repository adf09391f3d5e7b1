"""Exports of a :class:`~blastscope.result.SlideResult`: QuPath GeoJSON, CSV / Parquet tables,
a labels OME-TIFF, an overlay PNG, an HTML report and the provenance record ``run.json``.

:func:`export_result` writes every requested export of one result; the CLI and the Export widget
call it. Each file goes to a temporary file first and all are renamed into place together, so a
failure leaves no half-written export; an existing file is replaced only with
``overwrite=True``. The single-format writers (:func:`write_geojson`, :func:`write_cells_table`,
...) follow the same rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blastscope.export._atomic import AtomicFiles, ExportError, ensure_folder
from blastscope.export.geojson import (
    GeoJSONError,
    geojson_collection,
    read_geojson,
    slide_call_dict,
    write_collection,
    write_geojson,
)
from blastscope.export.images import (
    labels_tiff_bytes,
    overlay_rgb,
    png_bytes,
    read_labels_tiff,
    write_labels_tiff,
    write_overlay_png,
)
from blastscope.export.report import report_files, write_report
from blastscope.export.tables import read_cells_table, write_cells_table, write_table_files
from blastscope.jsonable import dumps_json
from blastscope.result import SlideResult, software_versions, utc_timestamp

__all__ = [
    "ALL_FORMATS",
    "DEFAULT_FORMATS",
    "ExportError",
    "GeoJSONError",
    "export_paths",
    "export_result",
    "overlay_rgb",
    "read_cells_table",
    "read_geojson",
    "read_labels_tiff",
    "run_record",
    "write_cells_table",
    "write_geojson",
    "write_labels_tiff",
    "write_overlay_png",
    "write_report",
    "write_run_json",
]

ALL_FORMATS = ("geojson", "csv", "parquet", "labels", "overlay", "report")
DEFAULT_FORMATS = ("geojson", "csv", "labels", "overlay", "report")
"""Parquet is left out of the default because it needs the optional pyarrow."""

RUN_FORMAT_NAME = "blastscope-run"


def export_paths(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """The main file of each format (and ``run``) for ``stem`` in ``out_dir``.

    Tables get a sidecar ``<table>.json``; the report gets its PNG plots beside it.
    """
    out_dir = Path(out_dir)
    return {
        "geojson": out_dir / f"{stem}.geojson",
        "csv": out_dir / f"{stem}_cells.csv",
        "parquet": out_dir / f"{stem}_cells.parquet",
        "labels": out_dir / f"{stem}_labels.ome.tif",
        "overlay": out_dir / f"{stem}_overlay.png",
        "report": out_dir / f"{stem}_report.html",
        "run": out_dir / f"{stem}_run.json",
    }


def run_record(
    result: SlideResult, outputs: Iterable[tuple[Path, Path]] = (), *, stem: str | None = None
) -> dict[str, Any]:
    """The provenance record of an export (JSON-ready).

    Versions of the software, the result's provenance (parameters, model hashes, the input's
    sha256), the counts and slide call, the notices, and each output's name, size and sha256
    (``outputs`` are ``(name as written, file holding its bytes)`` pairs).
    """
    files = []
    for target, source in outputs:
        data = Path(source).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        files.append({"file": Path(target).name, "bytes": len(data), "sha256": digest})
    provenance = result.provenance or {}
    return {
        "format": RUN_FORMAT_NAME,
        "version": 1,
        "stem": stem,
        "exported": utc_timestamp(),
        "software": software_versions(),
        "input_sha256": provenance.get("input_sha256"),
        "pixel_size_um": result.pixel_size_um,
        "image_shape": list(np.shape(result.labels)),
        "counts": {
            "cells": result.n_cells,
            "nucleated": result.n_nucleated,
            "blasts": result.n_blasts,
        },
        "slide_call": slide_call_dict(result.slide_call),
        "provenance": provenance,
        "notices": list(result.notices),
        "outputs": files,
    }


def write_run_json(
    path: str | Path,
    result: SlideResult,
    outputs: Sequence[str | Path] = (),
    *,
    overwrite: bool = False,
) -> Path:
    """Write the provenance record (see :func:`run_record`) of ``result``; ``outputs`` are the
    export files it describes (hashed)."""
    record = run_record(result, [(Path(item), Path(item)) for item in outputs])
    text = dumps_json(record, where="the provenance")
    with AtomicFiles(overwrite=overwrite) as files:
        files.temporary(path).write_text(text, encoding="utf-8")
    return Path(path)


def export_result(
    result: SlideResult,
    image: np.ndarray | None,
    out_dir: str | Path,
    *,
    stem: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    include_non_nucleated: bool = False,
    threshold: float | None = None,
    geojson_metadata: Mapping[str, Any] | None = None,
    geojson_shapes: str = "outline",
) -> list[Path]:
    """Write the requested exports of one result into ``out_dir``; returns the paths written.

    ``image`` (Y, X, 3) is the analysed field (needed for ``overlay`` and ``report``); ``stem``
    names the files (see :func:`export_paths`); ``formats`` any of :data:`ALL_FORMATS`; a
    ``<stem>_run.json`` provenance record is always written. ``include_non_nucleated`` puts red
    cells and platelets into the GeoJSON too; ``threshold`` is the blast threshold drawn in the
    report (default: from the provenance); ``geojson_metadata`` (JSON-ready) goes into the
    GeoJSON's ``blastscope`` member (the napari Export dock records the cells layer's scale and
    translate there); ``geojson_shapes`` draws its cells as outlines, simplified outlines or
    centroids (:data:`~blastscope.export.geojson_writer.GEOJSON_SHAPES`). All files appear
    together or none does.
    """
    if not isinstance(result, SlideResult):
        raise ExportError(f"result must be a SlideResult, got {type(result).__name__}.")
    stem = str(stem)
    if not stem or Path(stem).name != stem or stem.startswith("."):
        raise ExportError(
            f"stem must be a plain file name without folders (e.g. the image's name), got {stem!r}."
        )
    unknown = [name for name in formats if name not in ALL_FORMATS]
    if unknown:
        raise ExportError(
            f"Unknown export formats {unknown}; choose from {', '.join(ALL_FORMATS)}."
        )
    if image is None and {"overlay", "report"} & set(formats):
        raise ExportError("The overlay and the report need the analysed image; pass it as image.")
    paths = export_paths(ensure_folder(out_dir), stem)
    provenance = result.provenance or {}
    with AtomicFiles(overwrite=overwrite) as files:
        if "geojson" in formats:
            collection = geojson_collection(
                result.labels,
                result.cells,
                pixel_size_um=result.pixel_size_um,
                image_sha256=provenance.get("input_sha256"),
                slide_call=result.slide_call,
                include_non_nucleated=include_non_nucleated,
                provenance=provenance,
                metadata=geojson_metadata,
                shapes=geojson_shapes,
                offset_yx=tuple(provenance.get("region", {}).get("offset_yx", (0, 0))),
            )
            write_collection(files, paths["geojson"], collection)
        for table_format in ("csv", "parquet"):
            if table_format in formats:
                write_table_files(
                    files,
                    paths[table_format],
                    result.cells,
                    result.slide_call,
                    pixel_size_um=result.pixel_size_um,
                    provenance=provenance,
                )
        if "labels" in formats:
            data = labels_tiff_bytes(result.labels, result.pixel_size_um)
            files.temporary(paths["labels"]).write_bytes(data)
        if "overlay" in formats:
            data = png_bytes(overlay_rgb(image, result.labels, result.cells))
            files.temporary(paths["overlay"]).write_bytes(data)
        if "report" in formats:
            report = report_files(paths["report"], result, image, threshold=threshold, title=stem)
            for target, data in report.items():
                files.temporary(target).write_bytes(data)
        record = run_record(result, files.pending, stem=stem)
        files.temporary(paths["run"]).write_text(
            dumps_json(record, where="the provenance"), encoding="utf-8"
        )
        written = [target for target, _ in files.pending]
    return written

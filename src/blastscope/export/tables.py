"""The cells table as CSV or Parquet, with a sidecar JSON that makes the round trip exact.

``cells.csv`` (or ``.parquet``) holds the table; ``cells.csv.json`` beside it holds the columns
and their dtypes (a CSV has none: the nullable boolean ``blast_override`` would come back as
text), the slide call and the provenance. :func:`read_cells_table` reads both back to the same
table, dtypes included. A CSV keeps the shortest text that reads back to the same float, writes
missing values as empty fields, and cannot tell an empty string from a missing one in text
columns (both read back as ``""``). Text a spreadsheet would run as a formula (``=...``,
``+...``, ``-...``, ``@...``) is written with a quote in front (see
:mod:`blastscope.export._spreadsheet`; the sidecar's ``text_escape`` says so) and read back
without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from blastscope.export._atomic import AtomicFiles, ExportError
from blastscope.export._columns import column_kind, column_specs, restore_column
from blastscope.export._spreadsheet import ESCAPE_NAME, escape_text_columns, unescape_cell
from blastscope.export.geojson import slide_call_dict
from blastscope.jsonable import dumps_json, jsonable

TABLE_SUFFIXES = (".csv", ".parquet")
FORMAT_NAME = "blastscope-cells-table"
FORMAT_VERSION = 1


def sidecar_path(path: str | Path) -> Path:
    """The sidecar JSON of a table file: ``cells.csv`` -> ``cells.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_cells_table(
    path: str | Path,
    cells: pd.DataFrame,
    slide_call: Any = None,
    *,
    pixel_size_um: float | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the cells table as CSV or Parquet (by suffix) and its sidecar JSON.

    ``slide_call`` (a SlideCall or its dict), ``pixel_size_um`` (µm per pixel) and
    ``provenance`` go into the sidecar. Returns ``[table path, sidecar path]``.
    """
    with AtomicFiles(overwrite=overwrite) as files:
        write_table_files(
            files,
            path,
            cells,
            slide_call,
            pixel_size_um=pixel_size_um,
            provenance=provenance,
        )
    return [Path(path), sidecar_path(path)]


def write_table_files(
    files: AtomicFiles,
    path: str | Path,
    cells: pd.DataFrame,
    slide_call: Any = None,
    *,
    pixel_size_um: float | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Write a table and its sidecar into a pending set of atomic files."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ExportError(
            f"Cannot tell the table format from {path.name!r}: name the file *.csv or *.parquet."
        )
    if not isinstance(cells, pd.DataFrame):
        raise ExportError(
            f"cells must be the cells table (a pandas DataFrame), got {type(cells).__name__}."
        )
    table = cells.reset_index(drop=True)
    specs = column_specs(table)
    sidecar = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "table": path.name,
        "n_rows": len(table),
        "columns": [list(spec) for spec in specs],
        "pixel_size_um": pixel_size_um,
        "slide_call": slide_call_dict(slide_call),
        "provenance": jsonable(provenance or {}, "provenance"),
    }
    if suffix == ".csv":
        sidecar["text_escape"] = ESCAPE_NAME
    sidecar_text = dumps_json(sidecar, where="the table's sidecar")
    if suffix == ".csv":
        escape_text_columns(table).to_csv(files.temporary(path), index=False)
    else:
        _require_pyarrow()
        table.to_parquet(files.temporary(path), index=False, engine="pyarrow")
    files.temporary(sidecar_path(path)).write_text(sidecar_text, encoding="utf-8")


def read_cells_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table written by :func:`write_cells_table`: (cells, sidecar dict).

    Without a sidecar, a CSV is read with pandas' type guessing and the sidecar dict is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"No table at {path}: check the path.")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ExportError(f"{path.name} is not a .csv or .parquet table.")
    sidecar_file = sidecar_path(path)
    sidecar = json.loads(sidecar_file.read_text(encoding="utf-8")) if sidecar_file.is_file() else {}
    specs = [tuple(spec) for spec in sidecar.get("columns", [])]
    if suffix == ".parquet":
        _require_pyarrow()
        table = pd.read_parquet(path, engine="pyarrow")
        if specs:
            table = pd.DataFrame(
                {name: table[name].astype(dtype) for name, dtype in specs},
                columns=[name for name, _ in specs],
            )
        return table, sidecar
    if not specs:
        return pd.read_csv(path), sidecar
    text = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    escaped = sidecar.get("text_escape") == ESCAPE_NAME
    if escaped:
        text.columns = [unescape_cell(name) for name in text.columns]
    missing = [name for name, _ in specs if name not in text]
    if missing:
        raise ExportError(
            f"{path.name} lacks the columns {missing} that its sidecar lists; the table and "
            f"{sidecar_file.name} do not belong together."
        )
    columns = {name: _parse(name, text[name].tolist(), dtype, escaped) for name, dtype in specs}
    return pd.DataFrame(columns, columns=[name for name, _ in specs]), sidecar


def _parse(name: str, values: list[str], dtype: str, escaped: bool = False) -> pd.Series:
    """A CSV column (text) back to ``dtype``; empty fields are missing values; ``escaped``: text
    was written spreadsheet-safe (a quote in front of formulas)."""
    kind = column_kind(name, dtype)
    if kind == "text":
        texts = [unescape_cell(value) for value in values] if escaped else values
        return restore_column(name, texts, dtype)
    if kind in ("bool", "boolean"):
        truth = {"True": True, "False": False, "": None}
        return restore_column(name, [truth[value] for value in values], dtype)
    if kind in ("int", "nullable_int"):
        return restore_column(name, [int(value) if value else None for value in values], dtype)
    return restore_column(name, [float(value) if value else None for value in values], dtype)


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise ExportError(
            "Parquet needs pyarrow: pip install pyarrow (or napari-blastscope[all]), or write "
            "a .csv table instead."
        ) from error

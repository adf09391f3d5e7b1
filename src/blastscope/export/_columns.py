"""Cells-table columns as plain values and back, dtypes included, for the text formats.

A column's dtype is recorded as its pandas name (``"float64"``, ``"bool"``, ``"boolean"``,
``"Int64"``, ``"object"``, ...). Values travel as Python numbers, booleans and strings with
``None`` for a missing one, and :func:`restore_column` rebuilds the column with the same dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from blastscope.export._atomic import ExportError

ColumnKind = Literal["bool", "boolean", "int", "nullable_int", "float", "text"]


def column_kind(name: str, dtype: object) -> ColumnKind:
    """What a column holds, from its dtype; an :class:`ExportError` for dtypes not supported."""
    dtype = pd.api.types.pandas_dtype(dtype)
    if dtype == np.bool_:
        return "bool"
    if isinstance(dtype, pd.BooleanDtype):
        return "boolean"
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_integer_dtype(dtype):
        return "nullable_int"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if dtype == np.dtype(object) or isinstance(dtype, pd.StringDtype):
        return "text"
    raise ExportError(
        f"Column {name!r} has dtype {dtype}, which the exports cannot store; convert it to "
        "numbers, booleans or strings (e.g. cells[name].astype(str)) first."
    )


def column_specs(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """``[(name, dtype name), ...]`` of every column, checked to be storable."""
    names = [str(name) for name in cells.columns]
    if len(set(names)) != len(names):
        raise ExportError("The cells table has duplicate column names; rename them first.")
    specs = []
    for name, dtype in zip(names, cells.dtypes, strict=True):
        column_kind(name, dtype)
        specs.append((name, str(dtype)))
    return specs


def plain_values(column: pd.Series) -> list[object]:
    """The column's values as Python bools, ints, floats or strings; ``None`` where missing.

    Floats that are NaN or infinite count as missing (JSON has no such numbers).
    """
    kind = column_kind(str(column.name), column.dtype)
    if kind == "bool":
        return [bool(value) for value in column.to_numpy()]
    if kind == "float":
        return [float(value) if math.isfinite(value) else None for value in column.to_numpy()]
    if kind == "int":
        return [int(value) for value in column.to_numpy()]
    values = column.astype(object).to_numpy()
    if kind == "boolean":
        return [None if value is pd.NA else bool(value) for value in values]
    if kind == "nullable_int":
        return [None if value is pd.NA else int(value) for value in values]
    return [None if _missing(value) else str(value) for value in values]


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def restore_column(name: str, values: Sequence[object], dtype: str) -> pd.Series:
    """A column of ``dtype`` from plain values (``None`` = missing).

    A missing value in a column whose dtype cannot hold one widens it: ``bool`` to ``boolean``,
    integers to ``Int64``; floats take NaN.
    """
    kind = column_kind(name, dtype)
    missing = any(value is None for value in values)
    if kind == "float":
        array = np.array([np.nan if value is None else value for value in values], dtype=float)
        return pd.Series(array.astype(dtype), name=name)
    if kind in ("bool", "boolean"):
        if kind == "bool" and not missing:
            return pd.Series(np.array(values, dtype=bool), name=name)
        return pd.Series(pd.array(list(values), dtype="boolean"), name=name)
    if kind in ("int", "nullable_int"):
        if kind == "int" and not missing:
            return pd.Series(np.array(values, dtype=np.int64).astype(dtype), name=name)
        nullable = dtype if kind == "nullable_int" else "Int64"
        return pd.Series(pd.array(list(values), dtype=nullable), name=name)
    if pd.api.types.pandas_dtype(dtype) == np.dtype(object):
        return pd.Series(np.array(list(values), dtype=object), name=name, dtype=object)
    return pd.Series(pd.array(list(values), dtype=dtype), name=name)

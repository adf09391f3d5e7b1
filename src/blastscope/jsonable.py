"""Plain JSON values from what the pipeline holds: the one JSON sanitiser.

Everything blastscope writes or prints as JSON (exports, sidecars, slide records, the slide
call's ``to_dict``, the CLI's ``--json`` summaries, training metrics, the docks' saved settings)
goes through :func:`jsonable`, so that numpy numbers, paths and NaN are written alike
everywhere and the JSON is strict (no ``NaN`` tokens).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.errors import ExportError


def jsonable(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON types: numpy numbers and arrays, paths, dataclasses and objects
    with ``to_dict()`` converted; tuples become lists; NaN, infinities and ``pd.NA`` become
    ``None``.

    Anything else raises an :class:`~blastscope.errors.ExportError` naming where in ``value``
    it sits.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if value is pd.NA:
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), where)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict(), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value), where)
    raise ExportError(
        f"Cannot write {where} to JSON: a {type(value).__name__} ({value!r:.80}) is not a number, "
        "string, list or dict; convert it (e.g. str(value)) before exporting."
    )


def dumps_json(value: Any, *, indent: int | None = 2, where: str = "value") -> str:
    """Strict JSON text of ``value`` (see :func:`jsonable`; never NaN)."""
    return json.dumps(jsonable(value, where), indent=indent, ensure_ascii=False, allow_nan=False)

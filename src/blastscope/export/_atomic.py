"""All-or-nothing file writes and strict JSON for the exports.

Every export writes to a hidden temporary file in its target's folder and renames it into place
(``os.replace``) only once every file of the export is complete, so a failure leaves no
half-written file, and an existing file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class ExportError(ValueError):
    """An export that cannot be written; the message says why and what to do."""


class AtomicFiles:
    """A set of files written all-or-nothing.

    ``temporary(path)`` checks the target and returns a temporary path beside it to write to;
    ``commit()`` renames every temporary file onto its target; ``discard()`` removes them all.
    Use it as a context manager: it commits on success and discards on an exception.
    """

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []

    def temporary(self, path: str | Path) -> Path:
        """A new temporary file beside ``path``, to be renamed onto ``path`` at commit."""
        target = Path(path)
        if target.is_dir():
            raise ExportError(f"{target} is a folder; give a file name to write to.")
        if target.exists() and not self.overwrite:
            raise ExportError(
                f"{target} already exists; pass overwrite=True to replace it, or choose another "
                "output folder or name."
            )
        if any(target == pending for pending, _ in self._pending):
            raise ExportError(f"{target} is written twice by the same export; use distinct names.")
        folder = ensure_folder(target.parent)
        temporary = folder / f".{target.name}.{uuid.uuid4().hex[:12]}.part"
        try:
            descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except OSError as error:
            raise ExportError(
                f"Cannot write in the output folder {folder} ({error.strerror}); choose a folder "
                "you can write to."
            ) from error
        os.close(descriptor)
        self._pending.append((target, temporary))
        return temporary

    @property
    def pending(self) -> list[tuple[Path, Path]]:
        """``(target, temporary file)`` of every file written so far, in order."""
        return list(self._pending)

    def commit(self) -> list[Path]:
        """Rename every temporary file onto its target; returns the targets in order."""
        written = []
        try:
            for target, temporary in self._pending:
                os.replace(temporary, target)
                written.append(target)
        finally:
            self.discard()
        return written

    def discard(self) -> None:
        """Remove the temporary files not yet renamed."""
        for _, temporary in self._pending:
            temporary.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is None:
            self.commit()
        else:
            self.discard()


@contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Write one file atomically: yields a temporary path; renamed onto ``path`` on success."""
    with AtomicFiles(overwrite=overwrite) as files:
        yield files.temporary(path)


def ensure_folder(folder: str | Path) -> Path:
    """``folder``, created with its parents if missing; an :class:`ExportError` if impossible."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ExportError(
            f"Cannot create the output folder {folder} ({reason}); choose a folder you can write "
            "to (a path whose parents are folders, not files)."
        ) from error
    return folder


def jsonable(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON types: numpy numbers and arrays, paths, dataclasses and objects
    with ``to_dict()`` converted; NaN, infinities and ``pd.NA`` become ``None``.

    Anything else raises an :class:`ExportError` naming where in ``value`` it sits.
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

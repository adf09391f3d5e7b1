"""The cells under review: one field's result with the reviewer's blast threshold, overrides
(and their audit), slide-call settings, calls, counts and the slide-call preview.

The model is headless (no Qt, no napari): the docks are views of it, the CLI and the tests drive
it directly. Every fast change (threshold, override, pooling) is answered from per-cell arrays
(:mod:`blastscope.calls`) with no inference; :meth:`Review.exact` gives the full
:class:`~blastscope.result.SlideResult` (bootstrap interval included) that exports start from,
with the audit of manual overrides in ``provenance["review"]``. A review is saved to a folder
(:func:`save_review`) and reopened (:func:`load_review`) with its labels, cells, threshold,
overrides, audit and call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.calls import (
    NO_OVERRIDE,
    blast_calls,
    mutation_calls,
    override_codes,
    override_column,
)
from blastscope.errors import BlastscopeError
from blastscope.export._atomic import AtomicFiles
from blastscope.export.tables import read_cells_table, write_table_files
from blastscope.jsonable import dumps_json
from blastscope.pipeline import SlideCallSettings, rethreshold
from blastscope.result import SlideResult, utc_timestamp
from blastscope.slide_call import SlideCall

REVIEW_FORMAT = "blastscope-review"
REVIEW_FORMAT_VERSION = 1
REVIEW_FILE = "review.json"
LABELS_FILE = "labels.npz"
CELLS_FILE = "cells.csv"


class ReviewError(BlastscopeError):
    """A review action or file that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class OverrideRecord:
    """One manual change of a cell's blast call: ``before`` / ``after`` are True (blast),
    False (non-blast) or None (the model's call); ``action`` is "set" or "undo"."""

    label: int
    before: bool | None
    after: bool | None
    p_blast: float | None
    threshold: float | None
    time: str
    action: str = "set"


def _code(value: bool | None) -> int:
    return NO_OVERRIDE if value is None else int(bool(value))


def _value(code: int) -> bool | None:
    return None if code < 0 else bool(code == 1)


class Review:
    """See the module text. ``result`` is the exact result the review starts from."""

    def __init__(
        self,
        result: SlideResult,
        *,
        threshold: float | None = None,
        settings: SlideCallSettings | None = None,
    ) -> None:
        cells = result.cells
        self.result = result
        self.labels = cells["label"].to_numpy(np.int64)
        self.nucleated = cells["is_nucleated"].to_numpy(bool)
        self.p_blast = cells["p_blast"].to_numpy(np.float64) if "p_blast" in cells else None
        self.override = override_codes(cells.get("blast_override"), len(cells))
        self.classes: tuple[str, ...] = (
            tuple(result.slide_call.classes) if result.slide_call is not None else ()
        )
        columns = [f"p_{name}" for name in self.classes]
        has_columns = bool(self.classes) and all(column in cells for column in columns)
        self.probabilities = cells[columns].to_numpy(np.float64) if has_columns else None
        recorded = result.provenance.get("blast", {}).get("threshold")
        self.threshold = threshold if threshold is not None else recorded
        if self.classified and self.threshold is None:
            raise ReviewError(
                "The result has blast probabilities but no threshold; give one (0 to 1)."
            )
        call = result.slide_call
        self.settings = settings or (
            SlideCallSettings(call.pooling, call.min_blasts, call.min_probability)
            if call is not None
            else None
        )
        self.audit: list[OverrideRecord] = list(_recorded_audit(result))
        self._rows = {int(label): row for row, label in enumerate(self.labels)}

    # ----------------------------------------------------------------- state
    @property
    def classified(self) -> bool:
        """Whether the cells have blast probabilities."""
        return self.p_blast is not None

    def row_of(self, label: int) -> int | None:
        """The row of the cells table of cell ``label``, else None."""
        return self._rows.get(int(label))

    def calls(self) -> tuple[np.ndarray, np.ndarray]:
        """(``blast_call``, ``is_blast``) per row at the current threshold and overrides."""
        self._require_classified()
        return blast_calls(self.p_blast, self.threshold, self.override)

    def mutation_calls(self, is_blast: np.ndarray | None = None) -> np.ndarray | None:
        """``mutation_call`` per row (None before the mutation stage ran)."""
        if self.probabilities is None:
            return None
        if is_blast is None:
            is_blast = self.calls()[1]
        return mutation_calls(self.probabilities, self.classes, is_blast)

    def counts(self) -> dict[str, int]:
        """Cells, nucleated cells and blasts (with the current threshold and overrides)."""
        blasts = int(self.calls()[1].sum()) if self.classified else 0
        return {"cells": len(self.labels), "nucleated": int(self.nucleated.sum()), "blasts": blasts}

    def overridden(self) -> dict[int, bool]:
        """The cells the reviewer called by hand: label -> True (blast) / False."""
        rows = np.flatnonzero(self.override >= 0)
        return {int(self.labels[row]): bool(self.override[row] == 1) for row in rows}

    def snapshot(self) -> Review:
        """A copy whose later changes do not reach this review (for a worker thread)."""
        copy = object.__new__(Review)
        copy.__dict__.update(self.__dict__)
        copy.override = self.override.copy()
        copy.audit = list(self.audit)
        return copy

    # ----------------------------------------------------------------- changes
    def set_threshold(self, threshold: float) -> None:
        """Call blasts at ``threshold`` (0 to 1); no inference."""
        self._require_classified()
        if isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
            raise ReviewError(f"A blast threshold is between 0 and 1, not {threshold!r}.")
        self.threshold = float(threshold)

    def set_settings(self, settings: SlideCallSettings) -> None:
        """Pool the slide call with other settings (pooling, minimum blasts, probability)."""
        self.settings = settings

    def set_override(self, label: int, value: bool | None, *, time: str | None = None) -> None:
        """Call cell ``label`` a blast (True) or a non-blast (False) by hand, or give it back to
        the model (None); recorded in :attr:`audit`."""
        self._require_classified()
        row = self.row_of(label)
        if row is None:
            raise ReviewError(
                f"Cell {label} is not in the cells table; click a cell of the cells layer."
            )
        self._change(row, value, "set", time)

    def undo_override(self, *, time: str | None = None) -> OverrideRecord | None:
        """Undo the last manual change that is not undone yet (recorded as an "undo" in the
        audit); returns the change undone, None when there is none."""
        undone = 0
        for record in reversed(self.audit):
            if record.action == "undo":
                undone += 1
                continue
            if undone:
                undone -= 1
                continue
            row = self.row_of(record.label)
            if row is not None:
                self._change(row, record.before, "undo", time)
            else:  # the cell is gone (edited away): the change is undone with it
                self.audit.append(
                    OverrideRecord(
                        label=record.label,
                        before=record.after,
                        after=None,
                        p_blast=None,
                        threshold=self.threshold,
                        time=time or utc_timestamp(),
                        action="undo",
                    )
                )
            return record
        return None

    def _change(self, row: int, value: bool | None, action: str, time: str | None) -> None:
        before = _value(int(self.override[row]))
        self.override[row] = _code(value)
        p_blast = float(self.p_blast[row]) if np.isfinite(self.p_blast[row]) else None
        self.audit.append(
            OverrideRecord(
                label=int(self.labels[row]),
                before=before,
                after=value,
                p_blast=p_blast,
                threshold=self.threshold,
                time=time or utc_timestamp(),
                action=action,
            )
        )

    # ----------------------------------------------------------------- review queue
    def uncertain_labels(self) -> list[int]:
        """Nucleated cells the reviewer has not called, nearest the threshold first."""
        if not self.classified:
            return []
        open_rows = np.flatnonzero(self.nucleated & np.isfinite(self.p_blast) & (self.override < 0))
        distance = np.abs(self.p_blast[open_rows] - self.threshold)
        order = np.argsort(distance, kind="stable")
        return [int(label) for label in self.labels[open_rows[order]]]

    def next_uncertain(self, after: int = 0) -> int | None:
        """The next cell to review after cell ``after`` in :meth:`uncertain_labels` order (the
        first when ``after`` is not in the queue); None when none is left."""
        queue = self.uncertain_labels()
        if not queue:
            return None
        if after in queue:
            position = queue.index(after) + 1
            return queue[position] if position < len(queue) else None
        return queue[0]

    # ----------------------------------------------------------------- slide call
    def preview_call(self) -> SlideCall | None:
        """The slide call at the current state without its bootstrap interval (fast)."""
        if self.probabilities is None or self.settings is None or not self.classified:
            return None
        is_blast = self.calls()[1]
        rows = self.nucleated | is_blast  # the only rows the call counts or pools
        table = {"is_nucleated": self.nucleated[rows], "is_blast": is_blast[rows]}
        for index, name in enumerate(self.classes):
            table[f"p_{name}"] = self.probabilities[rows, index]
        return self.settings.call(pd.DataFrame(table), self.classes, n_bootstrap=1)

    def exact(self) -> SlideResult:
        """The full result at the current state (calls, slide call with its interval), with
        the overrides in ``blast_override`` and their audit in ``provenance["review"]``."""
        if not self.classified:
            return self.result
        cells = self.result.cells.copy()
        cells["blast_override"] = override_column(self.override)
        exact = rethreshold(replace(self.result, cells=cells), self.threshold, self.settings)
        provenance = {**exact.provenance, "review": self.audit_record()}
        return replace(exact, provenance=provenance)

    def audit_record(self) -> dict[str, Any]:
        """The review's record for provenance, exports and the report."""
        return {
            "threshold": self.threshold,
            "overridden_cells": len(self.overridden()),
            "overrides": [asdict(record) for record in self.audit],
        }

    def _require_classified(self) -> None:
        if not self.classified:
            raise ReviewError("Classify the cells first: no cell has a blast probability.")


def _recorded_audit(result: SlideResult) -> list[OverrideRecord]:
    records = result.provenance.get("review", {}).get("overrides", [])
    try:
        return [OverrideRecord(**record) for record in records]
    except TypeError as error:
        raise ReviewError(f"The recorded override audit is damaged ({error}).") from error


# --------------------------------------------------------------------- files
def save_review(
    review: Review,
    folder: str | Path,
    *,
    overwrite: bool = False,
    viewer: dict[str, Any] | None = None,
) -> Path:
    """Write ``review`` to ``folder`` (``review.json``, ``labels.npz``, ``cells.csv`` and its
    sidecar), all or nothing; returns the folder. ``viewer``: how a viewer showed the cells
    (image name, scale, translate), kept for reopening. Reopen it with :func:`load_review`."""
    folder = Path(folder)
    exact = review.exact()
    record = {
        "format": REVIEW_FORMAT,
        "format_version": REVIEW_FORMAT_VERSION,
        "saved": utc_timestamp(),
        "viewer": viewer or {},
        "pixel_size_um": exact.pixel_size_um,
        "threshold": review.threshold,
        "slide_call_settings": asdict(review.settings) if review.settings else None,
        "classes": list(review.classes),
        "slide_call": exact.slide_call.to_dict() if exact.slide_call is not None else None,
        "provenance": exact.provenance,
        "notices": exact.notices,
    }
    with AtomicFiles(overwrite=overwrite) as files:
        with open(files.temporary(folder / LABELS_FILE), "wb") as handle:
            np.savez_compressed(handle, labels=exact.labels)
        write_table_files(files, folder / CELLS_FILE, exact.cells)
        files.temporary(folder / REVIEW_FILE).write_text(
            dumps_json(record, where="the review"), encoding="utf-8"
        )
    return folder


def load_review(folder: str | Path) -> Review:
    """Reopen a review saved by :func:`save_review`: labels, cells, threshold, overrides, audit
    and the slide call as they were saved (the viewer record in :func:`review_viewer`)."""
    folder = Path(folder)
    path = folder / REVIEW_FILE
    if not path.is_file():
        raise ReviewError(f"No {REVIEW_FILE} in {folder}: choose a folder written by Save review.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != REVIEW_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
        with np.load(folder / LABELS_FILE) as saved:
            labels = saved["labels"]
        cells, _ = read_cells_table(folder / CELLS_FILE)
        settings = record["slide_call_settings"]
        settings = SlideCallSettings(**settings) if settings else None
        classes = tuple(record["classes"])
        pixel_size_um = float(record["pixel_size_um"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ReviewError(
            f"The review in {folder} cannot be read ({error}); save the review again."
        ) from error
    if labels.ndim != 2 or set(np.unique(labels[labels > 0])) != set(cells["label"]):
        raise ReviewError(
            f"The labels and the cells table in {folder} do not match; save the review again."
        )
    slide_call = None
    if classes and settings is not None:
        slide_call = settings.call(cells, classes)
    result = SlideResult(
        labels=labels,
        cells=cells,
        pixel_size_um=pixel_size_um,
        slide_call=slide_call,
        provenance=record.get("provenance", {}),
        notices=list(record.get("notices", [])),
    )
    return Review(result, threshold=record.get("threshold"), settings=settings)


def review_viewer(folder: str | Path) -> dict[str, Any]:
    """How a viewer showed the saved review's cells (image name, scale, translate); {} when
    not recorded."""
    try:
        record = json.loads((Path(folder) / REVIEW_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReviewError(f"The review in {folder} cannot be read ({error}).") from error
    viewer = record.get("viewer")
    return viewer if isinstance(viewer, dict) else {}

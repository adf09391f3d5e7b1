"""Batched cell classification: blast probabilities and mutation-class probabilities per cell.

Both stages cut the bundle's crops (a fixed physical window resampled to the bundle's pixel size,
:mod:`blastscope.crops`) straight onto the device in batches, run the network under
``torch.inference_mode`` (autocast bf16/fp16 on CUDA) and write the probabilities into a copy of
the cells table (columns in ``docs/architecture.md``). They are generators of
:class:`~blastscope.progress.Progress` events (one per batch; closing the generator stops within
one batch) that return the new table; drive them with :func:`blastscope.progress.run_steps`.

:func:`apply_blast_threshold` recomputes the blast calls from the stored ``p_blast`` without the
network (a threshold slider runs no inference).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Generator

import numpy as np
import pandas as pd
import torch

from blastscope.calls import blast_calls, mutation_calls, override_codes, override_column
from blastscope.classes import mutation_classes_of
from blastscope.crops import CropCutter
from blastscope.devices import resolve_device
from blastscope.errors import BlastscopeError
from blastscope.field_statistics import FieldStatistics
from blastscope.models.classifier import Classifier
from blastscope.progress import Progress
from blastscope.stain import normalise_to_cells

CELL_COLUMNS = ("label", "centroid_y", "centroid_x", "is_nucleated")
DEFAULT_BATCH_SIZE = 256
SCORED_CELLS = ("blasts", "nucleated")


class PredictionError(BlastscopeError):
    """Inputs the classifiers cannot run on; the message says what to change."""


def mutation_column(class_name: str) -> str:
    """The cells-table column of a mutation class's probability, e.g. ``p_NPM1``."""
    return f"p_{class_name}"


def mutation_columns(cells: pd.DataFrame) -> list[str]:
    """The columns the mutation model wrote into ``cells``: ``p_<class>`` and ``mutation_call``."""
    scored = [mutation_column(name) for name in mutation_classes_of(cells.columns)]
    return [column for column in cells.columns if column == "mutation_call" or column in scored]


def _check_cells(cells: pd.DataFrame, needed: tuple[str, ...], hint: str) -> None:
    if not isinstance(cells, pd.DataFrame):
        raise PredictionError(
            f"cells must be a pandas DataFrame (the cells table), got {type(cells).__name__}."
        )
    missing = [column for column in needed if column not in cells.columns]
    if missing:
        raise PredictionError(f"The cells table lacks {', '.join(missing)}; {hint}")


def _check_threshold(threshold: float) -> float:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0 <= threshold <= 1
    ):
        raise PredictionError(
            f"The blast threshold must be a number between 0 and 1, got {threshold!r}; "
            "e.g. 0.5 calls a cell a blast when p_blast >= 0.5."
        )
    return float(threshold)


def _check_classifier(classifier: Classifier, kind: str) -> None:
    if not isinstance(classifier, Classifier):
        raise PredictionError(
            f"Expected a Classifier (blastscope.models.classifier.load_classifier(name, {kind!r}))"
            f", got {type(classifier).__name__}."
        )
    if classifier.kind != kind:
        raise PredictionError(
            f"{classifier.name} is a {classifier.kind} classifier, but a {kind} classifier is "
            f"needed here. Load one with load_classifier(name, {kind!r})."
        )


def _probabilities_steps(
    image: np.ndarray,
    labels: np.ndarray | None,
    cells: pd.DataFrame,
    pixel_size_um: float,
    classifier: Classifier,
    device: str | torch.device,
    batch_size: int,
    stage: str,
    statistics: FieldStatistics | None = None,
    fit_fraction: float | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Class probabilities (N, K) float64 for the rows of ``cells``, one Progress per batch.

    ``fit_fraction``: a cell wider (equivalent diameter of ``area_um2``) than that share of the
    window is shown shrunk until it is that share (None: every crop at the model's scale)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictionError(f"batch_size must be a positive integer, got {batch_size!r}.")
    torch_device = resolve_device(device)
    model = classifier.on(torch_device)
    n_cells = len(cells)
    if n_cells == 0:
        yield Progress(stage, 0, 0, "no cells to classify")
        return np.empty((0, len(classifier.classes)))
    if classifier.input.stain_normalisation == "cells":
        if labels is None:
            raise PredictionError(
                f"{classifier.name} normalises the stain against the field's cells: give the "
                "labels image."
            )
        background = None if statistics is None else statistics.background
        image = normalise_to_cells(image, labels, background)
    cutter = CropCutter(
        image,
        pixel_size_um=pixel_size_um,
        window_um=classifier.input.window_um,
        out_pixel_size_um=classifier.input.pixel_size_um,
        labels=labels,
        mask_to_cell=classifier.input.mask_to_cell,
        fill="median" if statistics is None else statistics.fill,
        device=torch_device,
    )
    centres = cells[["centroid_y", "centroid_x"]].to_numpy(dtype=np.float32)
    cell_labels = cells["label"].to_numpy()
    zoom_out = None
    if fit_fraction is not None:
        diameters = 2 * np.sqrt(cells["area_um2"].to_numpy(np.float64) / np.pi)
        zoom_out = np.maximum(1.0, diameters / (fit_fraction * classifier.input.window_um))
    n_batches = math.ceil(n_cells / batch_size)
    outputs = []
    for batch in range(n_batches):
        rows = slice(batch * batch_size, (batch + 1) * batch_size)
        zoom = None if zoom_out is None else zoom_out[rows]
        crops = cutter.cut(centres[rows], cell_labels[rows], zoom)
        outputs.append(model.probabilities(crops))
        yield Progress(stage, batch + 1, n_batches)
    return torch.cat(outputs).cpu().numpy().astype(np.float64)


def apply_blast_threshold(cells: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """A copy of ``cells`` with ``blast_call`` and ``is_blast`` recomputed from ``p_blast``.

    ``blast_call = p_blast >= threshold`` (False where p_blast is NaN); ``is_blast`` is the
    user's ``blast_override`` where set, else ``blast_call``. No network runs.
    """
    threshold = _check_threshold(threshold)
    _check_cells(cells, ("p_blast",), "classify the cells first (predict.classify_blasts_steps).")
    table = cells.copy()
    override = table["blast_override"] if "blast_override" in table.columns else None
    codes = override_codes(override, len(table))
    call, is_blast = blast_calls(table["p_blast"].to_numpy(np.float64), threshold, codes)
    table["blast_call"] = call
    table["blast_override"] = override_column(codes)
    table["is_blast"] = is_blast
    return table


def classify_blasts_steps(
    image: np.ndarray,
    labels: np.ndarray | None,
    cells: pd.DataFrame,
    pixel_size_um: float,
    classifier: Classifier,
    *,
    threshold: float | None = None,
    device: str | torch.device = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    statistics: FieldStatistics | None = None,
) -> Generator[Progress, None, pd.DataFrame]:
    """Blast probability of every nucleated cell; yields Progress("classify", batch, n_batches).

    ``image`` (Y, X, 3) uint8 at ``pixel_size_um`` µm per pixel, ``labels`` (Y, X) its instance
    labels (needed when the bundle masks crops to the cell), ``cells`` the cells table. Returns a
    copy of the table with ``p_blast`` (NaN for non-nucleated cells), ``blast_call`` (at
    ``threshold``, default the bundle's), ``blast_override`` (kept where present, else <NA>) and
    ``is_blast``. ``statistics``: the whole image's, when ``image`` is a piece of it (crops
    are padded with its fill colour).
    """
    _check_classifier(classifier, "blast")
    threshold = _check_threshold(classifier.threshold if threshold is None else threshold)
    _check_cells(cells, CELL_COLUMNS, "build it with blastscope.cells.measure_cells.")
    table = cells.copy()
    nucleated = table["is_nucleated"].to_numpy(dtype=bool)
    probabilities = yield from _probabilities_steps(
        image,
        labels,
        table.loc[nucleated],
        pixel_size_um,
        classifier,
        device,
        batch_size,
        "classify",
        statistics,
    )
    p_blast = np.full(len(table), np.nan)
    p_blast[nucleated] = probabilities[:, classifier.classes.index("blast")]
    table["p_blast"] = p_blast
    return apply_blast_threshold(table, threshold)


NUCLEATED_FIT_FRACTION = 0.75
"""Share of the nucleated model's window (24 µm) that a larger object is shrunk to: 18 µm."""


def classify_nucleated_steps(
    image: np.ndarray,
    labels: np.ndarray,
    cells: pd.DataFrame,
    pixel_size_um: float,
    classifier: Classifier,
    *,
    device: str | torch.device = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    statistics: FieldStatistics | None = None,
) -> Generator[Progress, None, pd.DataFrame]:
    """Sort every segmented object into red cell, platelet or white cell with a ``nucleated``
    classifier; yields Progress("nucleated", batch, n_batches).

    Objects wider than :data:`NUCLEATED_FIT_FRACTION` of the window are shown shrunk to fit
    (the model was trained on objects that fit; large immature cells with pale cytoplasm, cut
    by the window, were called red cells). Returns a copy of the table with ``p_nucleated``
    (the white-cell probability), ``object_class`` (the top class) and ``is_nucleated``
    (``p_nucleated`` at or above the bundle's threshold), replacing the stain heuristic's call of
    :func:`blastscope.cells.measure_cells`.
    """
    _check_classifier(classifier, "nucleated")
    _check_cells(
        cells, ("label", "centroid_y", "centroid_x", "area_um2"), "measure the cells first."
    )
    probabilities = yield from _probabilities_steps(
        image,
        labels,
        cells,
        pixel_size_um,
        classifier,
        device,
        batch_size,
        "nucleated",
        statistics,
        fit_fraction=NUCLEATED_FIT_FRACTION,
    )
    table = cells.copy()
    white = classifier.classes.index("white cell")
    table["p_nucleated"] = probabilities[:, white] if len(table) else np.empty(0)
    names = np.asarray(classifier.classes, dtype=object)
    table["object_class"] = names[probabilities.argmax(axis=1)] if len(table) else names[:0]
    table["is_nucleated"] = table["p_nucleated"].to_numpy() >= classifier.threshold
    return table


def predict_mutation_steps(
    image: np.ndarray,
    labels: np.ndarray | None,
    cells: pd.DataFrame,
    pixel_size_um: float,
    classifier: Classifier,
    *,
    device: str | torch.device = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    score: str = "blasts",
    statistics: FieldStatistics | None = None,
) -> Generator[Progress, None, pd.DataFrame]:
    """Mutation-class probabilities of the blasts; yields Progress("mutation", batch, n).

    ``score="blasts"`` runs the mutation bundle on the cells whose ``is_blast`` is True;
    ``score="nucleated"`` on every nucleated cell, so that a later threshold change can re-pool
    the slide call without inference (only blasts enter the call). Returns a copy of the table
    with ``p_<class>`` per class of the bundle (NaN for the cells not scored) and
    ``mutation_call`` (the top class of each blast, "" elsewhere; see
    :func:`refresh_mutation_calls`).
    """
    if score not in SCORED_CELLS:
        raise PredictionError(f"score must be one of {', '.join(SCORED_CELLS)}, got {score!r}.")
    _check_classifier(classifier, "mutation")
    _check_cells(
        cells,
        (*CELL_COLUMNS, "is_blast"),
        "classify blasts first (predict.classify_blasts_steps) on a table from "
        "blastscope.cells.measure_cells.",
    )
    table = cells.copy()
    scored = table["is_blast" if score == "blasts" else "is_nucleated"].to_numpy(dtype=bool)
    probabilities = yield from _probabilities_steps(
        image,
        labels,
        table.loc[scored],
        pixel_size_um,
        classifier,
        device,
        batch_size,
        "mutation",
        statistics,
    )
    for index, class_name in enumerate(classifier.classes):
        column = np.full(len(table), np.nan)
        column[scored] = probabilities[:, index]
        table[mutation_column(class_name)] = column
    return refresh_mutation_calls(table, classifier.classes)


def refresh_mutation_calls(cells: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """A copy of ``cells`` whose ``mutation_call`` is the top class of each blast ("" elsewhere).

    Blasts without mutation probabilities get "" too. No network runs.
    """
    table = cells.copy()
    probabilities = table[[mutation_column(name) for name in classes]].to_numpy(np.float64)
    table["mutation_call"] = mutation_calls(
        probabilities, classes, table["is_blast"].to_numpy(bool)
    )
    return table

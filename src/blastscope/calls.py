"""The per-cell calls from per-cell arrays: blast calls at a threshold with the users' overrides,
and each blast's top mutation class. The one implementation, used by ``predict`` (on cells
tables) and by the review model (``blastscope.review``, on arrays kept per result, so that a
threshold move costs a few vector operations)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_OVERRIDE = -1
"""Override code of a cell the user made no call on (1: blast, 0: non-blast)."""


def blast_calls(
    p_blast: np.ndarray, threshold: float, override: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(``blast_call``, ``is_blast``) per cell: ``p_blast >= threshold`` (False where p_blast
    is NaN), and that call replaced by the user's ``override`` (int8 codes: 1 blast, 0
    non-blast, -1 none) where one is set."""
    p_blast = np.asarray(p_blast, dtype=np.float64)
    call = np.zeros(len(p_blast), dtype=bool)
    np.greater_equal(p_blast, threshold, out=call, where=np.isfinite(p_blast))
    if override is None:
        return call, call.copy()
    return call, np.where(override >= 0, override == 1, call)


def mutation_calls(
    probabilities: np.ndarray, classes: Sequence[str], is_blast: np.ndarray
) -> np.ndarray:
    """``mutation_call`` per cell: the top class of each blast with mutation probabilities
    (rows of ``probabilities``, columns in ``classes`` order), "" for every other cell."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    scored = np.isfinite(probabilities).all(axis=1) & np.asarray(is_blast, dtype=bool)
    calls = np.full(len(probabilities), "", dtype=object)
    if scored.any():
        top = probabilities[scored].argmax(axis=1)
        calls[scored] = np.asarray(classes, dtype=object)[top]
    return calls


def override_codes(column: pd.Series | None, n_cells: int) -> np.ndarray:
    """The ``blast_override`` column (nullable boolean; None: no column) as int8 codes."""
    codes = np.full(n_cells, NO_OVERRIDE, dtype=np.int8)
    if column is not None:
        values = column.astype("boolean")
        codes[values.fillna(False).to_numpy(bool)] = 1
        codes[(~values).fillna(False).to_numpy(bool)] = 0
    return codes


def override_column(codes: np.ndarray) -> pd.arrays.BooleanArray:
    """The ``blast_override`` column of int8 ``codes`` (<NA> where the user made no call)."""
    values = pd.array(codes == 1, dtype="boolean")
    values[codes < 0] = pd.NA
    return values

"""The slide-level mutation call: per-blast class probabilities pooled over a slide.

:func:`call_slide` takes the cells table of one image, or the tables of several images of the
same slide, keeps the blasts (``is_blast``) that carry mutation probabilities (``p_<class>``
from :func:`blastscope.predict.predict_mutation_steps`) and pools them:

- ``"mean"``: the mean of the cells' probabilities;
- ``"geometric"``: the mean of the cells' log-probabilities, exponentiated and renormalised to
  sum to 1 (one confident cell moves it less; one cell near 0 for a class pulls that class down).

A bootstrap over cells (``n_bootstrap`` resamples of the pooled blasts with replacement, seeded,
vectorised) gives a 95% percentile interval per class. The call abstains ("no call", ``call`` is
None) when fewer than ``min_blasts`` blasts were pooled or the top pooled probability is below
``min_probability``; ``reason`` says which. The blast percentage follows the WHO definition:
blasts / nucleated cells × 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from blastscope.errors import BlastscopeError
from blastscope.jsonable import jsonable

POOLINGS = ("mean", "geometric")
DEFAULT_MIN_BLASTS = 20
DEFAULT_MIN_PROBABILITY = 0.40
DEFAULT_N_BOOTSTRAP = 1000
_BOOTSTRAP_CHUNK_ELEMENTS = 1_000_000  # resampled cell indices held at a time (~33 MB in all)
_LOG_FLOOR = 1e-12


class SlideCallError(BlastscopeError):
    """Inputs the slide call cannot use; the message says what to change."""


@dataclass
class SlideCall:
    """The slide's call and what it rests on.

    ``probabilities``: pooled probability per class; ``interval``: bootstrap 95% (low, high) per
    class; ``n_blasts``: blasts pooled (blasts with mutation probabilities); ``n_nucleated``:
    nucleated cells; ``blast_percentage``: all blasts / nucleated cells × 100 (NaN without
    nucleated cells); ``abstained`` with its ``reason`` ("" when a call was made).
    """

    call: str | None
    probabilities: dict[str, float]
    interval: dict[str, tuple[float, float]]
    n_blasts: int
    n_nucleated: int
    blast_percentage: float
    abstained: bool
    reason: str
    pooling: str
    min_blasts: int
    min_probability: float
    classes: tuple[str, ...]
    n_images: int
    n_bootstrap: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None, tuples become lists; see
        :func:`blastscope.jsonable.jsonable`)."""
        return jsonable(asdict(self), "the slide call")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlideCall:
        """The call that :meth:`to_dict` wrote (None back to NaN, lists back to tuples)."""

        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        return cls(
            call=data.get("call"),
            probabilities={name: number(p) for name, p in data["probabilities"].items()},
            interval={
                name: (number(low), number(high)) for name, (low, high) in data["interval"].items()
            },
            n_blasts=int(data["n_blasts"]),
            n_nucleated=int(data["n_nucleated"]),
            blast_percentage=number(data.get("blast_percentage")),
            abstained=bool(data["abstained"]),
            reason=data.get("reason", ""),
            pooling=data["pooling"],
            min_blasts=int(data["min_blasts"]),
            min_probability=float(data["min_probability"]),
            classes=tuple(data["classes"]),
            n_images=int(data.get("n_images", 1)),
            n_bootstrap=int(data.get("n_bootstrap", 0)),
        )


def pool_probabilities(probabilities: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """Pool per-cell class probabilities (N, K) to one distribution (K,).

    ``"mean"``: mean over cells; ``"geometric"``: exp(mean of log p), renormalised.
    """
    return _pool_weighted(probabilities, None, pooling)[0]


def _pool_weighted(
    probabilities: np.ndarray, counts: np.ndarray | None, pooling: str
) -> np.ndarray:
    """Pool for each row of ``counts`` (R, N) (how often each cell is drawn); None = all once."""
    values = (
        np.log(np.clip(probabilities, _LOG_FLOOR, None))
        if pooling == "geometric"
        else (probabilities)
    )
    if counts is None:
        pooled = values.mean(axis=0, keepdims=True)
    else:
        pooled = counts @ values / counts.sum(axis=1, keepdims=True)
    if pooling == "geometric":
        pooled = np.exp(pooled - pooled.max(axis=1, keepdims=True))
        pooled /= pooled.sum(axis=1, keepdims=True)
    return pooled


def _bootstrap(probabilities: np.ndarray, pooling: str, n_bootstrap: int, seed: int) -> np.ndarray:
    """Pooled probabilities (n_bootstrap, K) of resamples of the cells with replacement."""
    rng = np.random.default_rng(seed)
    n_cells = len(probabilities)
    per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n_cells)
    results = []
    for start in range(0, n_bootstrap, per_chunk):
        size = min(per_chunk, n_bootstrap - start)
        drawn = rng.integers(0, n_cells, size=(size, n_cells))
        flat = (drawn + np.arange(size)[:, None] * n_cells).ravel()
        counts = np.bincount(flat, minlength=size * n_cells).reshape(size, n_cells)
        results.append(_pool_weighted(probabilities, counts.astype(np.float64), pooling))
    return np.concatenate(results)


def _check_options(
    classes: Sequence[str], pooling: str, min_blasts: int, min_probability: float, n_bootstrap: int
) -> tuple[str, ...]:
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise SlideCallError(
            f"classes must be the mutation classes (distinct names, e.g. the mutation "
            f"classifier's .classes), got {list(classes)}."
        )
    if pooling not in POOLINGS:
        raise SlideCallError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}.")
    if isinstance(min_blasts, bool) or not isinstance(min_blasts, int) or min_blasts < 0:
        raise SlideCallError(f"min_blasts must be a whole number >= 0, got {min_blasts!r}.")
    if not isinstance(min_probability, (int, float)) or not 0 <= min_probability <= 1:
        raise SlideCallError(f"min_probability must be between 0 and 1, got {min_probability!r}.")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise SlideCallError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}.")
    return classes


def _combine(cells: pd.DataFrame | Sequence[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    tables = [cells] if isinstance(cells, pd.DataFrame) else list(cells)
    if not tables or not all(isinstance(table, pd.DataFrame) for table in tables):
        raise SlideCallError(
            "cells must be a cells table (DataFrame) or a non-empty list of them, one per image "
            "of the slide."
        )
    for number, table in enumerate(tables):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise SlideCallError(
                f"The cells table{f' of image {number}' if len(tables) > 1 else ''} lacks "
                f"{', '.join(missing)}; run predict.classify_blasts_steps and "
                "predict.predict_mutation_steps (with a bundle of these classes) first."
            )
    return pd.concat([table[columns] for table in tables], ignore_index=True)


def call_slide(
    cells: pd.DataFrame | Sequence[pd.DataFrame],
    classes: Sequence[str],
    *,
    pooling: str = "mean",
    min_blasts: int = DEFAULT_MIN_BLASTS,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> SlideCall:
    """The slide-level call from one cells table or several (images of the same slide).

    Pools the ``p_<class>`` columns of the blasts that have them (see the module text), with a
    seeded bootstrap interval; abstains below ``min_blasts`` pooled blasts or below
    ``min_probability`` for the top class.
    """
    classes = _check_options(classes, pooling, min_blasts, min_probability, n_bootstrap)
    probability_columns = [f"p_{name}" for name in classes]
    table = _combine(cells, ["is_nucleated", "is_blast", *probability_columns])
    n_images = 1 if isinstance(cells, pd.DataFrame) else len(cells)
    is_blast = table["is_blast"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    n_nucleated = int(table["is_nucleated"].astype("boolean").fillna(False).sum())
    all_blasts = int(is_blast.sum())
    blast_percentage = 100.0 * all_blasts / n_nucleated if n_nucleated else math.nan
    probabilities = table.loc[is_blast, probability_columns].to_numpy(dtype=np.float64)
    probabilities = probabilities[np.isfinite(probabilities).all(axis=1)]
    n_blasts = len(probabilities)

    nan_pair = (math.nan, math.nan)
    pooled = dict.fromkeys(classes, math.nan)
    interval = dict.fromkeys(classes, nan_pair)
    if n_blasts:
        point = pool_probabilities(probabilities, pooling)
        resampled = _bootstrap(probabilities, pooling, n_bootstrap, seed)
        low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
        pooled = {name: float(p) for name, p in zip(classes, point, strict=True)}
        interval = {
            name: (float(lo), float(hi)) for name, lo, hi in zip(classes, low, high, strict=True)
        }

    call: str | None = None
    needed = max(min_blasts, 1)
    if n_blasts < needed:
        reason = f"insufficient blasts: {n_blasts} < {needed}"
    else:
        top = max(classes, key=pooled.__getitem__)
        if pooled[top] < min_probability:
            reason = f"top probability {pooled[top]:.2f} < {min_probability:.2f}"
        else:
            call, reason = top, ""
    return SlideCall(
        call=call,
        probabilities=pooled,
        interval=interval,
        n_blasts=n_blasts,
        n_nucleated=n_nucleated,
        blast_percentage=blast_percentage,
        abstained=call is None,
        reason=reason,
        pooling=pooling,
        min_blasts=min_blasts,
        min_probability=float(min_probability),
        classes=classes,
        n_images=n_images,
        n_bootstrap=n_bootstrap,
    )


def _value(call: SlideCall | Mapping[str, Any], name: str) -> Any:
    return call.get(name) if isinstance(call, Mapping) else getattr(call, name)


def _number_text(value: Any) -> str | None:
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else None


def call_headline(call: SlideCall | Mapping[str, Any] | None, *, exact: bool = True) -> str:
    """The slide call in one line, the same in the dock, the CLI and the report: "Slide call:
    NPM1 (0.54, 95% interval 0.45-0.62)", "No call: <reason>" or "No slide call yet".
    ``call`` is a :class:`SlideCall` or its dict (:meth:`SlideCall.to_dict`); ``exact`` False
    leaves out an interval that is still being computed."""
    if call is None:
        return "No slide call yet"
    name = _value(call, "call")
    if not name:
        return f"No call: {_value(call, 'reason') or 'no blasts'}"
    probability = _number_text((_value(call, "probabilities") or {}).get(name))
    low, high = [*((_value(call, "interval") or {}).get(name) or ()), None, None][:2]
    interval = (_number_text(low), _number_text(high))
    text = f"Slide call: {name} ({probability or 'n/a'}"
    if exact and None not in interval:
        text += f", 95% interval {interval[0]}-{interval[1]}"
    return text + ")"


def call_details(call: SlideCall | Mapping[str, Any], *, exact: bool = True) -> str:
    """What the call rests on, in one line: blasts used and the minimum, the blast percentage,
    the pooling and the interval's method (or that it is being computed)."""
    percentage = _value(call, "blast_percentage")
    percentage = (
        f"{percentage:.1f} %"
        if isinstance(percentage, (int, float)) and math.isfinite(percentage)
        else "n/a"
    )
    details = (
        f"{_value(call, 'n_blasts')} blasts used (minimum {_value(call, 'min_blasts')}) · blasts "
        f"{percentage} of {_value(call, 'n_nucleated')} nucleated cells · "
        f"{_value(call, 'pooling')} pooling"
    )
    return details + (" · 95% interval: bootstrap over cells" if exact else " · interval updating…")

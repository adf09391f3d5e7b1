"""Re-measuring and re-classifying only the cells whose masks a user edited.

After a user paints, erases or splits masks, :func:`edited_cells` compares the labels the result
was computed on with the edited labels and names the cells that changed (a label whose pixels
differ: reshaped, new or removed). :func:`reclassify_stage` measures and classifies just those
cells (the blast model and, when the result holds mutation probabilities, the mutation model),
keeps every other row of the cells table as it was, re-applies the blast threshold and pools the
slide call again. Users' overrides (``blast_override``) stay with their label while it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from blastscope.errors import BlastscopeError
from blastscope.io import to_rgb_uint8
from blastscope.models.classifier import Classifier
from blastscope.pipeline import SlideCallSettings, as_classifier, recall_slide, sort_cells_steps
from blastscope.predict import (
    DEFAULT_BATCH_SIZE,
    apply_blast_threshold,
    classify_blasts_steps,
    mutation_columns,
    predict_mutation_steps,
)
from blastscope.progress import Progress, Steps
from blastscope.result import SlideResult
from blastscope.segment import SegmentationParams


class EditError(BlastscopeError):
    """Edited labels that cannot be re-classified; the message says what to change."""


@dataclass(frozen=True)
class EditedCells:
    """Label ids touched by an edit: ``changed`` still exist (reshaped or new), ``removed`` do
    not exist any more. Both sorted int64 arrays."""

    changed: np.ndarray
    removed: np.ndarray

    @property
    def count(self) -> int:
        return len(self.changed) + len(self.removed)


def edited_cells(before: np.ndarray, after: np.ndarray) -> EditedCells:
    """The cells whose masks differ between two label images (Y, X) of the same shape."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise EditError(
            f"The edited labels have shape {after.shape} but the analysed labels {before.shape}; "
            "edit the cells layer in place (paint, erase, fill) instead of replacing its data."
        )
    differs = before != after
    touched = np.union1d(before[differs], after[differs]).astype(np.int64)
    touched = touched[touched > 0]
    if len(touched) == 0:
        empty = np.empty(0, np.int64)
        return EditedCells(empty, empty)
    present = np.zeros(int(max(touched.max(), after.max())) + 1, bool)
    present[np.unique(after)] = True
    exists = present[touched]
    return EditedCells(changed=touched[exists], removed=touched[~exists])


def reclassify_stage(
    image: np.ndarray,
    result: SlideResult,
    labels: np.ndarray,
    blast_model: Classifier | str | None = None,
    mutation_model: Classifier | str | None = None,
    *,
    threshold: float | None = None,
    settings: SlideCallSettings | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Steps[SlideResult]:
    """``result`` brought up to date with the edited ``labels`` (Y, X): only edited cells are
    measured and classified; yields Progress per step and per batch.

    ``blast_model`` is needed when the result holds ``p_blast``, ``mutation_model`` when it holds
    mutation probabilities (their classes must match). ``threshold`` (default: the one in the
    result's provenance) decides the blast calls; ``settings`` (default: the slide call's own)
    the pooling. Returns a new SlideResult whose ``labels`` are a copy of ``labels``.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise EditError(
            f"Labels must be integers (one id per cell), got {labels.dtype}; edit the cells "
            "layer that blastscope made."
        )
    rgb, _ = to_rgb_uint8(image)
    if rgb.shape[:2] != labels.shape:
        raise EditError(
            f"The labels ({labels.shape}) do not match the image ({rgb.shape[:2]}); choose the "
            "image the cells were segmented from."
        )
    yield Progress("edit", 0, 1, "finding edited cells")
    edits = edited_cells(result.labels, labels)
    if edits.count == 0:
        yield Progress("edit", 1, 1, "no cell was edited")
        return result
    old = result.cells
    classified = "p_blast" in old.columns
    scored_columns = mutation_columns(old)
    if classified and blast_model is None:
        raise EditError("These cells were classified: give the blast model to re-classify edits.")
    if scored_columns and mutation_model is None:
        raise EditError(
            "These cells carry mutation probabilities: give the mutation model to re-classify "
            "edits."
        )
    params = result.segmentation.params if result.segmentation else SegmentationParams()
    new = yield from sort_cells_steps(
        rgb, labels.astype(np.int32, copy=False), result.pixel_size_um, params, only=edits.changed
    )
    yield Progress(
        "edit", 1, 1, f"{len(edits.changed)} cells re-measured, {len(edits.removed)} removed"
    )

    if classified:
        blast = as_classifier(blast_model, "blast")
        if threshold is None:
            threshold = result.provenance.get("blast", {}).get("threshold", blast.threshold)
        new = yield from classify_blasts_steps(
            rgb,
            labels,
            new,
            result.pixel_size_um,
            blast,
            threshold=threshold,
            device=device,
            batch_size=batch_size,
        )
        if "blast_override" in old.columns:
            previous = old.set_index("label")["blast_override"].astype("boolean")
            kept = previous.reindex(new["label"].to_numpy()).to_numpy()
            new["blast_override"] = pd.array(kept, dtype="boolean")
            new = apply_blast_threshold(new, threshold)
    if scored_columns:
        mutation = as_classifier(mutation_model, "mutation")
        expected = sorted(f"p_{name}" for name in mutation.classes)
        if expected != sorted(column for column in scored_columns if column != "mutation_call"):
            raise EditError(
                f"The mutation model {mutation.name} has classes {list(mutation.classes)}, but "
                "the cells were scored with other classes; use the model the result was made with."
            )
        new = yield from predict_mutation_steps(
            rgb,
            labels,
            new,
            result.pixel_size_um,
            mutation,
            device=device,
            batch_size=batch_size,
            score="nucleated",
        )

    produced = [column for column in old.columns if column in new.columns]
    new = new.reindex(columns=old.columns).astype({c: old[c].dtype for c in produced})
    unchanged = old[~old["label"].isin(np.concatenate([edits.changed, edits.removed]))]
    cells = pd.concat([unchanged, new], ignore_index=True)
    cells = cells.sort_values("label", kind="stable").reset_index(drop=True)
    if classified:
        cells = apply_blast_threshold(cells, threshold)
    provenance = dict(result.provenance)
    provenance["edits"] = [
        *provenance.get("edits", []),
        {"changed": edits.changed.tolist(), "removed": edits.removed.tolist()},
    ]
    updated = replace(
        result, labels=labels.astype(np.int32, copy=True), cells=cells, provenance=provenance
    )
    return recall_slide(updated, settings)

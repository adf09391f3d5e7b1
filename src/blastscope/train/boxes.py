"""Bounding boxes: of segmented objects, their IoU, and matching them to annotated boxes.

Boxes are ``(xmin, ymin, xmax, ymax)`` in pixels, max exclusive, x the column (Pascal VOC, as
BCCD annotates). Used to score segmentation and the nucleated-cell call against BCCD's
white-cell boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment


def object_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes (N, 4) of the labels present in ``labels`` (Y, X), and their ids (N,)."""
    slices = ndi.find_objects(labels)
    ids, boxes = [], []
    for index, found in enumerate(slices, start=1):
        if found is not None:
            rows, cols = found
            ids.append(index)
            boxes.append((cols.start, rows.start, cols.stop, rows.stop))
    return np.array(boxes, float).reshape(-1, 4), np.array(ids, np.int64)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4) -> (N, M)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two boxes."""
    return float(box_iou_matrix(np.array([a]), np.array([b]))[0, 0])


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of a boolean mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)


def wbc_box_matches(labels: np.ndarray, boxes: pd.DataFrame) -> pd.DataFrame:
    """One-to-one match of the WBC boxes with segmented objects by bounding-box IoU.

    ``labels`` (Y, X) int; ``boxes`` with class, xmin, ymin, xmax, ymax (pixels, VOC). Returns
    one row per WBC box: ``iou`` (of its assigned object's bounding box, 0 if none; Hungarian
    assignment maximising the total IoU), ``label`` (the object, 0 if none) and
    ``touches_border`` (the box reaches the field border).
    """
    wbc = boxes[boxes["class"] == "WBC"]
    height, width = labels.shape
    box_array = wbc[["xmin", "ymin", "xmax", "ymax"]].to_numpy(float)
    found, object_ids = object_boxes(labels)
    iou = box_iou_matrix(box_array, found)
    best = np.zeros(len(wbc))
    matched = np.zeros(len(wbc), np.int64)
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        best[rows] = iou[rows, cols]
        matched[rows] = object_ids[cols]
    touches = (
        (box_array[:, 0] <= 2)
        | (box_array[:, 1] <= 2)
        | (box_array[:, 2] >= width - 2)
        | (box_array[:, 3] >= height - 2)
    )
    return pd.DataFrame({"iou": best, "label": matched, "touches_border": touches})


def wbc_recall_summary(matches: pd.DataFrame) -> dict[str, Any]:
    """Recall of WBC boxes at bounding-box IoU >= 0.5 and >= 0.7, all / off / on the border."""
    summary: dict[str, Any] = {"n_boxes": len(matches)}
    for name, subset in (
        ("all", matches),
        ("interior", matches[~matches["touches_border"]]),
        ("border", matches[matches["touches_border"]]),
    ):
        summary[name] = {
            "n": len(subset),
            "recall_iou50": round(float((subset["iou"] >= 0.5).mean()), 4) if len(subset) else None,
            "recall_iou70": round(float((subset["iou"] >= 0.7).mean()), 4) if len(subset) else None,
        }
    return summary


def nucleated_call_scores(
    labels: np.ndarray, cells: pd.DataFrame, boxes: pd.DataFrame, min_iou: float = 0.5
) -> dict[str, int]:
    """Counts for the white-cell precision and recall of the nucleated call on one field.

    A WBC box is found when the object matched to it (:func:`wbc_box_matches`, box IoU >=
    ``min_iou``) is called nucleated; every other object called nucleated is a false positive
    (a red cell, a platelet, or a second piece of a white cell).
    """
    matches = wbc_box_matches(labels, boxes)
    matched = set(matches.loc[matches["iou"] >= min_iou, "label"].tolist())
    called = set(cells.loc[cells["is_nucleated"].astype(bool), "label"].tolist())
    return {
        "boxes": len(matches),
        "found": len(matched & called),
        "called": len(called),
        "called_matching_a_box": len(called & matched),
    }

"""Instance masks derived from the BCCD boxes, for training the smear segmenter.

BCCD (``../shared/data/bccd_smear``) annotates white cells, red cells and platelets with boxes
only, and boxes only some of the red cells. :func:`derive_masks` turns a field and its boxes into
an instance label image of *every* cell:

- **white cells**: GrabCut around the box, seeded with the nucleus (pixels whose nuclear-stain
  index, :func:`blastscope.cells.nuclear_stain_index`, is high) as certain foreground, the
  ellipse inscribed in the box (minus pink red-cell pixels) as probable foreground, the rest of
  the box as probable background and everything outside it as certain background; the result
  is the component that holds the nucleus, holes filled, smoothed and clipped to the box. Where
  GrabCut's mask disagrees with the box (bounding-box IoU below ``min_box_iou``, usually a pale
  cytoplasm lost) the mask is the ellipse inscribed in the box, which follows the annotator's
  extent; a box cut by the field border is first extended past the border to a round cell's
  size, so the ellipse is cut by the border as the cell is. (Measured on 40 train fields: the
  masks' bounding boxes match their boxes at median IoU 0.88, all >= 0.7.)
- **platelets**: the stained component inside each platelet box.
- **red cells**: the remaining stained foreground (optical density above the field's Li level,
  holes up to 0.4 red cells filled so the pale centres count). A component that is one convex
  disc of red-cell size is one red cell; clumps are split by a marker watershed on the distance
  transform (markers at the red-cell box centres and at distance peaks away from them), so the
  unboxed red cells are labelled too. The split of a clump is a guess, so its pixels get a low
  loss weight (:data:`CLUMP_WEIGHT`): the network learns to separate touching red cells mostly
  from the synthetic fields, whose masks are exact.

The BCCD pixel size is not recorded; :data:`blastscope.samples.BCCD_PIXEL_SIZE_UM` is estimated
from the red cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_li
from skimage.morphology import remove_small_holes
from skimage.segmentation import watershed

from blastscope.cells import nuclear_stain_index, optical_density
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.train.boxes import box_iou, mask_box

RBC_DIAMETER_UM = 7.5
RBC_DIAMETER_PX = RBC_DIAMETER_UM / BCCD_PIXEL_SIZE_UM
RBC_AREA_PX = np.pi * RBC_DIAMETER_PX**2 / 4
NUCLEUS_INDEX_LEVEL = 0.2
RED_CELL_INDEX_LEVEL = -0.08
CLUMP_WEIGHT = 0.25
"""Loss weight of pixels in clumps of touching red cells, whose split is a guess."""


@dataclass
class BccdField:
    """One BCCD field: ``image`` (Y, X, 3) uint8 and its boxes (class, xmin, ymin, xmax, ymax)."""

    field_id: str
    image: np.ndarray
    boxes: pd.DataFrame


def bccd_root(root: str | Path | None = None) -> Path:
    """The BCCD folder: ``root`` if given, else ``../shared/data/bccd_smear`` of the repository."""
    if root is not None:
        path = Path(root)
    else:
        path = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "bccd_smear"
    if not (path / "boxes.csv").is_file():
        raise FileNotFoundError(
            f"No BCCD data at {path} (boxes.csv missing). Pass the folder holding images/, "
            "boxes.csv and splits/ (for example --bccd ../shared/data/bccd_smear)."
        )
    return path


def read_split(root: str | Path, split: str) -> list[str]:
    """Field ids of a split (``train`` or ``val``) listed in ``splits/<split>.txt``."""
    path = Path(root) / "splits" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"No split file {path}; the BCCD folder is incomplete.")
    return path.read_text(encoding="utf-8").split()


def bccd_field_ids(
    root: str | Path, split: str, listed: str | Path | None = None, n: int | None = None
) -> list[str]:
    """Field ids: those listed in the file ``listed`` (whitespace-separated), else the
    ``split``'s (``splits/<split>.txt``); the first ``n`` of them."""
    ids = Path(listed).read_text(encoding="utf-8").split() if listed else read_split(root, split)
    return ids[:n]


def read_fields(root: str | Path, field_ids: list[str]) -> list[BccdField]:
    """Load fields and their boxes; ``root`` holds ``images/`` and ``boxes.csv``."""
    root = Path(root)
    boxes = pd.read_csv(root / "boxes.csv")
    boxes["field_id"] = boxes["filename"].str.replace(r"\.jpg$", "", regex=True)
    fields = []
    for field_id in field_ids:
        path = root / "images" / f"{field_id}.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"Cannot read the BCCD image {path}.")
        field_boxes = boxes[boxes["field_id"] == field_id].reset_index(drop=True)
        fields.append(BccdField(field_id, np.ascontiguousarray(image[..., ::-1]), field_boxes))
    return fields


def derive_masks(
    image: np.ndarray, boxes: pd.DataFrame, min_box_iou: float = 0.75
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels (Y, X) int32 of the cells of a BCCD field and a loss weight map (Y, X).

    ``image`` is (Y, X, 3) uint8 RGB; ``boxes`` has columns class (WBC, RBC, Platelets), xmin,
    ymin, xmax, ymax in pixels. White cells get labels first, then platelets, then red cells.
    The weight is 1 where the labels are trusted and :data:`CLUMP_WEIGHT` over clumps of
    touching red cells, whose split the boxes cannot tell (the trainer down-weights them).
    """
    height, width = image.shape[:2]
    density = optical_density(image).sum(axis=-1)
    density = cv2.GaussianBlur(density.astype(np.float32), (0, 0), 1.5)
    nuclear = cv2.GaussianBlur(nuclear_stain_index(image).astype(np.float32), (0, 0), 2.0)
    foreground = density > threshold_li(density)
    foreground = remove_small_holes(foreground, max_size=int(0.4 * RBC_AREA_PX))
    foreground = ndi.binary_opening(foreground, iterations=2)
    labels = np.zeros((height, width), np.int32)
    next_label = 1
    for box in _boxes_of(boxes, "WBC"):
        mask = _white_cell_mask(image, foreground, nuclear, box, min_box_iou)
        labels[mask & (labels == 0)] = next_label
        next_label += 1
    for box in _boxes_of(boxes, "Platelets"):
        mask = _platelet_mask(density, nuclear, box) & (labels == 0)
        if mask.sum() >= 20:
            labels[mask] = next_label
            next_label += 1
    taken = ndi.binary_dilation(labels > 0, iterations=2)
    red = ndi.binary_opening(foreground & ~taken, structure=_disk(3))
    red_labels, clumps = _split_red_cells(red, _boxes_of(boxes, "RBC"))
    labels[red_labels > 0] = red_labels[red_labels > 0] + next_label - 1
    weight = np.ones((height, width), np.float32)
    weight[ndi.binary_dilation(clumps, iterations=3) & ~taken] = CLUMP_WEIGHT
    return _relabel(labels), weight


def _boxes_of(boxes: pd.DataFrame, name: str) -> list[tuple[int, int, int, int]]:
    rows = boxes[boxes["class"] == name]
    return [
        (int(r.xmin), int(r.ymin), int(r.xmax), int(r.ymax))
        for r in rows.itertuples()
        if r.xmax > r.xmin + 2 and r.ymax > r.ymin + 2
    ]


def _white_cell_mask(
    image: np.ndarray,
    foreground: np.ndarray,
    nuclear: np.ndarray,
    box: tuple[int, int, int, int],
    min_box_iou: float,
) -> np.ndarray:
    height, width = foreground.shape
    x0, y0, x1, y1 = box
    margin = 25
    cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
    cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1, ::-1])
    inside = np.zeros(crop.shape[:2], bool)
    inside[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = True
    nucleus = (nuclear[cy0:cy1, cx0:cx1] > NUCLEUS_INDEX_LEVEL) & inside
    nucleus = ndi.binary_opening(nucleus, iterations=2)
    ellipse = _ellipse_in_box(_border_extended(box, (height, width)), (height, width))
    ellipse = ellipse[cy0:cy1, cx0:cx1]
    red = nuclear[cy0:cy1, cx0:cx1] < RED_CELL_INDEX_LEVEL
    seed = np.full(crop.shape[:2], cv2.GC_BGD, np.uint8)
    seed[inside] = cv2.GC_PR_BGD
    seed[ellipse & ~red] = cv2.GC_PR_FGD
    seed[nucleus] = cv2.GC_FGD
    mask = np.zeros((height, width), bool)
    if nucleus.sum() >= 50:
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(crop, seed, None, background_model, foreground_model, 5, cv2.GC_INIT_WITH_MASK)
        cut = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
        cut = ndi.binary_opening(cut, structure=_disk(4))
        components, _ = ndi.label(cut)
        keep = np.unique(components[nucleus & (components > 0)])
        cut = ndi.binary_fill_holes(np.isin(components, keep[keep > 0]))
        mask[cy0:cy1, cx0:cx1] = cut & ndi.binary_dilation(inside, iterations=3)
    if not mask.any() or box_iou(mask_box(mask), box) < min_box_iou:
        mask = _ellipse_in_box(_border_extended(box, (height, width)), (height, width))
    return mask


def _border_extended(box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple:
    """A box cut by the field border, extended past it to the cell's likely full extent.

    White cells are round: a box cut on one side is extended on that side to the length of its
    uncut side (the ellipse inscribed in it is then cut by the border as the cell is).
    """
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    if width < height:
        if x0 <= 1:
            x0 = x1 - height
        elif x1 >= shape[1] - 1:
            x1 = x0 + height
    if height < width:
        if y0 <= 1:
            y0 = y1 - width
        elif y1 >= shape[0] - 1:
            y1 = y0 + width
    return x0, y0, x1, y1


def _platelet_mask(
    density: np.ndarray, nuclear: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    x0, y0, x1, y1 = box
    crop = (nuclear[y0:y1, x0:x1] > NUCLEUS_INDEX_LEVEL / 2) | (
        density[y0:y1, x0:x1] > 2 * np.median(density)
    )
    components, count = ndi.label(ndi.binary_opening(crop))
    mask = np.zeros(density.shape, bool)
    if count:
        sizes = ndi.sum_labels(np.ones_like(components), components, np.arange(1, count + 1))
        largest = components == int(np.argmax(sizes)) + 1
        mask[y0:y1, x0:x1] = ndi.binary_fill_holes(largest)
    return mask


def _split_red_cells(
    red: np.ndarray, boxes: list[tuple[int, int, int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Red-cell labels and the mask of clumps (components that are not one disc).

    A component is one red cell when its area is 0.4-1.5 red cells (or less where the border cuts
    it) and it is convex (solidity > 0.9). Clumps are split by a marker watershed on the
    distance transform, markers at the red-cell box centres and at distance peaks away from them.
    """
    components, count = ndi.label(red)
    ids = np.arange(1, count + 1)
    area = ndi.sum_labels(np.ones(red.shape), components, ids)
    hull_area = np.array(
        [
            _hull_area(components[s] == i)
            for i, s in zip(ids, ndi.find_objects(components), strict=True)
        ]
    )
    solidity = area / np.maximum(hull_area, 1.0)
    border = np.zeros(red.shape, bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    cut = ndi.maximum(border.astype(np.uint8), components, ids) > 0
    low = np.where(cut, 0.1, 0.4) * RBC_AREA_PX
    single = (area >= low) & (area <= 1.5 * RBC_AREA_PX) & (solidity > 0.9)
    lookup = np.zeros(count + 1, bool)
    lookup[ids[single]] = True
    singles = lookup[components]
    lookup[:] = False
    lookup[ids[~single & (area >= 0.4 * RBC_AREA_PX)]] = True
    clumps = lookup[components]

    distance = ndi.distance_transform_edt(clumps)
    radius = RBC_DIAMETER_PX / 2
    centres = []
    for x0, y0, x1, y1 in boxes:
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        if clumps[cy, cx]:
            centres.append((cy, cx))
    peaks = peak_local_max(
        distance, min_distance=int(radius * 0.6), threshold_abs=radius * 0.35, exclude_border=False
    )
    for cy, cx in peaks:
        if all((cy - y) ** 2 + (cx - x) ** 2 > (0.8 * radius) ** 2 for y, x in centres):
            centres.append((int(cy), int(cx)))
    markers = np.zeros(red.shape, np.int32)
    for index, (cy, cx) in enumerate(centres, start=1):
        markers[cy, cx] = index
    split = watershed(-distance, markers, mask=clumps)
    split = _drop_small(split, 0.15 * RBC_AREA_PX)
    single_labels, _ = ndi.label(singles)
    labels = np.where(singles, single_labels + split.max(), split)
    return _relabel(labels), clumps


def _hull_area(mask: np.ndarray) -> float:
    points = np.argwhere(mask)[:, ::-1].astype(np.int32)
    if len(points) < 3:
        return float(len(points))
    return float(cv2.contourArea(cv2.convexHull(points))) + 0.5 * float(
        cv2.arcLength(cv2.convexHull(points), True)
    )


def _drop_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    counts = np.bincount(labels.ravel())
    small = counts < min_area
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lookup[labels]


def _ellipse_in_box(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
    ry, rx = max((y1 - y0) / 2, 1), max((x1 - x0) / 2, 1)
    return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0


def _disk(radius: int) -> np.ndarray:
    rows, cols = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return rows**2 + cols**2 <= radius**2

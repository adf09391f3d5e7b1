"""Saved reviews in napari: the reader of ``*.review`` folders (written by the Export dock's
Save review) gives back the cells layer with its result, threshold, overrides and audit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.types import LayerDataTuple
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error

from blastscope.review import REVIEW_FILE, ReviewError, load_review, review_viewer
from blastscope.widgets._layers import OUTLINE_RGBA, RESULT_KEY, SOURCE_KEY, layer_features

REVIEW_SUFFIX = ".review"


def get_review_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """The reader of a ``*.review`` folder holding a saved review, else None."""
    if not isinstance(path, str):
        return None
    folder = Path(path)
    if folder.suffix != REVIEW_SUFFIX or not (folder / REVIEW_FILE).is_file():
        return None
    return read_review_layers


def read_review_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """The saved review's cells layer (the docks show its calls as they were saved); nothing,
    with the reason as an error notification, when the review cannot be read."""
    folder = Path(path if isinstance(path, str) else path[0])
    try:
        review = load_review(folder)
        placement = review_viewer(folder)
    except ReviewError as error:
        show_error(str(error))
        return []
    result = review.exact()
    image_name = placement.get("image_name") or folder.stem
    metadata = {
        RESULT_KEY: result,
        SOURCE_KEY: image_name,
        "pixel_size_um": result.pixel_size_um,
        "provenance": result.provenance,
    }
    options = {
        "name": f"{image_name} cells",
        "features": layer_features(result.cells),
        "metadata": metadata,
        "colormap": DirectLabelColormap(color_dict={None: OUTLINE_RGBA, 0: (0, 0, 0, 0)}),
        "opacity": 0.9,
    }
    for key in ("scale", "translate"):
        if key in placement:
            options[key] = tuple(placement[key])
    return [(result.labels, options, "labels")]

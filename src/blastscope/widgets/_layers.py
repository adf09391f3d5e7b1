"""Layers as views of a :class:`~blastscope.result.SlideResult`: one Labels layer per image,
updated in place (stable name), carrying the cells table in ``features``."""

from __future__ import annotations

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Labels

from blastscope.result import SlideResult

RESULT_KEY = "blastscope_result"
SOURCE_KEY = "blastscope_source_image"


def cells_layer_name(image_layer: Image) -> str:
    """The stable name of the cells layer made from ``image_layer``."""
    return f"{image_layer.name} cells"


def layer_features(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells table as napari ``features``: an ``index`` column (= label id) in front."""
    features = cells.reset_index(drop=True).copy()
    features.insert(0, "index", features["label"].to_numpy())
    return features


def image_pixel_size_um(image_layer: Image) -> float | None:
    """The layer's pixel size in µm: from blastscope's metadata, else None."""
    value = image_layer.metadata.get("pixel_size_um")
    return float(value) if value else None


def image_rgb(image_layer: Image) -> np.ndarray:
    """The layer's pixels as a numpy array (Y, X[, C]) for the core to validate."""
    data = image_layer.data
    if image_layer.multiscale:
        data = data[0]
    return np.asarray(data)


def show_cells(viewer: napari.viewer.Viewer, image_layer: Image, result: SlideResult) -> Labels:
    """Add or update the cells Labels layer of ``image_layer`` with ``result``."""
    name = cells_layer_name(image_layer)
    features = layer_features(result.cells)
    metadata = {
        RESULT_KEY: result,
        SOURCE_KEY: image_layer.name,
        "pixel_size_um": result.pixel_size_um,
        "provenance": result.provenance,
    }
    if name in viewer.layers and isinstance(viewer.layers[name], Labels):
        layer = viewer.layers[name]
        layer.data = result.labels
        layer.features = features
        layer.metadata.update(metadata)
        layer.scale = image_layer.scale[-2:]
        layer.translate = image_layer.translate[-2:]
        return layer
    return viewer.add_labels(
        result.labels,
        name=name,
        features=features,
        metadata=metadata,
        scale=image_layer.scale[-2:],
        translate=image_layer.translate[-2:],
        opacity=0.5,
    )

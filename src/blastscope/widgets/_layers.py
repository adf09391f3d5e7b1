"""Layers as views of a :class:`~blastscope.result.SlideResult`: one Labels layer per image,
updated in place (stable name), carrying the cells table in ``features``."""

from __future__ import annotations

from collections.abc import Callable

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Shapes
from napari.utils.colormaps import DirectLabelColormap

from blastscope.result import SlideResult
from blastscope.slide import FIELD_LIMIT_PX

RESULT_KEY = "blastscope_result"
SOURCE_KEY = "blastscope_source_image"
OVERLAY_KEY = "blastscope_overlay"
"""Set in the metadata of the colour and veil layers that blastscope draws over an image."""
OUTLINE_RGBA = (1.0, 0.95, 0.6, 1.0)
"""Colour of the cells' outlines (pale yellow)."""


def viewer_camera(viewer: napari.viewer.Viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def viewer_text_overlay(viewer: napari.viewer.Viewer):
    """The canvas text overlay (``viewer.canvas.overlays["text"]`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.overlays["text"] if canvas is not None else viewer.text_overlay


def viewer_scale_bar(viewer: napari.viewer.Viewer):
    """The canvas scale bar (``viewer.canvas.overlays["scale_bar"]`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.overlays["scale_bar"] if canvas is not None else viewer.scale_bar


def click_selects(select: Callable[[int], None]):
    """A mouse-drag callback for a cells layer: a click (no drag) in pan/zoom mode calls
    ``select(label)`` with the cell under the cursor (any level of a multiscale layer)."""

    def on_click(layer: Labels, event):
        if layer.mode != "pan_zoom":
            return
        start = np.asarray(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or np.abs(np.asarray(event.position) - start).max() > 0
            yield
        if moved:
            return
        value = layer.get_value(event.position, world=True)
        if isinstance(value, tuple):  # a multiscale layer answers (level, value)
            value = value[-1]
        if value is not None and int(value) > 0:
            select(int(value))

    return on_click


def is_overlay(layer) -> bool:
    """Whether ``layer`` is one of blastscope's colour or veil overlays (not an image to
    analyse)."""
    return bool(layer.metadata.get(OVERLAY_KEY))


def analysable_images(viewer: napari.viewer.Viewer) -> list[Image]:
    """The image layers a dock may analyse: the viewer's Image layers except blastscope's own
    overlays."""
    return [layer for layer in viewer.layers if isinstance(layer, Image) and not is_overlay(layer)]


def image_picker(viewer: napari.viewer.Viewer):
    """A dock's "image" choice: :func:`analysable_images` of ``viewer``."""
    from magicgui.widgets import create_widget

    return create_widget(
        annotation=Image,
        label="image",
        options={"choices": lambda _widget: analysable_images(viewer)},
    )


def cells_layer_name(image_layer: Image) -> str:
    """The stable name of the cells layer made from ``image_layer``."""
    return f"{image_layer.name} cells"


CALL_COLUMNS = ("p_blast", "is_blast", "blast_call", "blast_override", "mutation_call")


def layer_features(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells table as napari ``features``: an ``index`` column (= label id) in front, then
    ``label``, the blast columns, the mutation probabilities and the rest in table order (so the
    status bar, which lists them all on hover, shows the probabilities first)."""
    first = [name for name in ("label", *CALL_COLUMNS) if name in cells.columns]
    first += [name for name in cells.columns if name.startswith("p_") and name not in first]
    rest = [name for name in cells.columns if name not in first]
    features = cells[first + rest].reset_index(drop=True)
    features.insert(0, "index", features["label"].to_numpy())
    return features


def put_features(layer: Labels, cells: pd.DataFrame) -> None:
    """Set ``layer.features`` to the cells table (:func:`layer_features`), keeping the columns
    other plugins added (matched by label id); blastscope's own earlier columns are replaced."""
    features = layer_features(cells)
    existing = layer.features
    previous = layer.metadata.get(RESULT_KEY)
    ours = set(features.columns) | set(CALL_COLUMNS)
    if previous is not None:
        ours |= set(layer_features(previous.cells).columns)
    foreign = [name for name in existing.columns if name not in ours]
    if foreign and "index" in existing.columns and len(existing):
        kept = existing[["index", *foreign]].drop_duplicates("index")
        features = features.merge(kept, on="index", how="left")
    layer.features = features


def image_pixel_size_um(image_layer: Image) -> float | None:
    """The layer's pixel size in µm: from blastscope's metadata, else from the layer's scale
    when its units are lengths (as readers of OME-TIFF and other microscopy files set them),
    else None."""
    value = image_layer.metadata.get("pixel_size_um")
    if value:
        return float(value)
    unit = image_layer.units[-1]
    if str(unit) == "pixel" or not unit.is_compatible_with("micrometer"):
        return None
    size = float((image_layer.scale[-1] * unit).to("micrometer").magnitude)
    return size if size > 0 else None


def match_world_units(viewer: napari.viewer.Viewer, layer) -> None:
    """Give a Shapes layer drawn straight in the viewer's world (scale 1, units "pixel", as
    ``viewer.add_shapes()`` makes it) the length units of the images beside it, so that the
    viewer's units stay consistent (its scale bar keeps "µm")."""
    if not isinstance(layer, Shapes) or not np.allclose(layer.scale, 1.0):
        return
    if any(str(unit) != "pixel" for unit in layer.units):
        return
    for image in viewer.layers:
        unit = image.units[-1] if isinstance(image, Image) else None
        if unit is not None and str(unit) != "pixel" and unit.is_compatible_with("micrometer"):
            layer.units = (unit,) * layer.ndim
            return


Box = tuple[int, int, int, int]
"""A rectangle of an image in its full-resolution pixels: (top, left, bottom, right)."""


def image_rgb(image_layer: Image, region: Box | None = None, *, read: bool = True):
    """The layer's pixels (Y, X[, C]) as a numpy array for the core to validate: the whole
    image, or only ``region`` (read lazily from a whole slide's full resolution). More than
    :data:`~blastscope.slide.FIELD_LIMIT_PX` pixels is refused with the fix instead of read.
    ``read`` False checks and returns the (possibly lazy) array unread, to be read in a worker."""
    data = image_layer.data
    if image_layer.multiscale:
        data = data[0]
    if region is not None:
        top, left, bottom, right = region
        data = data[top:bottom, left:right]
    height, width = data.shape[:2]
    if height * width > FIELD_LIMIT_PX:
        what = "The region" if region is not None else f"{image_layer.name} is a whole slide:"
        raise ValueError(
            f"{what} ({width} x {height} pixels) is too large to analyse as one field. Draw a "
            "rectangle in a Shapes layer and choose it as the region to analyse, or run a region "
            "from the command line (blastscope run SLIDE --roi x,y,width,height)."
        )
    return np.asarray(data) if read else data


def result_region(result: SlideResult | None) -> Box | None:
    """The rectangle of its image a result covers (from ``provenance["region"]``), else None
    (the whole image)."""
    if result is None or "region" not in result.provenance:
        return None
    top, left = (int(value) for value in result.provenance["region"]["offset_yx"])
    height, width = result.labels.shape[:2]
    return top, left, top + height, left + width


def shapes_region(shapes: Shapes, image_layer: Image) -> Box:
    """The bounding box of the last shape drawn in ``shapes``, in ``image_layer``'s
    full-resolution pixels, clipped to the image; raises with the fix when there is none."""
    if len(shapes.data) == 0:
        raise ValueError(
            f"Draw a rectangle in {shapes.name} around the cells to analyse (or choose no region)."
        )
    corners = np.asarray(shapes.data[-1], dtype=float)[:, -2:]
    world = np.array([shapes.data_to_world(point) for point in corners])[:, -2:]
    pixels = np.array([image_layer.world_to_data(point) for point in world])[:, -2:]
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    height, width = data.shape[:2]
    top, left = np.round(pixels.min(axis=0)).astype(int)  # pixel edges, to float precision
    bottom, right = np.round(pixels.max(axis=0)).astype(int)
    top, bottom = max(0, top), min(height, bottom)
    left, right = max(0, left), min(width, right)
    if bottom - top < 16 or right - left < 16:
        raise ValueError(
            f"The last shape of {shapes.name} covers less than 16 x 16 pixels of "
            f"{image_layer.name}: draw a rectangle over the cells to analyse."
        )
    return int(top), int(left), int(bottom), int(right)


def show_cells(
    viewer: napari.viewer.Viewer,
    image_layer: Image,
    result: SlideResult,
    layer: Labels | None = None,
    *,
    update_data: bool = True,
) -> Labels:
    """Add or update the cells Labels layer of ``image_layer`` with ``result``.

    ``layer`` is the Labels layer to update (default: the one named after the image, made when
    missing). The layer gets a copy of the labels (so that painting leaves the result's labels as
    they were analysed), unless ``update_data`` is False (its data is then left as the user has
    it, e.g. edited further while re-classifying). Cells are drawn as outlines of one colour:
    the colour layers beneath show the probabilities.
    """
    name = cells_layer_name(image_layer)
    if layer is None and name in viewer.layers and isinstance(viewer.layers[name], Labels):
        layer = viewer.layers[name]
    metadata = {
        RESULT_KEY: result,
        SOURCE_KEY: image_layer.name,
        "pixel_size_um": result.pixel_size_um,
        "provenance": result.provenance,
    }
    region = result_region(result)
    translate = np.asarray(image_layer.translate[-2:], dtype=float)
    if region is not None:  # the cells of a region lie over it
        translate = translate + np.asarray(region[:2]) * np.asarray(image_layer.scale[-2:])
    if layer is not None:
        if update_data:
            layer.data = result.labels.copy()
        put_features(layer, result.cells)
        layer.metadata.update(metadata)
        layer.scale = image_layer.scale[-2:]
        layer.translate = translate
        return layer
    layer = viewer.add_labels(
        result.labels.copy(),
        name=name,
        features=layer_features(result.cells),
        metadata=metadata,
        scale=image_layer.scale[-2:],
        translate=translate,
        colormap=DirectLabelColormap(color_dict={None: OUTLINE_RGBA, 0: (0, 0, 0, 0)}),
        opacity=0.9,
    )
    layer.contour = 1
    return layer

"""QuPath GeoJSON: cells as detection (or cell) features, and back to a labels image.

Coordinates
-----------
Full-resolution image pixels, ``[x, y]`` with x = column and y = row, origin at the top-left
corner of the top-left pixel, as QuPath reads them. Outlines are traced on pixel corners (every
vertex is an integer), so pixel ``(row, col)`` covers the square ``[col, col+1] x [row, row+1]``
and a polygon's area equals the cell's pixel count. Rasterising takes the pixels whose centre
``(col + 0.5, row + 0.5)`` lies inside the geometry, which gives back exactly the traced pixels.

A cell's pixels that touch only at a corner are separate pieces (4-connectivity), so every
polygon ring is simple: a cell in several pieces is a MultiPolygon, background enclosed by a
cell is an interior ring (a hole), and rings meet at most at single corner points, which
keeps every geometry valid in the OGC sense (shapely ``is_valid``). Shells run counter-clockwise
and holes clockwise in the x-right, y-up sense of the shoelace formula (RFC 7946).

What a feature carries
----------------------
``id`` a UUID5 of the image hash and the label id (stable across re-exports);
``properties.objectType`` ``"detection"`` (or ``"cell"``, with a ``nucleusGeometry``);
``properties.classification`` ``{"name", "color"}`` with a QuPath-safe class name;
``properties.measurements`` every numeric and boolean column of the cells table under its own
name (booleans as 0/1; NaN, infinities and missing values omitted);
``properties.metadata`` the text columns and the canonical class name (strings, as QuPath keeps
them). The slide call is one ``"annotation"`` feature over the whole image. The collection's
foreign member ``"blastscope"`` holds the image shape, offset and pixel size, the columns and
their dtypes, the canonical class names, the slide call and the provenance, and (when napari
wrote it) ``"napari"``: the labels layer's ``scale`` and ``translate``, so that the file reopens
over its image.

Reading
-------
:func:`read_geojson` trusts nothing in the file: malformed geometry is one :class:`GeoJSONError`
naming the feature, points and lines are skipped and counted, and the labels image and the work
of filling it are bounded by the image the objects belong to (:data:`MAX_READ_PIXELS`,
:data:`MAX_FILL_PIXELS`, :data:`MAX_CROSSINGS`).

The module is the format's public face; the work is done by one module per job:
:mod:`~blastscope.export.outlines` (labels to polygon rings), :mod:`~blastscope.export.rasterise`
(rings back to pixels), :mod:`~blastscope.export.geojson_writer` (the FeatureCollection and the
file) and :mod:`~blastscope.export.geojson_reader` (a file, checked, back to labels and a table).
"""

from __future__ import annotations

from blastscope.export.geojson_reader import (
    MAX_CROSSINGS,
    MAX_FILL_PIXELS,
    MAX_READ_PIXELS,
    GeoJSONError,
    geometry_polygons,
    read_geojson,
)
from blastscope.export.geojson_writer import (
    FORMAT_NAME,
    FORMAT_VERSION,
    METADATA_KEY,
    SLIDE_CALL_KIND,
    UUID_NAMESPACE,
    geojson_collection,
    object_uuid,
    slide_call_dict,
    write_collection,
    write_geojson,
)
from blastscope.export.outlines import PolygonRings, Ring, labels_geometries, mask_polygons
from blastscope.export.rasterise import rasterise_polygons

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_CROSSINGS",
    "MAX_FILL_PIXELS",
    "MAX_READ_PIXELS",
    "METADATA_KEY",
    "SLIDE_CALL_KIND",
    "UUID_NAMESPACE",
    "GeoJSONError",
    "PolygonRings",
    "Ring",
    "geojson_collection",
    "geometry_polygons",
    "labels_geometries",
    "mask_polygons",
    "object_uuid",
    "rasterise_polygons",
    "read_geojson",
    "slide_call_dict",
    "write_collection",
    "write_geojson",
]

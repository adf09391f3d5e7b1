"""QuPath GeoJSON: outlines, QuPath's fields, round trips, and a hand-written golden file.

Rasterisation tolerance: none. Outlines are traced on pixel corners, so a polygon's area equals
its cell's pixel count and rasterising it (pixel centres inside) gives back exactly the same
pixels; the round-trip tests assert equality, not closeness.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely.geometry
from shapely.ops import unary_union

from blastscope.export import ExportError, read_geojson, write_geojson
from blastscope.export.geojson import (
    geometry_polygons,
    labels_geometries,
    mask_polygons,
    rasterise_polygons,
)
from export_cases import INPUT_SHA256, classified_result

GOLDEN = Path(__file__).parent / "data" / "qupath" / "golden_qupath_objects.geojson"


def _features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def _by_label(features: list[dict]) -> dict[int, dict]:
    return {
        feature["properties"]["measurements"]["label"]: feature
        for feature in features
        if feature["properties"]["objectType"] != "annotation"
    }


def _pixel_union(mask: np.ndarray):
    rows, cols = np.nonzero(mask)
    boxes = [shapely.geometry.box(c, r, c + 1, r + 1) for r, c in zip(rows, cols, strict=True)]
    return unary_union(boxes)


def _rasterised(geometry: dict, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    covered = rasterise_polygons(geometry_polygons(geometry), shape)
    if covered is not None:
        window, inside = covered
        mask[window] = inside
    return mask


# --------------------------------------------------------------------------- outlines


def test_random_masks_trace_to_valid_polygons_that_rasterise_to_the_same_pixels():
    rng = np.random.default_rng(7)
    for _ in range(400):
        shape = tuple(rng.integers(2, 18, size=2))
        mask = rng.random(shape) < rng.uniform(0.15, 0.85)
        if not mask.any():
            continue
        geometry = labels_geometries(mask.astype(np.int32), [1])[1]
        polygon = shapely.geometry.shape(geometry)
        assert polygon.is_valid, shapely.validation.explain_validity(polygon)
        assert polygon.area == mask.sum()
        assert np.array_equal(_rasterised(geometry, shape), mask)


def test_holes_islands_and_corner_touching_pieces_keep_their_topology():
    mask = np.zeros((9, 9), dtype=bool)
    mask[0:9, 0:9] = True
    mask[2:7, 2:7] = False  # a hole ...
    mask[4, 4] = True  # ... with an island inside it
    mask[0, 0] = False
    mask[1, 1] = False  # a notch that meets the outside only at a corner
    polygons = mask_polygons(mask)
    areas = sorted(shapely.geometry.Polygon(rings[0], rings[1:]).area for rings in polygons)
    assert areas == [1.0, 9 * 9 - 25 - 2.0]  # the island; the frame less the hole and notch
    frame = max(polygons, key=lambda rings: len(rings))
    assert len(frame) == 3  # shell, the hole, the notch (a hole meeting the shell at a corner)
    geometry = labels_geometries(mask.astype(np.int32), [1])[1]
    assert geometry["type"] == "MultiPolygon"
    shape = shapely.geometry.shape(geometry)
    assert shape.is_valid
    assert shape.area == mask.sum()
    assert np.array_equal(_rasterised(geometry, mask.shape), mask)


def test_shells_run_counter_clockwise_and_holes_clockwise():
    mask = np.ones((5, 6), dtype=bool)
    mask[2, 2:4] = False
    geometry = labels_geometries(mask.astype(np.int32), [1])[1]
    assert geometry["type"] == "Polygon"
    shell, hole = (shapely.geometry.LinearRing(ring) for ring in geometry["coordinates"])
    assert shell.is_ccw
    assert not hole.is_ccw
    assert all(ring[0] == ring[-1] for ring in geometry["coordinates"])


# --------------------------------------------------------------------------- writing


@pytest.fixture(scope="module")
def classified():
    return classified_result()


@pytest.fixture(scope="module")
def written(classified, tmp_path_factory):
    result, _ = classified
    path = tmp_path_factory.mktemp("geojson") / "field.geojson"
    write_geojson(
        path,
        result.labels,
        result.cells,
        pixel_size_um=result.pixel_size_um,
        image_sha256=INPUT_SHA256,
        slide_call=result.slide_call,
        include_non_nucleated=True,
        provenance=result.provenance,
    )
    return path


def test_round_trip_gives_the_same_label_ids_pixels_and_table(classified, written):
    result, _ = classified
    labels, cells, metadata = read_geojson(written)
    assert np.array_equal(labels, result.labels)  # same ids on the same pixels: tolerance 0
    pd.testing.assert_frame_equal(cells, result.cells.reset_index(drop=True), check_exact=True)
    assert cells["blast_override"].dtype == "boolean"
    assert metadata["pixel_size_um"] == result.pixel_size_um
    assert metadata["slide_call"] == result.slide_call.to_dict()
    assert metadata["provenance"] == result.provenance


def test_every_geometry_is_valid_and_as_large_as_its_cell(classified, written):
    result, _ = classified
    areas = np.bincount(result.labels.ravel())
    for label, feature in _by_label(_features(written)).items():
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid
        assert geometry.area == areas[label]
        assert geometry.area == feature["properties"]["measurements"]["area_px"]


def test_features_carry_the_fields_qupath_reads(written):
    for feature in _features(written):
        properties = feature["properties"]
        assert feature["type"] == "Feature"
        assert uuid.UUID(feature["id"]).version == 5
        assert properties["objectType"] in ("detection", "annotation")
        classification = properties["classification"]
        assert ":" not in classification["name"]
        assert len(classification["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in classification["color"])
        for value in properties["measurements"].values():
            assert isinstance(value, (int, float))
            assert not isinstance(value, bool)
            assert np.isfinite(value)
        assert all(isinstance(value, str) for value in properties["metadata"].values())


def test_class_names_drop_colons_and_the_canonical_names_stay_in_metadata(classified, written):
    result, _ = classified
    document = json.loads(written.read_text())
    features = _by_label(document["features"])
    blast = result.cells[result.cells["is_blast"]].iloc[0]
    properties = features[int(blast["label"])]["properties"]
    canonical = blast["mutation_call"]
    assert properties["classification"]["name"] == canonical.replace("::", "-")
    assert properties["metadata"]["blastscope_class"] == canonical
    names = document["blastscope"]["class_names"]
    assert names["PML-RARA"] == "PML::RARA"
    assert names["RUNX1-RUNX1T1"] == "RUNX1::RUNX1T1"
    non_blast = result.cells[result.cells["is_nucleated"] & ~result.cells["is_blast"]].iloc[0]
    assert features[int(non_blast["label"])]["properties"]["classification"]["name"] == "Non-blast"


def test_slide_call_is_one_annotation_with_its_numbers(classified, written):
    result, _ = classified
    call = result.slide_call
    (annotation,) = [
        feature
        for feature in _features(written)
        if feature["properties"]["objectType"] == "annotation"
    ]
    properties = annotation["properties"]
    assert properties["classification"]["name"] == call.call.replace("::", "-")
    measurements = properties["measurements"]
    for name in call.classes:
        assert measurements[f"p_{name}"] == call.probabilities[name]
        assert measurements[f"p_{name}_low"] == call.interval[name][0]
        assert measurements[f"p_{name}_high"] == call.interval[name][1]
    assert measurements["n_blasts"] == call.n_blasts
    assert measurements["blast_percentage"] == call.blast_percentage
    height, width = result.labels.shape
    assert shapely.geometry.shape(annotation["geometry"]).bounds == (0, 0, width, height)


def test_ids_are_stable_across_exports_and_differ_between_images(classified, tmp_path):
    result, _ = classified
    kwargs = {"pixel_size_um": result.pixel_size_um, "image_sha256": INPUT_SHA256}
    first = write_geojson(tmp_path / "a.geojson", result.labels, result.cells, **kwargs)
    again = write_geojson(tmp_path / "b.geojson", result.labels, result.cells, **kwargs)
    other = write_geojson(
        tmp_path / "c.geojson",
        result.labels,
        result.cells,
        pixel_size_um=result.pixel_size_um,
        image_sha256="6" * 64,
    )
    ids = [[feature["id"] for feature in _features(path)] for path in (first, again, other)]
    assert ids[0] == ids[1]
    assert not set(ids[0]) & set(ids[2])
    assert len(set(ids[0])) == len(ids[0])


def test_non_nucleated_cells_are_left_out_unless_asked_for(classified, tmp_path):
    result, _ = classified
    path = write_geojson(
        tmp_path / "nucleated.geojson", result.labels, result.cells, pixel_size_um=0.25
    )
    exported = set(_by_label(_features(path)))
    nucleated = set(result.cells.loc[result.cells["is_nucleated"], "label"])
    assert exported == nucleated
    labels, cells, _ = read_geojson(path)
    assert set(np.unique(labels)) - {0} == nucleated
    assert list(cells["label"]) == sorted(nucleated)


def test_tile_offset_moves_coordinates_and_reads_back_in_place(tmp_path):
    labels = np.zeros((6, 8), dtype=np.int32)
    labels[1:3, 2:7] = 4
    cells = pd.DataFrame({"label": [4], "area_px": [10]})
    path = write_geojson(
        tmp_path / "tile.geojson", labels, cells, pixel_size_um=0.5, offset_yx=(100, 2000)
    )
    (feature,) = _features(path)
    bounds = shapely.geometry.shape(feature["geometry"]).bounds
    assert bounds == (2002, 101, 2007, 103)  # (min x, min y, max x, max y) = (col, row, ...)
    read, _, metadata = read_geojson(path)
    assert np.array_equal(read, labels)
    assert metadata["offset_yx"] == [100, 2000]


def test_nucleus_labels_make_cell_objects_with_a_nucleus_geometry(tmp_path):
    labels = np.zeros((10, 12), dtype=np.int32)
    labels[1:9, 1:7] = 1
    labels[2:6, 8:11] = 2
    nuclei = np.zeros_like(labels)
    nuclei[3:6, 2:5] = 1
    path = write_geojson(
        tmp_path / "cells.geojson",
        labels,
        pd.DataFrame({"label": [1, 2]}),
        pixel_size_um=0.3,
        nucleus_labels=nuclei,
    )
    features = _by_label(_features(path))
    assert {feature["properties"]["objectType"] for feature in features.values()} == {"cell"}
    assert shapely.geometry.shape(features[1]["nucleusGeometry"]).bounds == (2, 3, 5, 6)
    assert "nucleusGeometry" not in features[2]
    _, _, metadata = read_geojson(path)
    assert np.array_equal(metadata["nucleus_labels"], nuclei)


def test_labels_the_table_lacks_are_exported_as_unmeasured(tmp_path):
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[0:3, 0:3] = 1
    labels[5:8, 4:8] = 7  # painted by hand after the table was made
    cells = pd.DataFrame({"label": [1, 3], "p_blast": [0.2, 0.9]})  # label 3 was erased
    path = write_geojson(tmp_path / "edited.geojson", labels, cells, pixel_size_um=0.3)
    document = json.loads(path.read_text())
    features = _by_label(document["features"])
    assert set(features) == {1, 7}
    assert features[7]["properties"]["classification"]["name"] == "Unmeasured"
    assert features[7]["properties"]["measurements"]["area_px"] == 12
    assert document["blastscope"]["rows_without_pixels"] == [3]
    assert document["blastscope"]["unmeasured_labels"] == [7]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.uint64])
def test_labels_of_any_integer_type_export(tmp_path, dtype):
    labels = np.zeros((6, 7), dtype=dtype)
    labels[1:4, 2:6] = 5
    path = write_geojson(
        tmp_path / "l.geojson", labels, pd.DataFrame({"label": [5]}), pixel_size_um=0.2
    )
    read, _, _ = read_geojson(path)
    assert np.array_equal(read, labels)


def test_inconsistent_inputs_are_refused_with_the_fix(tmp_path):
    labels = np.zeros((4, 4), dtype=np.int32)
    cells = pd.DataFrame({"label": [1]})
    with pytest.raises(ExportError, match="2-D integer labels image"):
        write_geojson(tmp_path / "a.geojson", labels.astype(float), cells, pixel_size_um=1.0)
    with pytest.raises(ExportError, match="'label' column"):
        write_geojson(tmp_path / "a.geojson", labels, pd.DataFrame({"id": [1]}), pixel_size_um=1)
    with pytest.raises(ExportError, match="object_type='cell'"):
        write_geojson(
            tmp_path / "a.geojson",
            labels,
            cells,
            pixel_size_um=1.0,
            object_type="detection",
            nucleus_labels=labels,
        )
    with pytest.raises(ExportError, match="positive number of µm per pixel"):
        write_geojson(tmp_path / "a.geojson", labels, cells, pixel_size_um=-1.0)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- golden file


def _golden_expected() -> tuple[np.ndarray, np.ndarray]:
    """The golden file's objects drawn by hand: (labels, nucleus labels), 29 rows x 34 columns."""
    labels = np.zeros((29, 34), dtype=np.int32)
    labels[3:5, 2:10] = 1  # L: the foot, x 2..10 and y 3..5
    labels[5:15, 2:5] = 1  # L: the upright, x 2..5 and y 5..15
    labels[2:10, 20:30] = 2  # a square with a hole, x 20..30 and y 2..10
    labels[4:7, 23:26] = 0  # the hole, x 23..26 and y 4..7
    for row in range(20, 28):  # triangle (12, 20), (20.5, 20), (12, 28.5): centres x + y < 40.5
        labels[row, 12 : 12 + 8 - (row - 20)] = 3
    labels[22:24, 30:34] = 3  # second part of the MultiPolygon, x 30..34 and y 22..24
    nuclei = np.zeros_like(labels)
    nuclei[3:9, 27:29] = 2
    return labels, nuclei


def test_golden_qupath_file_reads_to_the_hand_drawn_labels():
    labels, cells, metadata = read_geojson(GOLDEN)
    expected, nuclei = _golden_expected()
    assert labels.shape == (29, 34)
    assert np.array_equal(labels, expected)
    assert np.array_equal(metadata["nucleus_labels"], nuclei)
    assert metadata["source"] == "geojson"
    assert metadata["annotations"] == ["Region 1"]
    assert list(cells["label"]) == [1, 2, 3]
    assert list(cells["object_type"]) == ["detection", "cell", "detection"]
    assert list(cells["classification"]) == ["Tumor", "Stroma", "Immune cells"]
    assert list(cells["area_px"]) == [46, 71, 44]
    assert cells.loc[0, "Area µm^2"] == 11.5
    assert cells.loc[0, "Nucleus: Circularity"] == 0.42
    assert cells.loc[1, "Cell: Area"] == 71.0
    assert np.isnan(cells.loc[2, "Cell: Area"])
    assert cells.loc[1, "object_id"] == "6b1e9d2c-3a7f-4c58-b0e4-91d2c7a5f8e3"


def test_golden_qupath_file_is_written_back_with_the_same_coordinates(tmp_path):
    labels, cells, metadata = read_geojson(GOLDEN)
    path = write_geojson(
        tmp_path / "again.geojson",
        labels,
        cells,
        pixel_size_um=None,
        nucleus_labels=metadata["nucleus_labels"],
    )
    features = _by_label(_features(path))
    golden = _features(GOLDEN)
    l_shape = features[1]["geometry"]["coordinates"][0]
    assert {tuple(point) for point in l_shape} == {
        (2, 3),
        (10, 3),
        (10, 5),
        (5, 5),
        (5, 15),
        (2, 15),
    }
    for label in (1, 2):
        written = shapely.geometry.shape(features[label]["geometry"])
        assert written.equals(shapely.geometry.shape(golden[label - 1]["geometry"]))
    assert shapely.geometry.shape(features[2]["nucleusGeometry"]).equals(
        shapely.geometry.shape(golden[1]["nucleusGeometry"])
    )
    expected, _ = _golden_expected()
    multi = shapely.geometry.shape(features[3]["geometry"])
    assert multi.geom_type == "MultiPolygon"
    assert multi.equals(_pixel_union(expected == 3))
    again, _, _ = read_geojson(path)
    assert np.array_equal(again, expected)


def test_reader_takes_a_bare_list_or_a_single_feature(tmp_path):
    golden = _features(GOLDEN)
    as_list = tmp_path / "list.geojson"
    as_list.write_text(json.dumps(golden[:3]))
    labels, _, _ = read_geojson(as_list)
    assert np.array_equal(labels, _golden_expected()[0])
    single = tmp_path / "single.geojson"
    single.write_text(json.dumps(golden[0]))
    labels, cells, _ = read_geojson(single)
    assert labels.shape == (15, 10)
    assert labels.sum() == 46
    assert list(cells["classification"]) == ["Tumor"]


def test_a_file_of_annotations_only_becomes_labels(tmp_path):
    annotations = [dict(feature) for feature in _features(GOLDEN)[:3]]
    for feature in annotations:
        feature["properties"] = {"name": "drawn by hand"}  # no objectType: an annotation
    path = tmp_path / "annotations.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": annotations}))
    labels, cells, _ = read_geojson(path)
    assert np.array_equal(labels, _golden_expected()[0])
    assert list(cells["object_type"]) == ["annotation"] * 3


def test_reader_errors_name_the_problem(tmp_path):
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(ExportError, match="not valid JSON"):
        read_geojson(broken)
    other = tmp_path / "other.geojson"
    other.write_text('{"type": "Point", "coordinates": [1, 2]}')
    with pytest.raises(ExportError, match="holds no GeoJSON features"):
        read_geojson(other)
    with pytest.raises(ExportError, match="No GeoJSON file"):
        read_geojson(tmp_path / "missing.geojson")
    huge = tmp_path / "huge.geojson"
    square = [[[0, 0], [90000, 0], [90000, 90000], [0, 90000], [0, 0]]]
    huge.write_text(
        json.dumps(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": square},
                "properties": {"objectType": "detection"},
            }
        )
    )
    with pytest.raises(ExportError, match="export a region of the slide"):
        read_geojson(huge)


def test_a_whole_slide_tile_with_ids_in_the_hundreds_of_millions_gives_the_same_outlines():
    from blastscope.export.outlines import label_windows

    labels = np.zeros((64, 64), np.int64)
    labels[5:15, 5:20] = 1
    labels[30:50, 40:60] = 2
    labels[52:60, 2:9] = 3
    stride = 400 * 2**20  # tile 400 of a whole slide: ids above 4 x 10^8
    sparse = np.where(labels > 0, labels + stride, 0)
    windows = label_windows(sparse)  # memory per label present, not per id
    assert sorted(windows) == [stride + 1, stride + 2, stride + 3]
    assert windows[stride + 2] == (slice(30, 50), slice(40, 60))
    compact = labels_geometries(labels, [1, 2, 3])
    wide = labels_geometries(sparse, [stride + 1, stride + 2, stride + 3])
    assert [wide[stride + k] for k in (1, 2, 3)] == [compact[k] for k in (1, 2, 3)]


# --------------------------------------------------------------------------- shapes


def test_simplified_outlines_stay_within_a_pixel_and_centroids_are_the_cells_centres(
    classified, written, tmp_path
):
    """A whole slide's GeoJSON may draw its cells simplified or as centroids (a fraction of
    the bytes); both stay where the cells are."""
    result, _ = classified
    kwargs = {"pixel_size_um": result.pixel_size_um, "image_sha256": INPUT_SHA256}
    paths = {}
    for shapes in ("simplified", "centroid"):
        paths[shapes] = tmp_path / f"{shapes}.geojson"
        write_geojson(paths[shapes], result.labels, result.cells, shapes=shapes, **kwargs)
    outlines = _by_label(_features(written))
    simplified = _by_label(_features(paths["simplified"]))
    centroids = _by_label(_features(paths["centroid"]))
    assert (
        simplified.keys()
        == centroids.keys()
        == {int(label) for label in result.cells.loc[result.cells["is_nucleated"], "label"]}
    )
    table = result.cells.set_index("label")
    for label, feature in simplified.items():
        traced = shapely.geometry.shape(outlines[label]["geometry"])
        thinned = shapely.geometry.shape(feature["geometry"])
        assert thinned.is_valid
        assert traced.hausdorff_distance(thinned) <= 1.0  # SIMPLIFY_TOLERANCE_PX
        assert abs(thinned.area - traced.area) <= 0.05 * traced.area
        corners = {tuple(point) for point in traced.exterior.coords}
        assert {tuple(point) for point in thinned.exterior.coords} <= corners  # integers kept
        point = centroids[label]["geometry"]
        assert point["type"] == "Point"
        assert "nucleusGeometry" not in centroids[label]
        # pixel (row, col) covers [col, col+1] x [row, row+1]: its centre is at +0.5
        expected = (table.loc[label, "centroid_x"] + 0.5, table.loc[label, "centroid_y"] + 0.5)
        assert point["coordinates"] == pytest.approx(expected, abs=0.01)
        assert feature["id"] == centroids[label]["id"] == outlines[label]["id"]  # same objects
    outline_bytes = tmp_path / "outline.geojson"
    write_geojson(outline_bytes, result.labels, result.cells, **kwargs)
    size = outline_bytes.stat().st_size
    assert paths["simplified"].stat().st_size < 0.7 * size
    assert paths["centroid"].stat().st_size < 0.5 * size
    assert json.loads(paths["centroid"].read_text())["blastscope"]["shapes"] == "centroid"
    # read back: simplified outlines give the cells again, closely; centroids say why not
    labels, _, _ = read_geojson(paths["simplified"])
    for label in simplified:
        mine, theirs = result.labels == label, labels == label
        assert (mine & theirs).sum() / (mine | theirs).sum() >= 0.8
    with pytest.raises(ExportError, match="none is a Polygon or MultiPolygon"):
        read_geojson(paths["centroid"])
    with pytest.raises(ExportError, match="choose outline, simplified, centroid"):
        write_geojson(tmp_path / "x.geojson", result.labels, result.cells, shapes="dots", **kwargs)

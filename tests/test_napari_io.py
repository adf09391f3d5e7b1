"""The plugin's GeoJSON reader and Labels writers, through napari's own save and open."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from blastscope.export import export_paths, read_cells_table, read_geojson, write_geojson
from blastscope.widgets._io import get_geojson_reader
from blastscope.widgets._layers import show_cells
from export_cases import classified_result
from widget_cases import add_smear_with_cells, isolate_settings, notifications, wait_for

PLUGIN = "napari-blastscope"

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def classified():
    return classified_result(shape=(256, 384))


@pytest.fixture
def viewer_with_cells(make_napari_viewer_proxy, classified):
    result, image = classified
    viewer = make_napari_viewer_proxy()
    image_layer = viewer.add_image(
        image, name="field", rgb=True, scale=(result.pixel_size_um, result.pixel_size_um)
    )
    cells_layer = show_cells(viewer, image_layer, result)
    viewer.layers.selection.active = cells_layer
    return viewer, cells_layer


def test_saved_geojson_opens_as_the_same_labels_layer(viewer_with_cells, classified, tmp_path):
    result, _ = classified
    viewer, layer = viewer_with_cells
    features = layer.features.copy()
    row = int(np.flatnonzero(features["is_nucleated"] & features["blast_override"].isna())[0])
    features.loc[row, "blast_override"] = True  # the user's call, made in the viewer
    layer.features = features
    target = tmp_path / "exported.geojson"
    written = viewer.layers.save(str(target), selected=True, plugin=PLUGIN)
    assert written == [str(target)]

    (opened,) = viewer.open(str(target), plugin=PLUGIN)
    assert opened.name == "exported"
    assert opened.__class__.__name__ == "Labels"
    assert np.array_equal(opened.data, result.labels)
    pd.testing.assert_frame_equal(
        opened.features.reset_index(drop=True), features.reset_index(drop=True), check_exact=True
    )
    assert opened.features.loc[row, "blast_override"]
    assert tuple(opened.scale) == tuple(layer.scale)
    assert opened.metadata["pixel_size_um"] == result.pixel_size_um
    assert opened.metadata["slide_call"] == result.slide_call.to_dict()
    content = json.loads(target.read_text())
    assert content["blastscope"]["napari"]["scale"] == [result.pixel_size_um] * 2


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_saved_tables_hold_the_layer_features(viewer_with_cells, classified, tmp_path, suffix):
    result, _ = classified
    viewer, layer = viewer_with_cells
    target = tmp_path / f"cells{suffix}"
    written = viewer.layers.save(str(target), selected=True, plugin=PLUGIN)
    assert written == [str(target), str(target) + ".json"]
    table, sidecar = read_cells_table(target)
    expected = layer.features.drop(columns="index").reset_index(drop=True)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert sidecar["slide_call"] == result.slide_call.to_dict()
    assert sidecar["pixel_size_um"] == result.pixel_size_um


def test_a_plain_labels_layer_saves_and_opens_without_a_table(make_napari_viewer_proxy, tmp_path):
    viewer = make_napari_viewer_proxy()
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[5:20, 10:18] = 3
    labels[25:35, 40:55] = 9
    layer = viewer.add_labels(labels, name="drawn")
    viewer.layers.selection.active = layer
    target = tmp_path / "drawn.geojson"
    assert viewer.layers.save(str(target), selected=True, plugin=PLUGIN) == [str(target)]
    read, cells, _ = read_geojson(target)
    assert np.array_equal(read, labels)
    assert list(cells["label"]) == [3, 9]
    (opened,) = viewer.open(str(target), plugin=PLUGIN)
    assert list(opened.features["index"]) == [3, 9]


def test_the_reader_claims_only_geojson_files():
    assert get_geojson_reader("cells.geojson") is not None
    assert get_geojson_reader(["a.geojson", "b.GEOJSON"]) is not None
    assert get_geojson_reader("field.tif") is None
    assert get_geojson_reader(["a.geojson", "b.csv"]) is None


def test_a_geojson_from_the_export_dock_reopens_over_its_image(
    make_napari_viewer_proxy, monkeypatch, tmp_path, qtbot
):
    isolate_settings(monkeypatch, tmp_path)
    viewer = make_napari_viewer_proxy()
    image, session = add_smear_with_cells(viewer, translate=(6.0, -4.0))
    assert tuple(image.scale) != (1.0, 1.0)  # µm per pixel, as the sample data opens
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    dock.folder.value = str(tmp_path / "out")
    for name, box in dock.formats.items():
        box.value = name == "geojson"
    dock.include_non_nucleated.value = True  # every cell, so the layers compare pixel for pixel
    dock.run_button.native.click()
    wait_for(dock, qtbot)

    (opened,) = viewer.open(str(export_paths(tmp_path / "out", "smear")["geojson"]), plugin=PLUGIN)
    assert np.array_equal(opened.data, session.layer.data)
    assert tuple(opened.scale) == tuple(image.scale)
    assert tuple(opened.translate) == tuple(image.translate)
    assert np.array_equal(opened.extent.world, image.extent.world[:, :2])
    corner = opened.data_to_world((10, 20))
    assert np.allclose(image.world_to_data(corner)[:2], (10, 20))


def test_a_file_without_a_placement_opens_in_image_pixels_and_names_its_pixel_size(
    make_napari_viewer_proxy, tmp_path
):
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:15, 10:30] = 2
    target = write_geojson(
        tmp_path / "cli.geojson", labels, pd.DataFrame({"label": [2]}), pixel_size_um=0.25
    )
    viewer = make_napari_viewer_proxy()
    with notifications() as messages:
        (opened,) = viewer.open(str(target), plugin=PLUGIN)
    assert tuple(opened.scale) == (1.0, 1.0)
    assert np.array_equal(opened.data, labels)
    assert any("0.25 µm per pixel" in message for message in messages), messages


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"type": "FeatureCollection", "features": []}', "holds no features"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},'
            ' "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [NaN, 1], [2, 2]]]}}]}',
            "not finite",
        ),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},'
            ' "geometry": {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}}]}',
            "no area",
        ),
    ],
)
def test_a_file_that_cannot_be_read_opens_nothing_and_says_why(
    make_napari_viewer_proxy, tmp_path, content, problem
):
    target = tmp_path / "bad.geojson"
    target.write_text(content)
    viewer = make_napari_viewer_proxy()
    with notifications() as messages:
        assert viewer.open(str(target), plugin=PLUGIN) == []
    assert not viewer.layers
    assert any("bad.geojson" in message and problem in message for message in messages), messages


def test_a_tiled_run_made_with_no_labels_opens_as_points_at_its_nucleated_cells(
    make_napari_viewer_proxy, tmp_path
):
    """Without labels.zarr the folder still opens: each nucleated cell of the tables a point
    at its level-0 centre (in µm, over the slide), as wide as the cell, coloured by p_blast,
    with its row as features; a notification says why and how to see the outlines."""
    from blastscope.palette import p_blast_rgb
    from blastscope.pipeline import PipelineConfig, loaded
    from blastscope.progress import run_steps
    from blastscope.slide import Region
    from blastscope.synthetic import generate_field
    from blastscope.wholeslide import whole_slide_steps
    from test_slide import write_ome_pyramid

    field = generate_field(3, "default", shape=(512, 512))
    canvas = np.full((768, 1024, 3), np.median(field.image.reshape(-1, 3), axis=0), np.uint8)
    canvas[256:, 512:] = field.image  # the region below sits at this corner of the slide
    path = tmp_path / "slide.ome.tif"
    write_ome_pyramid(path, canvas, field.pixel_size_um)
    steps = whole_slide_steps(
        path,
        tmp_path / "out",
        loaded(PipelineConfig()),
        region=Region(512, 256, 512, 512),
        tile_px=512,
        write_labels=False,
    )
    folder = run_steps(steps).folder
    tables = [read_cells_table(table)[0] for table in sorted(folder.glob("cells/tile_*.csv"))]
    nucleated = pd.concat(tables, ignore_index=True).query("is_nucleated")
    assert len(nucleated) > 5

    viewer = make_napari_viewer_proxy()
    with notifications() as messages:
        (points,) = viewer.open(str(folder), plugin=PLUGIN)
    assert type(points).__name__ == "Points"
    assert points.name == "slide.tiled cells"
    size = field.pixel_size_um
    assert tuple(points.scale) == pytest.approx((size, size))
    centres = nucleated[["centroid_y", "centroid_x"]].to_numpy()
    np.testing.assert_allclose(points.data, centres)  # level-0 pixels of the slide
    hit = field.labels[tuple((centres - (256, 512)).astype(int).T)]
    assert (hit > 0).mean() >= 0.9  # each on a cell the generator drew there
    assert points.features["label"].tolist() == nucleated["label"].tolist()
    np.testing.assert_allclose(points.size, nucleated["diameter_um"] / size)
    np.testing.assert_allclose(
        points.face_color[:, :3], p_blast_rgb(nucleated["p_blast"].to_numpy()) / 255
    )
    assert any(
        "slide.tiled was run with --no-labels" in message
        and f"its {len(nucleated)} nucleated cells show as points" in message
        and "without --no-labels" in message
        for message in messages
    ), messages

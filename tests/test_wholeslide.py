"""A whole slide tile by tile (written here as a pyramidal OME-TIFF): the tiled cells match a
one-piece run, ids never collide, cells cut by a tile border are kept once and whole, and a run
stopped midway is finished by a rerun that redoes only the tiles left."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from blastscope.pipeline import PipelineConfig, analyse, loaded
from blastscope.progress import run_steps
from blastscope.slide import Region, SlideError
from blastscope.synthetic import generate_field
from blastscope.wholeslide import ID_STRIDE, whole_slide_steps
from test_slide import positions, write_ome_pyramid

TILE_PX, HALO_PX = 512, 128


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    field = generate_field(8, "default", shape=(1280, 1280), mutation="NPM1", blast_fraction=0.6)
    path = tmp_path_factory.mktemp("slide") / "slide.ome.tif"
    write_ome_pyramid(path, field.image, field.pixel_size_um)
    return path, field


@pytest.fixture(scope="module")
def config():
    return loaded(PipelineConfig())


def match_iou(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each cell of ``reference``, the IoU of the ``other`` cell that overlaps it most."""
    ious = []
    for label in np.unique(reference[reference > 0]):
        mask = reference == label
        overlap = other[mask]
        overlap = overlap[overlap > 0]
        if not len(overlap):
            ious.append(0.0)
            continue
        best = np.bincount(overlap.astype(np.int64)).argmax()
        partner = other == best
        ious.append((mask & partner).sum() / (mask | partner).sum())
    return np.array(ious)


def test_a_tiled_run_matches_the_one_piece_run(slide, config, tmp_path):
    path, field = slide
    outcome = run_steps(whole_slide_steps(path, tmp_path, config, tile_px=TILE_PX, halo_px=HALO_PX))
    assert outcome.tiles_run == 9
    tiled = np.asarray(zarr.open_array(str(outcome.folder / "labels.zarr" / "0"), mode="r"))
    one_piece = analyse(field.image, field.pixel_size_um, config)
    ids = np.unique(tiled[tiled > 0])
    assert len(ids) == outcome.counts["cells"]  # every kept cell once, none twice
    assert set(ids // ID_STRIDE) <= set(range(9))
    n_one = one_piece.n_cells
    assert abs(outcome.counts["cells"] - n_one) <= 0.03 * n_one
    ious = match_iou(one_piece.labels, tiled)
    assert (ious >= 0.9).mean() >= 0.9  # cells across tile borders are whole
    assert abs(outcome.counts["blasts"] - one_piece.n_blasts) <= max(3, 0.1 * one_piece.n_blasts)
    assert outcome.slide_call.call == one_piece.slide_call.call == "NPM1"
    collection = json.loads((outcome.folder / "slide.geojson").read_text())
    detections = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
    assert len(detections) == outcome.counts["nucleated"]  # QuPath gets the nucleated cells
    record = json.loads((outcome.folder / "slide.json").read_text())
    assert record["area_analysed_mm2"] == pytest.approx(1280**2 * (field.pixel_size_um / 1000) ** 2)


def test_a_run_stopped_midway_is_finished_by_a_rerun_of_the_tiles_left(slide, config, tmp_path):
    path, _ = slide
    region = Region(0, 0, 1024, 1024)
    steps = whole_slide_steps(path, tmp_path, config, region=region, tile_px=TILE_PX)
    seen = 0
    for event in steps:  # stop (Cancel, Ctrl-C) when the third tile starts
        if event.stage == "tiles" and event.done == 2:
            seen += 1
            steps.close()
            break
    assert seen == 1
    done = json.loads((tmp_path / "slide.tiled" / "tiles_done.json").read_text())
    assert done["tiles"] == [0, 1]
    assert not (tmp_path / "slide.tiled" / "slide.json").exists()
    outcome = run_steps(whole_slide_steps(path, tmp_path, config, region=region, tile_px=TILE_PX))
    assert (outcome.tiles_reused, outcome.tiles_run) == (2, 2)
    fresh = run_steps(
        whole_slide_steps(path, tmp_path / "fresh", config, region=region, tile_px=TILE_PX)
    )
    assert outcome.counts == fresh.counts
    resumed = np.asarray(zarr.open_array(str(outcome.folder / "labels.zarr" / "0"), mode="r"))
    whole = np.asarray(zarr.open_array(str(fresh.folder / "labels.zarr" / "0"), mode="r"))
    np.testing.assert_array_equal(resumed, whole)


def test_run_tiled_from_the_command_line_streams_a_region(slide, tmp_path, capsys):
    from blastscope.cli import main

    path, _ = slide
    argv = ["run", str(path), "--tiled", "--roi", "0,0,512,512", "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tiles: 1 analysed, 0 from an earlier run" in printed
    assert (tmp_path / "slide.tiled" / "slide.json").is_file()
    assert main(argv) == 0  # everything done: the rerun reuses the tile
    assert "tiles: 0 analysed, 1 from an earlier run" in capsys.readouterr().out


def test_tiles_of_empty_glass_are_skipped_and_the_area_counts_only_what_was_analysed(
    config, tmp_path
):
    field = generate_field(3, "default", shape=(512, 512))
    canvas = np.empty((1536, 2048, 3), np.uint8)
    canvas[:] = (232, 228, 236)  # pale, grey glass
    top, left = 700, 1100
    canvas[top : top + 512, left : left + 512] = field.image
    path = tmp_path / "glass.ome.tif"
    write_ome_pyramid(path, canvas, field.pixel_size_um)
    outcome = run_steps(whole_slide_steps(path, tmp_path / "out", config, tile_px=TILE_PX))
    record = json.loads((outcome.folder / "slide.json").read_text())
    assert record["tiles"] == {"total": 12, "analysed": 4}  # the 4 tiles the field overlaps
    assert outcome.tiles_run == 4
    assert outcome.area_mm2 == pytest.approx(4 * TILE_PX**2 * (field.pixel_size_um / 1000) ** 2)
    assert outcome.counts["cells"] > 20
    collection = json.loads((outcome.folder / "glass.geojson").read_text())
    xs = [x for feature in collection["features"] for x, _ in positions(feature["geometry"])]
    assert left - 64 <= min(xs)  # level-0 pixels of the slide, around the field
    assert max(xs) <= left + 512 + 64


@pytest.mark.gui
def test_napari_opens_a_tiled_result_as_multiscale_labels_over_the_slide(
    make_napari_viewer_proxy, slide, config, tmp_path
):
    from widget_cases import PLUGIN

    path, field = slide
    outcome = run_steps(
        whole_slide_steps(
            path, tmp_path, config, region=Region(256, 0, 1024, 1280), tile_px=TILE_PX
        )
    )
    viewer = make_napari_viewer_proxy()
    viewer.open(str(path), plugin=PLUGIN)  # the slide under its cells
    (cells,) = viewer.open(str(outcome.folder), plugin=PLUGIN)
    assert cells.multiscale
    assert [level.shape for level in cells.data] == [(1280, 1024), (640, 512)]
    size = field.pixel_size_um
    assert tuple(cells.scale) == pytest.approx((size, size))
    assert tuple(cells.translate) == pytest.approx((0.0, 256 * size))  # over its region
    assert len(cells.features) == outcome.counts["cells"]
    label = int(cells.features["label"].iloc[0])
    assert label in np.unique(np.asarray(cells.data[0]))


def test_slide_wide_ids_never_overflow():
    from blastscope.wholeslide import labels_dtype

    assert labels_dtype(4096) == "uint32"  # the last tile's ids still fit
    assert np.iinfo(np.uint32).max >= 4095 * ID_STRIDE + ID_STRIDE - 1
    assert labels_dtype(4097) == "uint64"  # e.g. 100,000^2 pixels in 1,024-pixel tiles


def test_other_settings_redo_every_tile_and_pool_nothing_stale(slide, config, tmp_path):
    path, _ = slide
    region = Region(0, 0, 512, 512)
    first = run_steps(whole_slide_steps(path, tmp_path, config, region=region, tile_px=TILE_PX))
    stricter = loaded(PipelineConfig(blast_threshold=0.95))
    again = run_steps(whole_slide_steps(path, tmp_path, stricter, region=region, tile_px=TILE_PX))
    assert (again.tiles_reused, again.tiles_run) == (0, 1)  # a new threshold: redone
    assert again.counts["cells"] == first.counts["cells"]
    assert again.counts["blasts"] <= first.counts["blasts"]
    with pytest.raises(SlideError, match="starts outside the slide"):
        run_steps(whole_slide_steps(path, tmp_path, config, region=Region(5000, 0, 10, 10)))

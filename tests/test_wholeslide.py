"""A whole slide tile by tile (written here as a pyramidal OME-TIFF): the tiled cells match a
one-piece run, ids never collide, cells cut by a tile border are kept once and whole, and a run
stopped midway is finished by a rerun that redoes only the tiles left."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import warnings
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import zarr

from blastscope.export import ExportError
from blastscope.export.tables import read_cells_table
from blastscope.pipeline import PipelineConfig, analyse, loaded
from blastscope.progress import run_steps
from blastscope.segment import SegmentationParams
from blastscope.slide import DEFAULT_TILE_PX, Region, SlideError, open_slide
from blastscope.slide_call import call_headline
from blastscope.synthetic import generate_field
from blastscope.wholeslide import ID_STRIDE, survey_slide, tile_cores, whole_slide_steps
from test_slide import positions, write_ome_pyramid

TILE_PX, HALO_PX = 512, 128


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    field = generate_field(8, "default", shape=(1536, 1536), mutation="NPM1", blast_fraction=0.6)
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


@pytest.fixture(scope="module")
def tiled(slide, config, tmp_path_factory):
    """The whole slide analysed in 3 x 3 tiles."""
    path, _ = slide
    out = tmp_path_factory.mktemp("tiled")
    return run_steps(whole_slide_steps(path, out, config, tile_px=TILE_PX, halo_px=HALO_PX))


def tiled_labels(outcome) -> np.ndarray:
    return np.asarray(zarr.open_array(str(outcome.folder / "labels.zarr" / "0"), mode="r"))


def test_a_tiled_run_matches_the_one_piece_run(slide, tiled, config):
    _, field = slide
    assert tiled.tiles_run == 9
    labels = tiled_labels(tiled)
    one_piece = analyse(field.image, field.pixel_size_um, config)
    ids = np.unique(labels[labels > 0])
    assert len(ids) == tiled.counts["cells"]  # every kept cell once, none twice
    assert set(ids // ID_STRIDE) <= set(range(9))
    n_one = one_piece.n_cells
    assert abs(tiled.counts["cells"] - n_one) <= 0.01 * n_one
    ious = match_iou(one_piece.labels, labels)  # in label order, as the cells table
    nucleated = one_piece.cells["is_nucleated"].to_numpy()
    assert (ious[nucleated] >= 0.9).all()  # white cells across tile borders are whole
    assert (ious >= 0.9).mean() >= 0.99  # a few red cells and platelets at the slide edge differ
    assert abs(tiled.counts["blasts"] - one_piece.n_blasts) <= max(3, 0.1 * one_piece.n_blasts)
    assert tiled.slide_call.call == one_piece.slide_call.call == "NPM1"
    collection = json.loads((tiled.folder / "slide.geojson").read_text())
    detections = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
    assert len(detections) == tiled.counts["nucleated"]  # QuPath gets the nucleated cells
    record = json.loads((tiled.folder / "slide.json").read_text())
    assert record["area_analysed_mm2"] == pytest.approx(1536**2 * (field.pixel_size_um / 1000) ** 2)
    assert {"blastscope", "torch", "cellpose"} <= set(record["software"])
    assert Path(record["cells_parquet"]).is_absolute()
    report = (tiled.folder / "slide.report.html").read_text()
    assert "Slide call: NPM1" in report
    assert f"{record['area_analysed_mm2']:.3f} mm²" in report
    assert f"<td>{tiled.counts['blasts']} (" in report  # blasts and their share of nucleated
    for figure in ("thumbnail", "blast_map", "p_blast"):
        assert (tiled.folder / f"slide.{figure}.png").stat().st_size > 1000


def test_with_the_same_grid_and_statistics_tiled_and_one_piece_labels_are_identical(slide, tiled):
    path, field = slide
    with open_slide(path) as opened:
        survey = survey_slide(opened, tile_cores(Region(0, 0, 1536, 1536), TILE_PX))
    assert all(survey.occupied)
    same_grid = SegmentationParams(tile_size=TILE_PX, tile_overlap_px=HALO_PX)
    one_piece = analyse(
        field.image,
        field.pixel_size_um,
        PipelineConfig(segmentation=same_grid, blast_model=None),
        statistics=survey.statistics,
    )
    labels = tiled_labels(tiled)
    assert (labels > 0).sum() == (one_piece.labels > 0).sum()
    pairs = np.unique(np.stack([one_piece.labels[labels > 0], labels[labels > 0]]), axis=1)
    assert (pairs[0] > 0).all()  # no tiled cell pixel is background in the one-piece run
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]  # one to one
    assert pairs.shape[1] == tiled.counts["cells"] == one_piece.n_cells


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
    assert "(1 tiles analysed, 0 from an earlier run)" in printed
    assert (tmp_path / "slide.tiled" / "slide.json").is_file()
    assert main(argv) == 0  # everything done: the rerun reuses the tile
    assert "(0 tiles analysed, 1 from an earlier run)" in capsys.readouterr().out


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
    make_napari_viewer_proxy, slide, config, tmp_path, monkeypatch
):
    from blastscope.widgets._layers import viewer_camera
    from blastscope.widgets._slide_view import tiled_result_view
    from widget_cases import PLUGIN, isolate_settings, notifications

    isolate_settings(monkeypatch, tmp_path)  # the docks' controls change: not the user's file

    path, field = slide
    outcome = run_steps(
        whole_slide_steps(
            path, tmp_path, config, region=Region(256, 0, 1024, 1280), tile_px=TILE_PX
        )
    )
    viewer = make_napari_viewer_proxy()
    viewer.open(str(path), plugin=PLUGIN)  # the slide under its cells
    colours, veil, cells = viewer.open(str(outcome.folder), plugin=PLUGIN)
    assert cells.multiscale
    assert [level.shape for level in cells.data] == [(1280, 1024), (640, 512)]
    size = field.pixel_size_um
    assert tuple(cells.scale) == pytest.approx((size, size))
    assert tuple(cells.translate) == pytest.approx((0.0, 256 * size))  # over its region
    assert len(cells.features) == outcome.counts["cells"]
    label = int(cells.features["label"].iloc[0])
    assert label in np.unique(np.asarray(cells.data[0]))
    # the field's colours, built lazily per chunk: p_blast on each cell's pixels, the veil at
    # the run's threshold
    assert colours.multiscale
    assert veil.multiscale
    assert colours.name == "slide.tiled cell colours"
    classified = cells.features.dropna(subset=["p_blast"]).iloc[0]
    pixels = np.asarray(cells.data[0]) == classified["label"]
    values = np.asarray(colours.data[0])[pixels]
    assert values == pytest.approx(np.full(pixels.sum(), classified["p_blast"]), abs=1e-6)
    threshold = json.loads((outcome.folder / "slide.json").read_text())["settings"]
    assert veil.contrast_limits == pytest.approx(
        [threshold["blast_threshold"] - 1, threshold["blast_threshold"] + 1]
    )
    assert np.isnan(np.asarray(colours.data[1])[np.asarray(cells.data[1]) == 0]).all()

    # the field docks say what they do not do on a whole slide's cells, and how to get it
    names = (
        "Classify blasts",
        "Edit and re-classify",
        "Export",
        "Segment cells",
        "Predict mutation",
    )
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in names}
    viewer.layers.selection.active = cells
    # no dock offers the overlays as an image to analyse; Predict mutation shows the run's call
    for name in ("Segment cells", "Predict mutation"):
        offered = docks[name]._image.choices
        assert colours not in offered
        assert veil not in offered
        assert [layer.name for layer in offered] == ["slide"]
    mutation = docks["Predict mutation"]
    recorded = json.loads((outcome.folder / "slide.json").read_text())["slide_call"]
    assert recorded is not None
    assert mutation.headline.text() == call_headline(recorded)
    assert mutation.chart.call.probabilities == pytest.approx(recorded["probabilities"])
    with notifications() as messages:
        for name in ("Classify blasts", "Edit and re-classify", "Export"):
            docks[name].run()
            assert not docks[name].runner.running
        docks["Segment cells"].recompute()
    assert len(messages) == 4, messages
    assert all("tiled run" in message for message in messages), messages
    assert all("rerun `blastscope run SLIDE --tiled`" in message for message in messages)

    # the threshold slider moves the veil and recounts from the table, with no inference
    classify = docks["Classify blasts"]
    assert classify.threshold.enabled
    assert classify.threshold.value == pytest.approx(threshold["blast_threshold"])
    classify.threshold.value = 0.9
    assert veil.contrast_limits == pytest.approx([-0.1, 1.9])
    table = cells.features
    blasts = int((table["is_nucleated"] & (table["p_blast"] >= 0.9)).sum())
    assert int(table["is_blast"].sum()) == blasts
    assert f"{blasts} blasts" in classify._counts.value
    assert "whole slide" in classify._counts.value
    # the Mutation dock follows: the call recounted at 0.9 (no interval while it is a preview)
    preview = tiled_result_view(viewer, cells).preview_call
    assert preview is not None
    assert mutation.headline.text() == call_headline(preview, exact=False)
    assert mutation.chart.call is preview
    # its pooling controls re-pool the call from the same table, the run's other settings kept
    view = tiled_result_view(viewer, cells)
    mutation.min_blasts.value = blasts + 2
    mutation.min_blasts.value = blasts + 1  # one more than the slide has: no call
    assert view.call_settings.min_blasts == blasts + 1
    assert view.call_settings.min_probability == recorded["min_probability"]
    assert view.preview_call.abstained
    assert mutation.headline.text() == call_headline(view.preview_call, exact=False)
    assert "insufficient" in mutation.headline.text().lower()
    mutation.min_blasts.value = recorded["min_blasts"]
    mutation.pooling.value = "geometric"
    geometric = view.preview_call
    assert geometric.pooling == "geometric"
    assert mutation.chart.call is geometric
    assert not classify._demo.native.isHidden()  # blast-smear, mutation-demo: demonstration
    # the inspector shows a clicked cell and centres a table row's cell
    _, inspector = viewer.window.add_plugin_dock_widget(PLUGIN, "Cell inspector and overrides")
    viewer.layers.selection.active = cells
    row = int(np.flatnonzero(table["label"] == classified["label"])[0])
    inspector._row_selected(row)
    assert f"Cell {int(classified['label'])}" in inspector.info.text()
    assert tuple(viewer_camera(viewer).center[-2:]) == pytest.approx(
        (classified["centroid_y"] * size, classified["centroid_x"] * size)
    )
    centre = np.argwhere(np.asarray(cells.data[0]) == classified["label"]).mean(axis=0)
    assert centre == pytest.approx(
        [classified["centroid_y"], classified["centroid_x"] - 256], abs=1.0
    )  # level-0 centroids, the layer placed over its region
    other = table.dropna(subset=["p_blast"]).iloc[-1]
    inside = np.argwhere(np.asarray(cells.data[0]) == other["label"])
    pixel = inside[np.abs(inside - inside.mean(axis=0)).sum(axis=1).argmin()]  # its middle
    click = SimpleNamespace(position=tuple(cells.data_to_world(pixel)), type="mouse_press")
    for callback in cells.mouse_drag_callbacks:  # a click (press, release) on that cell
        steps = callback(cells, click)
        if steps is not None:
            next(steps)
            click.type = "mouse_release"
            with contextlib.suppress(StopIteration):
                next(steps)
    assert f"Cell {int(other['label'])}" in inspector.info.text()
    with notifications() as messages:
        inspector._override(True)
    assert "Segment that region" in messages[0]


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
    # a finished run is not replaced unasked: it may be hours of work
    with pytest.raises(
        SlideError,
        match=r"finished run of slide.ome.tif with other settings "
        r"\(blast_threshold differ\): add overwrite=True to replace it",
    ):
        run_steps(whole_slide_steps(path, tmp_path, stricter, region=region, tile_px=TILE_PX))
    assert (tmp_path / "slide.tiled" / "slide.json").is_file()  # untouched
    again = run_steps(
        whole_slide_steps(path, tmp_path, stricter, region=region, tile_px=TILE_PX, overwrite=True)
    )
    assert (again.tiles_reused, again.tiles_run) == (0, 1)  # a new threshold: redone
    assert again.tiles_discarded == 1  # and said so
    assert "1 tiles of an earlier run with other settings were discarded" in again.tiles_text()
    assert first.tiles_discarded == 0
    assert again.counts["cells"] == first.counts["cells"]
    assert again.counts["blasts"] <= first.counts["blasts"]
    with pytest.raises(SlideError, match="starts outside the slide"):
        run_steps(whole_slide_steps(path, tmp_path, config, region=Region(5000, 0, 10, 10)))


def tile_tables(folder) -> list[pd.DataFrame]:
    return [read_cells_table(path)[0] for path in sorted((folder / "cells").glob("tile_*.csv"))]


def test_a_local_cluster_of_two_workers_writes_what_one_process_writes(slide, tiled, tmp_path):
    from blastscope.cli import main

    path, _ = slide
    argv = ["run", str(path), "--tiled", "--slide-tile", str(TILE_PX), "--out", str(tmp_path)]
    assert main([*argv, "--workers", "2", "--threads", "1"]) == 0
    folder = tmp_path / "slide.tiled"
    np.testing.assert_array_equal(tiled_labels(tiled), tiled_labels(SimpleNamespace(folder=folder)))
    for mine, theirs in zip(tile_tables(folder), tile_tables(tiled.folder), strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
    record = json.loads((folder / "slide.json").read_text())
    assert record["counts"] == tiled.counts
    assert record["slide_call"] == tiled.slide_call.to_dict()
    cohort = pd.read_parquet(tmp_path / "cells.parquet")  # the cohort table, one slide here
    assert len(cohort) == tiled.counts["cells"]
    assert set(cohort["slide_id"]) == {"slide"}


def test_a_batch_runs_a_whole_slide_and_a_field_both_on_the_cluster(slide, tiled, tmp_path, capsys):
    from blastscope.cli import main

    path, _ = slide
    source = tmp_path / "scans"
    source.mkdir()
    (source / "slide.ome.tif").symlink_to(path)
    field = generate_field(2, "default", shape=(384, 384))
    iio.imwrite(source / "field.png", field.image)  # a field: read whole, even with --tiled
    out = tmp_path / "out"
    argv = ["batch", str(source), "--tiled", "--slide-tile", str(TILE_PX), "--out", str(out)]
    assert main([*argv, "--workers", "2", "--threads", "1"]) == 0
    assert "note: running on 2 dask worker(s), scheduler tcp://" in capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv").set_index("slide_id")
    assert (summary["status"] == "done").all()
    assert summary.loc["slide", "cells"] == tiled.counts["cells"]
    assert summary.loc["slide", "blasts"] == tiled.counts["blasts"]
    assert "whole slide: 9 tiles analysed" in summary.loc["slide", "notes"]
    assert "analysed on dask worker tcp://" in summary.loc["field", "notes"]  # a task too
    np.testing.assert_array_equal(
        tiled_labels(tiled), tiled_labels(SimpleNamespace(folder=out / "slide.tiled"))
    )
    assert main(argv) == 0  # a rerun finds every tile done
    summary = pd.read_csv(out / "summary.csv").set_index("slide_id")
    assert "0 tiles analysed, 9 from an earlier run" in summary.loc["slide", "notes"]
    # the cohort table holds both slides, each with its own columns
    from blastscope.wholeslide import read_cohort_cells

    cohort = read_cohort_cells(out)
    assert cohort["slide_id"].value_counts().to_dict() == {
        "slide": tiled.counts["cells"],
        "field": summary.loc["field", "cells"],
    }
    assert set(cohort.loc[cohort["slide_id"] == "field", "field"]) == {"field.png"}
    assert cohort.loc[cohort["slide_id"] == "slide", "tile"].notna().all()


def test_a_batch_of_fields_on_two_workers_writes_what_one_process_writes(tmp_path):
    """Slides of fields are tasks when workers are asked for: each slide analysed and exported
    by a worker, the same tables, labels and calls as in this process."""
    from blastscope.cli import main

    source = tmp_path / "fields"
    for seed, slide_id in ((2, "patient-a"), (3, "patient-b")):
        (source / slide_id).mkdir(parents=True)
        field = generate_field(seed, "default", shape=(384, 384))
        iio.imwrite(source / slide_id / "field.png", field.image)
    argv = ["batch", str(source), "--pixel-size", "0.1", "--min-blasts", "1"]
    assert main([*argv, "--out", str(tmp_path / "here"), "--workers", "0"]) == 0
    assert main([*argv, "--out", str(tmp_path / "cluster"), "--workers", "2"]) == 0
    here = pd.read_csv(tmp_path / "here" / "summary.csv").set_index("slide_id")
    there = pd.read_csv(tmp_path / "cluster" / "summary.csv").set_index("slide_id")
    assert there["notes"].str.contains("analysed on dask worker").all()
    assert not here["notes"].fillna("").str.contains("worker").any()
    compared = ["status", "cells", "nucleated", "blasts", "call", "blast_percentage"]
    pd.testing.assert_frame_equal(here[compared], there[compared])
    for slide_id in ("patient-a", "patient-b"):
        folders = [tmp_path / where / slide_id for where in ("here", "cluster")]
        tables = [read_cells_table(folder / "field_cells.csv")[0] for folder in folders]
        pd.testing.assert_frame_equal(*tables)
        labels = [iio.imread(folder / "field_labels.ome.tif") for folder in folders]
        np.testing.assert_array_equal(*labels)


def test_cluster_options_are_checked_and_an_unreachable_scheduler_is_named(
    slide, tmp_path, monkeypatch, capsys
):
    from blastscope import distributed
    from blastscope.cli import main

    path, _ = slide
    assert main(["run", str(path), "--workers", "2", "--out", str(tmp_path)]) != 0
    assert "--workers applies to --tiled runs" in capsys.readouterr().err
    slide_tile = ["run", str(path), "--slide-tile", str(DEFAULT_TILE_PX), "--out", str(tmp_path)]
    assert main(slide_tile) != 0  # even at its default, the option is not silently ignored
    assert "--slide-tile applies to --tiled runs" in capsys.readouterr().err
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 1)
    argv = ["run", str(path), "--tiled", "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path)]
    assert main(argv) != 0
    error = capsys.readouterr().err
    assert "Could not reach a dask scheduler at tcp://127.0.0.1:9" in error
    assert "Traceback" not in error


def test_no_labels_writes_the_tables_and_a_full_disk_is_refused_before_any_tile(
    slide, config, tmp_path, monkeypatch
):
    import shutil

    from blastscope import wholeslide

    path, _ = slide
    region = Region(0, 0, 512, 512)
    steps = whole_slide_steps(
        path, tmp_path, config, region=region, tile_px=TILE_PX, write_labels=False
    )
    outcome = run_steps(steps)
    assert not (outcome.folder / "labels.zarr").exists()
    assert outcome.counts["cells"] > 20
    for name in ("slide.json", "slide.geojson", "slide.report.html"):
        assert (outcome.folder / name).is_file()
    assert len(pd.read_parquet(tmp_path / "cells.parquet")) == outcome.counts["cells"]

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(wholeslide.shutil, "disk_usage", lambda _: usage._replace(free=10**6))
    with pytest.raises(SlideError, match=r"GB are free: .*--no-labels"):
        run_steps(whole_slide_steps(path, tmp_path, config, tile_px=TILE_PX))
    # refused before anything was replaced: the earlier run's record and tables are intact
    assert json.loads((outcome.folder / "slide.json").read_text())["counts"] == outcome.counts
    assert len(list((outcome.folder / "cells").glob("tile_*.csv"))) == 1


def scheduled_tiles(client, wait_s: float = 10.0) -> list[str]:
    """The tile tasks the scheduler still holds, once they are gone or after ``wait_s``."""
    import time

    def tile_tasks(dask_scheduler) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks if "analyse_tile" in str(key)]

    deadline = time.monotonic() + wait_s
    while (left := client.run_on_scheduler(tile_tasks)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_stopping_a_cluster_run_cancels_its_tasks_and_a_rerun_here_finishes_it(
    slide, tiled, config, tmp_path, monkeypatch
):
    from blastscope.distributed import MALLOC_ARENAS, ClusterSettings, cluster

    path, _ = slide
    taken = socket.socket()  # dask's usual port in use, as by another run at the same time
    with contextlib.suppress(OSError):  # or in use already
        taken.bind(("", 8787))
        taken.listen()
    with contextlib.ExitStack() as stack:
        stack.enter_context(taken)
        warned = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        workers = stack.enter_context(cluster(ClusterSettings(workers=2, threads=1)))
        assert not [str(item.message) for item in warned if "already in use" in str(item.message)]
        # each worker process started with its malloc arenas limited (memory, see its text)
        limits = workers.client.run(lambda: os.environ.get("MALLOC_ARENA_MAX"))
        assert set(limits.values()) == {str(MALLOC_ARENAS)}
        cancelled = []
        cancel = workers.client.cancel

        def cancel_and_record(futures, *args, **kwargs):
            cancelled.append([future.status for future in futures])
            return cancel(futures, *args, **kwargs)

        # The real cancel, watched: dask would also drop tasks whose futures are collected, so
        # "no task left" alone would not show that the run cancels what it had in flight.
        monkeypatch.setattr(workers.client, "cancel", cancel_and_record)
        steps = whole_slide_steps(path, tmp_path, config, tile_px=TILE_PX, cluster=workers)
        for event in steps:  # Ctrl-C once the first tile is written
            if event.stage == "tiles" and "1 of 9 tiles analysed" in event.message:
                steps.close()
                break
        assert len(cancelled) == 1  # the tiles in flight, cancelled at once
        assert cancelled[0]
        assert not scheduled_tiles(workers.client)  # no tile task left running on the workers
    done = json.loads((tmp_path / "slide.tiled" / "tiles_done.json").read_text())["tiles"]
    assert len(done) == 1
    rerun = run_steps(whole_slide_steps(path, tmp_path, config, tile_px=TILE_PX))
    assert (rerun.tiles_reused, rerun.tiles_run) == (1, 8)
    assert rerun.counts == tiled.counts
    np.testing.assert_array_equal(tiled_labels(rerun), tiled_labels(tiled))


def test_the_labels_pyramid_is_an_ome_ngff_label_image_that_ome_zarr_reads(slide, tiled):
    """NGFF metadata written by blastscope itself; ome-zarr (its reader and the spec's
    models) only checks it here."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader
    from ome_zarr_models.v05 import ImageLabel

    _, field = slide
    path = tiled.folder / "labels.zarr"
    group = zarr.open_group(str(path), mode="r")
    model = ImageLabel.from_zarr(group)  # raises on any departure from the 0.5 schema
    (multiscale,) = model.ome_attributes.multiscales
    assert [axis.name for axis in multiscale.axes] == ["y", "x"]
    assert [str(axis.unit) for axis in multiscale.axes] == ["micrometer", "micrometer"]
    (node,) = list(Reader(parse_url(str(path)))())
    assert node.load(Multiscales) is not None
    assert [level.shape for level in node.data] == [(1536, 1536), (768, 768)]
    scales = [
        dataset["coordinateTransformations"][0]["scale"]
        for dataset in group.attrs["ome"]["multiscales"][0]["datasets"]
    ]
    size = field.pixel_size_um
    assert scales == [pytest.approx([size, size]), pytest.approx([2 * size, 2 * size])]
    np.testing.assert_array_equal(np.asarray(node.data[1]), tiled_labels(tiled)[::2, ::2])
    assert group["1"].metadata.dimension_names == ("y", "x")


def test_a_region_s_labels_are_placed_at_its_corner_of_the_slide_in_um():
    from blastscope.wholeslide import ngff_label_attributes

    attributes = ngff_label_attributes(3, 0.25, Region(x=1000, y=400, width=600, height=500))
    datasets = attributes["ome"]["multiscales"][0]["datasets"]
    assert [item["coordinateTransformations"][1]["translation"] for item in datasets] == [
        [100.0, 250.0]
    ] * 3
    assert [item["coordinateTransformations"][0]["scale"] for item in datasets] == [
        [0.25, 0.25],
        [0.5, 0.5],
        [1.0, 1.0],
    ]


def test_a_cohort_reads_as_one_table_with_its_slide_ids_as_text_and_no_empty_slide_first(
    slide, tiled, config, tmp_path
):
    """Slide ids that look like numbers keep their zeros, and a slide without cells (all
    glass) writes no file, since a file without columns read first would hide every column of
    the other slides from ``pandas.read_parquet``."""
    from blastscope.wholeslide import read_cohort_cells

    _, field = slide
    glass = tmp_path / "000.ome.tif"  # sorts first
    write_ome_pyramid(glass, np.full((1024, 1024, 3), 235, np.uint8), field.pixel_size_um)
    empty = run_steps(whole_slide_steps(glass, tmp_path, config, tile_px=TILE_PX))
    assert empty.counts["cells"] == 0
    assert not (tmp_path / "cells.parquet" / "slide_id=000").exists()
    cohort_file = tiled.folder.parent / "cells.parquet" / "slide_id=slide" / "cells.parquet"
    for slide_id in ("001", "010"):
        target = tmp_path / "cells.parquet" / f"slide_id={slide_id}" / "cells.parquet"
        target.parent.mkdir(parents=True)
        target.write_bytes(cohort_file.read_bytes())
    cohort = read_cohort_cells(tmp_path)
    assert sorted(set(cohort["slide_id"])) == ["001", "010"]
    assert len(cohort) == 2 * tiled.counts["cells"]
    assert {"p_blast", "is_blast", "centroid_x"} <= set(cohort.columns)
    plain = pd.read_parquet(tmp_path / "cells.parquet")  # pandas alone: columns, not ids
    assert {"p_blast", "is_blast", "centroid_x"} <= set(plain.columns)
    with pytest.raises(FileNotFoundError, match="run and batch write it there"):
        read_cohort_cells(tmp_path / "nothing")


def test_a_slide_s_geojson_as_centroids_is_rewritten_from_its_tiles_without_redoing_one(
    slide, tiled, config, tmp_path
):
    path, _ = slide
    shutil.copytree(tiled.folder, tmp_path / tiled.folder.name)
    steps = whole_slide_steps(
        path, tmp_path, config, tile_px=TILE_PX, halo_px=HALO_PX, geojson_shapes="centroid"
    )
    rerun = run_steps(steps)
    assert (rerun.tiles_run, rerun.tiles_reused) == (0, 9)
    features = json.loads((rerun.folder / "slide.geojson").read_text())["features"]
    assert len(features) == tiled.counts["nucleated"]
    assert {feature["geometry"]["type"] for feature in features} == {"Point"}
    outlines = json.loads((tiled.folder / "slide.geojson").read_text())["features"]
    assert [feature["id"] for feature in features] == [feature["id"] for feature in outlines]
    with pytest.raises(ExportError, match="choose outline, simplified, centroid"):
        run_steps(whole_slide_steps(path, tmp_path, config, geojson_shapes="dots"))

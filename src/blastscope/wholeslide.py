"""A whole slide, tile by tile, streamed to disk: bounded memory and resumable.

The slide (or a region of it) is cut into square tile *cores* of ``tile_px`` level-0 pixels;
each tile is read with a halo of ``halo_px`` around its core (only the tiles of the pyramid it
overlaps are decoded) and analysed as a field (:func:`blastscope.pipeline.analyse_steps`). A
tile keeps the cells whose centroid lies in its core, whole (their pixels in the halo too), so
a cell cut by a core border is kept once, by the tile that holds its centre. Kept cells get
slide-wide ids ``tile index x 2**20 + local id``, so tiles never compete for ids.

Results go to ``OUT/<slide id>.tiled/`` as they are made (a field run of the same slide keeps
``OUT/<slide id>/``); a first run or one with other settings starts that folder afresh:

- ``labels.zarr``: uint32 labels of the analysed area (uint64 beyond 4,096 tiles), a pyramid
  (``0`` full resolution, chunked by tile core; ``1``, ``2``, ... every second pixel, for
  viewing); one writer, the driver: a tile's cells are merged into what is there, never
  zeroing a neighbour's cell;
- ``cells/tile_<index>.csv`` (+ sidecar): each tile's cells with level-0 centroids;
- ``tiles_done.json``: the tiles finished, keyed by the input's sha256 and the settings; a rerun
  after a crash or Cancel redoes only the tiles in flight;
- ``<slide id>.geojson``: QuPath detections of the nucleated cells in level-0 pixels,
  streamed a tile at a time from each tile's ``cells/tile_<index>.features.json``;
- ``OUT/cells.parquet/slide_id=<slide id>/cells.parquet``: the slide's cells, a row group per
  tile (none for a slide without cells); a cohort's slides read as one table
  (:data:`COHORT_TABLE`, :func:`read_cohort_cells`);
- ``<slide id>.report.html`` (+ PNGs): the call, counts and area, a thumbnail with the blasts
  marked and a map of blast percentages (:mod:`blastscope.export.slide_report`);
- ``slide.json``: written last, the pooled slide call over every tile's blasts and the area
  analysed.

Whole-image statistics (the segmenter's intensity percentiles, the background colour, the crop
fill colour; :mod:`blastscope.field_statistics`) are taken once per slide, from full-resolution
patches spread over the tiles that hold cells (:func:`survey_slide`), and every tile uses them:
with the same tile grid and statistics, a one-piece run of the same pixels
(``SegmentationParams(tile_size=tile_px, tile_overlap_px=halo_px)``) gives the same labels up to
their numbering. Where cells of two tiles claim a pixel, the earlier tile's keeps it (as the
one-piece run pastes its tiles), whatever order the tiles finish in.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.distributed import (
    Cluster,
    portable_config,
    release_freed_memory,
    use_threads,
    worker_config,
)
from blastscope.export._atomic import AtomicFiles
from blastscope.export.geojson import geojson_collection
from blastscope.export.geojson_writer import check_shapes, with_shapes
from blastscope.export.slide_report import THUMBNAIL_SIDE_PX, slide_report_files
from blastscope.export.tables import read_cells_table, write_cells_table
from blastscope.field_statistics import FieldStatistics, field_statistics, stained_pixels
from blastscope.io import ImageInputError, check_pixel_size, image_sha256
from blastscope.jsonable import dumps_json
from blastscope.pipeline import PipelineConfig, analyse_steps, loaded
from blastscope.progress import Progress, Steps, run_steps
from blastscope.result import software_versions
from blastscope.slide import DEFAULT_TILE_PX, Region, SlideError, open_slide, slide_stem
from blastscope.slide_call import SlideCall

ID_STRIDE = 2**20
"""Slide-wide cell id = tile index x ID_STRIDE + the tile's own label id."""
DEFAULT_HALO_PX = 128
DONE_NAME = "tiles_done.json"
LABELS_NAME = "labels.zarr"
MARKER_NAME = "slide.json"


@dataclass
class WholeSlideOutcome:
    """What a whole-slide run made: the pooled call, counts, the area analysed (mm²), the
    tiles analysed now and reused from an earlier run, the output folder and the tiles of an
    earlier run with other settings that were discarded. Tiles of empty
    background (:func:`survey_slide`) are not analysed and not counted in the area."""

    slide_call: SlideCall | None
    counts: dict[str, int]
    area_mm2: float
    tiles_run: int
    tiles_reused: int
    folder: Path
    tiles_discarded: int = 0
    """Tiles an earlier run in the folder had finished with other settings (discarded)."""

    def tiles_text(self) -> str:
        """The tiles in words (the CLI's line, a batch's notes)."""
        text = f"{self.tiles_run} tiles analysed, {self.tiles_reused} from an earlier run"
        if self.tiles_discarded:
            text += (
                f"; {self.tiles_discarded} tiles of an earlier run with other settings were "
                "discarded (the same input, --roi, --slide-tile, models and thresholds reuse them)"
            )
        return text


def tile_cores(area: Region, tile_px: int) -> list[Region]:
    """The tile cores covering ``area`` (level-0 pixels), row by row."""
    cores = []
    for y in range(area.y, area.y + area.height, tile_px):
        for x in range(area.x, area.x + area.width, tile_px):
            width = min(tile_px, area.x + area.width - x)
            height = min(tile_px, area.y + area.height - y)
            cores.append(Region(x, y, width, height))
    return cores


def whole_slide_steps(
    path: str | Path,
    out_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    region: Region | None = None,
    pixel_size_um: float | None = None,
    tile_px: int = DEFAULT_TILE_PX,
    halo_px: int = DEFAULT_HALO_PX,
    cluster: Cluster | None = None,
    restart: bool = False,
    write_labels: bool = True,
    geojson_shapes: str = "outline",
    overwrite: bool = False,
    flag: str = "overwrite=True",
) -> Steps[WholeSlideOutcome]:
    """Analyse a whole slide (or ``region`` of it) tile by tile; see the module text.

    ``cluster``: the dask workers that analyse the tiles (each loads the models once; see
    :mod:`blastscope.distributed`), this process writing what they return; ``None`` analyses
    them here, one after another. Both give the same files. ``restart``: redo every tile,
    even those an earlier run with the same settings finished. A finished run of other settings
    in the folder is replaced only with ``overwrite`` or ``restart`` (``flag`` is how the error
    names it); an unfinished one's tiles are redone. ``write_labels`` False writes
    no ``labels.zarr`` (tables, GeoJSON and report only). ``geojson_shapes`` draws each cell
    of the slide's GeoJSON as its outline, a simplified outline or its centroid
    (:data:`~blastscope.export.geojson_writer.GEOJSON_SHAPES`; the tiles keep their outlines,
    so a rerun with another choice redoes no tile). Before any tile, the disk space the run may
    need (:func:`estimate_output_bytes`) is checked against what is free.
    """
    import zarr

    path = Path(path).absolute()  # as tasks name it to workers started in other folders
    if tile_px < 256 or halo_px < 0:
        raise SlideError(f"tile_px must be >= 256 and halo_px >= 0, got {tile_px}, {halo_px}.")
    check_shapes(geojson_shapes)
    config = loaded(config or PipelineConfig())
    # its own folder: a field run of the same slide (run --roi) keeps OUT/<slide id>/
    folder = Path(out_dir) / f"{slide_stem(path)}.tiled"  # made once the slide is checked
    with open_slide(path) as slide:
        height, width = slide.shape
        if region is not None and (region.x >= width or region.y >= height):
            raise SlideError(
                f"The region {region.as_text()} starts outside the slide ({width} x {height} "
                "level-0 pixels, x by y): give x < width and y < height."
            )
        area = region or Region(0, 0, width, height)
        area = Region(
            area.x, area.y, min(area.width, width - area.x), min(area.height, height - area.y)
        )
        size = pixel_size_um if pixel_size_um is not None else slide.pixel_size_um
        if size is None:
            raise SlideError(  # the notices say why: none recorded, or an impossible one
                " ".join(slide.notices)
                + " A whole slide's pixel size is not estimated tile by tile."
            )
        size = check_pixel_size(size)
        settings = {
            "input_sha256": image_sha256(path),
            "region": area.as_text(),
            "tile_px": tile_px,
            "halo_px": halo_px,
            "pixel_size_um": size,
            "models": [_model_record(config.blast_model), _model_record(config.mutation_model)],
            "blast_threshold": _threshold_used(config),
            "segmentation": repr(config.segmentation),
            "labels": write_labels,
        }
        cores = tile_cores(area, tile_px)
        survey = survey_slide(slide, cores)
        occupied = survey.occupied
        analysed = [core for core, kept in zip(cores, occupied, strict=True) if kept]
        analysed_px = sum(core.width * core.height for core in analysed)
        needed = estimate_output_bytes(analysed_px * size**2, write_labels)
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise SlideError(
                f"This run may need about {needed / 1e9:.1f} GB in {folder} (at most, for a "
                f"dense smear) and {free / 1e9:.1f} GB are free: free some space, choose another "
                "--out, or analyse a --roi"
                + ("" if not write_labels else ", or add --no-labels (tables and GeoJSON only)")
                + "."
            )
        yield Progress("disk", 1, 1, f"needs at most about {needed / 1e9:.2f} GB")
        key = hashlib.sha256(dumps_json(settings).encode()).hexdigest()
        if not (overwrite or restart):
            _refuse_other_finished_run(folder, settings, key, flag)
        # checked: from here on an earlier run's files are replaced
        done, discarded = (set(), 0) if restart else _done_tiles(folder, key)
        (folder / MARKER_NAME).unlink(missing_ok=True)  # rewritten last: absent = unfinished
        if not done:  # a first run, or other settings: nothing earlier may be pooled
            shutil.rmtree(folder / "cells", ignore_errors=True)
        (folder / "cells").mkdir(exist_ok=True)
        labels = None
        if write_labels:
            pyramid = zarr.open_group(str(folder / LABELS_NAME), mode="a" if done else "w")
            labels = pyramid.require_array(
                "0",
                shape=(area.height, area.width),
                chunks=(tile_px, tile_px),
                dtype=labels_dtype(len(cores)),
                fill_value=0,
                dimension_names=LABELS_AXES,
            )
        else:
            shutil.rmtree(folder / LABELS_NAME, ignore_errors=True)
        thumbnail, thumbnail_downsample = slide.thumbnail(area, THUMBNAIL_SIDE_PX)
        todo = [index for index, kept in enumerate(occupied) if kept and index not in done]
        reused, before = len(done), len(cores) - len(todo)
        yield Progress("tiles", before, len(cores), f"{len(todo)} tiles to analyse")
        job = TileJob(
            path,
            area,
            size,
            config,
            halo_px,
            survey.statistics,
            slide.bits,
            settings["input_sha256"],
        )
        tiles = [(index, cores[index]) for index in todo]
        if cluster is None:
            results = _tiles_here(slide, job, tiles)
        else:
            results = _tiles_on_cluster(cluster, job, tiles)
        finished = 0
        for item in results:
            if isinstance(item, Progress):  # a tile's own stages, when run in this process
                yield item
                continue
            _write_tile(item, area, labels, folder, size)
            done.add(item.index)
            _write_done(folder, key, done)
            release_freed_memory()
            finished += 1
            yield Progress(
                "tiles", before + finished, len(cores), f"{finished} of {len(todo)} tiles analysed"
            )
        run = len(todo)
    levels = 0
    if write_labels:
        yield Progress("labels pyramid", 0, 1)
        levels = write_label_levels(folder / LABELS_NAME, size, area)
        yield Progress("labels pyramid", 1, 1, f"{levels} levels")
    cohort_table = cells_parquet_path(out_dir, folder.stem)
    with AtomicFiles(overwrite=True) as files:
        # one pass over the tile tables: the cohort Parquet, and the columns the call needs
        cells = _pool_cells(folder, sorted(done), files.temporary(cohort_table))
        slide_call = None
        mutation = config.mutation_model
        if config.blast_model is not None and mutation is not None and len(cells):
            slide_call = config.slide_call.call(cells, tuple(mutation.classes))
        counts = {
            "cells": len(cells),
            "nucleated": int(cells["is_nucleated"].sum()) if len(cells) else 0,
            "blasts": int(cells["is_blast"].sum()) if "is_blast" in cells and len(cells) else 0,
        }
        area_mm2 = analysed_px * (size / 1000.0) ** 2
        record = {
            "slide": path.name,
            "software": software_versions(),
            "settings": settings,
            "counts": counts,
            "area_analysed_mm2": area_mm2,
            "tiles": {"total": len(cores), "analysed": len(analysed)},
            "slide_call": slide_call.to_dict() if slide_call is not None else None,
            "labels_levels": levels,
            "pixel_size_um": size,
            "offset_yx": [area.y, area.x],
            "cells_parquet": str(cohort_table.absolute()) if len(cells) else None,
        }
        _stream_geojson(
            files.temporary(folder / f"{folder.stem}.geojson"), folder, sorted(done), geojson_shapes
        )
        report = slide_report_files(
            folder, folder.stem, record, cells, thumbnail, thumbnail_downsample
        )
        for target, data in report.items():
            files.temporary(target).write_bytes(data)
        files.temporary(folder / MARKER_NAME).write_text(
            dumps_json(record, where="the slide record"), encoding="utf-8"
        )
    if not len(cells):
        _drop_cohort_file(cohort_table)
    return WholeSlideOutcome(slide_call, counts, area_mm2, run, reused, folder, discarded)


BYTES_PER_OBJECT = 1_400
"""Disk per segmented object, measured on tiled runs: its labels (~200 B compressed), the tile
table (~370 B), the cohort Parquet (~100 B) and its share of the GeoJSON (~2 KB per nucleated
cell, about a third of the objects)."""
OBJECTS_PER_UM2 = 1 / 50
"""A dense smear: one object (mostly red cells) per 50 µm², an upper bound for the estimate."""


def estimate_output_bytes(area_um2: float, write_labels: bool = True) -> int:
    """The disk a tiled run over ``area_um2`` µm² of smear may need, at most (a dense smear)."""
    per_object = BYTES_PER_OBJECT - (0 if write_labels else 200)
    return int(area_um2 * OBJECTS_PER_UM2 * per_object) + 1_000_000


def labels_dtype(n_tiles: int) -> str:
    """uint32 while every slide-wide id fits (up to 4,096 tiles), else uint64."""
    return "uint32" if n_tiles * ID_STRIDE <= 2**32 else "uint64"


OVERVIEW_MAX_DOWNSAMPLE = 16
"""The coarsest pyramid level used to find where the smear is (at most 16x smaller)."""
MIN_OCCUPIED_FRACTION = 0.005
"""A tile is analysed when at least this share of its overview pixels is not background."""


@dataclass
class SlideSurvey:
    """Where a slide's smear is and its whole-slide statistics: ``occupied[i]`` tells whether
    tile ``i`` holds anything but empty background; ``statistics`` (None when no tile does)
    are taken from full-resolution patches of the occupied tiles."""

    occupied: list[bool]
    statistics: FieldStatistics | None


MAX_REFERENCE_PATCHES = 32
"""Whole-slide statistics come from at most this many patches, spread over the occupied tiles."""
REFERENCE_PATCH_PX = 512
"""The side of a reference patch (level-0 pixels), taken at the centre of its tile."""


def survey_slide(slide, cores: list[Region]) -> SlideSurvey:
    """Which tiles hold something other than the slide's empty background, judged on a low
    pyramid level (at most :data:`OVERVIEW_MAX_DOWNSAMPLE` smaller, read a tile at a time and
    thinned to about that scale; :func:`blastscope.field_statistics.stained_pixels`), and the
    slide's statistics from full-resolution patches of up to :data:`MAX_REFERENCE_PATCHES`
    occupied tiles, evenly spread (only those patches are decoded)."""
    level = max(
        (
            index
            for index, factor in enumerate(slide.downsamples)
            if factor <= OVERVIEW_MAX_DOWNSAMPLE
        ),
        default=0,
    )
    factor = slide.downsamples[level]
    step = max(1, int(OVERVIEW_MAX_DOWNSAMPLE // factor))
    occupied = []
    for core in cores:
        top, left = int(core.y / factor), int(core.x / factor)
        rows = slice(top, max(top + 1, int((core.y + core.height) / factor)))
        cols = slice(left, max(left + 1, int((core.x + core.width) / factor)))
        window = slide.read_window(level, rows, cols, step)[..., :3]
        stained = stained_pixels(window)
        occupied.append(bool(stained.size) and float(stained.mean()) >= MIN_OCCUPIED_FRACTION)
    chosen = [core for core, kept in zip(cores, occupied, strict=True) if kept]
    if not chosen:
        return SlideSurvey(occupied, None)
    picks = np.linspace(0, len(chosen) - 1, min(len(chosen), MAX_REFERENCE_PATCHES))
    patches = []
    for core in (chosen[round(float(pick))] for pick in picks):
        side_x, side_y = min(REFERENCE_PATCH_PX, core.width), min(REFERENCE_PATCH_PX, core.height)
        x = core.x + (core.width - side_x) // 2
        y = core.y + (core.height - side_y) // 2
        try:
            patches.append(slide.read_region(Region(x, y, side_x, side_y)).reshape(-1, 3))
        except ImageInputError:  # a blank patch (a scanner's padding) says nothing
            continue
    if not patches:
        return SlideSurvey(occupied, None)
    return SlideSurvey(occupied, field_statistics(np.concatenate(patches)))


@dataclass
class TileJob:
    """What every tile of one run shares: the slide file, the area analysed, the pixel size,
    the pipeline settings, the halo, the slide's statistics and the bits of its values (sent
    once to each worker)."""

    path: Path
    area: Region
    pixel_size_um: float
    config: PipelineConfig
    halo_px: int
    statistics: FieldStatistics | None
    value_bits: int | None = None
    input_sha256: str | None = None


@dataclass
class TileResult:
    """One analysed tile: its kept cells' slide-wide ids over the window read (``labels``,
    None for a blank tile), where that window starts (level-0 y, x), its cells table (level-0
    centroids) and its QuPath features (level-0 pixels)."""

    index: int
    offset_yx: tuple[int, int]
    labels: np.ndarray | None
    cells: pd.DataFrame
    features: list[dict]


def analyse_tile_steps(slide, job: TileJob, index: int, core: Region) -> Steps[TileResult]:
    """Analyse tile ``index`` (its ``core`` and a halo around it) and keep the cells centred in
    its core, with slide-wide ids (module text)."""
    height, width = slide.shape
    x0, y0 = max(0, core.x - job.halo_px), max(0, core.y - job.halo_px)
    x1 = min(width, core.x + core.width + job.halo_px)
    y1 = min(height, core.y + core.height + job.halo_px)
    try:
        pixels = slide.read_region(Region(x0, y0, x1 - x0, y1 - y0))
    except ImageInputError:  # a blank tile (a scanner's padding): nothing to analyse
        return TileResult(index, (y0, x0), None, pd.DataFrame(), [])
    result = yield from analyse_steps(
        pixels, job.pixel_size_um, job.config, statistics=job.statistics
    )
    # only the table and the labels go on: the pixels, the flows and the rest of the analysis
    # are let go before the tile's features are built (the tile's peak)
    cells, local = result.cells, result.labels
    del result, pixels
    # a pixel's centre is its index: cores split the plane at half pixels, as the one-piece
    # run's tiles do (blastscope.segment.tiling), so every centroid has exactly one core
    centre_x, centre_y = cells["centroid_x"] + x0 + 0.5, cells["centroid_y"] + y0 + 0.5
    inside = (
        (centre_x >= core.x)
        & (centre_x < core.x + core.width)
        & (centre_y >= core.y)
        & (centre_y < core.y + core.height)
    ).to_numpy()
    kept = cells.loc[inside].copy()
    if local.max() >= ID_STRIDE:
        raise SlideError(
            f"Tile {index} has label ids up to {int(local.max())}, more than the {ID_STRIDE} a "
            "tile's ids can hold: use smaller tiles (--slide-tile)."
        )
    dtype = labels_dtype(index + 1)
    ids = np.zeros(int(local.max()) + 1, dtype)
    ids[kept["label"].to_numpy()] = index * ID_STRIDE + kept["label"].to_numpy()
    tile_labels = ids[local]
    kept["label"] = ids[kept["label"].to_numpy()].astype(np.int64)
    kept["tile"] = index
    kept["centroid_x"] = kept["centroid_x"] + x0  # level-0 pixels of the slide
    kept["centroid_y"] = kept["centroid_y"] + y0
    kept = kept.reset_index(drop=True)
    del local
    features = geojson_collection(
        tile_labels,
        kept,
        pixel_size_um=job.pixel_size_um,
        image_sha256=job.input_sha256,  # the slide's: ids unique by label, no tile hashed
        offset_yx=(y0, x0),
    )["features"]
    return TileResult(index, (y0, x0), tile_labels, kept, features)


def analyse_tile(job: TileJob, index: int, core: Region, threads: int | None) -> TileResult:
    """:func:`analyse_tile_steps` as one task on a dask worker: opens the slide itself, uses
    ``threads`` torch threads (None: the worker's own count) and the models this worker has
    loaded already (:func:`blastscope.distributed.worker_config`)."""
    use_threads(threads)
    job = replace(job, config=worker_config(job.config))
    with open_slide(job.path) as slide:
        slide.bits = job.value_bits  # found once, by the driver
        return run_steps(analyse_tile_steps(slide, job, index, core))


def _tiles_here(slide, job: TileJob, tiles: list[tuple[int, Region]]):
    """Each tile analysed in this process, in order: its Progress events, then its result."""
    for index, core in tiles:
        yield (yield from analyse_tile_steps(slide, job, index, core))


def _tiles_on_cluster(cluster: Cluster, job: TileJob, tiles: list[tuple[int, Region]]):
    """Each tile as a task on the cluster's workers, :meth:`Cluster.slots` in flight (so memory
    holds only those); yields the results as they finish. Closing the generator (Ctrl-C)
    cancels the tasks not finished."""
    from dask.distributed import as_completed

    client = cluster.client
    shared = client.scatter(replace(job, config=portable_config(job.config)), broadcast=True)
    waiting = iter(tiles)
    running = as_completed()
    in_flight = set()

    def submit(count: int) -> None:
        for index, core in itertools.islice(waiting, count):
            future = client.submit(analyse_tile, shared, index, core, cluster.threads, pure=False)
            in_flight.add(future)
            running.add(future)

    try:
        submit(cluster.slots())
        for future in running:
            result = future.result()  # a worker's error is raised here, with its own message
            in_flight.discard(future)
            future.release()
            submit(1)
            yield result
    finally:
        if in_flight:
            client.cancel(list(in_flight))


def _write_tile(tile: TileResult, area: Region, labels, folder: Path, size: float) -> None:
    """Write one tile's cells into the area's labels, its table and its features. Where two
    tiles' cells claim a pixel, the earlier tile's (lower id) keeps it, whatever order the
    tiles finish in. A blank tile writes nothing."""
    if tile.labels is None:
        return
    if labels is not None:
        _merge_labels(tile, area, labels)
    write_cells_table(
        folder / "cells" / f"tile_{tile.index:05d}.csv",
        tile.cells,
        pixel_size_um=size,
        overwrite=True,
    )
    with AtomicFiles(overwrite=True) as files:
        files.temporary(folder / "cells" / f"tile_{tile.index:05d}.features.json").write_text(
            json.dumps(tile.features, separators=(",", ":")), encoding="utf-8"
        )


def _merge_labels(tile: TileResult, area: Region, labels) -> None:
    """Write a tile's cells into the area's labels; the earlier tile keeps a shared pixel."""
    y0, x0 = tile.offset_yx
    top, left = y0 - area.y, x0 - area.x  # the window in area coordinates
    rows = slice(max(0, top), min(area.height, top + tile.labels.shape[0]))
    cols = slice(max(0, left), min(area.width, left + tile.labels.shape[1]))
    piece = tile.labels[
        rows.start - top : rows.stop - top, cols.start - left : cols.stop - left
    ].astype(labels.dtype)
    if piece.any():
        window = labels[rows, cols]
        earlier = (window > 0) & ((piece == 0) | (window < piece))
        labels[rows, cols] = np.where(earlier, window, piece)


LABELS_AXES = ("y", "x")
"""The labels' dimension names, in the arrays and their OME-NGFF axes."""
MIN_LEVEL_SIDE = 512
"""The labels pyramid halves its levels until the longer side is under this."""


def write_label_levels(path: Path, pixel_size_um: float, area: Region) -> int:
    """Add the coarser levels "1", "2", ... to the labels group at ``path`` (each every
    second pixel of the one before, nearest: ids stay ids), chunk by chunk, and describe the
    pyramid as an OME-NGFF 0.5 label image (:func:`ngff_label_attributes`); returns how many
    levels it has."""
    import dask
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="a")
    full = group["0"]
    level = da.from_zarr(full)
    index = 0
    while max(level.shape) >= 2 * MIN_LEVEL_SIDE:
        index += 1
        level = level[::2, ::2].rechunk(full.chunks)
        target = group.create_array(
            str(index),
            shape=level.shape,
            chunks=full.chunks,
            dtype=full.dtype,
            fill_value=0,
            dimension_names=LABELS_AXES,
            overwrite=True,
        )
        # local threads: the labels are this process's files, never a cluster's task
        with dask.config.set(scheduler="threads"):
            level.store(target, lock=False)
        level = da.from_zarr(target)
    for stale in range(index + 1, 64):
        if str(stale) not in group:
            break
        del group[str(stale)]
    group.attrs.put(ngff_label_attributes(index + 1, pixel_size_um, area))
    return index + 1


def ngff_label_attributes(levels: int, pixel_size_um: float, area: Region) -> dict:
    """The OME-NGFF 0.5 attributes of a labels pyramid of ``levels`` levels: y and x in µm,
    level ``k`` scaled by ``2**k``, and translated to the analysed ``area``'s corner so that
    NGFF viewers place the cells over the slide (level-0 pixel (0, 0) of the slide at 0 µm)."""
    corner = [area.y * pixel_size_um, area.x * pixel_size_um]
    datasets = [
        {
            "path": str(index),
            "coordinateTransformations": [
                {"type": "scale", "scale": [pixel_size_um * 2**index] * 2},
                {"type": "translation", "translation": corner},
            ],
        }
        for index in range(levels)
    ]
    multiscale = {
        "name": "cells",
        "axes": [{"name": axis, "type": "space", "unit": "micrometer"} for axis in LABELS_AXES],
        "datasets": datasets,
        "type": "every second pixel of the level before (nearest): ids stay ids",
    }
    return {"ome": {"version": "0.5", "multiscales": [multiscale], "image-label": {}}}


def _stream_geojson(target: Path, folder: Path, tiles: list[int], shapes: str) -> None:
    """One QuPath FeatureCollection of every tile's cells (level-0 pixels) drawn as ``shapes``,
    written a tile at a time: memory holds one tile's features, whatever the slide's size."""
    with open(target, "w", encoding="utf-8") as out:
        out.write('{"type":"FeatureCollection","features":[')
        first = True
        for index in tiles:
            path = folder / "cells" / f"tile_{index:05d}.features.json"
            if not path.is_file():
                continue
            for feature in json.loads(path.read_text(encoding="utf-8")):
                feature = with_shapes(feature, shapes)
                out.write(("" if first else ",") + json.dumps(feature, separators=(",", ":")))
                first = False
        out.write("]}")


COHORT_TABLE = "cells.parquet"
"""``OUT/cells.parquet/slide_id=<slide>/cells.parquet``: every whole slide's cells, one file per
slide, so that ``pandas.read_parquet(OUT / "cells.parquet")`` reads a cohort as one table with
a ``slide_id`` column."""


def cells_parquet_path(out_dir: str | Path, slide_id: str) -> Path:
    """Where a whole slide's cells table goes in the cohort table (:data:`COHORT_TABLE`)."""
    target = Path(out_dir) / COHORT_TABLE / f"slide_id={slide_id}" / "cells.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def write_cohort_cells(out_dir: str | Path, slide_id: str, cells: pd.DataFrame) -> Path | None:
    """Put a slide of fields' cells (one table, a ``field`` column naming each one's file) in
    the cohort table beside the whole slides' (:data:`COHORT_TABLE`), replacing the slide's
    earlier rows; a slide without cells has no file there (see :func:`read_cohort_cells`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = cells_parquet_path(out_dir, slide_id)
    if not len(cells):
        _drop_cohort_file(target)
        return None
    with AtomicFiles(overwrite=True) as files:
        table = pa.Table.from_pandas(cells, preserve_index=False)
        pq.write_table(table, files.temporary(target))
    return target


def _drop_cohort_file(target: Path) -> None:
    """Remove a slide without cells from the cohort table: no file rather than one without
    columns, which, read first, would hide every other slide's columns from pandas."""
    target.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: what else is there stays
        target.parent.rmdir()


def read_cohort_cells(out_dir: str | Path) -> pd.DataFrame:
    """Every slide's cells under ``out_dir`` (:data:`COHORT_TABLE`) as one table with every
    slide's columns, ``slide_id`` kept as text: a plain ``pandas.read_parquet`` infers the
    partition's type from the folder names, so slides ``001`` and ``002`` would come back as the
    numbers 1 and 2, and keeps only the columns of the first file it reads."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    partitioning = ds.partitioning(pa.schema([("slide_id", pa.string())]), flavor="hive")
    table = Path(out_dir) / COHORT_TABLE
    if not table.is_dir():
        raise FileNotFoundError(f"No cohort table in {out_dir}: run and batch write it there.")
    found = ds.dataset(table, format="parquet", partitioning=partitioning)
    # every slide's columns (a whole slide's ``tile``, a slide of fields' ``field``), where a
    # plain read keeps only the first file's
    schemas = [fragment.physical_schema for fragment in found.get_fragments()]
    if not schemas:
        return pd.DataFrame({"slide_id": pd.Series(dtype="str")})
    schema = pa.unify_schemas([*schemas, pa.schema([("slide_id", pa.string())])])
    whole = ds.dataset(table, format="parquet", partitioning=partitioning, schema=schema)
    return whole.to_table().to_pandas()


POOLED_COLUMNS = ("label", "centroid_y", "centroid_x", "is_nucleated", "is_blast", "blast_override")
"""What the slide call, the counts and the report need of every cell (with the ``p_*``
probabilities); the rest stays in the tile tables, so memory holds about 100 bytes a cell."""


def _pool_cells(folder: Path, tiles: list[int], parquet: Path) -> pd.DataFrame:
    """Read every tile's cells once: write them to ``parquet`` as one file, a row group per
    tile (memory holds one tile; ``parquet`` is left empty when there are no cells), and return
    only the columns the slide's summary needs (:data:`POOLED_COLUMNS`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pooled, writer = [], None
    try:
        for index in tiles:
            path = folder / "cells" / f"tile_{index:05d}.csv"
            if not path.is_file():
                continue
            table = read_cells_table(path)[0]
            if not len(table):
                continue
            schema = None if writer is None else writer.schema
            arrow = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(parquet, arrow.schema)
            writer.write_table(arrow)
            keep = [c for c in table.columns if c in POOLED_COLUMNS or c.startswith("p_")]
            pooled.append(table[keep])
    finally:
        if writer is not None:
            writer.close()
    return pd.concat(pooled, ignore_index=True) if pooled else pd.DataFrame()


def _refuse_other_finished_run(folder: Path, settings: dict, key: str, flag: str) -> None:
    """Raise :class:`SlideError` naming ``flag`` when ``folder`` holds a finished run whose
    settings differ from ``settings`` (hours of work, not to be replaced unasked)."""
    try:
        record = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
        earlier = record["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # none, or unreadable: an unfinished run, whose tiles are redone
    if not isinstance(earlier, dict):
        return
    if hashlib.sha256(dumps_json(earlier).encode()).hexdigest() == key:
        return
    now = json.loads(dumps_json(settings))  # as the record holds them
    changed = sorted(name for name in {*now, *earlier} if now.get(name) != earlier.get(name))
    raise SlideError(
        f"{folder} holds a finished run of {record.get('slide', 'this slide')} with other "
        f"settings ({', '.join(changed) or 'their format'} differ): add {flag} to replace it, or "
        "choose another --out to keep both."
    )


def _done_tiles(folder: Path, key: str) -> tuple[set[int], int]:
    """The tiles an earlier run with the same input and settings finished, and how many an
    earlier run with other settings (input, region, tile, models, thresholds) had finished."""
    try:
        record = json.loads((folder / DONE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set(), 0
    if not isinstance(record, dict):
        return set(), 0
    tiles = {int(index) for index in record.get("tiles", [])}
    return (tiles, 0) if record.get("key") == key else (set(), len(tiles))


def _write_done(folder: Path, key: str, done: set[int]) -> None:
    with AtomicFiles(overwrite=True) as files:
        files.temporary(folder / DONE_NAME).write_text(
            json.dumps({"key": key, "tiles": sorted(done)}), encoding="utf-8"
        )


def _threshold_used(config: PipelineConfig) -> float | None:
    """The blast threshold the run applies: the one given, else the blast bundle's own."""
    if config.blast_threshold is not None:
        return float(config.blast_threshold)
    model = config.blast_model
    return None if model is None else float(model.threshold)


def _model_record(model: Any) -> Any:
    """A model's name and weights hash (a model retrained into the same folder is another)."""
    if model is None:
        return None
    return [
        getattr(model, "name", str(model)),
        getattr(model, "metadata", {}).get("weights_sha256"),
    ]

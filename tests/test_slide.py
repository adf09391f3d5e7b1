"""Whole-slide files, written here with tifffile: a pyramidal OME-TIFF and an Aperio-style SVS
(levels, pixel size, regions read lazily, the label image never read), and a region of a slide
run end to end from the command line with its GeoJSON in level-0 coordinates."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from blastscope.cli import main
from blastscope.io import ImageInputError, read_field
from blastscope.slide import Region, SlideError, is_whole_slide, open_slide
from blastscope.synthetic import generate_field
from mrxs_writer import write_mrxs
from ndpi_writer import write_ndpi

TILE = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}


def write_ome_pyramid(path: Path, image: np.ndarray, pixel_size_um: float, levels: int = 3):
    """A pyramidal OME-TIFF: level 0 with ``levels - 1`` sub-resolutions (every 2nd pixel)."""
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": pixel_size_um,
        "PhysicalSizeY": pixel_size_um,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        tiff.write(image, subifds=levels - 1, metadata=metadata, **TILE)
        for level in range(1, levels):
            step = 2**level
            tiff.write(image[::step, ::step], subfiletype=1, **TILE)


def write_svs(path: Path, image: np.ndarray, mpp: float, compression: str | int = "zlib") -> None:
    """An Aperio-style SVS as scanners lay it out: tiled baseline, a stripped thumbnail, a
    tiled 4x level, then the label and macro images (which carry patient data). Its tiles are
    ``compression`` at quality 70 when lossy: ``"jpeg"`` (YCbCr tiles marked RGB, as Aperio
    writes them) or 33003 (Aperio's JPEG 2000)."""
    codec = "J2K/YUV16" if compression == 33003 else "JPEG/RGB"
    description = (
        f"Aperio Image Library v12.0.15\r\n{image.shape[1]}x{image.shape[0]} [0,0 "
        f"{image.shape[1]}x{image.shape[0]}] (256x256) {codec} Q=70|AppMag = 40|MPP = {mpp}"
    )
    other = "Aperio Image Library v12.0.15"
    plain = {"metadata": None, "photometric": "rgb"}  # no tifffile shape record: a scanner's file
    lossy = {"compressionargs": {"level": 70}} if compression != "zlib" else {}
    tiled = {**TILE, "metadata": None, "compression": compression, **lossy}
    label = np.full((80, 120, 3), 255, np.uint8)
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, description=description, **tiled)
        tiff.write(image[::8, ::8], description=other, **plain)  # thumbnail
        tiff.write(image[::4, ::4], description=other, **tiled)
        tiff.write(label, description=f"{other}\nlabel 120x80", subfiletype=1, **plain)
        tiff.write(label, description=f"{other}\nmacro 120x80", subfiletype=9, **plain)
    if compression == "jpeg":
        with tifffile.TiffFile(path, mode="r+") as tiff:
            for index in (0, 2):
                tiff.pages[index].tags["PhotometricInterpretation"].overwrite(2)


def positions(geometry: dict) -> list[tuple[float, float]]:
    """Every (x, y) of a GeoJSON geometry, however deeply nested."""
    found, stack = [], [geometry["coordinates"]]
    while stack:
        item = stack.pop()
        if len(item) == 2 and all(isinstance(value, (int, float)) for value in item):
            found.append(tuple(item))
        else:
            stack.extend(item)
    return found


@pytest.fixture(scope="module")
def slide_image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (1500, 2100, 3), dtype=np.uint8)


def test_a_pyramidal_ome_tiff_opens_lazily_with_its_levels_and_pixel_size(slide_image, tmp_path):
    path = tmp_path / "slide.ome.tif"
    write_ome_pyramid(path, slide_image, 0.25)
    with open_slide(path) as slide:
        assert slide.shape == (1500, 2100)
        assert [level.shape[:2] for level in slide.levels] == [
            (1500, 2100),
            (750, 1050),
            (375, 525),
        ]
        assert slide.downsamples == [1.0, 2.0, 4.0]
        assert slide.pixel_size_um == pytest.approx(0.25)
        assert slide.level_pixel_size_um(2) == pytest.approx(1.0)
        assert type(slide.levels[0]).__name__ == "Array"  # dask: nothing decoded yet
        region = Region(x=300, y=200, width=512, height=256)
        np.testing.assert_array_equal(slide.read_region(region), slide_image[200:456, 300:812])
        np.testing.assert_array_equal(
            slide.read_region(region, level=1), slide_image[::2, ::2][100:228, 150:406]
        )
        # a region running off the slide is cut at its edge
        edge = slide.read_region(Region(2000, 1400, 500, 500))
        np.testing.assert_array_equal(edge, slide_image[1400:, 2000:])
        with pytest.raises(SlideError, match="starts outside the slide"):
            slide.read_region(Region(2100, 0, 10, 10))


def test_an_aperio_svs_reads_its_mpp_and_never_its_label_image(slide_image, tmp_path, monkeypatch):
    path = tmp_path / "scan.svs"
    write_svs(path, slide_image, 0.2520)
    assert not is_whole_slide(path)  # small enough to be a field
    with open_slide(path) as slide:
        assert slide.pixel_size_um == pytest.approx(0.252)
        assert slide.shape == (1500, 2100)
        assert len(slide.levels) == 2
        np.testing.assert_array_equal(
            slide.read_region(Region(0, 0, 64, 64)), slide_image[:64, :64]
        )
    whole = read_field(path)  # a small SVS reads as a field
    np.testing.assert_array_equal(whole.image, slide_image)
    assert whole.pixel_size_um == pytest.approx(0.252)
    monkeypatch.setattr("blastscope.slide.FIELD_LIMIT_PX", 1_000_000)
    assert is_whole_slide(path)
    with pytest.raises(ImageInputError, match=r"whole slide .*--roi x,y,width,height"):
        read_field(path)
    field = read_field(path, region=Region(10, 20, 300, 200))
    np.testing.assert_array_equal(field.image, slide_image[20:220, 10:310])
    assert field.pixel_size_um == pytest.approx(0.252)
    assert any("Region 10,20,300,200" in notice for notice in field.notices)
    edge = read_field(path, region=Region(2000, 1400, 500, 500))  # past the slide's corner
    assert edge.image.shape[:2] == (100, 100)
    assert edge.region == Region(2000, 1400, 100, 100)  # what was read, as provenance records
    assert any("only 2000,1400,100,100 of it was read" in notice for notice in edge.notices)


def test_regions_are_checked_with_the_fix():
    assert Region.parse("12000, 8000, 2048, 2048") == Region(12000, 8000, 2048, 2048)
    for text in ("1,2,3", "a,b,c,d", "-1,0,10,10", "0,0,0,10", "1.5,0,10,10"):
        with pytest.raises(SlideError, match=r"x,y,width,height|empty"):
            Region.parse(text)


def test_a_region_of_a_slide_runs_end_to_end_with_level0_coordinates(tmp_path, capsys):
    field = generate_field(3, "default", shape=(512, 512))
    canvas = np.zeros((1536, 2048, 3), np.uint8)
    canvas[:] = np.median(field.image.reshape(-1, 3), axis=0).astype(np.uint8)
    top, left = 700, 1100
    canvas[top : top + 512, left : left + 512] = field.image
    path = tmp_path / "slide.ome.tif"
    write_ome_pyramid(path, canvas, field.pixel_size_um)
    out = tmp_path / "out"
    roi = f"{left},{top},512,512"
    assert main(["run", str(path), "--out", str(out), "--roi", roi]) == 0
    folder = out / "slide"  # the slide's name without .ome.tif, as its tiled run's
    collection = json.loads((folder / "slide.geojson").read_text())
    detections = [
        feature
        for feature in collection["features"]
        if feature["properties"].get("objectType") == "detection"
    ]
    assert len(detections) > 10
    points = np.array([point for feature in detections for point in positions(feature["geometry"])])
    assert left <= points[:, 0].min()  # x, in level-0 pixels of the slide
    assert points[:, 0].max() <= left + 512
    assert top <= points[:, 1].min()
    assert points[:, 1].max() <= top + 512
    run = json.loads((folder / "slide_run.json").read_text())
    assert run["provenance"]["region"]["x_y_width_height"] == roi
    # napari: the region's cells open in µm at their place over the slide (as the slide opens)
    from blastscope.widgets._io import read_geojson_layers

    ((labels, attributes, kind),) = read_geojson_layers(str(folder / "slide.geojson"))
    size = field.pixel_size_um
    assert kind == "labels"
    assert labels.shape == (512, 512)
    assert attributes["scale"] == pytest.approx((size, size))
    assert attributes["translate"] == pytest.approx((top * size, left * size))
    assert run["pixel_size_um"] == pytest.approx(field.pixel_size_um)
    with pytest.raises(SystemExit):
        main(["run", str(path), "--out", str(out), "--roi", "1,2,3"])
    assert "x,y,width,height" in capsys.readouterr().err


@pytest.mark.gui
def test_napari_opens_a_slide_as_a_lazy_multiscale_image_in_um(
    make_napari_viewer_proxy, slide_image, tmp_path, monkeypatch
):
    from widget_cases import PLUGIN, isolate_settings, notifications

    isolate_settings(monkeypatch, tmp_path)
    path = tmp_path / "slide.ome.tif"
    write_ome_pyramid(path, slide_image, 0.25)
    viewer = make_napari_viewer_proxy()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.multiscale
    assert [level.shape[:2] for level in layer.data] == [(1500, 2100), (750, 1050), (375, 525)]
    assert type(layer.data[0]).__name__ == "Array"  # still lazy: tiles decoded on demand
    assert tuple(layer.scale) == pytest.approx((0.25, 0.25))
    assert layer.metadata["pixel_size_um"] == pytest.approx(0.25)

    # a slide too large to analyse whole is refused by the docks with the fix
    monkeypatch.setattr("blastscope.widgets._layers.FIELD_LIMIT_PX", 1_000_000)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells")
    segment._image.value = layer
    with notifications() as messages:
        segment.run()
    assert not segment.runner.running
    assert any("is a whole slide" in message and "--roi" in message for message in messages)

    # the slide's file stays open while the layer reads tiles, and closes when it is removed
    def handles() -> int:
        folder = Path("/proc/self/fd")
        return sum(os.path.realpath(folder / fd) == str(path) for fd in os.listdir(folder))

    assert handles() == 1
    viewer.layers.remove(layer)
    del layer
    gc.collect()
    assert handles() == 0


@pytest.mark.gui
def test_a_rectangle_drawn_on_a_slide_is_segmented_classified_and_exported_in_place(
    make_napari_viewer_proxy, tmp_path, monkeypatch, qtbot
):
    from widget_cases import PLUGIN, isolate_settings, wait_for

    isolate_settings(monkeypatch, tmp_path)
    monkeypatch.setattr("blastscope.widgets._layers.FIELD_LIMIT_PX", 1_000_000)
    field = generate_field(3, "default", shape=(512, 512))
    canvas = np.zeros((1536, 2048, 3), np.uint8)
    canvas[:] = np.median(field.image.reshape(-1, 3), axis=0).astype(np.uint8)
    top, left = 700, 1100
    canvas[top : top + 512, left : left + 512] = field.image
    path = tmp_path / "slide.ome.tif"
    write_ome_pyramid(path, canvas, field.pixel_size_um)
    viewer = make_napari_viewer_proxy()
    (image,) = viewer.open(str(path), plugin=PLUGIN)
    size = field.pixel_size_um
    corners = np.array([[top, left], [top + 512, left + 512]], float) * size  # world, µm
    shapes = viewer.add_shapes([corners], shape_type="rectangle", name="region")
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells")
    segment._image.value = image
    segment._region.value = shapes
    segment.run()
    wait_for(segment, qtbot, timeout_s=120)
    cells = viewer.layers[f"{image.name} cells"]
    assert np.asarray(cells.data).shape == (512, 512)
    # add_shapes made the rectangle in "pixel" units: it takes the slide's µm (one unit, so
    # napari's scale bar keeps µm)
    assert {str(unit) for layer in viewer.layers for unit in layer.units} == {"micrometer"}
    assert tuple(cells.translate) == pytest.approx((top * size, left * size))
    assert cells.features["is_nucleated"].sum() > 5

    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    viewer.layers.selection.active = cells
    classify.run()
    wait_for(classify, qtbot, timeout_s=120)
    _, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    export.folder.value = str(tmp_path / "export")
    for name, box in export.formats.items():
        box.value = name == "geojson"
    export.run()
    wait_for(export, qtbot)
    collection = json.loads(next((tmp_path / "export").glob("*.geojson")).read_text())
    detections = [
        feature
        for feature in collection["features"]
        if feature["properties"].get("objectType") == "detection"
    ]
    points = np.array([point for feature in detections for point in positions(feature["geometry"])])
    assert points[:, 0].min() >= left  # in the slide's full-resolution pixels
    assert points[:, 1].min() >= top


def test_a_scanner_format_opens_through_openslide_and_reads_what_tifffile_reads(
    slide_image, tmp_path
):
    from blastscope.slide import open_with_openslide

    path = tmp_path / "scan.svs"
    write_svs(path, slide_image, 0.2520)
    with open_with_openslide(path) as slide, open_slide(path) as reference:
        assert slide.shape == reference.shape == (1500, 2100)
        assert slide.pixel_size_um == pytest.approx(0.252)  # openslide.mpp-x
        assert slide.downsamples == pytest.approx([1.0, 4.0])
        region = Region(1000, 700, 1100, 800)  # across OpenSlide chunks, to the slide's edge
        np.testing.assert_array_equal(slide.read_region(region), reference.read_region(region))
        assert slide.levels[1].shape == (375, 525, 3)


def test_an_mrxs_scan_starts_at_its_bounds_and_reads_what_was_not_scanned_as_glass(tmp_path):
    """A MIRAX file's frame is larger than its scan: level 0 starts at the scanned bounds'
    corner (OpenSlide's ``openslide.bounds-*``, QuPath's origin), and a camera field the
    scanner skipped inside them reads as the background colour, not as black."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    frame = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)  # JPEG keeps 16-px blocks
    skipped = (4, 2)  # (column, row) of a camera field left out inside the bounds
    scanned = [(c, r) for c in range(2, 6) for r in range(1, 4) if (c, r) != skipped]
    path = tmp_path / "marrow.mrxs"
    write_mrxs(path, frame, 0.243, scanned)
    expected = frame[256:1024, 512:1536].astype(int)  # rows 1-3, columns 2-5 of 256 px
    expected[256:512, 512:768] = 255
    with open_slide(path) as slide:
        assert slide.shape == (768, 1024)  # the bounds, not the 1536 x 2048 frame
        assert slide.pixel_size_um == pytest.approx(0.243)
        assert slide.downsamples == [1.0, 2.0]
        whole = slide.read_region(Region(0, 0, 1024, 768)).astype(int)
        assert np.abs(whole - expected).max() <= 2  # JPEG, quality 95
        part = slide.read_region(Region(300, 100, 400, 300)).astype(int)
        assert np.abs(part - expected[100:400, 300:700]).max() <= 2
        coarse = slide.read_region(Region(0, 0, 1024, 768), level=1).astype(int)
        assert np.abs(coarse - expected[::2, ::2]).max() <= 2


def test_an_mrxs_slide_is_told_apart_by_its_pixels_not_its_alike_index_file(tmp_path):
    """Resuming a tiled run and the ids of its cells key on the input's sha256: an MRXS's
    pixels are in its companion folder, and its ``.mrxs`` file is alike (here empty) for
    every slide."""
    from blastscope.io import image_sha256

    frame = np.full((512, 512, 3), 200, np.uint8)
    write_mrxs(tmp_path / "a.mrxs", frame, 0.25, [(0, 0), (1, 1)])
    frame[:256, :256] = 90  # another scan: one camera field differs
    write_mrxs(tmp_path / "b.mrxs", frame, 0.25, [(0, 0), (1, 1)])
    assert (tmp_path / "a.mrxs").read_bytes() == (tmp_path / "b.mrxs").read_bytes()
    assert image_sha256(tmp_path / "a.mrxs") != image_sha256(tmp_path / "b.mrxs")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, frame)
    assert image_sha256(plain) == hashlib.sha256(plain.read_bytes()).hexdigest()


def test_an_mrxs_scan_runs_whole_and_by_region_in_its_bounds_coordinates(tmp_path, capsys):
    """A smear field at the bounds' corner of an MRXS whose scan skipped one camera field:
    the tiled run analyses only the field's tile (the skipped field is glass, not black), and
    both runs put each cell where the generator drew it, in level-0 pixels from the bounds."""
    field = generate_field(3, "default", shape=(512, 512))
    frame = np.full((1536, 2048, 3), 255, np.uint8)
    frame[256:768, 512:1024] = (
        field.image
    )  # the bounds' corner is (512, 256): columns 2-5, rows 1-3
    scanned = [(c, r) for c in range(2, 6) for r in range(1, 4) if (c, r) != (5, 3)]
    path = tmp_path / "marrow.mrxs"
    write_mrxs(path, frame, field.pixel_size_um, scanned)

    def centres(geojson: Path) -> np.ndarray:
        collection = json.loads(geojson.read_text())
        outlines = [
            np.array(positions(feature["geometry"]))
            for feature in collection["features"]
            if feature["properties"].get("objectType") == "detection"
        ]
        assert len(outlines) > 10
        found = np.array([outline.mean(axis=0) for outline in outlines])  # (x, y)
        assert (found >= 0).all()
        assert (found <= 512).all()
        hit = field.labels[found[:, 1].astype(int), found[:, 0].astype(int)]
        assert (hit > 0).mean() >= 0.9  # each on a cell the generator drew at that place
        assert len(np.unique(hit[hit > 0])) >= 0.9 * len(found)
        return found

    tiled = ["run", str(path), "--tiled", "--slide-tile", "512", "--out", str(tmp_path / "t")]
    assert main(tiled) == 0
    assert "(1 tiles analysed, 0 from an earlier run)" in capsys.readouterr().out
    record = json.loads((tmp_path / "t" / "marrow.tiled" / "slide.json").read_text())
    assert record["tiles"] == {"total": 4, "analysed": 1}
    whole = centres(tmp_path / "t" / "marrow.tiled" / "marrow.geojson")
    region = ["run", str(path), "--roi", "0,0,512,512", "--out", str(tmp_path / "r")]
    assert main(region) == 0
    assert len(centres(tmp_path / "r" / "marrow" / "marrow.geojson")) == pytest.approx(
        len(whole), abs=3
    )


def test_scanner_formats_without_openslide_or_their_companion_folder_say_what_to_do(
    tmp_path, monkeypatch
):
    path = tmp_path / "scan.mrxs"
    path.write_text("[GENERAL]\n")  # an MRXS index whose companion folder was not copied
    assert is_whole_slide(path)
    with pytest.raises(SlideError, match=r"in the folder scan/ beside it.*Copy that folder"):
        open_slide(path)
    out = tmp_path / "out"
    assert main(["run", str(path), "--workers", "0", "--out", str(out)]) == 1
    assert not (out / "scan.tiled").exists()  # a run that could not start leaves no folder
    (tmp_path / "scan").mkdir()  # copied, but not its Slidedat.ini
    with pytest.raises(SlideError, match=r"its folder scan/ were copied completely"):
        open_slide(path)
    monkeypatch.setitem(sys.modules, "openslide", None)  # as without the extra
    with pytest.raises(SlideError, match=r"pip install 'napari-blastscope\[openslide\]'"):
        open_slide(path)


def test_a_batch_takes_an_mrxs_file_as_one_slide_and_its_companion_folder_as_none(tmp_path):
    from blastscope.batch import find_slides, runs_tiled

    (tmp_path / "marrow.mrxs").write_text("[GENERAL]\n")
    companion = tmp_path / "marrow"  # 3DHISTECH's data folder: an index and .dat files
    companion.mkdir()
    (companion / "Slidedat.ini").write_text("[GENERAL]\n")
    (companion / "Data0000.dat").write_bytes(b"\0" * 16)
    (slide,) = find_slides(tmp_path)
    assert slide.slide_id == "marrow"
    assert slide.fields == (tmp_path / "marrow.mrxs",)
    assert runs_tiled(slide)  # a scanner format is a whole slide


def test_slides_named_alike_keep_their_own_names():
    from blastscope.slide import slide_stem

    assert slide_stem("scans/slide.ome.tif") == "slide"
    assert slide_stem("patient.7.svs") == "patient.7"  # not "patient": two such slides differ
    assert slide_stem("patient.8.svs") == "patient.8"
    assert slide_stem("marrow.MRXS") == "marrow"


def test_a_16_bit_slide_is_scaled_alike_in_every_tile_and_its_thumbnail(tmp_path):
    """12-bit values stored as uint16: a dark region is not brightened as a field of its own
    would be (its max fits 10 bits), and the thumbnail is scaled, not wrapped around."""
    rng = np.random.default_rng(0)
    image = np.empty((512, 512, 3), np.uint16)
    image[:, :256] = rng.integers(100, 900, (512, 256, 3))  # a dark half
    image[:, 256:] = rng.integers(2000, 4000, (512, 256, 3))
    path = tmp_path / "twelve.ome.tif"
    write_ome_pyramid(path, image, 0.25)
    expected = np.round(image.astype(np.float32) * (255 / 4095)).astype(np.uint8)
    with open_slide(path) as slide:
        dark = slide.read_region(Region(0, 0, 256, 256))
        bright = slide.read_region(Region(256, 0, 256, 256))
        thumbnail, downsample = slide.thumbnail(Region(0, 0, 512, 512), 128)
        assert slide.value_bits() == 12
    np.testing.assert_array_equal(dark, expected[:256, :256])
    np.testing.assert_array_equal(bright, expected[:256, 256:])
    step = int(downsample)
    np.testing.assert_array_equal(thumbnail, expected[::step, ::step])


@pytest.mark.parametrize("compression", ["jpeg", 33003])
def test_jpeg_and_jpeg_2000_svs_tiles_are_decoded_through_imagecodecs(tmp_path, compression):
    """Aperio scanners write JPEG tiles (Q=70, YCbCr marked RGB) or JPEG 2000 (33003): both
    read through tifffile's zarr store, pixel for pixel as tifffile decodes each whole page,
    and close to the image written."""
    image = generate_field(3, "default", shape=(1024, 1536)).image
    path = tmp_path / "scan.svs"
    write_svs(path, image, 0.2520, compression)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression == (7 if compression == "jpeg" else 33003)
        assert tiff.pages[0].photometric == 2  # RGB, as Aperio marks it
        pages = [tiff.pages[0].asarray(), tiff.pages[2].asarray()]
    with open_slide(path) as slide:
        assert slide.shape == (1024, 1536)
        assert slide.downsamples == [1.0, 4.0]
        assert slide.pixel_size_um == pytest.approx(0.252)
        region = Region(300, 200, 700, 500)  # across tiles, not on their grid
        read = slide.read_region(region)
        np.testing.assert_array_equal(read, pages[0][200:700, 300:1000])
        np.testing.assert_array_equal(slide.read_region(region, level=1), pages[1][50:175, 75:250])
    error = np.abs(read.astype(int) - image[200:700, 300:1000])
    assert error.mean() < 3  # lossy, at quality 70


def test_an_ndpi_opens_as_a_pyramid_from_its_top_left_corner_in_its_resolution_units(tmp_path):
    """A Hamamatsu NDPI as scanners write it (tifffile takes it for one): a JPEG per level
    with restart markers that tifffile reads as tiles 8 rows high, grouped into 256-row
    chunks; the pixel size from its resolution tags in pixels per cm; level 0 from the
    image's top-left corner, its offsets from the slide's centre not applied; the macro image
    no level."""
    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)  # JPEG keeps 16-px blocks
    path = tmp_path / "marrow.ndpi"
    write_ndpi(path, image, 0.2270, offset_nm=(1_250_000, -830_000))
    with tifffile.TiffFile(path) as tiff:
        assert tiff.is_ndpi
        assert tiff.series[0].kind == "ndpi"
        assert (tiff.pages[0].tilelength, tiff.pages[0].tilewidth) == (8, 256)
        assert tiff.pages[0].ndpi_tags["XOffsetFromSlideCenter"] == 1_250_000
    assert not is_whole_slide(path)
    with open_slide(path) as slide:
        assert slide.shape == (1536, 2048)
        assert slide.downsamples == [1.0, 2.0, 4.0]  # not the macro image
        assert slide.pixel_size_um == pytest.approx(0.227, abs=1e-5)  # 44,053 per cm
        assert slide.notices == []
        assert [level.chunksize for level in slide.levels] == [(256, 256, 3)] * 3
        whole = slide.read_region(Region(0, 0, 2048, 1536)).astype(int)
        assert np.abs(whole - image).max() <= 2  # JPEG, quality 95
        part = slide.read_region(Region(300, 100, 400, 300)).astype(int)
        assert np.abs(part - image[100:400, 300:700]).max() <= 2
        coarse = slide.read_region(Region(300, 100, 400, 300), level=1).astype(int)
        assert np.abs(coarse - image[::2, ::2][50:200, 150:350]).max() <= 2


def test_a_tiled_run_of_a_slide_whose_pixel_size_was_ignored_says_which_and_why(
    slide_image, tmp_path, capsys
):
    """50 µm per pixel in the OME metadata (a unit slip) is ignored when read: the tiled run's
    refusal names that value and the range, not "records no pixel size", and the fix."""
    path = tmp_path / "slide.ome.tif"
    write_ome_pyramid(path, slide_image, 50.0)
    out = str(tmp_path / "out")
    assert main(["run", str(path), "--tiled", "--workers", "0", "--out", out]) == 1
    error = capsys.readouterr().err
    assert "Ignored slide.ome.tif's pixel size of 50 µm per pixel: outside the 0.02-5" in error
    assert "records no pixel size" not in error
    assert "Give --pixel-size (µm per pixel)" in error
    assert "not estimated tile by tile" in error


def test_a_whole_svs_runs_and_reports_without_ever_decoding_its_label_or_macro(tmp_path):
    """The label and macro images of a scanner file carry patient identifiers: here their
    pixels point past the end of the file, so any read of them would fail; the tiled run, its
    report (thumbnail, blast map) and its GeoJSON are made from the pyramid alone."""
    field = generate_field(4, "default", shape=(1024, 1024))
    path = tmp_path / "patient.svs"
    write_svs(path, field.image, field.pixel_size_um)
    beyond = path.stat().st_size + 1_000_000
    with tifffile.TiffFile(path, mode="r+") as tiff:
        for page in tiff.pages[3:5]:  # label, macro
            assert "label" in page.description or "macro" in page.description
            page.tags["StripOffsets"].overwrite(beyond)
    with tifffile.TiffFile(path) as tiff, pytest.raises(Exception):  # noqa: B017, PT011
        tiff.pages[3].asarray()  # reading the label now fails
    out = tmp_path / "out"
    argv = ["run", str(path), "--tiled", "--workers", "0", "--slide-tile", "512", "--out", str(out)]
    assert main(argv) == 0
    folder = out / "patient.tiled"
    assert (folder / "patient.report.html").stat().st_size > 10_000
    assert (folder / "patient.thumbnail.png").is_file()
    assert len(json.loads((folder / "patient.geojson").read_text())["features"]) > 10

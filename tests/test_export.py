"""Exports of a SlideResult: tables, labels TIFF, overlay, report, provenance, atomic writes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import replace

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from blastscope.export import (
    ALL_FORMATS,
    ExportError,
    export_paths,
    export_result,
    overlay_rgb,
    read_cells_table,
    read_geojson,
    read_labels_tiff,
    write_cells_table,
    write_labels_tiff,
    write_report,
    write_run_json,
)
from blastscope.export._style import class_colour
from blastscope.export.geojson_writer import geojson_collection
from blastscope.export.report import GALLERY_CELL_PX, GALLERY_CELLS, review_cells, review_gallery
from blastscope.export.tables import sidecar_path
from blastscope.palette import GREY, p_blast_rgb
from export_cases import BLAST_THRESHOLD, INPUT_SHA256, classified_result


@pytest.fixture(scope="module")
def classified():
    return classified_result()


def _files(folder) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip_exactly_dtypes_included(classified, tmp_path, suffix):
    result, _ = classified
    cells = result.cells.copy()
    cells["area_f32"] = cells["area_um2"].astype(np.float32)
    cells["review_round"] = pd.array([1, None] * (len(cells) // 2) + [3] * (len(cells) % 2))
    cells["note"] = pd.Series(["ok"] * len(cells), dtype="str")
    cells.loc[0, "p_blast"] = np.inf
    written = write_cells_table(tmp_path / f"cells{suffix}", cells, result.slide_call)
    assert written == [tmp_path / f"cells{suffix}", tmp_path / f"cells{suffix}.json"]
    table, sidecar = read_cells_table(written[0])
    pd.testing.assert_frame_equal(table, cells, check_exact=True)
    assert table["blast_override"].dtype == "boolean"
    assert table["blast_override"].isna().sum() == cells["blast_override"].isna().sum()
    assert sidecar["slide_call"] == result.slide_call.to_dict()


def test_table_sidecar_lists_the_columns_and_the_call(classified, tmp_path):
    result, _ = classified
    (table, sidecar) = write_cells_table(
        tmp_path / "cells.csv", result.cells, result.slide_call, provenance=result.provenance
    )
    assert sidecar == sidecar_path(table)
    content = json.loads(sidecar.read_text())
    assert ["blast_override", "boolean"] in content["columns"]
    assert content["slide_call"]["call"] == result.slide_call.call
    assert content["provenance"]["input_sha256"] == INPUT_SHA256
    assert content["n_rows"] == len(result.cells)


@pytest.mark.parametrize("dtype", [object, "str"])
def test_csv_tables_escape_text_a_spreadsheet_would_run_and_read_it_back(
    classified, tmp_path, dtype
):
    result, _ = classified
    cells = result.cells.copy()
    texts = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "'quoted", "NPM1"]
    cells["mutation_call"] = pd.Series((texts * len(cells))[: len(cells)], dtype=dtype)
    cells.loc[0, "centroid_x"] = -1.5
    cells["=other_plugin"] = 1.0
    (table, _) = write_cells_table(tmp_path / "cells.csv", cells, result.slide_call)
    raw = pd.read_csv(table, dtype=str, keep_default_na=False)
    assert raw.columns[-1] == "'=other_plugin"
    assert raw["mutation_call"].tolist()[: len(texts)] == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "''quoted",
        "NPM1",
    ]
    assert raw.loc[0, "centroid_x"] == "-1.5"
    back, _ = read_cells_table(table)
    pd.testing.assert_frame_equal(back, cells, check_exact=True)


def test_tables_refuse_unknown_suffixes_and_unstorable_columns(classified, tmp_path):
    result, _ = classified
    with pytest.raises(ExportError, match=r"name the file \*\.csv or \*\.parquet"):
        write_cells_table(tmp_path / "cells.xlsx", result.cells)
    cells = result.cells.assign(phase=result.cells["area_px"] * 1j)
    with pytest.raises(ExportError, match="Column 'phase' has dtype complex128"):
        write_cells_table(tmp_path / "cells.csv", cells)
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------- labels, overlay


def test_labels_tiff_is_compressed_ome_with_the_pixel_size(classified, tmp_path):
    result, _ = classified
    path = write_labels_tiff(tmp_path / "labels.ome.tif", result.labels, pixel_size_um=0.27)
    labels, pixel_size_um = read_labels_tiff(path)
    assert labels.dtype == np.int32
    assert np.array_equal(labels, result.labels)
    assert pixel_size_um == 0.27
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert path.stat().st_size < result.labels.nbytes / 4


def test_overlay_colours_cells_by_blast_probability_or_by_class(classified):
    result, image = classified
    cells = result.cells
    by_p = overlay_rgb(image, result.labels, cells)
    by_class = overlay_rgb(image, result.labels, cells, colour_by="class")
    assert by_p.shape == image.shape
    assert by_p.dtype == np.uint8
    background = result.labels == 0
    assert np.array_equal(by_p[background], image[background])

    def outline_colour(overlay, label):
        rows, cols = np.nonzero(result.labels == label)
        top = rows.argmin()  # the topmost pixel of a cell is on its outline
        return overlay[rows[top], cols[top]].astype(int)

    sure_blast = cells.loc[cells["p_blast"].idxmax()]
    sure_other = cells.loc[cells["p_blast"].idxmin()]
    red_cell = cells.loc[~cells["is_nucleated"]].iloc[0]
    high = outline_colour(by_p, sure_blast["label"])
    low = outline_colour(by_p, sure_other["label"])
    # the viewer's viridis: yellow near 1, dark purple near 0
    assert list(high) == list(p_blast_rgb(np.array([sure_blast["p_blast"]]))[0])
    assert high[1] > 150
    assert high[2] < 120
    assert low[2] > low[1]
    assert low.sum() < 350
    assert tuple(outline_colour(by_p, red_cell["label"])) == GREY
    expected = class_colour(sure_blast["mutation_call"])
    assert tuple(outline_colour(by_class, sure_blast["label"])) == expected
    with pytest.raises(ExportError, match="differ in size"):
        overlay_rgb(image[:100], result.labels, cells)


# --------------------------------------------------------------------------- report


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"data:image/png;base64,([^\"]+)", page)]


def test_report_shows_the_call_and_embeds_its_plots(classified, tmp_path):
    result, image = classified
    call = result.slide_call
    paths = write_report(tmp_path / "slide_report.html", result, image)
    html_path = paths[0]
    assert sorted(path.name for path in paths) == [
        "slide_report.html",
        "slide_report_call.png",
        "slide_report_gallery.png",
        "slide_report_overlay.png",
        "slide_report_p_blast.png",
    ]
    page = html_path.read_text()
    assert f"<strong>Slide call: {call.call} (" in page
    for name in call.classes:
        low, high = call.interval[name]
        assert f"<td>{name}</td><td>{call.probabilities[name]:.3f}</td>" in page
        assert f"{low:.3f} – {high:.3f}" in page
    assert f"blast threshold {BLAST_THRESHOLD:g}" in page
    assert f"{100 * result.n_blasts / result.n_nucleated:.1f}%" in page
    assert "b" * 64 in page  # the blast bundle's hash
    assert "not for diagnosis" in page
    assert 'src="http' not in page
    embedded = _embedded_pngs(page)
    assert len(embedded) == 4
    assert sorted(embedded) == sorted(path.read_bytes() for path in paths[1:])
    for data in embedded:
        assert iio.imread(data, extension=".png").ndim == 3


def test_report_gallery_shows_the_highest_p_blast_cells_first(classified, tmp_path):
    result, image = classified
    chosen = review_cells(result.cells)
    p_blast = result.cells["p_blast"].dropna()
    assert len(chosen) == min(GALLERY_CELLS, len(p_blast))
    assert chosen["p_blast"].iloc[0] == p_blast.max()
    assert chosen["p_blast"].is_monotonic_decreasing
    gallery = review_gallery(image, result)
    columns = min(len(chosen), 8)
    assert gallery.shape[1] == columns * GALLERY_CELL_PX
    page = write_report(tmp_path / "g.html", result, image)[0].read_text()
    assert f"The {len(chosen)} cells with the highest blast probability" in page


def test_report_without_a_slide_call_says_the_mutation_stage_has_not_run(classified, tmp_path):
    result, image = classified
    segmented_only = replace(
        result, cells=result.cells[["label", "is_nucleated"]], slide_call=None, provenance={}
    )
    paths = write_report(tmp_path / "r.html", segmented_only, image)
    page = paths[0].read_text()
    assert "No slide call: the mutation stage has not run" in page
    assert "blast threshold not recorded" in page
    assert len(_embedded_pngs(page)) == 1  # the overlay only
    assert [path.name for path in paths] == ["r.html", "r_overlay.png"]


def test_report_of_an_abstained_call_gives_the_reason(classified, tmp_path):
    result, image = classified
    abstained = replace(
        result.slide_call, call=None, abstained=True, reason="insufficient blasts: 3 < 20"
    )
    paths = write_report(tmp_path / "r.html", replace(result, slide_call=abstained), image)
    assert "<strong>No call: insufficient blasts: 3 &lt; 20</strong>" in paths[0].read_text()


# --------------------------------------------------------------------------- export_result


def test_export_result_writes_every_format_and_a_provenance_record(classified, tmp_path):
    result, image = classified
    written = export_result(result, image, tmp_path / "out", stem="field", formats=ALL_FORMATS)
    assert sorted(path.name for path in written) == _files(tmp_path / "out")
    paths = export_paths(tmp_path / "out", "field")
    assert all(paths[name].is_file() for name in (*ALL_FORMATS, "run"))
    run = json.loads(paths["run"].read_text())
    assert run["input_sha256"] == INPUT_SHA256
    assert run["software"]["blastscope"]
    assert run["provenance"]["blast"]["bundle_sha256"] == "b" * 64
    assert run["slide_call"] == result.slide_call.to_dict()
    assert run["counts"] == {
        "cells": result.n_cells,
        "nucleated": result.n_nucleated,
        "blasts": result.n_blasts,
    }
    recorded = {item["file"]: item["sha256"] for item in run["outputs"]}
    assert set(recorded) == {path.name for path in written} - {paths["run"].name}
    for path in written:
        if path != paths["run"]:
            assert recorded[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    _, cells, _ = read_geojson(paths["geojson"])
    nucleated = result.cells[result.cells["is_nucleated"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(cells, nucleated, check_exact=True)


def test_existing_exports_are_kept_unless_overwrite_is_given(classified, tmp_path):
    result, image = classified
    formats = ("geojson", "csv")
    export_result(result, image, tmp_path, stem="field", formats=formats)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    with pytest.raises(ExportError, match="already exists; pass overwrite=True"):
        export_result(result, image, tmp_path, stem="field", formats=("labels", "geojson"))
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before
    changed = replace(result, provenance={**result.provenance, "note": "second run"})
    export_result(changed, image, tmp_path, stem="field", formats=formats, overwrite=True)
    assert _files(tmp_path) == sorted(before)
    assert "second run" in (tmp_path / "field_run.json").read_text()
    with pytest.raises(ExportError, match="already exists; pass overwrite=True"):
        write_labels_tiff(tmp_path / "field.geojson", result.labels)


def test_a_failing_export_leaves_no_file_behind(classified, tmp_path):
    result, image = classified
    # The overlay fails after the GeoJSON and the tables were already written to temporary files.
    with pytest.raises(ExportError, match="differ in size"):
        export_result(result, image[:, :-1], tmp_path, stem="field", formats=ALL_FORMATS)
    assert _files(tmp_path) == []
    unserialisable = replace(result, provenance={**result.provenance, "model": object()})
    with pytest.raises(ExportError, match=r"provenance\['model'\].*not a number, string"):
        export_result(unserialisable, image, tmp_path, stem="field")
    assert _files(tmp_path) == []


def test_an_unwritable_output_folder_gives_a_clear_error(classified, tmp_path):
    result, image = classified
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(ExportError, match=r"Cannot create the output folder .* choose a folder"):
        export_result(result, image, blocker / "slide1", stem="field")
    with pytest.raises(ExportError, match="Cannot create the output folder"):
        write_cells_table(blocker / "cells.csv", result.cells)
    assert _files(tmp_path) == ["results"]


def test_export_result_refuses_bad_requests_before_writing(classified, tmp_path):
    result, image = classified
    with pytest.raises(ExportError, match="Unknown export formats \\['xlsx'\\]"):
        export_result(result, image, tmp_path, stem="f", formats=("csv", "xlsx"))
    with pytest.raises(ExportError, match="plain file name without folders"):
        export_result(result, image, tmp_path, stem="../f")
    with pytest.raises(ExportError, match="need the analysed image"):
        export_result(result, None, tmp_path, stem="f", formats=("report",))
    assert _files(tmp_path) == []


def test_run_json_hashes_the_files_it_describes(classified, tmp_path):
    result, _ = classified
    (table, sidecar) = write_cells_table(tmp_path / "cells.csv", result.cells)
    path = write_run_json(tmp_path / "run.json", result, [table, sidecar])
    record = json.loads(path.read_text())
    assert record["outputs"][0] == {
        "file": "cells.csv",
        "bytes": table.stat().st_size,
        "sha256": hashlib.sha256(table.read_bytes()).hexdigest(),
    }
    assert record["software"]["torch"]
    assert record["notices"] == result.notices


def test_a_users_own_class_never_takes_a_known_class_or_cell_class_colour():
    from blastscope.export._style import BLAST, NON_BLAST, NON_NUCLEATED, NUCLEATED
    from blastscope.palette import MUTATION_COLOURS, mutation_class_colour

    taken = {class_colour(name) for name in (BLAST, NON_BLAST, NON_NUCLEATED, NUCLEATED)}
    taken |= set(MUTATION_COLOURS.values())
    for name in ("other AML", "normal", "other", "AML", "APL-like", "FLT3-ITD", "x"):
        assert mutation_class_colour(name) not in taken, name
        assert class_colour(name) == mutation_class_colour(name)  # exports = viewer


def test_the_classes_of_one_model_never_share_a_colour_in_the_viewer_or_the_exports():
    """'AML', 'non-APL' and 'MDS' choose the same spare colour by name; in one model's class list
    each gets its own, the same in the GeoJSON, the overlay and the viewer's list."""
    from blastscope.palette import MUTATION_COLOURS, SPARE_COLOURS, mutation_class_colours

    classes = ["AML", "non-APL", "MDS", "PML::RARA"]
    colours = mutation_class_colours(classes)
    assert len(set(colours)) == len(classes)
    assert colours[3] == MUTATION_COLOURS["PML::RARA"]
    assert set(colours[:3]) <= set(SPARE_COLOURS)
    assert colours == mutation_class_colours(classes)  # the same list, the same colours
    cells = pd.DataFrame(
        {
            "label": [1, 2, 3],
            "is_nucleated": [True] * 3,
            "is_blast": [True] * 3,
            "mutation_call": ["AML", "non-APL", "MDS"],
            "p_blast": [0.9] * 3,
            "p_nucleated": [1.0] * 3,
            **{f"p_{name}": [0.25] * 3 for name in classes},
        }
    )
    labels = np.zeros((30, 30), np.int32)
    labels[2:8, 2:8], labels[12:18, 12:18], labels[22:28, 22:28] = 1, 2, 3
    collection = geojson_collection(labels, cells, pixel_size_um=0.5)
    written = {
        feature["properties"]["classification"]["name"]: tuple(
            feature["properties"]["classification"]["color"]
        )
        for feature in collection["features"]
    }
    assert [written[name] for name in ("AML", "non-APL", "MDS")] == colours[:3]

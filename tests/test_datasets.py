"""Training data from class folders and from slide bags + CSV, with real PNG files."""

import imageio.v3 as iio
import numpy as np
import pytest

from blastscope.train.datasets import (
    LMU_BLAST_FOLDERS,
    DatasetError,
    load_bags,
    load_class_folders,
    parse_folder_map,
    split_cells,
)

BLAST_CLASSES = ("non-blast", "blast")
MUTATIONS = ("PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1")


def _cell_png(path, side: int, value: int, disc_radius: int) -> None:
    """A light background with a dark disc of ``disc_radius`` px in the centre."""
    yy, xx = np.mgrid[:side, :side]
    image = np.full((side, side, 3), 230, dtype=np.uint8)
    disc = (yy - (side - 1) / 2) ** 2 + (xx - (side - 1) / 2) ** 2 <= disc_radius**2
    image[disc] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


@pytest.fixture
def lmu_like(tmp_path):
    """Folders MYO, MOB, LYT, NGS of 100x100 px images at 0.25 µm/px (25 µm across)."""
    for folder, count in (("MYO", 3), ("MOB", 2), ("LYT", 4), ("NGS", 1)):
        for index in range(count):
            _cell_png(tmp_path / "lmu" / folder / f"{index}.png", 100, 60, 30)
    return tmp_path / "lmu"


def test_class_folders_map_lmu_names_to_blast_and_keep_physical_size(lmu_like):
    cells = load_class_folders(
        lmu_like,
        BLAST_CLASSES,
        folder_map=LMU_BLAST_FOLDERS,
        window_um=24.0,
        pixel_size_um=0.5,
        source_pixel_size_um=0.25,
    )
    assert cells.crops.shape == (10, 48, 48, 3)
    assert cells.crops.dtype == np.uint8
    assert cells.class_counts() == {"non-blast": 5, "blast": 5}
    # the 30 px radius disc at 0.25 µm/px is 7.5 µm = 15 px at 0.5 µm/px: 30 px across
    dark_row = cells.crops[0, 24, :, 0] < 145
    assert 28 <= dark_row.sum() <= 32
    assert cells.source["kind"] == "class folders"


def test_window_larger_than_the_image_is_padded_with_its_background(tmp_path):
    _cell_png(tmp_path / "f" / "blast" / "a.png", 40, 60, 10)
    _cell_png(tmp_path / "f" / "non-blast" / "b.png", 40, 60, 10)
    cells = load_class_folders(
        tmp_path / "f", BLAST_CLASSES, window_um=24.0, pixel_size_um=0.5, source_pixel_size_um=0.2
    )
    # 40 px at 0.2 µm is 8 µm: the 24 µm window is mostly padding of the background colour 230
    assert cells.crops.shape == (2, 48, 48, 3)
    assert np.all(cells.crops[:, :5] == 230)


def test_unknown_class_folder_is_refused_by_name(lmu_like):
    (lmu_like / "XYZ").mkdir()
    with pytest.raises(DatasetError, match=r"Folder\(s\) XYZ in .* are not in the folder map"):
        load_class_folders(
            lmu_like,
            BLAST_CLASSES,
            folder_map=LMU_BLAST_FOLDERS,
            window_um=24.0,
            pixel_size_um=0.5,
            source_pixel_size_um=0.25,
        )


def test_images_without_pixel_size_ask_for_it(lmu_like):
    with pytest.raises(DatasetError, match="Give the images' pixel size with --source-pixel-size"):
        load_class_folders(
            lmu_like, BLAST_CLASSES, folder_map=LMU_BLAST_FOLDERS, window_um=24.0, pixel_size_um=0.5
        )


def test_folder_map_text_is_parsed_and_bad_text_refused():
    assert parse_folder_map("lmu") == LMU_BLAST_FOLDERS
    assert parse_folder_map("MYO=blast, LYT=non-blast") == {"MYO": "blast", "LYT": "non-blast"}
    with pytest.raises(DatasetError, match="write FOLDER=CLASS pairs"):
        parse_folder_map("MYO:blast")


@pytest.fixture
def bags(tmp_path):
    """Six slide folders (2 cells each) and their labels CSV."""
    rows = ["slide_id,label"]
    for index in range(6):
        slide = f"patient{index}"
        for cell in range(2):
            _cell_png(tmp_path / "slides" / slide / f"cell{cell}.png", 60, 80, 12)
        rows.append(f"{slide},{MUTATIONS[index % 4]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_bag_cells_inherit_their_slide_label(bags):
    cells = load_bags(
        bags / "slides",
        bags / "labels.csv",
        MUTATIONS,
        window_um=24.0,
        pixel_size_um=0.5,
        source_pixel_size_um=0.3,
    )
    assert len(cells) == 12
    assert list(cells.slide_ids[:4]) == ["patient0", "patient0", "patient1", "patient1"]
    assert [MUTATIONS[k] for k in cells.labels[::2]] == [MUTATIONS[i % 4] for i in range(6)]


def test_csv_without_label_column_is_refused(bags):
    (bags / "labels.csv").write_text("slide,mutation\npatient0,NPM1\n")
    with pytest.raises(DatasetError, match=r"lacks slide_id, label: the slide label file needs"):
        load_bags(bags / "slides", bags / "labels.csv", MUTATIONS, window_um=24, pixel_size_um=0.5)


def test_slide_folder_without_label_is_refused(bags):
    _cell_png(bags / "slides" / "patient9" / "c.png", 60, 80, 12)
    with pytest.raises(
        DatasetError, match=r"patient9 in .* have no label in labels.csv. Add a row 'patient9,"
    ):
        load_bags(
            bags / "slides",
            bags / "labels.csv",
            MUTATIONS,
            window_um=24.0,
            pixel_size_um=0.5,
            source_pixel_size_um=0.3,
        )


def test_label_outside_the_classes_is_refused(bags):
    (bags / "labels.csv").write_text("slide_id,label\npatient0,FLT3\n")
    with pytest.raises(DatasetError, match="the label 'FLT3', which is not one of the classes"):
        load_bags(bags / "slides", bags / "labels.csv", MUTATIONS, window_um=24, pixel_size_um=0.5)


def test_split_by_slide_never_shares_a_slide(bags):
    cells = load_bags(
        bags / "slides",
        bags / "labels.csv",
        MUTATIONS,
        window_um=24.0,
        pixel_size_um=0.5,
        source_pixel_size_um=0.3,
    )
    split = split_cells(cells, 0.2, 0.2, seed=0)
    assert split.by == "slide"
    parts = [set(cells.slide_ids[index]) for index in (split.train, split.val, split.test)]
    assert all(parts)
    assert not parts[0] & parts[1]
    assert not parts[0] & parts[2]
    assert not parts[1] & parts[2]
    assert sum(index.size for index in (split.train, split.val, split.test)) == 12

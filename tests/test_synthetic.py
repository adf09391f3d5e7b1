"""The synthetic smear generator: seeding, presets, truth tables, mutation features, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi

from blastscope.synthetic import (
    CELL_TYPES,
    MUTATION_CLASSES,
    NUCLEATED_TYPES,
    PRESETS,
    TABLE_COLUMNS,
    SmearPreset,
    generate_field,
    generate_slide,
    get_preset,
    render_crops,
)

SMALL = (320, 320)


@pytest.fixture(scope="module")
def default_field():
    return generate_field(7, "default", shape=(512, 512))


def _blast_pixels(field) -> np.ndarray:
    """RGB values (M, 3) float of every pixel that belongs to a blast."""
    blast_labels = field.cells.loc[field.cells["is_blast"], "label"].to_numpy()
    return field.image[np.isin(field.labels, blast_labels)].astype(float)


def _strengthless(preset: str) -> SmearPreset:
    """The preset with every blast's mutation features switched off (same random draws)."""
    return dataclasses.replace(get_preset(preset), name=f"{preset}-no-features", feature_strength=0)


def test_same_seed_gives_identical_field_and_other_seeds_differ():
    first = generate_field(3, shape=SMALL)
    again = generate_field(3, shape=SMALL)
    other = generate_field(4, shape=SMALL)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.labels, again.labels)
    assert first.cells.equals(again.cells)
    assert (first.mutation, first.pixel_size_um) == (again.mutation, again.pixel_size_um)
    assert not np.array_equal(first.image, other.image)


def test_field_is_first_field_of_its_slide_and_fields_do_not_depend_on_count():
    single = generate_field(11, shape=SMALL)
    slide = generate_slide(11, n_fields=3, shape=SMALL)
    longer = generate_slide(11, n_fields=4, shape=SMALL)
    assert np.array_equal(single.image, slide[0].image)
    assert np.array_equal(slide[2].image, longer[2].image)
    assert [f.field_index for f in slide] == [0, 1, 2]


def test_fields_of_a_slide_share_mutation_pixel_size_and_blast_fraction():
    slide = generate_slide(5, n_fields=3, shape=SMALL)
    assert len({f.mutation for f in slide}) == 1
    assert len({f.pixel_size_um for f in slide}) == 1
    assert len({f.blast_fraction for f in slide}) == 1
    assert not np.array_equal(slide[0].image, slide[1].image)


def test_image_labels_and_table_have_documented_shapes_and_dtypes(default_field):
    field = default_field
    assert field.image.shape == (512, 512, 3)
    assert field.image.dtype == np.uint8
    assert field.labels.shape == (512, 512)
    assert field.labels.dtype == np.int32
    assert tuple(field.cells.columns) == TABLE_COLUMNS
    assert field.cells["is_blast"].dtype == bool
    assert field.cells["is_nucleated"].dtype == bool
    assert set(field.cells["cell_type"]) <= set(CELL_TYPES)
    assert field.mutation in MUTATION_CLASSES
    assert field.preset == "default"
    assert field.cells["mutation_features"].between(0, 1).all()


def test_every_label_has_one_row_in_label_order_with_its_centroid(default_field):
    field = default_field
    present = np.unique(field.labels)
    present = present[present > 0]
    labels = field.cells["label"].to_numpy()
    assert np.array_equal(labels, present)
    assert np.array_equal(labels, np.arange(1, len(labels) + 1))
    centroids = np.array(ndi.center_of_mass(np.ones(field.labels.shape), field.labels, labels))
    assert np.allclose(centroids[:, 0], field.cells["centroid_y"], atol=1e-6)
    assert np.allclose(centroids[:, 1], field.cells["centroid_x"], atol=1e-6)


def test_is_nucleated_and_is_blast_follow_the_cell_types(default_field):
    cells = default_field.cells
    assert (cells["is_nucleated"] == cells["cell_type"].isin(NUCLEATED_TYPES)).all()
    assert (cells["is_blast"] == (cells["cell_type"] == "blast")).all()
    assert {"erythrocyte", "platelet", "blast"} <= set(cells["cell_type"])
    assert (
        cells.loc[~cells["is_blast"] & (cells["cell_type"] != "eosinophil"), "mutation_features"]
        == 0
    ).all()


def test_white_cells_are_drawn_above_red_cells(default_field):
    """A white cell inside the field owns its whole disc: no red cell label inside it."""
    field = default_field
    inner = field.cells[field.cells["is_nucleated"] & ~field.cells["touches_border"]]
    area = np.bincount(field.labels.ravel())[inner["label"].to_numpy()]
    expected = np.pi * (inner["diameter_um"].to_numpy() / 2 / field.pixel_size_um) ** 2
    assert np.all(np.abs(area / expected - 1) < 0.25)


def test_blast_fraction_asked_for_is_met():
    fields = generate_slide(2, n_fields=4, shape=(640, 640), blast_fraction=0.5)
    cells = np.concatenate([f.cells.loc[f.cells["is_nucleated"], "is_blast"] for f in fields])
    assert len(cells) > 100
    assert abs(cells.mean() - 0.5) < 0.12
    none = generate_field(2, shape=SMALL, blast_fraction=0.0).cells
    only = generate_field(2, shape=SMALL, blast_fraction=1.0).cells
    assert not none["is_blast"].any()
    assert (only.loc[only["is_nucleated"], "is_blast"]).all()
    assert only["is_blast"].any()


def test_blood_preset_has_few_white_cells_and_default_many():
    blood = generate_field(1, "blood", shape=(512, 512)).cells
    marrow = generate_field(1, "default", shape=(512, 512)).cells
    blood_share = blood["is_nucleated"].mean()
    assert blood_share < 0.05
    assert marrow["is_nucleated"].mean() > 3 * blood_share
    assert (blood["cell_type"] == "erythrocyte").sum() > 100


def test_pixel_size_lies_in_the_preset_range_or_is_the_one_asked_for():
    for name, preset in PRESETS.items():
        low = preset.pixel_size_um * (1 - preset.pixel_size_jitter)
        high = preset.pixel_size_um * (1 + preset.pixel_size_jitter)
        sizes = [generate_field(seed, name, shape=(32, 32)).pixel_size_um for seed in range(8)]
        assert all(low <= size <= high for size in sizes), (name, sizes)
        assert len(set(sizes)) > 1
    assert generate_field(0, shape=(32, 32), pixel_size_um=0.4).pixel_size_um == 0.4


def test_presets_are_listed_and_an_unknown_name_lists_them():
    assert {"default", "easy", "blood"} <= set(PRESETS)
    assert get_preset("easy") is PRESETS["easy"]
    custom = dataclasses.replace(PRESETS["default"], name="mine")
    assert get_preset(custom) is custom
    with pytest.raises(ValueError, match="Unknown synthetic preset 'marrow'") as error:
        get_preset("marrow")
    for name in PRESETS:
        assert name in str(error.value)
    with pytest.raises(TypeError, match="preset name"):
        get_preset(3)


def test_an_invalid_custom_preset_names_the_bad_fields():
    with pytest.raises(ValueError, match="pixel_size_um must be > 0") as error:
        SmearPreset(name="bad", pixel_size_um=-1, blast_fraction=(0.5, 1.5))
    assert "blast_fraction" in str(error.value)


def test_same_seed_with_another_mutation_keeps_layout_and_stain():
    npm1 = generate_field(9, "easy", shape=SMALL, mutation="NPM1")
    runx1 = generate_field(9, "easy", shape=SMALL, mutation="RUNX1::RUNX1T1")
    assert (npm1.mutation, runx1.mutation) == ("NPM1", "RUNX1::RUNX1T1")
    assert np.array_equal(npm1.cells["cell_type"], runx1.cells["cell_type"])
    assert np.allclose(npm1.cells["centroid_y"], runx1.cells["centroid_y"], atol=2)


def test_runx1_blasts_are_redder_than_npm1_blasts_at_equal_stain():
    """t(8;21) salmon-pink cytoplasm: more red relative to blue over the blasts."""
    npm1 = generate_field(21, "easy", shape=SMALL, mutation="NPM1", blast_fraction=0.8)
    runx1 = generate_field(21, "easy", shape=SMALL, mutation="RUNX1::RUNX1T1", blast_fraction=0.8)

    def redness(field) -> float:
        pixels = _blast_pixels(field)
        return float(np.mean(pixels[:, 0] - pixels[:, 2]))

    assert redness(runx1) > redness(npm1) + 8


def test_auer_rods_appear_only_where_the_class_has_them():
    rods = {}
    for mutation in MUTATION_CLASSES:
        field = generate_field(13, "easy", shape=SMALL, mutation=mutation, blast_fraction=0.9)
        blasts = field.cells[field.cells["is_blast"]]
        assert len(blasts) > 5
        rods[mutation] = blasts["auer_rods"].to_numpy()
        assert (field.cells.loc[~field.cells["is_blast"], "auer_rods"] == 0).all()
    assert rods["PML::RARA"].max() >= 2  # bundles (faggots)
    assert (rods["RUNX1::RUNX1T1"] > 0).mean() > 0.5
    assert rods["RUNX1::RUNX1T1"].max() == 1  # a single long rod
    assert rods["NPM1"].max() == 0
    assert rods["CBFB::MYH11"].max() == 0


def test_pml_rara_blasts_carry_dark_rods_and_granules():
    shown = generate_field(17, "easy", shape=SMALL, mutation="PML::RARA", blast_fraction=0.9)
    plain = generate_field(
        17, _strengthless("easy"), shape=SMALL, mutation="PML::RARA", blast_fraction=0.9
    )
    dark_shown = np.mean(_blast_pixels(shown)[:, 1] < 35)
    dark_plain = np.mean(_blast_pixels(plain)[:, 1] < 35)
    assert dark_shown > 5 * dark_plain + 0.02


def test_npm1_blasts_show_a_pale_nuclear_cup():
    shown = generate_field(19, "easy", shape=SMALL, mutation="NPM1", blast_fraction=0.9)
    plain = generate_field(
        19, _strengthless("easy"), shape=SMALL, mutation="NPM1", blast_fraction=0.9
    )
    assert _blast_pixels(shown).mean() > _blast_pixels(plain).mean() + 3


def test_cbfb_myh11_fields_hold_eosinophils_with_dark_granules():
    eosinophil_rich = dataclasses.replace(
        PRESETS["easy"], name="eosinophils", white_cell_mix={"eosinophil": 1.0}
    )

    def dark_share(mutation: str) -> float:
        field = generate_field(
            23, eosinophil_rich, shape=(448, 448), mutation=mutation, blast_fraction=0.2
        )
        eosinophils = field.cells.loc[field.cells["cell_type"] == "eosinophil", "label"]
        assert len(eosinophils) >= 5
        pixels = field.image[np.isin(field.labels, eosinophils.to_numpy())].astype(float)
        return float(np.mean(pixels.sum(axis=1) < 150))

    assert dark_share("CBFB::MYH11") > 4 * dark_share("NPM1") + 0.01


def test_cbfb_myh11_blasts_have_folded_nuclei_and_greyer_cytoplasm():
    shown = generate_field(29, "easy", shape=SMALL, mutation="CBFB::MYH11", blast_fraction=0.9)
    plain = generate_field(
        29, _strengthless("easy"), shape=SMALL, mutation="CBFB::MYH11", blast_fraction=0.9
    )

    def blueness(field) -> float:
        pixels = _blast_pixels(field)
        return float(np.mean(pixels[:, 2] - pixels[:, 0]))

    assert blueness(shown) < blueness(plain) - 3


def test_tiny_fields_work():
    for shape in [(1, 1), (8, 5), (24, 24)]:
        field = generate_field(0, shape=shape)
        assert field.image.shape == (*shape, 3)
        assert field.labels.shape == shape
        present = np.unique(field.labels)
        assert np.array_equal(field.cells["label"].to_numpy(), present[present > 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mutation": "FLT3"}, "Unknown mutation class 'FLT3'; choose one of PML::RARA"),
        ({"shape": (0, 100)}, "shape must be two positive integers"),
        ({"shape": (-5, 5)}, "shape must be two positive integers"),
        ({"shape": (10,)}, "shape must be two positive integers"),
        ({"blast_fraction": 1.5}, "blast_fraction must be a share of nucleated cells in"),
        ({"pixel_size_um": 0.0}, "pixel_size_um must be a positive number"),
        ({"preset": "marrow"}, "Unknown synthetic preset 'marrow'; choose one of default"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_field(0, **kwargs)


def test_bad_seed_and_field_count_give_clear_errors():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        generate_field(-1)
    with pytest.raises(ValueError, match="n_fields must be a positive integer"):
        generate_slide(0, n_fields=0)


def test_render_crops_gives_nucleated_crops_with_truth_from_balanced_slides():
    batch = render_crops(60, 5, "easy", cells_per_slide=15, field_shape=(384, 384))
    assert batch.images.shape == (60, 48, 48, 3)
    assert batch.images.dtype == np.uint8
    cells = batch.cells
    assert len(cells) == 60
    assert set(cells["cell_type"]) <= set(NUCLEATED_TYPES)
    assert set(cells["mutation"]) == set(MUTATION_CLASSES)  # four slides, one class each
    assert cells.groupby("slide")["mutation"].nunique().eq(1).all()
    assert (cells["is_blast"] == (cells["cell_type"] == "blast")).all()
    # The first crop is its cell: the crop's centre is darker (stained) than the background.
    first = cells.iloc[0]
    field = generate_slide(
        int(first["slide_seed"]),
        "easy",
        n_fields=int(first["field_index"]) + 1,
        shape=(384, 384),
        mutation=first["mutation"],
    )[-1]
    row = field.cells.set_index("label").loc[first["label"]]
    assert row["cell_type"] == first["cell_type"]
    assert batch.images[0, 20:28, 20:28].mean() < np.median(batch.images[0]) - 10


def test_render_crops_of_blasts_only_and_its_errors():
    batch = render_crops(
        12, 1, "easy", blasts_only=True, mutations=["NPM1"], field_shape=(384, 384)
    )
    assert batch.cells["is_blast"].all()
    assert (batch.cells["mutation"] == "NPM1").all()
    assert render_crops(0, 1).images.shape == (0, 48, 48, 3)
    with pytest.raises(ValueError, match="mutations must list classes from PML::RARA"):
        render_crops(5, 1, mutations=["FLT3"])
    with pytest.raises(ValueError, match="n_cells must be a non-negative integer"):
        render_crops(-2, 1)

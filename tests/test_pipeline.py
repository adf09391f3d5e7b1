"""The one flow, end to end on a synthetic field with the shipped models."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.io import ImageInputError
from blastscope.models import BundleError
from blastscope.pipeline import (
    DEFAULT_BLAST_MODEL,
    PipelineConfig,
    SlideCallSettings,
    analyse,
    analyse_steps,
    loaded,
    recall_slide,
    recompute_stage,
    rethreshold,
    segment_stage,
)
from blastscope.predict import PredictionError
from blastscope.progress import run_steps
from blastscope.segment import SegmentationParams
from blastscope.segment import loading as segment_loading
from blastscope.synthetic import generate_field
from forward_counter import ForwardCounter


@pytest.fixture(scope="module")
def config():
    return loaded(PipelineConfig(device="cpu"))


@pytest.fixture(scope="module")
def field():
    return generate_field(21, "default", shape=(512, 512), mutation="PML::RARA", blast_fraction=0.6)


@pytest.fixture(scope="module")
def analysed(field, config):
    events = []
    result = analyse(field.image, field.pixel_size_um, config, on_progress=events.append)
    return result, events


def test_analyse_runs_every_stage_in_order_and_fills_the_table(analysed, field):
    result, events = analysed
    stages = list(dict.fromkeys(event.stage for event in events))
    assert stages == ["segment", "measure", "nucleated", "classify", "mutation"]
    assert result.labels.shape == field.image.shape[:2]
    assert result.pixel_size_um == field.pixel_size_um
    labels = np.unique(result.labels)
    np.testing.assert_array_equal(result.cells["label"], labels[labels > 0])
    nucleated = result.cells["is_nucleated"].to_numpy()
    assert np.isfinite(result.cells.loc[nucleated, "p_blast"]).all()
    assert result.cells.loc[~nucleated, "p_blast"].isna().all()
    blasts = result.cells["is_blast"].to_numpy()
    assert (result.cells.loc[blasts, "mutation_call"] != "").all()
    assert result.slide_call is not None
    assert result.slide_call.n_blasts == blasts.sum()


def test_provenance_names_models_hashes_and_settings(analysed):
    provenance = analysed[0].provenance
    assert provenance["blast"]["name"] == DEFAULT_BLAST_MODEL
    assert len(provenance["blast"]["sha256"]) == 64
    assert provenance["blast"]["demo"] is True
    assert provenance["mutation"]["classes"] == list(analysed[0].slide_call.classes)
    assert provenance["segmentation"]["model"]
    assert provenance["slide_call"]["min_blasts"] == 20
    assert provenance["software"]["torch"]


def test_rethreshold_moves_blasts_and_the_call_without_inference(analysed, config):
    result = analysed[0]
    counters = [ForwardCounter(config.blast_model), ForwardCounter(config.mutation_model)]
    strict = rethreshold(result, 1.0)
    relaxed = rethreshold(result, 0.0)
    assert [counter.calls for counter in counters] == [0, 0]
    assert strict.n_blasts <= result.n_blasts <= relaxed.n_blasts
    assert relaxed.n_blasts == relaxed.n_nucleated
    assert relaxed.slide_call.n_blasts == relaxed.n_blasts
    assert relaxed.provenance["blast"]["threshold"] == 0.0
    with pytest.raises(PredictionError, match="threshold"):
        rethreshold(result, 1.5)


def test_recall_slide_applies_new_settings_without_inference(analysed):
    result = analysed[0]
    demanding = recall_slide(result, SlideCallSettings(min_blasts=10_000))
    assert demanding.slide_call.abstained
    assert demanding.slide_call.reason.startswith("insufficient blasts")
    assert demanding.provenance["slide_call"]["min_blasts"] == 10_000


def test_recompute_masks_reuses_the_network_outputs_and_drops_the_call(analysed, field):
    result = analysed[0]
    stricter = run_steps(recompute_stage(field.image, result, cellprob_threshold=2.0))
    assert stricter.slide_call is None
    assert (stricter.labels > 0).sum() < (result.labels > 0).sum()
    assert "p_blast" not in stricter.cells


def test_a_field_without_cells_gives_an_empty_table_and_an_abstention(config):
    background = np.full((256, 256, 3), (232, 226, 228), dtype=np.uint8)
    result = analyse(background, 0.25, config)
    assert result.n_cells == 0
    assert "No cells were found in this image." in result.notices
    assert result.slide_call.abstained


def test_stages_can_be_skipped(field):
    result = run_steps(
        analyse_steps(field.image, field.pixel_size_um, PipelineConfig(blast_model=None))
    )
    assert "p_blast" not in result.cells
    assert result.slide_call is None


def test_a_bad_bundle_fails_before_any_image_is_read():
    with pytest.raises(BundleError, match="No model bundle named or found at 'missing'"):
        loaded(PipelineConfig(blast_model="missing"))


@pytest.mark.parametrize("pixel_size", [1e6, 10.0, 0.0, -0.25, float("nan"), "abc"])
def test_an_impossible_pixel_size_is_refused_before_any_model_loads(field, monkeypatch, pixel_size):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for an impossible pixel size")

    monkeypatch.setattr(segment_loading, "load_segmenter", no_model)
    config = PipelineConfig(blast_model=None, mutation_model=None)
    with pytest.raises(ImageInputError, match=r"between 0\.02 and 5 µm per pixel"):
        analyse(field.image, pixel_size, config)
    with pytest.raises(ImageInputError, match="pixel_size_um"):
        next(analyse_steps(field.image, pixel_size, config))


def test_a_numeric_string_pixel_size_is_accepted():
    field = generate_field(4, "default", shape=(192, 192))
    params = SegmentationParams(device="cpu", nucleated_model=None)
    config = PipelineConfig(segmentation=params, blast_model=None, mutation_model=None)
    result = analyse(field.image, f"{field.pixel_size_um}", config)
    assert result.pixel_size_um == pytest.approx(field.pixel_size_um)
    assert result.segmentation.model_info["pixel_size_source"] == "given"
    assert result.n_cells > 0


@pytest.mark.parametrize("mutation", ["NPM1", "CBFB::MYH11"])
def test_the_shipped_models_call_the_fields_mutation(config, mutation):
    # Measured with the shipped defaults (blast-smear, mutation-demo) on 768 x 768 fields with
    # blast_fraction 0.8: seeds 0-7 of NPM1 and 0-4 of the other three classes were all called
    # right (one CBFB::MYH11 field abstained with 19 blasts). Seed 4: ~60 blasts, NPM1 0.74
    # against 0.12 for the next class, CBFB::MYH11 0.52 against 0.26. Two classes, so that a
    # model that ignores its input cannot pass.
    from blastscope.slide_call import DEFAULT_MIN_BLASTS

    field = generate_field(4, "default", shape=(768, 768), mutation=mutation, blast_fraction=0.8)
    assert field.cells["is_blast"].sum() >= 2 * DEFAULT_MIN_BLASTS
    result = analyse(field.image, field.pixel_size_um, config)
    call = result.slide_call
    assert call.min_blasts == DEFAULT_MIN_BLASTS
    assert call.n_blasts >= DEFAULT_MIN_BLASTS
    assert not call.abstained, call.reason
    assert call.call == field.mutation == mutation
    assert max(call.probabilities, key=call.probabilities.get) == mutation


def test_the_segmenters_pixel_size_notices_reach_the_result():
    field = generate_field(4, "default", shape=(192, 192))
    params = SegmentationParams(device="cpu", nucleated_model=None)
    config = PipelineConfig(segmentation=params, blast_model=None, mutation_model=None)
    coarse = analyse(field.image[:96, :96], 5.0, config)
    assert any("enlarged" in notice for notice in coarse.notices)
    unknown = analyse(field.image, None, config)
    assert sum("No pixel size" in notice for notice in unknown.notices) == 1


def test_an_image_of_noise_says_it_holds_no_nucleated_cell():
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    result = run_steps(segment_stage(noise, 0.25))
    assert len(result.cells) > 0  # Cellpose finds "objects" in noise (53 here)
    assert not result.cells["is_nucleated"].any()
    assert any(notice.startswith("None of the") for notice in result.notices)


def test_red_cells_of_an_implausible_size_point_at_the_pixel_size(analysed, field):
    """At the field's pixel size red cells measure 6-9 µm and nothing is said; given twice the
    pixel size they measure twice that, and the notice names the size, its source and the fix."""
    result, _ = analysed
    assert not any(notice.startswith("Red cells") for notice in result.notices)
    doubled = run_steps(segment_stage(field.image, 2 * field.pixel_size_um))
    (notice,) = [notice for notice in doubled.notices if notice.startswith("Red cells")]
    assert f"at {2 * field.pixel_size_um:g} µm per pixel (given)" in notice
    assert "probably too large" in notice
    assert "--pixel-size" in notice

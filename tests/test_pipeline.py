"""The one flow, end to end on a synthetic field with the shipped models."""

from __future__ import annotations

import numpy as np
import pytest

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
)
from blastscope.predict import PredictionError
from blastscope.progress import run_steps
from blastscope.synthetic import generate_field


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
    blast_calls = config.blast_model.forward_calls
    mutation_calls = config.mutation_model.forward_calls
    strict = rethreshold(result, 1.0)
    relaxed = rethreshold(result, 0.0)
    assert config.blast_model.forward_calls == blast_calls
    assert config.mutation_model.forward_calls == mutation_calls
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

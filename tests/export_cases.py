"""Results to export in the export tests: a real synthetic field measured by blastscope.cells,
with classifier columns set from the field's truth (the classifier is not what these tests
check) through the real threshold and slide-call code."""

from __future__ import annotations

import numpy as np
import pandas as pd

from blastscope.cells import measure_cells
from blastscope.predict import apply_blast_threshold
from blastscope.result import SlideResult
from blastscope.slide_call import call_slide
from blastscope.synthetic import MUTATION_CLASSES, generate_field

INPUT_SHA256 = "5" * 64
BLAST_THRESHOLD = 0.5


def classified_result(
    seed: int = 3, shape: tuple[int, int] = (384, 512), mutation: str = "NPM1"
) -> tuple[SlideResult, np.ndarray]:
    """(result, image) of a synthetic field with blast and mutation columns and a slide call.

    ``p_blast`` is high for the field's true blasts and low for other nucleated cells (NaN for
    non-nucleated ones); one blast call is overridden to False and one non-blast to True by
    "the user" (``blast_override``); blasts carry ``p_<class>`` favouring ``mutation``.
    """
    field = generate_field(seed, shape=shape, mutation=mutation, blast_fraction=0.7)
    cells = measure_cells(field.image, field.labels, field.pixel_size_um)
    rng = np.random.default_rng(seed)
    truly_blast = field.cells["is_blast"].to_numpy(dtype=bool)
    nucleated = cells["is_nucleated"].to_numpy(dtype=bool)
    high, low = rng.uniform(0.55, 1.0, len(cells)), rng.uniform(0.0, 0.45, len(cells))
    p_blast = np.where(truly_blast, high, low)
    cells["p_blast"] = np.where(nucleated, p_blast, np.nan)
    cells = apply_blast_threshold(cells, BLAST_THRESHOLD)
    blasts = np.flatnonzero(cells["blast_call"].to_numpy())
    others = np.flatnonzero(nucleated & ~cells["blast_call"].to_numpy())
    override = cells["blast_override"].copy()
    override.iloc[blasts[0]] = False
    override.iloc[others[0]] = True
    cells["blast_override"] = override
    cells = apply_blast_threshold(cells, BLAST_THRESHOLD)
    is_blast = cells["is_blast"].to_numpy()
    weights = np.where(np.array(MUTATION_CLASSES) == mutation, 6.0, 1.0)
    probabilities = rng.dirichlet(weights, size=len(cells))
    for index, name in enumerate(MUTATION_CLASSES):
        cells[f"p_{name}"] = np.where(is_blast, probabilities[:, index], np.nan)
    top = np.array(MUTATION_CLASSES)[probabilities.argmax(axis=1)]
    cells["mutation_call"] = pd.Series(np.where(is_blast, top, ""), dtype=object)
    call = call_slide(cells, MUTATION_CLASSES, min_blasts=5, n_bootstrap=200)
    provenance = {
        "input_sha256": INPUT_SHA256,
        "blast": {"bundle": "blast-demo", "bundle_sha256": "b" * 64, "threshold": BLAST_THRESHOLD},
        "mutation": {"bundle": "mutation-demo", "bundle_sha256": "c" * 64},
        "segmentation": {"params": {"flow_threshold": 0.4}},
    }
    result = SlideResult(
        labels=field.labels,
        cells=cells,
        pixel_size_um=field.pixel_size_um,
        slide_call=call,
        provenance=provenance,
        notices=["synthetic field for the export tests"],
    )
    return result, field.image

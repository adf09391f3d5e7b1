"""Synthetic Wright-Giemsa smear fields with exact ground truth.

The generator is the project's ground truth: segmenter training, the blast classifier, the
mutation model, their benchmarks, the napari sample data and the demo all draw from it.

Image formation
---------------
Every cell is rendered in its own small patch as an optical density (OD, natural log, per RGB
channel) built from stain components (cytoplasm, nucleus, three granule populations, Auer rods),
each a per-pixel density times the component's stain colour (an OD vector). Patches of all cells
of a type are rendered at once with vectorised numpy (a shared polar grid for the outlines, small
"stamps" for lobes, nucleoli, folds and rods, noise textures for chromatin and granules). The
field's OD is the sum of the patches (Beer-Lambert: overlapping red cells look darker, as in real
smears), and the camera sees ``background · illumination · exp(-OD)``, then optical blur, camera
noise (zero-mean, uniformly distributed, larger where brighter) and JPEG compression.

Truth
-----
``labels`` holds every cell (red cells and platelets too); the top-most drawn cell owns the
pixels it covers, white cells are drawn above red cells. A cell hidden to less than a quarter of
its in-field area is removed from the labels (its pixels become 0). Cells may be cut by the field
border. The cells table has one row per label, in label order; centroids are those of the visible
pixels (what a segmentation would measure), ``diameter_um`` is the drawn cell's true diameter.

Mutation morphology
-------------------
Each field (slide) has one mutation class; its blasts carry the class's features with a strength
drawn per cell (``mutation_features``, 0..1; a preset's ``feature_absent_fraction`` of blasts show
nothing): ``PML::RARA`` Auer rods (bundles), heavy coarse purple-red granules, a bilobed
(butterfly) nucleus; ``NPM1`` a pale cup-like nuclear invagination and fewer granules;
``CBFB::MYH11`` a folded monocytoid nucleus, grey-blue cytoplasm and a few large dark granules,
plus abnormal eosinophils (dark purple granules) in the field; ``RUNX1::RUNX1T1`` salmon
cytoplasm, a pale perinuclear hof and a single long slender Auer rod.

Seeding
-------
``generate_field(seed)`` is ``generate_slide(seed, n_fields=1)[0]``. A slide's look (stain,
illumination, optics, pixel size, mutation, blast fraction) and each field's layout come from
separate streams of ``numpy.random.SeedSequence(seed)``, so the same seed with another
``mutation`` gives the same stain and layout with other features (CBFB::MYH11 fields excepted:
their extra eosinophils change the cell types drawn).

Modules
-------
One job each: ``presets`` (the knobs), ``look`` (a slide's stain, optics and camera), ``layout``
(where the cells go), ``patches`` (patch geometry, stamps, textures), ``cell_parts``,
``white_cells`` and ``blasts`` (how nucleated cells and the mutation morphology are shaped),
``render`` (cells into patches of optical density), ``compose`` (a field: patches into the
image and its truth), ``generate`` (fields and slides) and ``crops`` (single-cell crops). Import
the public names from ``blastscope.synthetic``.
"""

from blastscope.classes import MUTATION_CLASSES
from blastscope.synthetic.compose import TABLE_COLUMNS, SyntheticField
from blastscope.synthetic.crops import SyntheticCrops, render_crops, render_crops_steps
from blastscope.synthetic.generate import generate_field, generate_slide
from blastscope.synthetic.presets import (
    CELL_TYPES,
    NUCLEATED_TYPES,
    PRESETS,
    SmearPreset,
    get_preset,
)

__all__ = [
    "CELL_TYPES",
    "MUTATION_CLASSES",
    "NUCLEATED_TYPES",
    "PRESETS",
    "TABLE_COLUMNS",
    "SmearPreset",
    "SyntheticCrops",
    "SyntheticField",
    "generate_field",
    "generate_slide",
    "get_preset",
    "render_crops",
    "render_crops_steps",
]

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from scipy.special import ndtri

from blastscope.progress import Progress, Steps, run_steps

CELL_TYPES = (
    "erythrocyte",
    "platelet",
    "neutrophil",
    "eosinophil",
    "lymphocyte",
    "monocyte",
    "blast",
)
NUCLEATED_TYPES = ("neutrophil", "eosinophil", "lymphocyte", "monocyte", "blast")
MUTATION_CLASSES = ("PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1")

TABLE_COLUMNS = (
    "label",
    "cell_type",
    "is_blast",
    "is_nucleated",
    "centroid_y",
    "centroid_x",
    "diameter_um",
    "mutation_features",
    "auer_rods",
    "touches_border",
)
"""Columns of :attr:`SyntheticField.cells`, in order."""

_WHITE_TYPES = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")

# Stain colours: optical density (natural log) per RGB channel at unit density, and the dye that
# carries it ("eosin" = acidic, red; "azure" = basic, blue-purple). A slide scales each dye and
# mixes the channels a little (see _draw_stain).
_STAIN_OD = {
    "rbc": ((0.07, 0.40, 0.33), "eosin"),
    "nucleus": ((0.78, 1.12, 0.32), "azure"),
    "blast_nucleus": ((0.62, 0.98, 0.32), "azure"),
    "lymph_cyto": ((0.40, 0.24, 0.06), "azure"),
    "basophilic": ((0.58, 0.36, 0.08), "azure"),
    "neutro_cyto": ((0.06, 0.15, 0.09), "eosin"),
    "neutro_granule": ((0.20, 0.34, 0.12), "azure"),
    "eos_granule": ((0.04, 0.55, 0.85), "eosin"),
    "mono_cyto": ((0.27, 0.23, 0.11), "azure"),
    "salmon": ((0.02, 0.30, 0.34), "eosin"),
    "azurophil": ((0.50, 1.00, 0.38), "azure"),
    "dark_granule": ((1.30, 1.75, 0.95), "azure"),
    "auer": ((0.75, 1.55, 0.70), "azure"),
    "platelet": ((0.45, 0.75, 0.20), "azure"),
    "plasma": ((0.05, 0.07, 0.02), "azure"),
}

# Noise texture channels (all unit standard deviation) and their smoothing scale in µm.
_TEXTURES = {
    "chromatin_fine": 0.22,
    "chromatin_coarse": 0.55,
    "granule_fine": 0.16,
    "granule_coarse": 0.24,
    "granule_large": 0.55,
    "smooth": 1.3,
}
_TEX = {name: index for index, name in enumerate(_TEXTURES)}
_TEXTURE_TILE_PX = 512
_FAR = 1.0e3  # signed distance (px) meaning "far outside"


def _default_diameters() -> dict[str, tuple[float, float]]:
    return {
        "erythrocyte": (7.4, 0.45),
        "platelet": (2.5, 0.4),
        "neutrophil": (13.0, 1.0),
        "eosinophil": (14.0, 1.2),
        "lymphocyte": (8.3, 0.75),
        "monocyte": (16.5, 1.6),
        "blast": (16.0, 1.8),
    }


def _default_white_mix() -> dict[str, float]:
    return {"neutrophil": 0.42, "eosinophil": 0.06, "lymphocyte": 0.34, "monocyte": 0.18}


@dataclass(frozen=True)
class SmearPreset:
    """Every knob of the generator. Ranges ``(low, high)`` are drawn uniformly per slide or field.

    Scale: ``pixel_size_um`` (µm per pixel) varies per slide by ``± pixel_size_jitter`` (relative);
    all cell diameters of a slide are scaled by one factor of relative sd ``cell_scale_jitter``;
    ``diameter_um`` gives (mean, sd) in µm per cell type (drawn per cell, clipped at ±2.2 sd);
    large lymphocytes use ``large_lymphocyte_diameter_um``.

    Layout (per field): ``nucleated_per_10k_um2`` nucleated cells per 100 × 100 µm,
    ``rbc_coverage`` the share of the area the red cells offered would cover (thin areas and the
    spacing rules place fewer: about half in ``default``), ``platelets_per_10k_um2``;
    ``thickness_variation`` (0..1) how patchy the smear is (red cells gather and overlap in thick
    areas), ``rbc_overlap`` (0..1) how far red cells may overlap there (share of the sum of radii);
    ``white_cell_mix`` the relative frequencies of the non-blast nucleated types;
    ``blast_fraction`` blasts per nucleated cell (per slide); ``crenated_rbc_fraction`` and
    ``pale_rbc_fraction`` of red cells.

    Difficulty: ``large_lymphocyte_fraction`` of lymphocytes are large (paler, more cytoplasm,
    finer chromatin: blast look-alikes); ``blastlike_monocyte_fraction`` of monocytes have a
    round unfolded nucleus; ``lookalike_similarity`` (0..1) how far these look-alikes drift
    towards a blast's nuclear hue, chromatin, nucleoli and cytoplasm; ``blast_typicality`` is
    Beta(a, b) of how textbook a blast looks (low: smaller, more mature nuclear hue, coarser
    chromatin, faint or no nucleoli).

    Mutation features: a blast shows none with probability ``feature_absent_fraction``, else a
    strength ``feature_strength · Beta(*feature_strength_beta)`` clipped to 1;
    ``abnormal_eosinophil_fraction`` of eosinophils in CBFB::MYH11 fields carry dark granules,
    and eosinophils are ``cbfb_eosinophil_boost`` times more frequent there.

    Stain and camera (per slide): ``stain_jitter`` relative sd of each dye's strength and of the
    channel mixing; ``background_jitter`` sd of the background colour (fraction of full scale);
    ``illumination_falloff`` brightness lost at the field corners; ``blur_sigma_um`` optical blur
    (Gaussian sd, µm); ``noise_sigma`` camera noise sd (8-bit units, at full brightness);
    ``jpeg_quality`` range of JPEG quality, or None for no compression.
    """

    name: str = "custom"
    description: str = ""
    pixel_size_um: float = 0.25
    pixel_size_jitter: float = 0.15
    cell_scale_jitter: float = 0.05
    diameter_um: Mapping[str, tuple[float, float]] = field(default_factory=_default_diameters)
    large_lymphocyte_diameter_um: tuple[float, float] = (12.5, 1.3)
    nucleated_per_10k_um2: tuple[float, float] = (9.0, 16.0)
    rbc_coverage: tuple[float, float] = (0.55, 0.85)
    platelets_per_10k_um2: tuple[float, float] = (2.0, 6.0)
    thickness_variation: float = 0.8
    rbc_overlap: float = 0.35
    white_cell_mix: Mapping[str, float] = field(default_factory=_default_white_mix)
    blast_fraction: tuple[float, float] = (0.2, 0.8)
    crenated_rbc_fraction: float = 0.025
    pale_rbc_fraction: float = 0.08
    large_lymphocyte_fraction: float = 0.35
    blastlike_monocyte_fraction: float = 0.4
    lookalike_similarity: float = 0.85
    blast_typicality: tuple[float, float] = (3.0, 1.5)
    feature_strength: float = 1.0
    feature_strength_beta: tuple[float, float] = (2.5, 2.0)
    feature_absent_fraction: float = 0.25
    abnormal_eosinophil_fraction: float = 0.6
    cbfb_eosinophil_boost: float = 3.0
    stain_jitter: float = 0.12
    background_jitter: float = 0.025
    illumination_falloff: tuple[float, float] = (0.03, 0.15)
    blur_sigma_um: tuple[float, float] = (0.08, 0.3)
    noise_sigma: tuple[float, float] = (1.5, 5.0)
    jpeg_quality: tuple[int, int] | None = (70, 95)

    def __post_init__(self) -> None:
        problems = _preset_problems(self)
        if problems:
            raise ValueError(
                f"Invalid SmearPreset {self.name!r}: " + "; ".join(problems) + ". Fix these "
                "fields (see the SmearPreset docstring for their meaning and units)."
            )


def _preset_problems(preset: SmearPreset) -> list[str]:
    problems = []
    if not preset.pixel_size_um > 0:
        problems.append(f"pixel_size_um must be > 0, got {preset.pixel_size_um}")
    if not 0 <= preset.pixel_size_jitter < 1:
        problems.append(f"pixel_size_jitter must be in [0, 1), got {preset.pixel_size_jitter}")
    missing = set(CELL_TYPES) - set(preset.diameter_um)
    if missing:
        problems.append(f"diameter_um lacks {sorted(missing)}")
    unknown = set(preset.white_cell_mix) - set(_WHITE_TYPES)
    if unknown or not preset.white_cell_mix or sum(preset.white_cell_mix.values()) <= 0:
        problems.append(
            f"white_cell_mix needs positive weights for some of {list(_WHITE_TYPES)}, "
            f"got {dict(preset.white_cell_mix)}"
        )
    for name in (
        "nucleated_per_10k_um2",
        "rbc_coverage",
        "platelets_per_10k_um2",
        "blast_fraction",
        "illumination_falloff",
        "blur_sigma_um",
        "noise_sigma",
    ):
        low, high = getattr(preset, name)
        if not 0 <= low <= high:
            problems.append(f"{name} must be a range 0 <= low <= high, got {(low, high)}")
    for name in ("blast_fraction", "illumination_falloff"):
        if getattr(preset, name)[1] > 1:
            problems.append(f"{name} must lie within [0, 1], got {getattr(preset, name)}")
    for name in (
        "thickness_variation",
        "rbc_overlap",
        "crenated_rbc_fraction",
        "pale_rbc_fraction",
        "large_lymphocyte_fraction",
        "lookalike_similarity",
        "blastlike_monocyte_fraction",
        "feature_absent_fraction",
        "abnormal_eosinophil_fraction",
    ):
        if not 0 <= getattr(preset, name) <= 1:
            problems.append(f"{name} must be in [0, 1], got {getattr(preset, name)}")
    if (
        preset.jpeg_quality is not None
        and not 1 <= preset.jpeg_quality[0] <= preset.jpeg_quality[1] <= 100
    ):
        problems.append(f"jpeg_quality must be a range within 1..100, got {preset.jpeg_quality}")
    if min(*preset.blast_typicality, *preset.feature_strength_beta) <= 0:
        problems.append("blast_typicality and feature_strength_beta are Beta parameters (> 0)")
    return problems


PRESETS: dict[str, SmearPreset] = {
    "default": SmearPreset(
        name="default",
        description="Bone-marrow AML field at realistic difficulty: dense, many blast "
        "look-alikes (large lymphocytes, round monocytes), mutation features of varying "
        "strength, stain / blur / noise / JPEG variation.",
    ),
    "easy": SmearPreset(
        name="easy",
        description="Strong, clean features: textbook blasts, no look-alikes, every blast shows "
        "its mutation strongly, little stain or camera variation.",
        pixel_size_jitter=0.05,
        cell_scale_jitter=0.02,
        large_lymphocyte_fraction=0.0,
        blastlike_monocyte_fraction=0.0,
        lookalike_similarity=0.0,
        blast_typicality=(10.0, 1.0),
        feature_strength_beta=(6.0, 1.5),
        feature_absent_fraction=0.0,
        abnormal_eosinophil_fraction=0.9,
        stain_jitter=0.04,
        background_jitter=0.01,
        illumination_falloff=(0.0, 0.05),
        blur_sigma_um=(0.0, 0.08),
        noise_sigma=(0.5, 1.5),
        jpeg_quality=None,
    ),
    "blood": SmearPreset(
        name="blood",
        description="Peripheral-blood-like field: a monolayer of many red cells, few white "
        "cells, a wide range of pixel sizes (for segmenter training variety).",
        pixel_size_um=0.22,
        pixel_size_jitter=0.3,
        nucleated_per_10k_um2=(0.3, 1.5),
        rbc_coverage=(0.6, 0.95),
        platelets_per_10k_um2=(3.0, 10.0),
        thickness_variation=0.3,
        rbc_overlap=0.2,
        white_cell_mix={"neutrophil": 0.6, "eosinophil": 0.04, "lymphocyte": 0.3, "monocyte": 0.06},
        blast_fraction=(0.0, 0.4),
        large_lymphocyte_fraction=0.15,
    ),
}


def get_preset(name_or_preset: str | SmearPreset) -> SmearPreset:
    """The preset named ``name_or_preset`` (a key of :data:`PRESETS`), or the preset itself."""
    if isinstance(name_or_preset, SmearPreset):
        return name_or_preset
    if isinstance(name_or_preset, str):
        try:
            return PRESETS[name_or_preset]
        except KeyError:
            raise ValueError(
                f"Unknown synthetic preset {name_or_preset!r}; choose one of "
                f"{', '.join(PRESETS)} (or pass a SmearPreset)."
            ) from None
    raise TypeError(
        f"preset must be a preset name ({', '.join(PRESETS)}) or a SmearPreset, "
        f"got {type(name_or_preset).__name__}."
    )


@dataclass
class SyntheticField:
    """One synthetic field of view with its truth.

    ``image`` (Y, X, 3) uint8 RGB; ``labels`` (Y, X) int32 instance labels of every cell (0 =
    background); ``cells`` one row per label in label order (columns :data:`TABLE_COLUMNS`;
    centroids in pixels, ``diameter_um`` in µm, ``mutation_features`` the strength 0..1 of the
    mutation morphology the cell shows, ``auer_rods`` the number of Auer rods drawn in it);
    ``mutation`` the slide's class; ``pixel_size_um`` µm per pixel; ``seed`` the seed of the
    call that made it and ``field_index`` its index in that slide; ``blast_fraction`` the
    slide's share of blasts among nucleated cells that the layout drew from (the field's own
    share varies around it); ``preset`` the preset's name. Cells with ``mutation_features`` > 0
    are the blasts that show their slide's features and, in CBFB::MYH11 fields, the abnormal
    eosinophils.
    """

    image: np.ndarray
    labels: np.ndarray
    cells: pd.DataFrame
    mutation: str
    pixel_size_um: float
    seed: int
    preset: str
    field_index: int = 0
    blast_fraction: float = 0.0


@dataclass
class _SlideLook:
    """What all fields of one slide share."""

    mutation: str
    blast_fraction: float
    pixel_size_um: float
    cell_scale: float
    stain: dict[str, np.ndarray]
    background: np.ndarray
    falloff: float
    light_centre: tuple[float, float]
    blur_um: float
    noise_sigma: float
    jpeg_quality: int | None


def generate_field(
    seed: int,
    preset: str | SmearPreset = "default",
    *,
    shape: tuple[int, int] = (1024, 1024),
    mutation: str | None = None,
    blast_fraction: float | None = None,
    pixel_size_um: float | None = None,
) -> SyntheticField:
    """One synthetic smear field of ``shape`` (Y, X) pixels.

    ``mutation`` (one of :data:`MUTATION_CLASSES`) and ``blast_fraction`` (blasts per nucleated
    cell, 0..1) are drawn from the seed unless given; ``pixel_size_um`` (µm per pixel) likewise
    from the preset's range. Same arguments, same output.
    """
    return generate_slide(
        seed,
        preset,
        n_fields=1,
        shape=shape,
        mutation=mutation,
        blast_fraction=blast_fraction,
        pixel_size_um=pixel_size_um,
    )[0]


def generate_slide(
    seed: int,
    preset: str | SmearPreset = "default",
    *,
    n_fields: int,
    shape: tuple[int, int] = (1024, 1024),
    mutation: str | None = None,
    blast_fraction: float | None = None,
    pixel_size_um: float | None = None,
) -> list[SyntheticField]:
    """``n_fields`` fields of one slide (patient): one mutation, stain, optics and blast fraction.

    Arguments as in :func:`generate_field`; field ``k`` is the same whatever ``n_fields``.
    """
    chosen = get_preset(preset)
    height, width = _check_shape(shape)
    seed = _check_seed(seed)
    if isinstance(n_fields, bool) or not isinstance(n_fields, int | np.integer) or n_fields < 1:
        raise ValueError(f"n_fields must be a positive integer, got {n_fields!r}.")
    if mutation is not None and mutation not in MUTATION_CLASSES:
        raise ValueError(
            f"Unknown mutation class {mutation!r}; choose one of {', '.join(MUTATION_CLASSES)} "
            "(or None to draw one from the seed)."
        )
    if blast_fraction is not None and not 0.0 <= blast_fraction <= 1.0:
        raise ValueError(
            f"blast_fraction must be a share of nucleated cells in [0, 1], got {blast_fraction!r}."
        )
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(
            f"pixel_size_um must be a positive number of µm per pixel, got {pixel_size_um!r}; "
            "or leave it None to draw it from the preset."
        )
    look = _slide_look(seed, chosen, mutation, blast_fraction, pixel_size_um)
    return [_slide_field(seed, chosen, look, (height, width), index) for index in range(n_fields)]


def _slide_look(
    seed: int,
    preset: SmearPreset,
    mutation: str | None,
    blast_fraction: float | None,
    pixel_size_um: float | None,
) -> _SlideLook:
    """The look of slide ``seed`` (stream 0 of its SeedSequence), with the caller's overrides."""
    look = _draw_slide_look(
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))), preset
    )
    if mutation is not None:
        look.mutation = mutation
    if blast_fraction is not None:
        look.blast_fraction = float(blast_fraction)
    if pixel_size_um is not None:
        look.pixel_size_um = float(pixel_size_um)
    return look


def _slide_field(
    seed: int, preset: SmearPreset, look: _SlideLook, shape: tuple[int, int], index: int
) -> SyntheticField:
    """Field ``index`` of slide ``seed`` (stream ``index + 1``, as SeedSequence.spawn makes it)."""
    stream = np.random.SeedSequence(seed, spawn_key=(index + 1,))
    return _render_field(stream, preset, look, shape, seed, index)


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in shape)
        valid = all(int(side) == side for side in shape)
    except (TypeError, ValueError):
        valid = False
    if not valid or height < 1 or width < 1:
        raise ValueError(
            f"shape must be two positive integers (rows, columns) in pixels, got {shape!r}; "
            "e.g. shape=(1024, 1024)."
        )
    return height, width


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


@dataclass
class SyntheticCrops:
    """Single-cell crops with their truth.

    ``images`` (N, h, w, 3) uint8, each a ``window_um`` µm square around a cell's centroid at
    ``out_pixel_size_um`` µm per pixel; ``cells`` one row per crop: ``slide`` (index of the
    slide in this batch), ``slide_seed`` and ``field_index`` (``generate_slide(slide_seed,
    preset, n_fields=..., shape=...)[field_index]`` is the field it was cut from), ``label``,
    ``cell_type``, ``is_blast``, ``mutation`` (the slide's class), ``mutation_features``,
    ``auer_rods``, ``diameter_um``, ``centroid_y``, ``centroid_x`` (px of the field) and
    ``pixel_size_um`` (of the field).
    """

    images: np.ndarray
    cells: pd.DataFrame
    window_um: float
    out_pixel_size_um: float
    preset: str


def render_crops(
    n_cells: int,
    seed: int,
    preset: str | SmearPreset = "default",
    *,
    window_um: float = 24.0,
    out_pixel_size_um: float = 0.5,
    blasts_only: bool = False,
    mutations: Sequence[str] = MUTATION_CLASSES,
    blast_fraction: float | None = None,
    cells_per_slide: int = 200,
    field_shape: tuple[int, int] = (768, 768),
) -> SyntheticCrops:
    """``n_cells`` crops of nucleated cells (or of blasts only) from freshly generated slides.

    See :func:`render_crops_steps` for the arguments; this drives it to the end.
    """
    return run_steps(
        render_crops_steps(
            n_cells,
            seed,
            preset,
            window_um=window_um,
            out_pixel_size_um=out_pixel_size_um,
            blasts_only=blasts_only,
            mutations=mutations,
            blast_fraction=blast_fraction,
            cells_per_slide=cells_per_slide,
            field_shape=field_shape,
        )
    )


def render_crops_steps(
    n_cells: int,
    seed: int,
    preset: str | SmearPreset = "default",
    *,
    window_um: float = 24.0,
    out_pixel_size_um: float = 0.5,
    blasts_only: bool = False,
    mutations: Sequence[str] = MUTATION_CLASSES,
    blast_fraction: float | None = None,
    cells_per_slide: int = 200,
    field_shape: tuple[int, int] = (768, 768),
) -> Steps[SyntheticCrops]:
    """Render crops slide by slide, yielding a :class:`Progress` per slide.

    Slide ``k`` has the mutation ``mutations[k % len(mutations)]`` (the default cycles through
    all four classes, so they are balanced) and gives at most ``cells_per_slide`` cells (the
    nucleated cells, or the blasts with ``blasts_only``, that do not touch the field border),
    taken from as many ``field_shape`` fields as it needs. ``blast_fraction`` (blasts per
    nucleated cell) is drawn per slide from the preset unless given. Crops are cut by
    :func:`blastscope.crops.extract_crops`, the same code that cuts them at inference: a
    ``window_um`` µm window resampled to ``out_pixel_size_um`` µm per pixel.
    """
    from blastscope.crops import crop_size_px, extract_crops  # imports torch

    chosen = get_preset(preset)
    seed = _check_seed(seed)
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 0:
        raise ValueError(f"n_cells must be a non-negative integer, got {n_cells!r}.")
    if (
        isinstance(cells_per_slide, bool)
        or not isinstance(cells_per_slide, int | np.integer)
        or (cells_per_slide < 1)
    ):
        raise ValueError(f"cells_per_slide must be a positive integer, got {cells_per_slide!r}.")
    mutations = [mutations] if isinstance(mutations, str) else list(mutations)
    unknown = [m for m in mutations if m not in MUTATION_CLASSES]
    if not mutations or unknown:
        raise ValueError(
            f"mutations must list classes from {', '.join(MUTATION_CLASSES)}, got {mutations!r}."
        )
    if blasts_only and blast_fraction == 0:
        raise ValueError("blasts_only=True with blast_fraction=0 can never find a blast.")
    shape = _check_shape(field_shape)
    size = crop_size_px(window_um, out_pixel_size_um)
    slide_seeds = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    tables: list[pd.DataFrame] = []
    collected = 0
    slide = 0
    while collected < n_cells:
        slide_seed = int(slide_seeds.integers(2**31))
        wanted = min(cells_per_slide, n_cells - collected)
        got = 0
        field_index = 0
        look = _slide_look(
            slide_seed, chosen, mutations[slide % len(mutations)], blast_fraction, None
        )
        while got < wanted:
            if field_index >= 50:
                raise ValueError(
                    f"Slide {slide_seed} gave only {got} of {wanted} cells in 50 fields; use a "
                    "larger field_shape or a preset with more nucleated cells (or blasts)."
                )
            one = _slide_field(slide_seed, chosen, look, shape, field_index)
            table = one.cells
            chosen_rows = table["is_blast"] if blasts_only else table["is_nucleated"]
            chosen_rows = table[chosen_rows & ~table["touches_border"]].head(wanted - got)
            if len(chosen_rows):
                images.append(
                    extract_crops(
                        one.image,
                        chosen_rows[["centroid_y", "centroid_x"]].to_numpy(),
                        pixel_size_um=one.pixel_size_um,
                        window_um=window_um,
                        out_pixel_size_um=out_pixel_size_um,
                        labels=one.labels,
                    )
                )
                truth = chosen_rows[
                    [
                        "label",
                        "cell_type",
                        "is_blast",
                        "mutation_features",
                        "auer_rods",
                        "diameter_um",
                        "centroid_y",
                        "centroid_x",
                    ]
                ].reset_index(drop=True)
                truth.insert(0, "field_index", field_index)
                truth.insert(0, "slide_seed", slide_seed)
                truth.insert(0, "slide", slide)
                truth.insert(5, "mutation", one.mutation)
                truth["pixel_size_um"] = one.pixel_size_um
                tables.append(truth)
                got += len(chosen_rows)
            field_index += 1
        collected += got
        slide += 1
        yield Progress("synthetic crops", collected, n_cells, f"slide {slide}")
    if tables:
        cells = pd.concat(tables, ignore_index=True)
        stacked = np.concatenate(images)
    else:
        cells = pd.DataFrame(columns=_CROP_COLUMNS)
        stacked = np.zeros((0, size, size, 3), dtype=np.uint8)
    return SyntheticCrops(stacked, cells, float(window_um), float(out_pixel_size_um), chosen.name)


_CROP_COLUMNS = (
    "slide",
    "slide_seed",
    "field_index",
    "label",
    "cell_type",
    "mutation",
    "is_blast",
    "mutation_features",
    "auer_rods",
    "diameter_um",
    "centroid_y",
    "centroid_x",
    "pixel_size_um",
)


# --------------------------------------------------------------------------------------------
# Slide look: mutation, stain, optics


def _draw_slide_look(rng: np.random.Generator, preset: SmearPreset) -> _SlideLook:
    mutation = MUTATION_CLASSES[rng.integers(len(MUTATION_CLASSES))]
    blast_fraction = rng.uniform(*preset.blast_fraction)
    pixel_size = preset.pixel_size_um * (
        1 + rng.uniform(-preset.pixel_size_jitter, preset.pixel_size_jitter)
    )
    cell_scale = float(np.exp(rng.normal(0.0, preset.cell_scale_jitter)))
    stain = _draw_stain(rng, preset.stain_jitter)
    background = np.clip(
        np.array([0.90, 0.885, 0.90]) + rng.normal(0.0, preset.background_jitter, 3), 0.7, 0.99
    )
    falloff = rng.uniform(*preset.illumination_falloff)
    light_centre = (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
    blur_um = rng.uniform(*preset.blur_sigma_um)
    noise_sigma = rng.uniform(*preset.noise_sigma)
    quality_draw = rng.uniform()
    jpeg_quality = None
    if preset.jpeg_quality is not None:
        low, high = preset.jpeg_quality
        jpeg_quality = round(low + quality_draw * (high - low))
    return _SlideLook(
        mutation=mutation,
        blast_fraction=float(blast_fraction),
        pixel_size_um=float(pixel_size),
        cell_scale=cell_scale,
        stain=stain,
        background=background.astype(np.float32),
        falloff=float(falloff),
        light_centre=light_centre,
        blur_um=float(blur_um),
        noise_sigma=float(noise_sigma),
        jpeg_quality=jpeg_quality,
    )


def _draw_stain(rng: np.random.Generator, jitter: float) -> dict[str, np.ndarray]:
    """Stain colours (OD vectors) of one slide: each dye scaled, the channels mixed a little."""
    dye_scale = {"eosin": np.exp(rng.normal(0, jitter)), "azure": np.exp(rng.normal(0, jitter))}
    mixing = np.eye(3) + rng.normal(0, jitter / 4, (3, 3))
    stain = {}
    for name, (od, dye) in _STAIN_OD.items():
        vector = mixing @ (np.asarray(od) * dye_scale[dye])
        stain[name] = np.clip(vector, 0.0, None).astype(np.float32)
    return stain


# --------------------------------------------------------------------------------------------
# One field


@dataclass
class _Cells:
    """Cells of one type (or one drawing group) before rendering: centres in field pixels."""

    cell_type: str
    centre_y: np.ndarray  # (N,) int
    centre_x: np.ndarray  # (N,) int
    radius_px: np.ndarray  # (N,) float
    diameter_um: np.ndarray  # (N,) float
    is_blast: np.ndarray  # (N,) bool
    strength: np.ndarray  # (N,) float, mutation features shown
    large: np.ndarray  # (N,) bool, large lymphocyte / blast-like monocyte / abnormal eosinophil


def _render_field(
    stream: np.random.SeedSequence,
    preset: SmearPreset,
    look: _SlideLook,
    shape: tuple[int, int],
    seed: int,
    field_index: int,
) -> SyntheticField:
    layout_rng, cell_rng, camera_rng = (np.random.default_rng(s) for s in stream.spawn(3))
    px_per_um = 1.0 / look.pixel_size_um
    thickness = _thickness_grid(layout_rng, shape, look.pixel_size_um)
    nucleated, rbcs, platelets = _layout(layout_rng, preset, look, shape, thickness)
    largest = max((float(c.radius_px.max()) for c in nucleated if len(c.radius_px)), default=0.0)
    textures = _texture_tile(cell_rng, look.pixel_size_um, 2 * int(largest * 1.5) + 8)

    groups: list[_Patches] = []
    if len(rbcs.radius_px):
        groups.append(_render_erythrocytes(cell_rng, preset, look, rbcs))
    if len(platelets.radius_px):
        groups.append(_render_platelets(cell_rng, look, platelets, textures))
    for cells in nucleated:
        if len(cells.radius_px):
            groups.append(_render_nucleated(cell_rng, preset, look, cells, textures, px_per_um))

    od_field = np.zeros((3, *shape), dtype=np.float32)
    labels, table = _compose(od_field, groups, shape)
    _add_plasma(od_field, thickness, look)
    image = _camera(camera_rng, od_field, look)
    return SyntheticField(
        image=image,
        labels=labels,
        cells=table,
        mutation=look.mutation,
        pixel_size_um=look.pixel_size_um,
        seed=seed,
        preset=preset.name,
        field_index=field_index,
        blast_fraction=look.blast_fraction,
    )


def _texture_tile(rng: np.random.Generator, pixel_size_um: float, min_size: int) -> np.ndarray:
    """Noise textures (C, T, T) float32, unit sd, smoothed at the µm scales of ``_TEXTURES``.

    ``T`` is at least ``min_size`` (the largest patch cut from it).
    """
    size = max(_TEXTURE_TILE_PX, min_size)
    tile = rng.standard_normal((len(_TEXTURES), size, size), dtype=np.float32)
    for index, scale_um in enumerate(_TEXTURES.values()):
        sigma = max(scale_um / pixel_size_um, 0.5)
        channel = cv2.GaussianBlur(tile[index], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        channel -= channel.mean()
        channel /= channel.std() + 1e-6
        tile[index] = channel
    return tile


def _thickness_grid(
    rng: np.random.Generator, shape: tuple[int, int], pixel_size_um: float
) -> np.ndarray:
    """Smear thickness on a coarse grid (one node per ~40 µm), values in (0, 1)."""
    nodes = [math.ceil(side * pixel_size_um / 40.0) + 3 for side in shape]
    z = ndi.gaussian_filter(rng.standard_normal(nodes), 0.8, mode="wrap")
    z = (z - z.mean()) / (z.std() + 1e-6)
    return 1.0 / (1.0 + np.exp(-2.0 * z))


def _thickness_at(thickness: np.ndarray, shape: tuple[int, int], yx: np.ndarray) -> np.ndarray:
    coords = [
        np.clip(
            (yx[:, axis] / max(shape[axis], 1)) * (thickness.shape[axis] - 3) + 1,
            0,
            thickness.shape[axis] - 1,
        )
        for axis in range(2)
    ]
    return ndi.map_coordinates(thickness, coords, order=1)


# --------------------------------------------------------------------------------------------
# Layout


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, n: int, spread: float = 2.2
) -> np.ndarray:
    return np.clip(rng.normal(mean, sd, n), mean - spread * sd, mean + spread * sd)


def _layout(
    rng: np.random.Generator,
    preset: SmearPreset,
    look: _SlideLook,
    shape: tuple[int, int],
    thickness: np.ndarray,
) -> tuple[list[_Cells], _Cells, _Cells]:
    """Place nucleated cells, then red cells around them, then platelets."""
    ps = look.pixel_size_um
    area_um2 = shape[0] * shape[1] * ps * ps

    # Nucleated cells: count, types, sizes.
    n_nucleated = rng.poisson(rng.uniform(*preset.nucleated_per_10k_um2) * area_um2 / 1e4)
    n_blasts = rng.binomial(n_nucleated, look.blast_fraction)
    mix = dict(preset.white_cell_mix)
    if look.mutation == "CBFB::MYH11" and "eosinophil" in mix:
        mix["eosinophil"] *= preset.cbfb_eosinophil_boost
    weights = np.array([mix.get(t, 0.0) for t in _WHITE_TYPES])
    white_types = rng.choice(len(_WHITE_TYPES), n_nucleated - n_blasts, p=weights / weights.sum())
    type_index = np.concatenate([white_types, np.full(n_blasts, len(_WHITE_TYPES))])
    nucleated_types = (*_WHITE_TYPES, "blast")
    diameters = np.empty(n_nucleated)
    large = np.zeros(n_nucleated, dtype=bool)
    for index, name in enumerate(nucleated_types):
        members = np.flatnonzero(type_index == index)
        mean, sd = preset.diameter_um[name]
        diameters[members] = _truncated_normal(rng, mean, sd, len(members))
        if name == "lymphocyte":
            is_large = rng.uniform(size=len(members)) < preset.large_lymphocyte_fraction
            big_mean, big_sd = preset.large_lymphocyte_diameter_um
            diameters[members[is_large]] = _truncated_normal(rng, big_mean, big_sd, is_large.sum())
            large[members] = is_large
        elif name == "monocyte":
            large[members] = rng.uniform(size=len(members)) < preset.blastlike_monocyte_fraction
        elif name == "eosinophil":
            abnormal = rng.uniform(size=len(members)) < preset.abnormal_eosinophil_fraction
            large[members] = abnormal & (look.mutation == "CBFB::MYH11")
    radii = diameters * look.cell_scale / 2 / ps

    centres, kept = _scatter_discs(rng, radii, shape, margin=0.35, factor=np.full(n_nucleated, 0.9))
    nucleated: list[_Cells] = []
    for index, name in enumerate(nucleated_types):
        members = kept[type_index[kept] == index]
        rows = np.flatnonzero(type_index[kept] == index)
        nucleated.append(
            _Cells(
                cell_type=name,
                centre_y=np.round(centres[rows, 0]).astype(np.int64),
                centre_x=np.round(centres[rows, 1]).astype(np.int64),
                radius_px=radii[members],
                diameter_um=diameters[members] * look.cell_scale,
                is_blast=np.full(len(members), name == "blast"),
                strength=np.zeros(len(members)),
                large=large[members],
            )
        )
    fixed_centres, fixed_radii = centres, radii[kept]

    # Red cells: fill the field, gathering and overlapping in thick areas.
    mean_d, sd_d = preset.diameter_um["erythrocyte"]
    rbc_area = math.pi * (mean_d / 2) ** 2
    n_rbc = rng.poisson(rng.uniform(*preset.rbc_coverage) * area_um2 / rbc_area * 1.15)
    rbc_d = _truncated_normal(rng, mean_d, sd_d, n_rbc)
    rbc_r = rbc_d * look.cell_scale / 2 / ps
    variation = preset.thickness_variation

    def accept(yx: np.ndarray) -> np.ndarray:
        return (1 - variation) + variation * _thickness_at(thickness, shape, yx) ** 2

    def separation(yx: np.ndarray) -> np.ndarray:
        thick = _thickness_at(thickness, shape, yx) * variation
        return 0.97 - (0.97 - (1.0 - preset.rbc_overlap)) * np.clip(thick * 1.6 - 0.3, 0, 1)

    rbc_centres, rbc_kept = _scatter_discs(
        rng,
        rbc_r,
        shape,
        margin=0.5,
        factor_fn=separation,
        accept_fn=accept,
        fixed_centres=fixed_centres,
        fixed_radii=fixed_radii,
        fixed_factor=0.82,
    )
    rbcs = _Cells(
        cell_type="erythrocyte",
        centre_y=np.round(rbc_centres[:, 0]).astype(np.int64),
        centre_x=np.round(rbc_centres[:, 1]).astype(np.int64),
        radius_px=rbc_r[rbc_kept],
        diameter_um=rbc_d[rbc_kept] * look.cell_scale,
        is_blast=np.zeros(len(rbc_kept), dtype=bool),
        strength=np.zeros(len(rbc_kept)),
        large=np.zeros(len(rbc_kept), dtype=bool),
    )

    # Platelets: anywhere but under the white cells.
    mean_p, sd_p = preset.diameter_um["platelet"]
    n_platelets = rng.poisson(rng.uniform(*preset.platelets_per_10k_um2) * area_um2 / 1e4)
    platelet_d = _truncated_normal(rng, mean_p, sd_p, n_platelets)
    platelet_r = platelet_d * look.cell_scale / 2 / ps
    platelet_centres, platelet_kept = _scatter_discs(
        rng,
        platelet_r,
        shape,
        margin=0.0,
        factor=np.full(n_platelets, 1.2),
        fixed_centres=fixed_centres,
        fixed_radii=fixed_radii,
        fixed_factor=1.0,
        rounds=2,
    )
    platelets = _Cells(
        cell_type="platelet",
        centre_y=np.round(platelet_centres[:, 0]).astype(np.int64),
        centre_x=np.round(platelet_centres[:, 1]).astype(np.int64),
        radius_px=platelet_r[platelet_kept],
        diameter_um=platelet_d[platelet_kept] * look.cell_scale,
        is_blast=np.zeros(len(platelet_kept), dtype=bool),
        strength=np.zeros(len(platelet_kept)),
        large=np.zeros(len(platelet_kept), dtype=bool),
    )
    return nucleated, rbcs, platelets


def _scatter_discs(
    rng: np.random.Generator,
    radii: np.ndarray,
    shape: tuple[int, int],
    *,
    margin: float,
    factor: np.ndarray | None = None,
    factor_fn=None,
    accept_fn=None,
    fixed_centres: np.ndarray | None = None,
    fixed_radii: np.ndarray | None = None,
    fixed_factor: float = 1.0,
    rounds: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Dart throwing in vectorised rounds: discs of ``radii`` (px) that keep apart.

    Two discs i, j keep a centre distance of at least ``max(f_i, f_j) · (r_i + r_j)`` (f < 1
    lets them overlap). A disc's centre lies within ``margin · r`` outside the field at most, so
    cut cells show at least part of themselves. ``accept_fn(yx)`` thins proposals (0..1).
    Returns the centres (M, 2) float and the indices into ``radii`` of the discs placed.
    """
    n = len(radii)
    placed_yx = np.zeros((0, 2))
    placed_r = np.zeros(0)
    placed_f = np.zeros(0)
    placed_index = np.zeros(0, dtype=np.int64)
    if fixed_centres is not None and len(fixed_centres):
        placed_yx, placed_r = fixed_centres.astype(float), fixed_radii.astype(float)
        placed_f = np.full(len(placed_r), fixed_factor)
    n_fixed = len(placed_r)
    pending = np.arange(n)
    for _ in range(rounds):
        if not len(pending):
            break
        r = radii[pending]
        low, high = -margin * r, np.asarray(shape)[None, :] + (margin * r)[:, None]
        yx = low[:, None] + rng.uniform(size=(len(pending), 2)) * (high - low[:, None])
        f = factor[pending] if factor_fn is None else factor_fn(yx)
        ok = np.ones(len(pending), dtype=bool)
        if accept_fn is not None:
            ok &= rng.uniform(size=len(pending)) < accept_fn(yx)
        if len(placed_r):
            reach = float(np.max(f) if len(f) else 1.0) * (r.max() + placed_r.max())
            k = min(16, len(placed_r))
            distance, neighbour = cKDTree(placed_yx).query(yx, k=k, distance_upper_bound=reach)
            distance = distance.reshape(len(yx), k)
            neighbour = neighbour.reshape(len(yx), k)
            valid = neighbour < len(placed_r)
            safe = np.where(valid, neighbour, 0)
            needed = np.maximum(f[:, None], placed_f[safe]) * (r[:, None] + placed_r[safe])
            ok &= ~np.any(valid & (distance < needed), axis=1)
        candidates = np.flatnonzero(ok)
        if len(candidates) > 1:
            reach = float(np.max(f[candidates])) * 2 * r[candidates].max()
            pairs = cKDTree(yx[candidates]).query_pairs(reach, output_type="ndarray")
            if len(pairs):
                a, b = candidates[pairs[:, 0]], candidates[pairs[:, 1]]
                gap = np.linalg.norm(yx[a] - yx[b], axis=1)
                clash = gap < np.maximum(f[a], f[b]) * (r[a] + r[b])
                ok[np.maximum(a, b)[clash]] = False
        placed_yx = np.concatenate([placed_yx, yx[ok]])
        placed_r = np.concatenate([placed_r, r[ok]])
        placed_f = np.concatenate([placed_f, f[ok]])
        placed_index = np.concatenate([placed_index, pending[ok]])
        pending = pending[~ok]
    return placed_yx[n_fixed:], placed_index


# --------------------------------------------------------------------------------------------
# Patch geometry: a shared polar grid and small stamps


@dataclass
class _Patches:
    """Rendered cells of one group, each in a (P, P) patch centred on its (integer) centre.

    Either ``od`` (N, 3, P, P) per-channel optical density, or ``density`` (N, P, P) of the one
    stain colour ``colour`` (3,). ``mask`` (N, P, P) is the cell's own pixels, ``rods`` (N,) the
    Auer rods drawn in each cell.
    """

    cells: _Cells
    mask: np.ndarray
    rods: np.ndarray
    od: np.ndarray | None = None
    density: np.ndarray | None = None
    colour: np.ndarray | None = None


@dataclass(frozen=True)
class _Grid:
    """Pixel offsets (P, P) from a patch centre, and the angular basis of cell outlines."""

    half: int
    yy: np.ndarray
    xx: np.ndarray
    r2: np.ndarray
    r: np.ndarray
    basis: np.ndarray  # (6, P*P): cos/sin of 2θ, 3θ and 12θ


def _grid(half: int) -> _Grid:
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    r2 = yy * yy + xx * xx
    theta = np.arctan2(yy, xx).ravel()
    basis = np.stack([f(k * theta) for k in (2, 3, 12) for f in (np.cos, np.sin)]).astype(
        np.float32
    )
    return _Grid(half, yy, xx, r2, np.sqrt(r2), basis)


def _body_alpha(grid: _Grid, radius: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """Anti-aliased cell body (N, P, P) in [0, 1]: radius (N,) px, perturbed by outline (N, 6)."""
    boundary = radius[:, None].astype(np.float32) * (1 + outline.astype(np.float32) @ grid.basis)
    alpha = boundary - grid.r.ravel() + 0.5
    np.clip(alpha, 0, 1, out=alpha)
    return alpha.reshape(len(radius), *grid.r.shape)


class _Stamps:
    """Small shapes (lobes, folds, nucleoli, rods) of many cells, collected then splatted.

    Each row: the owning cell, the centre (y, x) in patch pixels relative to the patch centre,
    and shape parameters (px or radians).
    """

    def __init__(self, n_params: int) -> None:
        self.n_params = n_params
        self.parts: list[np.ndarray] = []

    def add(self, owner: np.ndarray, y: np.ndarray, x: np.ndarray, *params) -> None:
        owner = np.asarray(owner)
        if owner.size == 0:
            return
        columns = np.broadcast_arrays(owner, y, x, *params)
        self.parts.append(np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1))

    def rows(self) -> np.ndarray:
        if not self.parts:
            return np.zeros((0, 3 + self.n_params))
        return np.concatenate(self.parts)


def _stamp_frame(rows: np.ndarray, half: int, reach: np.ndarray):
    """Integer stamp centres (patch px), sub-pixel offsets (D, S, S) and the stamp half size."""
    size_half = math.ceil(float(reach.max())) + 2
    offsets = np.arange(-size_half, size_half + 1, dtype=np.float32)
    iy = np.round(rows[:, 1]).astype(np.int64)
    ix = np.round(rows[:, 2]).astype(np.int64)
    dy = offsets[None, :, None] - (rows[:, 1] - iy).astype(np.float32)[:, None, None]
    dx = offsets[None, None, :] - (rows[:, 2] - ix).astype(np.float32)[:, None, None]
    return iy + half, ix + half, dy, dx, size_half


def _splat(
    target: np.ndarray, owner: np.ndarray, iy, ix, stamps: np.ndarray, size_half: int, op
) -> None:
    """Combine ``stamps`` (D, S, S) into ``target`` (N, P, P) at integer centres with ``op``."""
    p = target.shape[1]
    y0, x0 = iy - size_half, ix - size_half
    ty0, tx0 = np.clip(y0, 0, p), np.clip(x0, 0, p)
    ty1, tx1 = np.clip(y0 + stamps.shape[1], 0, p), np.clip(x0 + stamps.shape[2], 0, p)
    for d, o, a0, a1, b0, b1, s0, u0 in zip(
        range(len(owner)),
        owner.astype(np.int64).tolist(),
        ty0.tolist(),
        ty1.tolist(),
        tx0.tolist(),
        tx1.tolist(),
        y0.tolist(),
        x0.tolist(),
        strict=True,
    ):
        if a1 <= a0 or b1 <= b0:
            continue
        view = target[o, a0:a1, b0:b1]
        op(view, stamps[d, a0 - s0 : a1 - s0, b0 - u0 : b1 - u0], out=view)


def _ellipse_sd(rows: np.ndarray, half: int, target: np.ndarray) -> None:
    """Min-combine ellipses (rows: owner, y, x, a, b, angle) as signed distances (px)."""
    if not len(rows):
        return
    a, b, angle = (rows[:, k].astype(np.float32)[:, None, None] for k in (3, 4, 5))
    iy, ix, dy, dx, size_half = _stamp_frame(rows, half, rows[:, 3:5].max(axis=1) + 1.5)
    cos, sin = np.cos(angle), np.sin(angle)
    u = dy * cos + dx * sin
    v = dx * cos - dy * sin
    sd = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * np.sqrt(a * b)
    _splat(target, rows[:, 0], iy, ix, sd, size_half, np.minimum)


def _disk_stamps(rows: np.ndarray, half: int):
    """Distances (D, S, S) px from disk centres (rows: owner, y, x, r, ...)."""
    iy, ix, dy, dx, size_half = _stamp_frame(rows, half, rows[:, 3] + 1.5)
    return iy, ix, np.sqrt(dy * dy + dx * dx), size_half


def _segment_stamps(rows: np.ndarray, half: int):
    """Distances (D, S, S) px from segments (rows: owner, y, x, half_length, angle, ...)."""
    half_length = rows[:, 3].astype(np.float32)[:, None, None]
    angle = rows[:, 4].astype(np.float32)[:, None, None]
    iy, ix, dy, dx, size_half = _stamp_frame(rows, half, rows[:, 3] + 2.0)
    along = dy * np.sin(angle) + dx * np.cos(angle)
    across = dx * np.sin(angle) - dy * np.cos(angle)
    excess = np.clip(np.abs(along) - half_length, 0, None)
    return iy, ix, np.sqrt(excess * excess + across * across), size_half


def _gather_textures(tile: np.ndarray, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Random windows (N, C, size, size) of the texture tile (C, T, T)."""
    limit = tile.shape[1] - size
    oy = rng.integers(0, limit + 1, n).tolist()
    ox = rng.integers(0, limit + 1, n).tolist()
    return np.stack([tile[:, y : y + size, x : x + size] for y, x in zip(oy, ox, strict=True)])


# --------------------------------------------------------------------------------------------
# Red cells and platelets


def _render_erythrocytes(
    rng: np.random.Generator, preset: SmearPreset, look: _SlideLook, cells: _Cells
) -> _Patches:
    """Red cells: pale pink discs with central pallor; a few crenated or pale ones."""
    n = len(cells.radius_px)
    radius = cells.radius_px.astype(np.float32)
    crenated = rng.uniform(size=n) < preset.crenated_rbc_fraction
    pale = ~crenated & (rng.uniform(size=n) < preset.pale_rbc_fraction)
    outline = np.zeros((n, 6), dtype=np.float32)
    outline[:, 0:2] = rng.normal(0, 0.035, (n, 2))
    outline[:, 2:4] = rng.normal(0, 0.015, (n, 2))
    phase = rng.uniform(0, 2 * np.pi, n)
    outline[:, 4] = np.where(crenated, 0.035 * np.cos(phase), 0)
    outline[:, 5] = np.where(crenated, 0.035 * np.sin(phase), 0)
    density = rng.uniform(0.85, 1.15, n)
    pallor = rng.uniform(0.55, 0.8, n)
    pallor_radius = rng.uniform(0.38, 0.5, n) * radius
    density = np.where(crenated, density * 1.15, np.where(pale, density * 0.55, density))
    pallor = np.where(crenated, 0.1, np.where(pale, 0.75, pallor))

    grid = _grid(math.ceil(float(radius.max()) * 1.08) + 1)
    body = _body_alpha(grid, radius, outline)
    scale = (-1.0 / (pallor_radius * pallor_radius)).astype(np.float32)[:, None, None]
    profile = np.exp(grid.r2 * scale)
    profile *= -pallor.astype(np.float32)[:, None, None]
    profile += 1
    profile *= density.astype(np.float32)[:, None, None]
    profile *= body
    return _Patches(
        cells, body >= 0.5, np.zeros(n, dtype=np.int64), density=profile, colour=look.stain["rbc"]
    )


def _render_platelets(
    rng: np.random.Generator, look: _SlideLook, cells: _Cells, tile: np.ndarray
) -> _Patches:
    """Platelets: small irregular granular purple fragments."""
    n = len(cells.radius_px)
    radius = cells.radius_px.astype(np.float32)
    outline = np.zeros((n, 6), dtype=np.float32)
    outline[:, 0:2] = rng.normal(0, 0.12, (n, 2))
    outline[:, 2:4] = rng.normal(0, 0.08, (n, 2))
    grid = _grid(math.ceil(float(radius.max()) * 1.45) + 2)
    body = _body_alpha(grid, radius, outline)
    granules = _gather_textures(tile, rng, n, 2 * grid.half + 1)[:, _TEX["granule_fine"]]
    density = rng.uniform(0.7, 1.2, n).astype(np.float32)[:, None, None]
    dens = body * density * (0.55 + 0.45 * np.clip(granules, 0, 2))
    return _Patches(
        cells, body >= 0.5, np.zeros(n, dtype=np.int64), density=dens, colour=look.stain["platelet"]
    )


# --------------------------------------------------------------------------------------------
# Nucleated cells


@dataclass
class _Nucleated:
    """Drawing parameters of N nucleated cells (px, radians; colours are OD vectors (N, 3))."""

    radius: np.ndarray
    outline: np.ndarray
    nucleus_od: np.ndarray
    nucleus_density: np.ndarray
    chromatin_fine: np.ndarray
    chromatin_coarse: np.ndarray
    nucleus_wobble: np.ndarray
    cyto_od: np.ndarray
    cyto_density: np.ndarray
    cyto_texture: np.ndarray
    vacuoles: np.ndarray
    granule_amount: np.ndarray  # (N, 3): fine, coarse, large granule cover (0..1)
    granule_od: np.ndarray  # (N, 3, 3)
    lobes: _Stamps = field(default_factory=lambda: _Stamps(3))  # a, b, angle
    bridges: _Stamps = field(default_factory=lambda: _Stamps(3))  # half_length, angle, width
    folds: _Stamps = field(default_factory=lambda: _Stamps(1))  # r: cut out of the nucleus
    pale_nucleus: _Stamps = field(default_factory=lambda: _Stamps(2))  # r, strength
    pale_cytoplasm: _Stamps = field(default_factory=lambda: _Stamps(2))  # r, strength (hof)
    rods: _Stamps = field(default_factory=lambda: _Stamps(4))  # half_length, angle, width, dark

    @classmethod
    def empty(cls, radius: np.ndarray) -> _Nucleated:
        n = len(radius)
        zeros = np.zeros(n, dtype=np.float32)
        return cls(
            radius=radius.astype(np.float32),
            outline=np.zeros((n, 6), dtype=np.float32),
            nucleus_od=np.zeros((n, 3), dtype=np.float32),
            nucleus_density=zeros.copy(),
            chromatin_fine=zeros.copy(),
            chromatin_coarse=zeros.copy(),
            nucleus_wobble=zeros.copy(),
            cyto_od=np.zeros((n, 3), dtype=np.float32),
            cyto_density=zeros.copy(),
            cyto_texture=zeros.copy(),
            vacuoles=zeros.copy(),
            granule_amount=np.zeros((n, 3), dtype=np.float32),
            granule_od=np.zeros((n, 3, 3), dtype=np.float32),
        )


def _polar(distance: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of a point at ``distance`` px in direction ``angle`` (radians)."""
    return distance * np.sin(angle), distance * np.cos(angle)


def _mix(first: np.ndarray, second: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Per-cell colours (N, 3): ``first`` blended towards ``second`` by ``share`` (N,)."""
    share = np.asarray(share, dtype=np.float32)[:, None]
    return (1 - share) * first[None, :] + share * second[None, :]


def _single_nucleus(
    rng: np.random.Generator,
    parts: _Nucleated,
    members: np.ndarray,
    ratio: np.ndarray,
    offset_share: tuple[float, float],
    aspect: tuple[float, float] = (1.0, 1.12),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One oval nucleus per cell in ``members``; returns its centre (y, x), semi-axes, direction."""
    radius = parts.radius[members]
    a = ratio * radius * rng.uniform(*aspect, len(members))
    b = ratio * radius * rng.uniform(2 - aspect[1], 1.0, len(members))
    direction = rng.uniform(0, 2 * np.pi, len(members))
    offset = np.clip(radius - a, 0, None) * rng.uniform(*offset_share, len(members))
    y, x = _polar(offset, direction)
    return y, x, a, b, direction


def _shape_neutrophil(rng, parts, cells, look, preset, px_per_um) -> None:
    n = len(parts.radius)
    radius = parts.radius
    n_lobes = rng.choice([3, 4, 5], n, p=[0.35, 0.45, 0.2])
    arc = 0.36 * radius * rng.uniform(0.85, 1.15, n)
    start = rng.uniform(0, 2 * np.pi, n)
    step = rng.uniform(0.75, 1.05, n) * rng.choice([-1, 1], n)
    lobe_a = 0.28 * radius * rng.uniform(0.85, 1.15, n)
    previous = None
    for k in range(5):
        angle = start + step * (k - (n_lobes - 1) / 2)
        y, x = _polar(arc, angle)
        present = np.flatnonzero(k < n_lobes)
        a = lobe_a * rng.uniform(0.9, 1.1, n)
        b = a * rng.uniform(0.62, 0.85, n)
        tilt = angle + np.pi / 2 + rng.normal(0, 0.35, n)
        parts.lobes.add(present, y[present], x[present], a[present], b[present], tilt[present])
        if previous is not None:
            py, px = previous
            mid_y, mid_x = (y + py) / 2, (x + px) / 2
            length = np.hypot(y - py, x - px) / 2
            bridge_angle = np.arctan2(y - py, x - px)
            width = max(0.2 * px_per_um, 0.6)
            parts.bridges.add(
                present,
                mid_y[present],
                mid_x[present],
                length[present],
                bridge_angle[present],
                width,
            )
        previous = (y, x)
    parts.nucleus_od[:] = look.stain["nucleus"]
    parts.nucleus_density[:] = rng.uniform(1.0, 1.25, n)
    parts.chromatin_fine[:] = 0.12
    parts.chromatin_coarse[:] = 0.28
    parts.nucleus_wobble[:] = 0.25 * px_per_um
    parts.cyto_od[:] = look.stain["neutro_cyto"]
    parts.cyto_density[:] = rng.uniform(0.8, 1.2, n)
    parts.cyto_texture[:] = 0.15
    parts.granule_amount[:, 0] = rng.uniform(0.2, 0.4, n)
    parts.granule_od[:, 0] = look.stain["neutro_granule"]


def _shape_eosinophil(rng, parts, cells, look, preset, px_per_um) -> None:
    n = len(parts.radius)
    radius = parts.radius
    axis = rng.uniform(0, 2 * np.pi, n)
    spread = 0.3 * radius * rng.uniform(0.85, 1.15, n)
    everyone = np.arange(n)
    for side in (-1, 1):
        y, x = _polar(side * spread, axis)
        a = 0.3 * radius * rng.uniform(0.9, 1.1, n)
        b = a * rng.uniform(0.7, 0.9, n)
        parts.lobes.add(everyone, y, x, a, b, axis + np.pi / 2 + rng.normal(0, 0.3, n))
    parts.bridges.add(everyone, 0.0, 0.0, spread, axis, max(0.25 * px_per_um, 0.6))
    parts.nucleus_od[:] = look.stain["nucleus"]
    parts.nucleus_density[:] = rng.uniform(0.9, 1.15, n)
    parts.chromatin_fine[:] = 0.1
    parts.chromatin_coarse[:] = 0.22
    parts.nucleus_wobble[:] = 0.2 * px_per_um
    parts.cyto_od[:] = 0.5 * look.stain["neutro_cyto"] + 0.3 * look.stain["eos_granule"]
    parts.cyto_density[:] = 1.0
    parts.cyto_texture[:] = 0.1
    parts.granule_amount[:, 1] = rng.uniform(0.25, 0.35, n)
    parts.granule_od[:, 1] = look.stain["eos_granule"]
    # CBFB::MYH11 fields: abnormal eosinophils with large dark purple granules among the orange.
    strength = _feature_strength(rng, preset, n, absent=0.0)
    abnormal = cells.large
    cells.strength = np.where(abnormal, strength, 0.0)
    parts.granule_amount[:, 2] = np.where(abnormal, 0.05 + 0.12 * strength, 0.0)
    parts.granule_od[:, 2] = look.stain["dark_granule"]


def _lerp(low, high, share):
    """``low`` + ``share`` · (``high`` - ``low``), element-wise."""
    return low + share * (np.asarray(high) - low)


def _add_nucleoli(rng, parts, shown, y, x, b, strength, px_per_um) -> None:
    """1-4 pale nucleoli (0.5-0.9 µm radius) within half the nucleus of the ``shown`` cells."""
    n = len(shown)
    count = np.where(shown, rng.integers(1, 5, n), 0)
    for k in range(4):
        spot = np.flatnonzero(k < count)
        sy, sx = _polar(0.5 * b * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.5, 0.9, n) * px_per_um
        parts.pale_nucleus.add(spot, (y + sy)[spot], (x + sx)[spot], radius[spot], strength[spot])


def _blast_likeness(rng, preset, flagged):
    """How blast-like each look-alike cell is (0 for the ordinary ones), 0..1."""
    n = len(flagged)
    return np.where(flagged, preset.lookalike_similarity * rng.uniform(0.5, 1.0, n), 0.0)


def _shape_lymphocyte(rng, parts, cells, look, preset, px_per_um) -> None:
    """Small lymphocytes (dense round nucleus, thin sky-blue rim) and large ones (paler, more
    cytoplasm); blast-like large ones drift towards a blast's look."""
    n = len(parts.radius)
    large = cells.large
    like = _blast_likeness(rng, preset, large)
    grow = 1 + 0.12 * like
    parts.radius *= grow.astype(np.float32)
    cells.radius_px = cells.radius_px * grow
    cells.diameter_um = cells.diameter_um * grow
    ratio = np.where(
        large,
        _lerp(rng.uniform(0.66, 0.78, n), rng.uniform(0.74, 0.84, n), like),
        rng.uniform(0.84, 0.92, n),
    )
    y, x, a, b, _ = _single_nucleus(rng, parts, np.arange(n), ratio, (0.3, 1.0), (1.0, 1.08))
    parts.lobes.add(np.arange(n), y, x, a, b, rng.uniform(0, np.pi, n))
    parts.nucleus_od[:] = _mix(look.stain["nucleus"], look.stain["blast_nucleus"], 0.7 * like)
    parts.nucleus_density[:] = np.where(
        large,
        _lerp(rng.uniform(0.95, 1.15, n), rng.uniform(0.74, 0.86, n), like),
        rng.uniform(1.2, 1.45, n),
    )
    parts.chromatin_fine[:] = np.where(large, _lerp(0.16, 0.24, like), 0.1)
    parts.chromatin_coarse[:] = np.where(large, _lerp(0.22, 0.17, like), 0.35)
    parts.nucleus_wobble[:] = 0.18 * px_per_um
    parts.cyto_od[:] = _mix(look.stain["lymph_cyto"], look.stain["basophilic"], like)
    parts.cyto_density[:] = np.where(
        large,
        _lerp(rng.uniform(0.65, 0.95, n), rng.uniform(0.9, 1.2, n), like),
        rng.uniform(0.85, 1.15, n),
    )
    parts.cyto_texture[:] = 0.1
    azurophil = large & (rng.uniform(size=n) < 0.35)
    parts.granule_amount[:, 0] = np.where(azurophil, 0.03, 0.0)
    parts.granule_od[:, 0] = look.stain["azurophil"]
    nucleoli = large & (rng.uniform(size=n) < _lerp(0.15, 0.6, like))
    _add_nucleoli(rng, parts, nucleoli, y, x, b, _lerp(0.18, 0.45, like), px_per_um)


def _shape_monocyte(rng, parts, cells, look, preset, px_per_um) -> None:
    """Monocytes: folded / kidney nucleus with lacy chromatin, grey-blue vacuolated cytoplasm;
    the round (blast-like) ones drift towards a blast's look."""
    n = len(parts.radius)
    round_ = cells.large
    like = _blast_likeness(rng, preset, round_)
    ratio = np.where(
        round_,
        _lerp(rng.uniform(0.68, 0.78, n), rng.uniform(0.74, 0.84, n), like),
        rng.uniform(0.6, 0.7, n),
    )
    y, x, a, b, direction = _single_nucleus(
        rng, parts, np.arange(n), ratio, (0.2, 0.8), (1.0, 1.15)
    )
    parts.lobes.add(np.arange(n), y, x, a, b, rng.uniform(0, np.pi, n))
    folded = np.flatnonzero(~round_ & (rng.uniform(size=n) < 0.85))
    fold_angle = direction + np.pi + rng.normal(0, 0.5, n)
    depth = a * rng.uniform(0.2, 0.45, n)
    fy, fx = _polar(1.75 * a - depth, fold_angle)
    parts.folds.add(folded, (y + fy)[folded], (x + fx)[folded], (0.75 * a)[folded])
    parts.nucleus_od[:] = _mix(look.stain["nucleus"], look.stain["blast_nucleus"], 0.7 * like)
    parts.nucleus_density[:] = np.where(
        round_,
        _lerp(rng.uniform(0.72, 0.88, n), rng.uniform(0.74, 0.86, n), like),
        rng.uniform(0.78, 0.92, n),
    )
    parts.chromatin_fine[:] = np.where(round_, _lerp(0.22, 0.24, like), 0.26)
    parts.chromatin_coarse[:] = np.where(round_, _lerp(0.1, 0.17, like), 0.15)
    parts.nucleus_wobble[:] = _lerp(0.35, 0.15, like) * px_per_um
    blue = np.where(round_, 0.3 + 0.7 * like, 0.0)
    parts.cyto_od[:] = _mix(look.stain["mono_cyto"], look.stain["basophilic"], blue)
    parts.cyto_density[:] = rng.uniform(0.85, 1.15, n)
    parts.cyto_texture[:] = 0.15
    parts.vacuoles[:] = np.where(round_, 0.03 * (1 - like), rng.uniform(0.04, 0.12, n))
    parts.granule_amount[:, 0] = 0.08 * (1 - like)
    parts.granule_od[:, 0] = look.stain["neutro_granule"]
    nucleoli = round_ & (rng.uniform(size=n) < 0.6 * like)
    _add_nucleoli(rng, parts, nucleoli, y, x, b, _lerp(0.18, 0.45, like), px_per_um)


def _feature_strength(
    rng: np.random.Generator, preset: SmearPreset, n: int, absent: float | None = None
) -> np.ndarray:
    """Per-cell strength (N,) 0..1 of the mutation morphology."""
    absent = preset.feature_absent_fraction if absent is None else absent
    shown = rng.uniform(size=n) >= absent
    strength = preset.feature_strength * rng.beta(*preset.feature_strength_beta, n)
    return np.where(shown, np.clip(strength, 0.0, 1.0), 0.0)


def _shape_blast(rng, parts, cells, look, preset, px_per_um) -> None:
    """Myeloblasts: large, high N:C, fine open chromatin, nucleoli, basophilic rim; + mutation."""
    n = len(parts.radius)
    everyone = np.arange(n)
    typical = rng.beta(*preset.blast_typicality, n)
    shrink = 0.8 + 0.2 * typical
    parts.radius *= shrink.astype(np.float32)
    cells.radius_px = cells.radius_px * shrink
    cells.diameter_um = cells.diameter_um * shrink
    strength = _feature_strength(rng, preset, n)
    cells.strength = strength
    mutation = look.mutation
    # Every random draw happens whatever the mutation, so fields that differ only in their
    # mutation share stain, layout and blasts and differ only in the features.
    ratio = 0.72 + 0.13 * typical + rng.uniform(-0.03, 0.03, n)
    ratio_shift = {"RUNX1::RUNX1T1": 0.1, "CBFB::MYH11": 0.05}.get(mutation, 0.0)
    ratio = ratio - ratio_shift * strength
    y, x, a, b, direction = _single_nucleus(rng, parts, everyone, ratio, (0.0, 0.7), (1.0, 1.1))
    tilt = rng.uniform(0, np.pi, n)
    wide_side = direction + np.pi + rng.normal(0, 0.4, n)
    lobe_axis = rng.uniform(0, 2 * np.pi, n)
    u_rods, u_count = rng.uniform(size=n), rng.uniform(size=(n, 3))
    rod_length_um = rng.uniform(0, 1, (n, 4))
    rod_jitter = rng.normal(0, 1, (n, 4))
    fold_depth = rng.uniform(0.15, 0.25, n)
    cup_angle = rng.uniform(0, 2 * np.pi, n)

    if mutation == "PML::RARA":
        # Bilobed (butterfly) nucleus: two overlapping lobes drifting apart with the strength.
        split = strength > 0
        separation = 0.5 * a * strength
        for side in (-1, 1):
            ly, lx = _polar(side * separation, lobe_axis)
            parts.lobes.add(
                everyone[split],
                (y + ly)[split],
                (x + lx)[split],
                (0.74 * a)[split],
                (0.8 * b)[split],
                (lobe_axis + np.pi / 2)[split],
            )
            # The waist between the lobes: a notch on either side.
            ny, nx = _polar(0.85 * b, lobe_axis + side * np.pi / 2)
            parts.folds.add(
                everyone[split], (y + ny)[split], (x + nx)[split], (0.38 * b * strength)[split]
            )
        parts.lobes.add(everyone[~split], y[~split], x[~split], a[~split], b[~split], tilt[~split])
    else:
        parts.lobes.add(everyone, y, x, a, b, tilt)

    parts.nucleus_od[:] = _mix(
        look.stain["blast_nucleus"], look.stain["nucleus"], 0.6 * (1 - typical)
    )
    parts.nucleus_density[:] = 0.84 - 0.1 * typical + rng.uniform(-0.05, 0.05, n)
    parts.chromatin_fine[:] = 0.24
    parts.chromatin_coarse[:] = 0.26 - 0.18 * typical
    parts.nucleus_wobble[:] = 0.15 * px_per_um
    # Nucleoli: 1-4 pale spots, clearer in textbook blasts.
    nucleoli = rng.uniform(size=n) < 0.25 + 0.75 * typical
    _add_nucleoli(rng, parts, nucleoli, y, x, b, 0.3 + 0.3 * typical, px_per_um)
    parts.cyto_od[:] = look.stain["basophilic"]
    parts.cyto_density[:] = rng.uniform(0.9, 1.2, n)
    parts.cyto_texture[:] = 0.1
    azurophil = rng.uniform(size=n) < 0.3
    parts.granule_amount[:, 0] = np.where(azurophil, 0.03, 0.0)
    parts.granule_od[:, 0] = look.stain["azurophil"]

    # Where the cytoplasm is widest: opposite the nucleus' offset.
    rim_inner = np.clip(b - np.hypot(y, x), 0, None)
    rod_distance = rim_inner + 0.4 * (parts.radius - rim_inner)
    if mutation == "PML::RARA":
        parts.granule_amount[:, 1] = np.where(strength > 0, 0.05 + 0.35 * strength, 0.0)
        parts.granule_od[:, 1] = look.stain["azurophil"]
        has_rods = u_rods < 1.1 * strength
        n_rods = np.where(has_rods, 1 + (u_count < 0.5 * strength[:, None]).sum(axis=1), 0)
        _add_rods(
            parts,
            n_rods,
            rod_distance,
            wide_side,
            3.0 + 2.5 * rod_length_um,
            rod_jitter,
            0.28,
            0.8 + 0.5 * strength,
            px_per_um,
        )
    elif mutation == "NPM1":
        cup = np.flatnonzero(strength > 0)
        cy, cx = _polar(0.5 * b, cup_angle)
        parts.pale_nucleus.add(
            cup, (y + cy)[cup], (x + cx)[cup], (0.45 * b)[cup], (0.75 * strength)[cup]
        )
        ey, ex = _polar(1.02 * b, cup_angle)
        parts.folds.add(cup, (y + ey)[cup], (x + ex)[cup], (0.3 * b * strength)[cup])
        parts.granule_amount[:, 0] *= 1 - strength
    elif mutation == "CBFB::MYH11":
        fold = np.flatnonzero(strength > 0)
        depth = a * (fold_depth + 0.3 * strength)
        fy, fx = _polar(1.75 * a - depth, wide_side)
        parts.folds.add(fold, (y + fy)[fold], (x + fx)[fold], (0.75 * a)[fold])
        parts.chromatin_coarse[:] += 0.1 * strength
        mix = (0.8 * strength)[:, None]
        parts.cyto_od[:] = (1 - mix) * parts.cyto_od + mix * look.stain["mono_cyto"]
        parts.granule_amount[:, 2] = np.where(strength > 0, 0.012 + 0.03 * strength, 0.0)
        parts.granule_od[:, 2] = look.stain["dark_granule"]
    elif mutation == "RUNX1::RUNX1T1":
        mix = (0.85 * strength)[:, None]
        parts.cyto_od[:] = (1 - mix) * parts.cyto_od + mix * look.stain["salmon"]
        hof = np.flatnonzero(strength > 0)
        hof_r = np.minimum(0.32 * b, np.clip(parts.radius - rim_inner, 1, None) * 0.6)
        hy, hx = _polar(b + 0.2 * hof_r, wide_side)
        parts.pale_cytoplasm.add(
            hof, (y + hy)[hof], (x + hx)[hof], hof_r[hof], (0.8 * strength)[hof]
        )
        parts.pale_nucleus.add(hof, (y + hy)[hof], (x + hx)[hof], hof_r[hof], (0.4 * strength)[hof])
        n_rods = (u_rods < 1.2 * strength).astype(np.int64)
        _add_rods(
            parts,
            n_rods,
            rod_distance,
            wide_side,
            5.5 + 3.0 * rod_length_um,
            rod_jitter,
            0.22,
            0.9 + 0.4 * strength,
            px_per_um,
        )


def _add_rods(
    parts, n_rods, distance, side, length_um, jitter, half_width_um, darkness, px_per_um
) -> None:
    """Auer rods: needles in the widest cytoplasm, laid across it; several form a bundle."""
    cy, cx = _polar(distance, side)
    across = side + np.pi / 2 + 0.5 * jitter[:, 0]
    for k in range(int(n_rods.max(initial=0))):
        has = np.flatnonzero(k < n_rods)
        shift = (k - (n_rods - 1) / 2) * 0.7 * px_per_um
        sy, sx = _polar(shift, side)
        along = 0.4 * px_per_um * jitter[:, k % 4]
        ay, ax = _polar(along, across)
        parts.rods.add(
            has,
            (cy + sy + ay)[has],
            (cx + sx + ax)[has],
            (length_um[:, k] * px_per_um / 2)[has],
            across[has],
            max(half_width_um * px_per_um, 0.45),
            darkness[has],
        )


_SHAPERS = {
    "neutrophil": _shape_neutrophil,
    "eosinophil": _shape_eosinophil,
    "lymphocyte": _shape_lymphocyte,
    "monocyte": _shape_monocyte,
    "blast": _shape_blast,
}


def _render_nucleated(
    rng: np.random.Generator,
    preset: SmearPreset,
    look: _SlideLook,
    cells: _Cells,
    tile: np.ndarray,
    px_per_um: float,
) -> _Patches:
    """Nucleated cells of one type: cytoplasm, nucleus, granules and Auer rods."""
    parts = _Nucleated.empty(cells.radius_px)
    n = len(parts.radius)
    parts.outline[:, 0:2] = rng.normal(0, 0.035, (n, 2))
    parts.outline[:, 2:4] = rng.normal(0, 0.02, (n, 2))
    _SHAPERS[cells.cell_type](rng, parts, cells, look, preset, px_per_um)
    # Per-cell stain variation.
    parts.nucleus_od *= rng.normal(1.0, 0.04, (n, 1)).astype(np.float32)
    parts.cyto_od *= rng.normal(1.0, 0.06, (n, 1)).astype(np.float32)

    grid = _grid(math.ceil(float(parts.radius.max()) * 1.12) + 2)
    half, size = grid.half, 2 * grid.half + 1
    body = _body_alpha(grid, parts.radius, parts.outline)
    tex = _gather_textures(tile, rng, n, size)

    def column(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)[:, None, None]

    # Nucleus: union of lobes and bridges, minus folds, as a signed distance (px).
    sd = np.full((n, size, size), _FAR, dtype=np.float32)
    _ellipse_sd(parts.lobes.rows(), half, sd)
    bridges = parts.bridges.rows()
    if len(bridges):
        iy, ix, dist, s_half = _segment_stamps(bridges, half)
        width = bridges[:, 5].astype(np.float32)[:, None, None]
        _splat(sd, bridges[:, 0], iy, ix, dist - width, s_half, np.minimum)
    folds = parts.folds.rows()
    if len(folds):
        iy, ix, dist, s_half = _disk_stamps(folds, half)
        radius = folds[:, 3].astype(np.float32)[:, None, None]
        _splat(sd, folds[:, 0], iy, ix, radius - dist, s_half, np.maximum)
    sd += column(parts.nucleus_wobble) * tex[:, _TEX["smooth"]]
    nucleus = np.clip(0.5 - sd, 0, 1)
    nucleus *= body
    chromatin = 1 + column(parts.chromatin_fine) * tex[:, _TEX["chromatin_fine"]]
    chromatin += column(parts.chromatin_coarse) * tex[:, _TEX["chromatin_coarse"]]
    np.clip(chromatin, 0.15, None, out=chromatin)
    nucleus *= chromatin * column(parts.nucleus_density)
    pale = _pale_map(parts.pale_nucleus.rows(), half, n, size)
    if pale is not None:
        nucleus *= 1 - pale

    cyto = body * column(parts.cyto_density)
    cyto *= 1 + column(parts.cyto_texture) * tex[:, _TEX["smooth"]]
    hof = _pale_map(parts.pale_cytoplasm.rows(), half, n, size)
    if hof is not None:
        cyto *= 1 - hof
    if parts.vacuoles.any():
        vacuole = _cover(-tex[:, _TEX["granule_large"]], parts.vacuoles)
        cyto *= 1 - 0.85 * vacuole

    densities = [cyto, nucleus]
    colours = [parts.cyto_od, parts.nucleus_od]
    granule_textures = ("granule_fine", "granule_coarse", "granule_large")
    for k, name in enumerate(granule_textures):
        if parts.granule_amount[:, k].any():
            densities.append(body * _cover(tex[:, _TEX[name]], parts.granule_amount[:, k]))
            colours.append(parts.granule_od[:, k])
    rods = parts.rods.rows()
    rod_counts = np.bincount(rods[:, 0].astype(np.int64), minlength=n) if len(rods) else None
    if len(rods):
        iy, ix, dist, s_half = _segment_stamps(rods, half)
        width = rods[:, 5].astype(np.float32)[:, None, None]
        alpha = np.clip(width - dist + 0.5, 0, 1) * rods[:, 6].astype(np.float32)[:, None, None]
        rod_density = np.zeros((n, size, size), dtype=np.float32)
        _splat(rod_density, rods[:, 0], iy, ix, alpha, s_half, np.add)
        densities.append(rod_density * body)
        colours.append(np.broadcast_to(look.stain["auer"], (n, 3)))
    stacked = np.stack(densities, axis=1).reshape(n, len(densities), size * size)
    colour_matrix = np.stack(colours, axis=2).astype(np.float32)  # (N, 3, components)
    od = np.matmul(colour_matrix, stacked).reshape(n, 3, size, size)
    if rod_counts is None:
        rod_counts = np.zeros(n, dtype=np.int64)
    return _Patches(cells, body >= 0.5, rod_counts, od=od)


def _cover(texture: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Blobs (N, P, P) in [0, 1] where a unit-sd texture exceeds the quantile for ``amount``."""
    amount = np.asarray(amount, dtype=np.float64)
    level = np.where(amount > 0, ndtri(1 - np.clip(amount, 1e-6, 1 - 1e-6)), _FAR)
    blobs = texture - level.astype(np.float32)[:, None, None]
    blobs *= 2.0
    return np.clip(blobs, 0, 1, out=blobs)


def _pale_map(rows: np.ndarray, half: int, n: int, size: int) -> np.ndarray | None:
    """Paleness (N, P, P) in [0, 0.9] from soft disks (rows: owner, y, x, r, strength)."""
    if not len(rows):
        return None
    iy, ix, dist, s_half = _disk_stamps(rows, half)
    radius = rows[:, 3].astype(np.float32)[:, None, None]
    strength = rows[:, 4].astype(np.float32)[:, None, None]
    alpha = np.clip(radius - dist + 0.5, 0, 1) * strength
    pale = np.zeros((n, size, size), dtype=np.float32)
    _splat(pale, rows[:, 0], iy, ix, alpha, s_half, np.add)
    return np.clip(pale, 0, 0.9, out=pale)


# --------------------------------------------------------------------------------------------
# Composition and the camera


def _add_plasma(od_field: np.ndarray, thickness: np.ndarray, look: _SlideLook) -> None:
    """A faint plasma haze in ``od_field`` (3, Y, X), stronger where the smear is thick."""
    height, width = od_field.shape[1:]
    haze = cv2.resize(
        thickness[1:-1, 1:-1].astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR
    )
    haze += 0.3
    for channel in range(3):
        od_field[channel] += look.stain["plasma"][channel] * haze


def _compose(
    od_field: np.ndarray, groups: list[_Patches], shape: tuple[int, int]
) -> tuple[np.ndarray, pd.DataFrame]:
    """Add every patch into ``od_field`` (3, Y, X) and paint the labels, in drawing order."""
    height, width = shape
    labels = np.zeros(shape, dtype=np.int32)
    records: list[tuple[_Patches, np.ndarray]] = []
    inside_area: list[int] = []
    next_label = 1
    for group in groups:
        density_map = None if group.density is None else np.zeros(shape, dtype=np.float32)
        patches = group.od if group.density is None else group.density
        size = group.mask.shape[1]
        y0 = group.cells.centre_y - size // 2
        x0 = group.cells.centre_x - size // 2
        fy0, fx0 = np.clip(y0, 0, height), np.clip(x0, 0, width)
        fy1, fx1 = np.clip(y0 + size, 0, height), np.clip(x0 + size, 0, width)
        drawn = []
        for i, a0, a1, b0, b1, s0, u0 in zip(
            range(len(y0)),
            fy0.tolist(),
            fy1.tolist(),
            fx0.tolist(),
            fx1.tolist(),
            y0.tolist(),
            x0.tolist(),
            strict=True,
        ):
            if a1 <= a0 or b1 <= b0:
                continue
            if density_map is None:
                od_field[:, a0:a1, b0:b1] += patches[i, :, a0 - s0 : a1 - s0, b0 - u0 : b1 - u0]
            else:
                density_map[a0:a1, b0:b1] += patches[i, a0 - s0 : a1 - s0, b0 - u0 : b1 - u0]
            own = group.mask[i, a0 - s0 : a1 - s0, b0 - u0 : b1 - u0]
            area = int(np.count_nonzero(own))
            if area == 0:
                continue
            np.copyto(labels[a0:a1, b0:b1], next_label, where=own)
            next_label += 1
            drawn.append(i)
            inside_area.append(area)
        if density_map is not None:
            for channel in range(3):
                od_field[channel] += group.colour[channel] * density_map
        records.append((group, np.asarray(drawn, dtype=np.int64)))

    # Cells hidden under later ones down to less than a quarter of their area leave the labels.
    n_drawn = next_label - 1
    visible = np.bincount(labels.ravel(), minlength=n_drawn + 1)[1:]
    keep = visible >= np.maximum(0.25 * np.asarray(inside_area, dtype=float), 3)
    relabel = np.zeros(n_drawn + 1, dtype=np.int32)
    relabel[1:][keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    labels = relabel[labels]
    n = int(keep.sum())

    def gather(values) -> np.ndarray:
        parts = [np.asarray(values(group))[drawn] for group, drawn in records]
        return np.concatenate(parts)[keep] if parts else np.zeros(0)

    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)[1:].astype(float)
    row_sums = np.bincount(
        flat, weights=np.repeat(np.arange(height, dtype=float), width), minlength=n + 1
    )[1:]
    col_sums = np.bincount(
        flat, weights=np.tile(np.arange(width, dtype=float), height), minlength=n + 1
    )[1:]
    border = np.zeros(n + 1, dtype=bool)
    border[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    cell_type = gather(lambda g: np.full(len(g.mask), g.cells.cell_type, dtype=object))
    table = pd.DataFrame(
        {
            "label": np.arange(1, n + 1, dtype=np.int64),
            "cell_type": cell_type.astype(str),
            "is_blast": gather(lambda g: g.cells.is_blast).astype(bool),
            "is_nucleated": np.isin(cell_type, NUCLEATED_TYPES),
            "centroid_y": row_sums / counts,
            "centroid_x": col_sums / counts,
            "diameter_um": gather(lambda g: g.cells.diameter_um).astype(float),
            "mutation_features": gather(lambda g: g.cells.strength).astype(float),
            "auer_rods": gather(lambda g: g.rods).astype(np.int64),
            "touches_border": border[1:],
        }
    )
    return labels, table


def _camera(rng: np.random.Generator, od_field: np.ndarray, look: _SlideLook) -> np.ndarray:
    """The camera's (Y, X, 3) uint8 image of ``od_field`` (3, Y, X): background · illumination ·
    exp(-OD), optical blur, camera noise (uniform, of sd ``noise_sigma``, larger where brighter)
    and JPEG compression."""
    height, width = od_field.shape[1:]
    rows = np.linspace(0, 1, height, dtype=np.float32) - look.light_centre[0]
    cols = np.linspace(0, 1, width, dtype=np.float32) - look.light_centre[1]
    corner = (
        max(look.light_centre[0], 1 - look.light_centre[0]) ** 2
        + max(look.light_centre[1], 1 - look.light_centre[1]) ** 2
    )
    illumination = 1 - (look.falloff / corner) * (rows[:, None] ** 2 + cols[None, :] ** 2)
    image = np.exp(np.negative(od_field, out=od_field), out=od_field)
    sigma = look.blur_um / look.pixel_size_um
    noise = rng.random(image.shape, dtype=np.float32)
    noise -= 0.5
    noise *= look.noise_sigma * math.sqrt(12.0)
    planes = []
    for channel in range(3):
        plane = image[channel]
        plane *= illumination * np.float32(255.0 * look.background[channel])
        if sigma > 0.25:
            plane = cv2.GaussianBlur(plane, (0, 0), sigma)
        # Shot noise grows with the signal: sd from 0.4x (dark) to 1x (full brightness).
        scale = np.sqrt(plane * np.float32(1 / 255.0))
        scale *= 0.6
        scale += 0.4
        plane += noise[channel] * scale
        plane += 0.5
        planes.append(np.clip(plane, 0, 255, out=plane).astype(np.uint8))
    if look.jpeg_quality is not None and min(height, width) >= 8:
        ok, encoded = cv2.imencode(
            ".jpg", cv2.merge(planes[::-1]), [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality]
        )
        if ok:
            return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])
    return cv2.merge(planes)

"""The generator's knobs: cell types, :class:`SmearPreset` (every setting, with its units and
checks) and the named :data:`PRESETS`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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


_WHITE_TYPES = ("neutrophil", "eosinophil", "lymphocyte", "monocyte")


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

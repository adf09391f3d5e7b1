"""The entry points for fields and slides: :func:`generate_field` and :func:`generate_slide`,
their argument checks and the seeding of a slide's look and its fields."""

from __future__ import annotations

import numpy as np

from blastscope.classes import MUTATION_CLASSES
from blastscope.synthetic.compose import SyntheticField, _render_field
from blastscope.synthetic.look import _draw_slide_look, _SlideLook
from blastscope.synthetic.presets import SmearPreset, get_preset


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

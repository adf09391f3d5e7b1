"""Single-cell crops cut from freshly generated slides (:func:`render_crops`), for training and
benchmarks, with their truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from blastscope.classes import MUTATION_CLASSES
from blastscope.progress import Progress, Steps, run_steps
from blastscope.synthetic.generate import _check_seed, _check_shape, _slide_field, _slide_look
from blastscope.synthetic.presets import SmearPreset, get_preset


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

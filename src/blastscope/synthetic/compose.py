"""One field: its cells laid out, rendered, composed into the field's optical density and labels
(the top-most cell owns a pixel; hidden cells leave the labels), seen by the camera."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from blastscope.synthetic.layout import _layout, _thickness_grid
from blastscope.synthetic.look import _camera, _SlideLook
from blastscope.synthetic.patches import _Patches, _texture_tile
from blastscope.synthetic.presets import NUCLEATED_TYPES, SmearPreset
from blastscope.synthetic.render import _render_erythrocytes, _render_nucleated, _render_platelets

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

"""Cell classes and their colours, shared by the GeoJSON, the overlay and the report.

A cell's class (canonical name) is ``Non-nucleated`` (red cells, platelets), ``Non-blast``, its
mutation class (e.g. ``PML::RARA``) when it is a blast with a mutation call, else ``Blast``;
``Nucleated`` before the blast classifier ran. QuPath reads ``:`` in a class name as a derived
class, so the names written for it replace ``::`` / ``:`` with ``-`` (``PML-RARA``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

BLAST = "Blast"
NON_BLAST = "Non-blast"
NON_NUCLEATED = "Non-nucleated"
NUCLEATED = "Nucleated"
UNMEASURED = "Unmeasured"
NO_CALL = "No call"

_COLOURS: dict[str, tuple[int, int, int]] = {
    BLAST: (220, 40, 40),
    NON_BLAST: (40, 110, 220),
    NON_NUCLEATED: (170, 170, 170),
    NUCLEATED: (40, 170, 170),
    UNMEASURED: (240, 220, 60),
    NO_CALL: (128, 128, 128),
    "PML::RARA": (235, 130, 20),
    "NPM1": (150, 60, 200),
    "CBFB::MYH11": (210, 40, 150),
    "RUNX1::RUNX1T1": (40, 160, 70),
}


def qupath_class_name(name: str) -> str:
    """``name`` without ``:`` (QuPath's derived-class separator): ``PML::RARA`` -> ``PML-RARA``."""
    return name.replace("::", "-").replace(":", "-")


def class_colour(name: str) -> tuple[int, int, int]:
    """The (r, g, b) 0-255 colour of a class; a fixed one per known class, else from its name."""
    if name in _COLOURS:
        return _COLOURS[name]
    digest = hashlib.sha256(name.encode()).digest()
    return (64 + digest[0] % 160, 64 + digest[1] % 160, 64 + digest[2] % 160)


def cell_classes(cells: pd.DataFrame) -> pd.Series:
    """The canonical class name of every cell of the table (see the module text)."""
    classes = pd.Series(NUCLEATED, index=cells.index, dtype=object)
    if "is_blast" in cells:
        is_blast = cells["is_blast"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        mutation = (
            cells["mutation_call"].fillna("").astype(str).to_numpy()
            if "mutation_call" in cells
            else np.full(len(cells), "")
        )
        named = np.where(mutation != "", mutation, BLAST)
        classes[:] = np.where(is_blast, named, NON_BLAST)
    if "is_nucleated" in cells:
        nucleated = cells["is_nucleated"].astype("boolean").fillna(True).to_numpy(dtype=bool)
        classes[~nucleated] = NON_NUCLEATED
    return classes


def probability_colours(probabilities: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours of probabilities in [0, 1] (blue 0 -> red 1, matplotlib coolwarm);
    grey where NaN."""
    from matplotlib import colormaps

    values = np.asarray(probabilities, dtype=np.float64)
    rgba = colormaps["coolwarm"](np.nan_to_num(values, nan=0.0).clip(0.0, 1.0))
    colours = np.round(rgba[:, :3] * 255).astype(np.uint8)
    colours[np.isnan(values)] = _COLOURS[NON_NUCLEATED]
    return colours

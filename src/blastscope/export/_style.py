"""Cell classes and their colours, shared by the GeoJSON, the overlay and the report.

A cell's class (canonical name) is ``Non-nucleated`` (red cells, platelets), ``Non-blast``, its
mutation class (e.g. ``PML::RARA``) when it is a blast with a mutation call, else ``Blast``;
``Nucleated`` before the blast classifier ran. QuPath reads ``:`` in a class name as a derived
class, so the names written for it replace ``::`` / ``:`` with ``-`` (``PML-RARA``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from blastscope.palette import (
    BLUE,
    DARK_GREY,
    GREY,
    MUTATION_COLOURS,
    REDDISH_PURPLE,
    RGB,
    YELLOW,
    mutation_class_colour,
    p_blast_rgb,
)

BLAST = "Blast"
NON_BLAST = "Non-blast"
NON_NUCLEATED = "Non-nucleated"
NUCLEATED = "Nucleated"
UNMEASURED = "Unmeasured"
NO_CALL = "No call"

_COLOURS: dict[str, RGB] = {
    BLAST: REDDISH_PURPLE,
    NON_BLAST: BLUE,
    NON_NUCLEATED: GREY,
    NUCLEATED: YELLOW,
    UNMEASURED: DARK_GREY,
    NO_CALL: GREY,
    **MUTATION_COLOURS,
}
"""Class colours, all from :mod:`blastscope.palette`."""


def qupath_class_name(name: str) -> str:
    """``name`` without ``:`` (QuPath's derived-class separator): ``PML::RARA`` -> ``PML-RARA``."""
    return name.replace("::", "-").replace(":", "-")


def class_colour(name: str, mutation_classes: Sequence[str] = ()) -> RGB:
    """The (r, g, b) 0-255 colour of a cell class (:mod:`blastscope.palette`); a class the
    palette does not name is a mutation class of the user's model, whose classes are
    ``mutation_classes`` (:func:`blastscope.classes.mutation_classes_of` of the cells table)."""
    return _COLOURS.get(name) or mutation_class_colour(name, mutation_classes)


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
    """(N, 3) uint8 colours of probabilities in [0, 1] (viridis, as in the viewer); grey where
    NaN."""
    return p_blast_rgb(probabilities, _COLOURS[NON_NUCLEATED])

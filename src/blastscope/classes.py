"""The class names that the models, the trainers and the synthetic generator share."""

from __future__ import annotations

from collections.abc import Iterable

BLAST_CLASSES = ("non-blast", "blast")
NUCLEATED_CLASSES = ("red cell", "platelet", "white cell")
MUTATION_CLASSES = ("PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1")
"""The four AML genetic classes of the mutation model and of the synthetic slides."""

OTHER_PROBABILITY_COLUMNS = ("p_blast", "p_nucleated")
"""Cells-table probability columns of the blast and nucleated models; every other ``p_<name>``
column is a mutation class's."""


def mutation_classes_of(columns: Iterable[str]) -> list[str]:
    """The mutation classes whose ``p_<class>`` columns are among ``columns`` (a cells table's),
    in the model's order."""
    return [
        str(column)[2:]
        for column in columns
        if str(column).startswith("p_") and column not in OTHER_PROBABILITY_COLUMNS
    ]

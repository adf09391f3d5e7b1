"""The class names that the models, the trainers and the synthetic generator share."""

from __future__ import annotations

BLAST_CLASSES = ("non-blast", "blast")
NUCLEATED_CLASSES = ("red cell", "platelet", "white cell")
MUTATION_CLASSES = ("PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1")
"""The four AML genetic classes of the mutation model and of the synthetic slides."""

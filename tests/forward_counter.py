"""Counting inference in tests: a torch forward hook on a classifier's network (the classifier
itself keeps no test counters)."""

from __future__ import annotations

from blastscope.models.classifier import Classifier


class ForwardCounter:
    """The forward passes of ``classifier``'s network since made, and the cells they saw."""

    def __init__(self, classifier: Classifier) -> None:
        self.calls = 0
        self.cells = 0
        self._handle = classifier.network.register_forward_hook(self._count)

    def _count(self, module, inputs, output) -> None:
        self.calls += 1
        self.cells += int(inputs[0].shape[0])

    @property
    def counts(self) -> tuple[int, int]:
        """(forward passes, cells)."""
        return self.calls, self.cells

"""One progress protocol for the CLI, the widgets and the tests.

Every long stage is a generator that yields :class:`Progress` events and *returns* its result
(``StopIteration.value``). Closing the generator (``.close()``) stops the work cleanly at the
next event; that is how Cancel works in the widgets (``worker.quit()``) and Ctrl-C in the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """A step of a long stage: ``done`` units of ``total`` finished in ``stage``."""

    stage: str
    done: int
    total: int
    message: str = ""


Steps = Generator[Progress, None, T]


def run_steps(steps: Steps[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Drive a generator of progress events to its end and return its result."""
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)

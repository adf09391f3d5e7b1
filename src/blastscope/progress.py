"""One progress protocol for the CLI, the widgets and the tests.

Every long stage is a generator that yields :class:`Progress` events and *returns* its result
(``StopIteration.value``). Closing the generator (``.close()``) stops the work cleanly at the
next event; that is how Cancel works in the widgets (``worker.quit()``) and Ctrl-C in the CLI.
:func:`progress_bars` shows the events on a terminal (the CLI and the trainers use it).
"""

from __future__ import annotations

import sys
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


def progress_bars(stream=None) -> Callable[[Progress], None]:
    """A Progress handler that keeps one tqdm line per stage on ``stream`` (stderr).

    Where the stream is not a terminal (a log file, CI) it prints a plain line per stage at each
    tenth of the way and at the end instead of redrawing bars.
    """
    from tqdm import tqdm

    out = stream or sys.stderr
    if not getattr(out, "isatty", lambda: False)():
        tenths: dict[str, int] = {}

        def log(event: Progress) -> None:
            tenth = 10 * event.done // max(event.total, 1)
            finished = event.done >= event.total
            if finished or tenth > tenths.get(event.stage, 0):
                note = f" ({event.message})" if event.message else ""
                print(f"{event.stage}: {event.done}/{event.total}{note}", file=out, flush=True)
            # a finished stage starts from zero when it runs again (the next slide of a batch)
            tenths[event.stage] = 0 if finished else tenth

        return log

    bars: dict[str, tqdm] = {}
    layout = "{desc}: {percentage:3.0f}%|{bar:30}| {n}/{total} {postfix}"

    def show(event: Progress) -> None:
        bar = bars.get(event.stage)
        if bar is None:
            bar = bars[event.stage] = tqdm(
                total=event.total,
                desc=event.stage,
                position=len(bars),
                leave=False,
                bar_format=layout,
                file=out,
            )
        if bar.total != event.total:
            bar.reset(total=event.total)
        bar.n = event.done
        bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    return show

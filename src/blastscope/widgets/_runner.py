"""Running a core stage (a generator of Progress events) off the UI thread, with Cancel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import ProgressBar, PushButton
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from psygnal import Signal

from blastscope.progress import Progress, Steps


def _drive(steps: Steps[Any]) -> Steps[Any]:
    """A generator function around ``steps`` (``create_worker`` needs a function to call)."""
    return (yield from steps)


class StageRunner:
    """Drives one stage at a time in a ``thread_worker``.

    Progress events update the dock's progress bar and napari's activity dock; Cancel quits the
    worker, which closes the stage generator at its next event; results and errors are handled on
    the main thread, and an error or a cancel leaves the viewer's layers as they were. The
    ``started`` signal carries each new worker before its thread starts (to connect to it).
    """

    started = Signal(object)

    def __init__(
        self,
        run_button: PushButton,
        cancel_button: PushButton,
        bar: ProgressBar,
        *,
        also_disable: Sequence[PushButton] = (),
    ):
        self._run_buttons = (run_button, *also_disable)
        self._cancel_button = cancel_button
        self._bar = bar
        self._bar.visible = False
        self._cancel_button.enabled = False
        self._cancel_button.changed.connect(self.cancel)
        self.worker: GeneratorWorker | None = None
        self._activity: progress | None = None
        self._closed = False
        self._text = ""
        run_button.native.destroyed.connect(self._dock_closed)

    def _show_text(self, text: str) -> None:
        """What runs, written in the bar itself (as its label it would widen the dock's column
        of labels) and in its tooltip."""
        self._text = text
        bar = self._bar.native
        bar.setFormat(f"{text} · %p%" if self._bar.max else text)
        bar.setTextVisible(True)
        bar.setToolTip(text)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        steps: Steps[Any],
        on_result: Callable[[Any], None],
        description: str,
    ) -> GeneratorWorker | None:
        """Start ``steps`` in a worker; ``on_result`` gets its result on the main thread. While
        another run is going, says so and starts nothing (returns None)."""
        if self.worker is not None:
            show_error(f"{self._text} is still running: wait for it, or Cancel it first.")
            return None
        worker = create_worker(_drive, steps, _start_thread=False, _ignore_errors=True)
        self._activity = progress(total=0, desc=description)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: None if self._closed else on_result(result))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: steps.close())
        worker.finished.connect(self._on_finished)
        self.worker = worker
        for button in self._run_buttons:
            button.enabled = False
        self._cancel_button.enabled = True
        self._bar.visible = True
        self._bar.min, self._bar.max, self._bar.value = 0, 0, 0
        self._show_text(description)
        self.started.emit(worker)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running stage to stop at its next progress event."""
        if self.worker is not None:
            self._show_text("cancelling…")
            self.worker.quit()

    def _dock_closed(self, *args) -> None:
        """The dock was closed: stop the run, and touch its widgets no more."""
        self._closed = True
        if self.worker is not None:
            self.worker.quit()

    def _on_progress(self, event: Progress) -> None:
        if self._closed:
            return
        total = max(int(event.total), 0)
        self._bar.max = total
        self._bar.value = min(int(event.done), total)
        self._show_text(f"{event.stage}: {event.message}" if event.message else event.stage)
        activity = self._activity  # updating it may process events (and end the run)
        if activity is not None:
            if activity.total != total:
                activity.total = total
            activity.n = min(int(event.done), total)
            activity.set_description(event.stage)
            activity.refresh()

    def _on_error(self, error: Exception) -> None:
        if not self._closed:
            show_error(str(error) or type(error).__name__)

    def _on_finished(self) -> None:
        self.worker = None
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        if self._closed:
            return
        for button in self._run_buttons:
            button.enabled = True
        self._cancel_button.enabled = False
        self._bar.visible = False

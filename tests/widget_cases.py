"""Shared inputs and helpers of the napari widget tests (run under Xvfb with a real viewer).

The smear is a small synthetic field; its cells come from the generator's own masks measured by
``blastscope.cells`` (the segmenter is exercised in test_widget_segment.py), so the classifier
docks start from the same cells table every time. Classifier bundles are real networks with
seeded random weights written by ``write_random_classifier``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from blastscope.cells import measure_cells
from blastscope.models.classifier import write_random_classifier
from blastscope.result import SlideResult
from blastscope.synthetic import SyntheticField, generate_field
from blastscope.widgets._session import CellsSession, show_result
from blastscope.widgets._settings import SETTINGS_ENV

PLUGIN = "napari-blastscope"
SMEAR_SHAPE = (512, 512)
SMEAR_SEED = 21


@functools.cache
def smear() -> SyntheticField:
    """A 512x512 synthetic NPM1 marrow smear with many blasts."""
    return generate_field(SMEAR_SEED, shape=SMEAR_SHAPE, mutation="NPM1", blast_fraction=0.6)


@functools.cache
def smear_cells() -> SlideResult:
    """The smear's cells table (its true masks, measured) as a SlideResult."""
    field = smear()
    cells = measure_cells(field.image, field.labels, field.pixel_size_um)
    return SlideResult(
        labels=field.labels,
        cells=cells,
        pixel_size_um=field.pixel_size_um,
        provenance={"labels": "synthetic truth masks"},
    )


def write_bundles(directory: Path) -> tuple[Path, Path]:
    """(blast bundle, mutation bundle) directories with seeded random weights."""
    blast = write_random_classifier(directory / "blast", "blast", seed=1)
    mutation = write_random_classifier(directory / "mutation", "mutation", seed=2)
    return blast, mutation


def add_smear(viewer, *, name: str = "smear", translate=(0.0, 0.0), grey: bool = False):
    """The smear as an image layer (scale = pixel size in µm, like the sample data)."""
    field = smear()
    pixels = field.image.mean(axis=-1).astype(np.uint8) if grey else field.image
    size = field.pixel_size_um
    return viewer.add_image(
        pixels,
        name=name,
        rgb=not grey,
        scale=(size, size),
        translate=translate,
        metadata={"pixel_size_um": size},
    )


def add_smear_with_cells(viewer, **image_options) -> tuple[object, CellsSession]:
    """The smear and its cells layer (as Segment cells leaves them); returns (image, session)."""
    image = add_smear(viewer, **image_options)
    return image, show_result(viewer, image, smear_cells())


def wait_for(widget, timeout_s: float = 60.0) -> None:
    """Process events until the widget's run has finished."""
    deadline = time.monotonic() + timeout_s
    while widget.runner.running:
        assert time.monotonic() < deadline, "the run did not finish"
        QApplication.processEvents()
        time.sleep(0.005)
    QApplication.processEvents()


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        QApplication.processEvents()
        time.sleep(0.005)


@dataclass
class CancelProbe:
    """What :func:`cancel_at_first_progress` saw: Cancel clicked, ``aborted`` emitted."""

    clicked: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)
    events: list = field(default_factory=list)
    """Every progress event the stage yielded (recorded in the worker thread)."""


def cancel_at_first_progress(widget, stage: str) -> CancelProbe:
    """Arrange for Cancel to be clicked at the next run's first progress event of ``stage``,
    before the stage goes on: the worker thread waits at that event until the UI thread has
    clicked Cancel. Call before starting the run."""
    probe = CancelProbe()
    first = threading.Event()

    def in_worker_thread(event) -> None:
        probe.events.append(event)
        if event.stage == stage and not first.is_set():
            first.set()
            probe.clicked.wait(30)

    def in_ui_thread(event) -> None:
        if event.stage == stage and not probe.clicked.is_set():
            widget.cancel_button.native.click()
            probe.clicked.set()

    def connect(worker) -> None:
        # The queued slot first: Qt calls slots in connection order, and the direct one blocks.
        worker.yielded.connect(in_ui_thread)
        worker.yielded.connect(in_worker_thread, Qt.ConnectionType.DirectConnection)
        worker.aborted.connect(probe.aborted.set)
        widget.runner.started.disconnect(connect)

    widget.runner.started.connect(connect)
    return probe


@contextmanager
def notifications() -> Iterator[list[str]]:
    """The messages of the napari notifications shown inside the block."""
    messages: list[str] = []

    def record(notification) -> None:
        messages.append(str(notification.message))

    notification_manager.notification_ready.connect(record)
    try:
        yield messages
    finally:
        notification_manager.notification_ready.disconnect(record)


def isolate_settings(monkeypatch, tmp_path: Path) -> Path:
    """Keep the docks' saved parameters in ``tmp_path`` (never the user's configuration)."""
    folder = tmp_path / "settings"
    monkeypatch.setenv(SETTINGS_ENV, str(folder))
    return folder

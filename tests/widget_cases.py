"""Shared inputs and helpers of the napari widget tests (run under Xvfb with a real viewer).

The smear is a small synthetic field; its cells come from the generator's own masks measured by
``blastscope.cells`` (the segmenter is exercised in test_widget_segment.py), so the classifier
docks start from the same cells table every time. The classifiers are the shipped demonstration
bundles.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from blastscope.cells import measure_cells
from blastscope.result import SlideResult
from blastscope.synthetic import SyntheticField, generate_field
from blastscope.widgets._session import CellsSession, show_result
from blastscope.widgets._settings import SETTINGS_ENV

PLUGIN = "napari-blastscope"
SMEAR_SHAPE = (512, 512)
SMEAR_SEED = 21
BLAST_BUNDLE = "blast-demo"
MUTATION_BUNDLE = "mutation-demo"


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


def choose_bundle(widget, name: str) -> None:
    """Pick the shipped bundle ``name`` in a dock's model list (as a user does)."""
    widget.bundles.combo.value = name


def split_threshold(p_blast: np.ndarray, current: float) -> float:
    """A threshold (3 decimals) that calls about half of the classified cells blasts and a
    different number than ``current`` does (so a slider move visibly changes the counts)."""
    values = np.sort(p_blast[np.isfinite(p_blast)])
    now = int((values >= current).sum())
    candidates = np.round((values[1:] + values[:-1]) / 2, 3)
    usable = [
        t
        for t in candidates
        if 0 < (values >= t).sum() < len(values) and (values >= t).sum() != now
    ]
    assert usable, "these probabilities cannot be split by a threshold"
    return float(min(usable, key=lambda t: abs((values >= t).sum() - len(values) / 2)))


def expected_blasts(features, threshold: float) -> int:
    """Blasts at ``threshold`` with the users' overrides, counted from ``features``."""
    p_blast = features["p_blast"].to_numpy()
    calls = np.isfinite(p_blast) & (np.nan_to_num(p_blast, nan=-1.0) >= threshold)
    override = features["blast_override"].astype("boolean")
    return int(np.where(override.isna().to_numpy(), calls, override.fillna(False)).sum())


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


def add_classified_smear(viewer, qtbot) -> tuple[CellsSession, object]:
    """The smear, its cells layer and the Classify blasts dock run with the shipped blast
    bundle (``qtbot`` waits for the run); returns (session, classify dock)."""
    _, session = add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    classify.run()
    wait_for(classify, qtbot)
    return session, classify


def wait_for(widget, qtbot, timeout_s: float = 60.0) -> None:
    """Let Qt run (``qtbot.waitUntil``) until the widget's run has finished, then deliver the
    run's last queued signals."""

    def finished() -> None:
        assert not widget.runner.running, "the run did not finish"

    qtbot.waitUntil(finished, timeout=round(timeout_s * 1000))
    QApplication.processEvents()


def wait_until(condition, qtbot, timeout_s: float = 30.0) -> None:
    """Let Qt run (``qtbot.waitUntil``) until ``condition()`` is true."""

    def reached() -> None:
        assert condition(), "condition not reached"

    qtbot.waitUntil(reached, timeout=round(timeout_s * 1000))


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

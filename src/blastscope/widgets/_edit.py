"""The **Edit and re-classify** dock: after painting, erasing or splitting masks of the cells
layer, only the edited cells are measured and classified again (a button, or automatically a
moment after each edit)."""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, ProgressBar, PushButton, SpinBox
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from blastscope.devices import available_devices
from blastscope.edits import edited_cells, reclassify_stage
from blastscope.models import BundleError
from blastscope.models.classifier import Classifier
from blastscope.pipeline import record_run, recorded_classifier
from blastscope.predict import DEFAULT_BATCH_SIZE
from blastscope.progress import Steps
from blastscope.result import SlideResult
from blastscope.widgets._base import SessionDock, status_label
from blastscope.widgets._layers import image_rgb, result_region
from blastscope.widgets._runner import StageRunner
from blastscope.widgets._session import show_result
from blastscope.widgets._settings import PersistentValues

EDIT_EVENTS = ("paint", "data", "labels_update", "set_data")
"""Layer events after which the labels may differ from the analysed result (``set_data``:
napari's undo and redo)."""
UP_TO_DATE = "no edited cell: the table is up to date"


def _reclassify_steps(
    pixels: np.ndarray,
    result: SlideResult,
    labels: np.ndarray,
    known: dict[str, Classifier | None],
    **options,
) -> Steps[tuple[SlideResult, Classifier | None, Classifier | None]]:
    """:func:`~blastscope.edits.reclassify_stage` with the classifiers that made the result
    (those in memory, else loaded from the bundles its provenance names, in the worker);
    returns (result, blast classifier, mutation classifier)."""
    blast = known["blast"] or recorded_classifier(result, "blast")
    mutation = known["mutation"] or recorded_classifier(result, "mutation")
    updated = yield from reclassify_stage(pixels, result, labels, blast, mutation, **options)
    return updated, blast, mutation


class EditWidget(SessionDock):
    """Re-measure and re-classify the cells edited in the chosen cells layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, with_image=False)
        self.auto = CheckBox(text="re-classify automatically after each edit", value=False)
        self.delay_ms = SpinBox(
            label="auto delay (ms)",
            min=100,
            max=10_000,
            step=100,
            value=800,
            tooltip="Quiet time after the last edit before re-classifying.",
        )
        self._device = ComboBox(label="device", choices=["auto", *available_devices()])
        self._batch_size = SpinBox(label="batch size", min=1, max=4096, value=DEFAULT_BATCH_SIZE)
        self.run_button = PushButton(text="Re-classify edited cells")
        self.cancel_button = PushButton(text="Cancel")
        self._bar = ProgressBar(label="progress")
        self.status = status_label()
        self.extend(
            [
                self.auto,
                self.delay_ms,
                self._device,
                self._batch_size,
                self.run_button,
                self.cancel_button,
                self._bar,
                self.status,
            ]
        )
        self.runner = StageRunner(self.run_button, self.cancel_button, self._bar)
        self.run_button.changed.connect(self.run)
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self._auto_run)
        self._watched: Labels | None = None
        self.settings = PersistentValues(
            "edit",
            {
                "auto": self.auto,
                "delay_ms": self.delay_ms,
                "device": self._device,
                "batch_size": self._batch_size,
            },
        )
        self._follow()

    def _follow(self, *args) -> None:
        super()._follow()
        layer = self.cells_layer()
        if layer is self._watched:
            return
        if self._watched is not None:
            for name in EDIT_EVENTS:
                getattr(self._watched.events, name).disconnect(self._edited)
        self._watched = layer
        if layer is not None:
            for name in EDIT_EVENTS:
                getattr(layer.events, name).connect(self._edited)

    def _edited(self, event=None) -> None:
        if getattr(event, "type", None) in ("data", "set_data") and self.pending() == 0:
            # new labels that match the result: a re-run, or an undo back to the analysed cells
            self.timer.stop()
            if getattr(event, "type", None) == "set_data":
                self.status.value = UP_TO_DATE
            return
        self.status.value = "cells edited: re-classify to update them"
        if self.auto.value:
            self.timer.start(int(self.delay_ms.value))

    def _auto_run(self) -> None:
        if self.runner.running:
            self.timer.start(int(self.delay_ms.value))
            return
        self.run()

    def pending(self) -> int:
        """How many cells differ between the cells layer and its analysed result."""
        session, layer = self.session, self.cells_layer()
        if session is None or session.result is None or layer is None:
            return 0
        return edited_cells(session.result.labels, np.asarray(layer.data)).count

    def run(self) -> None:
        """Re-measure and re-classify the edited cells in a worker thread."""
        try:
            session = self.require_session()
            layer = self.cells_layer()
            image = self.image_layer()
            if image is None:
                raise ValueError(
                    f"The image of {layer.name} is not open any more: open it again to "
                    "re-classify the edited cells."
                )
            result = session.flush()
            labels = np.array(layer.data, copy=True)
            if edited_cells(result.labels, labels).count == 0:
                self.status.value = UP_TO_DATE
                return
        except (ValueError, BundleError) as error:
            show_error(str(error))
            return
        params = {"device": self._device.value, "batch_size": int(self._batch_size.value)}
        known = {"blast": session.blast_classifier, "mutation": session.mutation_classifier}
        steps = _reclassify_steps(
            image_rgb(image, result_region(result)),
            result,
            labels,
            known,
            threshold=session.threshold,
            settings=session.settings,
            **params,
        )
        self.runner.start(
            steps,
            lambda done: self._show(image, layer, *done, params),
            description=f"Re-classifying the edited cells of {layer.name}",
        )

    def _show(
        self,
        image,
        layer: Labels,
        result: SlideResult,
        blast: Classifier | None,
        mutation: Classifier | None,
        params: dict,
    ) -> None:
        result = record_run(result, "reclassify", **params)
        session = show_result(self._viewer, image, result, layer, update_data=False)
        session.blast_classifier = session.blast_classifier or blast
        session.mutation_classifier = session.mutation_classifier or mutation
        edits = result.provenance.get("edits", [{}])[-1]
        changed, removed = len(edits.get("changed", [])), len(edits.get("removed", []))
        self.status.value = f"{changed} cells re-classified, {removed} removed"
        if self.pending() and self.auto.value:
            self.timer.start(int(self.delay_ms.value))

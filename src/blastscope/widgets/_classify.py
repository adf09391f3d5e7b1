"""The **Classify blasts** dock: the blast model on every nucleated cell, off the UI thread, and
a threshold slider that re-colours and re-counts without running the model again."""

from __future__ import annotations

import napari
from magicgui.widgets import (
    ComboBox,
    FloatSlider,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error

from blastscope.devices import available_devices
from blastscope.models import BundleError
from blastscope.models.classifier import Classifier
from blastscope.pipeline import classify_stage, record_run
from blastscope.predict import DEFAULT_BATCH_SIZE
from blastscope.progress import Steps
from blastscope.result import SlideResult
from blastscope.slide_call import call_headline
from blastscope.widgets._base import SessionDock, demo_label, status_label
from blastscope.widgets._models import BundlePicker
from blastscope.widgets._panels import ColourLegend
from blastscope.widgets._runner import StageRunner
from blastscope.widgets._session import COLOUR_BY, show_result
from blastscope.widgets._settings import PersistentValues


def counts_text(counts: dict[str, int], classified: bool) -> str:
    """ "N cells · M nucleated · B blasts (x %)" for the dock."""
    text = f"{counts['cells']} cells · {counts['nucleated']} nucleated"
    if classified:
        share = 100.0 * counts["blasts"] / counts["nucleated"] if counts["nucleated"] else 0.0
        text += f" · {counts['blasts']} blasts ({share:.1f} % of nucleated)"
    return text


def _classify_steps(
    steps: Steps[SlideResult],
    pixels,
    classifier: Classifier,
    threshold: float | None,
    *,
    device: str,
    batch_size: int,
) -> Steps[SlideResult]:
    """The cells (``steps``) then their blast probabilities."""
    result = yield from steps
    return (
        yield from classify_stage(
            pixels, result, classifier, threshold=threshold, device=device, batch_size=batch_size
        )
    )


class ClassifyWidget(SessionDock):
    """Blast probability of every nucleated cell of the chosen cells layer, coloured by p_blast
    with the threshold shown; the threshold slider runs no inference."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        self.bundles = BundlePicker("blast")
        self._device = ComboBox(label="device", choices=["auto", *available_devices()])
        self._batch_size = SpinBox(
            label="batch size",
            min=1,
            max=4096,
            value=DEFAULT_BATCH_SIZE,
            tooltip="Cells per batch.",
        )
        self.run_button = PushButton(text="Classify blasts")
        self.cancel_button = PushButton(text="Cancel")
        self._bar = ProgressBar(label="progress")
        self.threshold = FloatSlider(
            label="blast threshold",
            min=0.0,
            max=1.0,
            step=0.01,
            value=0.5,
            tooltip="Cells with p_blast at or above it are blasts; moving it runs no model.",
        )
        self.threshold.enabled = False
        self._counts = status_label()
        self._demo = demo_label()
        self.extend(
            [
                *self.bundles.widgets,
                self._device,
                self._batch_size,
                self.run_button,
                self.cancel_button,
                self._bar,
                self.threshold,
                self._counts,
                self._demo,
            ]
        )
        self.legend = ColourLegend()
        self.native.layout().addWidget(self.legend)
        self.runner = StageRunner(self.run_button, self.cancel_button, self._bar)
        self.run_button.changed.connect(self.run)
        self.threshold.changed.connect(self._threshold_moved)
        self.bundles.combo.changed.connect(self._update_demo)
        self.bundles.folder.changed.connect(self._update_demo)
        self.settings = PersistentValues(
            "classify",
            {
                "model": self.bundles.combo,
                "folder": self.bundles.folder,
                "device": self._device,
                "batch_size": self._batch_size,
            },
        )
        self._update_demo()
        self._follow()

    @property
    def classifier(self) -> Classifier | None:
        """The blast classifier of the last run."""
        return self.session.blast_classifier if self.session is not None else None

    def run(self) -> None:
        """Classify the cells of the chosen layer in a worker thread."""
        try:
            image, cells = self.inputs()
            classifier = self.bundles.load()
            pixels, steps = self.current_steps(image, cells)
        except (ValueError, BundleError) as error:
            show_error(str(error))
            return
        session = self.session
        threshold = self.threshold.value if session is not None and session.classified else None
        params = {"device": self._device.value, "batch_size": int(self._batch_size.value)}
        self.runner.start(
            _classify_steps(steps, pixels, classifier, threshold, **params),
            lambda result: self._show(
                image, cells, classifier, record_run(result, "blast", **params)
            ),
            description=f"Classifying the cells of {image.name}",
        )

    def _show(self, image, cells, classifier: Classifier, result: SlideResult) -> None:
        session = show_result(self._viewer, image, result, cells)
        session.blast_classifier = classifier

    def _threshold_moved(self, value: float) -> None:
        if self.slide_view is not None:
            self.slide_view.set_threshold(value)
        elif self.session is not None and self.session.classified:
            self.session.set_threshold(value)

    def _update_demo(self, *args) -> None:
        try:
            chosen_demo = bool(self.bundles.metadata().get("demo"))
        except BundleError:
            chosen_demo = False
        in_use = self.session is not None and self.session.demo
        self._demo.visible = chosen_demo or in_use

    def on_session_changed(self) -> None:
        if self.slide_view is not None:
            self._show_slide_view()
            return
        session = self.session
        classified = session is not None and session.classified
        self.threshold.enabled = classified
        if classified and abs(self.threshold.value - session.threshold) > 1e-9:
            with self.threshold.changed.blocked():
                self.threshold.value = session.threshold
        self._counts.value = counts_text(session.counts(), classified) if session else ""
        self.legend.show_state(
            session.threshold if classified else None,
            session.classes if session else (),
            bool(session) and session.colour_by == COLOUR_BY[1],
        )
        self._update_demo()

    def _show_slide_view(self) -> None:
        """A whole slide's cells: the threshold moves its veil and recounts from its table."""
        view = self.slide_view
        classified = view.classified
        self.threshold.enabled = classified
        if classified and abs(self.threshold.value - view.threshold) > 1e-9:
            with self.threshold.changed.blocked():
                self.threshold.value = view.threshold
        text = counts_text(view.counts(), classified) + " (whole slide)"
        if view.recorded_call is not None:
            text += "\n" + call_headline(view.slide_call, exact=view.preview_call is None)
        self._counts.value = text
        self.legend.show_state(view.threshold if classified else None, view.classes, False)
        self._demo.visible = view.demo

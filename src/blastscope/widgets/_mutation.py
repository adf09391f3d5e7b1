"""The **Predict mutation** dock: the mutation model on the blasts and the slide-level call
(class, pooled probabilities with their bootstrap interval, blasts used, blast percentage,
abstention), re-pooled without inference when the pooling or the minimum changes."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_error

from blastscope.devices import available_devices
from blastscope.models import BundleError
from blastscope.models.classifier import Classifier
from blastscope.pipeline import SlideCallSettings, mutation_stage, record_run
from blastscope.predict import DEFAULT_BATCH_SIZE
from blastscope.result import SlideResult
from blastscope.slide_call import DEFAULT_MIN_BLASTS, DEFAULT_MIN_PROBABILITY, POOLINGS
from blastscope.widgets._base import SessionDock, demo_label
from blastscope.widgets._layers import image_rgb, result_region
from blastscope.widgets._models import BundlePicker
from blastscope.widgets._panels import SlideCallChart, bold_label, slide_call_text
from blastscope.widgets._runner import StageRunner
from blastscope.widgets._session import COLOUR_BY, show_result
from blastscope.widgets._settings import PersistentValues


class MutationWidget(SessionDock):
    """Mutation-class probabilities of the blasts and the slide call, with its chart."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer)
        self.bundles = BundlePicker("mutation")
        self._device = ComboBox(label="device", choices=["auto", *available_devices()])
        self._batch_size = SpinBox(label="batch size", min=1, max=4096, value=DEFAULT_BATCH_SIZE)
        self.run_button = PushButton(text="Predict mutation")
        self.cancel_button = PushButton(text="Cancel")
        self._bar = ProgressBar(label="progress")
        self.min_blasts = SpinBox(
            label="minimum blasts",
            min=0,
            max=100_000,
            value=DEFAULT_MIN_BLASTS,
            tooltip="Fewer blasts than this: no call (insufficient blasts).",
        )
        self.pooling = ComboBox(
            label="pooling",
            choices=list(POOLINGS),
            value=POOLINGS[0],
            tooltip="mean: mean of the blasts' probabilities; geometric: mean of their logs.",
        )
        self.min_probability = FloatSpinBox(
            label="minimum probability",
            min=0.0,
            max=1.0,
            step=0.05,
            value=DEFAULT_MIN_PROBABILITY,
            tooltip="A top pooled probability below this: no call.",
        )
        self.colour_by = ComboBox(
            label="colour cells by",
            choices=list(COLOUR_BY),
            value=COLOUR_BY[0],
            tooltip="p_blast, or each cell's most probable mutation class.",
        )
        self._demo = demo_label()
        self.extend(
            [
                *self.bundles.widgets,
                self._device,
                self._batch_size,
                self.run_button,
                self.cancel_button,
                self._bar,
                self.min_blasts,
                self.pooling,
                self.min_probability,
                self.colour_by,
                self._demo,
            ]
        )
        self.headline = bold_label("No slide call yet", 12)
        self.chart = SlideCallChart()
        self.details = bold_label("", 9)
        for widget in (self.headline, self.chart, self.details):
            self.native.layout().addWidget(widget)
        self.runner = StageRunner(self.run_button, self.cancel_button, self._bar)
        self.run_button.changed.connect(self.run)
        for name, widget in (
            ("min_blasts", self.min_blasts),
            ("pooling", self.pooling),
            ("min_probability", self.min_probability),
        ):
            widget.changed.connect(partial(self._settings_changed, name))
        self.colour_by.changed.connect(self._colour_by_changed)
        self.bundles.combo.changed.connect(self._update_demo)
        self.bundles.folder.changed.connect(self._update_demo)
        self.settings = PersistentValues(
            "mutation",
            {
                "model": self.bundles.combo,
                "folder": self.bundles.folder,
                "device": self._device,
                "batch_size": self._batch_size,
                "min_blasts": self.min_blasts,
                "pooling": self.pooling,
                "min_probability": self.min_probability,
            },
        )
        self._follow()

    @property
    def classifier(self) -> Classifier | None:
        """The mutation classifier of the last run."""
        return self.session.mutation_classifier if self.session is not None else None

    def slide_settings(self) -> SlideCallSettings:
        return SlideCallSettings(
            pooling=self.pooling.value,
            min_blasts=int(self.min_blasts.value),
            min_probability=float(self.min_probability.value),
        )

    def run(self) -> None:
        """Predict the mutation class of the blasts of the chosen cells in a worker thread."""
        try:
            image, cells = self.inputs()
            session = self.require_session()
            if not session.classified:
                raise ValueError("Classify blasts first: the mutation model runs on the blasts.")
            result = session.flush()
            if not np.array_equal(result.labels, np.asarray(cells.data)):
                raise ValueError(
                    "The cells were edited since they were classified: re-classify them first "
                    "(Edit and re-classify, or Classify blasts)."
                )
            classifier = self.bundles.load()
        except (ValueError, BundleError) as error:
            show_error(str(error))
            return
        params = {"device": self._device.value, "batch_size": int(self._batch_size.value)}
        settings = self.slide_settings()
        steps = mutation_stage(
            image_rgb(image, result_region(result)), result, classifier, settings=settings, **params
        )
        self.runner.start(
            steps,
            lambda new: self._show(image, cells, classifier, record_run(new, "mutation", **params)),
            description=f"Predicting the mutation of {image.name}",
        )

    def _show(self, image, cells, classifier: Classifier, result: SlideResult) -> None:
        session = show_result(self._viewer, image, result, cells)
        session.mutation_classifier = classifier

    def _settings_changed(self, name: str, *args) -> None:
        """A pooling control changed: a field's call is pooled with the dock's settings; a whole
        slide's keeps its run's settings but the one the user changed (the call's details
        say which settings it was pooled with)."""
        settings = self.slide_settings()
        view = self.slide_view
        if view is not None and view.call_settings is not None:
            view.set_call_settings(replace(view.call_settings, **{name: getattr(settings, name)}))
        elif self.session is not None:
            self.session.set_settings(settings)

    def _colour_by_changed(self, mode: str) -> None:
        if self.session is None:
            return
        try:
            self.session.set_colour_by(mode)
        except ValueError as error:
            show_error(str(error))
            with self.colour_by.changed.blocked():
                self.colour_by.value = self.session.colour_by

    def _update_demo(self, *args) -> None:
        try:
            chosen_demo = bool(self.bundles.metadata().get("demo"))
        except BundleError:
            chosen_demo = False
        followed = self.slide_view if self.slide_view is not None else self.session
        self._demo.visible = chosen_demo or (followed is not None and followed.demo)

    def on_session_changed(self) -> None:
        view, session = self.slide_view, self.session
        if view is not None:  # a whole slide: its run's call, re-pooled from its table
            call, exact = view.slide_call, view.preview_call is None
        else:
            call = session.slide_call if session is not None else None
            exact = session.exact if session is not None else True
        headline, details = slide_call_text(call, exact)
        if view is not None:
            details += (
                "\nWhole slide: the call of its tiled run, re-pooled from its cells table "
                "when the threshold, pooling or minimums change (Predict mutation runs on "
                "fields and regions)."
            )
        self.headline.setText(headline)
        self.details.setText(details)
        self.chart.show_call(call, exact)
        if session is not None and self.colour_by.value != session.colour_by:
            with self.colour_by.changed.blocked():
                self.colour_by.value = session.colour_by
        self._update_demo()

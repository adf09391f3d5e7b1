"""**blastscope**: every dock of the plugin as tabs of one dock widget."""

from __future__ import annotations

import napari
from qtpy.QtWidgets import QScrollArea, QTabWidget

from blastscope.widgets._classify import ClassifyWidget
from blastscope.widgets._edit import EditWidget
from blastscope.widgets._export import ExportWidget
from blastscope.widgets._inspector import InspectorWidget
from blastscope.widgets._mutation import MutationWidget
from blastscope.widgets._segment import SegmentWidget


class BlastscopeDock(QTabWidget):
    """Segment, classify, mutation, inspect, edit and export in one tabbed dock."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.segment = SegmentWidget(napari_viewer)
        self.classify = ClassifyWidget(napari_viewer)
        self.mutation = MutationWidget(napari_viewer)
        self.inspector = InspectorWidget(napari_viewer)
        self.edit = EditWidget(napari_viewer)
        self.export = ExportWidget(napari_viewer)
        for title, widget in (
            ("Segment", self.segment),
            ("Classify", self.classify),
            ("Mutation", self.mutation),
            ("Inspect", self.inspector),
            ("Edit", self.edit),
            ("Export", self.export),
        ):
            if widget is not self.inspector:  # its table takes the height left
                widget.native.layout().addStretch(1)  # no gaps between the controls
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(widget.native)
            self.addTab(scroll, title)

    def reset_choices(self, event=None) -> None:
        """Refresh every tab's layer choices (napari calls this when layers change)."""
        for widget in (
            self.segment,
            self.classify,
            self.mutation,
            self.inspector,
            self.edit,
            self.export,
        ):
            widget.reset_choices()

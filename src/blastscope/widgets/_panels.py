"""Small Qt views for the docks: the colour legend, the slide-call chart, the cells table and an
enlarged crop. They draw with QPainter (a few rectangles), so redrawing them on every threshold
change costs well under a millisecond."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from napari.utils.colormaps import ensure_colormap
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QRectF, Qt
from qtpy.QtGui import (
    QColor,
    QFont,
    QImage,
    QLinearGradient,
    QPainter,
    QPalette,
    QPen,
    QPixmap,
)
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QSizePolicy, QTableView, QWidget

from blastscope.palette import P_BLAST_COLORMAP
from blastscope.slide_call import SlideCall, call_details, call_headline
from blastscope.widgets._colours import VEIL_RGBA, class_colours


def _text(widget: QWidget) -> QColor:
    """The theme's text colour (napari's dark and light themes alike)."""
    return widget.palette().color(QPalette.ColorRole.WindowText)


def _muted(widget: QWidget) -> QColor:
    colour = _text(widget)
    colour.setAlpha(150)
    return colour


def _qcolor(rgb: Sequence[float], alpha: float = 1.0) -> QColor:
    return QColor.fromRgbF(float(rgb[0]), float(rgb[1]), float(rgb[2]), float(alpha))


class ColourLegend(QWidget):
    """The legend of the cell colours: viridis over p_blast 0..1 with the part below the
    threshold dimmed and the threshold marked, or one swatch per mutation class."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.threshold: float | None = None
        self.classes: tuple[str, ...] = ()
        self.by_class = False
        self._viridis = ensure_colormap(P_BLAST_COLORMAP)
        self.setMinimumHeight(46)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def show_state(self, threshold: float | None, classes: Sequence[str], by_class: bool) -> None:
        """Draw for ``threshold`` (None: not classified) and the classes of the mutation view."""
        self.threshold, self.classes, self.by_class = threshold, tuple(classes), by_class
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(_text(self))
        width = self.width() - 16
        if self.threshold is None:
            painter.setPen(_muted(self))
            painter.drawText(8, 20, "Classify blasts to colour the cells by p_blast.")
            return
        if self.by_class and self.classes:
            colours = class_colours(self.classes)
            x = 8
            for index, name in enumerate(self.classes):
                painter.fillRect(QRectF(x, 6, 12, 12), _qcolor(colours[index]))
                painter.drawText(x + 16, 17, name)
                x += 24 + painter.fontMetrics().horizontalAdvance(name)
            painter.setPen(_muted(self))
            painter.drawText(8, 38, f"top mutation class; cells below p_blast {self.threshold:.2f}")
            return
        bar = QRectF(8, 4, width, 14)
        gradient = QLinearGradient(bar.left(), 0, bar.right(), 0)
        for position in np.linspace(0.0, 1.0, 11):
            gradient.setColorAt(position, _qcolor(self._viridis.map(np.array([position]))[0]))
        painter.fillRect(bar, gradient)
        below = QRectF(bar.left(), bar.top(), bar.width() * self.threshold, bar.height())
        painter.fillRect(below, _qcolor(VEIL_RGBA[:3], VEIL_RGBA[3]))
        x = bar.left() + bar.width() * self.threshold
        painter.setPen(QPen(QColor(255, 80, 80), 2))
        painter.drawLine(int(x), int(bar.top()) - 3, int(x), int(bar.bottom()) + 3)
        painter.setPen(_text(self))
        painter.drawText(int(bar.left()), 34, "0")
        painter.drawText(int(bar.right()) - 6, 34, "1")
        label = f"p_blast  ·  threshold {self.threshold:.2f} (below: dimmed)"
        painter.drawText(int(bar.left()) + 16, 34, label)


class SlideCallChart(QWidget):
    """Horizontal bars of the pooled probability per mutation class with the bootstrap 95%
    interval as whiskers (hidden while the exact interval is being computed)."""

    ROW_HEIGHT = 22

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.call: SlideCall | None = None
        self.exact = True
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(self.ROW_HEIGHT * 4 + 10)

    def show_call(self, call: SlideCall | None, exact: bool) -> None:
        self.call, self.exact = call, exact
        rows = len(call.classes) if call is not None else 4
        self.setMinimumHeight(self.ROW_HEIGHT * rows + 10)
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        call = self.call
        if call is None:
            painter.setPen(_muted(self))
            painter.drawText(8, 20, "Predict mutation to see the slide call.")
            return
        names_width = max(painter.fontMetrics().horizontalAdvance(n) for n in call.classes) + 12
        left, right = 8 + names_width, self.width() - 52
        colours = class_colours(call.classes)
        track = self.palette().color(QPalette.ColorRole.Mid)
        span = max(right - left, 10)
        for index, name in enumerate(call.classes):
            top = 5 + index * self.ROW_HEIGHT
            middle = top + self.ROW_HEIGHT / 2 - 2
            painter.setPen(_text(self))
            painter.drawText(8, int(middle + 5), name)
            painter.fillRect(QRectF(left, top, span, self.ROW_HEIGHT - 8), track)
            value = call.probabilities.get(name, math.nan)
            if math.isfinite(value):
                colour = _qcolor(colours[index], 1.0 if name == call.call else 0.55)
                painter.fillRect(QRectF(left, top, span * value, self.ROW_HEIGHT - 8), colour)
                painter.drawText(int(right) + 6, int(middle + 5), f"{value:.2f}")
            low, high = call.interval.get(name, (math.nan, math.nan))
            if self.exact and math.isfinite(low) and math.isfinite(high):
                painter.setPen(QPen(_text(self), 1.5))
                x0, x1 = left + span * low, left + span * high
                painter.drawLine(int(x0), int(middle), int(x1), int(middle))
                painter.drawLine(int(x0), int(middle) - 4, int(x0), int(middle) + 4)
                painter.drawLine(int(x1), int(middle) - 4, int(x1), int(middle) + 4)


def slide_call_text(call: SlideCall | None, exact: bool) -> tuple[str, str]:
    """(headline, details) of the slide call for the dock (the core's one wording)."""
    if call is None:
        return call_headline(None), ""
    return call_headline(call, exact=exact), call_details(call, exact=exact)


class FeaturesModel(QAbstractTableModel):
    """A read-only table model over a layer's ``features`` DataFrame (rows in the order of the
    frame, or sorted by a column with :meth:`sort`)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.frame = pd.DataFrame()
        self.order = np.arange(0)

    def set_frame(self, frame: pd.DataFrame) -> None:
        self.beginResetModel()
        self.frame = frame
        self.order = np.arange(len(frame))
        self.endResetModel()

    def refresh_values(self) -> None:
        """The frame's values changed in place (same rows): repaint what is shown."""
        if len(self.frame):
            last = self.index(len(self.frame) - 1, len(self.frame.columns) - 1)
            self.dataChanged.emit(self.index(0, 0), last)

    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return len(self.frame)

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        return len(self.frame.columns)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        value = self.frame.iat[int(self.order[index.row()]), index.column()]
        if value is None or value is pd.NA:
            return ""
        if isinstance(value, (float, np.floating)):
            return "" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.frame.columns[section])
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not len(self.frame):
            return
        self.layoutAboutToBeChanged.emit()
        values = self.frame.iloc[:, column]
        ranks = values.rank(method="first", na_option="bottom").to_numpy()
        positions = np.argsort(ranks, kind="stable")
        if order == Qt.SortOrder.DescendingOrder:
            missing = values.isna().to_numpy()[positions]
            positions = np.concatenate([positions[~missing][::-1], positions[missing]])
        self.order = positions
        self.layoutChanged.emit()

    def row_of_frame_row(self, frame_row: int) -> int:
        return int(np.flatnonzero(self.order == frame_row)[0])


class FeaturesTable(QTableView):
    """The cells table as a view of ``features``: selecting a row calls ``on_select(row)`` with
    the frame's row; :meth:`select_frame_row` selects a row from outside without calling it.
    Until the user clicks a column's header, rows are sorted by ``default_sort`` (descending,
    empty values last) when the frame has that column."""

    def __init__(
        self,
        on_select: Callable[[int], None],
        parent: QWidget | None = None,
        *,
        default_sort: str | None = None,
    ):
        super().__init__(parent)
        self._default_sort = default_sort
        self.model_ = FeaturesModel(self)
        self.setModel(self.model_)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self.setSortingEnabled(True)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(160)
        self._on_select = on_select
        self._quiet = False
        self.selectionModel().selectionChanged.connect(self._selection_changed)
        self.horizontalHeader().sectionClicked.connect(self._user_sorted)

    def _user_sorted(self, *args) -> None:
        self._default_sort = None

    def set_frame(self, frame: pd.DataFrame) -> None:
        """Show ``frame`` (a new features table), keeping the user's sort order."""
        self._quiet = True
        self.model_.set_frame(frame)
        header = self.horizontalHeader()
        if self._default_sort in frame.columns:
            column = frame.columns.get_loc(self._default_sort)
            header.setSortIndicator(column, Qt.SortOrder.DescendingOrder)
        if 0 <= header.sortIndicatorSection() < len(frame.columns):
            self.model_.sort(header.sortIndicatorSection(), header.sortIndicatorOrder())
        self._quiet = False

    def selected_frame_row(self) -> int | None:
        rows = self.selectionModel().selectedRows()
        return int(self.model_.order[rows[0].row()]) if rows else None

    def select_frame_row(self, frame_row: int | None) -> None:
        self._quiet = True
        if frame_row is None or frame_row >= self.model_.rowCount():
            self.clearSelection()
        else:
            row = self.model_.row_of_frame_row(frame_row)
            self.selectRow(row)
            self.scrollTo(self.model_.index(row, 0), QAbstractItemView.ScrollHint.PositionAtCenter)
        self._quiet = False

    def _selection_changed(self, *args) -> None:
        if self._quiet:
            return
        row = self.selected_frame_row()
        if row is not None:
            self._on_select(row)


def rgb_pixmap(image: np.ndarray, side: int) -> QPixmap:
    """An RGB uint8 image (h, w, 3) as a pixmap scaled to ``side`` pixels (smooth)."""
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    height, width = image.shape[:2]
    qimage = QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(qimage).scaled(
        side,
        side,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )


def bold_label(text: str = "", point_size: int = 11) -> QLabel:
    label = QLabel(text)
    font = QFont(label.font())
    font.setBold(True)
    font.setPointSize(point_size)
    label.setFont(font)
    label.setWordWrap(True)
    return label

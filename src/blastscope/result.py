"""The one result type that flows through the pipeline, the CLI, the exports and the widgets."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from blastscope.segment import Segmentation
    from blastscope.slide_call import SlideCall


@dataclass
class SlideResult:
    """What the pipeline made of one field.

    ``labels`` is (Y, X) int32 with 0 as background; ``cells`` has one row per label (columns in
    docs/architecture.md); ``pixel_size_um`` is the µm per pixel used; ``segmentation`` keeps the
    network outputs so mask thresholds can be changed without the network; ``slide_call`` is
    ``None`` until the mutation stage ran; ``provenance`` records versions, parameters, model
    hashes and the input's hash; ``notices`` are messages for the user (conversions, fallbacks).
    """

    labels: np.ndarray
    cells: pd.DataFrame
    pixel_size_um: float
    segmentation: Segmentation | None = None
    slide_call: SlideCall | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_nucleated(self) -> int:
        return int(self.cells["is_nucleated"].sum()) if "is_nucleated" in self.cells else 0

    @property
    def n_blasts(self) -> int:
        return int(self.cells["is_blast"].sum()) if "is_blast" in self.cells else 0


def software_versions() -> dict[str, str]:
    """Versions of the software that shape the results, for provenance records."""
    import cellpose
    import torch

    from blastscope import __version__

    return {
        "blastscope": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "torch": torch.__version__,
        "cellpose": getattr(cellpose, "version", None) or _distribution_version("cellpose"),
    }


def _distribution_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def utc_timestamp() -> str:
    """Now, as an ISO 8601 UTC timestamp."""
    return datetime.now(UTC).isoformat(timespec="seconds")

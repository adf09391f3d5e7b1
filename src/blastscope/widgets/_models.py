"""Choosing and loading classifier bundles in the docks."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit

from blastscope.models import BundleError, read_metadata, shipped_bundles
from blastscope.models.classifier import Classifier, load_classifier
from blastscope.pipeline import DEFAULT_BLAST_MODEL, DEFAULT_MUTATION_MODEL

NO_SHIPPED = "(none shipped: choose a bundle folder)"
DEFAULT_MODELS = {"blast": DEFAULT_BLAST_MODEL, "mutation": DEFAULT_MUTATION_MODEL}
"""The docks start on the pipeline's (and the CLI's) default bundles."""


class BundlePicker:
    """A shipped-bundle combo box and a bundle-folder field (the folder wins when set); loads
    the chosen bundle once per weights hash and keeps it."""

    def __init__(self, kind: str):
        self.kind = kind
        choices = list(shipped_bundles(kind)) or [NO_SHIPPED]
        default = DEFAULT_MODELS.get(kind)
        self.combo = ComboBox(
            label=f"{kind} model",
            choices=choices,
            value=default if default in choices else choices[0],
            tooltip=f"A {kind} bundle shipped with blastscope.",
        )
        self.folder = FileEdit(
            label="or bundle folder",
            mode="d",
            tooltip=f"A {kind} bundle directory (bundle.json + model.safetensors), e.g. one "
            f"written by `blastscope train {kind}`; overrides the choice above.",
        )
        self._loaded: dict[tuple[str, str], Classifier] = {}

    @property
    def widgets(self) -> list:
        return [self.combo, self.folder]

    def chosen(self) -> str:
        """The chosen bundle: a folder path or a shipped name; raises when there is none."""
        folder = self.folder.value
        if folder and str(folder) not in ("", ".") and Path(folder).is_dir():
            return str(folder)
        if self.combo.value == NO_SHIPPED:
            raise BundleError(
                f"No {self.kind} model is shipped with this installation: choose a {self.kind} "
                f"bundle folder (one written by `blastscope train {self.kind}`)."
            )
        return str(self.combo.value)

    def metadata(self) -> dict:
        """The chosen bundle's metadata (no weights loaded)."""
        return read_metadata(self.chosen(), self.kind)

    def load(self) -> Classifier:
        """The chosen bundle, loaded (once per bundle and weights hash)."""
        name = self.chosen()
        key = (name, str(self.metadata().get("weights_sha256")))
        if key not in self._loaded:
            self._loaded[key] = load_classifier(name, self.kind)
        return self._loaded[key]

"""Model bundles: ``model.safetensors`` + ``bundle.json`` in one directory.

A bundle never holds pickled code. Loading checks the format marker, the kind (segmenter, blast,
mutation, nucleated), the weights' SHA-256 against the metadata and that the weights parse, and
refuses anything else with a :class:`BundleError` that says what is wrong and what to do.
Kind-specific checks (classes, tensor shapes against the architecture) belong to the code that
builds the network from the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from blastscope import __version__
from blastscope.errors import BlastscopeError

BUNDLE_FORMAT = "blastscope-bundle"
FORMAT_VERSION = 1
KINDS = ("segmenter", "blast", "mutation", "nucleated")
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "bundle.json"
SHIPPED_DIR = Path(__file__).parent / "shipped"
REQUIRED_KEYS = ("format", "format_version", "kind", "name", "architecture", "weights_sha256")


class BundleError(BlastscopeError):
    """A bundle that cannot be used; the message says why and what to do."""


@dataclass
class Bundle:
    """A loaded bundle: its directory, its metadata and its weights (on the CPU)."""

    path: Path
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def sha256(self) -> str:
        return self.metadata["weights_sha256"]

    @property
    def is_demo(self) -> bool:
        """True for the demonstration bundles that ship with the package (not for diagnosis)."""
        return bool(self.metadata.get("demo", False))


def shipped_bundles(kind: str | None = None) -> dict[str, Path]:
    """Names and directories of the bundles that ship inside the package, by name; with
    ``kind`` (one of :data:`KINDS`) only the bundles of that kind."""
    return bundles_in(SHIPPED_DIR, kind)


def bundles_in(folder: str | os.PathLike, kind: str | None = None) -> dict[str, Path]:
    """The bundles in ``folder`` (its sub-folders holding a ``bundle.json``) by name, sorted;
    with ``kind`` only those whose metadata is readable and of that kind. A missing folder
    has none."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {
        path.name: path for path in sorted(folder.iterdir()) if (path / METADATA_FILE).is_file()
    }
    if kind is None:
        return found
    return {name: path for name, path in found.items() if _is_kind(path, kind)}


def _is_kind(path: Path, kind: str) -> bool:
    try:
        return read_metadata(path).get("kind") == kind
    except BundleError:
        return False


def resolve_bundle_path(name_or_path: str | os.PathLike) -> Path:
    """A shipped bundle's name or a path -> the bundle directory."""
    shipped = shipped_bundles()
    if isinstance(name_or_path, str) and name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.name in (METADATA_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.exists():
        names = ", ".join(shipped) or "none"
        raise BundleError(
            f"No model bundle named or found at {str(name_or_path)!r}. Give a shipped bundle "
            f"({names}) or the path of a bundle directory holding {METADATA_FILE} and "
            f"{WEIGHTS_FILE}."
        )
    if not path.is_dir():
        raise BundleError(
            f"{path} is a file, not a model bundle. A bundle is a directory holding "
            f"{METADATA_FILE} and {WEIGHTS_FILE}, as written by `blastscope train`."
        )
    return path


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_metadata(name_or_path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read and check a bundle's metadata without loading its weights."""
    path = resolve_bundle_path(name_or_path)
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise BundleError(
            f"{path} holds no {METADATA_FILE}: it is not a blastscope model bundle. "
            "Point at a directory written by `blastscope train`."
        )
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(
            f"{metadata_path} is not valid JSON ({error}); the bundle is corrupt. "
            "Re-export it with `blastscope train` or restore it from its source."
        ) from error
    if not isinstance(metadata, dict) or metadata.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{metadata_path} is not a blastscope bundle (format marker {BUNDLE_FORMAT!r} "
            "missing). Point at a directory written by `blastscope train`."
        )
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise BundleError(f"{metadata_path} lacks {', '.join(missing)}; the bundle is incomplete.")
    if int(metadata["format_version"]) > FORMAT_VERSION:
        raise BundleError(
            f"{path.name} uses bundle format {metadata['format_version']}, newer than this "
            f"blastscope ({__version__}) reads ({FORMAT_VERSION}). Update blastscope."
        )
    if kind is not None and metadata["kind"] != kind:
        raise BundleError(
            f"{path.name} is a {metadata['kind']} bundle, but a {kind} bundle is needed here. "
            f"Choose a bundle trained with `blastscope train {kind}`."
        )
    return metadata


def load_bundle(name_or_path: str | os.PathLike, kind: str | None = None) -> Bundle:
    """Load a bundle by shipped name or path, checking kind, hash and weights."""
    path = resolve_bundle_path(name_or_path)
    metadata = read_metadata(path, kind)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise BundleError(f"{path} holds no {WEIGHTS_FILE}; the bundle is incomplete.")
    actual = sha256_of_file(weights_path)
    if actual != metadata["weights_sha256"]:
        raise BundleError(
            f"The weights of {path.name} do not match their recorded SHA-256 (file {actual[:12]}…, "
            f"metadata {str(metadata['weights_sha256'])[:12]}…): the file is corrupt, truncated "
            "or was replaced. Restore the bundle or retrain it."
        )
    try:
        state_dict = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise BundleError(
            f"{weights_path} cannot be read as safetensors ({error}). Restore the bundle."
        ) from error
    return Bundle(path, metadata, state_dict)


def update_metadata(directory: str | os.PathLike, changes: dict[str, Any]) -> Path:
    """Merge ``changes`` into a bundle's ``bundle.json`` (top-level keys; the weights and their
    hash stay as they are), written atomically. For records made after saving, such as an
    evaluation of the saved bundle."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    protected = {"format", "format_version", "kind", "weights_sha256"} & set(changes)
    if protected:
        raise BundleError(f"{', '.join(sorted(protected))} of a bundle cannot be changed.")
    metadata.update(changes)
    temporary = directory / (METADATA_FILE + ".tmp")
    temporary.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(temporary, directory / METADATA_FILE)
    return directory


def save_bundle(
    directory: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write weights and metadata as a bundle; the format fields and the hash are filled in.

    ``metadata`` must hold ``kind``, ``name`` and ``architecture``. Files are written to
    temporary names and renamed, so a failed save leaves no half-written bundle.
    """
    directory = Path(directory)
    if metadata.get("kind") not in KINDS:
        raise BundleError(
            f"Bundle kind must be one of {', '.join(KINDS)}, got {metadata.get('kind')!r}."
        )
    for key in ("name", "architecture"):
        if key not in metadata:
            raise BundleError(f"Bundle metadata needs {key!r}.")
    if (directory / METADATA_FILE).exists() and not overwrite:
        raise BundleError(
            f"A bundle already exists at {directory}; pass overwrite=True to replace it."
        )
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as handle:
        weights_tmp = Path(handle.name)
    try:
        save_file(tensors, str(weights_tmp))
        full = {
            "format": BUNDLE_FORMAT,
            "format_version": FORMAT_VERSION,
            "blastscope_version": __version__,
            **metadata,
            "weights_sha256": sha256_of_file(weights_tmp),
        }
        metadata_tmp = directory / (METADATA_FILE + ".tmp")
        metadata_tmp.write_text(
            json.dumps(full, indent=2, sort_keys=False) + "\n", encoding="utf-8"
        )
        os.replace(weights_tmp, directory / WEIGHTS_FILE)
        os.replace(metadata_tmp, directory / METADATA_FILE)
    finally:
        weights_tmp.unlink(missing_ok=True)
    return directory

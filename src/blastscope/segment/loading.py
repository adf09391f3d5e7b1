"""Loading a segmenter by name: shipped bundles, bundle folders, Cellpose model names and
Cellpose 3 files, cached per model, device and weights (the sha256 of the weights, so that
retraining into the same folder or file is never served stale).
"""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path
from typing import Any

import torch

from blastscope.devices import resolve_device
from blastscope.io import ImageInputError, check_pixel_size
from blastscope.models.bundle import (
    BundleError,
    load_bundle,
    read_metadata,
    resolve_bundle_path,
    sha256_of_file,
    shipped_bundles,
)
from blastscope.segment.backend import ARCHITECTURE_NAME, Cellpose3Backend, cellpose_widths
from blastscope.segment.params import SHIPPED_SEGMENTER, SegmentationError

CELLPOSE_MODEL_NAMES = ("cyto3", "cyto2", "cyto", "nuclei")


def segmenter_choices() -> list[str]:
    """Model names to offer: the shipped segmenter bundles, then Cellpose's main models."""
    shipped = list(shipped_bundles("segmenter"))
    return [*shipped, *CELLPOSE_MODEL_NAMES]


def load_segmenter(model: str, device: str | torch.device = "auto") -> Cellpose3Backend:
    """Load a segmentation model (cached per model and device); see the module text for names.

    Raises :class:`SegmentationError` (unknown name, no internet for a Cellpose download, wrong
    kind of file) or :class:`~blastscope.models.bundle.BundleError` (corrupt bundle).
    """
    resolved = resolve_device(device)
    return _load_segmenter_cached(str(model), str(resolved), _weights_key(str(model)))


def _weights_key(model: str) -> str:
    """What identifies the weights behind ``model``: a bundle's weights hash, a file's sha256,
    else the name; so that retraining into the same folder or file is never served stale."""
    path = Path(model).expanduser()
    if model in shipped_bundles() or (path.is_dir() and (path / "bundle.json").is_file()):
        return str(read_metadata(model).get("weights_sha256"))
    if path.is_file():
        return sha256_of_file(path)
    return model


@functools.lru_cache(maxsize=4)
def _load_segmenter_cached(model: str, device_name: str, weights_key: str) -> Cellpose3Backend:
    device = torch.device(device_name)
    path = Path(model).expanduser()
    if model in shipped_bundles() or (path.is_dir() and (path / "bundle.json").is_file()):
        return _backend_from_bundle(model, device)
    if path.is_file():
        return _backend_from_cellpose_file(path, device, {"name": path.name, "source": "file"})
    from cellpose import models

    if model in models.MODEL_NAMES:
        return _backend_from_cellpose_name(model, device)
    choices = ", ".join(segmenter_choices())
    raise SegmentationError(
        f"Unknown segmentation model {model!r}: it is neither a shipped model, a Cellpose model "
        f"name nor an existing file or bundle directory. Choose one of {choices}, or give the "
        "path of a Cellpose model file or a bundle directory."
    )


def _backend_from_bundle(model: str, device: torch.device) -> Cellpose3Backend:
    bundle = load_bundle(resolve_bundle_path(model), kind="segmenter")
    architecture = bundle.metadata["architecture"]
    if architecture.get("name") != ARCHITECTURE_NAME:
        raise BundleError(
            f"{bundle.name} holds a {architecture.get('name')!r} network; this blastscope "
            f"segments with {ARCHITECTURE_NAME!r} bundles. Retrain it with `blastscope train "
            "segmenter`."
        )
    widths, _ = cellpose_widths(bundle.state_dict)
    if list(widths) != list(architecture["widths"]):
        raise BundleError(
            f"{bundle.name}: the weights have widths {list(widths)} but bundle.json says "
            f"{architecture['widths']}; the bundle is inconsistent. Retrain or restore it."
        )
    for key in ("net_pixel_size_um", "default_pixel_size_um"):
        try:
            check_pixel_size(architecture[key], key)
        except ImageInputError as error:
            raise BundleError(
                f"{bundle.name} ({bundle.path}): bundle.json's {error} Fix it in bundle.json "
                "or retrain the segmenter."
            ) from None
    info = {
        "name": bundle.name,
        "source": "bundle",
        "path": str(bundle.path),
        "sha256": bundle.sha256,
        "demo": bundle.is_demo,
        "net_pixel_size_um": architecture["net_pixel_size_um"],
        "diameter_um": architecture["diameter_um"],
        "default_pixel_size_um": architecture["default_pixel_size_um"],
    }
    return Cellpose3Backend(
        bundle.state_dict,
        device,
        info,
        diameter_um=float(architecture["diameter_um"]),
        default_pixel_size_um=float(architecture["default_pixel_size_um"]),
        diam_mean=float(architecture["diam_mean"]),
    )


def _backend_from_cellpose_name(name: str, device: torch.device) -> Cellpose3Backend:
    from cellpose import models

    try:
        path = Path(models.model_path(name))
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise SegmentationError(
            f"The Cellpose model {name!r} is not on this computer and could not be downloaded "
            f"({type(error).__name__}: {error}). Without internet, use the shipped model "
            f"{SHIPPED_SEGMENTER!r}, or copy the Cellpose model file here and give its path "
            f"(Cellpose looks in {models.MODEL_DIR})."
        ) from error
    diam_mean = 17.0 if name == "nuclei" else 30.0
    info = {"name": name, "source": "cellpose", "file": str(path)}
    return _backend_from_cellpose_file(path, device, info, diam_mean=diam_mean)


def _backend_from_cellpose_file(
    path: Path, device: torch.device, info: dict[str, Any], diam_mean: float | None = None
) -> Cellpose3Backend:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SegmentationError(
            f"{path} cannot be read as a Cellpose model file ({type(error).__name__}: {error}). "
            "Give a Cellpose 3 model file or a blastscope bundle directory."
        ) from error
    if not isinstance(state_dict, dict):
        raise SegmentationError(f"{path} holds no network weights; give a Cellpose 3 model file.")
    if "W2" in state_dict:
        raise SegmentationError(
            f"{path} is a Cellpose 4 (cpsam) model; blastscope runs Cellpose 3 networks. Use "
            f"{SHIPPED_SEGMENTER!r} or a model trained with Cellpose 3."
        )
    return Cellpose3Backend(state_dict, device, info, diam_mean=diam_mean)

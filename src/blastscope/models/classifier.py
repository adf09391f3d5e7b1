"""Classifier bundles (kinds ``blast`` and ``mutation``): schema, loading, saving, inference.

A classifier bundle is a :mod:`blastscope.models.bundle` directory whose ``bundle.json`` holds,
besides the generic fields (format, format_version, blastscope_version, kind, weights_sha256):

==================  ==============================================================================
``name``            the bundle's name (str)
``demo``            true for the demonstration bundles made on synthetic data (not for diagnosis)
``architecture``    ``{"name": "blastnet", "args": {...}}`` (see :mod:`.architectures`); its
                    ``num_classes`` equals the number of ``classes``
``classes``         class names in logit order. ``blast``: exactly ``["non-blast", "blast"]``;
                    ``mutation``: any two or more distinct names, by default
                    ``["PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1"]``;
                    ``nucleated``: exactly ``["red cell", "platelet", "white cell"]`` (every
                    segmented object; white cells and blasts are the nucleated ones)
``input``           ``window_um`` (side of the square crop window, µm), ``pixel_size_um`` (µm per
                    crop pixel), ``crop_px`` (= round(window_um / pixel_size_um)),
                    ``mask_to_cell`` (other cells' pixels set to the fill, see
                    :mod:`blastscope.crops`),
                    ``normalisation`` ``{"mean": [r, g, b], "std": [r, g, b]}`` applied to crops
                    scaled to [0, 1]: ``(crop - mean) / std``; optional
                    ``stain_normalisation``: ``"none"`` (default) or ``"cells"`` (the field is
                    normalised against its own objects before crops are cut,
                    :mod:`blastscope.stain`)
``threshold``       blast: the default decision threshold on ``p_blast`` in [0, 1];
                    nucleated: the threshold on the white-cell probability;
                    mutation: null (the call is the top class)
``temperature``     calibration temperature (> 0): probabilities are ``softmax(logits / T)``
``training``        how it was made: ``command``, ``git_commit``, ``seed``, ``dataset``,
                    ``noise_method``, ``noise_rate``, ``epochs`` and anything else the trainer adds
``metrics``         evaluation metrics (a dict; may be empty for an untrained bundle)
==================  ==============================================================================

:func:`load_classifier` checks all of this, builds the network, loads the weights strictly and
returns a :class:`Classifier` in eval mode; anything wrong raises a
:class:`~blastscope.models.bundle.BundleError` that says what and what to do.
:func:`save_classifier` writes a bundle (the trainer's side), refusing metadata that would not load.
:func:`write_random_classifier` writes a small randomly initialised bundle (a real network with
real weights, untrained) for tests and for trying the pipeline before a model is trained.
"""

from __future__ import annotations

import copy
import math
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blastscope.classes import BLAST_CLASSES, MUTATION_CLASSES, NUCLEATED_CLASSES
from blastscope.crops import crop_size_px
from blastscope.models.architectures import (
    ArchitectureError,
    build_network,
    default_architecture,
)
from blastscope.models.bundle import BundleError, load_bundle, save_bundle
from blastscope.stain import STAIN_NORMALISATIONS

CLASSIFIER_KINDS = ("blast", "mutation", "nucleated")
FIXED_CLASSES = {"blast": BLAST_CLASSES, "nucleated": NUCLEATED_CLASSES}
DEFAULT_WINDOW_UM = 24.0
DEFAULT_CROP_PIXEL_SIZE_UM = 0.5
DEFAULT_THRESHOLD = 0.5
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)

REQUIRED_KEYS = (
    "name",
    "demo",
    "architecture",
    "classes",
    "input",
    "threshold",
    "temperature",
    "training",
    "metrics",
)
REQUIRED_INPUT_KEYS = ("window_um", "pixel_size_um", "crop_px", "mask_to_cell", "normalisation")


@dataclass(frozen=True)
class CropInput:
    """How a classifier's crops are made: window (µm), crop pixel size (µm), side (px), masking,
    the per-channel normalisation of crops scaled to [0, 1], and the field's stain
    normalisation before cutting (``"none"`` or ``"cells"``)."""

    window_um: float
    pixel_size_um: float
    crop_px: int
    mask_to_cell: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stain_normalisation: str = "none"


@dataclass(eq=False)
class Classifier:
    """A loaded classifier: the network (eval mode, on the device it was loaded to, which never
    changes) and its metadata. :meth:`on` gives it on another device."""

    name: str
    kind: str
    network: nn.Module
    classes: tuple[str, ...]
    input: CropInput
    threshold: float | None
    temperature: float
    demo: bool
    metadata: dict[str, Any]
    path: Path | None = None
    _replicas: dict[str, Classifier] = field(default_factory=dict, repr=False)
    _replicas_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def device(self) -> torch.device:
        """The device the network's weights are on."""
        return next(self.network.parameters()).device

    def on(self, device: str | torch.device) -> Classifier:
        """This classifier on ``device``: itself when its weights are there, else a copy made
        once and kept. The network is never moved, so runs on other devices (other workers)
        cannot pull it from under a run in progress."""
        device = torch.device(device)
        if _same_device(self.device, device):
            return self
        with self._replicas_lock:
            key = str(device)
            if key not in self._replicas:
                network = copy.deepcopy(self.network)
                layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
                network.to(device, memory_format=layout)
                self._replicas[key] = replace(
                    self, network=network, _replicas={}, _replicas_lock=threading.Lock()
                )
            return self._replicas[key]

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops (N, 3, h, w) in [0, 1] -> the network's input ``(crops - mean) / std``."""
        mean = torch.as_tensor(self.input.mean, dtype=crops.dtype, device=crops.device)
        std = torch.as_tensor(self.input.std, dtype=crops.dtype, device=crops.device)
        return (crops - mean[:, None, None]) / std[:, None, None]

    def probabilities(self, crops: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, K) float32 for crops (N, 3, h, w) in [0, 1], on their device.

        Runs under ``torch.inference_mode``; on CUDA with autocast (bf16 where supported, else
        fp16). Probabilities are ``softmax(logits / temperature)`` computed in float32. Crops on
        another device than the classifier's run on :meth:`on` that device.
        """
        if not _same_device(self.device, crops.device):
            return self.on(crops.device).probabilities(crops)
        with torch.inference_mode():
            inputs = self.normalise(crops)
            if crops.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    logits = self.network(inputs)
            else:
                logits = self.network(inputs)
            probabilities = torch.softmax(logits.float() / self.temperature, dim=1)
        return probabilities


def _same_device(current: torch.device, wanted: torch.device) -> bool:
    return current.type == wanted.type and (
        wanted.index is None or current.index is None or current.index == wanted.index
    )


def classifier_metadata(
    kind: str,
    name: str,
    *,
    architecture: dict[str, Any] | None = None,
    classes: tuple[str, ...] | list[str] | None = None,
    window_um: float = DEFAULT_WINDOW_UM,
    pixel_size_um: float = DEFAULT_CROP_PIXEL_SIZE_UM,
    mask_to_cell: bool = False,
    stain_normalisation: str = "none",
    mean: tuple[float, float, float] | list[float] = DEFAULT_MEAN,
    std: tuple[float, float, float] | list[float] = DEFAULT_STD,
    threshold: float | None = DEFAULT_THRESHOLD,
    temperature: float = 1.0,
    demo: bool = False,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of a classifier bundle in the schema above, with defaults filled in.

    ``classes`` defaults to the kind's classes, ``architecture`` to the default ``blastnet`` for
    that many classes; ``threshold`` is stored as null for mutation bundles.
    """
    _check_kind(kind)
    if classes is None:
        classes = FIXED_CLASSES.get(kind, MUTATION_CLASSES)
    if architecture is None:
        architecture = default_architecture(len(classes))
    return {
        "kind": kind,
        "name": name,
        "demo": demo,
        "architecture": architecture,
        "classes": list(classes),
        "input": {
            "window_um": float(window_um),
            "pixel_size_um": float(pixel_size_um),
            "crop_px": crop_size_px(window_um, pixel_size_um),
            "mask_to_cell": bool(mask_to_cell),
            **(
                {}
                if stain_normalisation == "none"
                else {"stain_normalisation": stain_normalisation}
            ),
            "normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        },
        "threshold": None if kind == "mutation" else threshold,
        "temperature": float(temperature),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }


def _check_kind(kind: str) -> None:
    if kind not in CLASSIFIER_KINDS:
        raise BundleError(
            f"A classifier bundle's kind is one of {', '.join(CLASSIFIER_KINDS)}, got {kind!r}; "
            "segmenter bundles load with blastscope.segment."
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_classifier_metadata(metadata: dict[str, Any], where: str = "the bundle") -> CropInput:
    """Check a classifier bundle's metadata against the schema; return its crop input.

    Raises :class:`BundleError` naming every missing key or the bad value and what to do.
    """
    kind = metadata.get("kind")
    _check_kind(kind)
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    crop = metadata.get("input")
    if isinstance(crop, dict):
        missing += [f"input.{key}" for key in REQUIRED_INPUT_KEYS if key not in crop]
        norm = crop.get("normalisation")
        if isinstance(norm, dict):
            missing += [f"input.normalisation.{k}" for k in ("mean", "std") if k not in norm]
    if missing:
        raise BundleError(
            f"{where} lacks {', '.join(missing)}: it does not follow the classifier bundle schema "
            "(see blastscope.models.classifier). Re-save it with save_classifier or retrain it "
            "with `blastscope train`."
        )
    if not isinstance(crop, dict):
        raise BundleError(f"{where}: 'input' must be a dict of crop settings, got {crop!r}.")
    classes = metadata["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(name, str) and name for name in classes)
        or len(set(classes)) != len(classes)
    ):
        raise BundleError(
            f"{where}: 'classes' must be a list of two or more distinct names, got {classes!r}."
        )
    fixed = FIXED_CLASSES.get(kind)
    if fixed is not None and tuple(classes) != fixed:
        raise BundleError(
            f"{where} is a {kind} bundle with classes {classes}, but {kind} bundles have exactly "
            f"{list(fixed)} (in that order). Retrain it with `blastscope train {kind}`."
        )
    for key in ("window_um", "pixel_size_um"):
        if not _number(crop[key]) or crop[key] <= 0:
            raise BundleError(f"{where}: input.{key} must be a positive number, got {crop[key]!r}.")
    expected_px = crop_size_px(crop["window_um"], crop["pixel_size_um"])
    if crop["crop_px"] != expected_px:
        raise BundleError(
            f"{where}: input.crop_px is {crop['crop_px']!r} but a {crop['window_um']} µm window at "
            f"{crop['pixel_size_um']} µm per pixel is {expected_px} px. Fix the metadata or "
            "retrain the bundle."
        )
    if not isinstance(crop["mask_to_cell"], bool):
        raise BundleError(f"{where}: input.mask_to_cell must be true or false.")
    stain = crop.get("stain_normalisation", "none")
    if stain not in STAIN_NORMALISATIONS:
        raise BundleError(
            f"{where}: input.stain_normalisation must be one of "
            f"{', '.join(STAIN_NORMALISATIONS)}, got {stain!r}."
        )
    mean, std = crop["normalisation"]["mean"], crop["normalisation"]["std"]
    for label, values in (("mean", mean), ("std", std)):
        if not isinstance(values, list) or len(values) != 3 or not all(map(_number, values)):
            raise BundleError(
                f"{where}: input.normalisation.{label} must be 3 numbers (R, G, B), got {values!r}."
            )
    if min(std) <= 0:
        raise BundleError(f"{where}: input.normalisation.std must be positive, got {std}.")
    threshold = metadata["threshold"]
    if kind != "mutation" and (not _number(threshold) or not 0 <= threshold <= 1):
        raise BundleError(
            f"{where}: a {kind} bundle's threshold must be a number in [0, 1], got {threshold!r}."
        )
    temperature = metadata["temperature"]
    if not _number(temperature) or temperature <= 0:
        raise BundleError(
            f"{where}: temperature must be a positive number (1.0 = uncalibrated), "
            f"got {temperature!r}."
        )
    for key in ("training", "metrics", "architecture"):
        if not isinstance(metadata[key], dict):
            raise BundleError(f"{where}: {key!r} must be a dict, got {metadata[key]!r}.")
    return CropInput(
        window_um=float(crop["window_um"]),
        pixel_size_um=float(crop["pixel_size_um"]),
        crop_px=int(crop["crop_px"]),
        mask_to_cell=crop["mask_to_cell"],
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        stain_normalisation=stain,
    )


def _build_for(metadata: dict[str, Any], where: str) -> nn.Module:
    """Build the bundle's network and check its output size against the classes."""
    try:
        network = build_network(metadata["architecture"])
    except ArchitectureError as error:
        raise BundleError(f"{where}: {error}") from error
    outputs = getattr(network, "num_classes", None)
    if outputs != len(metadata["classes"]):
        raise BundleError(
            f"{where} lists {len(metadata['classes'])} classes {metadata['classes']} but its "
            f"network has {outputs} outputs; the classes and the architecture's num_classes must "
            "agree. Fix the metadata or retrain the bundle."
        )
    return network


def _check_state_dict(
    network: nn.Module, state_dict: dict[str, torch.Tensor], subject: str, fix: str
) -> None:
    """Refuse weights whose names or shapes differ from the network's, listing the first few."""
    expected = network.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [
        f"{key} {tuple(state_dict[key].shape)} (architecture: {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}")
    if wrong:
        problems.append(f"tensor shapes that do not match the architecture: {', '.join(wrong[:5])}")
    if problems:
        raise BundleError(
            f"{subject} do not fit the architecture described in its metadata "
            f"({'; '.join(problems)}). {fix}"
        )


def load_classifier(name_or_path: str | os.PathLike, kind: str) -> Classifier:
    """Load a ``blast`` or ``mutation`` bundle (a shipped name or a directory) as a Classifier.

    The network is built from the metadata, its weights are loaded strictly and it is put in
    eval mode on the CPU. Raises :class:`BundleError` for a bundle of another kind, metadata that
    misses keys, classes that do not match the network's outputs, unknown architectures and
    tensors whose names or shapes do not match.
    """
    _check_kind(kind)
    bundle = load_bundle(name_or_path, kind=kind)
    where = bundle.path.name
    crop = validate_classifier_metadata(bundle.metadata, where)
    network = _build_for(bundle.metadata, where)
    _check_state_dict(
        network,
        bundle.state_dict,
        f"The weights of {where}",
        "The weights and bundle.json come from different models: retrain or restore the bundle.",
    )
    network.load_state_dict(bundle.state_dict, strict=True)
    network.eval()
    threshold = bundle.metadata["threshold"]
    return Classifier(
        name=bundle.name,
        kind=kind,
        network=network,
        classes=tuple(bundle.metadata["classes"]),
        input=crop,
        threshold=None if threshold is None else float(threshold),
        temperature=float(bundle.metadata["temperature"]),
        demo=bool(bundle.metadata["demo"]),
        metadata=bundle.metadata,
        path=bundle.path,
    )


def save_classifier(
    directory: str | os.PathLike,
    network: nn.Module,
    metadata: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``network``'s weights and ``metadata`` (see :func:`classifier_metadata`) as a bundle.

    Refuses metadata that does not follow the schema and a network that does not match the
    metadata's architecture, so every bundle written here loads with :func:`load_classifier`.
    """
    where = f"the metadata for {Path(directory).name}"
    validate_classifier_metadata(metadata, where)
    reference = _build_for(metadata, where)
    _check_state_dict(
        reference,
        network.state_dict(),
        f"The weights of the network given for {Path(directory).name}",
        "Save the network that the metadata's architecture describes.",
    )
    return save_bundle(directory, network.state_dict(), metadata, overwrite=overwrite)


def write_random_classifier(
    directory: str | os.PathLike,
    kind: str,
    *,
    name: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    **metadata_options: Any,
) -> Path:
    """Write an untrained bundle: the architecture with seeded random weights.

    A real network with real weights, for tests and for trying the pipeline before a model is
    trained; its probabilities mean nothing. ``metadata_options`` go to
    :func:`classifier_metadata` (window, pixel size, classes, architecture, threshold, ...).
    """
    directory = Path(directory)
    name = name or directory.name
    training = {
        "command": f"write_random_classifier(kind={kind!r}, seed={seed})",
        "git_commit": None,
        "seed": seed,
        "dataset": "none: randomly initialised, untrained",
        "noise_method": None,
        "noise_rate": None,
        "epochs": 0,
    }
    metadata = classifier_metadata(kind, name, training=training, **metadata_options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = _build_for(metadata, name)
    return save_classifier(directory, network, metadata, overwrite=overwrite)

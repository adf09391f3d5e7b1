"""Cell segmentation with Cellpose 3: the adapter, our own tiling and stitching, mask recompute.

Every cell of a field is segmented (red cells, white cells, blasts, platelets). The network's
outputs (flows ``dP`` and cell probability) are kept with the labels, so that a change of the
flow or cell-probability threshold recomputes the masks without running the network again
(:func:`recompute_masks`).

Models
------
``SegmentationParams.model`` is one of

- a shipped bundle name (``smear-cellpose``, the default) or the path of a bundle directory
  (``bundle.json`` + ``model.safetensors``, kind ``segmenter``), written by
  ``blastscope train segmenter``;
- a Cellpose model name (``cyto3``, ``nuclei``, ...), downloaded by Cellpose on first use;
- the path of a Cellpose 3 model file (a ``state_dict`` as written by ``cellpose.train``).

Everything Cellpose-specific lives in :class:`Cellpose3Backend`; another backend (for example
Cellpose 4) would implement the same methods (``prepare``, ``network_outputs`` and its steps,
``masks``) and be chosen in :func:`load_segmenter`.

Diameter and pixel size
-----------------------
Cellpose resizes an image so that objects of ``diameter`` pixels become the network's
``diam_mean`` pixels. A bundle records the pixel size its network works at, so with a known pixel
size the diameter is exact: ``diameter_px = diameter_um / pixel_size_um`` (``diameter_um`` =
``diam_mean`` x the network's pixel size). Without a pixel size the diameter is estimated: a
first pass at the model's default image pixel size, then the median mask diameter is compared
with the median mask diameter the network saw in training (``diam_labels``); other trial
diameters follow until one agrees with its own estimate. Each trial runs on a central crop of at
most :data:`ESTIMATE_NETWORK_PX` network pixels a side, so trials stay cheap; when the crop is
the whole image and the estimate agrees with the trial within 10%, the trial's outputs are the
segmentation (no second pass). The pixel size is then estimated too, ``diameter_um /
diameter_px``, so µm measures and classifier crops use the scale the cells show. The result
records the pixel size it used and where it came from in ``model_info["pixel_size_source"]``.

Pixel sizes pass :func:`blastscope.io.check_pixel_size` (the light-microscope range). The image
is never enlarged more than :data:`MAX_RESCALE` times for the network: cells smaller than
``diam_mean / MAX_RESCALE`` pixels are run at that scale with a notice (at 10 µm per pixel the
enlargement would be 33x, gigabytes for one field, and cells under 6 pixels do not segment
anyway).

Memory
------
Before any array the size of the field is built, :func:`estimate_memory_bytes` estimates the
run's peak from the field's size, the tile size and the enlargement, and a run that needs more
than :func:`available_memory_bytes` is refused with the figure and the fixes (a region of the
field, a smaller field, a smaller ``tile_size``, the right pixel size).

Large images
------------
Images larger than ``tile_size`` are cut into tiles whose cores partition the image, each run with
a halo of context (``tile_overlap_px``, by default 3 median cell diameters, so every cell up to
3x the median size lies whole in the tile that holds its centre). Each tile's objects are kept
only in the tile whose core holds their centroid, pasted onto unlabelled pixels and relabelled
1..N. The network outputs of the tile cores are assembled into the full-image ``dP`` and
``cellprob``. ``segment_steps`` yields one :class:`~blastscope.progress.Progress` per tile, so
closing the generator stops within one tile.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import urllib.error
import warnings
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels, relabel_sequential

from blastscope.devices import resolve_device
from blastscope.errors import BlastscopeError
from blastscope.io import ImageInputError, check_pixel_size, to_rgb_uint8
from blastscope.models.bundle import (
    BundleError,
    load_bundle,
    read_metadata,
    resolve_bundle_path,
    sha256_of_file,
    shipped_bundles,
)
from blastscope.progress import Progress, run_steps
from blastscope.resample import resize_image, resize_labels

SHIPPED_SEGMENTER = "smear-cellpose"
SHIPPED_NUCLEATED_MODEL = "smear-nucleated"
CELLPOSE_MODEL_NAMES = ("cyto3", "cyto2", "cyto", "nuclei")
ASSUMED_PIXEL_SIZE_UM = 0.1
"""µm per pixel assumed for a plain Cellpose model and an image without a pixel size (a 100x
oil objective on a common camera); bundles record their own default."""

HALO_CELL_DIAMETERS = 3.0
MAX_CELLPROB_THRESHOLD = 6.0
MAX_FLOW_THRESHOLD = 3.0
T = TypeVar("T")

DEFAULT_NITER = 200
MIN_NORMALIZE_SPAN = 25.0
"""Narrowest intensity span (8-bit levels) that normalisation stretches to 0-1."""
DIAMETER_CANDIDATES = (1.0, 0.5, 2.0, 0.25, 4.0)
"""Multiples of the default diameter tried when estimating it (first consistent one wins)."""
ESTIMATE_NETWORK_PX = 512
"""Side (pixels at the network's scale) of the central crop a diameter trial runs on."""
MAX_RESCALE = 4.0
"""Largest enlargement of an image for the network (``diam_mean`` / cell diameter in pixels)."""
IMAGE_BYTES_PER_PX = 48
"""Peak bytes per field pixel of the whole-field arrays of a run (the RGB field, its channels
while they are normalised, flows, cell probability, labels): 38 measured on a 4096 x 4096 field
(peak RSS on CPU), 48 for a margin."""
NETWORK_BYTES_PER_PX = 96
"""Peak bytes per pixel of one tile at the network's scale (the enlarged tile, its 224-pixel
patches, the network's outputs, their average, the outputs resized back): about 90 measured on
a 1024 x 1024 tile enlarged 4x (1.6 GB; the estimate says 1.7)."""
MASK_BYTES_PER_PX = 64
"""Peak bytes per pixel of one tile at the mask scale (following the flows)."""
ARCHITECTURE_NAME = "cellpose3-cpnet"


class SegmentationError(BlastscopeError):
    """Segmentation cannot run as asked; the message says why and what to do."""


@dataclass
class SegmentationParams:
    """Settings of one segmentation run (units: pixels of the analysed image unless named).

    - ``model``: shipped bundle name, bundle directory, Cellpose model name or Cellpose file.
    - ``diameter``: median cell diameter in pixels; ``None`` = from the pixel size when known
      (the model's diameter in µm / pixel size), else estimated (first pass, median mask).
    - ``flow_threshold`` (0-3), ``cellprob_threshold`` (-6..6): Cellpose's mask thresholds.
      ``cellprob_threshold`` defaults to -1 (Cellpose's own default is 0): chosen for the shipped
      smear model on 80 BCCD training fields, where it gave the tightest white-cell outlines
      (box IoU >= 0.7 recall 0.93 against 0.88 at 0).
    - ``normalize_percentiles``: per-channel (low, high) percentiles mapped to 0 and 1.
    - ``min_size_px``: masks smaller than this many pixels are dropped.
    - ``exclude_on_edges``: drop masks that touch the image border.
    - ``niter``: flow-following iterations at the network's scale (``None`` = 200, Cellpose's).
    - ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    - ``batch_size``: 224-px network patches per batch.
    - ``tile_size``: images larger than this (pixels, either side) are segmented in tiles.
    - ``tile_overlap_px``: halo of context around each tile; ``None`` = 3 cell diameters.
    - ``nucleated_model``: the ``nucleated`` classifier bundle (shipped name or folder) that
      sorts every object into red cell, platelet or white cell after segmentation
      (``is_nucleated``; :func:`blastscope.pipeline.sort_cells_steps`); ``None`` keeps the stain
      heuristic of :mod:`blastscope.cells`.
    """

    model: str = SHIPPED_SEGMENTER
    diameter: float | None = None
    flow_threshold: float = 0.4
    cellprob_threshold: float = -1.0
    normalize_percentiles: tuple[float, float] = (1.0, 99.0)
    min_size_px: int = 15
    exclude_on_edges: bool = False
    niter: int | None = None
    device: str = "auto"
    batch_size: int = 8
    tile_size: int = 1024
    tile_overlap_px: int | None = None
    nucleated_model: str | None = SHIPPED_NUCLEATED_MODEL

    def validate(self) -> None:
        """Raise :class:`SegmentationError` naming the first bad setting and its valid range."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise SegmentationError(
                f"model must be a model name or path, got {self.model!r}; use "
                f"{SHIPPED_SEGMENTER!r} (shipped), a Cellpose name such as 'cyto3', or a path."
            )
        if self.diameter is not None and not (math.isfinite(self.diameter) and self.diameter > 0):
            raise SegmentationError(
                f"diameter must be a positive number of pixels, got {self.diameter}; give the "
                "typical cell diameter in pixels, or None to derive it from the pixel size."
            )
        _check_range("flow_threshold", self.flow_threshold, 0.0, MAX_FLOW_THRESHOLD)
        _check_range(
            "cellprob_threshold",
            self.cellprob_threshold,
            -MAX_CELLPROB_THRESHOLD,
            MAX_CELLPROB_THRESHOLD,
        )
        low, high = self.normalize_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise SegmentationError(
                f"normalize_percentiles must satisfy 0 <= low < high <= 100, got "
                f"{self.normalize_percentiles}; the default is (1.0, 99.0)."
            )
        if self.min_size_px < 0:
            raise SegmentationError(
                f"min_size_px must be 0 or more pixels, got {self.min_size_px}."
            )
        if self.niter is not None and self.niter < 1:
            raise SegmentationError(
                f"niter must be a positive number of iterations or None, got {self.niter}."
            )
        if self.batch_size < 1:
            raise SegmentationError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.tile_size < 256:
            raise SegmentationError(
                f"tile_size must be at least 256 pixels, got {self.tile_size}; tiles smaller "
                "than a few cells cut too many of them."
            )
        if self.nucleated_model is not None and (
            not isinstance(self.nucleated_model, str) or not self.nucleated_model.strip()
        ):
            raise SegmentationError(
                f"nucleated_model must be a bundle name or folder, or None for the stain "
                f"heuristic, got {self.nucleated_model!r}."
            )
        if self.tile_overlap_px is not None and self.tile_overlap_px < 0:
            raise SegmentationError(
                f"tile_overlap_px must be 0 or more pixels, got {self.tile_overlap_px}; use "
                "None to derive it from the cell diameter."
            )


@dataclass
class Segmentation:
    """The result of segmenting one image (Y, X).

    ``labels`` (Y, X) int32 (0 = background, cells 1..N); ``dP`` (2, Y, X) float16 flows and
    ``cellprob`` (Y, X) float16 logits, kept for :func:`recompute_masks`; ``diameter_px`` the
    diameter used (pixels); ``pixel_size_um`` the pixel size used (µm per pixel);
    ``model_info`` the model's provenance; ``notices`` what was converted or assumed.
    """

    labels: np.ndarray
    dP: np.ndarray
    cellprob: np.ndarray
    diameter_px: float
    pixel_size_um: float
    params: SegmentationParams
    model_info: dict[str, Any]
    notices: list[str] = field(default_factory=list)


class SegmenterBackend(Protocol):
    """What segment.py needs from a segmentation network (Cellpose 3 today).

    ``backend`` names the entry of :data:`MASKS_BY_BACKEND` that turns its outputs into masks.
    """

    backend: str
    info: dict[str, Any]
    diam_mean: float
    diam_labels: float
    diameter_um: float | None
    default_pixel_size_um: float | None
    device: torch.device

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(Y, X, 3) uint8 -> the network's input channels (Y, X, C) float32, not normalised."""

    def network_outputs(
        self, channels: np.ndarray, diameter_px: float, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (Y, X, C) -> flows (2, Y, X) and cell-probability logits (Y, X)."""

    def network_output_steps(
        self, channels: np.ndarray, diameter_px: float, batch_size: int
    ) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray]]:
        """The same, yielding (batches done, batches) between network batches."""


class Cellpose3Backend:
    """A Cellpose 3 ``CPnet`` of any widths, run with Cellpose's own tiling and dynamics.

    Workarounds for small networks in Cellpose 3.1 (recorded here because they shape the code):

    - ``CellposeModel`` hard-codes the widths ``[nchan, 32, 64, 128, 256]`` and loads files into
      that net, so a net of other widths (ours is ``[3, 16, 32, 64, 128]``) cannot be loaded
      through it: we build ``CPnet`` with the widths read from the weights.
    - ``cellpose.core.run_net`` (behind ``CellposeModel.eval``) assumes a 256-wide style vector
      and fails for a net whose last width is not 256, so :meth:`network_outputs` runs the net
      itself with Cellpose's helpers (``resize_image``, ``get_pad_yx``, ``make_tiles``,
      ``average_tiles``): the same resize, padding, 224-px tiles with 10% overlap and averaging.
    - The net is built with ``mkldnn=False``: Cellpose converts an mkldnn net in place on every
      call, which breaks sharing one net between threads and reading its weights afterwards.
    """

    backend = "cellpose3"
    tile_px = 224
    tile_overlap = 0.1

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor],
        device: torch.device,
        info: dict[str, Any],
        *,
        diameter_um: float | None = None,
        default_pixel_size_um: float | None = None,
        diam_mean: float | None = None,
    ):
        from cellpose.resnet_torch import CPnet

        widths, nout = cellpose_widths(state_dict)
        # Older Cellpose files lack the diameter entries; Cellpose then assumes 30 pixels.
        fallback = torch.tensor([30.0 if diam_mean is None else float(diam_mean)])
        state_dict = {"diam_mean": fallback, "diam_labels": fallback, **state_dict}
        stored_diam_mean = float(state_dict["diam_mean"].reshape(-1)[0])
        self.diam_mean = float(diam_mean) if diam_mean is not None else stored_diam_mean
        self.diam_labels = float(state_dict["diam_labels"].reshape(-1)[0])
        self.diameter_um = diameter_um
        self.default_pixel_size_um = default_pixel_size_um
        self.device = device
        self.nchan = widths[0]
        net = CPnet(list(widths), nout, sz=3, mkldnn=False, max_pool=True, diam_mean=self.diam_mean)
        net.load_state_dict(state_dict, strict=True)
        net.diam_mean.data.fill_(self.diam_mean)
        # channels_last: oneDNN's convolutions run about 1.6x faster on CPU in this layout.
        self.net = net.to(device, memory_format=torch.channels_last).eval()
        self.info = {**info, "widths": list(widths), "diam_mean": self.diam_mean}

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """RGB for 3-channel nets; grey plus empty channels for 2-channel (built-in) nets."""
        if self.nchan == 3:
            return image.astype(np.float32)
        grey = image.astype(np.float32).mean(axis=-1, keepdims=True)
        extra = np.zeros((*grey.shape[:2], self.nchan - 1), np.float32)
        return np.concatenate([grey, extra], axis=-1)

    def network_outputs(
        self, channels: np.ndarray, diameter_px: float, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (Y, X, C) -> flows (2, Y, X), cell-probability logits (Y, X), float32
        (:meth:`network_output_steps` run to its end)."""
        steps = self.network_output_steps(channels, diameter_px, batch_size)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value

    def network_output_steps(
        self, channels: np.ndarray, diameter_px: float, batch_size: int
    ) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray]]:
        """:meth:`network_outputs` yielding (batches done, batches) after each network batch,
        so that a caller can stop between batches.

        The image is resized by ``diam_mean / diameter_px`` (cells to the network's size), run in
        224-px tiles and the outputs resized back to (Y, X).
        """
        from cellpose import transforms

        height, width = channels.shape[:2]
        rescale = self.diam_mean / diameter_px
        resized_shape = (max(1, round(height * rescale)), max(1, round(width * rescale)))
        resized = transforms.resize_image(channels, Ly=resized_shape[0], Lx=resized_shape[1])
        resized = resized.reshape((*resized_shape, channels.shape[-1]))
        ypad1, ypad2, xpad1, xpad2 = transforms.get_pad_yx(*resized_shape)
        padded = np.pad(resized.transpose(2, 0, 1), ((0, 0), (ypad1, ypad2), (xpad1, xpad2)))
        tiles, ysub, xsub, padded_y, padded_x = transforms.make_tiles(
            padded, bsize=self.tile_px, tile_overlap=self.tile_overlap
        )
        tiles = tiles.reshape(-1, *tiles.shape[-3:])
        outputs = np.zeros((len(tiles), 3, *tiles.shape[-2:]), np.float32)
        n_batches = math.ceil(len(tiles) / batch_size)
        for index, start in enumerate(range(0, len(tiles), batch_size)):
            with torch.inference_mode():  # not held across the yield: it is per thread
                batch = torch.from_numpy(tiles[start : start + batch_size]).to(self.device)
                batch = batch.contiguous(memory_format=torch.channels_last)
                prediction = self.net(batch)[0][:, :3]
                outputs[start : start + batch_size] = prediction.float().cpu().numpy()
            yield index + 1, n_batches
        averaged = transforms.average_tiles(outputs, ysub, xsub, padded_y, padded_x)
        averaged = averaged[:, ypad1 : ypad1 + resized_shape[0], xpad1 : xpad1 + resized_shape[1]]
        restored = transforms.resize_image(averaged.transpose(1, 2, 0), Ly=height, Lx=width)
        restored = restored.reshape(height, width, 3)
        return (
            np.ascontiguousarray(restored[..., :2].transpose(2, 0, 1)),
            np.ascontiguousarray(restored[..., 2]),
        )


def cellpose3_masks(
    dP: np.ndarray,
    cellprob: np.ndarray,
    *,
    flow_threshold: float,
    cellprob_threshold: float,
    niter: int,
    device: torch.device,
) -> np.ndarray:
    """Cellpose 3's flow dynamics: flows (2, Y, X), logits (Y, X) -> labels (Y, X) int32.

    Holes are filled; small masks are left to the caller. Cellpose's quality check (drop a
    mask whose own flows differ from the network's by more than ``flow_threshold``) spares
    masks that touch the array's border: the network points a cut cell's flows at the centre
    of the whole cell, outside the array, so the check would drop every cell cut by the edge.
    """
    from cellpose import dynamics, metrics

    dP = dP.astype(np.float32)
    seeds_logger = logging.getLogger(dynamics.__name__)
    with warnings.catch_warnings(), _without(seeds_logger, NO_SEEDS_MESSAGE):
        # torch warns on every sparse tensor Cellpose builds; nothing for a user to act on.
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        labels = dynamics.resize_and_compute_masks(
            dP,
            cellprob.astype(np.float32),
            niter=niter,
            cellprob_threshold=cellprob_threshold,
            flow_threshold=0.0,
            interp=True,
            min_size=-1,
            max_size_fraction=0.4,
            device=device,
        ).astype(np.int32)
        if flow_threshold > 0 and labels.any():
            errors, _ = metrics.flow_error(labels, dP, device=device)
            bad = np.zeros(labels.max() + 1, dtype=bool)
            bad[1:] = errors > flow_threshold
            border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
            bad[np.unique(border)] = False
            if bad.any():
                labels = relabel_sequential(np.where(bad[labels], 0, labels))[0]
    return labels


NO_SEEDS_MESSAGE = "no seeds found"
"""Cellpose logs it for every tile or field without a cell (background tiles of a field that has
cells too); blastscope reports the cells it found instead."""


class _DropMessages(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextmanager
def _without(logger: logging.Logger, text: str) -> Iterator[None]:
    """``logger`` without the records whose message contains ``text``, for the duration."""
    dropping = _DropMessages(text)
    logger.addFilter(dropping)
    try:
        yield
    finally:
        logger.removeFilter(dropping)


MASKS_BY_BACKEND = {"cellpose3": cellpose3_masks}
"""Mask computation of each backend, for :func:`recompute_masks` (no network needed)."""


def cellpose_widths(state_dict: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], int]:
    """The ``nbase`` widths (nchan, w1, ..., wk) and output count of a Cellpose 3 CPnet."""
    key = "downsample.down.res_down_{}.proj.1.weight"
    if key.format(0) not in state_dict or "output.2.weight" not in state_dict:
        raise SegmentationError(
            "These weights are not a Cellpose 3 network (no CPnet layers found). Give a model "
            "file written by Cellpose 3 (cellpose<4) or a bundle from `blastscope train "
            "segmenter`."
        )
    widths = [int(state_dict[key.format(0)].shape[1])]
    level = 0
    while key.format(level) in state_dict:
        widths.append(int(state_dict[key.format(level)].shape[0]))
        level += 1
    return tuple(widths), int(state_dict["output.2.weight"].shape[0])


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


def segment_steps(
    image: np.ndarray, pixel_size_um: float | None, params: SegmentationParams
) -> Generator[Progress, None, Segmentation]:
    """Segment every cell of ``image`` (Y, X, 3); yields ``Progress("segment", ...)`` per tile.

    ``pixel_size_um`` is µm per pixel, a number or numeric string in the light-microscope
    range (:func:`blastscope.io.check_pixel_size`; ``None``: unknown, the diameter is then
    estimated). Returns a :class:`Segmentation`. Closing the generator stops after the current
    tile. Raises :class:`SegmentationError` before any work when the run would need more memory
    than is available (:func:`estimate_memory_bytes`).
    """
    params.validate()
    if pixel_size_um is not None:
        pixel_size_um = check_pixel_size(pixel_size_um)
    rgb, notices = to_rgb_uint8(image)
    backend = load_segmenter(params.model, params.device)
    pixel_size_used, pixel_size_source = _pixel_size(backend, pixel_size_um)
    tiles = _tile_grid(rgb.shape[:2], params.tile_size)
    estimating = params.diameter is None and (pixel_size_um is None or backend.diameter_um is None)
    total = len(tiles) + (1 if estimating else 0)
    reused = None
    if params.diameter is not None:
        diameter_px, diameter_source = float(params.diameter), "given"
    elif not estimating:
        diameter_px, diameter_source = backend.diameter_um / pixel_size_um, "pixel size"
    else:
        diameter_px, diameter_source = _default_diameter(backend, pixel_size_used), "estimated"
    _check_memory(rgb.shape[:2], backend, diameter_px, params, len(tiles), pixel_size_used)
    channels = normalize_channels(backend.prepare(rgb), params.normalize_percentiles)
    if estimating:
        diameter_px, reused = _estimate_diameter(backend, channels, params, pixel_size_used)
        if pixel_size_um is None and backend.diameter_um is not None:
            pixel_size_used = backend.diameter_um / diameter_px
            pixel_size_source = "pixel size estimated from the cell size"
        _check_memory(rgb.shape[:2], backend, diameter_px, params, len(tiles), pixel_size_used)
        yield Progress("segment", 1, total, f"estimated cell diameter {diameter_px:.1f} px")
    network_diameter = _network_diameter(backend, diameter_px)
    if network_diameter > diameter_px:
        notices.append(
            f"Cells are about {diameter_px:.1f} pixels across (at {pixel_size_used:g} µm per "
            f"pixel); the network expects {backend.diam_mean:g}, which would need the image "
            f"enlarged {backend.diam_mean / diameter_px:.0f}x. It was enlarged {MAX_RESCALE:g}x "
            "(the most, for memory), and cells this small segment poorly: check the pixel size "
            "(--pixel-size, or pixel_size_um in Python) or scan at a finer one."
        )
    halo = _halo(params, diameter_px) if len(tiles) > 1 else 0
    mask_scale = min(1.0, backend.diam_mean / diameter_px)
    niter = params.niter or DEFAULT_NITER
    compute = MASKS_BY_BACKEND[backend.backend]
    height, width = rgb.shape[:2]
    dP = np.zeros((2, height, width), np.float16)
    cellprob = np.zeros((height, width), np.float16)
    labels = np.zeros((height, width), np.int32)
    done = total - len(tiles)
    for index, core in enumerate(tiles):
        region = _expand(core, halo, (height, width))
        if reused is not None:  # the whole image, from the diameter trial
            tile_dP, tile_prob, tile_labels = reused
        else:
            network = backend.network_output_steps(
                channels[region], network_diameter, params.batch_size
            )
            where = f"tile {index + 1} of {len(tiles)}"
            while True:
                try:
                    batches_done, batches = next(network)
                except StopIteration as stop:
                    tile_dP, tile_prob = stop.value
                    break
                yield Progress("segment", done, total, f"{where}: network {batches_done}/{batches}")
            masks = Progress("segment", done, total, f"{where}: masks")
            tile_labels = yield from _in_background(
                masks,
                _masks,
                compute,
                tile_dP,
                tile_prob,
                params,
                mask_scale,
                niter,
                backend.device,
            )
        inner = _inner(core, region)
        dP[(slice(None), *core)] = tile_dP[(slice(None), *inner)]
        cellprob[core] = tile_prob[inner]
        _paste_core_objects(labels, tile_labels, core, region)
        done += 1
        yield Progress("segment", done, total, f"tile {index + 1} of {len(tiles)}")
    labels = _finish_labels(labels, params.exclude_on_edges)
    model_info = {
        **backend.info,
        "backend": backend.backend,
        "diameter_source": diameter_source,
        "pixel_size_source": pixel_size_source,
        "tiles": len(tiles),
        "network_diameter_px": network_diameter,
        "halo_px": halo,
        "mask_scale": mask_scale,
        "niter": niter,
    }
    if pixel_size_source != "given":
        notices.append(
            f"No pixel size: µm measures use the {pixel_size_source} of {pixel_size_used:g} µm "
            "per pixel."
        )
    return Segmentation(
        labels=labels,
        dP=dP,
        cellprob=cellprob,
        diameter_px=float(diameter_px),
        pixel_size_um=float(pixel_size_used),
        params=params,
        model_info=model_info,
        notices=notices,
    )


def segment(
    image: np.ndarray,
    pixel_size_um: float | None = None,
    params: SegmentationParams | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Segmentation:
    """Blocking form of :func:`segment_steps` (for scripts, the CLI and tests)."""
    return run_steps(
        segment_steps(image, pixel_size_um, params or SegmentationParams()), on_progress
    )


def recompute_masks(
    segmentation: Segmentation,
    *,
    flow_threshold: float | None = None,
    cellprob_threshold: float | None = None,
    min_size_px: int | None = None,
) -> Segmentation:
    """New masks from the stored flows and cell probability, without running the network.

    Thresholds left ``None`` keep their previous values. Uses the same tiles, halo and mask
    scale as the original run, so large images are stitched the same way.
    """
    changes = {
        name: value
        for name, value in (
            ("flow_threshold", flow_threshold),
            ("cellprob_threshold", cellprob_threshold),
            ("min_size_px", min_size_px),
        )
        if value is not None
    }
    params = replace(segmentation.params, **changes)
    params.validate()
    info = segmentation.model_info
    device = resolve_device(params.device)
    compute = MASKS_BY_BACKEND[info["backend"]]
    height, width = segmentation.labels.shape
    labels = np.zeros((height, width), np.int32)
    for core in _tile_grid((height, width), params.tile_size):
        region = _expand(core, int(info["halo_px"]), (height, width))
        tile_labels = _masks(
            compute,
            segmentation.dP[(slice(None), *region)],
            segmentation.cellprob[region],
            params,
            float(info["mask_scale"]),
            int(info["niter"]),
            device,
        )
        _paste_core_objects(labels, tile_labels, core, region)
    labels = _finish_labels(labels, params.exclude_on_edges)
    return replace(segmentation, labels=labels, params=params)


MASKS_POLL_S = 0.1
"""How often a stage waiting for its masks yields (and so how soon a Cancel is seen)."""


def _in_background(
    waiting: Progress, function: Callable[..., T], *args: Any
) -> Generator[Progress, None, T]:
    """``function(*args)`` in a worker thread, yielding ``waiting`` every :data:`MASKS_POLL_S`
    until it is done; closing the generator returns at once and leaves the thread to finish
    alone, its result dropped. For the steps that are one opaque call (Cellpose's masks)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blastscope-masks")
    try:
        future = pool.submit(function, *args)
        yield waiting
        while True:
            try:
                return future.result(timeout=MASKS_POLL_S)
            except FutureTimeout:
                yield waiting
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _masks(
    compute: Callable[..., np.ndarray],
    dP: np.ndarray,
    cellprob: np.ndarray,
    params: SegmentationParams,
    mask_scale: float,
    niter: int,
    device: torch.device,
) -> np.ndarray:
    """Labels (Y, X) from network outputs, computed at the network's scale when it is coarser.

    Following the flows costs pixels x iterations, so for an image finer than the network's
    scale the outputs are shrunk by ``mask_scale`` (as Cellpose does with ``resample=False``),
    the masks computed there with ``niter`` iterations and enlarged back (outlines redrawn on
    the full-resolution cell probability); masks under ``min_size_px`` image pixels are then
    dropped.
    """
    height, width = cellprob.shape
    full_cellprob = cellprob
    small = (max(1, round(height * mask_scale)), max(1, round(width * mask_scale)))
    if small != (height, width):
        dP = np.stack([resize_image(channel, small) for channel in dP.astype(np.float32)])
        cellprob = resize_image(cellprob.astype(np.float32), small)
    labels = compute(
        dP,
        cellprob,
        flow_threshold=params.flow_threshold,
        cellprob_threshold=params.cellprob_threshold,
        niter=niter,
        device=device,
    )
    if small != (height, width):
        labels = _smooth_enlarge(labels, full_cellprob, params.cellprob_threshold, mask_scale)
    if params.min_size_px > 0 and labels.any():
        sizes = np.bincount(labels.ravel())
        small_ids = sizes < params.min_size_px
        small_ids[0] = False
        labels = np.where(small_ids[labels], 0, labels)
    return labels


def _smooth_enlarge(
    labels: np.ndarray, cellprob: np.ndarray, cellprob_threshold: float, mask_scale: float
) -> np.ndarray:
    """Enlarge labels computed at the network's scale to ``cellprob``'s (Y, X) shape.

    Nearest-neighbour enlargement gives blocky outlines, so each cell's outer edge is redrawn
    along the full-resolution cell probability: pixels below ``cellprob_threshold`` are cleared
    and pixels above it within one enlarged block of a cell join that cell.
    """
    enlarged = resize_labels(labels, cellprob.shape)
    foreground = cellprob.astype(np.float32) > cellprob_threshold
    enlarged[~foreground] = 0
    grown = expand_labels(enlarged, distance=math.ceil(1.0 / mask_scale))
    return np.where(foreground & (enlarged == 0), grown, enlarged)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise SegmentationError(
            f"{name} must be between {low:g} and {high:g}, got {value}. "
            f"Defaults: flow_threshold 0.4, cellprob_threshold -1."
        )


def normalize_channels(
    channels: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)
) -> np.ndarray:
    """Per-channel percentile normalisation of (Y, X, C) over the whole image, as in training.

    The low percentile maps to 0 and the high one to 1, except that a span narrower than
    :data:`MIN_NORMALIZE_SPAN` is widened downwards (an image of background and noise is not
    stretched into texture; its background stays near 1 as in a real field). All-zero channels
    stay 0.
    """
    sample = channels.reshape(-1, channels.shape[-1])
    if len(sample) > 1_000_000:
        sample = sample[:: len(sample) // 500_000]
    high = np.percentile(sample, percentiles[1], axis=0)
    low = np.minimum(np.percentile(sample, percentiles[0], axis=0), high - MIN_NORMALIZE_SPAN)
    normalized = (channels - low) / (high - low)
    normalized[..., high <= 0] = 0.0
    return normalized.astype(np.float32)


def _pixel_size(backend: SegmenterBackend, pixel_size_um: float | None) -> tuple[float, str]:
    if pixel_size_um is not None:
        return float(pixel_size_um), "given"
    if backend.default_pixel_size_um is not None:
        return float(backend.default_pixel_size_um), "model's default pixel size"
    return ASSUMED_PIXEL_SIZE_UM, "assumed pixel size"


Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Flows (2, Y, X), cell probability (Y, X) and masks (Y, X) of one network pass."""


def _estimate_diameter(
    backend: SegmenterBackend,
    channels: np.ndarray,
    params: SegmentationParams,
    pixel_size_um: float,
) -> tuple[float, Outputs | None]:
    """Median cell diameter (pixels) of an image of unknown pixel size, and the outputs of the
    whole image at that diameter when a trial already made them (else None).

    Each trial runs the network at a trial diameter on a central crop of at most
    :data:`ESTIMATE_NETWORK_PX` network pixels a side (at most one tile); the median diameter
    of its masks times ``diam_mean / diam_labels`` (the network's size over the median mask size
    it saw in training) is that trial's estimate. Trials start at the model's default diameter
    and go through :data:`DIAMETER_CANDIDATES` until one is self-consistent (estimate within
    15% of the trial); the most consistent trial's estimate is then refined by one more pass
    when it is more than 10% off. A network shown cells far from its size finds few or wrong
    masks, hence the trials.
    """
    default = _default_diameter(backend, pixel_size_um)
    trials = []
    for factor in DIAMETER_CANDIDATES:
        trial = _diameter_trial(backend, channels, params, default * factor)
        if trial is None:
            continue
        trials.append(trial)
        if trial.inconsistency < math.log(1.15):
            break
    if not trials:
        return float(default), None
    best = min(trials, key=lambda trial: trial.inconsistency)
    if best.inconsistency > math.log(1.1):
        best = _diameter_trial(backend, channels, params, best.estimate) or best
    if best.whole_image and best.inconsistency <= math.log(1.1):
        return best.diameter_px, best.outputs
    return best.estimate, None


@dataclass
class _Trial:
    diameter_px: float
    estimate: float
    whole_image: bool
    outputs: Outputs

    @property
    def inconsistency(self) -> float:
        return abs(math.log(self.estimate / self.diameter_px))


def _diameter_trial(
    backend: SegmenterBackend, channels: np.ndarray, params: SegmentationParams, diameter_px: float
) -> _Trial | None:
    """One pass at ``diameter_px`` on a central crop; None if it finds under 3 cells."""
    height, width = channels.shape[:2]
    network_diameter = _network_diameter(backend, diameter_px)
    side = min(
        params.tile_size, math.ceil(ESTIMATE_NETWORK_PX * network_diameter / backend.diam_mean)
    )
    crop_height, crop_width = min(height, side), min(width, side)
    y0, x0 = (height - crop_height) // 2, (width - crop_width) // 2
    crop = channels[y0 : y0 + crop_height, x0 : x0 + crop_width]
    tile_dP, tile_prob = backend.network_outputs(crop, network_diameter, params.batch_size)
    mask_scale = min(1.0, backend.diam_mean / diameter_px)
    compute = MASKS_BY_BACKEND[backend.backend]
    niter = params.niter or DEFAULT_NITER
    labels = _masks(compute, tile_dP, tile_prob, params, mask_scale, niter, backend.device)
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    if len(sizes) < 3:
        return None
    median = float(np.median(np.sqrt(sizes))) / (math.sqrt(math.pi) / 2)
    return _Trial(
        diameter_px=float(diameter_px),
        estimate=median * backend.diam_mean / backend.diam_labels,
        whole_image=(crop_height, crop_width) == (height, width),
        outputs=(tile_dP, tile_prob, labels),
    )


def _default_diameter(backend: SegmenterBackend, pixel_size_um: float) -> float:
    """The model's cell diameter in pixels at ``pixel_size_um`` (its ``diam_mean`` if unknown)."""
    if backend.diameter_um is not None:
        return backend.diameter_um / pixel_size_um
    return backend.diam_mean


def _network_diameter(backend: SegmenterBackend, diameter_px: float) -> float:
    """The diameter handed to the network: ``diameter_px``, but at most :data:`MAX_RESCALE`
    times smaller than the network's ``diam_mean`` (so the image is enlarged at most that)."""
    return max(float(diameter_px), backend.diam_mean / MAX_RESCALE)


def estimate_memory_bytes(
    shape: tuple[int, int], rescale: float, *, tile_size: int, halo_px: int
) -> int:
    """Rough peak memory (bytes) of segmenting a (Y, X) field.

    ``rescale`` is the enlargement for the network (``diam_mean`` / cell diameter in pixels),
    ``tile_size`` and ``halo_px`` the tiling (pixels). The whole-field arrays cost
    :data:`IMAGE_BYTES_PER_PX` per field pixel; one tile with its halo costs
    :data:`NETWORK_BYTES_PER_PX` per pixel at the network's scale (``rescale`` squared per field
    pixel) and :data:`MASK_BYTES_PER_PX` per pixel at the mask scale (``min(1, rescale)``).
    """
    height, width = shape
    tile_height = min(height, math.ceil(height / math.ceil(height / tile_size)) + 2 * halo_px)
    tile_width = min(width, math.ceil(width / math.ceil(width / tile_size)) + 2 * halo_px)
    per_tile_px = NETWORK_BYTES_PER_PX * rescale**2 + MASK_BYTES_PER_PX * min(1.0, rescale) ** 2
    return int(IMAGE_BYTES_PER_PX * height * width + tile_height * tile_width * per_tile_px)


def available_memory_bytes() -> int | None:
    """Memory this process can still take (bytes): psutil's available memory when psutil is
    installed, else the free physical pages; bounded by a cgroup v2 limit; None if unknown."""
    available = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            available = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            available = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return available
    if limit.isdigit():
        left = max(0, int(limit) - current)
        available = left if available is None else min(available, left)
    return available


def _check_memory(
    shape: tuple[int, int],
    backend: SegmenterBackend,
    diameter_px: float,
    params: SegmentationParams,
    n_tiles: int,
    pixel_size_um: float,
) -> None:
    """Raise :class:`SegmentationError` with the figure and the fixes when the run of a field
    of ``shape`` would need more memory than :func:`available_memory_bytes`."""
    rescale = backend.diam_mean / _network_diameter(backend, diameter_px)
    halo = _halo(params, diameter_px) if n_tiles > 1 else 0
    need = estimate_memory_bytes(shape, rescale, tile_size=params.tile_size, halo_px=halo)
    available = available_memory_bytes()
    if available is None or need <= available:
        return
    height, width = shape
    raise SegmentationError(
        f"Segmenting this {height} x {width} field needs about {need / 1e9:.1f} GB of memory, "
        f"but {available / 1e9:.1f} GB is available. To fit, analyse a region of the field (a "
        "crop) or a smaller field; or use a smaller tile_size (--tile-size; now "
        f"{params.tile_size}, at least 256) so fewer pixels go through the network at once; or "
        f"check the pixel size (--pixel-size): at {pixel_size_um:g} µm per pixel the cells are "
        f"{diameter_px:.1f} pixels across and the network sees the field enlarged "
        f"{rescale:.2g}x."
    )


def _halo(params: SegmentationParams, diameter_px: float) -> int:
    if params.tile_overlap_px is not None:
        return int(params.tile_overlap_px)
    return math.ceil(HALO_CELL_DIAMETERS * diameter_px)


Box = tuple[slice, slice]


def _tile_grid(shape: tuple[int, int], tile_size: int) -> list[Box]:
    """Tile cores that partition an image of ``shape`` into near-equal tiles <= tile_size."""
    height, width = shape
    rows = np.linspace(0, height, math.ceil(height / tile_size) + 1).round().astype(int)
    cols = np.linspace(0, width, math.ceil(width / tile_size) + 1).round().astype(int)
    return [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1 in itertools.pairwise(rows)
        for c0, c1 in itertools.pairwise(cols)
    ]


def _expand(core: Box, halo: int, shape: tuple[int, int]) -> Box:
    rows, cols = core
    return (
        slice(max(0, rows.start - halo), min(shape[0], rows.stop + halo)),
        slice(max(0, cols.start - halo), min(shape[1], cols.stop + halo)),
    )


def _inner(core: Box, region: Box) -> Box:
    """The core's position inside its expanded region."""
    return tuple(
        slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, region, strict=True)
    )


def _paste_core_objects(
    labels: np.ndarray, tile_labels: np.ndarray, core: Box, region: Box
) -> None:
    """Paste the objects of ``tile_labels`` whose centroid lies in ``core`` onto free pixels."""
    count = int(tile_labels.max())
    if count == 0:
        return
    ids = np.arange(1, count + 1)
    rows, cols = np.indices(tile_labels.shape)
    area = ndi.sum_labels(np.ones(tile_labels.shape), tile_labels, ids)
    present = area > 0
    centre_y = ndi.sum_labels(rows, tile_labels, ids)[present] / area[present] + region[0].start
    centre_x = ndi.sum_labels(cols, tile_labels, ids)[present] / area[present] + region[1].start
    inside = (
        (centre_y >= core[0].start - 0.5)
        & (centre_y < core[0].stop - 0.5)
        & (centre_x >= core[1].start - 0.5)
        & (centre_x < core[1].stop - 0.5)
    )
    keep = np.zeros(count + 1, bool)
    keep[ids[present][inside]] = True
    offset = int(labels.max())
    target = labels[region]
    mask = keep[tile_labels] & (target == 0)
    target[mask] = tile_labels[mask] + offset


def _finish_labels(labels: np.ndarray, exclude_on_edges: bool) -> np.ndarray:
    if exclude_on_edges and labels.any():
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        labels = np.where(np.isin(labels, edge[edge > 0]), 0, labels)
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lookup[labels]

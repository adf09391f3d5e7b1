"""The Cellpose 3 network: what a backend provides (:class:`SegmenterBackend`), the Cellpose 3
backend, the widths of its net and the input normalisation shared with training.

Another backend (for example Cellpose 4) would implement the same methods and be chosen in
:func:`blastscope.segment.loading.load_segmenter`.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any, Protocol

import numpy as np
import torch

from blastscope.segment.params import SegmentationError

ARCHITECTURE_NAME = "cellpose3-cpnet"
MIN_NORMALIZE_SPAN = 25.0
"""Narrowest intensity span (8-bit levels) that normalisation stretches to 0-1."""


class SegmenterBackend(Protocol):
    """What blastscope.segment needs from a segmentation network (Cellpose 3 today).

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


def normalize_channels(
    channels: np.ndarray,
    percentiles: tuple[float, float] = (1.0, 99.0),
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Per-channel percentile normalisation of (Y, X, C) over the whole image, as in training.

    The low percentile maps to 0 and the high one to 1, except that a span narrower than
    :data:`MIN_NORMALIZE_SPAN` is widened downwards (an image of background and noise is not
    stretched into texture; its background stays near 1 as in a real field). All-zero channels
    stay 0. ``reference`` (..., C): the pixels the percentiles are taken from when ``channels``
    is a piece of a larger image (a whole slide's tile); default ``channels`` itself.
    """
    source = channels if reference is None else reference
    sample = source.reshape(-1, source.shape[-1])
    if len(sample) > 1_000_000:
        sample = sample[:: len(sample) // 500_000]
    high = np.percentile(sample, percentiles[1], axis=0)
    low = np.minimum(np.percentile(sample, percentiles[0], axis=0), high - MIN_NORMALIZE_SPAN)
    normalized = (channels - low) / (high - low)
    normalized[..., high <= 0] = 0.0
    return normalized.astype(np.float32)

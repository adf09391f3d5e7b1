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
quick pass at the model's default image pixel size (quick masks: fewer flow iterations, no flow
check), whose median mask diameter is compared with the median mask diameter the network saw in
training (``diam_labels``). Cells shown smaller than the network's size measure well, so that
estimate is taken; cells shown larger are split by the network, so a larger estimate is tried in
turn. Each trial runs on a central crop of at most :data:`ESTIMATE_NETWORK_PX` network pixels a
side, so trials stay cheap; when the crop is the whole image and the estimate agrees with the
trial within 15%, the trial's network outputs are reused (only the masks are computed again).
The pixel size is then estimated too, ``diameter_um /
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

Modules
-------
One job each: ``params`` (the settings and their validation), ``backend`` (the Cellpose 3
network and the input normalisation), ``loading`` (segmenters by name, cached per weights),
``masks`` (network outputs to labels, in a worker thread during a run), ``tiling`` (the tile
grid, halo and stitching), ``diameter`` (the diameter and pixel size of a run), ``memory`` (the
estimate and the refusal) and ``run`` (the stage: :func:`segment_steps`, :func:`segment`,
:func:`recompute_masks`, :class:`Segmentation`). Import the public names from
``blastscope.segment``. A test that replaces a function patches it in the module that defines
it, for example ``memory.available_memory_bytes`` or ``loading.load_segmenter`` (the stage calls
it through that module); patching the name re-exported here changes nothing.
"""

from blastscope.segment.backend import (
    ARCHITECTURE_NAME,
    MIN_NORMALIZE_SPAN,
    Cellpose3Backend,
    SegmenterBackend,
    cellpose_widths,
    normalize_channels,
)
from blastscope.segment.diameter import (
    ASSUMED_PIXEL_SIZE_UM,
    DIAMETER_CANDIDATES,
    ESTIMATE_NETWORK_PX,
    MAX_RESCALE,
    NetworkOutputs,
)
from blastscope.segment.loading import CELLPOSE_MODEL_NAMES, load_segmenter, segmenter_choices
from blastscope.segment.masks import (
    DEFAULT_NITER,
    MASKS_BY_BACKEND,
    MASKS_POLL_S,
    NO_SEEDS_MESSAGE,
    cellpose3_masks,
)
from blastscope.segment.memory import (
    IMAGE_BYTES_PER_PX,
    MASK_BYTES_PER_PX,
    NETWORK_BYTES_PER_PX,
    available_memory_bytes,
    estimate_memory_bytes,
)
from blastscope.segment.params import (
    MAX_CELLPROB_THRESHOLD,
    MAX_FLOW_THRESHOLD,
    SHIPPED_NUCLEATED_MODEL,
    SHIPPED_SEGMENTER,
    SegmentationError,
    SegmentationParams,
)
from blastscope.segment.run import Segmentation, recompute_masks, segment, segment_steps
from blastscope.segment.tiling import HALO_CELL_DIAMETERS, Box

__all__ = [
    "ARCHITECTURE_NAME",
    "ASSUMED_PIXEL_SIZE_UM",
    "CELLPOSE_MODEL_NAMES",
    "DEFAULT_NITER",
    "DIAMETER_CANDIDATES",
    "ESTIMATE_NETWORK_PX",
    "HALO_CELL_DIAMETERS",
    "IMAGE_BYTES_PER_PX",
    "MASKS_BY_BACKEND",
    "MASKS_POLL_S",
    "MASK_BYTES_PER_PX",
    "MAX_CELLPROB_THRESHOLD",
    "MAX_FLOW_THRESHOLD",
    "MAX_RESCALE",
    "MIN_NORMALIZE_SPAN",
    "NETWORK_BYTES_PER_PX",
    "NO_SEEDS_MESSAGE",
    "SHIPPED_NUCLEATED_MODEL",
    "SHIPPED_SEGMENTER",
    "Box",
    "Cellpose3Backend",
    "NetworkOutputs",
    "Segmentation",
    "SegmentationError",
    "SegmentationParams",
    "SegmenterBackend",
    "available_memory_bytes",
    "cellpose3_masks",
    "cellpose_widths",
    "estimate_memory_bytes",
    "load_segmenter",
    "normalize_channels",
    "recompute_masks",
    "segment",
    "segment_steps",
    "segmenter_choices",
]

"""Model bundles (weights + metadata), architectures and the shipped demonstration models."""

from blastscope.models.bundle import (
    Bundle,
    BundleError,
    bundles_in,
    load_bundle,
    read_metadata,
    save_bundle,
    shipped_bundles,
)

__all__ = [
    "Bundle",
    "BundleError",
    "bundles_in",
    "load_bundle",
    "read_metadata",
    "save_bundle",
    "shipped_bundles",
]

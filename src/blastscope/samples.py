"""The sample fields that ship with blastscope (napari's File > Open Sample, the demo, tests)."""

from __future__ import annotations

from pathlib import Path

from blastscope.io import Field, read_field

SAMPLES_DIR = Path(__file__).parent / "data" / "samples"
BCCD_SAMPLE = SAMPLES_DIR / "bccd_BloodImage_00010.jpg"
BCCD_PIXEL_SIZE_UM = 0.08
"""µm per pixel of BCCD's 640x480 fields, which record none: isolated disc-shaped red cells
measure a median 95-100 px across (red-cell boxes 103 px) for a 7.5-8 µm erythrocyte."""
# One fixed seed per mutation class so that each sample looks the same every time.
SYNTHETIC_SAMPLE_SEEDS = {"PML::RARA": 11, "NPM1": 12, "CBFB::MYH11": 13, "RUNX1::RUNX1T1": 14}
SYNTHETIC_SAMPLE_SHAPE = (1024, 1024)


def bccd_sample() -> Field:
    """The shipped BCCD field (MIT licence, see data/samples/LICENSE-BCCD)."""
    return read_field(BCCD_SAMPLE, pixel_size_um=BCCD_PIXEL_SIZE_UM)


def synthetic_sample(mutation: str = "NPM1"):
    """The synthetic marrow smear sample of ``mutation`` (default preset, 1024x1024)."""
    from blastscope.synthetic import generate_field

    if mutation not in SYNTHETIC_SAMPLE_SEEDS:
        raise ValueError(
            f"No synthetic sample for {mutation!r}; choose one of "
            f"{', '.join(SYNTHETIC_SAMPLE_SEEDS)}."
        )
    return generate_field(
        SYNTHETIC_SAMPLE_SEEDS[mutation], "default", shape=SYNTHETIC_SAMPLE_SHAPE, mutation=mutation
    )

"""napari sample data: a synthetic marrow smear per mutation class and a real BCCD field."""

from __future__ import annotations

from functools import partial

from napari.types import LayerDataTuple

from blastscope.samples import bccd_sample, synthetic_sample


def _synthetic_smear(mutation: str) -> list[LayerDataTuple]:
    field = synthetic_sample(mutation)
    metadata = {"pixel_size_um": field.pixel_size_um, "synthetic_mutation": field.mutation}
    name = f"synthetic smear ({field.mutation})"
    scale = (field.pixel_size_um, field.pixel_size_um)
    return [
        (field.image, {"name": name, "rgb": True, "scale": scale, "metadata": metadata}, "image")
    ]


def bccd_field() -> list[LayerDataTuple]:
    """BCCD field BloodImage_00010 (normal blood, MIT licence)."""
    field = bccd_sample()
    scale = (field.pixel_size_um, field.pixel_size_um)
    metadata = {"pixel_size_um": field.pixel_size_um, "source": "BCCD (MIT licence)"}
    return [
        (
            field.image,
            {"name": "BCCD BloodImage_00010", "rgb": True, "scale": scale, "metadata": metadata},
            "image",
        )
    ]


synthetic_pml_rara = partial(_synthetic_smear, "PML::RARA")
synthetic_npm1 = partial(_synthetic_smear, "NPM1")
synthetic_cbfb_myh11 = partial(_synthetic_smear, "CBFB::MYH11")
synthetic_runx1_runx1t1 = partial(_synthetic_smear, "RUNX1::RUNX1T1")

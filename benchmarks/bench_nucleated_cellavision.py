"""Nucleated or not on CellaVision crops: the technologist's centre cell and the other objects.

    .venv/bin/python benchmarks/bench_nucleated_cellavision.py \\
        --cellavision DeepAPL/Data/All --patients DeepAPL/Data/master.csv --cohort Discovery

A CellaVision crop is centred on the cell a technologist signed; the other whole objects in it
are mostly red cells. A seeded sample of signed crops (cell types the map keeps: blast or
non-blast) is segmented with the shipped segmenter at the export's pixel size, every object is
sorted by the nucleated model (``smear-nucleated``) and by the stain heuristic, and this prints,
for each: the share of crops whose centre object is called nucleated (target >= 0.95), per cell
type, and the share of whole off-centre objects called nucleated (target <= 0.05).
``--table PATH`` writes one row per object (Parquet) for a closer look.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from blastscope.io import read_field
from blastscope.pipeline import sort_cells_steps
from blastscope.progress import run_steps
from blastscope.segment import SegmentationParams, segment
from blastscope.train.cellavision import index_export, read_patients

CELLAVISION_PIXEL_SIZE_UM = 0.1057
"""DeepAPL's crops, measured from red cells by the reader (docs/benchmarks.md, "The reader")."""


def crop_objects(path: str, pixel_size_um: float, params: SegmentationParams) -> pd.DataFrame:
    """Every object of one crop: the model's and the heuristic's call, centre or off-centre,
    whole or cut by the crop's edge."""
    image = read_field(path, pixel_size_um).image
    labels = segment(image, pixel_size_um, params).labels
    model = run_steps(sort_cells_steps(image, labels, pixel_size_um, params))
    heuristic = run_steps(
        sort_cells_steps(image, labels, pixel_size_um, SegmentationParams(nucleated_model=None))
    )
    height, width = labels.shape
    centre = labels[height // 2, width // 2]
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    table = model[["label", "area_um2", "p_nucleated", "object_class", "is_nucleated"]].copy()
    table["heuristic_nucleated"] = heuristic["is_nucleated"].to_numpy()
    table["nuclear_fraction"] = heuristic["nuclear_fraction"].to_numpy()
    table["centre"] = table["label"].to_numpy() == centre
    table["whole"] = ~np.isin(table["label"].to_numpy(), edge)
    table["path"] = path
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cellavision", type=Path, required=True)
    parser.add_argument("--patients", type=Path, required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--n", type=int, default=500, help="crops sampled (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixel-size", type=float, default=CELLAVISION_PIXEL_SIZE_UM)
    parser.add_argument("--nucleated-model", default="smear-nucleated")
    parser.add_argument("--table", type=Path, default=None)
    args = parser.parse_args()
    patients = read_patients(
        args.patients, id_column="Patient_ID", label_column="Diagnosis", cohort=args.cohort
    )
    export = index_export(args.cellavision, patients).cells
    kept = export[export["cell_class"] != "exclude"]
    sample = kept.sample(n=min(args.n, len(kept)), random_state=args.seed)
    params = SegmentationParams(device="cpu", nucleated_model=args.nucleated_model)
    rows = []
    for path, cell_type in zip(sample["path"], sample["cell_type"], strict=True):
        objects = crop_objects(path, args.pixel_size, params)
        objects["cell_type"] = cell_type
        rows.append(objects)
    table = pd.concat(rows, ignore_index=True)
    if args.table:
        table.to_parquet(args.table)
    centre = table[table["centre"]]
    off = table[~table["centre"] & table["whole"]]
    n_crops = len(sample)
    print(f"{n_crops} signed crops of {args.cohort}, {args.pixel_size} µm/px")
    print(f"{'':<30} {'model':>7} {'heuristic':>10}")
    print(
        f"{'centre object nucleated':<30} {centre['is_nucleated'].sum() / n_crops:>7.3f} "
        f"{centre['heuristic_nucleated'].sum() / n_crops:>10.3f}"
    )
    print(
        f"{'whole off-centre nucleated':<30} {off['is_nucleated'].mean():>7.3f} "
        f"{off['heuristic_nucleated'].mean():>10.3f}   ({len(off)} objects)"
    )
    print("\ncentre object called nucleated by the model, per cell type")
    found = centre.groupby("cell_type")["is_nucleated"].sum()
    crops = sample.groupby("cell_type").size()
    for cell_type, count in crops.sort_values(ascending=False).items():
        print(f"  {cell_type:<32} {int(found.get(cell_type, 0)):>4} of {count:>4}")


if __name__ == "__main__":
    main()

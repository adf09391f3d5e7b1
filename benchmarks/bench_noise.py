"""The noise benchmark: clean held-out accuracy under injected label noise, per training method.

    nice -n 10 .venv/bin/python benchmarks/bench_noise.py            # full run (see the sizes)
    nice -n 10 .venv/bin/python benchmarks/bench_noise.py --quick    # a few minutes

At the generator's ``default`` preset, for both models, with 0%, 20% and 40% symmetric label
noise injected into the training and validation labels, each method (plain cross-entropy and
every robust option) is trained with a fixed budget (epochs, crop size, data) on 3 seeds; the
table gives the test accuracy against the clean labels (mean ± sd over seeds).

- Blast model: nucleated cells of synthetic slides, labels blast / non-blast from the truth.
- Mutation model: the true blasts of synthetic slides (``--blast-filter truth``), each labelled
  with its slide's mutation (bag label). Its **injected** noise flips cell labels after they are
  inherited (symmetric, per cell, in the train and validation slides). On top of that comes the
  noise the bags carry anyway: a share of blasts (the preset's ``feature_absent_fraction``, 25%
  at ``default`` when this was written) show none of their subtype's features and the rest show
  them with varying strength, so a bag label is often not visible in the cell it is attached to.
  Clean accuracy is against the slide's true mutation; the slide call pools the test slides' blasts
  (:func:`blastscope.slide_call.call_slide`, mean pooling), and the target counts slides with at
  least 50 blasts.
- The split is by slide and the same for every run (the mutation model's test slides are a
  separate set of larger slides); a seed sets the network's initialisation,
  the shuffling / augmentation and the noise draw. Model selection (best epoch) uses the noisy
  validation labels only. Co-teaching gets the injected rate as its forget rate (the protocol of
  Han et al. 2018; the bag noise is not added to it).
- Sizes (full): blast 40 slides x 80 nucleated cells, 6 epochs; mutation 120 slides x 80
  nucleated cells (their true blasts; 85% of the slides train, 15% validate) and 24 held-out
  test slides x 240 nucleated cells, 6 epochs; 24 µm crops at 0.5 µm/px, ``blastnet`` at its
  default widths, batch 128, AdamW 2e-3 on a cosine. ``--quick``: fewer slides, 5 epochs,
  one seed, 0% and 20% noise. ``--epochs N`` trains longer (or shorter) on the same data and
  ``--rates`` picks the noise rates, e.g. ``--models blast --epochs 20 --rates 0,0.2``: with 6
  epochs and the best epoch chosen on validation, plain CE stops before it memorises the noise;
  ``--last-epoch`` scores the final weights instead, to see whether it memorises at all.
- Crops are rendered once and cached under ``benchmarks/results/noise_cache/`` (git-ignored),
  keyed by the sizes and a hash of the generator's source.

Each finished run is appended to ``benchmarks/results/noise[_quick]/runs.jsonl`` and an
interrupted benchmark resumes from there (``--fresh`` starts over). Writes
``benchmarks/results/noise[_quick].csv`` (one row per run) and ``.md`` (the table), and
prints the table and the targets: at 20% noise the best robust method within 2 points of the
noise-free model (plain CE at 0%) and at least 3 points above plain CE at 20%; the slide call
right on >= 95% of held-out slides with >= 50 blasts.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import blastscope.synthetic
from blastscope.classes import BLAST_CLASSES, MUTATION_CLASSES
from blastscope.progress import run_steps
from blastscope.train.augment import AugmentConfig
from blastscope.train.datasets import CellSet, Split, split_cells, synthetic_cells_steps
from blastscope.train.experiment import SLIDE_TARGET_MIN_BLASTS, NoiseSpec, run_experiment_steps
from blastscope.train.loop import TrainConfig
from blastscope.train.losses import METHODS

RESULTS = Path(__file__).parent / "results"
PRESET = "default"
WINDOW_UM = 24.0
PIXEL_SIZE_UM = 0.5


@dataclass(frozen=True)
class Sizes:
    """The fixed budget of one benchmark mode (slides x nucleated cells per slide, epochs)."""

    blast_slides: int
    blast_cells_per_slide: int
    blast_epochs: int
    mutation_slides: int
    mutation_cells_per_slide: int
    mutation_test_slides: int
    mutation_test_cells_per_slide: int
    mutation_epochs: int
    seeds: tuple[int, ...]
    rates: tuple[float, ...]


FULL = Sizes(40, 80, 6, 120, 80, 24, 240, 6, (0, 1, 2), (0.0, 0.2, 0.4))
QUICK = Sizes(24, 60, 5, 48, 50, 6, 200, 5, (0,), (0.0, 0.2))


def generator_version() -> str:
    """A short hash of the generator's source: a changed generator renders a new cache."""
    digest = hashlib.sha256()
    for path in sorted(Path(blastscope.synthetic.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def budget_signature(sizes: Sizes) -> str:
    """What a measured row depends on: the sizes and the generator's version."""
    return f"{sizes}-{generator_version()}"


def measured_rows(out: Path, sizes: Sizes) -> dict[tuple, dict]:
    """Rows of earlier (interrupted) runs of the same budget, by (model, method, rate, seed)."""
    log = out / "runs.jsonl"
    if not log.is_file():
        return {}
    rows = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.pop("budget", None) == budget_signature(sizes):
            rows[(row["model"], row["method"], row["noise_rate"], row["seed"])] = row
    return rows


def cached_cells(kind: str, n_slides: int, cells_per_slide: int, seed: int = 0) -> CellSet:
    """The synthetic cells of ``kind``, rendered once and kept in the cache folder."""
    cache = RESULTS / "noise_cache"
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{kind}-{PRESET}-{n_slides}x{cells_per_slide}-seed{seed}-{WINDOW_UM:g}um"
    path = cache / f"{stem}-{generator_version()}.npz"
    classes = BLAST_CLASSES if kind == "blast" else MUTATION_CLASSES
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        return CellSet(
            crops=stored["crops"],
            labels=stored["labels"],
            classes=classes,
            window_um=WINDOW_UM,
            pixel_size_um=PIXEL_SIZE_UM,
            slide_ids=stored["slide_ids"].astype(object),
            true_labels=stored["labels"].copy(),
            is_blast=stored["is_blast"],
            source=json.loads(str(stored["source"])),
        )
    started = time.perf_counter()
    cells = run_steps(
        synthetic_cells_steps(
            kind,
            PRESET,
            n_slides,
            cells_per_slide,
            seed=seed,
            window_um=WINDOW_UM,
            pixel_size_um=PIXEL_SIZE_UM,
            classes=classes,
        )
    )
    if kind == "mutation":  # the mutation model sees blasts only (truth filter)
        kept = cells.is_blast
        cells = cells.subset(kept)
        cells.source = {**cells.source, "blast_filter": "truth"}
    np.savez(
        path,
        crops=cells.crops,
        labels=cells.labels,
        slide_ids=cells.slide_ids.astype(str),
        is_blast=cells.is_blast,
        source=json.dumps(cells.source),
    )
    print(f"rendered {len(cells)} {kind} cells in {time.perf_counter() - started:.0f} s -> {path}")
    return cells


def concatenate(first: CellSet, second: CellSet) -> CellSet:
    """Two cell sets of the same classes and crops as one (slide ids must differ)."""
    return CellSet(
        crops=np.concatenate([first.crops, second.crops]),
        labels=np.concatenate([first.labels, second.labels]),
        classes=first.classes,
        window_um=first.window_um,
        pixel_size_um=first.pixel_size_um,
        slide_ids=np.concatenate([first.slide_ids, second.slide_ids]),
        true_labels=np.concatenate([first.true_labels, second.true_labels]),
        is_blast=np.concatenate([first.is_blast, second.is_blast]),
        source={"train_and_validation": first.source, "test": second.source},
    )


def blast_data(sizes: Sizes) -> tuple[CellSet, Split]:
    """Blast cells and their split by slide (15% validation, 20% test slides)."""
    cells = cached_cells("blast", sizes.blast_slides, sizes.blast_cells_per_slide)
    return cells, split_cells(cells, 0.15, 0.2, seed=0)


def mutation_data(sizes: Sizes) -> tuple[CellSet, Split]:
    """Blasts of many small slides (train 85% / validation 15% of the slides) and of a few large
    held-out test slides (so that most have >= 50 blasts for the slide-call target)."""
    pool = cached_cells("mutation", sizes.mutation_slides, sizes.mutation_cells_per_slide, seed=0)
    test = cached_cells(
        "mutation", sizes.mutation_test_slides, sizes.mutation_test_cells_per_slide, seed=1
    )
    rng = np.random.default_rng(0)
    val_slides = []
    for k in range(len(pool.classes)):
        slides = np.unique(pool.slide_ids[pool.labels == k].astype(str))
        val_slides += list(
            rng.choice(slides, size=max(1, round(0.15 * slides.size)), replace=False)
        )
    is_val = np.isin(pool.slide_ids.astype(str), val_slides)
    split = Split(
        train=np.flatnonzero(~is_val),
        val=np.flatnonzero(is_val),
        test=len(pool) + np.arange(len(test)),
        by="slide",
    )
    return concatenate(pool, test), split


def run_grid(
    kind: str,
    cells: CellSet,
    split: Split,
    epochs: int,
    sizes: Sizes,
    methods: list[str],
    out: Path,
    done: dict[tuple, dict],
    selection: str = "best",
) -> list[dict]:
    """Every (rate, method, seed) of one model; one result row each (``selection``: which
    epoch is scored, see ``TrainConfig.epoch_selection``).

    Rows already in ``done`` (keyed by model, method, rate, seed) are reused; each new row is
    appended to ``out/runs.jsonl`` as soon as it is measured, so an interrupted run resumes.
    """
    rows = []
    total = len(sizes.rates) * len(methods) * len(sizes.seeds)
    for rate in sizes.rates:
        for method in methods:
            for seed in sizes.seeds:
                if (kind, method, rate, seed) in done:
                    rows.append(done[(kind, method, rate, seed)])
                    continue
                started = time.perf_counter()
                config = TrainConfig(
                    method=method,
                    epochs=epochs,
                    batch_size=128,
                    learning_rate=2e-3,
                    forget_rate=rate if method == "coteaching" else None,
                    augment=AugmentConfig(),
                    seed=seed,
                    epoch_selection=selection,
                )
                result = run_steps(
                    run_experiment_steps(
                        cells,
                        config,
                        kind=kind,
                        out_dir=out / "runs" / f"{kind}-{method}-{rate:g}-{seed}",
                        noise=NoiseSpec(rate=rate, kind="symmetric", unit="cell", seed=seed),
                        split=split,
                        device="cpu",
                        write_bundle=False,
                    )
                )
                test = result.metrics["test"]
                row = {
                    "model": kind,
                    "method": method,
                    "noise_rate": rate,
                    "realised_noise": result.noise["realised_rate"],
                    "seed": seed,
                    "accuracy": test["accuracy"],
                    "balanced_accuracy": test["balanced_accuracy"],
                    "ece": test["ece"],
                    "best_epoch": result.trained.best_epoch,
                    "seconds": time.perf_counter() - started,
                }
                slides = result.metrics.get("test_slides", {})
                if kind == "mutation":
                    row["slide_accuracy_50"] = slides.get(
                        f"accuracy_slides_with_{SLIDE_TARGET_MIN_BLASTS}_blasts"
                    )
                    row["slides_50"] = slides.get(f"n_slides_with_{SLIDE_TARGET_MIN_BLASTS}_blasts")
                    row["slide_accuracy_of_calls"] = slides.get("accuracy_of_calls")
                else:
                    row["blast_percentage_mae"] = slides.get("blast_percentage_mean_abs_error")
                rows.append(row)
                with open(out / "runs.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row | {"budget": budget_signature(sizes)}) + "\n")
                print(
                    f"[{len(rows)}/{total}] {kind} {method:14s} noise {rate:.0%} seed {seed}: "
                    f"accuracy {row['accuracy']:.3f} ({row['seconds']:.0f} s)",
                    flush=True,
                )
    return rows


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = 100.0 * float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100.0 * float(np.std(values, ddof=1)):.1f}"


def table(rows: list[dict], kind: str, methods: list[str], rates: tuple[float, ...]) -> str:
    """Markdown table: clean test accuracy (%) per method and noise rate, mean ± sd over seeds."""
    header = "| method | " + " | ".join(f"{rate:.0%} noise" for rate in rates) + " |"
    rule = "|---" * (len(rates) + 1) + "|"

    def method_rows(key: str) -> list[str]:
        return [
            f"| {method} | "
            + " | ".join(
                _mean_sd(
                    [r[key] for r in rows if r["method"] == method and r["noise_rate"] == rate]
                )
                for rate in rates
            )
            + " |"
            for method in methods
        ]

    lines = [f"### {kind} model: clean held-out accuracy (%)", "", header, rule]
    lines += method_rows("accuracy")
    if kind == "mutation":
        lines += ["", f"Slide call right on slides with >= {SLIDE_TARGET_MIN_BLASTS} blasts (%):"]
        lines += ["", header, rule, *method_rows("slide_accuracy_50")]
    return "\n".join(lines)


def verdict(rows: list[dict], kind: str, methods: list[str]) -> list[str]:
    """The targets, measured: the 20% noise comparison and (mutation) the slide calls."""

    def mean(method: str, rate: float, key: str = "accuracy") -> float | None:
        values = [
            r[key]
            for r in rows
            if r["method"] == method and r["noise_rate"] == rate and r.get(key) is not None
        ]
        return float(np.mean(values)) if values else None

    lines = []
    clean = mean("ce", 0.0)
    noisy_ce = mean("ce", 0.2)
    robust = {m: mean(m, 0.2) for m in methods if m != "ce"}
    robust = {m: v for m, v in robust.items() if v is not None}
    if clean is not None and noisy_ce is not None and robust:
        best = max(robust, key=robust.get)
        versus_clean = 100.0 * (robust[best] - clean)
        gain = 100.0 * (robust[best] - noisy_ce)
        lines.append(
            f"{kind}: at 20% noise the best robust method is {best} at "
            f"{100 * robust[best]:.1f}%, {versus_clean:+.1f} points against the noise-free CE "
            f"model ({100 * clean:.1f}%; target: no more than 2 points below, "
            f"{'met' if versus_clean >= -2 else 'NOT met'}) and {gain:+.1f} points against CE "
            f"at 20% ({100 * noisy_ce:.1f}%; target >= +3, {'met' if gain >= 3 else 'NOT met'})."
        )
    if kind == "mutation":
        slides = max((r.get("slides_50") or 0 for r in rows), default=0)
        for rate in sorted({r["noise_rate"] for r in rows}):
            by_method = {m: mean(m, rate, "slide_accuracy_50") for m in methods}
            by_method = {m: v for m, v in by_method.items() if v is not None}
            if not by_method:
                continue
            best = max(by_method, key=by_method.get)
            ce = by_method.get("ce")
            lines.append(
                f"mutation slide calls at {rate:.0%} noise ({slides} held-out slides with >= "
                f"{SLIDE_TARGET_MIN_BLASTS} blasts, mean over seeds; target >= 95%): best "
                f"{best} {100 * by_method[best]:.1f}%"
                + (f", ce {100 * ce:.1f}%" if ce is not None else "")
                + "."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a few minutes)")
    parser.add_argument("--models", default="blast,mutation", help="blast, mutation or both")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="forget the runs measured before (no resume)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="train every model this many epochs instead of the mode's budget (a longer budget "
        "shows whether plain CE memorises the noise); results go to noise[_quick]_epochsN",
    )
    parser.add_argument(
        "--rates", help="comma-separated noise rates instead of the mode's (e.g. 0,0.2)"
    )
    parser.add_argument(
        "--last-epoch",
        action="store_true",
        help="score the final weights instead of the best validation epoch (shows memorisation); "
        "results go to ..._last",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    if args.epochs is not None:
        sizes = replace(sizes, blast_epochs=args.epochs, mutation_epochs=args.epochs)
    if args.rates:
        sizes = replace(sizes, rates=tuple(float(rate) for rate in args.rates.split(",")))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    name = (
        ("noise_quick" if args.quick else "noise")
        + (f"_epochs{args.epochs}" if args.epochs is not None else "")
        + ("_last" if args.last_epoch else "")
    )
    selection = "last" if args.last_epoch else "best"
    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        (out / "runs.jsonl").unlink(missing_ok=True)
    done = measured_rows(out, sizes)
    if done:
        print(f"resuming: {len(done)} runs of this budget were measured before", flush=True)
    started = time.perf_counter()
    all_rows: list[dict] = []
    report: list[str] = [
        f"Noise benchmark ({name}): preset {PRESET}, "
        f"{WINDOW_UM:g} µm crops at {PIXEL_SIZE_UM:g} µm/px, seeds {list(sizes.seeds)}, "
        "symmetric noise per cell in the train and validation labels.",
        "",
    ]
    for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
        cells, split = blast_data(sizes) if kind == "blast" else mutation_data(sizes)
        epochs = sizes.blast_epochs if kind == "blast" else sizes.mutation_epochs
        print(
            f"{kind}: {len(cells)} cells; train / val / test {split.train.size} / "
            f"{split.val.size} / {split.test.size} cells of "
            f"{len(set(cells.slide_ids[split.train]))} / {len(set(cells.slide_ids[split.val]))} / "
            f"{len(set(cells.slide_ids[split.test]))} slides; {epochs} epochs",
            flush=True,
        )
        report.append(
            f"{kind}: train / val / test {split.train.size} / {split.val.size} / "
            f"{split.test.size} cells, {epochs} epochs."
        )
        rows = run_grid(kind, cells, split, epochs, sizes, methods, out, done, selection)
        all_rows += rows
        report += [table(rows, kind, methods, sizes.rates), "", *verdict(rows, kind, methods), ""]
    elapsed = time.perf_counter() - started
    measured = sum(row["seconds"] for row in all_rows) / 60
    report.append(
        f"Wall time of this invocation {elapsed / 60:.1f} min; the runs themselves took "
        f"{measured:.1f} min in all, on {torch.get_num_threads()} CPU threads of a shared machine."
    )
    text = "\n".join(report)
    print()
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    columns = sorted({key for row in all_rows for key in row})
    with open(RESULTS / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(all_rows)
    print(f"wrote {RESULTS / (name + '.md')} and {RESULTS / (name + '.csv')}")


if __name__ == "__main__":
    main()

"""``blastscope crossval blast|mutation``: patient-grouped cross-validation on a real cohort.

Scores the blast classifier, or the mutation model under bag labels, by patient-grouped K-fold
cross-validation with inner patient splits for every choice (epoch, temperature, thresholds),
pooled out-of-fold scores and patient-bootstrap 95% intervals (:mod:`blastscope.train.crossval`).
Nothing is saved as a bundle: ``blastscope train`` makes the model, this measures the recipe.

Example (DeepAPL's Discovery cohort; the Validation cohort stays untouched)::

    blastscope crossval mutation --cellavision DeepAPL/Data/All --patients master.csv \\
        --id-column Patient_ID --label-column Diagnosis --cohort Discovery \\
        --label-names 'APL=PML::RARA,AML=other AML' --out runs/cv-mutation

Writes ``OUT/metrics.json``, ``OUT/summary.md``, ``OUT/cells.csv`` (out-of-fold scores per
cell), ``OUT/patients.csv`` (mutation: per patient and arm) and ``OUT/roc.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from blastscope.classes import BLAST_CLASSES
from blastscope.jsonable import dumps_json
from blastscope.progress import progress_bars, run_steps
from blastscope.train.crossval import (
    DEFAULT_FOLDS,
    DEFAULT_VAL_FRACTION,
    POOLINGS,
    Arm,
    CrossvalResult,
    crossval_blast_steps,
    crossval_mutation_steps,
    format_estimate,
    shortcut_audit,
)
from blastscope.train.datasets import DatasetError
from blastscope.train.evaluate import roc_curve
from blastscope.train.losses import METHODS
from blastscope.train.mutation import parse_classes
from blastscope.train.options import (
    add_data_arguments,
    add_training_arguments,
    load_cells,
    run_guarded,
    train_config,
)
from blastscope.train.resampling import DEFAULT_N_BOOTSTRAP

HELP = "patient-grouped cross-validation of the blast or mutation model on a real cohort"
DEFAULT_METHODS = ("ce", "gce", "sce", "bootstrap-hard", "coteaching")
PRIMARY_ARM = "gce+attention"
BASELINE_ARM = "ce+mean"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``crossval blast`` and ``crossval mutation`` as subcommands of ``parser``."""
    models = parser.add_subparsers(dest="crossval_model", required=True, metavar="MODEL")
    blast = models.add_parser(
        "blast", help="cross-validate the blast classifier", description=__doc__.split("\n\n")[1]
    )
    _add_shared(blast)
    blast.set_defaults(handler=run)
    mutation = models.add_parser(
        "mutation",
        help="cross-validate the mutation model under bag labels (patient AUC, MIL pooling)",
        description=__doc__.split("\n\n")[1],
    )
    _add_shared(mutation)
    mutation.set_defaults(handler=run)
    group = mutation.add_argument_group("mutation")
    group.add_argument("--classes", help="classes in logit order (default: the data's labels)")
    group.add_argument(
        "--positive-class", help="the class the patient AUC scores (default: the last class)"
    )
    group.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"training methods to run (default {','.join(DEFAULT_METHODS)})",
    )
    group.add_argument(
        "--poolings", default=",".join(POOLINGS), help="pooling of the cells into a patient call"
    )
    group.add_argument(
        "--primary",
        default=PRIMARY_ARM,
        help=f"the declared primary arm METHOD+POOLING (default {PRIMARY_ARM})",
    )
    group.add_argument(
        "--baseline", default=BASELINE_ARM, help=f"its comparator (default {BASELINE_ARM})"
    )
    group.add_argument(
        "--blast-filter",
        choices=("folder-map", "model"),
        default="folder-map",
        help="test cells pooled: the technologist's blast-equivalent cell types, or those a "
        "blast model trained inside the same fold calls blasts",
    )
    group.add_argument(
        "--min-blasts", type=int, default=5, help="the patient call abstains below this"
    )


def _add_shared(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, split_options=False)
    add_training_arguments(parser)
    group = parser.add_argument_group("cross-validation")
    group.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="outer patient folds")
    group.add_argument(
        "--inner-val-fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        help="share of each fold's training patients held back to choose epoch, temperature "
        "and thresholds",
    )
    group.add_argument(
        "--bootstrap", type=int, default=DEFAULT_N_BOOTSTRAP, help="patient resamples for CIs"
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder")


def _run(args: argparse.Namespace) -> int:
    if args.bootstrap < 100:
        raise DatasetError(f"--bootstrap needs at least 100 resamples, got {args.bootstrap}.")
    show = progress_bars()
    config = train_config(args, 2)
    if args.crossval_model == "blast":
        cells = load_cells(args, "blast", BLAST_CLASSES, show)
        result = run_steps(
            crossval_blast_steps(
                cells,
                config,
                n_folds=args.folds,
                val_fraction=args.inner_val_fraction,
                seed=args.seed,
                device=args.device,
                n_bootstrap=args.bootstrap,
            ),
            show,
        )
    else:
        cells = load_cells(args, "mutation", parse_classes(args.classes), show)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise DatasetError(f"Unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}.")
        poolings = [p.strip() for p in args.poolings.split(",") if p.strip()]
        n_classes = len(cells.classes)
        mutation_config = train_config(args, n_classes)
        configs = {
            method: dataclasses.replace(
                mutation_config,
                method=method,
                loss_params=mutation_config.loss_params if method == args.method else {},
            )
            for method in methods
        }
        result = run_steps(
            crossval_mutation_steps(
                cells,
                configs,
                poolings=poolings,
                primary=Arm.parse(args.primary),
                baseline=Arm.parse(args.baseline),
                positive_class=args.positive_class,
                blast_filter=args.blast_filter,
                blast_config=config,
                min_blasts=args.min_blasts,
                n_folds=args.folds,
                val_fraction=args.inner_val_fraction,
                seed=args.seed,
                device=args.device,
                n_bootstrap=args.bootstrap,
            ),
            show,
        )
    if args.crossval_model == "mutation" and args.cellavision:
        result.metrics["shortcut_audit"] = shortcut_audit(
            cells, result.patients, args.primary, result.metrics["positive_class"], args.min_blasts
        )
    result.metrics["data"] = cells.source
    result.metrics["command"] = getattr(args, "command_line", None)
    summary = write_crossval_report(args.out, result, args.crossval_model)
    print(summary)
    print(f"report: {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Cross-validate; 0 on success, 2 on bad input."""
    return run_guarded(_run, args)


def write_crossval_report(out_dir: Path, result: CrossvalResult, kind: str) -> str:
    """Write metrics.json, summary.md, cells.csv, patients.csv and roc.png; the summary text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.metrics["folds"] = result.folds
    (out_dir / "metrics.json").write_text(
        dumps_json(result.metrics, where="the metrics") + "\n", encoding="utf-8"
    )
    result.cells.to_csv(out_dir / "cells.csv", index=False)
    if result.patients is not None:
        result.patients.to_csv(out_dir / "patients.csv", index=False)
    summary = blast_summary(result.metrics) if kind == "blast" else mutation_summary(result.metrics)
    (out_dir / "summary.md").write_text(summary + "\n", encoding="utf-8")
    _plot_roc(result, kind, out_dir / "roc.png")
    return summary


def blast_summary(metrics: dict[str, Any]) -> str:
    """The blast cross-validation as Markdown: headline metrics and calls per cell type."""
    lines = [
        f"Blast classifier, {metrics['protocol']['outer_folds']}-fold patient-grouped "
        f"cross-validation: {metrics['n_cells']} cells of {metrics['n_patients']} patients "
        "(out-of-fold, thresholds chosen on inner validation patients; 95% patient-bootstrap "
        "intervals)",
        "",
        "| metric | value [95% CI] |",
        "|---|---|",
    ]
    for name in ("balanced_accuracy", "recall", "false_positive_rate", "auc", "ece", "accuracy"):
        lines.append(f"| {name.replace('_', ' ')} | {format_estimate(metrics[name])} |")
    if "called_blast" in metrics:
        lines += ["", *call_rate_table(metrics["called_blast"])]
    return "\n".join(lines)


def call_rate_table(rates: dict[str, Any]) -> list[str]:
    """Markdown rows: per cell type, the share called blast, overall and per patient label."""
    by_label = rates.get("by_cell_type_and_label", {})
    labels = sorted({key.split(" | ")[1] for key in by_label})
    lines = [
        "| cell type | n | called blast | " + " | ".join(f"in {label}" for label in labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    for cell_type, row in rates["by_cell_type"].items():
        shares = [by_label.get(f"{cell_type} | {label}") for label in labels]
        lines.append(
            f"| {cell_type} | {row['n']} | {row['share_called_blast']:.2f} | "
            + " | ".join(
                "" if s is None else f"{s['share_called_blast']:.2f} ({s['n']})" for s in shares
            )
            + " |"
        )
    return lines


def mutation_summary(metrics: dict[str, Any]) -> str:
    """The mutation cross-validation as Markdown: the primary comparison, every arm, the
    minimum-blasts table and the cell-level AUCs."""
    comparison = metrics["primary_comparison"]
    protocol = metrics["protocol"]
    positive = metrics["positive_class"]
    lines = [
        f"Mutation model under bag labels, {protocol['outer_folds']}-fold patient-grouped "
        f"cross-validation; positive class {positive}; blasts by {protocol['blast_filter']}; "
        f"calls need >= {protocol['min_blasts']} blasts.",
        "",
        f"**Primary comparison (declared in advance): {comparison['primary']} vs "
        f"{comparison['baseline']}**: patient AUC difference "
        f"{format_estimate(comparison['delta_auc_called'])} (paired patient bootstrap; one-sided "
        f"p = {comparison['p_value_one_sided']:.3f}): {comparison['verdict']}.",
        "",
        "| arm | patient AUC (called) | AUC (all, abstain = 0.5) | sensitivity at 90% "
        "specificity | in-fold operating point sens / spec | abstained |",
        "|---|---|---|---|---|---|",
    ]
    for arm, values in sorted(metrics["arms"].items()):
        marker = " (primary)" if arm == comparison["primary"] else ""
        marker = " (baseline)" if arm == comparison["baseline"] else marker
        lines.append(
            f"| {arm}{marker} | {format_estimate(values['auc_called'])} | "
            f"{format_estimate(values['auc_all'])} | "
            f"{format_estimate(values['sensitivity_at_90_specificity'], 2)} | "
            f"{format_estimate(values['operating_point_sensitivity'], 2)} / "
            f"{format_estimate(values['operating_point_specificity'], 2)} | "
            f"{values['n_patients'] - values['n_called']} of {values['n_patients']} "
            f"({', '.join(f'{k} {v}' for k, v in values['abstained_by_truth'].items())}) |"
        )
    lines += [
        "",
        f"Minimum number of blasts ({comparison['primary']}):",
        "",
        "| min blasts | abstained | abstained " + positive + " | AUC called | AUC all | "
        "sens at 90% spec |",
        "|---|---|---|---|---|---|",
    ]
    for row in metrics["min_blasts_table"]:
        lines.append(
            f"| {row['min_blasts']} | {row['abstention_rate']:.2f} | "
            f"{row['abstained_positive']} | {_number(row['auc_called'])} | "
            f"{_number(row['auc_all'])} | {_number(row['sensitivity_at_90_specificity'], 2)} |"
        )
    lines += ["", "Cell-level AUC against the inherited (noisy) labels:", ""]
    for method, values in metrics["cell_auc_against_inherited_labels"].items():
        lines.append(f"- {method}: {format_estimate(values)}")
    if "shortcut_audit" in metrics:
        lines += ["", *shortcut_lines(metrics["shortcut_audit"], positive)]
    return "\n".join(lines)


def shortcut_lines(audit: dict[str, Any], positive: str) -> list[str]:
    """The shortcut audit as Markdown."""
    lines = [
        "Shortcut audit (properties of the export, not of the disease):",
        "",
        f"| property | AUC alone ({positive} vs rest) | mean in {positive} | mean in others |",
        "|---|---|---|---|",
    ]
    for name, row in audit["properties"].items():
        lines.append(
            f"| {name.replace('_', ' ')} | {_number(row['auc_alone'])} | "
            f"{row['mean_in_positive']:.2f} | {row['mean_in_others']:.2f} |"
        )
    lines.append("")
    for key, words in (
        ("auc_all_called", "all called patients"),
        ("auc_without_extra_folder_level", "patients without an extra folder level"),
        ("auc_with_modal_image_height", "patients whose images have the usual height"),
    ):
        row = audit[key]
        lines.append(
            f"- {audit['arm']} patient AUC, {words}: {_number(row['auc'])} "
            f"({row['patients']} patients, {row['positive']} {positive})"
        )
    reaches = "reaches" if audit["image_size_reaches_network"] else "never reaches"
    lines.append(
        f"- crop window {audit['crop_window_px_in_source']:.0f} px of the source images, "
        f"smallest image side {audit['smallest_image_side_px']:.0f} px: the image size "
        f"{reaches} the network"
    )
    return lines


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _plot_roc(result: CrossvalResult, kind: str, path: Path) -> None:
    figure = Figure(figsize=(5.2, 4.8))
    axes = figure.add_subplot()
    if kind == "blast":
        table = result.cells
        fpr, tpr, area = roc_curve(table["p_blast"].to_numpy(), table["truth"].to_numpy(bool))
        axes.plot(fpr, tpr, label=f"cells (AUC {area:.3f})")
        axes.set_title("Blast classifier, out-of-fold")
    else:
        positive = result.metrics["positive_class"]
        for arm, rows in result.patients.groupby("arm"):
            score = rows[f"p_{positive}"].to_numpy(np.float64)
            called = np.isfinite(score) & (
                rows["n_blasts"] >= result.metrics["protocol"]["min_blasts"]
            )
            fpr, tpr, area = roc_curve(
                score[called], (rows["truth"] == positive).to_numpy()[called]
            )
            axes.plot(fpr, tpr, label=f"{arm} ({area:.3f})", linewidth=1)
        axes.set_title(f"Patients ({positive} vs rest), out-of-fold")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("true-positive rate")
    axes.legend(loc="lower right", fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)

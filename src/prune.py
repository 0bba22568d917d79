"""Pruning sweep of trained networks: ``python -m src.prune <checkpoint> [<checkpoint> ...] --sparsities ...``.

L1 magnitude pruning (``src.analysis.magnitude_pruning``) of each checkpoint at each sparsity, measured on the test
split, with the controls a reader needs to interpret it:

* ``--scope global layer`` (default both): ``global`` ranks all weights together, ``layer`` prunes
  every layer by the same fraction (the uniform baseline);
* a random control (default on; ``--no-random-control``): the same number of weights removed from
  every layer as its magnitude twin, drawn at random (``--seed``);
* BN statistics re-estimated on ``--bn-batches`` training batches after pruning (default on;
  ``--no-bn-recalibrate``); ``acc_original_bn`` keeps the accuracy with the intact statistics. The
  default is 50 batches, or 10 for a quick look (``--limit-batches``): those forward passes are most of the
  command's time, and on a few hundred test images 10 batches move an accuracy far less than the test
  images' own sampling error does (BENCHMARKS.md); every row records ``bn_batches``;
* an optional fine-tune (``--finetune-steps``, recorded in every row; 0 when off), masks held fixed;
* collapse flagged: a layer at least 99% pruned, or predictions collapsed to one class.

Several checkpoints (a ResNet and its plain twin of the same size) share the figures. Writes into
the first checkpoint's ``<run>/prune/`` (or ``--out``), never overwriting earlier results (a
second run writes ``prune-1.*``):

* ``prune.csv``: one row per model, scope, method, sparsity (columns: see
  ``src.analysis.magnitude_pruning.prune_study``);
* ``prune_layers.csv``: one row per model, scope, method, sparsity and prunable layer (``layer``,
  ``index``, ``kind``, ``weights``, ``pruned``, ``layer_sparsity``, ``collapsed``);
* ``prune.md``: the settings, the command that regenerates it, the collapse findings, the accuracy table and
  per-layer sparsity tables;
* ``prune.png``: accuracy against remaining parameters, each net with its controls;
* ``prune_layers.png``: the fraction of each layer pruned at each overall sparsity.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from src.analysis.checkpoint import load as _load
from src.analysis.checkpoint import output_dir, pick_device, split_loader
from src.analysis.evaluate import EVALUATION
from src.analysis.magnitude_pruning import (
    LAYER_COLLAPSE,
    check_sparsities,
    collapse_findings,
    prune_study,
    sgd_finetune,
)
from src.analysis.plots import plot_pruning, plot_pruning_layers
from src.data import DatasetNotFoundError
from src.models import parse_arch
from src.modules.batchnorm_stats import DEFAULT_BN_BATCHES, QUICK_LOOK_BN_BATCHES
from src.modules.pruning import SCOPES, check_scopes
from src.table_files import format_table, free_stem, markdown_table, with_suffix, write_csv

DEFAULT_SPARSITIES = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
FILES = ("prune.csv", "prune_layers.csv", "prune.md", "prune.png", "prune_layers.png")
SUMMARY_COLUMNS = ["model", "scope", "method", "sparsity", "remaining_params", "max_layer_sparsity",
                   "acc_original_bn", "acc", "top_class_share", "finetune_steps", "acc_finetuned"]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m src.prune",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],  # what each option does and the files written
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="+", help=".ckpt files written by python -m src.cli fit")
    parser.add_argument("--sparsities", type=float, nargs="+", default=DEFAULT_SPARSITIES,
                        help="fractions of prunable weights to zero, each in [0, 1)")  # fmt: skip
    parser.add_argument("--scope", nargs="+", default=list(SCOPES), metavar="{global,layer}",
                        help="global: rank all weights together; layer: the same fraction of every layer "
                             "(default: both)")  # fmt: skip
    parser.add_argument(
        "--no-random-control",
        dest="random_control",
        action="store_false",
        help="skip the random control (same per-layer counts as the magnitude mask, random weights)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random control and of the training batches")
    parser.add_argument(
        "--no-bn-recalibrate",
        dest="bn_recalibrate",
        action="store_false",
        help="keep the intact network's BN statistics (default: re-estimate them after pruning)",
    )
    parser.add_argument(
        "--bn-batches",
        type=int,
        help=f"training batches to re-estimate BN statistics on (default {DEFAULT_BN_BATCHES}; "
        f"{QUICK_LOOK_BN_BATCHES} with --limit-batches, a quick look)",
    )
    parser.add_argument("--finetune-steps", type=int, default=0, help="SGD steps on the train split after pruning")
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="learning rate of the fine-tune")
    parser.add_argument("--config", help="YAML with a data: section (default: the data each checkpoint carries)")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="split to measure on")
    parser.add_argument(
        "--limit-batches",
        type=int,
        help="evaluate on the first N batches only (quick looks; folder splits are in a seeded order of all classes)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", help="output directory (default: <run of the first checkpoint>/prune)")
    args = parser.parse_args(argv)
    if args.bn_batches is None:  # a quick look re-estimates on fewer batches too (its time is mostly these passes)
        args.bn_batches = QUICK_LOOK_BN_BATCHES if args.limit_batches else DEFAULT_BN_BATCHES
    return args


def _label(model: Any, checkpoint: str, taken: set[str]) -> str:
    hparams = model.hparams
    try:
        residual = parse_arch(hparams.arch)[1]  # a plain net has no shortcut, whatever the config said
    except ValueError:  # a net plugged in by class path (model.net_class): no shortcut option to name
        residual = False
    label = hparams.arch + (f" ({hparams.shortcut})" if residual and hparams.get("shortcut") else "")
    return label if label not in taken else f"{label} [{checkpoint}]"


def _check(args: argparse.Namespace) -> None:
    check_sparsities(args.sparsities)
    check_scopes(args.scope)
    if args.finetune_steps < 0:
        raise ValueError(f"--finetune-steps must be >= 0, got {args.finetune_steps}")
    if args.bn_batches < 1:
        raise ValueError(f"--bn-batches must be >= 1, got {args.bn_batches}")


def _layer_tables(layers: list[dict[str, Any]]) -> list[str]:
    """Per model and scope: layers as rows, overall sparsities as columns (magnitude masks)."""
    lines = []
    for model in dict.fromkeys(row["model"] for row in layers):
        for scope in dict.fromkeys(row["scope"] for row in layers if row["model"] == model):
            rows = [r for r in layers if r["model"] == model and r["scope"] == scope and r["method"] == "magnitude"]
            table: dict[Any, dict[str, Any]] = {}
            for row in rows:
                entry = table.setdefault(row["index"], {"layer": row["layer"], "kind": row["kind"],
                                                         "weights": row["weights"]})  # fmt: skip
                mark = " ⚠" if row["collapsed"] else ""
                entry[f"{row['sparsity']:g}"] = f"{row['layer_sparsity']:.1%}{mark}"
            lines += [f"### {model}: {scope} scope", "", markdown_table([table[i] for i in sorted(table)]), ""]
    return lines


def _markdown(
    args: argparse.Namespace, rows: list[dict], layers: list[dict], device: torch.device, argv: list[str]
) -> str:
    findings = collapse_findings(rows)
    used = sorted({row["bn_batches"] for row in rows if row.get("bn_batches")})
    batches = " / ".join(str(count) for count in used) or str(args.bn_batches)
    bn = f"re-estimated on {batches} training batches" if args.bn_recalibrate else "the intact network's"
    if args.bn_recalibrate and used and used != [args.bn_batches]:
        bn += f" (--bn-batches {args.bn_batches}: the training split has fewer)"
    if args.bn_recalibrate and args.limit_batches and args.bn_batches < DEFAULT_BN_BATCHES:
        bn += f" (a quick look; --bn-batches {DEFAULT_BN_BATCHES} for the full estimate)"
    samples = sorted({row["samples"] for row in rows if row.get("samples")})
    images = " / ".join(f"{count:,}" for count in samples)
    tuned = sorted({row["finetune_images"] for row in rows if row.get("finetune_images")})
    settings = (
        f"Split: {args.split}, {images} images"
        + (f" (first {args.limit_batches} batches)" if args.limit_batches else "")
        + f". Scopes: {', '.join(args.scope)}. Random control: "
        + (f"on (seed {args.seed})" if args.random_control else "off")
        + f". BN statistics: {bn}. Fine-tuning: {args.finetune_steps} steps"
        + (f" of {tuned[0] // args.finetune_steps:,} images ({', '.join(f'{n:,}' for n in tuned)} images in all), "
           f"lr {args.finetune_lr}" if args.finetune_steps and tuned else "")
        + f". Device: {device}. Accuracy: {EVALUATION}."
    )  # fmt: skip
    columns = [c for c in SUMMARY_COLUMNS if args.finetune_steps or c != "acc_finetuned"]
    command = shlex.join(["python", "-m", "src.prune", *argv])
    lines = ["# Pruning sweep", "", settings, "", f"Regenerate with: `{command}`", "", "## Collapse", ""]
    lines += [f"- {finding}" for finding in findings] or [
        f"No layer is {LAYER_COLLAPSE:.0%} pruned or more, and no network predicts one class for everything."
    ]
    lines += ["", "## Accuracy", "", markdown_table(rows, columns), ""]
    lines += [
        "## Per-layer sparsity",
        "",
        "Fraction of each prunable layer's weights removed by the magnitude mask (the random control removes the "
        f"same number from every layer). ⚠: at least {LAYER_COLLAPSE:.0%} pruned.",
        "",
        *_layer_tables(layers),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Run the sweep; return the paths written (``table``, ``layers``, ``markdown``, ``figure``, ``layers_figure``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    curves: dict[str, list[dict]] = {}
    layer_curves: dict[str, list[dict]] = {}
    try:
        _check(args)
        out = Path(args.out or output_dir(args.checkpoints[0], "prune"))  # refused now, not after the sweep
        device = pick_device(args.device)
        for checkpoint in args.checkpoints:
            torch.manual_seed(args.seed)  # the order of the training batches (BN statistics, fine-tune)
            model, datamodule = _load(checkpoint, args.config)
            net = model.model.to(device)
            loader = split_loader(datamodule, args.split)
            train = split_loader(datamodule, "train") if args.bn_recalibrate or args.finetune_steps else None
            finetune = None
            if args.finetune_steps and train is not None:  # train is loaded whenever finetune_steps is set
                finetune = sgd_finetune(train, args.finetune_steps, lr=args.finetune_lr, device=device, seed=args.seed)
            study = prune_study(
                net, loader, args.sparsities, finetune, device, args.limit_batches, scopes=args.scope,
                random_control=args.random_control, seed=args.seed,
                bn_loader=train if args.bn_recalibrate else None, bn_batches=args.bn_batches,
            )  # fmt: skip
            label = _label(model, checkpoint, set(curves))
            images_per_step = getattr(train, "batch_size", None) or 0
            curves[label] = [
                {
                    "model": label,
                    "checkpoint": checkpoint,
                    "split": args.split,
                    **row,
                    "finetune_images": row["finetune_steps"] * images_per_step,
                }  # fmt: skip
                for row in study.rows
            ]
            layer_curves[label] = [{"model": label, **row} for row in study.layers]
            rows += curves[label]
            layers += layer_curves[label]
            print(format_table(curves[label], SUMMARY_COLUMNS), end="\n\n")
    except (ValueError, DatasetNotFoundError, FileNotFoundError) as error:  # CheckpointError too
        raise SystemExit(f"error: {error}") from None

    os.makedirs(out, exist_ok=True)
    suffix = free_stem(out, FILES)
    name = {file: with_suffix(file, suffix) for file in FILES}
    paths = {
        "table": write_csv(rows, out, name["prune.csv"]),
        "layers": write_csv(layers, out, name["prune_layers.csv"]),
        "markdown": str(out / name["prune.md"]),
        "figure": str(out / name["prune.png"]),
        "layers_figure": str(out / name["prune_layers.png"]),
    }
    with open(paths["markdown"], "x") as handle:  # "x": never overwrite
        handle.write(_markdown(args, rows, layers, device, argv) + "\n")
    plot_pruning(curves, paths["figure"])
    plot_pruning_layers(layer_curves, paths["layers_figure"])
    for finding in collapse_findings(rows):
        print(f"collapse: {finding}")
    print("wrote " + ", ".join(paths.values()))
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])

"""Pruning sweep of trained networks: ``python -m src.prune <checkpoint> [<checkpoint> ...] --sparsities ...``.

Global magnitude pruning (``src.study.prune``) of each checkpoint at each sparsity, optionally
with a short fine-tune, measured on the test split. Several checkpoints (a ResNet and its plain
twin of the same size) share one plot of accuracy against remaining parameters. Writes
``prune.csv`` and ``prune.png`` into the first checkpoint's ``<run>/prune/`` (or ``--out``),
never overwriting earlier results.
"""

from __future__ import annotations

import argparse
import sys

from src.data import DatasetNotFoundError
from src.models import parse_arch
from src.study.checkpoint import load as _load
from src.study.checkpoint import output_dir, pick_device, split_loader
from src.study.plots import plot_pruning
from src.study.prune import check_sparsities, prune_sweep, sgd_finetune
from src.study.tables import format_table, free_path, write_csv

DEFAULT_SPARSITIES = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help=".ckpt files written by python -m src.cli fit")
    parser.add_argument("--sparsities", type=float, nargs="+", default=DEFAULT_SPARSITIES,
                        help="fractions of prunable weights to zero, each in [0, 1)")  # fmt: skip
    parser.add_argument("--finetune-steps", type=int, default=0, help="SGD steps on the train split after pruning")
    parser.add_argument("--finetune-lr", type=float, default=0.01, help="learning rate of the fine-tune")
    parser.add_argument("--config", help="YAML with a data: section (default: the data each checkpoint carries)")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="split to measure on")
    parser.add_argument("--limit-batches", type=int, help="evaluate on the first N batches only (quick looks)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", help="output directory (default: <run of the first checkpoint>/prune)")
    return parser.parse_args(argv)


def _label(model: object, checkpoint: str, taken: set[str]) -> str:
    hparams = model.hparams
    residual = parse_arch(hparams.arch)[1]  # a plain net has no shortcut, whatever the config said
    label = hparams.arch + (f" ({hparams.shortcut})" if residual and hparams.get("shortcut") else "")
    return label if label not in taken else f"{label} [{checkpoint}]"


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Run the sweep; return the paths written (``table``, ``figure``)."""
    args = parse_args(argv)
    curves: dict[str, list[dict]] = {}
    try:
        sparsities = check_sparsities(args.sparsities)
        if args.finetune_steps < 0:
            raise ValueError(f"--finetune-steps must be >= 0, got {args.finetune_steps}")
        device = pick_device(args.device)
        for checkpoint in args.checkpoints:
            model, datamodule = _load(checkpoint, args.config)
            net = model.model.to(device)
            loader = split_loader(datamodule, args.split)
            finetune = None
            if args.finetune_steps:
                train = split_loader(datamodule, "train")
                finetune = sgd_finetune(train, args.finetune_steps, lr=args.finetune_lr, device=device)
            rows = prune_sweep(net, loader, sparsities, finetune, device, args.limit_batches)
            label = _label(model, checkpoint, set(curves))
            curves[label] = [{"model": label, "checkpoint": checkpoint, **row} for row in rows]
            print(format_table(curves[label]), end="\n\n")
    except (ValueError, DatasetNotFoundError, FileNotFoundError) as error:  # CheckpointError too
        raise SystemExit(f"error: {error}") from None

    out = args.out or output_dir(args.checkpoints[0], "prune")
    paths = {"table": write_csv([row for rows in curves.values() for row in rows], out, "prune.csv")}
    paths["figure"] = free_path(out, "prune.png")
    plot_pruning(curves, paths["figure"])
    print(f"wrote {paths['table']}, {paths['figure']}")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])

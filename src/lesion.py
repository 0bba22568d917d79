"""Block-lesion study of a trained network: ``python -m src.lesion <checkpoint>``.

Removes each block in turn and records the test accuracy, then removes ``k`` random blocks
(several seeded draws per ``k``). A residual block keeps its shortcut; a plain block whose input
and output shapes match is skipped (replaced by the identity, Veit et al.'s control for plain
networks); a plain downsampling block cannot be removed and its row says so. See
``src.analysis.block_lesions`` for what removing a block means exactly.

Options beyond the defaults:

* ``--include-downsampling``: random draws may pick the downsampling blocks too (by default they
  are left out: they change the representation's shape, and Veit et al. treat them apart);
  refused for a plain network, whose downsampling blocks cannot be removed;
* ``--bn-reestimate`` (with ``--bn-batches``): re-estimate BN statistics on training batches after
  each removal (and for the intact baseline), on a copy of the network.

Writes into ``<run>/lesion/`` (or ``--out``), never overwriting earlier results (a second run
writes ``lesion-1.*``):

* ``lesion.csv``: one row per block (``removed``, ``block_index``, ``stage``, ``shortcut``,
  ``downsampling``, ``replaced_by``, ``acc``, ``acc_drop``, ``bn_reestimated``, ``note``);
* ``lesion_stages.csv``: per stage, downsampling blocks apart: ``blocks``, ``removed``,
  ``drop_mean``, ``drop_std`` (ddof = 1), ``drop_min``, ``drop_max``;
* ``lesion_random.csv``: one row per draw (``k``, ``trial``, ``removed``, ``acc``, ``acc_drop``,
  ``bn_reestimated``);
* ``lesion_random_summary.csv``: per ``k``: ``n`` draws, ``acc_mean``, ``acc_std`` (ddof = 1),
  ``acc_min``, ``acc_max``, ``drop_mean``, ``drop_std``;
* ``lesion.png``: single-block lesions and the random-k curve (mean ± sample std, n per k);
* ``lesion.json``: how it was measured -- the command line, checkpoint, split, images evaluated, the
  draws' settings -- so a committed lesion says how to regenerate it (``python -m src.report`` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from src.analysis.block_lesions import (
    check_draws,
    draw_pool,
    lesion_study,
    random_lesions,
    random_summary,
    stage_summary,
)
from src.analysis.checkpoint import load as _load
from src.analysis.checkpoint import output_dir, pick_device, split_loader
from src.analysis.evaluate import EVALUATION
from src.analysis.plots import plot_lesion
from src.data import DatasetNotFoundError
from src.modules.batchnorm_stats import DEFAULT_BN_BATCHES
from src.table_files import format_table, free_stem, with_suffix, write_csv

FILES = (
    "lesion.csv",
    "lesion_stages.csv",
    "lesion_random.csv",
    "lesion_random_summary.csv",
    "lesion.png",
    "lesion.json",
)


def default_ks(blocks: int) -> list[int]:
    """Up to 8 values of k from 1 to half the blocks (Veit et al. remove up to ~20 of 54)."""
    top = max(1, blocks // 2)
    return sorted({max(1, round(1 + i * (top - 1) / 7)) for i in range(8)})


def samples_evaluated(loader: Any, limit_batches: int | None) -> int | None:
    """How many images each evaluation sees: the split, or its first ``limit_batches`` batches."""
    try:
        size, batch = len(loader.dataset), loader.batch_size
    except (AttributeError, TypeError):
        return None
    if limit_batches is None:
        return size
    return min(size, limit_batches * batch) if batch else None


def settings_record(
    args: argparse.Namespace, argv: list[str], arch: str, ks: list[int], samples: int | None, bn_batches: int | None
) -> dict:
    """``lesion.json``: what was measured and the command that measures it again. ``bn_batches``: the training
    batches BN was re-estimated on (fewer than ``--bn-batches`` when the training split has fewer)."""
    return {
        "command": shlex.join(["python", "-m", "src.lesion", *argv]),
        "checkpoint": args.checkpoint,
        "arch": arch,
        "split": args.split,
        "samples": samples,
        "limit_batches": args.limit_batches,
        "k": ks,
        "trials": args.trials,
        "seed": args.seed,
        "include_downsampling": args.include_downsampling,
        "bn_reestimate": args.bn_reestimate,
        "bn_batches": bn_batches if args.bn_reestimate else None,
        "evaluation": EVALUATION,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m src.lesion",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],  # what each option does and the files written
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a .ckpt written by python -m src.cli fit (ResNet or plain net)")
    parser.add_argument("--config", help="YAML with a data: section (default: the data the checkpoint carries)")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="split to measure on")
    parser.add_argument("--k", type=int, nargs="+", help="numbers of random blocks to remove (default: 1..half)")
    parser.add_argument("--trials", type=int, default=5, help="random draws per k")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--include-downsampling", action="store_true",
                        help="let random draws pick the downsampling blocks too (default: never)")  # fmt: skip
    parser.add_argument(
        "--bn-reestimate",
        action="store_true",
        help="re-estimate BN statistics on training batches after each removal (and for the baseline)",
    )
    parser.add_argument(
        "--bn-batches",
        type=int,
        default=DEFAULT_BN_BATCHES,
        help=f"training batches for --bn-reestimate (default {DEFAULT_BN_BATCHES})",
    )
    parser.add_argument(
        "--limit-batches",
        type=int,
        help="evaluate on the first N batches only (quick looks; folder splits are in a seeded order of all classes)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", help="output directory (default: <run>/lesion)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Run the study; return the paths written (``single``, ``stages``, ``random``, ``random_summary``, ``figure``,
    ``settings``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        out = Path(args.out or output_dir(args.checkpoint, "lesion"))  # refused now, not after the lesions
        if args.bn_batches < 1:
            raise ValueError(f"--bn-batches must be >= 1, got {args.bn_batches}")
        model, datamodule = _load(args.checkpoint, args.config)
        arch = model.hparams.arch
        device = pick_device(args.device)
        net = model.model.to(device)
        # The draws are checked first: a bad k or a plain net's downsampling blocks fail before any evaluation.
        pool = draw_pool(net, args.include_downsampling, arch)
        ks = args.k or default_ks(len(pool))
        check_draws(pool, ks, args.trials)
        loader = split_loader(datamodule, args.split)
        bn_loader = split_loader(datamodule, "train") if args.bn_reestimate else None
        options = dict(device=device, limit_batches=args.limit_batches, name=arch, bn_loader=bn_loader,
                       bn_batches=args.bn_batches)  # fmt: skip
        single = lesion_study(net, loader, **options)
        baseline = single[0]["acc"]
        random = random_lesions(
            net, loader, ks, args.trials, args.seed, args.include_downsampling, baseline=baseline, **options
        )
    except (ValueError, DatasetNotFoundError, FileNotFoundError) as error:  # PlainNetworkError, CheckpointError too
        raise SystemExit(f"error: {error}") from None

    stages, summary = stage_summary(single), random_summary(random)
    os.makedirs(out, exist_ok=True)
    suffix = free_stem(out, FILES)
    name = {file: with_suffix(file, suffix) for file in FILES}
    paths = {
        "single": write_csv(single, out, name["lesion.csv"]),
        "stages": write_csv(stages, out, name["lesion_stages.csv"]),
        "random": write_csv(random, out, name["lesion_random.csv"]),
        "random_summary": write_csv(summary, out, name["lesion_random_summary.csv"]),
        "figure": str(out / name["lesion.png"]),
        "settings": str(out / name["lesion.json"]),
    }
    used = None if bn_loader is None else min(args.bn_batches, len(bn_loader))
    record = settings_record(args, argv, arch, list(ks), samples_evaluated(loader, args.limit_batches), used)
    Path(paths["settings"]).write_text(json.dumps(record, indent=1) + "\n")
    bn = ", BN re-estimated" if args.bn_reestimate else ""
    plot_lesion(single, random, paths["figure"], title=f"{arch}: block lesions, {args.split} split{bn}")
    for table in (single, stages, summary):
        print(format_table(table), end="\n\n")
    print("wrote " + ", ".join(paths.values()))
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])

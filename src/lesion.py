"""Block-lesion study of a trained ResNet: ``python -m src.lesion <checkpoint>``.

Removes each residual block in turn (keeping its shortcut) and records the test accuracy,
then removes ``k`` random blocks (several seeded draws per ``k``); writes ``lesion.csv``,
``lesion_random.csv`` and ``lesion.png`` into ``<run>/lesion/`` (or ``--out``), never
overwriting earlier results. A plain network is refused with the reason. See
``src.study.lesion`` for what removing a block means exactly.
"""

from __future__ import annotations

import argparse
import sys

from src.data import DatasetNotFoundError
from src.models.blocks import residual_blocks
from src.study.checkpoint import load as _load
from src.study.checkpoint import output_dir, pick_device, split_loader
from src.study.lesion import lesion_study, random_lesions
from src.study.plots import plot_lesion
from src.study.tables import format_table, free_path, write_csv


def default_ks(blocks: int) -> list[int]:
    """Up to 8 values of k from 1 to half the blocks (Veit et al. remove up to ~20 of 54)."""
    top = max(1, blocks // 2)
    return sorted({max(1, round(1 + i * (top - 1) / 7)) for i in range(8)})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.lesion", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a .ckpt written by python -m src.cli fit (a ResNet, not a plain net)")
    parser.add_argument("--config", help="YAML with a data: section (default: the data the checkpoint carries)")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="split to measure on")
    parser.add_argument("--k", type=int, nargs="+", help="numbers of random blocks to remove (default: 1..half)")
    parser.add_argument("--trials", type=int, default=5, help="random draws per k")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--exclude-downsampling", action="store_true", help="never draw the downsampling blocks")
    parser.add_argument("--limit-batches", type=int, help="evaluate on the first N batches only (quick looks)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", help="output directory (default: <run>/lesion)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Run the study; return the paths written (``single``, ``random``, ``figure``)."""
    args = parse_args(argv)
    try:
        model, datamodule = _load(args.checkpoint, args.config)
        arch = model.hparams.arch
        device = pick_device(args.device)
        net = model.model.to(device)
        loader = split_loader(datamodule, args.split)
        removable = [b for b in residual_blocks(net) if not (args.exclude_downsampling and b.downsampling)]
        ks = args.k or default_ks(len(removable))
        # The random draws first: they check k and trials before any long evaluation.
        random = random_lesions(
            net, loader, ks, args.trials, args.seed, not args.exclude_downsampling, device, args.limit_batches, arch
        )
        single = lesion_study(net, loader, device, args.limit_batches, name=arch)
    except (ValueError, DatasetNotFoundError, FileNotFoundError) as error:  # PlainNetworkError, CheckpointError too
        raise SystemExit(f"error: {error}") from None

    out = args.out or output_dir(args.checkpoint, "lesion")
    paths = {"single": write_csv(single, out, "lesion.csv"), "random": write_csv(random, out, "lesion_random.csv")}
    paths["figure"] = free_path(out, "lesion.png")
    plot_lesion(single, random, paths["figure"], title=f"{arch}: block lesions, {args.split} split")
    print(format_table(single))
    print()
    print(format_table(random))
    print(f"\nwrote {paths['single']}, {paths['random']}, {paths['figure']}")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])

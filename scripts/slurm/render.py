"""Write an sbatch script for M nodes x N GPUs from ``template.sbatch``.

    python scripts/slurm/render.py --nodes 2 --gpus-per-node 4 --time 08:00:00 \\
        --config configs/cifar10/resnet20.yaml --name resnet20 > job.sbatch
    sbatch job.sbatch

Anything after ``--`` is appended to the training command (``-- --model.arch resnet56``).
``1node.sbatch`` and ``multinode.sbatch`` beside this file are rendered from the same template
(a test keeps them in step); copy and edit them, or render your own.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.sbatch"
SLURM_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")  # [days-]hours[:minutes[:seconds]]
SHIPPED = {  # file -> render arguments
    "1node.sbatch": ["--nodes", "1", "--gpus-per-node", "4", "--name", "resnet20"],
    "multinode.sbatch": ["--nodes", "2", "--gpus-per-node", "4", "--name", "resnet20"],
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1, help="M: nodes (default 1)")
    parser.add_argument("--gpus-per-node", type=int, default=4, help="N: GPUs and processes per node (default 4)")
    parser.add_argument("--cpus-per-gpu", type=int, default=8, help="CPUs per process, for loader workers (8)")
    parser.add_argument("--time", default="24:00:00", help="time limit, [days-]hh:mm:ss (24:00:00)")
    parser.add_argument("--name", default="resnet", help="job name and run-directory name (resnet)")
    parser.add_argument(
        "--config", action="append", help="experiment config(s), stacked in order (configs/cifar10/resnet20.yaml)"
    )
    parser.add_argument("--partition", help="#SBATCH --partition, if your cluster needs one")
    parser.add_argument("--account", help="#SBATCH --account, if your cluster needs one")
    parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH option, e.g. --sbatch=--mem=0")
    parser.add_argument("extra", nargs="*", help="after --: extra arguments of the training command")
    args = parser.parse_args(argv)
    for flag in ("nodes", "gpus_per_node", "cpus_per_gpu"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not SLURM_TIME.match(args.time):
        parser.error(f"--time {args.time!r} is not a SLURM time: use [days-]hh:mm:ss, e.g. 08:00:00 or 1-12:00:00")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        parser.error(f"--name {args.name!r}: use letters, digits, '.', '_' and '-' (it names a directory)")
    args.config = args.config or ["configs/cifar10/resnet20.yaml"]
    return args


def render(argv: list[str], script_path: str = "job.sbatch") -> str:
    """The sbatch script for the command-line arguments ``argv`` (as ``render.py`` takes them)."""
    args = parse_args(argv)
    extra_sbatch = [f"--partition={args.partition}"] * bool(args.partition) + [f"--account={args.account}"] * bool(
        args.account
    )
    values = {
        "NODES": str(args.nodes),
        "GPUS": str(args.gpus_per_node),
        "WORLD": str(args.nodes * args.gpus_per_node),
        "CPUS": str(args.cpus_per_gpu),
        "TIME": args.time,
        "NAME": args.name,
        "RENDER_ARGS": shlex.join(argv),
        "SCRIPT_PATH": script_path,
        "EXTRA_SBATCH": "".join(f"#SBATCH {option}\n" for option in extra_sbatch + args.sbatch),
        "CONFIG_LINES": "".join(f"  --config {shlex.quote(config)} \\\n" for config in args.config),
        "EXTRA_ARGS": "".join(f" \\\n  {shlex.quote(arg)}" for arg in args.extra),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.findall(r"\{\{\w+\}\}", text)
    assert not leftover, f"template placeholders without a value: {leftover}"
    return text


def main(argv: list[str] | None = None) -> None:
    sys.stdout.write(render(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

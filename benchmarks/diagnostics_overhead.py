"""What the training-diagnostics callback costs: off (the default), and per measured step when on.

Trains with Lightning for a few steps on in-memory random images (no data loading, a
TensorBoard logger as in real runs), in interleaved rounds, under these settings:

* ``absent``      -- no diagnostics callback at all;
* ``off``         -- ``TrainingDiagnostics()`` as every CLI run has it (``enabled: false``);
* ``every_step``  -- ``enabled: true, every_n_steps: 1``: every step measured, profile image included;
* ``every_step_no_image`` -- the same without the TensorBoard profile image.

The median seconds per step of each setting gives the cost of one measurement,
``every_step - off``; at the default interval of 100 steps the overhead per step is that cost
divided by 100. Compare rows of one run: the machine's load moves absolute numbers.

    python benchmarks/diagnostics_overhead.py
    python benchmarks/diagnostics_overhead.py --archs resnet20 plain20 resnet56 --batch-size 128 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from functools import partial

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from src.callbacks import TrainingDiagnostics
from src.models.blocks import residual_blocks
from src.modules import ImageClassifier

SETTINGS = {
    "absent": None,
    "off": {},
    "every_step": {"enabled": True, "every_n_steps": 1},
    "every_step_no_image": {"enabled": True, "every_n_steps": 1, "profile_image": False},
}


class StepTimer(pl.Callback):
    """Wall time of the training steps after ``warmup`` steps (forward, backward, update, callbacks)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.seconds = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.seconds = time.perf_counter() - self.start
            self.steps = batch_idx - self.warmup + 1


def seconds_per_step(arch: str, setting: dict | None, args: argparse.Namespace, loader: DataLoader) -> float:
    torch.manual_seed(0)
    model = ImageClassifier(arch, num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9))
    timer = StepTimer(args.warmup)
    callbacks = [timer] + ([] if setting is None else [TrainingDiagnostics(**setting)])
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = pl.Trainer(
            max_steps=args.warmup + args.steps,
            accelerator="auto",
            devices=1,
            logger=TensorBoardLogger(log_dir, name="bench", default_hp_metric=False),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(model, loader)
    return timer.seconds / timer.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every setting")
    args = parser.parse_args()
    size = args.batch_size * (args.warmup + args.steps)
    images = torch.randn(size, 3, args.image_size, args.image_size)
    loader = DataLoader(TensorDataset(images, torch.randint(0, 10, (size,))), batch_size=args.batch_size)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu'}; batch {args.batch_size}, {args.image_size}px, "
        f"{args.steps} timed steps x {args.rounds} rounds (median)",
        file=sys.stderr,
    )
    print("| Model | blocks | absent s/step | off s/step | off vs absent | one measurement (s) | + image (s) "
          "| overhead at every_n_steps=100 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for arch in args.archs:
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, setting in SETTINGS.items():
                times[name].append(seconds_per_step(arch, setting, args, loader))
        median = {name: statistics.median(values) for name, values in times.items()}
        measurement = median["every_step_no_image"] - median["off"]
        image = median["every_step"] - median["every_step_no_image"]
        overhead = (median["every_step"] - median["off"]) / 100 / median["off"]
        blocks = len(residual_blocks(ImageClassifier(arch).model))
        results[arch] = {"median_s_per_step": median, "all": times}
        print(
            f"| `{arch}` | {blocks} | {median['absent']:.4f} | {median['off']:.4f} | "
            f"{median['off'] / median['absent'] - 1:+.1%} | {measurement:.4f} | {image:.4f} | {overhead:.2%} |"
        )
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()

"""Speed of the training pipeline, one table: data path, data waiting, framework tax, callback cost, startup.

Every number is measured in this one run, on this machine, so the ratios are what to read (absolute
numbers move with whatever else the machine is doing). Rows:

1. data throughput per process: torchvision's per-sample PIL pipeline (``ImageFolder`` + the CIFAR
   train transforms) vs the fast path -- decoding the JPEGs once (cache build) and the batched
   crop/flip/normalise from the in-memory uint8 tensor;
2. share of a training step spent waiting for data: ResNet-20 steps fed by the fast loader, vs the
   PIL pipeline in the same process;
3. Lightning ``fit`` vs a raw PyTorch loop: same model, batch, precision, memory format and in-memory
   data (fast loader), runs interleaved, median of ``--repeats`` ratios;
4. the efficiency callback: time spent in its hooks as a share of ``fit``;
5. time from command to first training step (``benchmarks.fast_recipe`` in a subprocess), with a
   cold and a warm decode cache.

``--root`` is a folder of class folders of 32x32 images, e.g. ``train/`` of an export
(``python -m src.data.export cifar10 data/cifar10 --download``):

    python -m benchmarks.speed --root data/cifar10/train
    python -m benchmarks.speed --root data/cifar10/train --limit 2000 --repeats 1 --skip startup
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from benchmarks.fast_recipe import folder_samples
from src.callbacks import ParameterEfficiency
from src.data.cifar import CIFAR_INFO, CIFARDataModule
from src.data.fast import Uint8Images, decode_files, fast_loader, fast_split
from src.modules import ImageClassifier

REPO_ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = CIFAR_INFO["cifar10"]["mean"], CIFAR_INFO["cifar10"]["std"]
ROWS: list[tuple[str, str, str]] = []


def row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    print(f"  {name}: {value} {note}", file=sys.stderr, flush=True)


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


# ---------------------------------------------------------------- 1. data throughput
def data_throughput(args: argparse.Namespace) -> Uint8Images:
    samples, _ = folder_samples(args.root)
    stride = max(1, len(samples) // args.limit)
    samples = samples[::stride][: args.limit]
    pil = ImageFolder(args.root, transform=CIFARDataModule().train_transform)
    pil_indices = list(range(0, len(pil), stride))[: args.pil_limit]
    seconds, _ = timed(lambda: [pil[i] for i in pil_indices])
    pil_rate = len(pil_indices) / seconds
    row("PIL pipeline (decode + v2 crop/flip/normalise), 1 process", f"{pil_rate:,.0f} img/s")

    seconds, data = timed(decode_files, samples)
    row("fast path: decode once into the uint8 cache, 1 process", f"{len(samples) / seconds:,.0f} img/s")
    loader = fast_loader(fast_split(data, MEAN, STD, train=True), args.batch_size, shuffle=True)
    seconds, _ = timed(lambda: [batch for _ in range(3) for batch in loader])
    fast_rate = 3 * len(data) / seconds
    row("fast path: batched crop/flip/normalise from memory, 1 process", f"{fast_rate:,.0f} img/s")
    row("fast path vs PIL pipeline, per process", f"{fast_rate / pil_rate:,.0f}x", "(goal >= 10x)")
    return data


# ---------------------------------------------------------------- 2. waiting for data
def train_step_fn(model: torch.nn.Module, args: argparse.Namespace):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def waiting_share(batches, model: ImageClassifier, args: argparse.Namespace) -> float:
    step = train_step_fn(model, args)
    waiting = computing = 0.0
    iterator = iter(batches)
    for index in range(args.steps + 2):
        start = time.perf_counter()
        images, labels = next(iterator)
        fetched = time.perf_counter()
        step(images, labels)
        if index >= 2:  # warm-up steps excluded
            waiting, computing = waiting + fetched - start, computing + time.perf_counter() - fetched
    return waiting / (waiting + computing)


def data_waiting(data: Uint8Images, args: argparse.Namespace) -> None:
    model = new_model(args)
    fast = fast_loader(fast_split(data, MEAN, STD, train=True), args.batch_size, shuffle=True)
    share = waiting_share(forever(fast), model, args)
    row("fast path: share of step time waiting for data", f"{100 * share:.2f}%", "(goal < 5%)")
    pil = DataLoader(ImageFolder(args.root, transform=CIFARDataModule().train_transform), args.batch_size, shuffle=True)
    share = waiting_share(forever(pil), model, args)
    row("PIL pipeline in-process: share of step time waiting for data", f"{100 * share:.1f}%")


def forever(loader):
    while True:
        yield from loader


# ---------------------------------------------------------------- 3. Lightning vs raw loop
def new_model(args: argparse.Namespace) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(args.arch, channels_last=args.channels_last)


class StepClock(pl.Callback):
    """Time from the start of training step ``skip`` to the end of the last step."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


class HookTimer(ParameterEfficiency):
    """The efficiency callback, with the time spent in each of its hooks added up."""

    HOOKS = ("setup", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spent = dict.fromkeys(self.HOOKS, 0.0)
        for name in self.HOOKS:
            setattr(self, name, self._timed(name, getattr(self, name)))

    def _timed(self, name: str, hook):
        @functools.wraps(hook)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - start

        return wrapper


def lightning_fit(loader: DataLoader, args: argparse.Namespace, callbacks: list, log_dir: str) -> float:
    clock = StepClock(skip=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps + 2,
        precision="bf16-mixed" if args.bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=log_dir,
        callbacks=[clock, *callbacks],
    )
    trainer.fit(new_model(args), train_dataloaders=loader)
    return args.steps * args.batch_size / (clock.end - clock.start)


def raw_loop(loader: DataLoader, args: argparse.Namespace) -> float:
    model = new_model(args)
    step = train_step_fn(model, args)
    batches = forever(loader)
    for _ in range(2):
        step(*next(batches))
    start = time.perf_counter()
    for _ in range(args.steps):
        step(*next(batches))
    return args.steps * args.batch_size / (time.perf_counter() - start)


def framework_tax(data: Uint8Images, args: argparse.Namespace) -> None:
    loader = fast_loader(fast_split(data, MEAN, STD, train=True), args.batch_size, shuffle=True)
    ratios, raws, fits, overheads = [], [], [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.repeats):
            raw = raw_loop(loader, args)
            fit = lightning_fit(loader, args, [], log_dir)
            # input_shape as a DataModule gives it in a real run: MACs are counted once in setup, not in the
            # first training batch's hook (which would book a one-time cost as per-step time).
            timer = HookTimer(input_shape=[3, 32, 32])
            fit_seconds, _ = timed(lightning_fit, loader, args, [timer], log_dir)
            per_step = sum(seconds for name, seconds in timer.spent.items() if name != "setup")
            raws.append(raw), fits.append(fit), ratios.append(fit / raw)
            overheads.append((per_step / fit_seconds, timer.spent["setup"]))
    setting = f"{args.arch}, batch {args.batch_size}, {'bf16' if args.bf16 else 'fp32'}"
    setting += ", channels_last" if args.channels_last else ""
    row(f"raw PyTorch loop ({setting})", f"{statistics.median(raws):,.0f} img/s")
    row(f"Lightning fit ({setting})", f"{statistics.median(fits):,.0f} img/s")
    row("Lightning fit / raw loop", f"{statistics.median(ratios):.3f}x", f"(goal >= 0.97; runs: {fmt(ratios)})")
    overhead = f"{100 * statistics.median(share for share, _ in overheads):.3f}%"
    row("efficiency callback: time in its per-step/epoch hooks / fit time", overhead, "(goal <= 1%)")
    setup = statistics.median(seconds for _, seconds in overheads)
    row("efficiency callback: one-time setup (parameter and MAC counting)", f"{setup:.2f} s", "(once per run)")


def fmt(values: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values)


# ---------------------------------------------------------------- 5. command to first step
class FirstStepClock(pl.Callback):
    """Write the seconds from ``$SPEED_T0`` (the parent's clock at launch) to the end of the first training step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1 and "SPEED_FIRST_STEP_FILE" in os.environ:
            Path(os.environ["SPEED_FIRST_STEP_FILE"]).write_text(str(time.time() - float(os.environ["SPEED_T0"])))


def startup(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "benchmarks.fast_recipe", "--root", str(Path(args.root).resolve())]
        command += ["--cache-dir", f"{scratch}/cache", "--trainer.max_steps", "1", "--test_after_fit", "false"]
        command += ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
        command += [
            "--trainer.callbacks+=benchmarks.speed.FirstStepClock",
            "--model.lr_scheduler.init_args.warmup_steps",
            "0",
        ]
        for label in ("cold cache: decode the folder", "warm cache"):
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SPEED_FIRST_STEP_FILE": f"{scratch}/first_step"}
            env["SPEED_T0"] = str(time.time())
            result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"startup run failed:\n{result.stderr[-3000:]}")
            seconds = float(Path(scratch, "first_step").read_text())
            row(f"command to end of first training step ({label})", f"{seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/cifar10/train", help="class folders of 32x32 images")
    parser.add_argument("--limit", type=int, default=10000, help="images of the folder used for rows 1-4")
    parser.add_argument("--pil-limit", type=int, default=3000, help="images pushed through the PIL pipeline")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--skip", nargs="*", default=[], choices=["data", "waiting", "tax", "startup"])
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"# {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, torch {torch.__version__}", file=sys.stderr)
    if "data" in args.skip:
        data = decode_files(folder_samples(args.root)[0][: args.limit])
    else:
        data = data_throughput(args)
    if "waiting" not in args.skip:
        data_waiting(data, args)
    if "tax" not in args.skip:
        framework_tax(data, args)
    if "startup" not in args.skip:
        startup(args)
    print("| measurement | value | note |\n|---|---:|---|")
    for name, value, note in ROWS:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()

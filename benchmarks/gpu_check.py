"""GPU check: how close ``fit`` comes to a raw PyTorch loop on one GPU, what the captured step buys, and what several
runs on one GPU give together -- all as ratios measured in one run (issue 29's figures).

For each architecture (ResNet-20 and ResNet-56 by default), one training epoch (45,000 images, batch 256) is timed
after a warm-up epoch, each the same training: Nesterov SGD, bf16 autocast, channels-last, the uint8 images on the
GPU (``src.data.fast``):

* ``raw loop``: a plain PyTorch loop over random batches, normalised on the GPU -- the floor of what a step costs;
* ``raw loop + augmentation``: the same loop over the fast loader that ``fit`` uses (crop, flip, normalise on the GPU);
* ``fit eager``: Lightning ``fit`` of the project's ``ImageClassifier`` on that loader;
* ``fit captured``: the same with ``model.captured_step`` (``configs/trainer/cuda_graphs.yaml``);
* ``K runs per GPU``: K ``fit eager`` processes started together on the one GPU; their summed images per second
  (one run: the ``fit eager`` figure).

Ratios printed: ``fit eager / raw loop + augmentation`` (goal >= 0.95), ``fit captured / raw loop`` (goal >= 3 for
ResNet-20, >= 2 for ResNet-56), ``K runs / 1 run`` (goal for 4 ResNet-20 runs >= 2.5). Images are random (an
epoch's time does not depend on the pixels); ``--json`` writes every figure with the machine and versions.

    python -m benchmarks.gpu_check --json gpu_check.json          # one GPU: about 4 minutes on an H100
    python -m benchmarks.gpu_check --device cpu --archs resnet8 --images 1024 --batch-size 128 --runs 2
                                                                  # the rehearsal on a CPU: every path runs once

Without CUDA (and without ``--device cpu``) it exits at once with a message: there is nothing to measure.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning as L
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.throughput import synchronize
from src.data.cifar import CIFAR_INFO
from src.data.fast import BatchAugment, Uint8Images, fast_loader, fast_split
from src.modules import ImageClassifier
from src.modules.captured_step import CaptureError

MEAN, STD = CIFAR_INFO["cifar10"]["mean"], CIFAR_INFO["cifar10"]["std"]


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


def random_images(count: int) -> Uint8Images:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 32, 32, 3), dtype=torch.uint8, generator=generator)
    return Uint8Images.from_hwc(images.numpy(), torch.randint(0, 10, (count,), generator=generator).tolist())


def make_step(model: ImageClassifier, device: torch.device, bf16: bool) -> Callable[[Tensor, Tensor], None]:
    """The raw loop's step: what ``fit`` does per batch, without Lightning."""
    optimizer = sgd(model.parameters())

    def step(images: Tensor, labels: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def raw_epoch(
    arch: str, batches: Callable[[], Iterable[tuple[Tensor, Tensor]]], device: torch.device, bf16: bool
) -> float:
    """Seconds of the second pass over ``batches()`` (the first warms up cuDNN and the allocator)."""
    torch.manual_seed(0)
    step = make_step(ImageClassifier(arch, channels_last=True).to(device), device, bf16)
    seconds = 0.0
    for _ in range(2):
        synchronize(device)
        start = time.perf_counter()
        for images, labels in batches():
            step(images, labels)
        synchronize(device)
        seconds = time.perf_counter() - start
    return seconds


def plain_batches(
    data: Uint8Images, batch_size: int, device: torch.device
) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
    """Random full batches of the resident uint8 images, normalised on the device: the raw loop's data."""
    images, labels = data.images.to(device), data.labels.to(device)
    normalize = BatchAugment(MEAN, STD).to(device).normalize  # the fast path's normalisation, without crop / flip

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(labels), device=device)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield normalize(images[index]), labels[index]

    return batches


class EpochClock(pl.Callback):
    """Seconds of the last training epoch, the device synchronised at both ends."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize(pl_module.device)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self.start


def fit_epoch(arch: str, data: Uint8Images, args: argparse.Namespace, captured: bool) -> float:
    device = torch.device(args.device)
    L.seed_everything(0, verbose=False)
    clock = EpochClock()
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=2,
        precision="bf16-mixed" if args.bf16 else "32-true", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[clock],
    )  # fmt: skip
    loader = fast_loader(fast_split(data, MEAN, STD, train=True, device=device), args.batch_size, shuffle=True)
    model = ImageClassifier(arch, channels_last=True, optimizer=sgd, captured_step=captured)
    trainer.fit(model, train_dataloaders=loader)
    return clock.seconds


def runs_together(arch: str, count: int, args: argparse.Namespace) -> float:
    """Summed images per second of ``count`` ``fit eager`` processes started together on the one device."""
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--child-fit", arch, "--device", args.device,
               "--images", str(args.images), "--batch-size", str(args.batch_size)]  # fmt: skip
    if not args.bf16:
        command.append("--fp32")
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    rates = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"a run of {arch} beside {count - 1} others failed (exit {child.returncode})")
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    return sum(rates)


def machine(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": name,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
    }


def check(arch: str, data: Uint8Images, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    epoch_images = len(data) // args.batch_size * args.batch_size  # the raw loop's full batches
    rates: dict[str, float | None] = {}
    rates["raw loop"] = epoch_images / raw_epoch(arch, plain_batches(data, args.batch_size, device), device, args.bf16)
    resident = fast_split(data, MEAN, STD, train=True, device=device)
    augmented = fast_loader(resident, args.batch_size, shuffle=True)
    rates["raw loop + augmentation"] = len(data) / raw_epoch(arch, lambda: augmented, device, args.bf16)
    rates["fit eager"] = len(data) / fit_epoch(arch, data, args, captured=False)
    try:
        rates["fit captured"] = len(data) / fit_epoch(arch, data, args, captured=True)
    except CaptureError as error:  # a CPU rehearsal: said, not measured
        print(f"# {arch}: fit captured not measured: {error}", file=sys.stderr)
        rates["fit captured"] = None
    rates["1 runs per device"] = rates["fit eager"]  # one fit on the device: the figure just measured
    for count in args.runs:
        rates[f"{count} runs per device"] = runs_together(arch, count, args)
    one = rates["1 runs per device"]
    ratios = {
        "fit eager / raw loop + augmentation": ratio(rates["fit eager"], rates["raw loop + augmentation"]),
        "fit captured / raw loop": ratio(rates["fit captured"], rates["raw loop"]),
        **{f"{n} runs / 1 run": ratio(rates[f"{n} runs per device"], one) for n in args.runs if n > 1},
    }
    return {"arch": arch, "images_per_s": rates, "ratios": ratios}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def print_table(results: list[dict[str, Any]]) -> None:
    print("| model | setting | img/s |\n|---|---|---:|")
    for result in results:
        for name, rate in result["images_per_s"].items():
            print(f"| {result['arch']} | {name} | {'n/a' if rate is None else f'{rate:,.0f}'} |")
    print("\n| model | ratio | value |\n|---|---|---:|")
    for result in results:
        for name, value in result["ratios"].items():
            print(f"| {result['arch']} | {name} | {'n/a' if value is None else f'{value:.2f}x'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--images", type=int, default=45000, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--runs", type=int, nargs="*", default=[2, 4, 8], help="runs per device, started together")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a rehearsal of every path")
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast")
    parser.add_argument("--json", default=None, help="write the figures, machine and versions here")
    parser.add_argument("--child-fit", default=None, help=argparse.SUPPRESS)  # one of the K runs per device
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA GPU and torch.cuda.is_available() is False here: nothing to measure "
                         "(--device cpu rehearses every path on this CPU).")  # fmt: skip
    torch.backends.cudnn.benchmark = True
    data = random_images(args.images)
    if args.child_fit:
        print(json.dumps({"images_per_s": len(data) / fit_epoch(args.child_fit, data, args, captured=False)}))
        return
    device = torch.device(args.device)
    command = " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]])
    about = {**machine(device), "images": args.images, "batch_size": args.batch_size, "bf16": args.bf16,
             "date": time.strftime("%Y-%m-%d"), "command": command}  # fmt: skip
    print(f"# {about['device']}, torch {about['torch']}, lightning {about['lightning']}, {args.images:,} images per "
          f"epoch, batch {args.batch_size}, {'bf16' if args.bf16 else 'fp32'}", flush=True)  # fmt: skip
    results = [check(arch, data, args) for arch in args.archs]
    print_table(results)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": about, "results": results}, file, indent=2)


if __name__ == "__main__":
    main()

"""GPU check: ResNet-20 / ResNet-56 epoch time on one CUDA GPU, fast path vs fp32 vs the PIL DataLoader.

For each architecture, one CIFAR-sized training epoch (45,000 images by default) is timed after a
warm-up epoch, in these settings:

* ``fast bf16 + channels_last``: the uint8 data set lives on the GPU (``src.data.fast``), batches are
  gathered, cropped, flipped and normalised there, bf16 autocast, channels-last -- raw loop and
  Lightning ``fit`` (the same ``ImageClassifier``);
* ``fast fp32``: the same data path, fp32, channels-last;
* ``PIL DataLoader bf16 + channels_last``: torchvision's per-sample PIL transforms in loader workers,
  pinned memory, copied to the GPU each batch (timed over ``--pil-batches`` batches, scaled to an epoch).

Images come from ``--root`` (an ImageFolder of 32x32 images, e.g. ``data/cifar10/train``)
when given, else random uint8 images of the same size (epoch time does not depend on the pixels).

    python -m benchmarks.gpu_check                      # a few minutes on one GPU
    python -m benchmarks.gpu_check --root data/cifar10/train --archs resnet20

Without CUDA it exits at once with a message (nothing to measure).
"""

from __future__ import annotations

import argparse
import sys
import time

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from src.data.cifar import CIFAR_INFO, CIFARDataModule
from src.data.fast import Uint8Images, fast_loader, fast_split, load_or_decode
from src.modules import ImageClassifier

MEAN, STD = CIFAR_INFO["cifar10"]["mean"], CIFAR_INFO["cifar10"]["std"]


class PILImages(Dataset):
    """CIFAR's PIL path (as torchvision's CIFAR10 does it): uint8 array -> PIL image -> v2 transforms."""

    def __init__(self, data: Uint8Images) -> None:
        self.images = data.images.permute(0, 2, 3, 1).numpy()
        self.labels = data.labels.tolist()
        self.transform = CIFARDataModule().train_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def load_images(args: argparse.Namespace) -> Uint8Images:
    if args.root:
        from benchmarks.fast_recipe import folder_samples

        samples = folder_samples(args.root)[0]
        data = load_or_decode(samples, args.cache_dir, name="gpu_check")
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
        data = Uint8Images.from_hwc(images, rng.integers(0, 10, args.images))
    return data.subset(range(min(args.images, len(data))))


def make_step(model: ImageClassifier, bf16: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    return step


def timed_epochs(loader, step, device: torch.device, max_batches: int | None = None) -> tuple[float, int]:
    """Seconds and images of the second pass over ``loader`` (the first warms up cuDNN and the allocator)."""
    result = (0.0, 0)
    for _ in range(2):
        torch.cuda.synchronize(device)
        start, images = time.perf_counter(), 0
        for index, (x, y) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            images += len(y)
        torch.cuda.synchronize(device)
        result = (time.perf_counter() - start, images)
    return result


class EpochClock(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start  # the last epoch's


def lightning_epoch(arch: str, loader: DataLoader, bf16: bool) -> float:
    clock = EpochClock()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=2,
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(ImageClassifier(arch, channels_last=True), train_dataloaders=loader)
    return clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="ImageFolder of 32x32 images; default: random images")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--images", type=int, default=45000, help="images per epoch")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=8, help="PIL DataLoader workers")
    parser.add_argument("--pil-batches", type=int, default=30, help="PIL pipeline: batches timed, scaled to an epoch")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA GPU and torch.cuda.is_available() is False here: nothing to measure.")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    data = load_images(args)
    resident = fast_split(data, MEAN, STD, train=True, device=device)
    fast = fast_loader(resident, args.batch_size, shuffle=True)
    pil = DataLoader(
        PILImages(data), args.batch_size, shuffle=True, num_workers=args.workers, pin_memory=True,
        persistent_workers=args.workers > 0, drop_last=True,
    )  # fmt: skip
    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, {len(data):,} images per epoch, "
          f"batch {args.batch_size}, {args.workers} PIL workers", flush=True)  # fmt: skip
    print("| model | setting | epoch s | img/s |\n|---|---|---:|---:|", flush=True)
    for arch in args.archs:
        rows = []
        for name, bf16, loader, max_batches in (
            ("fast bf16 + channels_last, raw loop", True, fast, None),
            ("fast fp32 + channels_last, raw loop", False, fast, None),
            ("PIL DataLoader bf16 + channels_last, raw loop", True, pil, args.pil_batches),
        ):
            torch.manual_seed(0)
            model = ImageClassifier(arch, channels_last=True).to(device)
            seconds, images = timed_epochs(loader, make_step(model, bf16), device, max_batches)
            rows.append((name, seconds * len(data) / images, images / seconds))
        seconds = lightning_epoch(arch, fast, bf16=True)
        rows.insert(1, ("fast bf16 + channels_last, Lightning fit", seconds, len(data) / seconds))
        for name, epoch_seconds, rate in rows:
            print(f"| {arch} | {name} | {epoch_seconds:.2f} | {rate:,.0f} |", flush=True)
    print("(goal: ResNet-20 epoch <= 1 s on an H100-class card with the fast bf16 path)", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Training-loader throughput on many small JPEGs: ImageFolderDataModule vs torchvision's ImageFolder + PIL.

Both loaders read the same files with the same ``cifar`` transform preset (pad-crop-flip, float,
normalise) and batch size; only the decoding differs (``torchvision.io.decode_image`` on the file's
bytes, straight to uint8 tensors, vs PIL open + convert("RGB") + tensor conversion). Each row times
``--batches`` shuffled training batches after one warm-up batch (worker start-up excluded), in one
process, one after the other, so the ratios are comparable. ``--check`` also times the one-time
check that decodes every file before training (then cached).

    python benchmarks/folder_loader.py --root data/cifar10    # python -m src.data.export cifar10 data/cifar10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from src.data import ImageFolderDataModule
from src.data import transforms as presets

CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def images_per_second(loader: DataLoader, batches: int) -> float:
    iterator = iter(loader)
    next(iterator)  # warm-up: workers started, first files read
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(iterator)
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/cifar10", help="a folder holding train/<class>/<image>")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--check", action="store_true", help="also time the one-time file check (2 workers)")
    args = parser.parse_args()
    torch.manual_seed(0)

    rows = []
    if args.check:
        with tempfile.TemporaryDirectory() as cache:
            dm = ImageFolderDataModule(args.root, preset="cifar", image_size=32, val_split=5000, cache_dir=cache,
                                       mean=CIFAR10_MEAN, std=CIFAR10_STD, num_workers=2)  # fmt: skip
            start = time.perf_counter()
            dm.setup("fit")
            files = len(dm.samples["train"]) + len(dm.samples["val"])
            seconds = time.perf_counter() - start
            rows.append({"what": "file check (every file decoded once)", "workers": 2, "files": files,
                         "seconds": round(seconds, 1), "images_per_sec": round(files / seconds)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)

    transform = presets.build("cifar", 32, True, CIFAR10_MEAN, CIFAR10_STD)
    for workers in args.workers:
        dm = ImageFolderDataModule(args.root, preset="cifar", image_size=32, val_split=5000, check_files=False,
                                   mean=CIFAR10_MEAN, std=CIFAR10_STD, num_workers=workers,
                                   batch_size=args.batch_size)  # fmt: skip
        dm.setup("fit")
        ours = images_per_second(dm.train_dataloader(), args.batches)
        baseline_set = ImageFolder(f"{args.root}/train", transform=transform)
        baseline = DataLoader(baseline_set, batch_size=args.batch_size, shuffle=True,
                              num_workers=workers, persistent_workers=workers > 0)  # fmt: skip
        theirs = images_per_second(baseline, args.batches)
        for name, value in (("ImageFolderDataModule (torchvision.io)", ours), ("ImageFolder + PIL", theirs)):
            rows.append({"what": name, "workers": workers, "images_per_sec": round(value)})
            print(json.dumps(rows[-1]), flush=True)
        print(json.dumps({"workers": workers, "speedup": round(ours / theirs, 2)}), flush=True)


if __name__ == "__main__":
    main()

"""Sanity run on real images: train a CIFAR ResNet on an ImageFolder copy of CIFAR-10.

Uses the project's pieces exactly as the CLI does -- ``ImageClassifier``, the paper's
CIFAR-10 transforms and 45k/5k split from ``CIFARDataModule``, the ``ParameterEfficiency``
callback -- on a folder copy of the CIFAR-10 training set (``--root``: JPEGs, or the PNGs of
``python -m src.data.export cifar10 data/cifar10 --download``).
It reports accuracy after a short schedule and the training throughput on this machine.

    python benchmarks/cifar10_jpeg_sanity.py --root data/cifar10/train --epochs 3

The CLI trains on the same folder through ImageFolderDataModule (configs/cifar10_folder/); this script stays as an
independent check of the numbers without the CLI.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from src.callbacks import ParameterEfficiency
from src.data import CIFARDataModule
from src.modules import ImageClassifier, WarmupCosineLR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/cifar10/train", help="class folders of CIFAR-10 training images")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    recipe = CIFARDataModule("cifar10", val_size=5000)  # transforms + split only; reads no files
    augmented = ImageFolder(args.root, transform=recipe.train_transform)
    plain = ImageFolder(args.root, transform=recipe.eval_transform)
    train_indices, val_indices = recipe.split_indices(len(augmented))
    loader = partial(DataLoader, batch_size=args.batch_size, num_workers=args.num_workers, persistent_workers=True)
    train_loader = loader(Subset(augmented, train_indices), shuffle=True, drop_last=True)
    val_loader = loader(Subset(plain, val_indices))

    model = ImageClassifier(
        args.arch,
        num_classes=len(augmented.classes),
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4),
        lr_scheduler=partial(WarmupCosineLR, warmup_steps=100),
        lr_scheduler_interval="step",
    )
    callback = ParameterEfficiency(input_shape=[3, 32, 32])
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=TensorBoardLogger("lightning_logs", name="sanity_cifar10_jpeg", default_hp_metric=False),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.fit(model, train_loader, val_loader)
    elapsed = time.perf_counter() - start
    report = json.loads(open(callback.path).read())
    keys = ("arch", "params_total", "macs_per_sample", "best_val_acc", "raw_acc_per_mparam", "train_images_per_sec")
    print(json.dumps({**{k: report[k] for k in keys}, "fit_seconds": round(elapsed, 1), "report": callback.path}))


if __name__ == "__main__":
    main()

"""Write CIFAR-10 / CIFAR-100 as image folders: ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png``.

The folder recipes (``configs/cifar10_folder/*``) train ``ImageFolderDataModule`` on class folders; this
command makes those folders from torchvision's CIFAR download on any machine, with the official test split
as ``test/`` (so ``test`` scores the same 10,000 images as ``CIFARDataModule``). PNG is lossless: the
pixels in the folder are exactly the pixels of the python archive.

    python -m src.data.export cifar10 data/cifar10 --download     # fetch into data/ (if missing), then write
    python -m src.data.export cifar100 data/cifar100 --data-dir /datasets/cifar

Files are named ``<split index, zero-padded>.png`` inside their class folder, so the order of the archive
can be recovered. An existing non-empty ``DIR`` is never written into: the command stops with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchvision import datasets

from src.data.base import DatasetNotFoundError

DATASETS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


class ExportError(ValueError):
    """Bad input to the export: printed as one ``error:`` line."""


def open_split(dataset: str, data_dir: str | Path, train: bool, download: bool) -> datasets.CIFAR10:
    """torchvision's CIFAR split from ``data_dir`` (downloading it first when asked), or one clear error."""
    dataset_class = DATASETS[dataset]
    try:
        return dataset_class(str(data_dir), train=train, download=download)
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found or corrupted"; no network
        raise DatasetNotFoundError(
            f"{dataset} is not in '{data_dir}' ({err}). Run with --download, or extract {dataset_class.filename} "
            f"from {dataset_class.url} into '{data_dir}'"
        ) from err


def export(dataset: str, out_dir: str | Path, data_dir: str | Path = "data", download: bool = False) -> dict:
    """Write both splits of ``dataset`` as PNG class folders under ``out_dir``; return images per split.

    Refuses an ``out_dir`` that exists and is not empty (a user's files are never overwritten or mixed
    with an export).
    """
    if dataset not in DATASETS:
        raise ExportError(f"unknown data set '{dataset}': valid are {', '.join(DATASETS)}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"'{out}' exists and is not empty: give a new or empty folder (nothing was written)")
    train = open_split(dataset, data_dir, train=True, download=download)  # downloads both splits' archive
    splits = {"train": train, "test": open_split(dataset, data_dir, train=False, download=False)}
    counts = {}
    for split, data in splits.items():
        width = len(str(len(data) - 1))
        folders = [out / split / name for name in data.classes]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(data):  # PIL RGB images, no transform
            image.save(folders[label] / f"{index:0{width}d}.png", format="PNG")
        counts[split] = len(data)
        print(f"{split}: {len(data):,} images in {len(folders)} class folders under {out / split}", flush=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS), help="which CIFAR")
    parser.add_argument("out_dir", help="new (or empty) folder to write train/ and test/ into")
    parser.add_argument("--data-dir", default="data", help="where the python archive is (or goes): default data")
    parser.add_argument("--download", action="store_true", help="download the archive into --data-dir if missing")
    args = parser.parse_args(argv)
    try:
        export(args.dataset, args.out_dir, args.data_dir, args.download)
    except (ExportError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

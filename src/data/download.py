"""Downloadable image-folder data sets: fetched into ``data_dir`` and extracted once.

* Imagenette and Imagewoof (fast.ai): 10 ImageNet classes each, as ``train/<wnid>/`` and
  ``val/<wnid>/``, at 160 px (shorter side), 320 px or full size.
* Tiny-ImageNet-200 (Stanford CS231n): 200 classes of 64x64 images. Its ``val/`` is flat, with
  labels in ``val_annotations.txt``; after extraction it is re-foldered into ``val/<wnid>/`` so it
  reads like every other folder here, and its unlabelled ``test/`` is renamed ``test_unlabeled/``.

A marker file (``.complete``) records a finished extraction, so a later run (or another process
of the same DDP job, waiting on a lock file) reuses the folder instead of extracting again.
Archives are checked against their MD5 where the publisher's checksum is known.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from torchvision.datasets.utils import download_and_extract_archive

from src.data.base import DatasetNotFoundError
from src.data.locking import file_lock

FASTAI = "https://s3.amazonaws.com/fast-ai-imageclas"
MARKER = ".complete"


class Archive(NamedTuple):
    url: str
    md5: str | None
    folder: str  # what the archive extracts to, under data_dir


ARCHIVES: dict[str, Archive] = {
    # Imagenette MD5s as torchvision.datasets.Imagenette checks them; fast.ai publishes none for Imagewoof.
    "imagenette": Archive(f"{FASTAI}/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612", "imagenette2"),
    "imagenette-320": Archive(f"{FASTAI}/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3", "imagenette2-320"),
    "imagenette-160": Archive(f"{FASTAI}/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412", "imagenette2-160"),
    "imagewoof": Archive(f"{FASTAI}/imagewoof2.tgz", None, "imagewoof2"),
    "imagewoof-320": Archive(f"{FASTAI}/imagewoof2-320.tgz", None, "imagewoof2-320"),
    "imagewoof-160": Archive(f"{FASTAI}/imagewoof2-160.tgz", None, "imagewoof2-160"),
    "tiny-imagenet": Archive(
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200"
    ),
}


def check_name(name: str) -> Archive:
    if name not in ARCHIVES:
        raise ValueError(f"dataset must be one of {sorted(ARCHIVES)} (or null with root set), got {name!r}")
    return ARCHIVES[name]


def dataset_root(name: str, data_dir: str) -> str:
    """Where ``name`` lives (or will live) once extracted: ``data_dir/<archive folder>``."""
    return os.path.join(data_dir, check_name(name).folder)


def is_complete(name: str, data_dir: str) -> bool:
    return os.path.exists(os.path.join(dataset_root(name, data_dir), MARKER))


def how_to_get(name: str, data_dir: str) -> str:
    archive = check_name(name)
    return (
        f"Either run once with internet access and data.download: true, or download {archive.url} yourself and "
        f"extract it into '{data_dir}' (it unpacks to '{dataset_root(name, data_dir)}'; then create an empty file "
        f"'{MARKER}' there)."
    )


def prepare(name: str, data_dir: str, download: bool) -> str:
    """The extracted folder of ``name``: downloaded and extracted first when needed (once). Returns its path."""
    root = dataset_root(name, data_dir)
    if is_complete(name, data_dir):
        return root
    if not download:
        raise DatasetNotFoundError(f"{name} was not found in '{root}'. {how_to_get(name, data_dir)}")
    with file_lock(os.path.join(data_dir, f".{name}.lock")):
        if is_complete(name, data_dir):  # another process finished while we waited
            return root
        archive = ARCHIVES[name]
        try:
            download_and_extract_archive(archive.url, download_root=data_dir, md5=archive.md5)
        except OSError as err:  # URLError and socket errors are OSErrors
            raise DatasetNotFoundError(
                f"{name} is not in '{root}' and could not be downloaded ({err}). {how_to_get(name, data_dir)}"
            ) from None
        if name == "tiny-imagenet":
            refolder_tiny_imagenet(root)
        Path(root, MARKER).touch()
    return root


def read_labels_file(path: str) -> dict[str, str]:
    """``{file name: class}`` from a ground-truth text file: one ``<file> <class> [anything...]`` per line.

    Whitespace or a comma separates the fields, so Tiny-ImageNet's ``val_annotations.txt``, Kaggle's
    ILSVRC ``LOC_val_solution.csv`` and a hand-written list all read the same; a header line whose
    second field is not a class is the caller's to drop.
    """
    labels = {}
    with open(path) as handle:
        for line in handle:
            fields = line.replace(",", " ").split()
            if len(fields) >= 2 and not fields[0].startswith("#"):
                labels[fields[0]] = fields[1]
    return labels


def refolder_tiny_imagenet(root: str) -> None:
    """Move Tiny-ImageNet's flat ``val/images/*.JPEG`` into ``val/<wnid>/`` by ``val/val_annotations.txt``."""
    val = Path(root, "val")
    annotations = val / "val_annotations.txt"
    if not annotations.exists():
        raise DatasetNotFoundError(f"'{annotations}' is missing: '{val}' cannot be sorted into class folders")
    images = val / "images"
    for file_name, wnid in read_labels_file(str(annotations)).items():
        (val / wnid).mkdir(exist_ok=True)
        source = images / file_name
        if source.exists():
            source.rename(val / wnid / file_name)
    if images.exists() and not any(images.iterdir()):
        images.rmdir()
    annotations.rename(Path(root, "val_annotations.txt"))  # keep it, outside the class folders
    test = Path(root, "test")
    if test.exists():  # no labels: not a split this module can score
        shutil.move(str(test), str(Path(root, "test_unlabeled")))

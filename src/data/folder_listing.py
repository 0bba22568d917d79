"""Listing an image folder and choosing its classes: class folders, image files, shipped class subsets.

Directory listings only, no image decoded: what ``ImageFolderDataModule`` knows at instantiation
(the chosen classes, hence ``num_classes``) comes from here.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from src.data.base import DataError

SUBSETS_DIR = Path(__file__).with_name("subsets")  # imagenet100.txt, imagenette.txt, imagewoof.txt


def list_class_folders(folder: str) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` (hidden ones left out)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _walk(folder: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` following links (a class folder may link to images elsewhere), but a directory reached twice
    -- a symlink loop, or two links to one folder, whose images would count twice -- is a ``DataError``."""
    seen: dict[tuple[int, int], str] = {}
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        try:
            stat = os.stat(directory)
        except OSError as error:  # ELOOP, a dangling link
            raise DataError(f"cannot read the image folder '{directory}': {error.strerror}") from None
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            raise DataError(
                f"'{directory}' is the folder '{seen[key]}' again (a symbolic link loop, or two links to one folder): "
                "its images would be read twice; remove the link"
            )
        seen[key] = directory
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        yield directory, subdirs, files


def find_images(folder: str) -> list[str]:
    """Sorted paths of the image files anywhere under ``folder`` (by extension, as ``ImageFolder`` does)."""
    found = []
    for directory, _, files in _walk(folder):
        found += [os.path.join(directory, f) for f in files if is_image_file(f)]
    return sorted(found)


def first_image(folder: str) -> str | None:
    for directory, _subdirs, files in _walk(folder):
        for name in sorted(files):
            if is_image_file(name):
                return os.path.join(directory, name)
    return None


def read_class_list(spec: str) -> list[str]:
    """Class-folder names from a shipped list (``imagenet100``, ``imagenette``, ``imagewoof``) or a text file.

    One name per line; anything after the first word, and lines starting with ``#``, are comments.
    """
    shipped = SUBSETS_DIR / f"{spec}.txt"
    path = shipped if "/" not in spec and shipped.exists() else Path(spec)
    if not path.is_file():
        names = sorted(p.stem for p in SUBSETS_DIR.glob("*.txt"))
        raise DataError(f"class list {spec!r} is neither a shipped list ({', '.join(names)}) nor a file")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise DataError(f"class list '{path}' names no class")
    return list(dict.fromkeys(names))


def choose_classes(
    available: Sequence[str], classes: Sequence[str] | None, class_count: int | None, class_seed: int, where: str
) -> list[str]:
    """The classes to train on, sorted: the named ones (all if none named), then ``class_count`` of them at random.

    The random choice is ``random.Random(class_seed)`` over the sorted names: the same on any machine.
    """
    pool = sorted(set(classes)) if classes else sorted(available)
    missing = [name for name in pool if name not in set(available)]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise DataError(
            f"{len(missing)} of the {len(pool)} requested classes have no folder in '{where}': {shown}. "
            f"It has {len(available)} class folders, e.g. {', '.join(list(available)[:5])}"
        )
    if class_count is not None:
        if class_count > len(pool):
            raise DataError(f"class_count {class_count} is more than the {len(pool)} classes to choose from")
        pool = sorted(random.Random(class_seed).sample(pool, class_count))
    return pool

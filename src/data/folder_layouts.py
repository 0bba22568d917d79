"""The samples of one split folder: ``<split>/<class>/<image>``, or ILSVRC-2012's flat ``val/`` read through its
ground truth (torchvision's ``meta.bin`` or a ``<file> <class>`` text file); nothing on disk is moved.

Every function returns ``[(path, label), ...]`` for the chosen classes, labels from ``class_to_idx``, and
raises ``DataError`` naming the folder when the layout does not fit the training folder's classes.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from torchvision.datasets.folder import IMG_EXTENSIONS

from src.data import download as downloads
from src.data.base import DataError
from src.data.folder_listing import find_images, is_image_file, list_class_folders

Sample = tuple[str, int]


def class_folder_samples(
    folder: str,
    class_to_idx: dict[str, int],
    available: Sequence[str],
    train_folder: str,
    cap: int | None = None,
    seed: int = 0,
) -> list[Sample]:
    """Samples of ``folder/<class>/...`` for the chosen classes; every class folder must have images.

    ``available``: the class folders of ``train_folder``; a val/test ``folder`` must have the same ones.
    ``cap``: at most this many images per class, chosen by ``random.Random(seed)`` (``max_per_class``).
    """
    if folder != train_folder:
        present = list_class_folders(folder)
        if set(present) != set(available):
            only_train = sorted(set(available) - set(present))[:10]
            only_here = sorted(set(present) - set(available))[:10]
            split = os.path.basename(os.path.normpath(folder))
            raise DataError(
                f"the class folders of '{folder}' differ from those of '{train_folder}': "
                f"only in train: {only_train}; only in {split}: {only_here}"
            )
    rng = random.Random(seed)
    samples = []
    for name in class_to_idx:
        files = find_images(os.path.join(folder, name))
        if not files:
            raise DataError(
                f"class folder '{os.path.join(folder, name)}' has no image files ({', '.join(IMG_EXTENSIONS)}); "
                "add images, delete the folder, or leave the class out with data.classes"
            )
        if cap is not None and len(files) > cap:
            files = sorted(rng.sample(files, cap))
        samples += [(path, class_to_idx[name]) for path in files]
    return samples


def is_flat_folder(folder: str) -> bool:
    """Image files and no class folders: ILSVRC-2012's official ``val/``."""
    return not list_class_folders(folder) and any(is_image_file(f) for f in os.listdir(folder))


def flat_val_samples(
    folder: str, root: str, val_labels: str | None, class_to_idx: dict[str, int], available: Sequence[str]
) -> list[Sample]:
    """Samples of a flat ``val/`` (ILSVRC-2012's official layout) from its ground truth.

    ``val_labels``: a ``<file> <class>`` text file or torchvision's ``meta.bin``; ``None`` looks for
    ``root/meta.bin``. Files of classes not chosen are left out; a file without a label, or a label that
    is no class folder of train, is an error.
    """
    files = sorted(f for f in os.listdir(folder) if is_image_file(f))
    labels_file = val_labels or os.path.join(root, "meta.bin")
    if not os.path.isfile(labels_file):
        raise DataError(
            f"'{folder}' holds {len(files)} images but no class folders, and its ground truth was not found: set "
            "data.val_labels to a text file of '<file> <class>' lines (e.g. Kaggle's LOC_val_solution.csv) "
            f"or to torchvision's meta.bin, or put meta.bin in '{root}'"
        )
    if labels_file.endswith(".bin"):
        from torchvision.datasets.imagenet import load_meta_file

        _, val_wnids = load_meta_file(os.path.dirname(labels_file) or ".", os.path.basename(labels_file))
        if len(val_wnids) != len(files):
            raise DataError(f"'{labels_file}' labels {len(val_wnids)} images, '{folder}' has {len(files)}")
        truth = dict(zip(files, val_wnids))
    else:
        table = downloads.read_labels_file(labels_file)
        truth = {f: table.get(f, table.get(os.path.splitext(f)[0])) for f in files}
    unlabelled = [f for f, label in truth.items() if label is None]
    unknown = sorted({label for label in truth.values() if label is not None} - set(available))
    if unlabelled or unknown:
        raise DataError(
            f"'{labels_file}' does not fit '{folder}': {len(unlabelled)} files without a label "
            f"(e.g. {unlabelled[:3]}), labels that are not class folders of train: {unknown[:10]}"
        )
    return [(os.path.join(folder, f), class_to_idx[c]) for f, c in truth.items() if c in class_to_idx]

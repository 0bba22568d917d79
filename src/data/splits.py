"""Held-out splits carved from a training pool: the same share from every class, a pure function of a seed.

Used by ``ImageFolderDataModule`` for ``test_split`` (carved first) and ``val_split`` (carved from the rest),
so the three splits never share an image and the test images do not depend on ``val_split``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from src.data.base import DataError


def stratified_split(
    labels: Sequence[int], val_split: float, seed: int, name: str = "val_split"
) -> tuple[list[int], list[int]]:
    """(kept, held-out) indices; every class gives the same share (largest remainder), a pure function of seed.

    ``val_split`` < 1 is a fraction of the images, >= 1 a number of images; ``name`` is the setting's name in
    error messages (``val_split`` or ``test_split``).
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    total = len(labels)
    wanted = round(val_split * total) if val_split < 1 else int(val_split)
    if not 0 < wanted < total:
        raise DataError(f"{name} {val_split} leaves no image to hold out or to train on ({total} images)")
    quotas = {c: wanted * len(members) / total for c, members in by_class.items()}
    counts = {c: math.floor(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: (counts[c] - quotas[c], c))[: wanted - sum(counts.values())]:
        counts[c] += 1
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in sorted(by_class):
        members = by_class[c]
        if counts[c] >= len(members):
            raise DataError(
                f"{name} {val_split} takes all {len(members)} images of class {c} (index): none left to train on"
            )
        order = torch.randperm(len(members), generator=generator).tolist()
        val += [members[i] for i in order[: counts[c]]]
        train += [members[i] for i in order[counts[c] :]]
    return sorted(train), sorted(val)

"""What every image DataModule here shares: loaders, and the facts the model needs.

A DataModule exposes ``num_classes`` and ``input_shape`` (C, H, W). The CLI links
``num_classes`` and ``in_channels`` into the model, and the efficiency callback reads
``input_shape`` to count MACs at the size actually trained on -- so switching datasets
never needs a model edit.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing and cannot be fetched; the message says where and how to get them."""


def default_num_workers() -> int:
    """Loader processes: up to 4, never more than this machine's cores minus one."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ImageClassificationDataModule(pl.LightningDataModule):
    """Base class: subclasses set ``train_set`` / ``val_set`` / ``test_set`` in ``setup``."""

    num_classes: int
    input_shape: tuple[int, int, int]

    def __init__(self, batch_size: int, num_workers: int | None, pin_memory: bool | None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        # Page-locked memory only helps copies to a GPU (and warns without one).
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split yet")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class DataError(ValueError):
    """The data on disk cannot be used as configured (empty class folder, unknown class, unreadable files...).

    Raised before training starts, with the offending paths or names and what is valid; the CLI prints
    it as one line, like ``DatasetNotFoundError``.
    """

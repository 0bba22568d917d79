"""``predict`` output: one CSV row per input, in the run directory.

Columns: ``index`` (position in the predicted data set), ``file`` (the image's path when the
data set keeps paths, like ``torchvision.datasets.ImageFolder`` and ``ImageFolderDataModule``'s
splits, on the fast path too; empty otherwise), ``class`` (predicted class index), ``class_name``
(when the data set names its classes: the folder names for folder data), ``probability``
(softmax probability of that class) and ``label`` (the true label, when the data has one).
"""

from __future__ import annotations

import csv
import os
from typing import Any, cast

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, Subset

from src.files import free_path

COLUMNS = ("index", "file", "class", "class_name", "probability", "label")


def _describe(dataset: Dataset) -> tuple[list[str] | None, list[str] | None, list[int] | None]:
    """(file per index, class names, index map) of a data set, looking through ``Subset`` wrappers."""
    index_map = None
    while isinstance(dataset, Subset):
        inner = list(dataset.indices)
        index_map = inner if index_map is None else [inner[i] for i in index_map]
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    files = [str(sample[0]) for sample in samples] if samples else None
    classes = getattr(dataset, "classes", None)
    return files, list(classes) if classes else None, index_map


class PredictionWriter(BasePredictionWriter):
    """Write ``predictions.csv`` (``predictions-rank<r>.csv`` per process when several) as batches arrive."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self.path: str | None = None
        self._handle: Any = None
        self._writer: Any = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        directory = trainer.log_dir or trainer.default_root_dir
        stem, ext = os.path.splitext(self.filename)
        name = self.filename if trainer.world_size == 1 else f"{stem}-rank{trainer.global_rank}{ext}"
        os.makedirs(directory, exist_ok=True)
        self.path = free_path(directory, name)
        self._handle = open(self.path, "w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(COLUMNS)
        loaders = trainer.predict_dataloaders
        loader = cast(DataLoader, loaders[0] if isinstance(loaders, (list, tuple)) else loaders)  # set by now
        self._files, self._classes, self._index_map = _describe(loader.dataset)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probabilities = prediction["probabilities"]
        top_probability, top_class = probabilities.max(dim=-1)
        labels = batch[1].tolist() if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        if batch_indices is None:  # a sampler Lightning cannot see through: positions in order
            start = batch_idx * len(probabilities)
            batch_indices = range(start, start + len(probabilities))
        for row, index in enumerate(batch_indices):
            source = self._index_map[index] if self._index_map is not None else index
            predicted = int(top_class[row])
            self._writer.writerow(
                (
                    index,
                    self._files[source] if self._files else "",
                    predicted,
                    self._classes[predicted] if self._classes and predicted < len(self._classes) else "",
                    f"{float(top_probability[row]):.6f}",
                    labels[row] if labels is not None else "",
                )
            )

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

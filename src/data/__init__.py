"""LightningDataModules. Each exposes ``num_classes`` and ``input_shape``; see ``base.py``."""

from src.data.base import BatchSizeError, DatasetNotFoundError, ImageClassificationDataModule
from src.data.cifar import CIFARDataModule
from src.data.synthetic import SyntheticDataModule

__all__ = [
    "BatchSizeError",
    "CIFARDataModule",
    "DatasetNotFoundError",
    "ImageClassificationDataModule",
    "SyntheticDataModule",
]

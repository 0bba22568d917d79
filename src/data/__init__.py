"""LightningDataModules. Each exposes ``num_classes`` and ``input_shape``; see ``base.py``."""

from src.data.base import BatchSizeError, DataError, DatasetNotFoundError, ImageClassificationDataModule
from src.data.cifar import CIFARDataModule
from src.data.folder import ImageFolderDataModule
from src.data.synthetic import SyntheticDataModule

__all__ = [
    "BatchSizeError",
    "CIFARDataModule",
    "DataError",
    "DatasetNotFoundError",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
]

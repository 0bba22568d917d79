"""CIFAR-10 / CIFAR-100 as in He et al. (2015), section 4.2.

* train / val: a deterministic split of the official training set (45,000 / 5,000 by default);
  val images are the un-augmented training images held out by ``split_seed``;
* test: the official test split;
* augmentation on train only: 4-pixel zero padding, random 32x32 crop, horizontal flip;
* per-channel normalisation with the data set's own mean and standard deviation.

Files come from torchvision's downloader (checksums verified). With no network, the error
names the folder and the archive to put there instead of a downloader stack trace. On a
cluster the download happens once per shared ``data_dir``: the first process of each node
(Lightning's ``prepare_data_per_node``) takes a lock file in ``data_dir`` first, so the others
wait and then find the verified files (see ``src.data.locking``).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import v2

from src.data import transforms
from src.data.base import DatasetNotFoundError, ImageClassificationDataModule
from src.data.fast import FastLoaderMixin, Uint8Images, fast_split, resident_device
from src.data.locking import LOCK_NAME, file_lock

CIFAR_INFO = {
    "cifar10": {
        "dataset_class": datasets.CIFAR10,
        "num_classes": 10,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
    "cifar100": {
        "dataset_class": datasets.CIFAR100,
        "num_classes": 100,
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
}


class CIFARDataModule(FastLoaderMixin, ImageClassificationDataModule):
    """CIFAR-10 or CIFAR-100 with the paper's split, augmentation and normalisation.

    Args:
        dataset: ``cifar10`` or ``cifar100``.
        data_dir: folder holding (or receiving) ``cifar-10-batches-py`` / ``cifar-100-python``.
        download: download the files into ``data_dir`` when they are missing.
        val_size: training images held out for validation; 0 trains on all of them with no validation (the
            paper's final runs: its 45k/5k split only chose the schedule).
        split_seed: seed of the train/val split (independent of the training seed, so every
            run of a study validates on the same images).
        augment: the paper's pad-crop-flip augmentation on the training split.
        batch_size: the global batch, all processes together (each loads ``batch_size / world_size``).
        num_workers: loader processes per training process; ``null``: up to 4, from the CPUs this process
            may use shared among the processes on its node.
        pin_memory: page-locked host memory for faster copies to a GPU; ``null``: when CUDA is available.
        normalize: ``channel`` -- per-channel mean and standard deviation of the data set; ``pixel`` -- subtract
            the per-pixel mean image of the training split (He et al.: "the per-pixel mean subtracted"), before
            the pad-and-crop, so the padding is the mean image's value and no std is divided.
        fast: the fast path of ``src.data.fast`` -- every split held as one uint8 tensor (on the GPU when
            training on one) and augmented a whole batch at a time, same augmentation distribution;
            ``false``: torchvision's per-sample PIL transforms in ``num_workers`` loader processes;
            ``null``: the fast path, except with ``normalize: pixel`` (which it does not implement).
    """

    def __init__(
        self,
        dataset: Literal["cifar10", "cifar100"] = "cifar10",
        data_dir: str = "data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: bool = True,
        batch_size: int = 128,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        normalize: Literal["channel", "pixel"] = "channel",
        fast: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.save_hyperparameters()  # checkpoints carry the data config: `test --ckpt_path X` needs no --config
        if dataset not in CIFAR_INFO:
            raise ValueError(f"dataset must be one of {sorted(CIFAR_INFO)}, got {dataset!r}")
        if val_size < 0:
            raise ValueError(f"val_size must be >= 0 (images held out of the training set; 0: none), got {val_size}")
        if normalize not in ("channel", "pixel"):
            raise ValueError(f"normalize must be 'channel' or 'pixel', got {normalize!r}")
        if fast and normalize == "pixel":
            raise ValueError(
                "normalize: pixel subtracts the mean image before the random crop, which the fast path does not "
                "do: set data.fast false (or null)"
            )
        self.dataset = dataset
        self.info = CIFAR_INFO[dataset]
        self.data_dir = data_dir
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed
        self.augment = augment
        self.normalize = normalize
        self.fast = normalize == "channel" if fast is None else fast
        self.mean_image: torch.Tensor | None = None  # normalize: pixel -- set in setup from the training split
        self.num_classes = self.info["num_classes"]
        self.input_shape = (3, 32, 32)

    # ---------------------------------------------------------------- transforms
    @property
    def train_transform(self) -> v2.Compose:
        if self.mean_image is not None:
            return transforms.minus_image(self.mean_image, augment=self.augment, padding=4)
        return transforms.build("cifar" if self.augment else "none", 32, True, self.info["mean"], self.info["std"])

    @property
    def eval_transform(self) -> v2.Compose:
        if self.mean_image is not None:
            return transforms.minus_image(self.mean_image, augment=False)
        return transforms.build("cifar", 32, False, self.info["mean"], self.info["std"])

    # ---------------------------------------------------------------- files
    @property
    def folder(self) -> str:
        return f"{self.data_dir}/{self.info['dataset_class'].base_folder}"

    def _how_to_get_it(self) -> str:
        dataset_class = self.info["dataset_class"]
        return (
            f"Either run once with internet access and data.download: true, or download {dataset_class.url} "
            f"yourself and extract it into '{self.data_dir}' (it unpacks to '{self.folder}')."
        )

    def _open(self, train: bool, transform: v2.Compose, download: bool = False) -> datasets.CIFAR10:
        try:
            return self.info["dataset_class"](self.data_dir, train=train, transform=transform, download=download)
        except RuntimeError as err:
            if "not found or corrupted" not in str(err):
                raise
            raise DatasetNotFoundError(
                f"{self.dataset} was not found (or its files failed their checksum) in '{self.folder}'. "
                f"{self._how_to_get_it()}"
            ) from None

    def prepare_data(self) -> None:
        """Download once per shared ``data_dir``: one process per node runs this, the lock serialises nodes."""
        if not self.download:
            return  # setup() reports missing files
        try:
            with file_lock(os.path.join(self.data_dir, LOCK_NAME)):
                self._open(train=True, transform=None, download=True)
                self._open(train=False, transform=None, download=True)
        except DatasetNotFoundError:
            raise
        except OSError as err:  # URLError and socket errors are OSErrors
            raise DatasetNotFoundError(
                f"{self.dataset} is not in '{self.folder}' and could not be downloaded ({err}). {self._how_to_get_it()}"
            ) from None

    # ---------------------------------------------------------------- splits
    def split_indices(self, train_set_size: int) -> tuple[list[int], list[int]]:
        """(train, val) indices into the official training set; a pure function of ``split_seed``."""
        if self.val_size >= train_set_size:
            raise ValueError(f"val_size ({self.val_size}) must be smaller than the training set ({train_set_size})")
        if self.val_size == 0:
            return list(range(train_set_size)), []
        order = torch.randperm(train_set_size, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        return order[self.val_size :], order[: self.val_size]

    def _fast_splits(self, train: bool) -> tuple:
        """The fast path's splits: the official arrays (N x 32 x 32 x 3 uint8) as they are, split in memory."""
        raw = self._open(train, transform=None)
        images = Uint8Images.from_hwc(raw.data, raw.targets)
        options = dict(
            mean=self.info["mean"],
            std=self.info["std"],
            padding=4 if self.augment else 0,
            flip_p=0.5 if self.augment else 0.0,
            device=resident_device(self),
        )
        if not train:
            return (fast_split(images, train=False, **options),)
        train_indices, val_indices = self.split_indices(len(images))
        return (
            fast_split(images.subset(train_indices), train=True, **options),
            fast_split(images.subset(val_indices), train=False, **options) if val_indices else None,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.fast:
            if stage in (None, "fit", "validate") and self.train_set is None:
                self.train_set, self.val_set = self._fast_splits(train=True)
            if stage in (None, "test", "predict") and self.test_set is None:
                (self.test_set,) = self._fast_splits(train=False)
            return
        if self.normalize == "pixel" and self.mean_image is None:
            raw = self._open(True, transform=None)
            train_indices, _ = self.split_indices(len(raw))
            self.mean_image = transforms.mean_image(raw.data[train_indices])
        if stage in (None, "fit", "validate") and self.train_set is None:
            augmented, plain = self._open(True, self.train_transform), self._open(True, self.eval_transform)
            train_indices, val_indices = self.split_indices(len(augmented))
            self.train_set = Subset(augmented, train_indices)
            self.val_set = Subset(plain, val_indices) if val_indices else None
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = self._open(False, self.eval_transform)

    def val_dataloader(self) -> DataLoader | list:
        """No validation loader with ``val_size: 0`` (Lightning then skips validation)."""
        return [] if self.val_size == 0 else super().val_dataloader()

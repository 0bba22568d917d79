"""The fast path for small images: decode once, hold uint8 tensors in memory, augment whole batches.

Why: on small images (CIFAR's 32x32) the per-sample pipeline -- JPEG decode, PIL crop and flip,
``ToTensor``, ``Normalize``, one Python call per image -- costs more than the network. On a 2-core
CPU it delivers about 750 images/s per process and its loader workers compete with the model for
the cores; on a GPU it starves the model. Here instead:

* **decode once** (:func:`load_or_decode`): a list of ``(path, label)`` files becomes one uint8
  array ``N x C x H x W`` plus labels, in a cache file that is memory-mapped on the next run. The
  file's name holds a key over every file's path, size and mtime and the decode settings, so a
  changed folder is decoded again instead of read stale. It is built once per node by parallel
  processes, straight into the preallocated file (``src/data/image_cache.py``), and decoded as the
  per-sample path decodes (``src/data/decode.py``). In-memory data sets (CIFAR's ``.data``) skip
  the disk: :meth:`Uint8Images.from_hwc`;
* **batched augmentation** (:class:`BatchAugment`): per-sample random crop offsets with zero
  padding and per-sample horizontal flips as one gather over the batch, then uint8 -> float and
  normalisation -- the same distribution as ``v2.RandomCrop(size, padding)`` +
  ``v2.RandomHorizontalFlip()`` + ``ToDtype`` + ``Normalize``, with no per-sample Python;
* **batches by index** (:class:`FastImageDataset`, :func:`fast_loader`): a ``Dataset`` whose
  ``__getitems__`` returns a whole augmented batch, in a plain ``DataLoader`` (no workers). The
  sampler stays a standard one, so Lightning's DDP sampler replacement shards it as usual: each
  process sees its own shard once per epoch, reshuffled every epoch from the run's seed.

The batch is augmented where the uint8 tensor lives. :meth:`FastImageDataset.to` moves it to the
model's device (the DataModules do that in ``setup`` when the trainer runs on a GPU), so on a GPU
an epoch never leaves the GPU: no host decode, no host-to-device copy, augmentation on the GPU.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from src.data import image_cache
from src.data.decode import READ_MODES

# Bump when the cache layout or the decoding changes: the key then differs and an old cache is never read.
# 2: resize-and-centre-crop like the presets (was a squash), PIL fallback, 16-bit scaled to 8.
CACHE_VERSION = 2


# ---------------------------------------------------------------- decode once
class Uint8Images:
    """A whole split in memory: ``images`` (N x C x H x W, uint8) and ``labels`` (N, int64)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)

    @classmethod
    def from_hwc(cls, data: Any, labels: Sequence[int]) -> Uint8Images:
        """From an N x H x W x C uint8 array (numpy or torch), e.g. torchvision's ``CIFAR10(...).data``."""
        images = torch.as_tensor(data)
        if images.dim() == 3:  # N x H x W: one channel
            images = images[..., None]
        return cls(images.permute(0, 3, 1, 2).contiguous(), torch.as_tensor(labels))

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> Uint8Images:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return Uint8Images(self.images[index], self.labels[index])


def decode_files(
    samples: Sequence[tuple[str, int]], channels: int = 3, size: int | None = None, workers: int = 0
) -> Uint8Images:
    """Decode ``(path, label)`` files into one preallocated uint8 tensor, as the per-sample path decodes them.

    ``channels`` converts every image (1: grey, 3: RGB, 4: RGBA). ``size`` brings each image to
    ``size`` x ``size`` like the transform presets (shorter side resized, centre crop:
    :func:`src.data.decode.fit_square`); without it every image must already have the same size.
    ``workers`` decoding processes (0: this one).
    """
    _check_request(samples, channels)
    return Uint8Images(*image_cache.decode_to_memory(samples, channels, size, workers))


def _check_request(samples: Sequence[tuple[str, int]], channels: int) -> None:
    if channels not in READ_MODES:
        raise ValueError(f"channels must be one of {sorted(READ_MODES)}, got {channels}")
    if not samples:
        raise ValueError("no files to decode: the sample list is empty")


def tensor_cache_key(samples: Sequence[tuple[str, int]], channels: int, size: int | None) -> str:
    """A hash of every file's path, label, size, mtime and ctime and of the decode settings.

    Adding, removing, replacing or relabelling a file, or decoding differently, changes the key. The
    ctime catches a file replaced by one of the same size whose mtime was kept (``cp -p``, ``rsync -a``,
    an archive extracted again): tools can set the mtime, not the ctime.
    """
    digest = hashlib.sha256(f"v{CACHE_VERSION} channels={channels} size={size}\n".encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{path}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ctime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_or_decode(
    samples: Sequence[tuple[str, int]],
    cache_dir: str | os.PathLike | None,
    name: str = "images",
    channels: int = 3,
    size: int | None = None,
    workers: int = 0,
) -> Uint8Images:
    """Decoded ``samples``, memory-mapped from ``cache_dir/<name>-<key>.uint8``, built first if missing.

    Built once per node: the first process to take the cache folder's lock decodes (with ``workers``
    processes), the others wait and map the finished file (see ``src/data/image_cache.py``).
    ``cache_dir=None`` decodes into memory without caching. A cache folder that cannot be written
    (a read-only data set) is a warning, not an error: the run goes on with the images in memory.
    """
    _check_request(samples, channels)
    if cache_dir is None:
        return decode_files(samples, channels, size, workers)
    key = tensor_cache_key(samples, channels, size)
    return Uint8Images(*image_cache.load_or_build(samples, cache_dir, name, key, channels, size, workers))


# ---------------------------------------------------------------- batched augmentation
class BatchAugment(nn.Module):
    """Random crop with zero padding + horizontal flip + normalisation of a uint8 batch, in a few tensor ops.

    Per sample: a crop offset uniform over the ``(2 * padding + 1)^2`` positions of the padded image
    (``v2.RandomCrop(size, padding=padding)``) and a flip with probability ``flip_p``; ``train=False``
    only normalises. Random numbers come from ``generator`` or the global RNG of the batch's device
    (seeded by ``seed_everything``).

    Args:
        mean / std: per-channel normalisation, on the 0-1 scale.
        padding: zero padding of the random crop (0: no crop).
        flip_p: probability of a horizontal flip.
        channels_last: return the batch in channels-last memory format.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 4,
        flip_p: float = 0.5,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if padding < 0 or not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"need padding >= 0 and 0 <= flip_p <= 1, got padding={padding}, flip_p={flip_p}")
        self.scale: Tensor
        self.shift: Tensor
        std_t = torch.tensor(std, dtype=torch.float32)
        # (x / 255 - mean) / std as one multiply-add.
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", (-torch.tensor(mean) / std_t).view(1, -1, 1, 1), persistent=False)
        self.padding = padding
        self.flip_p = flip_p
        self.channels_last = channels_last

    def crop_and_flip(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The augmented uint8 batch, the crop offsets (B x 2, top/left in the padded image) and the flips."""
        batch, channels, height, width = images.shape
        device, pad = images.device, self.padding
        offsets = torch.randint(0, 2 * pad + 1, (batch, 2), device=device, generator=generator)
        flips = torch.rand(batch, device=device, generator=generator) < self.flip_p
        rows = offsets[:, :1] + torch.arange(height, device=device)  # B x H, indices into the padded image
        cols = offsets[:, 1:] + torch.arange(width, device=device)  # B x W
        cols = torch.where(flips[:, None], cols.flip(1), cols)
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        # One gather over flattened pixels (all channels share the index): about 3x faster than 4-D indexing.
        padded_width = width + 2 * pad
        index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, height * width)
        flat = padded.reshape(batch, channels, -1).gather(2, index.expand(batch, channels, height * width))
        return flat.view(batch, channels, height, width), offsets, flips

    def normalize(self, images: Tensor) -> Tensor:
        out = images.float().mul_(self.scale.to(images.device)).add_(self.shift.to(images.device))
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def forward(self, images: Tensor, train: bool = True, generator: torch.Generator | None = None) -> Tensor:
        if train and (self.padding or self.flip_p):
            images = self.crop_and_flip(images, generator)[0]
        return self.normalize(images)


# ---------------------------------------------------------------- batches by index
class FastImageDataset(Dataset):
    """In-memory uint8 images that come out of a ``DataLoader`` as whole augmented float batches.

    ``dataset[i]`` is one (augmented) sample, for inspection; a ``DataLoader`` built by
    :func:`fast_loader` calls ``__getitems__`` with a batch of indices and gets ``(images, labels)``
    back in one gather + one augmentation. ``train`` picks augmentation or normalisation only.
    """

    def __init__(self, data: Uint8Images, augment: BatchAugment, train: bool) -> None:
        self.data = data
        self.augment = augment
        self.train = train
        # Set by a folder DataModule: ``(path, label)`` per index and the class names, for predictions.csv.
        self.samples: list[tuple[str, int]] | None = None
        self.classes: list[str] | None = None
        self.generator: torch.Generator | None = None  # None: crops and flips from the device's global generator

    def seed_draws(self, seed: int | None) -> None:
        """Draw the crops and flips from a generator of this dataset's own, seeded with ``seed`` (None: the global one).

        Under DDP every process has the same global generators (``seed_everything`` runs in each), so each
        process's k-th image got the same crop and flip; ``src.callbacks.resume.RandomState`` gives each process
        a seed of its own at every epoch start.
        """
        self.generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def device(self) -> torch.device:
        return self.data.images.device

    def to(self, device: torch.device | str) -> FastImageDataset:
        """Move the uint8 images and labels to ``device`` (e.g. the GPU the model trains on); returns self."""
        self.data = Uint8Images(self.data.images.to(device), self.data.labels.to(device))
        if self.generator is not None:  # a generator draws on its own device: seeded again there
            self.seed_draws(self.generator.initial_seed())
        return self

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64).to(self.device, non_blocking=True)
        with single_thread(self.device):
            images = self.augment(self.data.images[index], train=self.train, generator=self.generator)
            return images, self.data.labels[index]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """On a CPU, run the batch's gathers and casts on one thread.

    They are small and memory-bound: more threads barely help on a quiet machine, and on a busy one
    (other processes on the cores) OpenMP's thread hand-offs make them 10x slower. The model keeps
    all threads.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def keep_batch(batch: Any) -> Any:
    """``collate_fn`` for datasets whose ``__getitems__`` already returns the batch."""
    return batch


def fast_loader(
    dataset: FastImageDataset, batch_size: int, shuffle: bool, pin_memory: bool = False, sampler: Any = None
) -> DataLoader:
    """A ``DataLoader`` over whole batches: no workers (a batch is a gather), a standard sampler.

    ``batch_size`` is per process; ``sampler`` is for evaluation under DDP (the DataModule's unpadded
    distributed sampler, so every sample is scored exactly once).

    Keeping ``RandomSampler``/``SequentialSampler`` lets Lightning swap in its ``DistributedSampler``
    under DDP (one shard per process, reshuffled per epoch with ``set_epoch``); without DDP the order
    is drawn from the global RNG each epoch, so ``seed_everything`` fixes it.
    """
    # A batch is one gather from memory: loader workers would only add copies. Lightning's advice to add
    # some (a PossibleUserWarning) does not apply to these loaders.
    warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers", category=PossibleUserWarning)
    pin = pin_memory and dataset.device.type == "cpu" and torch.cuda.is_available()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=0,
        collate_fn=keep_batch,
        pin_memory=pin,
    )


def resident_device(datamodule: Any) -> torch.device:
    """Where a DataModule's fast data should live: the trainer's accelerator device if it is a GPU, else the CPU."""
    trainer = getattr(datamodule, "trainer", None)
    device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
    return device if device.type == "cuda" else torch.device("cpu")


class FastLoaderMixin:
    """Mixin for an ``ImageClassificationDataModule``: splits that are ``FastImageDataset`` get :func:`fast_loader`.

    Put it first in the bases (``class ImageFolderDataModule(FastLoaderMixin, ImageClassificationDataModule)``)
    and set ``self.train_set`` etc. to :func:`fast_split` results in ``setup``; other splits keep the
    base class's loader.
    """

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if isinstance(dataset, FastImageDataset):
            sampler = None if shuffle else self._eval_sampler(dataset)  # type: ignore[attr-defined]
            batch_size = self.per_process_batch_size  # type: ignore[attr-defined]
            return fast_loader(dataset, batch_size, shuffle, getattr(self, "pin_memory", False), sampler)
        return super()._loader(dataset, shuffle)  # type: ignore[misc]

    def clean_train_dataloader(self) -> DataLoader | None:
        """The training split without augmentation, in a fixed order (for ``score_train_split``)."""
        train = getattr(self, "train_set", None)
        if isinstance(train, FastImageDataset):
            return self._loader(FastImageDataset(train.data, train.augment, train=False), shuffle=False)
        clean = getattr(self, "_clean_train_set", None)
        return self._loader(clean(), shuffle=False) if callable(clean) and train is not None else None


def fast_split(
    samples: Sequence[tuple[str, int]] | Uint8Images,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    cache_dir: str | os.PathLike | None = None,
    name: str = "images",
    channels: int = 3,
    size: int | None = None,
    padding: int = 4,
    flip_p: float = 0.5,
    device: torch.device | str = "cpu",
    workers: int = 0,
) -> FastImageDataset:
    """One split on the fast path, from ``(path, label)`` files (decoded once, cached) or decoded images.

    For a folder data module: ``self.train_set = fast_split(train_samples, mean, std, train=True,
    cache_dir=f"{root}/.fast_cache", name="train", size=image_size, device=resident_device(self))``.
    """
    if isinstance(samples, Uint8Images):
        data = samples
    else:
        data = load_or_decode(samples, cache_dir, name, channels, size, workers)
    return FastImageDataset(data, BatchAugment(mean, std, padding, flip_p), train).to(device)

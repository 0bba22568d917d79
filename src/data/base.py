"""What every image DataModule here shares: loaders, and the facts the model needs.

A DataModule exposes ``num_classes`` and ``input_shape`` (C, H, W). The CLI links
``num_classes`` and ``in_channels`` into the model, and the efficiency callback reads
``input_shape`` to count MACs at the size actually trained on -- so switching datasets
never needs a model edit.

Under DDP the same config must mean the same training and the same evaluation on any number
of processes, so:

* ``batch_size`` is the *global* batch (samples per optimizer step, all processes together);
  each process loads ``batch_size / world_size`` and a batch that does not divide is an error.
  Optimizer steps per epoch, ``max_steps`` and step-based LR milestones then mean the same
  number of epochs on 1 GPU or 8.
* val / test / predict loaders get an *unpadded* distributed sampler: every sample is scored
  exactly once (Lightning's default sampler pads with repeats to equalise processes).
* loader workers are counted from the CPUs this process may use (affinity, cgroup quota,
  SLURM's ``--cpus-per-task``), shared among the processes on the node.
"""

from __future__ import annotations

import os
from collections.abc import Sized

import lightning.pytorch as pl
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from src.machine import available_cpus


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing and cannot be fetched; the message says where and how to get them."""


class BatchSizeError(ValueError):
    """The global batch cannot be split evenly among the processes; the message says which sizes can."""


def cpus_per_process(local_processes: int | None = None) -> int:
    """This process's share of the node's CPUs.

    Under ``srun`` each task is one process and SLURM says its share (``SLURM_CPUS_PER_TASK``).
    Otherwise the processes on this node (``local_processes``; else torchrun's
    ``LOCAL_WORLD_SIZE``; else 1) share the CPUs this process may use.
    """
    cpus = available_cpus()
    slurm_share = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm_share.isdigit() and "SLURM_LOCALID" in os.environ:  # a task started by srun
        return max(1, min(cpus, int(slurm_share)))
    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpus // max(1, local_processes))


def default_num_workers(local_processes: int | None = None, cap: int = 4) -> int:
    """Loader processes for one training process: up to ``cap``, leaving one of its CPUs to the process itself."""
    return max(0, min(cap, cpus_per_process(local_processes) - 1))


def split_global_batch(global_batch: int, world_size: int) -> int:
    """Per-process batch of a global batch; a :class:`BatchSizeError` when it does not divide evenly."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if global_batch % world_size:
        below = global_batch // world_size * world_size
        options = ", ".join(str(size) for size in (below, below + world_size) if size > 0)
        raise BatchSizeError(
            f"data batch_size {global_batch} is the global batch and does not divide among {world_size} processes "
            f"(devices x nodes); use a multiple of {world_size}, e.g. {options}"
        )
    return global_batch // world_size


class ImageClassificationDataModule(pl.LightningDataModule):
    """Base class: subclasses set ``train_set`` / ``val_set`` / ``test_set`` in ``setup``."""

    num_classes: int
    input_shape: tuple[int, int, int]

    def __init__(self, batch_size: int, num_workers: int | None, pin_memory: bool | None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size  # global: all processes together
        self._auto_workers = num_workers is None  # re-counted once the trainer says how many processes share a node
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        # Page-locked memory only helps copies to a GPU (and warns without one).
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def has_test_split(self) -> bool:
        """Whether ``test`` has data to score: the CLI's ``test_after_fit: null`` (the default) tests after fit
        exactly when this is true. Data sets with a test split say so here; a folder without ``test/`` does not."""
        return True

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def world_size(self) -> int:
        """Processes sharing the global batch (1 before a trainer is attached)."""
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def per_process_batch_size(self) -> int:
        return split_global_batch(self.batch_size, self.world_size)

    def _workers(self) -> int:
        if self._auto_workers and self.trainer is not None and self.world_size > 1:
            self.num_workers = default_num_workers(local_processes=self.trainer.num_devices)
        return self.num_workers

    def _eval_sampler(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """Each process takes every ``world_size``-th sample, no padding: every sample is scored exactly once.

        Lightning leaves a loader alone when its sampler is already a ``DistributedSampler``
        (this one is), so its padded replacement never happens. Processes may run one batch
        fewer than others; that is safe in evaluation as long as each runs at least one.
        """
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        if not kwargs or kwargs.get("num_replicas", 1) <= 1:
            return None
        size = len(dataset) if isinstance(dataset, Sized) else None
        if size is not None and size < kwargs["num_replicas"]:
            raise ValueError(
                f"an evaluation split of {size} samples cannot be spread over {kwargs['num_replicas']} processes "
                "(each needs at least one); evaluate on fewer devices"
            )
        return UnrepeatedDistributedSampler(dataset, shuffle=False, **kwargs)

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        """Per-process loader: training batches are shuffled (Lightning adds the distributed sampler)."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split yet")
        workers = self._workers()
        return DataLoader(
            dataset,
            batch_size=self.per_process_batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else self._eval_sampler(dataset),
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:  # a subclass may return [] for no validation (Lightning's way)
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

"""Image folders: your own photos, ImageNet and its subsets, Imagenette / Imagewoof, Tiny-ImageNet.

Layout: ``root/train/<class>/<image>`` (images may sit deeper inside a class folder), optionally
``root/val/<class>/...`` and ``root/test/<class>/...``. Without ``val``, a stratified validation
split is carved from ``train`` (a pure function of ``split_seed``); without ``test``, ``test_split``
carves a test split from ``train`` too (before validation, so the three never share an image), and
otherwise testing says so. ILSVRC-2012's official flat ``val/`` (50,000 files, no class folders) is read through its
ground truth: torchvision's ``meta.bin`` in ``root`` or a ``<file> <wnid>`` text file
(``val_labels``); nothing on disk is moved.

What the model needs is known at instantiation from directory listings only (no image is decoded
there): the chosen classes, hence ``num_classes``, and ``input_shape`` from ``in_channels`` and
``image_size``. ``setup`` then lists the files, decodes every one of them once (in the loader
workers) to find unreadable files *before* training starts, and computes the normalisation
statistics of the training split when none are given; both results are cached under
``cache_dir`` so the next run with the same files starts at once. Under DDP they are computed once
per node: the first process to miss a cache takes ``cache_dir``'s lock and computes it, the others
wait and read it. Every rank makes the same collectives (``trainer.log_dir`` is one), in the same order.

Decoding uses ``torchvision.io.decode_image`` on the file's bytes (uint8, CHW, converted to
``in_channels`` by the decoder: grayscale, palette, CMYK and RGBA files all become RGB, or
grayscale when ``in_channels`` is 1), with PIL as the fallback for formats it cannot read
(``src/data/decode.py``, shared with the fast path, so ``fast: true|false`` sees the same pixels).

Beside it, one job each: ``folder_listing`` (class folders, image files, class subsets),
``folder_layouts`` (a split's samples, ILSVRC's flat ``val/``), ``splits`` (stratified held-out splits),
``folder_decode`` (the per-sample dataset, the file check), ``folder_cache`` (the check's and the
statistics' caches), ``folder_scan`` (the file check and the statistics, once per node). This module is
the DataModule: its settings, and the order ``setup`` does things in.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from contextlib import ExitStack
from typing import Literal, cast

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from src.data import image_cache, transforms
from src.data.base import DataError, DatasetNotFoundError, ImageClassificationDataModule
from src.data.fast import FastImageDataset, FastLoaderMixin, fast_split, resident_device
from src.data.folder_cache import cache_key, file_identities
from src.data.folder_decode import ImageFiles, Sample
from src.data.folder_layouts import class_folder_samples, flat_val_samples, is_flat_folder
from src.data.folder_listing import choose_classes, first_image, list_class_folders, read_class_list
from src.data.folder_options import check_folder_options, data_root
from src.data.folder_record import changes, check_resume, first_record, split_files
from src.data.folder_scan import FolderScanMixin
from src.data.splits import stratified_split
from src.files import free_path, write_json_atomic

SPLITS = ("train", "val", "test")
RUN_RECORD = "data.json"
SMALL_IMAGE_SIZE = 64  # preset: null picks 'cifar' up to this side, 'imagenet' above


class ImageFolderDataModule(FolderScanMixin, FastLoaderMixin, ImageClassificationDataModule):
    """Images in class folders (see the module docstring for layouts, decoding and caching).

    Args:
        root: folder holding ``train/`` (and optionally ``val/``, ``test/``), each with one folder per class.
        dataset: instead of ``root``, a downloadable data set: ``imagenette-160``, ``imagenette-320``,
            ``imagenette``, ``imagewoof-160``, ``imagewoof-320``, ``imagewoof``, ``tiny-imagenet``.
        data_dir: where ``dataset`` is downloaded and extracted (once), and the default cache location.
        download: fetch ``dataset`` when it is not in ``data_dir`` yet.
        classes: the classes to use: a shipped list name (``imagenet100``, ``imagenette``, ``imagewoof``),
            a path to a text file with one class-folder name per line, or a list of names; ``null``: all.
        class_count: use this many classes, chosen at random (by ``class_seed``) from ``classes``.
        class_seed: seed of that choice; the same seed picks the same classes on any machine.
        max_per_class: keep at most this many training images per class (chosen by ``split_seed``),
            before the validation split is carved; for fast studies.
        val_split: with no ``val/`` folder: the fraction (< 1) or number (>= 1) of training images held
            out for validation, the same share from every class.
        test_split: with no ``test/`` folder: the fraction (< 1) or number (>= 1) of training images held
            out as the test split, the same share from every class, carved *before* the validation split
            (so the test images do not depend on ``val_split``) and never seen by training or by checkpoint
            selection: the clean protocol for a folder without a test split. ``null``: none.
        split_seed: seed of the test and validation splits and of ``max_per_class``.
        val_labels: ground truth of a flat ``val/`` (ILSVRC-2012): a text file of ``<file> <class>`` lines
            (whitespace or comma separated, e.g. Kaggle's ``LOC_val_solution.csv``) or torchvision's
            ``meta.bin``; ``null`` looks for ``root/meta.bin``.
        preset: augmentation, ``cifar`` / ``imagenet`` / ``none`` (see ``src/data/transforms.py``); ``null``
            picks from ``image_size``: ``cifar`` up to 64 px (pad-crop-flip, on the fast path), else ``imagenet``.
        image_size: side of the square images the model sees; ``null``: the shorter side of the first
            training image (right for data sets of one size, such as CIFAR or MNIST exports).
        in_channels: 3 (every file converted to RGB) or 1 (every file converted to grayscale).
        mean, std: per-channel normalisation; ``null``: computed once from the training split (cached).
        bad_files: ``error`` lists every unreadable image file and stops before training; ``skip`` leaves
            them out with one warning that lists them.
        check_files: decode every file once before training (cached); ``false`` skips the check.
        cache_dir: where the file check and statistics are cached; ``null``: ``<data_dir>/.cache``.
        test_on_val: with no ``test/`` folder, ``test`` scores the validation split (held out of train, also
            used to pick the best checkpoint: selected and scored on the same images, so optimistic; prefer
            ``test_split``); ``data.json`` records the test source.
        fast: the fast path of ``src.data.fast``: every split decoded once into a uint8 tensor (cached in
            ``cache_dir``, rebuilt when the files change) and augmented a whole batch at a time on the
            model's device -- the ``cifar`` preset's pad-crop-flip with the same distribution. ``null``:
            on with the ``cifar`` preset (small images held in memory), off otherwise. The cache is built once
            per node (the other processes wait, then memory-map it), by ``num_workers`` processes (``null``: all
            this process's CPUs), with a progress line.
        fast_max_gb: the most decoded images the fast path may hold, in GB (all splits together; estimated from
            the file count before anything is decoded). Above it setup stops with an error that names
            ``data.fast false``. ``null``: half of this machine's memory.
        batch_size: the *global* batch: samples per optimizer step, all processes together (each of N
            processes loads ``batch_size / N``; see ``src/data/base.py``).
        num_workers: loader processes; ``null`` picks from the CPU count.
        pin_memory: page-locked host memory; ``null``: when CUDA is available.
        allow_changed_data: let a resumed ``fit`` continue on a folder whose files changed since the run
            started (refused otherwise; see ``src/data/folder_record.py``); the change is recorded.
    """

    def __init__(
        self,
        root: str | None = None,
        dataset: str | None = None,
        data_dir: str = "data",
        download: bool = True,
        classes: list[str] | str | None = None,
        class_count: int | None = None,
        class_seed: int = 0,
        max_per_class: int | None = None,
        val_split: float = 0.1,
        test_split: float | None = None,
        split_seed: int = 0,
        val_labels: str | None = None,
        preset: transforms.Preset | None = None,
        image_size: int | None = None,
        in_channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        bad_files: Literal["error", "skip"] = "error",
        check_files: bool = True,
        cache_dir: str | None = None,
        test_on_val: bool = False,
        fast: bool | None = None,
        fast_max_gb: float | None = None,
        batch_size: int = 128,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        allow_changed_data: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.save_hyperparameters()
        check_folder_options(
            preset, in_channels, val_split, test_split, test_on_val, mean, std, bad_files, fast_max_gb,
            class_count=class_count, max_per_class=max_per_class, image_size=image_size,
        )  # fmt: skip
        self.test_on_val = test_on_val
        self.test_split = test_split
        self.root = root = data_root(root, dataset, data_dir, download)
        self.channels = in_channels
        self.max_per_class, self.val_split, self.split_seed = max_per_class, val_split, split_seed
        self.val_labels = val_labels
        self.mean, self.std = mean, std
        self.allow_changed_data = allow_changed_data
        self._changed_since_start: list[str] = []
        self.bad_files, self.check_files = bad_files, check_files
        self.cache_dir = cache_dir if cache_dir is not None else os.path.join(data_dir, ".cache")

        train_dir, self._available = self._train_classes()
        names = read_class_list(classes) if isinstance(classes, str) else classes
        self.classes = choose_classes(self._available, names, class_count, class_seed, train_dir)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.image_size = image_size = image_size if image_size is not None else self._first_image_size(train_dir)
        if preset is None:  # small images (CIFAR, Tiny-ImageNet) get CIFAR's pad-crop-flip, larger ImageNet's
            preset = "cifar" if image_size <= SMALL_IMAGE_SIZE else "imagenet"
        self.preset = preset
        if fast and preset != "cifar":
            raise DataError(
                f"fast: true implements the 'cifar' preset's pad-crop-flip on whole batches; got preset {preset!r} "
                "(use preset: cifar, or fast: false)"
            )
        self.fast = preset == "cifar" if fast is None else fast
        self.fast_max_gb = fast_max_gb
        self.num_classes = len(self.classes)
        self.input_shape = (in_channels, image_size, image_size)
        self.samples: dict[str, list[Sample]] = {}
        self.skipped: dict[str, str] = {}
        self._recorded = False
        self.record_file = RUN_RECORD  # relative to the run directory; the CLI points an evaluation's elsewhere
        self._results: dict = {}  # decoded-file results of this run's check, reused for the statistics
        self._node_lock: ExitStack | None = None  # the cache folder's lock while _collect holds it
        self._node_locked = False

    def _train_classes(self) -> tuple[str, list[str]]:
        """``<root>/train`` and its class folders, refused with what was found when either is missing."""
        root, train_dir = self.root, self._split_dir("train")
        if not os.path.isdir(root):
            raise DatasetNotFoundError(
                f"data root '{root}' does not exist. Put your images there as '{train_dir}/<class>/<image>' "
                f"(optionally '{root}/val/<class>/...' and '{root}/test/<class>/...'), or point data.root elsewhere"
            )
        if not os.path.isdir(train_dir):
            found = sorted(os.listdir(root))[:10]
            raise DatasetNotFoundError(
                f"'{root}' has no 'train' folder (it holds {found}); expected '{train_dir}/<class>/<image>'"
            )
        available = list_class_folders(train_dir)
        if not available:
            raise DataError(f"'{train_dir}' has no class folders; expected '{train_dir}/<class>/<image>'")
        return train_dir, available

    # ---------------------------------------------------------------- listing
    @property
    def has_test_split(self) -> bool:
        """A ``test/`` folder, or ``test_on_val``: what ``test`` (and ``test_after_fit: null``) will score."""
        return os.path.isdir(self._split_dir("test")) or self.test_on_val or self.test_split is not None

    def _split_dir(self, split: str) -> str:
        return os.path.join(self.root, split)

    def _first_image_size(self, train_dir: str) -> int:
        for name in self.classes:
            path = first_image(os.path.join(train_dir, name))
            if path is not None:
                try:
                    with Image.open(path) as image:
                        return min(image.size)
                except OSError as err:
                    raise DataError(f"cannot read '{path}' to infer image_size ({err}); set data.image_size") from None
        raise DataError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under '{train_dir}'")

    def _foldered(self, split: str, cap: int | None = None) -> list[Sample]:
        """Samples of ``root/<split>/<class>/...`` for the chosen classes (``src.data.folder_layouts``)."""
        folder, train = self._split_dir(split), self._split_dir("train")
        return class_folder_samples(folder, self.class_to_idx, self._available, train, cap, self.split_seed)

    def _list_samples(self) -> tuple[list[Sample], dict[str, list[Sample]]]:
        """(training pool, {split: samples} of the val / test folders that exist)."""
        pool = self._foldered("train", self.max_per_class)
        folders: dict[str, list[Sample]] = {}
        for split in ("val", "test"):
            folder = self._split_dir(split)
            if not os.path.isdir(folder):
                continue
            if split == "val" and is_flat_folder(folder):  # ILSVRC-2012's official val/, through its ground truth
                labels = self.val_labels
                folders[split] = flat_val_samples(folder, self.root, labels, self.class_to_idx, self._available)
            else:
                folders[split] = self._foldered(split)
        return pool, folders

    # ---------------------------------------------------------------- checking and statistics
    def _drop_bad(self, pool: list[Sample], folders: dict[str, list[Sample]]) -> tuple[list, dict]:
        every = pool + [s for samples in folders.values() for s in samples]
        paths = [path for path, _ in every]
        bad = self._check(paths, cache_key("check", "bounded", file_identities(paths), self.channels, self.image_size))
        if not bad:
            return pool, folders
        listing = "; ".join(f"{path} ({reason})" for path, reason in sorted(bad.items()))
        if self.bad_files == "error":
            raise DataError(
                f"{len(bad)} of {len(paths):,} image files cannot be read: {listing}. Fix or delete them, "
                "or set data.bad_files: skip to train without them"
            )
        rank_zero_warn(f"Leaving out {len(bad)} unreadable image files: {listing}")
        self.skipped = bad
        keep = lambda samples: [s for s in samples if s[0] not in bad]  # noqa: E731
        return keep(pool), {split: keep(samples) for split, samples in folders.items()}

    # ---------------------------------------------------------------- setup
    def _collect(self) -> None:
        self._node_lock, self._node_locked = ExitStack(), False
        with self._node_lock:  # taken by the first cache miss, if any (_hold_node_lock)
            self._collect_splits()
        self._node_lock = None

    def _collect_splits(self) -> None:
        pool, folders = self._list_samples()
        if self.fast:  # refused from the listing, before the file check decodes anything
            count = len(pool) + sum(len(samples) for samples in folders.values())
            rank_zero_info(image_cache.check_budget(count, self.channels, self.image_size, self.fast_max_gb))
        if self.check_files:
            pool, folders = self._drop_bad(pool, folders)
        if self.test_split is not None:
            if "test" in folders:
                raise DataError(
                    f"'{self.root}' has a test/ folder: data.test_split would hold out a second test set from train. "
                    "Remove data.test_split to test on the folder"
                )
            rest, test_indices = stratified_split(
                [label for _, label in pool], self.test_split, self.split_seed, "test_split"
            )
            folders["test"] = [pool[i] for i in test_indices]
            pool = [pool[i] for i in rest]
        if "val" in folders:
            train, val = pool, folders["val"]
        else:
            train_indices, val_indices = stratified_split([label for _, label in pool], self.val_split, self.split_seed)
            train, val = [pool[i] for i in train_indices], [pool[i] for i in val_indices]
        # Evaluation splits in a seeded random order, not class by class: a partial evaluation (Lightning's
        # limit_val_batches / limit_test_batches, or lesion/prune --limit-batches) then scores a fair sample of
        # every class instead of the first classes only. The full-split numbers do not depend on the order.
        evaluation = {"val": val, **({"test": folders["test"]} if "test" in folders else {})}
        for split, samples in evaluation.items():
            samples = list(samples)
            random.Random(f"{self.split_seed}-{split}").shuffle(samples)
            evaluation[split] = samples
        self.samples = {"train": train, **evaluation}
        if self.mean is None:
            self.mean, self.std = self._statistics(train)
        self._results = {}

    def transform(self, split: str) -> Callable:
        return transforms.build(self.preset, self.image_size, split == "train", self.mean, self.std)

    def setup(self, stage: str | None = None) -> None:
        if not self.samples:
            self._collect()
            self._record()
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set, self.val_set = self._dataset("train"), self._dataset("val")
        if stage in ("test", "predict") and self.test_set is None:
            if "test" not in self.samples and self.test_on_val:
                self.test_set = self._dataset("val")
            elif "test" not in self.samples:
                raise DataError(
                    f"'{self.root}' has no test split (no '{self._split_dir('test')}' folder). Add one with the same "
                    "class folders as train, evaluate the validation split with the 'validate' subcommand, or set "
                    "data.test_on_val: true to test on it"
                )
            else:
                self.test_set = self._dataset("test")

    def _dataset(self, split: str) -> Dataset:
        """A split as files decoded per sample (the preset's transforms), or on the fast path as one uint8 tensor.

        Either way it carries ``samples`` (path, label) and ``classes`` (names by index), which
        ``predictions.csv`` writes beside each prediction.
        """
        dataset: ImageFiles | FastImageDataset
        if not self.fast:
            dataset = ImageFiles(self.samples[split], self.channels, self.transform(split))
        else:
            dataset = fast_split(
                self.samples[split],
                cast("list[float]", self.mean),  # _collect_splits sets them before a split opens
                cast("list[float]", self.std),
                train=split == "train",
                cache_dir=self.cache_dir,
                name=f"{split}-decoded",
                channels=self.channels,
                size=self.image_size,
                device=resident_device(self),
                workers=self._build_workers(),
            )
            dataset.samples = list(self.samples[split])
        dataset.classes = list(self.classes)
        return dataset

    def _clean_train_set(self) -> Dataset:
        """The training files with the evaluation transforms (for ``clean_train_dataloader`` off the fast path)."""
        return ImageFiles(self.samples["train"], self.channels, self.transform("val"))

    def describe(self) -> dict:
        """What this run trained on: classes (name -> index), split sizes, statistics, skipped files."""
        return {
            "root": os.path.abspath(self.root),
            "classes": self.class_to_idx,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "split_sizes": {split: len(samples) for split, samples in self.samples.items()},
            "val_source": "folder" if os.path.isdir(self._split_dir("val")) else f"split of train ({self.val_split:g})",
            "mean": self.mean,
            "std": self.std,
            "test_source": self._test_source(),
            "preset": self.preset,
            "skipped_files": self.skipped,
            "files": {split: split_files(samples, self.root) for split, samples in self.samples.items()},
            **({"changed_since_start": self._changed_since_start} if self._changed_since_start else {}),
        }

    def _test_source(self) -> str | None:
        if self.test_split is not None:
            return f"split of train ({self.test_split:g})"
        if "test" in self.samples:
            return "folder"
        return "val" if self.test_on_val else None

    def trained_with(self, run_dir: str) -> None:
        """Normalise as the run in ``run_dir`` was trained (lesion and prune, which evaluate without a trainer)."""
        before = first_record(run_dir, RUN_RECORD)
        if before is not None:
            self._take_statistics(before)

    def _take_statistics(self, before: dict) -> None:
        """The statistics the run's weights were trained with, from its first record, unless given in the config.

        Recomputed from the folder as it is now, a changed training split normalised an evaluation's images
        otherwise than training did, unsaid (an audit).
        """
        if self.hparams.get("mean") is None and before.get("mean") and before.get("std"):
            self.mean, self.std = before["mean"], before["std"]

    def _record(self) -> None:
        """Write ``describe()`` as ``data.json`` into the run directory (``data-1.json``... if taken).

        ``trainer.log_dir`` is a collective under DDP (a broadcast from rank zero): every rank reads it, once,
        before rank zero alone writes. Asking on rank zero only pairs its broadcast with whatever collective
        the other ranks make next, and the run fails later with an unrelated error.
        """
        trainer = getattr(self, "trainer", None)
        if self._recorded or trainer is None:
            return
        log_dir = trainer.log_dir  # every rank: a collective
        self._recorded = True
        if not log_dir:
            return
        record = self.describe()
        before = first_record(log_dir, RUN_RECORD)
        if before is not None:  # a fit continuing its run, or an evaluation of one of its checkpoints
            if trainer.state.fn == "fit":  # every rank checks, so every rank stops alike
                self._changed_since_start = check_resume(before, record, self.allow_changed_data, log_dir)
            elif "files" in before and (found := changes(before, record)):
                rank_zero_warn(
                    f"the data differ from those the run '{log_dir}' started with ({'; '.join(found)}); evaluated "
                    "with the normalisation statistics its weights were trained with"
                )
            self._take_statistics(before)
            record = self.describe()
        if not trainer.is_global_zero:
            return
        path = free_path(log_dir, self.record_file)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, record)

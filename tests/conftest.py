"""Shared test helpers. Nothing here touches the network: data is made on the spot."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from src.machine import available_cpus

REPO_ROOT = Path(__file__).resolve().parents[1]

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # ``pytest -n N``: each worker (and the processes its tests start) gets its share of the CPUs. Left at
    # torch's default, N workers each spin one OpenMP thread per CPU and the suite runs slower than on one.
    share = max(1, available_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fake_cifar(root: Path, dataset: str, train_per_file: int, test_size: int, seed: int = 0) -> dict:
    """Write a small data set in the official CIFAR python layout; return each file's md5.

    CIFAR-10: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``.
    CIFAR-100: ``cifar-100-python/train``, ``test``, ``meta``.
    """
    rng = np.random.default_rng(seed)
    cifar10 = dataset == "cifar10"
    dataset_class = datasets.CIFAR10 if cifar10 else datasets.CIFAR100
    num_classes = 10 if cifar10 else 100
    label_key = "labels" if cifar10 else "fine_labels"
    folder = root / dataset_class.base_folder
    folder.mkdir(parents=True, exist_ok=True)

    def batch(count: int) -> dict:
        data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        return {"data": data, label_key: rng.integers(0, num_classes, size=count).tolist()}

    train_files = [name for name, _ in dataset_class.train_list]
    per_file = train_per_file if cifar10 else train_per_file * 5
    for name in train_files:
        (folder / name).write_bytes(pickle.dumps(batch(per_file)))
    (folder / dataset_class.test_list[0][0]).write_bytes(pickle.dumps(batch(test_size)))
    meta_key = dataset_class.meta["key"]
    (folder / dataset_class.meta["filename"]).write_bytes(
        pickle.dumps({meta_key: [f"class_{i}" for i in range(num_classes)]})
    )
    return {path.name: _md5(path) for path in folder.iterdir()}


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """Factory: write a fake CIFAR folder and make torchvision accept its checksums."""

    def make(dataset: str = "cifar10", train_per_file: int = 60, test_size: int = 50) -> Path:
        md5 = write_fake_cifar(tmp_path, dataset, train_per_file, test_size)
        dataset_class = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
        monkeypatch.setattr(dataset_class, "train_list", [[n, md5[n]] for n, _ in dataset_class.train_list])
        monkeypatch.setattr(dataset_class, "test_list", [[n, md5[n]] for n, _ in dataset_class.test_list])
        meta = dict(dataset_class.meta, md5=md5[dataset_class.meta["filename"]])
        monkeypatch.setattr(dataset_class, "meta", meta)
        return tmp_path

    return make


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """Tiny real runs laid out as a study (see tests/study_runs.py); made once, read by many tests.

    Tests must not write into it: copy it (shutil.copytree) first.
    """
    from tests.study_runs import make_study

    return make_study(tmp_path_factory.mktemp("runs"))

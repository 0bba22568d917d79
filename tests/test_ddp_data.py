"""Every DataModule under 2-process DDP (CPU, gloo, torchrun): fit + test finish, every sample is scored once.

Each run is ``python -m src.cli fit`` (testing after fit) under torchrun with two processes, as a user starts it.
A DDP bug in a DataModule's ``setup`` (a collective such as ``trainer.log_dir`` made on one rank only) shows up
as a crash, a hang or a second run directory, so each test asserts one run directory and one ``data.json``.

What must equal the 1-process answer, and is checked exactly: the data (split sizes, statistics: ``data.json``),
the number of samples each evaluation scores, and the evaluation itself -- the checkpoint the 2-process run
tested, tested again by one process, gives the same ``test_acc``. The *training* cannot be bit-equal to a
1-process training and is not compared: under DDP each process shuffles with its own sampler, batch norm
normalises over half the batch, and the gradient all-reduce sums in another order.

Synthetic data under the same check: ``tests/test_distributed.py::test_ddp_fit_and_test_score_every_sample_once_and_
match_one_process``. Runs are tiny (12-px images, ResNet-8, one epoch) so the file stays well under a minute and a
half on two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli import main
from tests.conftest import REPO_ROOT
from tests.image_trees import write_tree

TINY = [
    "--model.arch", "resnet8",
    "--trainer.max_epochs", "1",
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger.init_args.name", "ddp",
    "--model.lr_scheduler.init_args.warmup_steps", "0",
]  # fmt: skip
QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")  # its optimizer, schedule and logger; data overridden
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]


def torchrun(entry: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 <entry> <args>``: ``entry`` is ``["-m", "src.cli"]`` or a script."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, *entry, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def check_ddp_run(runs: Path, val: int, test: int, train: int, global_batch: int) -> dict:
    """The one run directory of a 2-process fit: its counts; returns its efficiency.json."""
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]  # no orphan directory from a mispaired rank
    run = runs / "version_0"
    assert not list(run.glob("data-*.json")) and not list(run.glob("efficiency-*.json"))  # written once
    report = read(run / "efficiency.json")
    assert (report["world_size"], report["global_batch_size"]) == (2, global_batch)
    assert report["val_samples"] == val and report["test_samples"] == test  # no sample scored twice, none left out
    assert report["train_images_seen"] == train  # both shards, one epoch (train sizes here divide by 2)
    assert report["global_step"] == -(-train // global_batch)  # as many steps as one process takes
    for split, samples in (("test", test), ("val", val)):  # an accuracy is a whole number of samples
        accuracy = report["test_acc" if split == "test" else "last_val_acc"]
        assert abs(accuracy * samples - round(accuracy * samples)) < 1e-6
    return report


def test_once_in_process(tmp_path: Path, monkeypatch, *args: str) -> dict:
    """``test --ckpt_path`` of the run's last checkpoint on ONE process (in this process: no interpreter start).

    The evaluation is recorded in the checkpoint's own run, under ``evaluations/``.
    """
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "lightning_logs" / "ddp" / "version_0"
    main(["test", *args, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    return read(run / "evaluations" / "test.json")


test_once_in_process.__test__ = False  # a helper, not a test


# ---------------------------------------------------------------- image folders
FOLDER_CASES = {
    # fast path; val/ and test/ folders (odd sizes: the unpadded sampler gives one process a sample more)
    "fast-with-val-and-test-folders": (
        {"train": {"a": 20, "b": 20}, "val": {"a": 5, "b": 4}, "test": {"a": 6, "b": 5}},
        [],
        {"train": 40, "val": 9, "test": 11},
    ),
    # per-sample path; train/ only: test_split, then val_split carved out of it
    "per-sample-splits-of-train": (
        {"train": {"a": 30, "b": 30}},
        ["--data.fast", "false", "--data.test_split", "11", "--data.val_split", "9"],
        {"train": 40, "val": 9, "test": 11},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_image_folder_ddp_fit_and_test_match_one_process(case, tmp_path, monkeypatch):
    counts, options, sizes = FOLDER_CASES[case]
    root = write_tree(tmp_path / "folder", counts, size=(12, 12))  # noise: accuracies far from 0 and 1
    args = [
        "--config", QUICKSTART, *TINY, "--data", "ImageFolderDataModule", "--data.root", str(root),
        "--data.image_size", "12", "--data.batch_size", "8", "--data.num_workers", "0",
        "--data.cache_dir", str(tmp_path / "cache"), *options,
    ]  # fmt: skip
    fit = torchrun(["-m", "src.cli"], "fit", *args, *DDP, "--test_after_fit", "true", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = tmp_path / "lightning_logs" / "ddp"
    ddp = check_ddp_run(runs, sizes["val"], sizes["test"], sizes["train"], global_batch=8)
    record = read(runs / "version_0" / "data.json")
    assert record["split_sizes"] == sizes
    # The file check and the fast path's caches are made once per node: one process works, the other waits.
    assert fit.stdout.count(f"Checking {sum(sizes.values())} image files") == 1, fit.stdout[-3000:]
    builds = fit.stdout.count("decoding process(es)")
    assert builds == (3 if "--data.fast" not in options else 0), fit.stdout[-3000:]  # train, val, test

    single = test_once_in_process(tmp_path, monkeypatch, *args)
    assert (single["world_size"], single["test_samples"]) == (1, sizes["test"])
    assert single["test_acc"] == ddp["test_acc"]
    again = read(runs / "version_0" / "evaluations" / "test-data.json")  # same splits and statistics, 1 process
    assert not (runs / "version_0" / "data-1.json").exists()  # the fit's own record stays the only one beside it
    assert (again["split_sizes"], again["mean"], again["std"]) == (sizes, record["mean"], record["std"])


# ---------------------------------------------------------------- CIFAR (files the test writes)
CIFAR_LAUNCHER = """
import json, sys
from torchvision import datasets

md5 = json.loads({md5!r})  # the fake files' checksums, so torchvision accepts them without a download
cls = datasets.CIFAR10
cls.train_list = [[name, md5[name]] for name, _ in cls.train_list]
cls.test_list = [[name, md5[name]] for name, _ in cls.test_list]
cls.meta = dict(cls.meta, md5=md5[cls.meta["filename"]])
from src.cli import main
main()
"""


@pytest.mark.slow
def test_cifar_ddp_fit_and_test_match_one_process(fake_cifar, tmp_path, monkeypatch):
    root = fake_cifar("cifar10", train_per_file=20, test_size=21)  # 100 training images, 21 test images
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (root / "cifar-10-batches-py").iterdir()}
    launcher = tmp_path / "cifar_cli.py"
    launcher.write_text(CIFAR_LAUNCHER.format(md5=json.dumps(md5)))
    args = [
        "--config", QUICKSTART, *TINY, "--data", "CIFARDataModule", "--data.data_dir", str(root),
        "--data.download", "false", "--data.val_size", "19", "--data.batch_size", "16", "--data.num_workers", "0",
    ]  # fmt: skip
    fit = torchrun([str(launcher)], "fit", *args, *DDP, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    # 81 training images: the padded training sampler gives each process 41 (82 seen), 6 steps of 16.
    runs = tmp_path / "lightning_logs" / "ddp"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]
    ddp = read(runs / "version_0" / "efficiency.json")
    assert (ddp["world_size"], ddp["val_samples"], ddp["test_samples"]) == (2, 19, 21)
    assert (ddp["global_step"], ddp["train_images_seen"]) == (6, 82)

    single = test_once_in_process(tmp_path, monkeypatch, *args)
    assert (single["world_size"], single["test_samples"], single["test_acc"]) == (1, 21, ddp["test_acc"])

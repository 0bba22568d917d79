"""Data that changes under a run: a resume on another folder is refused, a failed test is never "finished",
and the training split scored clean at the end of a fit is what the final weights give."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import Strategy

import src.callbacks.efficiency as efficiency_module
from src import runs
from src.analysis.checkpoint import load, split_loader
from src.cli import main
from src.data.folder import ImageFolderDataModule
from src.modules import ImageClassifier
from tests.image_trees import write_image, write_tree
from tests.test_faults_io import COUNTS, fails, folder_args


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "tree", COUNTS, size=(16, 16), learnable=True)


def _fit(tree: Path, tmp_path: Path, run_dir: Path, *extra: str) -> None:
    args = folder_args(tree, tmp_path / "cache", "--run_dir", str(run_dir), "--trainer.max_epochs", "1", *extra)
    main(["fit", *args])


def test_a_resume_on_a_changed_folder_is_refused_unless_allowed_and_keeps_its_statistics(tree, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _fit(tree, tmp_path, run_dir)
    first = json.loads((run_dir / "data.json").read_text())
    assert first["files"]["train"]["count"] == 32 and len(first["files"]["train"]["sha256"]) == 64
    assert first["files"]["test"]["count"] == 8

    write_image(tree / "train" / "cat" / "extra.png", (16, 16), seed=99)  # the folder changes while the run is stopped
    resume = folder_args(tree, tmp_path / "cache", "--run_dir", str(run_dir), "--trainer.max_epochs", "2")
    message = fails(["fit", *resume, "--ckpt_path", "last"], capsys)
    assert "the data changed since the run" in message and "train: 32 files -> 33" in message
    assert "allow_changed_data" in message and not (run_dir / "data-1.json").exists()

    main(["fit", *resume, "--ckpt_path", "last", "--data.allow_changed_data", "true"])
    second = json.loads((run_dir / "data-1.json").read_text())
    # one more cat moves the seeded validation split too: other files, same count
    assert second["changed_since_start"] == ["train: 32 files -> 33", "val: 8 files -> 8 (other files)"]
    assert (second["mean"], second["std"]) == (first["mean"], first["std"])  # the run's own normalisation
    assert runs.read_efficiency(run_dir)["global_step"] > 0


def test_an_evaluation_after_the_folder_changed_uses_the_run_statistics_and_says_so(tree, tmp_path, monkeypatch):
    """`test --ckpt_path` recomputed the normalisation statistics from the folder as it was then: a changed training
    split normalised the test images otherwise than the weights were trained with, unsaid (an audit)."""
    run_dir = tmp_path / "run"
    _fit(tree, tmp_path, run_dir, "--test_after_fit", "false")
    first = json.loads((run_dir / "data.json").read_text())
    for index in range(6):  # more noise images: other statistics
        write_image(tree / "train" / "cat" / f"extra{index}.png", (16, 16), seed=100 + index)
    args = folder_args(tree, tmp_path / "cache", "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"))
    with pytest.warns(UserWarning, match=r"the data differ from those the run .* started with \(train: 32 files -> 38"):
        main(["test", *args])
    evaluated = json.loads((run_dir / "evaluations" / "test-data.json").read_text())
    assert (evaluated["mean"], evaluated["std"]) == (first["mean"], first["std"])
    # lesion and prune read the checkpoint without a trainer: the run's statistics too
    _, datamodule = load(run_dir / "checkpoints" / "last.ckpt")
    split_loader(datamodule, "test")
    assert (datamodule.mean, datamodule.std) == (first["mean"], first["std"])


def test_a_folder_copied_elsewhere_is_the_same_data(tree, tmp_path):
    """The digest holds relative paths and sizes: the same files under another root resume without a word."""
    run_dir = tmp_path / "run"
    _fit(tree, tmp_path, run_dir)
    moved = shutil.copytree(tree, tmp_path / "elsewhere")
    resume = folder_args(moved, tmp_path / "cache2", "--run_dir", str(run_dir), "--trainer.max_epochs", "2")
    main(["fit", *resume, "--ckpt_path", "last"])
    second = json.loads((run_dir / "data-1.json").read_text())
    assert second["files"] == json.loads((run_dir / "data.json").read_text())["files"]
    assert "changed_since_start" not in second


class DeleteATestImage(pl.Callback):
    """Deletes one test image when training ends: the test right after the fit cannot read it."""

    def on_train_end(self, trainer, pl_module) -> None:
        os.remove(os.environ["DELETE_AT_TRAIN_END"])


def test_a_test_that_fails_after_fit_leaves_test_failed_never_finished(tree, tmp_path, monkeypatch, capsys):
    victim = tree / "test" / "dog" / "0.png"
    monkeypatch.setenv("DELETE_AT_TRAIN_END", str(victim))
    run_dir = tmp_path / "run"
    args = folder_args(tree, tmp_path / "cache", "--run_dir", str(run_dir), "--trainer.max_epochs", "1")
    with pytest.raises((SystemExit, OSError, RuntimeError)):
        main(["fit", *args, "--data.fast", "false", "--trainer.callbacks+=tests.test_data_changes.DeleteATestImage"])
    report = runs.read_efficiency(run_dir)
    assert report["status"] == "test_failed" and report["test_acc"] is None
    assert "0.png" in report["test_failed_reason"]
    assert runs.run_status(run_dir) == "unfinished"  # a sweep tests it again; the report does not count it


def test_status_is_finished_after_the_fit_alone_or_after_the_test_that_follows_it(tree, tmp_path):
    run_dir = tmp_path / "run"
    _fit(tree, tmp_path, run_dir, "--test_after_fit", "false")
    assert runs.read_efficiency(run_dir)["status"] == "finished"  # no test follows: the fit is the end
    tested = tmp_path / "tested"
    _fit(tree, tmp_path, tested)
    report = runs.read_efficiency(tested)
    assert report["status"] == "finished" and report["test_acc"] is not None


@pytest.mark.parametrize("fast", ["true", "false"])
def test_the_clean_training_score_is_what_the_final_weights_give_on_every_training_image(tree, tmp_path, fast):
    run_dir = tmp_path / "run"
    _fit(
        tree,
        tmp_path,
        run_dir,
        "--efficiency.score_train_split",
        "true",
        "--data.fast",
        fast,
        "--trainer.max_epochs",
        "2",
    )
    report = runs.read_efficiency(run_dir)
    assert report["train_eval_samples"] == 32 and report["train_eval_step"] == report["global_step"]

    model = ImageClassifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    data = ImageFolderDataModule(
        root=str(tree), val_split=8, batch_size=8, num_workers=0, cache_dir=str(tmp_path / "cache"), fast=fast == "true"
    )
    data.setup("fit")
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for images, labels in data.clean_train_dataloader():
            logits = model(images)
            correct += int((logits.argmax(-1) == labels).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            total += len(labels)
    assert total == 32
    assert report["train_eval_acc"] == pytest.approx(correct / total, abs=1e-9)
    assert report["train_eval_loss"] == pytest.approx(loss / total, rel=1e-4)


def test_the_clean_training_score_is_taken_before_lightning_moves_the_module_off_its_device(
    tree, tmp_path, monkeypatch
):
    """Lightning's teardown (before ``on_fit_end``) moves the module to the CPU: a GPU run's clean training score
    was taken there, in fp32 outside its CUDA autocast while validation and test ran bf16 (and under DDP over
    NCCL reduced CPU tensors). The score must come while training's device and precision still hold."""
    events: list[str] = []
    teardown, score = Strategy.teardown, efficiency_module.score_train_split
    monkeypatch.setattr(Strategy, "teardown", lambda self: (events.append("teardown"), teardown(self))[1])
    monkeypatch.setattr(efficiency_module, "score_train_split", lambda *a: (events.append("score"), score(*a))[1])
    _fit(tree, tmp_path, tmp_path / "run", "--efficiency.score_train_split", "true", "--test_after_fit", "false")
    assert events[:2] == ["score", "teardown"] and events.count("score") == 1
    assert runs.read_efficiency(tmp_path / "run")["train_eval_samples"] == 32

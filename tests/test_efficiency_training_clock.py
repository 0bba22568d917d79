"""The efficiency callback's clock: training time only (not validation), and exact across a mid-epoch resume."""

from __future__ import annotations

import csv
import json
import os
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from src.callbacks import ParameterEfficiency
from src.callbacks import efficiency as efficiency_module
from src.modules import ImageClassifier
from tests.helpers import tiny_data, tiny_trainer


class Clock(pl.Callback):
    """A fake clock for the efficiency callback: 1 s per training batch, 100 s per validation batch."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.now += 1.0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.now += 100.0


def test_train_images_per_sec_excludes_validation(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(efficiency_module, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    efficiency = ParameterEfficiency()
    trainer = tiny_trainer(tmp_path, callbacks=[efficiency, clock], limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(ImageClassifier("resnet8"), tiny_data())  # 4 training batches of 32, then 1 validation batch
    report = json.loads(open(efficiency.path).read())
    assert clock.now == 4 * 1.0 + 2 * 100.0  # sanity check + end-of-epoch validation
    assert report["train_images_per_sec"] == 128 / 4.0  # validation counted would give 128 / 104 s


def fit_with_clock(root, clock: Clock, logger=None, ckpt_path=None, **trainer_options) -> dict:
    """ResNet-8 on 4 batches of 32 per epoch, validated twice an epoch (after batches 2 and 4), last.ckpt kept."""
    efficiency = ParameterEfficiency()
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)
    options = dict(max_epochs=4, val_check_interval=0.5, limit_val_batches=1, enable_checkpointing=True)
    trainer = tiny_trainer(
        root, callbacks=[efficiency, clock, checkpoint], logger=logger, **{**options, **trainer_options}
    )
    trainer.fit(ImageClassifier("resnet8"), tiny_data(), ckpt_path=ckpt_path)
    return json.loads(open(efficiency.path).read())


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_times_exactly_what_it_trained(tmp_path, monkeypatch):
    """Lightning calls no on_train_epoch_start after a mid-epoch resume: the old clock then read the machine's uptime.

    The fake clock makes the expected numbers exact: 16 training batches of 1 s, validation not counted.
    The resumed process's clock starts at 10,000 s, as a real clock does on a machine that has been up a while.
    """
    clocks = iter([Clock(), Clock(), Clock()])
    active = {}

    def perf_counter() -> float:
        return active["clock"].perf_counter()

    monkeypatch.setattr(efficiency_module, "time", SimpleNamespace(perf_counter=perf_counter))
    active["clock"] = next(clocks)
    straight = fit_with_clock(tmp_path / "straight", active["clock"])
    assert straight["train_time_sec"] == 16.0 and straight["train_images_seen"] == 4 * 128

    run = tmp_path / "resumed"
    active["clock"] = next(clocks)
    stopped = fit_with_clock(run, active["clock"], max_steps=6)  # stops after batch 2 of epoch 2, validated there
    assert stopped["global_step"] == 6 and stopped["train_time_sec"] == 6.0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (6, 1)  # mid-epoch

    active["clock"] = next(clocks)
    active["clock"].now = 10_000.0
    logger = CSVLogger(run, name="csv")
    resumed = fit_with_clock(run, active["clock"], logger=logger, ckpt_path=str(run / "checkpoints" / "last.ckpt"))
    assert resumed["resumed_at_steps"] == [6] and resumed["global_step"] == 16
    assert resumed["train_time_sec"] == straight["train_time_sec"] == 16.0
    assert resumed["train_images_seen"] == straight["train_images_seen"]
    assert resumed["train_images_per_sec"] == straight["train_images_per_sec"] == 32.0
    with open(os.path.join(logger.log_dir, "metrics.csv")) as handle:
        logged = [float(row["efficiency/train_images_per_sec"]) for row in csv.DictReader(handle)
                  if row.get("efficiency/train_images_per_sec")]  # fmt: skip
    assert logged == [32.0, 32.0, 32.0]  # the partial epoch resumed (64 images in 2 s) and the two after it

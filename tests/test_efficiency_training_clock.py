"""The efficiency callback's train_images_per_sec counts training time only, not validation inside the epoch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import lightning.pytorch as pl

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

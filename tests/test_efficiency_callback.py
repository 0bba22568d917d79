"""The parameter-efficiency callback: efficiency.json, TensorBoard scalars and hparams, cost."""

from __future__ import annotations

import json
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

import src.callbacks.efficiency as efficiency_module
from src.callbacks import ParameterEfficiency
from src.models import build_model
from src.models.complexity import count_macs, count_parameters
from src.modules import ImageClassifier
from tests.helpers import tiny_data, tiny_trainer

REQUIRED_FIELDS = {
    "arch", "params_total", "params_trainable", "macs_per_sample", "flops_per_sample", "input_shape",
    "best_val_acc", "test_acc", "acc_per_mparam",
}  # fmt: skip


class RecordValAcc(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/acc"]))


def run(tmp_path, arch="resnet8", epochs=3, test=True, callback=None, version=None, **data_options):
    logger = TensorBoardLogger(tmp_path, name="run", version=version, default_hp_metric=False)
    callback = callback or ParameterEfficiency()
    record = RecordValAcc()
    model = ImageClassifier(arch, num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    trainer = tiny_trainer(tmp_path, max_epochs=epochs, logger=logger, callbacks=[callback, record])
    data = tiny_data(**data_options)
    trainer.fit(model, data)
    results = trainer.test(model, data, verbose=False)[0] if test else None
    return trainer, callback, record.values, results


def test_efficiency_json_holds_the_measured_numbers(tmp_path):
    trainer, callback, val_accs, results = run(tmp_path)
    path = tmp_path / "run" / "version_0" / "efficiency.json"
    assert callback.path == str(path)
    report = json.loads(path.read_text())
    assert REQUIRED_FIELDS <= set(report)

    reference = build_model("resnet8", 10)
    params = count_parameters(reference)
    assert report["arch"] == "resnet8"
    assert report["params_total"] == report["params_trainable"] == params == 75_290
    assert report["input_shape"] == [3, 16, 16]
    assert report["macs_per_sample"] == count_macs(reference, (3, 16, 16))
    assert report["flops_per_sample"] == 2 * report["macs_per_sample"]
    assert sum(report["params_by_stage"].values()) == params
    assert sum(report["params_by_kind"].values()) == params

    assert len(val_accs) == 3
    assert report["best_val_acc"] == pytest.approx(max(val_accs))
    assert report["last_val_acc"] == pytest.approx(val_accs[-1])
    assert report["val_acc_per_mparam"] == pytest.approx(max(val_accs) / (params / 1e6))
    assert report["test_acc"] == pytest.approx(results["test/acc"])
    assert report["acc_source"] == "test"
    assert report["acc_per_mparam"] == pytest.approx(results["test/acc"] / (params / 1e6))
    assert report["acc_per_gmac"] == pytest.approx(results["test/acc"] / (report["macs_per_sample"] / 1e9))
    assert report["train_images_per_sec"] > 0
    assert report["peak_memory_mb"] is None and report["peak_memory_kind"] == "not_measured_on_cpu"  # CPU run
    assert report["val_samples"] == 64 and report["test_samples"] == 64
    assert (report["world_size"], report["per_process_batch_size"], report["global_batch_size"]) == (1, 32, 32)
    assert report["global_step"] == trainer.global_step == 12


def test_without_test_the_headline_is_validation_accuracy(tmp_path):
    _, _, val_accs, _ = run(tmp_path, epochs=1, test=False)
    report = json.loads((tmp_path / "run" / "version_0" / "efficiency.json").read_text())
    assert report["test_acc"] is None and report["acc_source"] == "val"
    assert report["acc_per_mparam"] == pytest.approx(val_accs[0] / (report["params_total"] / 1e6))


def test_tensorboard_gets_scalars_and_an_hparams_session(tmp_path):
    run(tmp_path, epochs=2)
    events = EventAccumulator(str(tmp_path / "run" / "version_0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "efficiency/train_images_per_sec",
        "efficiency/val_acc_per_mparam",
        "efficiency/val_acc_per_gmac",
        "efficiency/test_acc_per_mparam",
        "hp/best_val_acc",
        "hp/test_acc",
        "val/acc",
    }
    assert expected <= tags
    assert "_hparams_/experiment" in events.summary_metadata
    best = [event.value for event in events.Scalars("hp/best_val_acc")]
    assert best[-1] == pytest.approx(max(v for v in best if v == v))  # NaN placeholder first, then the best


def test_existing_report_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "run" / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "efficiency.json").write_text('{"mine": true}')
    _, callback, _, _ = run(tmp_path, epochs=1, test=False, version=0)  # e.g. a resumed run
    assert json.loads((run_dir / "efficiency.json").read_text()) == {"mine": True}
    assert callback.path == str(run_dir / "efficiency-1.json")


def test_flops_are_counted_once_per_run(tmp_path, monkeypatch):
    calls = []
    original = efficiency_module.count_flops

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(efficiency_module, "count_flops", counting)
    run(tmp_path, epochs=2)  # 8 training steps, 2 validations, 1 test
    assert calls == [(3, 16, 16)]


def test_input_shape_falls_back_to_the_first_batch(tmp_path):
    """Plain DataLoaders (no DataModule, no input_shape) still get MACs counted, at the batch's size."""
    data = tiny_data(image_size=24)
    data.setup()
    callback = ParameterEfficiency()
    trainer = tiny_trainer(tmp_path, callbacks=[callback], limit_train_batches=2, limit_val_batches=1)
    model = ImageClassifier("resnet8")
    trainer.fit(model, DataLoader(data.train_set, batch_size=16), DataLoader(data.val_set, batch_size=16))
    report = json.loads((tmp_path / "efficiency.json").read_text())
    assert report["input_shape"] == [3, 24, 24]
    assert report["macs_per_sample"] == count_macs(build_model("resnet8", 10), (3, 24, 24))


def test_configured_input_shape_wins(tmp_path):
    _, callback, _, _ = run(tmp_path, epochs=1, test=False, callback=ParameterEfficiency(input_shape=[3, 32, 32]))
    assert callback.report["input_shape"] == [3, 32, 32]
    assert callback.report["macs_per_sample"] == count_macs(build_model("resnet8", 10), (3, 32, 32))

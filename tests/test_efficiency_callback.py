"""The parameter-efficiency callback: efficiency.json, TensorBoard scalars and hparams, cost."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.data import DataLoader

import src.callbacks.efficiency as efficiency_module
import src.callbacks.provenance as provenance_module
from src import machine
from src.callbacks import ParameterEfficiency
from src.callbacks.efficiency import HPARAM_METRICS
from src.data.fast import Uint8Images, fast_split
from src.models import build_model
from src.models.complexity import count_macs, count_parameters
from src.modules import ImageClassifier
from tests.helpers import tiny_data, tiny_trainer

REQUIRED_FIELDS = {
    "arch", "params_total", "params_trainable", "macs_per_sample", "flops_per_sample", "input_shape",
    "best_val_acc", "test_acc", "raw_acc_per_mparam", "raw_acc_per_gmac", "train_images_seen", "train_time_sec",
    "test_flip", "test_passes_per_sample", "provenance", "status", "data_on_device_mb",
}  # fmt: skip


class RecordValAcc(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/acc"]))


def run(
    tmp_path, arch="resnet8", epochs=3, test=True, callback=None, version=None, model_options=None, extra=(), **data
):
    logger = TensorBoardLogger(tmp_path, name="run", version=version, default_hp_metric=False)
    callback = callback or ParameterEfficiency()
    record = RecordValAcc()
    optimizer = partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    model = ImageClassifier(arch, num_classes=10, optimizer=optimizer, **(model_options or {}))
    trainer = tiny_trainer(tmp_path, max_epochs=epochs, logger=logger, callbacks=[callback, record, *extra])
    data = tiny_data(**data)
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
    assert report["raw_acc_per_mparam"] == pytest.approx(results["test/acc"] / (params / 1e6))
    assert report["raw_acc_per_gmac"] == pytest.approx(results["test/acc"] / (report["macs_per_sample"] / 1e9))
    assert "acc_per_mparam" not in report and "acc_per_gmac" not in report  # renamed: never "the headline"
    assert report["train_images_per_sec"] > 0 and report["train_time_sec"] > 0
    assert report["train_images_seen"] == 3 * 128  # 3 epochs of 128 training images
    assert (report["test_flip"], report["test_passes_per_sample"]) == (False, 1)
    assert report["peak_memory_mb"] is None and report["peak_memory_kind"] == "not_measured_on_cpu"  # CPU run
    assert report["data_on_device_mb"] is None
    assert report["status"] == "finished"
    assert report["val_samples"] == 64 and report["test_samples"] == 64
    assert (report["world_size"], report["per_process_batch_size"], report["global_batch_size"]) == (1, 32, 32)
    assert report["global_step"] == trainer.global_step == 12


def test_without_test_the_headline_is_validation_accuracy(tmp_path):
    _, _, val_accs, _ = run(tmp_path, epochs=1, test=False)
    report = json.loads((tmp_path / "run" / "version_0" / "efficiency.json").read_text())
    assert report["test_acc"] is None and report["acc_source"] == "val"
    assert report["raw_acc_per_mparam"] == pytest.approx(val_accs[0] / (report["params_total"] / 1e6))
    assert report["status"] == "finished"  # fit ended normally


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
        "hp/params_total",
        "hp/macs_per_sample",
        "val/acc",
    }
    assert expected <= tags
    assert not {"hp/val_acc_per_mparam", "hp/val_acc_per_gmac"} & tags  # no ratio is presented as the metric
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.summary_metadata["_hparams_/experiment"].plugin_data.content
    ).experiment
    assert {info.name.tag for info in experiment.metric_infos} == set(HPARAM_METRICS)
    assert events.Scalars("hp/params_total")[0].value == count_parameters(build_model("resnet8", 10))
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


# ---------------------------------------------------------------- test protocol, status, provenance, memory
def test_flip_test_is_recorded_and_costs_two_passes_per_gmac(tmp_path):
    _, _, val_accs, results = run(tmp_path, epochs=1, model_options={"test_flip": True})
    report = json.loads((tmp_path / "run" / "version_0" / "efficiency.json").read_text())
    assert (report["test_flip"], report["test_passes_per_sample"]) == (True, 2)
    gmacs = report["macs_per_sample"] / 1e9
    assert report["test_acc_per_gmac"] == pytest.approx(results["test/acc"] / (2 * gmacs))
    assert report["raw_acc_per_gmac"] == report["test_acc_per_gmac"]
    assert report["val_acc_per_gmac"] == pytest.approx(val_accs[0] / gmacs)  # validation: one pass, no flip
    assert report["test_acc_per_mparam"] == pytest.approx(results["test/acc"] / (report["params_total"] / 1e6))


class DivergeAt(pl.Callback):
    """Plays the divergence check: at ``step`` it marks the run diverged and stops training."""

    def __init__(self, efficiency: ParameterEfficiency, step: int) -> None:
        self.efficiency, self.step = efficiency, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.efficiency.mark_diverged(trainer.global_step, "loss is nan")
            trainer.should_stop = True


def test_mark_diverged_is_written_at_once_and_kept_to_the_end(tmp_path):
    efficiency = ParameterEfficiency()
    seen = {}

    class Peek(pl.Callback):  # the file as it is right after the call, before any later write
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 3:
                seen.update(json.loads(open(efficiency.path).read()))

    trainer, _, _, _ = run(tmp_path, epochs=3, callback=efficiency, extra=[DivergeAt(efficiency, 3), Peek()])
    assert (seen["status"], seen["diverged_step"], seen["diverged_reason"]) == ("diverged", 3, "loss is nan")
    report = json.loads((tmp_path / "run" / "version_0" / "efficiency.json").read_text())
    assert report["status"] == "diverged" and report["diverged_step"] == 3  # neither fit's end nor test's undid it
    assert report["diverged_reason"] == "loss is nan" and report["test_acc"] is not None
    assert trainer.global_step == 3


def test_mark_diverged_on_another_rank_or_before_setup_is_a_no_op():
    efficiency = ParameterEfficiency()
    efficiency.mark_diverged(5, "loss is inf")  # no record: not rank zero, or nothing set up yet
    assert efficiency.report == {} and efficiency.path is None


def git_repository(path: Path) -> str:
    """A git repository of its own at ``path`` with one commit (tests never assume they run in a checkout:
    a source archive has no .git); its HEAD. Skips the test where git itself is missing."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path.mkdir(parents=True, exist_ok=True)
    (path / "tracked.txt").write_text("one\n")
    git = ["git", "-C", str(path), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "tracked.txt"], ["commit", "-q", "-m", "one"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_provenance_names_the_commit_packages_device_and_config(tmp_path, monkeypatch):
    from importlib import metadata

    head = git_repository(tmp_path / "code")
    monkeypatch.setattr(provenance_module, "CODE_ROOT", tmp_path / "code")  # the code's repository
    trainer, _, _, _ = run(tmp_path, epochs=1, test=False)
    record = json.loads((tmp_path / "run" / "version_0" / "efficiency.json").read_text())["provenance"]
    assert record["git_commit"] == head and len(record["git_commit"]) == 40
    assert record["git_dirty"] is False
    assert record["packages"] == {
        "torch": metadata.version("torch"),
        "torchvision": metadata.version("torchvision"),
        "lightning": metadata.version("lightning"),
        "torchmetrics": metadata.version("torchmetrics"),
        "python": platform.python_version(),
    }
    assert record["device"] == machine.cpu_model() and record["device"]
    assert record["cpu"] == record["device"] and record["torch_threads"] == torch.get_num_threads()
    features = record["cpu_features"]
    assert features is None or set(features) <= set(machine.SPEED_FLAGS)
    if Path("/proc/cpuinfo").is_file():  # Linux: the flags this CPU has, as the kernel lists them
        assert features == machine.cpu_features()
    # No CLI config here: the hash is over the module's and the DataModule's hyperparameters.
    expected = {"model": dict(trainer.lightning_module.hparams), "data": dict(tiny_data().hparams)}
    assert record["config_sha256"] == provenance_module.config_sha256(expected)


def test_config_hash_is_canonical():
    config = {"model": {"arch": "resnet20", "lr": 0.1}, "seed_everything": 1, "ckpt_path": None}
    reordered = {"seed_everything": 1, "model": {"lr": 0.1, "arch": "resnet20"}, "ckpt_path": "last"}
    digest = provenance_module.config_sha256(config)
    assert digest == provenance_module.config_sha256(reordered)  # key order and ckpt_path do not count
    text = json.dumps(
        {"model": {"arch": "resnet20", "lr": 0.1}, "seed_everything": 1}, sort_keys=True, separators=(",", ":")
    )
    assert digest == hashlib.sha256(text.encode()).hexdigest()
    assert digest != provenance_module.config_sha256({**config, "seed_everything": 2})
    assert provenance_module.config_sha256(None) is None
    # Objects in a config (a partial, a function) hash the same in every process: no memory addresses.
    assert provenance_module.config_sha256({"f": lambda: 0}) == provenance_module.config_sha256({"f": lambda: 0})


def test_git_state_is_null_outside_the_repository_and_never_fails(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    head = git_repository(repo)
    (repo / "sub").mkdir()
    assert provenance_module.git_state(tmp_path / "elsewhere") == (None, None)  # not a repository
    assert provenance_module.git_state(repo / "sub") == (None, None)  # inside one, but not its top level
    assert provenance_module.git_state(repo) == (head, False)
    (repo / "untracked.txt").write_text("run output\n")
    assert provenance_module.git_state(repo) == (head, False)  # untracked files do not count
    (repo / "tracked.txt").write_text("two\n")
    assert provenance_module.git_state(repo) == (head, True)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance_module.subprocess, "run", no_git)
    assert provenance_module.git_state(repo) == (None, None)


def test_training_peak_memory_leaves_out_the_data_held_on_the_gpu(monkeypatch):
    """CUDA itself is not exercised here (CPU-only tests): the allocator's peak is faked."""
    monkeypatch.setattr(efficiency_module.torch.cuda, "max_memory_allocated", lambda device=None: 300 * 2**20)
    memory, kind = efficiency_module.peak_memory_mb(torch.device("cuda", 0), data_bytes=100 * 2**20)
    assert (memory, kind) == (200.0, "cuda_max_allocated_excluding_data")
    assert efficiency_module.peak_memory_mb(torch.device("cpu"), data_bytes=5) == (None, "not_measured_on_cpu")


def test_data_on_device_counts_each_fast_split_once():
    images = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    data = Uint8Images(images, torch.arange(10))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    train = fast_split(data.subset(range(8)), mean, std, train=True)
    val = fast_split(data.subset(range(8, 10)), mean, std, train=False)
    datamodule = SimpleNamespace(train_set=train, val_set=val, test_set=val, predict_set=None)
    expected = (8 + 2) * 3 * 8 * 8 + (8 + 2) * 8  # uint8 images + int64 labels; the test split is the val split
    # BatchAugment's two 3-float buffers are tensors on the device too.
    augment = 2 * 2 * 3 * 4
    assert efficiency_module.data_on_device_bytes(datamodule, torch.device("cpu")) == expected + augment
    assert efficiency_module.data_on_device_bytes(datamodule, torch.device("meta")) == 0
    assert efficiency_module.data_on_device_bytes(SimpleNamespace(), torch.device("cpu")) == 0


def test_a_run_that_imported_untracked_code_is_dirty_and_names_it(tmp_path, monkeypatch):
    """A fork's model in a new, uncommitted file: git status without untracked files calls the tree clean."""
    import importlib

    repo = tmp_path / "fork"
    head = git_repository(repo)
    (repo / "fork_net_untracked_xyz.py").write_text("WIDTH = 3\n")
    monkeypatch.syspath_prepend(str(repo))
    importlib.import_module("fork_net_untracked_xyz")
    record = provenance_module.provenance(torch.device("cpu"), None, root=repo)
    assert record["git_commit"] == head and record["git_dirty"] is True
    assert record["untracked_code"] == ["fork_net_untracked_xyz.py"]
    monkeypatch.delitem(__import__("sys").modules, "fork_net_untracked_xyz")
    clean = provenance_module.provenance(torch.device("cpu"), None, root=repo)
    assert clean["git_dirty"] is False and clean["untracked_code"] == []

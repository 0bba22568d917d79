"""The command line as users run it: ``python -m src.cli ...`` in a subprocess, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from src.cli import main
from tests.conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
QUICKSTART = str(CONFIGS / "quickstart.yaml")
# Shrinks the quickstart to seconds: 16x16 images, a few hundred samples, ResNet-8, two epochs.
TINY = [
    "--model.arch", "resnet8",
    "--trainer.max_epochs", "2",
    "--trainer.enable_progress_bar", "false",
    "--data", "SyntheticDataModule",
    "--data.image_size", "16",
    "--data.train_size", "256",
    "--data.val_size", "64",
    "--data.test_size", "64",
    "--model.lr_scheduler.init_args.warmup_steps", "0",  # 1-4 steps: a run no longer than its warmup is an error
]  # fmt: skip


def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "src.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_fit_then_test_end_to_end(tmp_path):
    fit = cli("fit", "--config", QUICKSTART, *TINY, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["arch"] == "resnet8" and saved["seed_everything"] == 42
    assert saved["data"]["init_args"]["image_size"] == 16
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())  # linked from the DataModule
    assert (hparams["arch"], hparams["num_classes"], hparams["in_channels"]) == ("resnet8", 10, 3)
    report = json.loads((run_dir / "efficiency.json").read_text())
    assert report["arch"] == "resnet8" and report["params_total"] == 75_290
    assert report["input_shape"] == [3, 16, 16]
    assert report["best_val_acc"] is not None and report["test_acc"] is not None  # test_after_fit: true
    assert report["acc_source"] == "test"
    # Best (by val/acc) + last; 2 batches of 128 per epoch.
    best_step = report["best_val_step"]
    best = f"epoch{best_step // 2 - 1:03d}-step{best_step}-val_acc{report['best_val_acc']:.4f}.ckpt"
    assert checkpoints == sorted([best, "last.ckpt"])

    test = cli(
        "test", "--config", QUICKSTART, *TINY, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), cwd=tmp_path
    )
    assert test.returncode == 0, test.stderr[-3000:]
    test_report = json.loads((run_dir / "evaluations" / "test.json").read_text())  # recorded with its run
    assert 0.0 <= test_report["test_acc"] <= 1.0 and test_report["best_val_acc"] is None
    assert test_report["params_total"] == 75_290

    # A second fit gets its own directory; the first run's files are untouched.
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    again = cli("fit", "--config", QUICKSTART, *TINY, "--test_after_fit", "false", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "lightning_logs" / "quickstart" / "version_1" / "config.yaml").exists()
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_reused_log_directory_keeps_the_earlier_config(tmp_path):
    """A run named by its logger version: a second fresh fit is refused; ``--ckpt_path last`` continues it."""
    args = ["fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs", "1", "--test_after_fit", "false"]
    args += ["--trainer.logger.init_args.version", "fixed"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "fixed"
    original = (run_dir / "config.yaml").read_text()
    second = cli(*args, "--model.arch", "plain8", cwd=tmp_path)
    assert second.returncode != 0 and "already holds checkpoints" in second.stderr
    resumed = cli(*args, "--trainer.max_epochs", "2", "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "config.yaml").read_text() == original
    assert yaml.safe_load((run_dir / "config-1.yaml").read_text())["trainer"]["max_epochs"] == 2
    assert json.loads((run_dir / "efficiency.json").read_text())["global_step"] == 4
    assert not (run_dir / "efficiency-1.json").exists()


def test_bad_architecture_fails_with_the_valid_names(tmp_path):
    result = cli("fit", "--config", QUICKSTART, "--model.arch", "resnet21", cwd=tmp_path)
    assert result.returncode != 0
    assert "not 6n+2" in result.stderr and "resnet20" in result.stderr


def test_missing_cifar_offline_is_a_short_clear_error(tmp_path):
    config = str(CONFIGS / "cifar10" / "resnet20.yaml")
    result = cli("fit", "--config", config, "--data.init_args.download", "false", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "'data/cifar-10-batches-py'" in result.stderr  # data_dir is relative to where the user runs
    assert "cifar-10-python.tar.gz" in result.stderr


# Run configs only (overlays -- the ResNet-110 warmup, the paper-faithful mode, configs/trainer/ and configs/logger/
# presets -- are tested stacked;
# configs/studies/ holds sweep definitions for python -m src.sweep, not run configs).
OVERLAYS = {"resnet110_warmup.yaml", "paper_faithful.yaml"}
SHIPPED = sorted(
    p
    for p in CONFIGS.rglob("*.yaml")
    if p.name not in OVERLAYS and not {"trainer", "logger", "studies", "debug"} & set(p.relative_to(CONFIGS).parts)
)


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
@pytest.mark.parametrize("subcommand", ["fit", "validate", "test"])
def test_print_config_works_for_every_shipped_config(config, subcommand, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    original = yaml.safe_load(config.read_text())
    assert printed["model"]["arch"] == original["model"]["arch"]
    assert isinstance(printed["seed_everything"], int) and printed["seed_everything"] == original["seed_everything"]
    assert printed["checkpoint"]["monitor"] == "val/acc" and printed["checkpoint"]["save_last"] is True
    assert printed["efficiency"]["filename"] == "efficiency.json"


def test_configs_stack_and_link_num_classes():
    cli_object = main(
        ["--config", str(CONFIGS / "cifar100" / "resnet20.yaml"),
         "--config", str(CONFIGS / "cifar10" / "resnet110_warmup.yaml")],
        run=False,
    )  # fmt: skip
    model = cli_object.model
    assert model.hparams.arch == "resnet110" and model.hparams.num_classes == 100
    assert model.model.fc.out_features == 100
    assert cli_object.datamodule.dataset == "cifar100"
    scheduler = model.scheduler_factory(model.optimizer_factory(model.parameters()))
    assert scheduler.warmup_steps == 400 and scheduler.milestones == [32000, 48000]


@pytest.mark.slow
def test_quickstart_reaches_90_percent(tmp_path):
    """The README's promise: the offline quickstart reaches >= 0.90 val/acc, then tests (about a minute, 2 cores)."""
    result = cli("fit", "--config", QUICKSTART, "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "lightning_logs" / "quickstart" / "version_0" / "efficiency.json").read_text())
    assert report["best_val_acc"] >= 0.90 and report["test_acc"] >= 0.90
    assert report["arch"] == "resnet14" and report["params_total"] == 172_506
    assert report["macs_per_sample"] > 0 and report["raw_acc_per_mparam"] > 0


def test_paper_recipe_config():
    cli_object = main(["--config", str(CONFIGS / "cifar10" / "resnet20.yaml")], run=False)
    optimizer = cli_object.model.optimizer_factory(cli_object.model.parameters())
    group = optimizer.param_groups[0]
    assert (type(optimizer).__name__, group["lr"], group["momentum"], group["weight_decay"]) == ("SGD", 0.1, 0.9, 1e-4)
    assert cli_object.trainer.max_steps == 64_000
    assert cli_object.datamodule.batch_size == 128 and cli_object.datamodule.val_size == 5000
    assert cli_object.model.hparams.lr_scheduler_interval == "step"


def test_ddp_on_two_cpu_processes(tmp_path):
    """Multi-process training from config alone: rank zero writes one report, and nothing hangs."""
    args = ["fit", "--config", QUICKSTART, *TINY, "--trainer.max_epochs", "1"]
    args += ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    assert sorted(p.name for p in run_dir.glob("*.json")) == ["efficiency.json"]
    assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config.yaml"]
    report = json.loads((run_dir / "efficiency.json").read_text())
    assert report["world_size"] == 2
    assert report["global_step"] == 2  # 256 samples / global batch 128 (64 per process), as on one process
    assert report["test_acc"] is not None and report["best_val_acc"] is not None
    assert not (tmp_path / "lightning_logs" / "quickstart" / "version_1").exists()


@pytest.mark.parametrize(
    "class_path, init_args",
    [
        ("torch.optim.lr_scheduler.StepLR", {"step_size": 30}),
        ("torch.optim.lr_scheduler.MultiStepLR", {"milestones": [32000, 48000]}),
        ("torch.optim.lr_scheduler.ExponentialLR", {"gamma": 0.97}),
        ("torch.optim.lr_scheduler.CosineAnnealingLR", {"T_max": 100}),
        ("torch.optim.lr_scheduler.OneCycleLR", {"max_lr": 0.4, "total_steps": 1000}),
        ("src.modules.WarmupCosineLR", {"warmup_steps": 10}),
    ],
)
def test_any_torch_scheduler_can_be_named_in_yaml(class_path, init_args):
    scheduler_yaml = json.dumps({"class_path": class_path, "init_args": init_args})
    cli_object = main(["--config", QUICKSTART, "--model.lr_scheduler", scheduler_yaml], run=False)
    model = cli_object.model
    scheduler = model.scheduler_factory(model.optimizer_factory(model.parameters()))
    assert f"{type(scheduler).__module__}.{type(scheduler).__name__}".endswith(class_path.split(".")[-1])
    for key, value in init_args.items():
        if hasattr(scheduler, key):  # OneCycleLR keeps max_lr in the param groups
            stored = getattr(scheduler, key)
            assert (sorted(stored.elements()) if isinstance(stored, Counter) else stored) == value

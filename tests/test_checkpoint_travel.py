"""Checkpoints that travel (issue 16, item 7): a checkpoint trained under SLURM on GPUs is tested on a laptop.

``test|validate|predict --ckpt_path X`` restore model, data and run settings from the config the checkpoint
carries, but hardware settings (accelerator, devices, nodes, strategy, plugins, sync_batchnorm, the compile
callback, fp16 autocast without a GPU, loader sizes) come from the machine it runs on; the results go into
the checkpoint's own run directory (``evaluations/``), not into a new ``lightning_logs/.../version_N``.

One tiny CPU run (ResNet-8, 16x16 synthetic images) is trained, then its checkpoints and ``config.yaml`` are
rewritten to say what ``configs/trainer/slurm.yaml`` + ``ddp.yaml`` + ``compile.yaml`` + ``fp16.yaml`` on
2 nodes x 4 GPUs would have saved.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from src import runs
from src.cli import main
from src.cli_support import machine_settings
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, TINY

TRAINER_CONFIGS = REPO_ROOT / "configs" / "trainer"
NOT_RESTORED = "Not restored from the checkpoint"


def cluster_trainer(trainer: dict) -> dict:
    """``trainer`` as a 2-node x 4-GPU SLURM job with compile and fp16 would have saved it."""
    trainer = dict(trainer)
    for preset in ("ddp.yaml", "slurm.yaml", "fp16.yaml"):
        trainer.update(yaml.safe_load((TRAINER_CONFIGS / preset).read_text())["trainer"])
    compile_callbacks = yaml.safe_load((TRAINER_CONFIGS / "compile.yaml").read_text())["trainer"]["callbacks+"]
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), *compile_callbacks]
    trainer.update(devices=4, num_nodes=2, sync_batchnorm=True)  # what the sbatch templates pass
    return trainer


def make_cluster_run(config: dict) -> dict:
    config = dict(config, trainer=cluster_trainer(config["trainer"]))
    config["data"] = dict(config["data"], init_args=dict(config["data"]["init_args"], num_workers=8))
    return config


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> Path:
    """A finished tiny run whose saved config (file and every checkpoint) says SLURM, GPUs, DDP, compile, fp16."""
    root = tmp_path_factory.mktemp("travel")
    run_dir = root / "runs" / "gpu-job"
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", "resnet8", *TINY])
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint[runs.RUN_CONFIG_KEY] = make_cluster_run(checkpoint[runs.RUN_CONFIG_KEY])
        torch.save(checkpoint, path)
    config_file = run_dir / "config.yaml"
    config_file.write_text(yaml.safe_dump(make_cluster_run(yaml.safe_load(config_file.read_text()))))
    return run_dir


@pytest.fixture
def copy_of(cluster_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the cluster run, with the test's working directory beside it and no SLURM around."""
    for key in [key for key in os.environ if key.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "gpu-job"
    shutil.copytree(cluster_run, run_dir)
    (run_dir / runs.LOCK_FILE).unlink(missing_ok=True)
    return run_dir


def run_dir_last(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def notices(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(NOT_RESTORED)]


def test_a_slurm_gpu_checkpoint_tests_on_this_cpu_machine_into_its_own_run(copy_of, capsys):
    run_dir = copy_of
    fit_record = (run_dir / "efficiency.json").read_bytes()
    fit_config = (run_dir / "config.yaml").read_bytes()
    best = runs.best_checkpoint(str(run_dir))
    assert best is not None

    main(["test", "--ckpt_path", best])  # no --config, no hardware flags

    out = capsys.readouterr().out
    [line] = notices(out)  # exactly one line says what this machine replaced, and with what (saved -> used)
    here = "cuda" if torch.cuda.is_available() else "cpu"
    for expected in (
        f"trainer.accelerator (gpu -> {here})",
        "trainer.devices (4 -> 1)",
        "trainer.num_nodes (2 -> 1)",
        "trainer.strategy (ddp -> single_device)",
        "trainer.plugins ([SLURMEnvironment] -> none)",
        "trainer.sync_batchnorm (true -> false)",
        "the CompileModel callback (torch.compile -> not compiled)",
        *(
            []
            if torch.cuda.is_available()
            else ["trainer.precision (16-mixed: fp16 autocast needs a CUDA GPU -> 32-true)"]
        ),
        "data.num_workers (8 -> ",
    ):
        assert expected in line, (expected, line)
    evaluation = json.loads((run_dir / "evaluations" / "test.json").read_text())
    fit = json.loads(fit_record)
    assert evaluation["stage"] == "test" and evaluation["test_ckpt_path"] == os.path.relpath(best, run_dir)
    assert evaluation["test_acc"] == fit["test_acc"]  # the fit tested the same best checkpoint, on the same data
    saved = yaml.safe_load((run_dir / "evaluations" / "test-config.yaml").read_text())
    assert saved["trainer"]["accelerator"] == "auto" and saved["trainer"]["devices"] == "auto"
    assert saved["trainer"]["num_nodes"] == 1 and saved["trainer"]["plugins"] is None
    assert saved["trainer"]["precision"] is None and not saved["trainer"]["callbacks"]
    assert saved["model"]["arch"] == "resnet8" and saved["data"]["init_args"]["image_size"] == 16  # travelled
    assert saved["data"]["init_args"]["num_workers"] is None
    assert (run_dir / "efficiency.json").read_bytes() == fit_record  # the fit's own record is untouched
    assert (run_dir / "config.yaml").read_bytes() == fit_config
    # The evaluation's scalars are its own file; the fit's curves (scalars.csv) get no test rows.
    assert "test/acc" in (run_dir / "evaluations" / "test-scalars.csv").read_text()
    assert not list(run_dir.glob("scalars-*.csv")) and not list(run_dir.glob("efficiency-*.json"))
    assert not Path("lightning_logs").exists()  # nothing went to a new version_N


def test_explicit_settings_win_and_validate_writes_into_the_run(copy_of, capsys):
    run_dir = copy_of
    main(["validate", "--ckpt_path", str(run_dir_last(run_dir)), "--trainer.precision", "bf16-mixed"])
    [line] = notices(capsys.readouterr().out)
    if not torch.cuda.is_available():  # what the user passed is what the notice says was used
        assert "trainer.precision (16-mixed: fp16 autocast needs a CUDA GPU -> bf16-mixed)" in line, line
    saved = yaml.safe_load((run_dir / "evaluations" / "validate-config.yaml").read_text())
    assert saved["trainer"]["precision"] == "bf16-mixed"  # the user's choice, not the machine's default
    assert json.loads((run_dir / "evaluations" / "validate.json").read_text())["stage"] == "validate"
    assert not Path("lightning_logs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_an_explicit_gpu_request_is_still_honoured(copy_of, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["test", "--ckpt_path", str(run_dir_last(copy_of)), "--trainer.accelerator", "gpu"])
    assert "gpu" in str(stopped.value).lower()
    assert not (copy_of / "evaluations").exists()


def test_predict_of_a_run_whose_fit_still_runs_writes_a_new_directory(copy_of, capsys):
    run_dir = copy_of
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with runs.RunLock(run_dir):  # its fit is still writing it
        main(["predict", "--ckpt_path", str(run_dir_last(run_dir))])
    out = capsys.readouterr().out
    assert f"The run '{run_dir}' is in use by process" in out
    written = sorted(Path("lightning_logs").glob("quickstart/version_0/predictions.csv"))
    assert len(written) == 1 and len(list(csv.DictReader(written[0].open()))) == 64
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != runs.LOCK_FILE}
    assert after == {p: b for p, b in before.items() if p.name != runs.LOCK_FILE}


# ---------------------------------------------------------------- the settings themselves
def test_machine_free_lists_only_saved_values_that_differ_from_the_defaults(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    keep = {"class_path": "tests.helpers.KillAt"}
    compile_entry = {"class_path": "src.callbacks.CompileModel", "init_args": {"backend": "inductor"}}
    defaults = {
        "trainer.accelerator": "auto",
        "trainer.devices": 1,
        "trainer.num_nodes": 1,
        "trainer.strategy": "auto",
        "trainer.sync_batchnorm": False,
        "trainer.callbacks": [keep, compile_entry],
        "trainer.precision": "bf16-mixed",
        "trainer.max_epochs": 3,
        "data": {"class_path": "SyntheticDataModule", "init_args": {"batch_size": 8, "num_workers": None}},
    }
    kept, left_out = machine_settings.machine_free(defaults)
    assert left_out == ["trainer.devices (1)", "the CompileModel callback (torch.compile)"]
    assert kept == {
        "trainer.callbacks": [keep],
        "trainer.precision": "bf16-mixed",  # runs on CPUs: the run's numerics are kept
        "trainer.max_epochs": 3,
        "data": defaults["data"],
    }
    assert defaults["trainer.callbacks"] == [keep, compile_entry]  # the input is not changed
    assert machine_settings.notice([]) == ""


def test_fp16_is_kept_where_there_is_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    kept, left_out = machine_settings.machine_free({"trainer.precision": "16-mixed"})
    assert kept == {"trainer.precision": "16-mixed"} and left_out == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    kept, left_out = machine_settings.machine_free({"trainer.precision": "16-mixed"})
    assert kept == {} and left_out == ["trainer.precision (16-mixed: fp16 autocast needs a CUDA GPU)"]

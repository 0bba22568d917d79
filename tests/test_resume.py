"""Run identity and resume, end to end: ``python -m src.cli`` in subprocesses, killed with SIGKILL, resumed.

One deterministic CPU run (ResNet-8, 16x16 synthetic images, 4 steps per epoch) is trained twice: straight
through, and killed with ``kill -9`` in its third epoch then resumed with ``--ckpt_path last``. Both must end
bit for bit the same. The other tests reuse those two finished runs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from src import runs
from src.cli import main
from tests.conftest import REPO_ROOT

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")
SMALL = [
    "--config", QUICKSTART,
    "--model.arch", "resnet8",
    "--trainer.max_epochs", "4",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data", "SyntheticDataModule",
    "--data.image_size", "16",
    "--data.train_size", "256",
    "--data.val_size", "64",
    "--data.test_size", "64",
    "--data.batch_size", "64",
    "--data.noise", "0.5",
    "--model.lr_scheduler.init_args.warmup_steps", "2",
    "--trainer.callbacks+=tests.helpers.KillAt",
]  # fmt: skip
KILL_STEP = 10  # in epoch 2 (steps 9-12); the newest checkpoint is last.ckpt at step 8
SLURM_ENV = {
    "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "study", "SLURM_JOB_ID": "4242", "SLURM_NODELIST": "localhost",
    "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
}  # fmt: skip


def launch(*args: str, cwd, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    for key in [k for k in environment if k.startswith("SLURM_") and k not in (env or {})]:
        del environment[key]
    return subprocess.Popen(
        [sys.executable, "-m", "src.cli", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    process = launch(*args, cwd=cwd, env=env)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def files_of(directory) -> dict:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two finished runs of the same seed: ``straight`` (uninterrupted) and ``killed`` (kill -9, then resumed)."""
    root = tmp_path_factory.mktemp("study")
    straight = launch("fit", *SMALL, "--run_dir", "runs/straight", cwd=root)
    killed = cli("fit", *SMALL, "--run_dir", "runs/killed", cwd=root, env={"KILL_AT_STEP": str(KILL_STEP)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    killed_dir = root / "runs" / "killed"
    step_at_kill = torch.load(killed_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    config_at_kill = (killed_dir / "config.yaml").read_text()
    # Nothing but the run directory and the checkpoint: config, data and model come from the checkpoint.
    resumed = cli("fit", "--run_dir", "runs/killed", "--ckpt_path", "last", cwd=root)
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {
        "root": root,
        "straight": root / "runs" / "straight",
        "killed": killed_dir,
        "step_at_kill": step_at_kill,
        "config_at_kill": config_at_kill,
        "resumed": resumed,
    }


def test_killed_and_resumed_run_ends_exactly_like_the_uninterrupted_one(study):
    assert study["step_at_kill"] == 8  # the resume really starts from the epoch-end checkpoint before the kill
    straight, killed = runs.read_efficiency(study["straight"]), runs.read_efficiency(study["killed"])
    assert straight["best_val_acc"] > 0.3  # it learns, so "best" is a real choice between epochs
    same = ("best_val_acc", "best_val_step", "last_val_acc", "test_acc", "global_step", "test_ckpt_path")
    for key in (*same, "status", "train_images_seen"):  # images seen: the steps redone after the kill count once
        assert killed[key] == straight[key], key
    final = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (study["straight"], study["killed"])
    ]
    assert final[0]["global_step"] == final[1]["global_step"] == 16
    assert all(torch.equal(final[0]["state_dict"][k], final[1]["state_dict"][k]) for k in final[0]["state_dict"])


def test_resume_continues_the_same_run_directory_and_record(study):
    killed = study["killed"]
    assert sorted(p.name for p in (study["root"] / "runs").iterdir()) == ["killed", "straight"]
    assert not (study["root"] / "lightning_logs").exists()  # no second run directory anywhere
    assert (killed / "config.yaml").read_text() == study["config_at_kill"]  # never overwritten
    resumed_config = yaml.safe_load((killed / "config-1.yaml").read_text())
    assert resumed_config["ckpt_path"] == "last" and resumed_config["model"]["arch"] == "resnet8"
    report = runs.read_efficiency(killed)
    assert sorted(p.name for p in killed.glob("efficiency*.json")) == ["efficiency.json"]
    assert report["resumed_at_steps"] == [8]
    assert report["train_time_sec"] > 0
    # TensorBoard curves continue: one value per validation, logged at steps 3, 7 (first process), 11, 15 (resumed).
    assert [step for step, _ in runs.read_metrics(killed)["val/acc"]] == [3, 7, 11, 15]
    assert [step for step, _ in runs.read_metrics(killed)["efficiency/params_total"]] == [0]  # once, as straight


def test_run_context_is_recorded(study):
    report = runs.read_efficiency(study["straight"])
    context = {key: report[key] for key in ("data", "batch_size", "optimizer", "lr", "weight_decay", "seed")}
    assert context == {
        "data": "SyntheticDataModule", "batch_size": 64, "optimizer": "SGD", "lr": 0.1,
        "weight_decay": 5e-4, "seed": 42,
    }  # fmt: skip
    assert (report["lr_scheduler"], report["lr_scheduler_interval"], report["max_epochs"]) == (
        "WarmupCosineLR",
        "step",
        4,
    )
    scalars = runs.read_metrics(study["straight"])
    assert scalars["efficiency/params_total"][0][1] == report["params_total"] == 75_290
    assert scalars["efficiency/macs_per_sample"][0][1] == report["macs_per_sample"]


def test_test_from_the_checkpoint_alone_reproduces_the_runs_test_accuracy(study):
    run_dir = study["straight"]
    best = runs.best_checkpoint(str(run_dir))
    assert best is not None and os.path.basename(best) == os.path.basename(
        runs.read_efficiency(run_dir)["test_ckpt_path"]
    )
    result = cli("test", "--ckpt_path", best, cwd=study["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "evaluations" / "test.json").read_text())  # recorded with the checkpoint's run
    assert report["test_acc"] == runs.read_efficiency(run_dir)["test_acc"]
    assert report["stage"] == "test" and report["test_ckpt_path"] == os.path.relpath(best, run_dir)


def test_predict_writes_one_row_per_input(study):
    before = files_of(study["straight"])
    result = cli("predict", "--ckpt_path", str(study["straight"] / "checkpoints" / "last.ckpt"), cwd=study["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(study["straight"].glob("predictions*.csv"))  # into the checkpoint's run
    rows = list(csv.DictReader(written[-1].open()))
    assert len(rows) == 64 and [int(r["index"]) for r in rows] == list(range(64))
    assert all(0.0 < float(r["probability"]) <= 1.0 and 0 <= int(r["class"]) < 10 for r in rows)
    after = files_of(study["straight"])
    assert {path: after[path] for path in before if path.name != runs.LOCK_FILE} == {
        path: data for path, data in before.items() if path.name != runs.LOCK_FILE
    }  # adds its files, changes none of the run's


def test_load_checkpoint_run_rebuilds_model_and_data(study):
    model, datamodule = runs.load_checkpoint_run(str(study["straight"] / "checkpoints" / "last.ckpt"))
    assert model.hparams.arch == "resnet8" and not model.training
    assert type(datamodule).__name__ == "SyntheticDataModule"
    assert (datamodule.input_shape, datamodule.batch_size, datamodule.noise) == ((3, 16, 16), 64, 0.5)


@pytest.mark.slow
def test_hpc_checkpoint_is_restored_by_its_own_run_only(study, tmp_path):
    """SLURM requeue: Lightning looks for hpc_ckpt_N.ckpt in default_root_dir, which is the run's own directory."""
    run_a = tmp_path / "runs" / "a"
    shutil.copytree(study["straight"], run_a)
    hpc = run_a / "hpc_ckpt_1.ckpt"
    shutil.copy(run_a / "checkpoints" / "last.ckpt", hpc)  # as if SIGUSR1 had saved one at step 16
    os.utime(hpc, (1e10, 1e10))  # the newest file in run A
    args = [*SMALL, "--trainer.max_epochs", "5", "--test_after_fit", "false"]
    other = cli("fit", *args, "--run_dir", "runs/b", cwd=tmp_path, env=SLURM_ENV)
    assert other.returncode == 0, other.stderr[-3000:]
    report_b = runs.read_efficiency(tmp_path / "runs" / "b")
    assert report_b["resumed_at_steps"] == [] and report_b["global_step"] == 20  # from scratch: 5 epochs x 4
    requeued = cli("fit", *args, "--run_dir", "runs/a", cwd=tmp_path, env={**SLURM_ENV, "SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    report_a = runs.read_efficiency(run_a)
    assert report_a["resumed_at_steps"] == [16] and report_a["global_step"] == 20


def test_requeued_slurm_job_without_run_dir_refuses_to_start_over(tmp_path):
    env = {**SLURM_ENV, "SLURM_RESTART_COUNT": "1"}
    result = cli("fit", *SMALL, cwd=tmp_path, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--run_dir" in result.stderr and not (tmp_path / "lightning_logs").exists()


def test_last_partial_epoch_is_validated_and_checkpointed(tmp_path):
    result = cli(
        "fit", *SMALL, "--trainer.max_epochs", "-1", "--trainer.max_steps", "6", "--run_dir", "r", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [step for step, _ in runs.read_metrics(tmp_path / "r")["val/acc"]] == [3, 5]  # at step - 1
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert runs.read_efficiency(tmp_path / "r")["global_step"] == 6


def test_a_max_steps_run_continued_with_more_steps_trains_them_all(tmp_path):
    """A run cut by max_steps inside an epoch, continued with a larger max_steps, counted the cut epoch twice and
    stopped early ('max_epochs=3 reached' after two epochs; an audit). It ends where an uninterrupted run ends."""
    few = [*SMALL, "--trainer.max_epochs", "3"]  # 4 steps per epoch: 12 at most
    straight = cli("fit", *few, "--trainer.max_steps", "10", "--run_dir", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    cut = cli("fit", *few, "--trainer.max_steps", "6", "--run_dir", "cut", "--test_after_fit", "false", cwd=tmp_path)
    assert cut.returncode == 0, cut.stderr[-3000:]
    continued = cli("fit", *few, "--trainer.max_steps", "10", "--ckpt_path", "cut/checkpoints/last.ckpt", cwd=tmp_path)
    assert continued.returncode == 0, continued.stderr[-3000:]
    ends = {}
    for name in ("straight", "cut"):
        last = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        ends[name] = (last["global_step"], last["epoch"], last["optimizer_states"][0]["param_groups"][0]["lr"])
    assert ends["cut"] == ends["straight"] and ends["straight"][0] == 10
    assert runs.read_efficiency(tmp_path / "cut")["train_images_seen"] == 10 * 64


def test_checkpointing_can_be_turned_off(tmp_path):
    result = cli("fit", *SMALL, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    assert not (run_dir / "checkpoints").exists()
    report = runs.read_efficiency(run_dir)
    assert report["test_acc"] is not None and report["test_ckpt_path"] is None  # the final model, tested


# ---------------------------------------------------------------- errors: one line, non-zero, nothing touched
def run_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    code = exit_info.value.code
    assert code not in (0, None)
    return code if isinstance(code, str) else capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.arch", "resnet21"], "not 6n+2"),
        (["--model.arch", "resnetx"], "Unknown architecture 'resnetx'"),
        (["--model.shortcut", "C"], "--model.shortcut: invalid value 'C'; valid: one of ['A', 'B'] or null"),
    ],
)
def test_bad_model_values_are_one_line_errors(extra, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = run_error(["fit", *SMALL, *extra], capsys)
    assert expected in message and "Traceback" not in message
    assert len(message.strip().splitlines()) <= 2
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.arch", "plain8"], "arch='resnet8', but the config builds arch='plain8'"),
        (["--data.num_classes", "5"], "num_classes=10, but the config builds num_classes=5"),
        (["--model.shortcut", "B"], "shortcut"),
    ],
)
def test_checkpoint_of_another_network_is_refused(study, extra, expected, capsys, monkeypatch):
    monkeypatch.chdir(study["root"])
    checkpoint = str(study["straight"] / "checkpoints" / "last.ckpt")
    before = files_of(study["straight"])
    for subcommand in ("fit", "test"):
        message = run_error([subcommand, "--ckpt_path", checkpoint, *extra], capsys)
        assert expected in message
    assert files_of(study["straight"]) == before


def test_ckpt_path_last_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    message = run_error(["fit", *SMALL, "--run_dir", "empty", "--ckpt_path", "last"], capsys)
    assert "has no such checkpoint" in message and "'empty'" in message
    assert "needs the run" in run_error(["fit", *SMALL, "--ckpt_path", "last"], capsys)
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_new_run_never_reuses_a_run_directory_with_checkpoints(study, capsys, monkeypatch):
    monkeypatch.chdir(study["root"])
    before = files_of(study["straight"])
    message = run_error(["fit", *SMALL, "--run_dir", "runs/straight"], capsys)
    assert "already holds checkpoints" in message and "--ckpt_path last" in message
    message = run_error(
        ["fit", "--ckpt_path", str(study["killed"] / "checkpoints" / "last.ckpt"), "--run_dir", "x"], capsys
    )
    assert "belongs to the run" in message
    assert files_of(study["straight"]) == before


def test_errors_have_no_traceback_from_the_shell(tmp_path):
    result = cli("fit", *SMALL, "--model.arch", "resnet21", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Unknown architecture 'resnet21'")
    result = cli("test", "--ckpt_path", "nowhere.ckpt", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "nowhere.ckpt" in result.stderr


def test_run_dir_layout_helpers(tmp_path):
    assert runs.next_version_dir(str(tmp_path), "x") == str(tmp_path / "x" / "version_0")
    (tmp_path / "x" / "version_3").mkdir(parents=True)
    assert runs.next_version_dir(str(tmp_path), "x") == str(tmp_path / "x" / "version_4")
    assert runs.run_dir_of_checkpoint(str(tmp_path / "r" / "checkpoints" / "last.ckpt")) == str(tmp_path / "r")
    assert runs.run_dir_of_checkpoint(str(tmp_path / "r" / "hpc_ckpt_3.ckpt")) == str(tmp_path / "r")
    assert runs.run_dir_of_checkpoint(str(tmp_path / "loose.ckpt")) is None


def test_resuming_with_the_runs_own_command_adds_no_callback_twice(tmp_path, monkeypatch):
    """The sweep resumes with the run's command + ``--ckpt_path last``: a ``callbacks+=`` must not stack up."""
    monkeypatch.chdir(tmp_path)
    command = [
        "fit", *SMALL[:-1], "--run_dir", "run",
        "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
    ]  # fmt: skip
    main([*command, "--trainer.max_epochs", "1", "--test_after_fit", "false"])
    main([*command, "--trainer.max_epochs", "2", "--test_after_fit", "false", "--ckpt_path", "last"])
    for name in ("config.yaml", "config-1.yaml"):
        callbacks = yaml.safe_load((tmp_path / "run" / name).read_text())["trainer"]["callbacks"]
        classes = [callback["class_path"] for callback in callbacks]
        assert classes.count("lightning.pytorch.callbacks.LearningRateMonitor") == 1, (name, classes)
    assert runs.read_efficiency(tmp_path / "run")["global_step"] == 8

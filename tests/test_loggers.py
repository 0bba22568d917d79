"""Loggers other than TensorBoard, and the logger-independent ``scalars.csv`` every run writes.

* ``scalars.csv`` (``src.callbacks.metrics_record``): rows as logged, a torn last line tolerated, rows past the
  restored step dropped on resume (a real ``kill -9`` mid-epoch, then ``--ckpt_path last``);
* CSVLogger (always tested), W&B offline and MLflow with a file store (skipped without the extras,
  ``pip install -e ".[wandb,mlflow]"``): a 2-architecture sweep lands in two logger runs, a resume goes to the
  same logger run, and the report draws its curves from runs logged with each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from jsonargparse import Namespace

from src.callbacks.metrics_record import _RecordLogger
from src.cli import main as cli_main
from src.cli_support.lightning_cli import resolved_config
from src.cli_support.loggers import point_logger_at_run, read_logger_ids, run_label
from src.report import write_report
from src.runs import LOGGERS_FILE, SCALARS_FILE, read_metrics_csv, read_scalars
from src.runs.scalars import record_rows
from src.sweep import main as sweep_main
from src.sweeping.results import export_run
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, TINY

PRESETS = REPO_ROOT / "configs" / "logger"
ARCHS = ["resnet8", "plain8"]


# ------------------------------------------------------------------------------------------------ the record
def test_record_appends_whole_rows_and_readers_skip_a_torn_line(tmp_path):
    record = _RecordLogger(str(tmp_path))
    record.log_metrics({"train/loss": 2.5, "epoch": 0.0}, step=1)
    record.log_metrics({"epoch": 0.0, "val/acc": 0.25}, step=1)  # epoch again, same value: not written twice
    record.log_metrics({"train/loss": 2.0}, step=2)
    record.close()
    path = tmp_path / SCALARS_FILE
    assert path.read_text() == "step,tag,value\n1,train/loss,2.5\n1,epoch,0.0\n1,val/acc,0.25\n2,train/loss,2.0\n"
    with open(path, "a") as handle:
        handle.write("3,train/lo")  # a write cut short by kill -9
    assert list(record_rows(str(path)))[-1] == (2, "train/loss", 2.0)
    assert read_scalars(tmp_path, ["train/loss"]) == {"train/loss": ([1, 2], [2.5, 2.0])}
    record.log_metrics({"train/loss": 1.5}, step=3)  # the next start writes on a line of its own
    record.close()
    assert read_scalars(tmp_path, ["train/loss"]) == {"train/loss": ([1, 2, 3], [2.5, 2.0, 1.5])}


def test_resume_keeps_what_the_checkpoint_saw_and_a_repeated_step_reads_as_its_last_value(tmp_path):
    record = _RecordLogger(str(tmp_path))
    for step in (1, 2, 3, 4):
        record.log_metrics({"train/loss": float(step)}, step=step)
    assert record.keep(rows=0, step=2) == 2  # a checkpoint from before the record: by its logging step
    record.log_metrics({"train/loss": 20.0}, step=2)  # logged again at the restored step
    record.log_metrics({"train/loss": 30.0}, step=3)
    record.close()
    assert read_metrics_csv(tmp_path / SCALARS_FILE, ["train/loss"]) == {"train/loss": ([1, 2, 3], [1.0, 20.0, 30.0])}
    assert record.row_count() == 4
    assert record.keep(rows=3, step=1) == 1  # what the checkpoint saw, and what came after it up to its step
    assert list(record_rows(str(tmp_path / SCALARS_FILE)))[-1] == (2, "train/loss", 20.0)


def test_csvlogger_table_of_an_older_run_is_read(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,train/acc,val/acc\n0,1,0.5,\n0,1,,0.25\n1,3,0.75,0.5\n")
    assert read_scalars(tmp_path, ["train/acc", "val/acc"]) == {
        "train/acc": ([1, 3], [0.5, 0.75]),
        "val/acc": ([1, 3], [0.25, 0.5]),
    }


KILLED = [
    "--config", QUICKSTART, "--model.arch", "resnet8", "--trainer.max_epochs", "3",
    "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--data.image_size", "16", "--data.train_size", "256",
    "--data.val_size", "64", "--data.test_size", "64", "--data.batch_size", "64", "--data.num_workers", "0",
    "--model.lr_scheduler.init_args.warmup_steps", "0", "--trainer.logger", "CSVLogger",
    "--trainer.callbacks+=tests.helpers.KillAt", "--test_after_fit", "false",
]  # fmt: skip


def cli(*args, cwd, env=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    command = [sys.executable, "-m", "src.cli", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_record_survives_a_mid_epoch_kill_and_resume_without_lost_or_repeated_rows(tmp_path):
    """Killed in epoch 2 (after last.ckpt at step 4) and resumed: the same rows as the uninterrupted run."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    straight = subprocess.Popen(
        [sys.executable, "-m", "src.cli", "fit", *KILLED, "--run_dir", str(tmp_path / "straight")],
        cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run = tmp_path / "killed"
    killed = cli("fit", *KILLED, "--run_dir", str(run), cwd=tmp_path, env={"KILL_AT_STEP": "6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    before = list(record_rows(str(run / SCALARS_FILE)))
    assert max(step for step, _, _ in before) == 5  # batches 5 and 6 (steps 4, 5) were logged, then lost
    resumed = cli("fit", "--run_dir", str(run), "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-3000:]

    def rows(run_dir):  # throughput and peak memory are measured, not computed: they differ between runs
        return [row for row in record_rows(str(run_dir / SCALARS_FILE)) if "per_sec" not in row[1]]

    after, expected = rows(run), rows(tmp_path / "straight")
    # The sizes (efficiency/params_total, ...) are logged once, at step 0, as by the uninterrupted run: the resumed
    # start logged them again at step 4 until an audit found it the one difference between the two records.
    keys = [(step, tag) for step, tag, _ in after]
    assert keys == [(step, tag) for step, tag, _ in expected]  # none lost, none twice
    assert after == expected  # and the same values: the resume is exact
    assert read_scalars(run, ["val/acc"])["val/acc"][0] == [3, 7, 11]


# ------------------------------------------------------------------------------------------------ logger identity
def test_loggers_get_the_run_directory_as_their_identity_and_never_a_version(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = "lightning_logs/study/resnet20/seed0", "lightning_logs/study/resnet56/seed0"
    assert run_label(a, "lightning_logs") == "study/resnet20/seed0"

    def wandb(run_dir):
        logger = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(version="seed0"))
        point_logger_at_run(logger, run_dir, "lightning_logs")
        return logger.init_args

    first, second = wandb(a), wandb(b)
    assert (first.name, first.save_dir, first.version) == ("study/resnet20/seed0", a, None)
    assert first.id.startswith("study-resnet20-seed0-") and first.id != second.id
    os.makedirs(a)
    (tmp_path / a / LOGGERS_FILE).write_text(json.dumps({"wandb": {"id": "kept-id"}}))
    assert wandb(a).id == "kept-id"  # the run's recorded id: a resume goes to the same W&B run

    mlflow = Namespace(class_path="lightning.pytorch.loggers.MLFlowLogger", init_args=Namespace(save_dir="./mlruns"))
    point_logger_at_run(mlflow, b, "lightning_logs")
    assert mlflow.init_args.tracking_uri == f"file:{tmp_path}/lightning_logs/mlruns"
    assert mlflow.init_args.run_name == "study/resnet56/seed0" and "version" not in mlflow.init_args
    assert mlflow.init_args.tags["run_dir"] == str(tmp_path / b)

    tensorboard = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=Namespace(save_dir="x"))
    point_logger_at_run(tensorboard, a, "lightning_logs")
    assert tensorboard.init_args == Namespace(save_dir="lightning_logs/study/resnet20", name="", version="seed0")


@pytest.mark.parametrize(
    "preset, class_name",
    [("tensorboard", "TensorBoardLogger"), ("csv", "CSVLogger"), ("wandb", "WandbLogger"), ("mlflow", "MLFlowLogger")],
)
def test_logger_presets_stack_on_a_run_config(preset, class_name):
    config = resolved_config(["fit", "--config", QUICKSTART, "--config", str(PRESETS / f"{preset}.yaml")])
    assert config["trainer"]["logger"]["class_path"] == f"lightning.pytorch.loggers.{class_name}"
    assert config["model"]["arch"] == "resnet14"  # the run config's settings stay


# ------------------------------------------------------------------------------------------------ sweeps and report
def sweep(tmp_path, monkeypatch, preset: str, *extra: str) -> list:
    """A 2-architecture sweep (one seed) with a logger preset stacked on the quickstart; its run directories."""
    monkeypatch.chdir(REPO_ROOT)  # the runs are `python -m src.cli` processes started here
    study = {"name": "s", "root": str(tmp_path / "logs"), "configs": [QUICKSTART, str(PRESETS / preset)]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "archs": ARCHS, "seeds": [0]}))
    assert sweep_main([str(study_file), "--", *TINY, *extra]) == 0
    return [tmp_path / "logs" / "s" / arch / "seed0" for arch in ARCHS]


def resume(run_dir) -> None:
    cli_main(["fit", "--run_dir", str(run_dir), "--ckpt_path", "last", "--trainer.max_epochs", "3"])


def curves_drawn(tmp_path) -> dict:
    out, _ = write_report(tmp_path / "logs" / "s", out=tmp_path / "report")
    figures = json.loads((out / "figures.json").read_text())
    return {variant: sorted(splits) for variant, splits in figures["training_curves.png"].items()}


@pytest.mark.slow
def test_csvlogger_sweep_writes_no_tensorboard_and_the_report_draws_its_curves(tmp_path, monkeypatch):
    runs = sweep(tmp_path, monkeypatch, "csv.yaml")
    for run in runs:
        assert (run / "metrics.csv").is_file() and (run / SCALARS_FILE).is_file()
        assert not list(run.glob("events.out.tfevents.*"))
        assert read_scalars(run, ["val/acc"])["val/acc"][0] == [1, 3]  # after each of 2 epochs of 2 steps
    assert curves_drawn(tmp_path) == {arch: ["train", "val"] for arch in ARCHS}
    export_run(runs[0], tmp_path / "results" / "resnet8" / "seed0")  # a results run keeps the curves
    exported = read_scalars(tmp_path / "results" / "resnet8" / "seed0", ["val/acc"])
    assert exported == read_scalars(runs[0], ["val/acc"])


def test_wandb_offline_sweep_makes_one_wandb_run_per_run_directory_and_resume_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = sweep(tmp_path, monkeypatch, "wandb.yaml")
    ids = [read_logger_ids(run)["wandb"]["id"] for run in runs]
    assert len(set(ids)) == 2
    for run, wandb_id in zip(runs, ids):
        offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
        assert len(offline) == 1 and offline[0].endswith(f"-{wandb_id}")
        assert (run / "config.yaml").is_file() and (run / "efficiency.json").is_file()  # the run's files: in the run
    assert curves_drawn(tmp_path) == {arch: ["train", "val"] for arch in ARCHS}

    resume(runs[0])
    assert read_logger_ids(runs[0])["wandb"]["id"] == ids[0]
    offline = sorted(p.name for p in (runs[0] / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(f"-{ids[0]}") for name in offline)  # the same W&B run, resumed
    assert read_scalars(runs[0], ["val/acc"])["val/acc"][0] == [1, 3, 5]


def test_mlflow_sweep_makes_one_mlflow_run_per_run_directory_and_resume_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    runs = sweep(tmp_path, monkeypatch, "mlflow.yaml", "--trainer.logger.init_args.save_dir", str(store))
    client = MlflowClient(f"file:{store}")
    experiment = client.get_experiment_by_name("resnet-efficiency")
    found = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in found) == sorted(str(run) for run in runs)  # label: the run's path
    by_dir = {run.data.tags["run_dir"]: run.info.run_id for run in found}
    assert [read_logger_ids(run)["mlflow"]["run_id"] for run in runs] == [by_dir[str(run)] for run in runs]
    assert not (REPO_ROOT / "mlruns").exists()
    assert curves_drawn(tmp_path) == {arch: ["train", "val"] for arch in ARCHS}

    resume(runs[0])
    assert len(client.search_runs([experiment.experiment_id])) == 2  # no third run
    history = client.get_metric_history(by_dir[str(runs[0])], "val/acc")
    assert sorted(metric.step for metric in history) == [1, 3, 5]  # both starts, in one MLflow run

"""``src.cli_support.run_dirs``: which directory a command writes to, decided without training anything."""

from __future__ import annotations

import os

import pytest
import torch
from jsonargparse import Namespace

from src import runs
from src.cli_support import run_dirs

TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"


def config(logger=None, dirpath=None) -> Namespace:
    return Namespace(trainer=Namespace(logger=logger, default_root_dir=None), checkpoint=Namespace(dirpath=dirpath))


def tensorboard(**init_args) -> Namespace:
    return Namespace(class_path=TENSORBOARD, init_args=Namespace(**init_args))


def write_checkpoint(path, step: int = 3) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": {}, "global_step": step}, path)
    return str(path)


@pytest.fixture(autouse=True)
def _no_slurm_no_ranks(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "RANK", "LOCAL_RANK", "SLURM_PROCID", run_dirs.RUN_DIR_ENV):
        monkeypatch.delenv(key, raising=False)


def test_a_loggers_fixed_version_names_the_run_and_a_default_logger_names_none(tmp_path):
    logger = tensorboard(save_dir=str(tmp_path), name="exp", version=3)
    assert run_dirs.named_run_dir(config(logger)) == os.path.join(str(tmp_path), "exp", "version_3")
    assert run_dirs.named_run_dir(config(tensorboard(save_dir="s", name="n", version="mine"))) == "s/n/mine"
    assert run_dirs.named_run_dir(config(None)) is None
    assert run_dirs.logger_location(config(None)) == ("lightning_logs", "default")
    assert run_dirs.logger_location(config(tensorboard(save_dir="logs", name=None))) == ("logs", "")


def test_a_fresh_run_is_the_next_version_and_its_launcher_is_remembered(tmp_path, monkeypatch):
    for version in (0, 2):
        (tmp_path / "exp" / f"version_{version}").mkdir(parents=True)
    chosen = run_dirs.fresh_run_dir(config(tensorboard(save_dir=str(tmp_path), name="exp")))
    assert chosen == str(tmp_path / "exp" / "version_3")
    assert os.environ[run_dirs.RUN_DIR_ENV] == f"{os.getpid()}:{chosen}"  # DDP ranks it launches join it
    run_dirs.forget_fresh_run_dir()
    assert run_dirs.RUN_DIR_ENV not in os.environ


def test_fit_continues_only_in_the_checkpoints_own_run(tmp_path):
    run = tmp_path / "run"
    last = write_checkpoint(run / "checkpoints" / "last.ckpt")
    assert run_dirs.fit_run_dir(last, None, None) == (str(run), None)
    assert run_dirs.fit_run_dir(last, str(run), str(run)) == (str(run), None)
    with pytest.raises(runs.RunError, match="belongs to the run .* not --run_dir"):
        run_dirs.fit_run_dir(last, str(tmp_path / "other"), str(tmp_path / "other"))
    loose = write_checkpoint(tmp_path / "loose.ckpt")
    with pytest.raises(runs.RunError, match="is not inside a run directory"):
        run_dirs.fit_run_dir(loose, None, None)


def test_a_fresh_fit_never_starts_over_a_run_with_checkpoints(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert run_dirs.fit_run_dir(None, str(run), str(run)) == (str(run), None)  # nothing there yet: start it
    write_checkpoint(run / "checkpoints" / "last.ckpt")
    with pytest.raises(runs.RunError, match="already holds checkpoints of a run; continue it with --ckpt_path last"):
        run_dirs.fit_run_dir(None, str(run), str(run))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeue without --run_dir cannot find its first attempt
    with pytest.raises(runs.RunError, match="launch SLURM jobs with --run_dir DIR"):
        run_dirs.fit_run_dir(None, None, None)


def test_evaluating_a_runs_checkpoint_records_into_that_run_unless_it_is_busy(tmp_path, capsys):
    run = tmp_path / "run"
    best = write_checkpoint(run / "checkpoints" / "best.ckpt")
    assert run_dirs.evaluated_run_dir(best, "test") is None  # no config.yaml: not a run this CLI wrote
    (run / "config.yaml").write_text("seed_everything: 0\n")
    assert run_dirs.evaluated_run_dir(best, "test") == str(run)
    with runs.RunLock(run):  # its fit still writes it (flock: a second open file of ours is refused too)
        assert run_dirs.evaluated_run_dir(best, "test") is None  # testing goes to a new directory
    assert f"The run '{run}' is in use by process {os.getpid()}" in capsys.readouterr().out
    assert run_dirs.evaluated_run_dir(None, "test") is None


def test_the_config_is_pointed_at_the_run_and_checkpoints_elsewhere_are_refused(tmp_path):
    run_dir = str(tmp_path / "logs" / "run7")
    given = config(None)
    run_dirs.point_config_at_run_dir(given, run_dir)
    assert given.trainer.default_root_dir == run_dir
    assert given.trainer.logger.class_path == TENSORBOARD
    assert (given.trainer.logger.init_args.save_dir, given.trainer.logger.init_args.version) == (
        str(tmp_path / "logs"),
        "run7",
    )
    assert given.checkpoint.dirpath == os.path.join(run_dir, "checkpoints")
    with pytest.raises(runs.RunError, match="would put this run's checkpoints outside its directory"):
        run_dirs.point_config_at_run_dir(config(None, dirpath=str(tmp_path / "elsewhere")), run_dir)


def test_a_failed_command_removes_the_folders_it_created_but_never_a_run_with_checkpoints(tmp_path):
    run = tmp_path / "lightning_logs" / "default" / "version_0"
    first_created = run_dirs.first_missing(str(run))
    assert first_created == str(tmp_path / "lightning_logs")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("x: 1\n")
    run_dirs.remove_unused_run_dir(str(run), first_created, trainer=None)
    assert sorted(os.listdir(tmp_path)) == []  # version_0, default/ and lightning_logs/ all gone
    kept = tmp_path / "kept"
    write_checkpoint(kept / "checkpoints" / "last.ckpt")
    run_dirs.remove_unused_run_dir(str(kept), str(kept), trainer=None)
    assert (kept / "checkpoints" / "last.ckpt").is_file()


def test_file_stamps_list_every_file_with_size(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("abc")
    (tmp_path / "y.txt").write_text("")
    stamps = run_dirs.file_stamps(str(tmp_path))
    assert sorted(stamps) == [os.path.join("a", "x.txt"), "y.txt"] and stamps["y.txt"][0] == 0
    assert run_dirs.file_stamps(str(tmp_path / "missing")) == {}

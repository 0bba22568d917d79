"""One run per directory whatever happens: a fresh fit never writes into a directory another fit wrote into,
and a sweep restarting a dead attempt moves that attempt's files aside first."""

from __future__ import annotations

import pytest
import yaml

from src import runs
from src.cli import main as cli_main
from src.sweep import main as sweep_main
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, STUDY, TINY
from tests.test_sweep import write_study


def _fit(run_dir, arch: str, *extra: str) -> None:
    cli_main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", arch, *TINY, *extra])


def test_a_fit_into_a_directory_with_another_fits_records_but_no_checkpoint_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _fit(run_dir, "resnet8", "--trainer.enable_checkpointing", "false")
    first = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert not runs.has_checkpoints(str(run_dir)) and "config.yaml" in first

    with pytest.raises(SystemExit) as exit_info:  # another architecture, another learning rate, same directory
        _fit(run_dir, "plain8", "--trainer.enable_checkpointing", "false", "--model.optimizer.init_args.lr", "0.5")
    message = str(exit_info.value.code) + capsys.readouterr().err
    assert f"the run directory '{run_dir}' already holds the records of another fit (" in message
    assert "config.yaml" in message and "efficiency.json" in message and "scalars.csv" in message
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "run.lock"} == {
        name: data for name, data in first.items() if name != "run.lock"
    }  # nothing of the refused fit was written, and no config-1.yaml
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["arch"] == "resnet8"


def test_a_sweep_moves_a_dead_attempts_files_aside_before_restarting_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    run_dir = tmp_path / "logs" / STUDY / "resnet8" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "scalars.csv").write_text("step,tag,value\n7,train/acc,0.123456\n")  # killed before a checkpoint
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0])
    assert sweep_main([str(study_file), "--", *TINY]) == 0
    out = capsys.readouterr().out
    aside = tmp_path / "logs" / STUDY / ".replaced" / "resnet8" / "seed0-1"
    assert f"its files moved aside to {aside}" in out
    assert (aside / "scalars.csv").read_text().endswith("7,train/acc,0.123456\n")
    assert runs.run_status(run_dir) == "finished" and "0.123456" not in (run_dir / "scalars.csv").read_text()


def test_a_resume_with_other_settings_is_refused_and_one_with_a_longer_budget_is_not(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _fit(run_dir, "resnet8")
    before = sorted(p.name for p in run_dir.iterdir())
    resume = ["fit", "--run_dir", str(run_dir), "--ckpt_path", "last"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*resume, "--model.optimizer.init_args.lr", "0.5"])
    message = str(exit_info.value.code) + capsys.readouterr().err
    assert f"the run '{run_dir}' was trained with other settings than this resume gives" in message
    assert "model.optimizer.init_args.lr 0.1 -> 0.5" in message
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no config-1.yaml, nothing mixed in
    cli_main([*resume, "--trainer.max_epochs", "3"])  # the documented way to train a run longer
    assert (run_dir / "config-1.yaml").is_file() and runs.read_efficiency(run_dir)["epoch"] == 3

"""``python -m src.sweep``: planning, commands, skipping finished runs, dry-run and the SLURM array script."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from src.study.plan import Study, StudyError, load_study, plan_runs, run_command
from src.study.runs_io import read_efficiency, run_status
from src.sweep import main
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, STUDY, TINY


def write_study(path, **fields):
    study = {"name": STUDY, "root": str(path.parent / "logs"), "configs": [QUICKSTART], **fields}
    path.write_text(yaml.safe_dump(study))
    return path


def test_shipped_ladder_study_plans_the_papers_nets(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    study = load_study("configs/studies/cifar10_ladder.yaml").validate()
    runs = plan_runs(study)
    assert [run.label for run in runs] == [
        f"{arch}/seed{seed}" for arch in ("resnet20", "resnet56", "plain20", "plain56") for seed in (0, 1)
    ]
    assert runs[0].run_dir.as_posix() == "lightning_logs/cifar10_ladder/resnet20/seed0"


def test_grid_names_directories_and_plain_nets_run_once(tmp_path):
    study = Study(name="s", root=str(tmp_path), archs=["resnet20", "plain20"], seeds=[0, 1])
    study.grid = {"model.shortcut": ["A", "B"], "model.optimizer.init_args.lr": [0.1]}
    runs = plan_runs(study.validate())
    assert [run.label for run in runs] == [
        "resnet20-shortcutA-lr0.1/seed0", "resnet20-shortcutA-lr0.1/seed1",
        "resnet20-shortcutB-lr0.1/seed0", "resnet20-shortcutB-lr0.1/seed1",
        "plain20-lr0.1/seed0", "plain20-lr0.1/seed1",
    ]  # fmt: skip
    assert runs[2].run_dir == tmp_path / "s" / "resnet20-shortcutB-lr0.1" / "seed0"


def test_run_command_is_a_fresh_cli_process_in_the_run_directory(tmp_path):
    study = Study(name="s", root="logs", configs=["a.yaml", "b.yaml"], archs=["resnet20"], seeds=[3])
    study.grid, study.args, study.extra_args = {"model.shortcut": ["B"]}, {"trainer.max_steps": 500}, ["--x", "1"]
    run = plan_runs(study)[0]
    assert run_command(study, run, python="python") == [
        "python", "-m", "src.cli", "fit", "--config", "a.yaml", "--config", "b.yaml",
        "--run_dir", "logs/s/resnet20-shortcutB/seed3", "--seed_everything", "3", "--model.arch", "resnet20",
        "--trainer.max_steps", "500", "--model.shortcut", "B", "--x", "1",
    ]  # fmt: skip
    assert run_command(study, run, resume=True, python="python")[-2:] == ["--ckpt_path", "last"]


def test_dry_run_prints_the_plan_and_resumes_unfinished_runs(tmp_path, capsys):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0, 1, 2])
    logs = tmp_path / "logs" / STUDY / "resnet8"
    (logs / "seed1" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 4}, logs / "seed1" / "checkpoints" / "last.ckpt")  # never tested
    (logs / "seed2").mkdir()  # crashed before its first checkpoint
    assert main([str(study_file), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"study '{STUDY}': 3 runs in {tmp_path / 'logs' / STUDY}/"
    assert out[1].startswith("[1/3] resnet8/seed0: run: ") and "--ckpt_path" not in out[1]
    assert out[2].startswith("[2/3] resnet8/seed1: resume: ") and out[2].endswith("--ckpt_path last")
    assert out[3].startswith("[3/3] resnet8/seed2: restart: ") and "--ckpt_path" not in out[3]
    assert not (tmp_path / "logs" / STUDY / "sweep_logs").exists()  # a dry run writes nothing


def test_relaunched_sweep_skips_finished_runs_and_leaves_their_files_alone(tiny_study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)  # the runs are `python -m src.cli` processes started here
    logs = tmp_path / "logs"
    shutil.copytree(tiny_study / "resnet8" / "seed0", logs / STUDY / "resnet8" / "seed0")  # finished earlier
    finished = logs / STUDY / "resnet8" / "seed0"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished.rglob("*") if p.is_file()}
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0, 1])

    assert main([str(study_file), "--", *TINY]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\[1/2\] resnet8/seed0: finished earlier, skipped \(test_acc 0\.\d{4}", out)
    assert re.search(r"\[2/2\] resnet8/seed1: test_acc 0\.\d{4}, best val_acc 0\.\d{4}, 75,290 params", out)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished.rglob("*") if p.is_file()} == before
    new = logs / STUDY / "resnet8" / "seed1"
    assert run_status(new) == "finished" and read_efficiency(new)["arch"] == "resnet8"
    assert yaml.safe_load((new / "config.yaml").read_text())["seed_everything"] == 1
    assert (logs / STUDY / "sweep_logs" / "resnet8_seed1.log").read_text().startswith("$ ")

    # Everything finished: a third launch runs nothing and touches nothing.
    everything = {
        p: p.stat().st_mtime_ns for p in (logs / STUDY).rglob("*") if p.is_file() and "sweep_logs" not in p.parts
    }
    assert main([str(study_file), "--", *TINY]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert everything == {p: p.stat().st_mtime_ns for p in everything}


def test_slurm_script_for_a_2x2_grid_has_4_array_tasks(tmp_path, capsys):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8", "plain8"], seeds=[0, 1])
    study_file.write_text(study_file.read_text() + "slurm: {sbatch: {partition: gpu, time: '01:00:00'}}\n")
    script = tmp_path / "sweep.sbatch"
    assert main([str(study_file), "--slurm", str(script), "--", "--trainer.max_steps", "100"]) == 0
    assert f"wrote {script}: 4 array tasks" in capsys.readouterr().out
    text = script.read_text()
    assert "#SBATCH --array=0-3\n" in text and "#SBATCH --partition=gpu\n" in text and "#SBATCH --gres=gpu:1\n" in text
    tasks = re.findall(r"^    (\d+)\) run (\S+) (.*) ;;$", text, flags=re.MULTILINE)
    assert [index for index, _, _ in tasks] == ["0", "1", "2", "3"]
    expected = [(arch, seed) for arch in ("resnet8", "plain8") for seed in (0, 1)]
    for (_, run_dir, command), (arch, seed) in zip(tasks, expected):
        assert run_dir == str(tmp_path / "logs" / STUDY / arch / f"seed{seed}")
        assert shlex.split(command) == [
            "python", "-m", "src.cli", "fit", "--config", QUICKSTART, "--run_dir", run_dir,
            "--seed_everything", str(seed), "--model.arch", arch, "--trainer.max_steps", "100",
        ]  # fmt: skip
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

    # An array task skips a finished run, resumes one with last.ckpt, and starts a new one.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "launched: $*"\n')
    (bin_dir / "python").chmod(0o755)
    root = tmp_path / "logs" / STUDY
    (root / "resnet8" / "seed0").mkdir(parents=True)
    (root / "resnet8" / "seed0" / "efficiency.json").write_text('{\n  "test_acc": 0.5\n}')
    (root / "resnet8" / "seed1" / "checkpoints").mkdir(parents=True)
    (root / "resnet8" / "seed1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def task(index):
        env["SLURM_ARRAY_TASK_ID"] = str(index)
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True).stdout

    assert task(0) == f"{root / 'resnet8' / 'seed0'}: finished, skipped\n"
    assert task(1).startswith("launched: -m src.cli fit") and task(1).endswith("--ckpt_path last\n")
    assert task(2).startswith("launched: -m src.cli fit") and "--ckpt_path" not in task(2)

    # Re-generating leaves out the finished run and never overwrites the earlier script.
    assert main([str(study_file), "--slurm", str(script)]) == 2
    assert main([str(study_file), "--slurm", str(tmp_path / "again.sbatch")]) == 0
    assert "3 array tasks (1 finished runs left out)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"archs": ["resnet21"]}, "Unknown architecture 'resnet21'"),
        ({"archs": ["resnet8"], "seeds": []}, "'seeds' must be a non-empty list"),
        ({"archs": ["resnet8"], "grid": {"model.arch": ["resnet8"]}}, "list architectures under 'archs'"),
        ({"archs": ["resnet8"], "trainer": {"max_steps": 1}}, "unknown keys ['trainer']"),
        ({"archs": ["resnet8"], "configs": ["nope.yaml"]}, "base config 'nope.yaml' does not exist"),
    ],
)
def test_bad_studies_get_one_clear_message(tmp_path, capsys, fields, message):
    study_file = write_study(tmp_path / "s.yaml", **fields)
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_command_line_study_and_study_given_as_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--name", "cl", "--config", QUICKSTART, "--arch", "resnet8", "plain8", "--seed", "4"]
    assert main([*args, "--grid", "model.shortcut=A,B", "--dry-run"]) == 0
    labels = re.findall(r"\] (\S+): run:", capsys.readouterr().out)
    assert labels == ["resnet8-shortcutA/seed4", "resnet8-shortcutB/seed4", "plain8/seed4"]
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0])
    assert main(["--config", str(study_file), "--dry-run"]) == 0  # read as the study file
    assert "1 runs in" in capsys.readouterr().out
    assert main([QUICKSTART, "--dry-run"]) == 2
    assert "it is a run config; pass it with --config" in capsys.readouterr().err
    with pytest.raises(StudyError, match="--grid wants KEY=V1,V2"):
        from src.sweep import build_study, parse_args

        build_study(*parse_args(["--name", "x", "--arch", "resnet8", "--grid", "model.shortcut"]))


def test_sweep_module_runs_as_a_command(tmp_path):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "src.sweep", str(study_file), "--dry-run"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "[1/1] resnet8/seed0: run: " in done.stdout

"""``python -m src.sweep``: planning, commands, skipping finished runs, dry-run, the SLURM array script, ``--jobs``."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from src import runs as run_files
from src.machine import available_cpus
from src.runs import read_efficiency, run_status
from src.sweep import main
from src.sweeping.plan import plan_runs
from src.sweeping.slots import Slot, assign_slots, usable_cpus, visible_gpus
from src.sweeping.study import Study, StudyError, load_study, run_command
from tests.conftest import REPO_ROOT
from tests.helpers import alive, clean_environment, stop_with_signal, sweep_process, wait_for
from tests.study_runs import QUICKSTART, STUDY, TINY
from tests.sweep_probe import HOLD_ENV, PROBE_ENV


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
        # wrong types: one line naming the key and value, not a traceback (TypeError, AttributeError) from inside
        (
            {"archs": ["resnet8"], "name": 2024},
            "study name must be a non-empty folder name (letters, digits, _ . -), "
            "got 2024 (a number: quote it, name: '2024')",
        ),
        ({"archs": ["resnet8"], "root": 5}, "'root' must be a folder path (e.g. lightning_logs), got 5"),
        ({"archs": ["resnet8"], "configs": [5]}, "'configs' lists 5: a run config is a file path"),
        ({"archs": ["resnet8"], "configs": {"a": "b"}}, "'configs' must be a list of run config files"),
        ({"archs": {"resnet8": 1}}, "'archs' must be a list of architectures"),
        ({"archs": ["resnet8"], "grid": {1: [1, 2]}}, "'grid' has the key 1: a setting's key is its dotted name"),
        ({"archs": ["resnet8"], "args": {2: 3}}, "'args' has the key 2: a setting's key is its dotted name"),
        ({"archs": ["resnet8"], "select": {"grid": {1: [1, 2]}}}, "select 'grid' has the key 1"),
        (
            {"archs": ["resnet8"], "slurm": {"max_parallel": "four"}},
            "'slurm: max_parallel' must be a whole number >= 1 (array tasks at once, e.g. 8), got 'four'",
        ),
        ({"archs": ["resnet8"], "slurm": {"max_parallel": True}}, "'slurm: max_parallel' must be a whole number"),
        ({"archs": ["resnet8"], "slurm": {"sbatch": 5}}, "'slurm: sbatch' must map sbatch options to values"),
        ({"archs": ["resnet8"], "slurm": {"setup": 5}}, "'slurm: setup' must be a shell command or a list of them"),
        ({"archs": ["resnet8"], "slurm": {"srun": "yes"}}, "'slurm: srun' must be true or false, got 'yes'"),
        ({"archs": ["resnet8"], "slurm": {"nodes": 2}}, "unknown keys under 'slurm': ['nodes']; valid: ['sbatch',"),
    ],
)
def test_bad_studies_get_one_clear_message(tmp_path, capsys, fields, message):
    study_file = write_study(tmp_path / "s.yaml", **fields)
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_study_named_null_takes_its_files_name(tmp_path, capsys):
    study_file = write_study(tmp_path / "mine.yaml", archs=["resnet8"], seeds=[0], name=None)
    assert main([str(study_file), "--dry-run"]) == 0
    assert "study 'mine': 1 runs in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seed_everything", "7"], "'--seed_everything 7' after '--' would set 'seed_everything'"),
        (["--model.arch=resnet56"], "'--model.arch=resnet56' after '--' would set 'model.arch'"),
        (["--model", '{"arch": "resnet56"}'], "would set 'model' (which holds 'model.arch')"),
        (
            ["--model.shortcut", "B"],
            "would set 'model.shortcut' in every run, which the sweep sets itself: a 'grid' axis",
        ),
        (["--run_dir", "elsewhere"], "would set 'run_dir'"),
        (["--config", QUICKSTART], "would set 'seed_everything'"),  # the file sets seed_everything and model.arch
        (["-c", "{model: {arch: resnet56}}"], "would set 'model.arch'"),
        (["-c", "{model: {}}"], "would set 'model' (which holds 'model.arch')"),  # an empty mapping may reset it
    ],
)
def test_arguments_after_the_double_dash_cannot_set_what_the_sweep_sets(tmp_path, capsys, extra, message):
    """They come last in every run's command: they would train every run at one seed, arch or grid value while
    the folders name another."""
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0, 1], grid={"model.shortcut": ["A", "B"]})
    assert main([str(study_file), "--dry-run", "--", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the argument ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "logs").exists()
    assert main([str(study_file), "--dry-run", "--", "--trainer.max_steps", "-1", "--model.optimizer.lr", "0.3"]) == 0
    assert "--model.shortcut B --trainer.max_steps -1 --model.optimizer.lr 0.3\n" in capsys.readouterr().out


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
    typo = tmp_path / "typo.yaml"  # a study with a misspelt key is a study, not a run config
    typo.write_text(yaml.safe_dump({"name": "t", "configs": [QUICKSTART], "arch": ["resnet8"], "seeds": [0]}))
    assert main([str(typo), "--dry-run"]) == 2
    assert "has no 'archs'; unknown keys: 'arch' (did you mean 'archs'?)" in capsys.readouterr().err
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


# ------------------------------------------------------------------------------------------------ widths


def test_widths_cross_each_arch_and_width_one_keeps_its_name(tmp_path):
    study = Study(name="s", root=str(tmp_path), archs=["resnet8", "plain8"], widths=[1, 2], seeds=[0, 1])
    runs = plan_runs(study.validate())
    assert [run.label for run in runs] == [
        "resnet8/seed0", "resnet8/seed1", "resnet8_2/seed0", "resnet8_2/seed1",
        "plain8/seed0", "plain8/seed1", "plain8_2/seed0", "plain8_2/seed1",
    ]  # fmt: skip
    assert runs[2].run_dir == tmp_path / "s" / "resnet8_2" / "seed0"
    assert run_command(study, runs[2], python="python")[-2:] == ["--model.arch", "resnet8_2"]
    without = Study(name="s", root=str(tmp_path), archs=["resnet8", "plain8"], seeds=[0, 1])
    assert [run.label for run in plan_runs(without.validate())] == [
        "resnet8/seed0",
        "resnet8/seed1",
        "plain8/seed0",
        "plain8/seed1",
    ]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"archs": ["resnet8"], "widths": [1, 0]}, "'widths' lists 0: a width multiplier k must be an integer >= 1"),
        ({"archs": ["resnet8"], "widths": [1.5]}, "'widths' lists 1.5: a width multiplier k must be an integer >= 1"),
        ({"archs": ["resnet8"], "widths": []}, "'widths' must be a non-empty list of integers >= 1"),
        ({"archs": ["resnet8"], "widths": [2, 2]}, "'widths' lists a width twice: [2, 2]"),
        ({"archs": ["wrn16_4"], "widths": [1, 2]}, "'wrn16_4' has no width multiplier to cross with 'widths'"),
        ({"archs": ["resnet50"], "widths": [2]}, "'resnet50' has no width multiplier to cross with 'widths'"),
        ({"archs": ["preact_resnet110"], "widths": [2]}, "pre-activation nets take no width"),
        ({"archs": ["resnet20_2"], "widths": [2]}, "'resnet20_2' already names its width: list 'resnet20'"),
    ],
)
def test_bad_widths_get_one_error_line(tmp_path, capsys, fields, message):
    study_file = write_study(tmp_path / "s.yaml", **fields)
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_arch_on_the_command_line_selects_a_widened_run_of_a_widths_study(tmp_path, capsys):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8", "resnet14"], widths=[1, 2], seeds=[0, 1])
    assert main([str(study_file), "--dry-run", "--arch", "resnet8_2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"\] (\S+): run:", out) == ["resnet8_2/seed1"]
    assert f"--run_dir {tmp_path / 'logs' / STUDY / 'resnet8_2' / 'seed1'} " in out


def test_two_grid_values_that_name_one_folder_are_refused(tmp_path, capsys):
    study_file = write_study(
        tmp_path / "s.yaml", archs=["resnet8"], grid={"data.init_args.root": ["x/data/c10", "x/data_c10"]}
    )
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "both name the run folder 'resnet8-rootx_data_c10'" in err and err.count("\n") == 1


def test_seeds_per_arch_plan_each_arch_its_own_and_arch_keeps_them(tmp_path, capsys):
    seeds = {"resnet8": [0, 1, 2], "plain8": [5]}
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8", "plain8"], seeds=seeds)
    assert [run.label for run in plan_runs(load_study(study_file).validate())] == [
        "resnet8/seed0", "resnet8/seed1", "resnet8/seed2", "plain8/seed5",
    ]  # fmt: skip
    assert main([str(study_file), "--dry-run", "--arch", "plain8"]) == 0
    assert re.findall(r"\] (\S+): run:", capsys.readouterr().out) == ["plain8/seed5"]
    assert main([str(study_file), "--dry-run", "--arch", "plain8", "--seed", "7"]) == 0
    assert re.findall(r"\] (\S+): run:", capsys.readouterr().out) == ["plain8/seed7"]


@pytest.mark.parametrize(
    "seeds, message",
    [
        ({"resnet8": [0]}, "'seeds' per arch must name each of ['resnet8', 'plain8'] once: plain8 has no seeds"),
        ({"resnet8": [0], "plain8": [1], "resnet20": [0]}, "resnet20 is not in 'archs'"),
        ({"resnet8": [0, 0], "plain8": [1]}, "'seeds' of resnet8 lists a seed twice: [0, 0]"),
        ({"resnet8": [], "plain8": [1]}, "'seeds' of resnet8 must be a non-empty list of integers"),
    ],
)
def test_bad_seeds_per_arch_get_one_error_line(tmp_path, capsys, seeds, message):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8", "plain8"], seeds=seeds)
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_every_shipped_study_file_dry_runs(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    studies = sorted(Path("configs/studies").glob("*.yaml"))
    assert {"cifar10_jpeg_width_depth.yaml", "cifar10_wrn.yaml", "cifar10_jpeg_ladder.yaml"} <= {
        s.name for s in studies
    }
    for path in studies:
        assert main([str(path), "--dry-run"]) == 0, path
        out = capsys.readouterr().out
        assert "STALE" not in out and "error" not in out, path
    # Without 'widths' nothing changed: the committed ladder plans the same runs in the same directories.
    ladder = plan_runs(load_study("configs/studies/cifar10_jpeg_ladder.yaml").validate())
    archs = [f"{kind}{depth}" for kind in ("resnet", "plain") for depth in (20, 32, 44, 56)]
    assert [run.run_dir.as_posix() for run in ladder] == [
        f"lightning_logs/cifar10_jpeg_ladder/{arch}/seed{seed}" for arch in archs for seed in (0, 1, 2)
    ]
    grid = plan_runs(load_study("configs/studies/cifar10_jpeg_width_depth.yaml").validate())
    assert [run.variant for run in grid[::2]] == [f"resnet{d}{k}" for d in (8, 14, 20) for k in ("", "_2", "_4")]
    assert [run.seed for run in grid[:2]] == [0, 1] and len(grid) == 18


# ------------------------------------------------------------------------------------------------ --jobs N
PROBE = "--trainer.callbacks+=tests.sweep_probe.FitProbe"  # one line per fit start: env, threads, CPUs, workers
_WORKERS = TINY.index("--data.num_workers")
TINY_AUTO_WORKERS = TINY[:_WORKERS] + TINY[_WORKERS + 2 :]  # loader workers counted from each run's CPU share


needs_two_cpus = pytest.mark.skipif(available_cpus() < 2, reason="two jobs on CPU need two CPUs to split")


def probes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_assignment_hands_each_job_one_gpu_by_the_parents_name_and_splits_the_cpus():
    # CUDA sees 2 devices through CUDA_VISIBLE_DEVICES=4,5: the children must be told 4 and 5, not 0 and 1.
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "4, 5"}, 2) == ["4", "5"]
    assert visible_gpus({}, 3) == ["0", "1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a1,MIG-b2,7"}, 2) == ["GPU-a1", "MIG-b2"]  # CUDA stops at 7
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, 0) == []
    slots, notice = assign_slots(2, ["4", "5", "6"], list(range(16)))
    assert notice is None
    assert slots == [Slot(0, "4", tuple(range(8))), Slot(1, "5", tuple(range(8, 16)))]
    env = slots[1].env({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "4,5,6"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "5", "OMP_NUM_THREADS": "8"}
    assert slots[1].describe() == "GPU 5, CPUs 8-15"
    # More jobs than GPUs: one per GPU, said once.
    slots, notice = assign_slots(8, ["0", "1"], [0, 1, 2, 3, 4])
    assert [(slot.gpu, slot.cpus) for slot in slots] == [("0", (0, 1, 2)), ("1", (3, 4))]
    assert notice == "--jobs 8: only 2 GPU(s) visible (0,1); running 2 at once, one per GPU"


def test_runs_per_gpu_gives_each_gpu_k_slots_in_turn_with_a_share_of_the_cpus_each():
    slots, notice = assign_slots(5, ["0", "1"], list(range(8)), per_gpu=2)
    assert [(slot.gpu, slot.cpus) for slot in slots] == [("0", (0, 1)), ("1", (2, 3)), ("0", (4, 5)), ("1", (6, 7))]
    assert notice == "--jobs 5: only 2 GPU(s) visible (0,1); running 4 at once, 2 per GPU (--runs-per-gpu)"
    # Fewer jobs than places: still spread over every GPU first.
    slots, notice = assign_slots(3, ["3", "4"], list(range(6)), per_gpu=4)
    assert notice is None and [slot.gpu for slot in slots] == ["3", "4", "3"]
    assert slots[2].env({})["CUDA_VISIBLE_DEVICES"] == "3" and slots[2].threads == 2


def test_dry_run_puts_k_runs_on_one_gpu_and_says_when_there_is_no_gpu_to_share(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("src.sweeping.jobs.available_cpus", lambda: 1)
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0, 1, 2, 3])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6")
    assert main([str(study_file), "--dry-run", "--jobs", "4", "--runs-per-gpu", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-5] == "--jobs 4: 4 runs at once, each started when a slot is free:"
    assert [line.split()[2] for line in out[-4:]] == ["CUDA_VISIBLE_DEVICES=6"] * 4
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main([str(study_file), "--dry-run", "--jobs", "2", "--runs-per-gpu", "4"]) == 0
    out = capsys.readouterr().out
    assert "--runs-per-gpu 4: no GPU visible; the 2 jobs share the CPUs" in out and "CUDA_VISIBLE_DEVICES" not in out


def test_assignment_without_gpus_splits_the_cpus_and_keeps_a_smaller_thread_count():
    slots, notice = assign_slots(3, [], [0, 1, 2, 3, 4, 5, 6, 7])
    assert notice is None and [slot.cpus for slot in slots] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert all(slot.gpu is None for slot in slots) and slots[2].describe() == "CPUs 6-7"
    assert "CUDA_VISIBLE_DEVICES" not in slots[0].env({})
    assert slots[0].env({"OMP_NUM_THREADS": "2"})["OMP_NUM_THREADS"] == "2"  # the user asked for fewer
    assert slots[0].env({"OMP_NUM_THREADS": "64"})["OMP_NUM_THREADS"] == "3"
    slots, notice = assign_slots(4, [], [2, 3])
    assert [slot.cpus for slot in slots] == [(2,), (3,)] and slots[0].describe() == "CPU 2"
    assert notice == "--jobs 4: only 2 CPU(s) to share; running 2 at once, one CPU each"


def test_dry_run_with_jobs_prints_where_each_run_would_go_on_faked_gpus(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    monkeypatch.setattr("src.sweeping.jobs.available_cpus", lambda: 1)
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0, 1, 2])
    assert main([str(study_file), "--dry-run", "--jobs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    cpu = sorted(os.sched_getaffinity(0))[0]
    assert out[-3:] == [
        "--jobs 2: 2 runs at once, each started when a slot is free:",
        f"  slot 1: CUDA_VISIBLE_DEVICES=2 OMP_NUM_THREADS=1, pinned to CPUs {cpu}",
        f"  slot 2: CUDA_VISIBLE_DEVICES=5 OMP_NUM_THREADS=1, pinned to CPUs {cpu}",
    ]
    # A run that wants several GPUs cannot have one slot's single GPU: refused before anything starts.
    assert main([str(study_file), "--jobs", "2", "--", "--trainer.devices", "2"]) == 2
    err = capsys.readouterr().err
    assert "--jobs gives each run one GPU, but resnet8/seed0 asks for trainer.devices 2" in err
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "--jobs must be at least 1 (runs at once), got 0"),
        (["--jobs", "2", "--collect"], "--collect trains nothing"),
        (["--jobs", "2", "--show-output"], "--show-output streams one run's output here; with --jobs 2"),
        (["--jobs", "2", "--runs-per-gpu", "0"], "--runs-per-gpu must be at least 1 (runs sharing one GPU), got 0"),
        (["--runs-per-gpu", "4"], "--runs-per-gpu 4 shares a GPU between runs that train at once: give --jobs N"),
        (["--jobs", "4", "--runs-per-gpu", "2", "--slurm", "a.sbatch"], "a SLURM array task gets its own"),
    ],
)
def test_jobs_with_what_it_cannot_mean_is_refused(tmp_path, capsys, args, message):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0])
    assert main([str(study_file), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_slurm_with_jobs_caps_the_array_tasks_at_once(tmp_path, capsys):
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8", "plain8"], seeds=[0, 1])
    assert main([str(study_file), "--slurm", str(tmp_path / "a.sbatch"), "--jobs", "3"]) == 0
    assert "#SBATCH --array=0-3%3\n" in (tmp_path / "a.sbatch").read_text()


@pytest.mark.slow
@needs_two_cpus
def test_two_jobs_on_cpu_train_each_run_once_on_its_own_cpus_and_export_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the runs are `python -m src.cli` processes started here
    monkeypatch.setenv(PROBE_ENV, str(tmp_path / "probe.jsonl"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8", "plain8"], seeds=[0, 1])
    study_file.write_text(study_file.read_text() + f"results: {tmp_path / 'results'}\n")
    assert main([str(study_file), "--jobs", "2", "--", *TINY_AUTO_WORKERS, PROBE]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "logs" / STUDY
    labels = [f"{arch}/seed{seed}" for arch in ("resnet8", "plain8") for seed in (0, 1)]
    cpus = usable_cpus(available_cpus())
    shares = [cpus[: len(cpus) // 2 + len(cpus) % 2], cpus[len(cpus) // 2 + len(cpus) % 2 :]]

    # Each run: started once (on one of the two CPU shares), trained once, ended with a result, copied once.
    for label in labels:
        started = re.findall(rf"\] {re.escape(label)}: running on CPUs? ([\d,-]+) \(output: ", out)
        assert len(started) == 1, out
        assert len(re.findall(rf"\] {re.escape(label)}: test_acc 0\.\d{{4}}, best val_acc", out)) == 1, out
        assert out.count(f"] {label}: copied to {tmp_path / 'results' / label}\n") == 1, out
    fits = probes(tmp_path / "probe.jsonl")
    assert sorted(fit["run_dir"] for fit in fits) == sorted(os.path.realpath(root / label) for label in labels)
    # The two at once: every child had half the CPUs, as many threads, and loader workers counted from them.
    for fit in fits:
        assert fit["cpus"] in shares and fit["cuda_visible_devices"] is None
        assert fit["omp_num_threads"] == str(len(fit["cpus"])) and fit["torch_threads"] == len(fit["cpus"])
        assert fit["num_workers"] == max(0, min(4, len(fit["cpus"]) - 1))  # src.data.base.default_num_workers
    first_two = {tuple(fit["cpus"]) for fit in fits[:2]}
    assert len(first_two) == 2  # the first two ran side by side, on different CPUs
    for label in labels:
        run_dir = root / label
        report = read_efficiency(run_dir)
        assert report["test_acc"] is not None and report["resumed_at_steps"] == [] and report["global_step"] == 4
        assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config.yaml"]  # no second fit's files
        assert sorted(p.name for p in run_dir.glob("efficiency*.json")) == ["efficiency.json"]
        assert run_files.RunLock(run_dir).holder_if_busy() is None
        log = (root / "sweep_logs" / f"{label.replace('/seed', '_seed')}.log").read_text()
        assert log.count("\n$ ") + log.startswith("$ ") == 1  # launched once
        assert (tmp_path / "results" / label / "efficiency.json").is_file()
    for arch in ("resnet8", "plain8"):  # nothing half-written (export_run stages in dot folders) or doubled
        assert sorted(p.name for p in (tmp_path / "results" / arch).iterdir()) == ["seed0", "seed1"]
    assert json.loads((tmp_path / "results" / "results.json").read_text())["study"] == STUDY


# Long enough (6 epochs of 8 steps) that both runs are still training when the signal comes.
SLOW = [*TINY_AUTO_WORKERS, "--trainer.max_epochs", "6", "--data.batch_size", "16", "--data.val_size", "32", PROBE]


@pytest.mark.slow
@needs_two_cpus
def test_sigterm_to_a_parallel_sweep_stops_every_run_and_a_rerun_finishes_the_rest(tmp_path, capsys, monkeypatch):
    probe = tmp_path / "probe.jsonl"
    study_file = write_study(tmp_path / "s.yaml", archs=["resnet8"], seeds=[0, 1, 2])
    root = tmp_path / "logs" / STUDY / "resnet8"
    hold = tmp_path / "hold"  # no run may finish before the signal (tests/sweep_probe.py)
    hold.touch()
    env = clean_environment(**{PROBE_ENV: str(probe), HOLD_ENV: str(hold), "CUDA_VISIBLE_DEVICES": ""})
    with sweep_process(str(study_file), "--jobs", "2", "--", *SLOW, cwd=REPO_ROOT, env=env) as sweep:
        first_epochs = [root / f"seed{seed}" / "checkpoints" / "last.ckpt" for seed in (0, 1)]
        wait_for(lambda: all(path.is_file() for path in first_epochs), what="the two runs' 1st epoch", process=sweep)
        code, out, err = stop_with_signal(sweep)
    assert code == 143, err[-3000:]
    children = [fit["pid"] for fit in probes(probe)]
    assert len(children) == 2 and not any(alive(pid) for pid in children)  # both stopped and reaped
    for seed in (0, 1):
        assert f"resnet8/seed{seed}: stopped by SIGTERM (exit code 143)" in err
        assert "error: stopped by SIGTERM" in (root.parent / "sweep_logs" / f"resnet8_seed{seed}.log").read_text()
        assert run_files.RunLock(root / f"seed{seed}").holder_if_busy() is None
        assert read_efficiency(root / f"seed{seed}")["test_acc"] is None
    assert "seed2" not in out and not (root / "seed2").exists()  # nothing started after the signal

    # The same command again: the two stopped runs continue from their saved step, the third starts; all end.
    hold.unlink()
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv(PROBE_ENV, str(probe))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main([str(study_file), "--jobs", "2", "--", *SLOW]) == 0
    out = capsys.readouterr().out
    assert out.count(": continuing from its checkpoint on CPU") == 2 and "[3/3] resnet8/seed2: running on" in out
    for seed in (0, 1, 2):
        report = read_efficiency(root / f"seed{seed}")
        assert report["test_acc"] is not None and report["global_step"] == 48
        assert len(report["resumed_at_steps"]) == (1 if seed < 2 else 0)
    fits = {(fit["run_dir"], fit["pid"]) for fit in probes(probe)}  # processes: a resumed config lists it twice
    assert len(fits) == 5  # 2 stopped fits, 2 continued, 1 new: no run trained twice over

"""A pruned network in a study (issue 30): planned from its parent's runs, held until they finished, swept,
exported and reported under its own name with the size it kept."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from src.reporting.analysis_plan import Arm, lineage_problems, metric_values
from src.reporting.records import collect_runs
from src.sweeping.plan import plan_runs
from src.sweeping.study import StudyError, load_study, run_command
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, run_module
from tests.test_fork_family import TINY_ARGS

KEEP = 30_000  # of resnet8's 75,290 parameters
PRUNED = {"name": "resnet8-p30k", "prune": "resnet8", "pruning": {"params": KEEP, "bn_batches": 2},
          "args": {"trainer.max_steps": 0}}  # fmt: skip


def _study(tmp_path, **changes):
    study = {"name": "frontier", "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "seeds": [0, 1],
             "archs": ["resnet8", "plain8", PRUNED], "args": TINY_ARGS, **changes}  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_a_pruned_entry_is_planned_seed_by_seed_from_its_parents_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    study = load_study(_study(tmp_path)).validate()
    runs = plan_runs(study)
    assert [run.label for run in runs] == ["resnet8/seed0", "resnet8/seed1", "plain8/seed0", "plain8/seed1",
                                           "resnet8-p30k/seed0", "resnet8-p30k/seed1"]  # fmt: skip
    pruned = runs[-1]
    parent = tmp_path / "logs" / "frontier" / "resnet8" / "seed1"
    assert (pruned.arch, pruned.after, pruned.run_dir) == ("resnet8", parent, parent.parent.parent / "resnet8-p30k"
                                                           / "seed1")  # fmt: skip
    command = run_command(study, pruned)
    tail = command[command.index("--model.init_from") :]
    assert tail == ["--model.init_from", str(parent), "--model.pruning", json.dumps(PRUNED["pruning"]),
                    "--trainer.max_steps", "0"]  # fmt: skip
    assert command.index("--trainer.max_epochs") < command.index("--model.init_from")  # the entry's args come last
    assert all(run.after is None for run in runs[:4])


def test_a_pruned_entry_names_its_parent_at_any_width_and_takes_no_part_in_the_selection(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    entry = dict(PRUNED, name="resnet8_2-p30k", prune="resnet8_2")
    select = {"grid": {"model.optimizer.init_args.lr": [0.05, 0.1]}, "seeds": [100]}
    study = load_study(_study(tmp_path, archs=["resnet8", entry], widths=[1, 2], select=select)).validate()
    runs = plan_runs(study)
    assert study.arch_names() == ["resnet8", "resnet8_2", "resnet8_2-p30k"]
    selecting = {run.selects for run in runs if run.selects}
    assert selecting == {"resnet8", "resnet8_2"}  # no selection runs for the pruned entry
    pruned = [run for run in runs if run.variant == "resnet8_2-p30k"]
    assert [run.pending for run in pruned] == [False, False] and pruned[0].arch == "resnet8_2"
    assert not any(key == "model.optimizer.init_args.lr" for key, _ in pruned[0].overrides)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"archs": ["plain8", dict(PRUNED)]}, "'prune' must name a built-in architecture of this study, one of"),
        ({"archs": [dict(PRUNED), "resnet8"]}, "list resnet8 before it in 'archs'"),
        ({"grid": {"model.shortcut": ["A", "B"]}}, "a pruned entry starts from one run per seed, and 'grid'"),
        ({"archs": ["resnet8", dict(PRUNED, args={})]}, "'args' must state trainer.max_steps -- 0 to score"),
        ({"archs": ["resnet8", dict(PRUNED, pruning={"params": 1, "sparsity": 0.5})]}, "needs exactly one of"),
        ({"archs": ["resnet8", dict(PRUNED, epochs=2)]}, "a pruned 'archs' entry has unknown keys ['epochs']"),
        ({"archs": ["resnet8", dict(PRUNED, name="resnet20")]}, "the name 'resnet20' is a built-in architecture's"),
        ({"seeds": {"resnet8": [0], "plain8": [0], "resnet8-p30k": [0, 1]}},
         "resnet8-p30k: seeds [1] have no resnet8 run to start from"),
        ({"args": {**TINY_ARGS, "model.init_from": "x"}}, "a pruned 'archs' entry starts each seed from another"),
        ({"archs": ["resnet8", dict(PRUNED, args={"trainer.max_steps": 0, "model.pruning": {}})]},
         "'args' cannot set 'model.pruning'"),
    ],
)  # fmt: skip
def test_a_study_refuses_pruned_entries_it_cannot_plan_with_the_fix(tmp_path, monkeypatch, changes, message):
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(StudyError) as error:
        load_study(_study(tmp_path, **changes)).validate()
    assert message in str(error.value)


@pytest.mark.slow
def test_a_pruned_entry_waits_for_its_parents_then_is_swept_exported_and_reported_with_the_size_it_kept(tmp_path):
    path = _study(tmp_path, archs=["resnet8", PRUNED], results=str(tmp_path / "results"))
    held = run_module("src.sweep", str(path), "--arch", "resnet8-p30k", "--seed", "0", code=1).stdout
    assert "resnet8-p30k/seed0: HELD BACK: its parent run" in held and "has not run yet" in held
    assert not (tmp_path / "logs" / "frontier" / "resnet8-p30k").exists()

    swept = run_module("src.sweep", str(path)).stdout
    assert "[4/4] resnet8-p30k/seed1: test_acc" in swept
    record = json.loads((tmp_path / "results" / "resnet8-p30k" / "seed1" / "efficiency.json").read_text())
    assert record["arch"] == "resnet8" and record["pruning"]["params_remaining"] == KEEP
    assert record["init_from"]["run_dir"] == str(tmp_path / "logs" / "frontier" / "resnet8" / "seed1")
    assert record["global_step"] == 0 and record["status"] == "finished"

    again = run_module("src.sweep", str(path)).stdout  # everything ended: nothing runs again
    assert again.count("earlier, skipped") == 4

    run_module("src.report", str(path), "--out", str(tmp_path / "report"))
    with open(tmp_path / "report" / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pruned = [row for row in rows if row["params"] == str(KEEP)]
    assert len(pruned) == 1 and pruned[0]["n"] == "2" and pruned[0]["arch"] == "resnet8"
    assert pruned[0]["variant"] == "resnet8 pruned to 30,000"
    dense = [row for row in rows if row["params"] == "75290"]
    assert len(dense) == 1 and dense[0]["n"] == "2" and dense[0]["variant"] == "resnet8"  # not renamed by it

    # The planned analysis finds a pruned entry by its name, not by its architecture (both are resnet8).
    study = load_study(path).validate()
    runs = [run for run in collect_runs(tmp_path / "results") if run.status == "finished"]
    arm = Arm("a", study, runs, {}, {})
    pruned_errors = metric_values(arm, "resnet8-p30k", "test_error")
    dense_errors = metric_values(arm, "resnet8", "test_error")
    assert len(pruned_errors) == len(dense_errors) == 2
    tests = [json.loads((tmp_path / "results" / "resnet8-p30k" / f"seed{k}" / "efficiency.json").read_text())
             for k in (0, 1)]  # fmt: skip
    assert pruned_errors == [100 * (1 - test["test_acc"]) for test in tests]
    # What a real pruned fit copied from its parent is the parent's committed record: the plan's --check passes.
    assert lineage_problems(arm) == []

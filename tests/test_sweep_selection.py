"""A study's per-variant selection on the validation split (``select:``): plan, choice, sweep, SLURM, report."""

from __future__ import annotations

import csv
import json
import re

import pytest
import yaml

from src.report import main as report_main
from src.sweep import main
from src.sweeping.plan import plan_runs
from src.sweeping.selection import choices
from src.sweeping.study import SELECTION_FILE, Study, StudyError, load_study, parse_selection, run_command
from src.sweeping.study_state import planned_configs
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, STUDY, TINY, resolved_config, write_run

LR = "model.optimizer.init_args.lr"


def study_with(tmp_path, **select) -> Study:
    study = Study(name=STUDY, root=str(tmp_path / "logs"), archs=["resnet8", "plain8"], seeds=[0, 1])
    study.select = {"grid": {LR: [0.05, 0.1, 0.2]}, **select}
    return study.validate()


def write_selection_run(run, best_val_acc, status="finished"):
    extra = {"status": status, "diverged_step": 3, "diverged_reason": "loss is nan"} if status == "diverged" else {}
    write_run(run.run_dir, run.arch, run.seed, test_acc=0.99, params=1000, best_val_acc=best_val_acc, **extra)


def test_selection_runs_come_first_and_the_variants_wait_for_them(tmp_path):
    study = study_with(tmp_path, seeds=[7], args={"trainer.max_epochs": 3})
    runs = plan_runs(study)
    assert [run.label for run in runs] == [
        *(f"select/resnet8-lr{lr}/seed7" for lr in (0.05, 0.1, 0.2)), "resnet8/seed0", "resnet8/seed1",
        *(f"select/plain8-lr{lr}/seed7" for lr in (0.05, 0.1, 0.2)), "plain8/seed0", "plain8/seed1",
    ]  # each variant's selection runs just before its seeds  # fmt: skip
    selecting = [run for run in runs if run.selects]
    assert selecting[0].run_dir == tmp_path / "logs" / STUDY / "select" / "resnet8-lr0.05" / "seed7"
    command = run_command(study, selecting[1], python="python")
    assert command[-4:] == ["--trainer.max_epochs", "3", f"--{LR}", "0.1"]  # the selection budget, the candidate
    assert all(run.pending for run in runs if not run.selects)


def test_the_choice_is_the_best_mean_validation_accuracy_and_diverged_candidates_are_out(tmp_path):
    study = study_with(tmp_path, seeds=[0, 1])
    runs = {run.label: run for run in plan_runs(study)}
    scores = {  # resnet8: lr 0.2 has the best single seed but diverged on the other; 0.1 has the best mean
        "resnet8-lr0.05": (0.60, 0.62), "resnet8-lr0.1": (0.70, 0.66), "resnet8-lr0.2": (0.90, None),
        "plain8-lr0.05": (0.50, 0.50), "plain8-lr0.1": (0.40, 0.60), "plain8-lr0.2": (0.45, 0.45),  # a tie: first
    }  # fmt: skip
    for name, per_seed in scores.items():
        for seed, value in enumerate(per_seed):
            run = runs[f"select/{name}/seed{seed}"]
            write_selection_run(run, value, "diverged" if value is None else "finished")
    planned = plan_runs(study)
    chosen = {run.variant: dict(run.overrides)[LR] for run in planned if not run.selects}
    assert chosen == {"resnet8": 0.1, "plain8": 0.05}
    final = next(run for run in planned if run.label == "resnet8/seed1")
    assert not final.pending and run_command(study, final, python="python")[-2:] == [f"--{LR}", "0.1"]
    by_variant = {c.variant: c for c in choices(study, parse_selection(study), planned)}
    assert by_variant["resnet8"].candidates[2].mean is None  # the diverged candidate is out
    assert by_variant["resnet8"].candidates[1].mean == pytest.approx(0.68)


def test_a_variant_stays_pending_until_every_selection_run_ended(tmp_path):
    study = study_with(tmp_path, seeds=[0])
    runs = {run.label: run for run in plan_runs(study)}
    for lr in (0.05, 0.1):  # resnet8 lr 0.2 not run yet; plain8 complete
        write_selection_run(runs[f"select/resnet8-lr{lr}/seed0"], 0.5)
    for lr in (0.05, 0.1, 0.2):
        write_selection_run(runs[f"select/plain8-lr{lr}/seed0"], 0.3 if lr != 0.2 else 0.4)
    pending = {run.variant: run.pending for run in plan_runs(study) if not run.selects}
    assert pending == {"resnet8": True, "plain8": False}


@pytest.mark.parametrize(
    "select, message",
    [
        ({"grid": {}}, "'select' needs a non-empty 'grid'"),
        ({"grid": {LR: [0.1]}}, "needs a list of at least two candidates"),
        ({"grid": {LR: [0.1, 0.1]}}, "lists a value twice"),
        ({"grid": {LR: [0.1, 0.2]}, "metric": "test_acc"}, "must be one of ['best_val_acc', 'last_val_acc']"),
        ({"grid": {LR: [0.1, 0.2]}, "budget": 3}, "'select' has unknown keys ['budget']"),
        ({"grid": {"model.shortcut": ["A", "B"]}}, "is both a grid axis and selected"),
        ({"grid": {LR: [0.1, 0.2]}, "seeds": ["a"]}, "select 'seeds' must be a non-empty list of integers"),
        ({"grid": {LR: [0.1, 0.2]}, "args": {LR: 0.3}}, f"select 'args' cannot set '{LR}': it is chosen"),
        # a grid axis: every variant's selection runs would train at the one value (identical selections)
        (
            {"grid": {LR: [0.1, 0.2]}, "args": {"model.shortcut": "A"}},
            "select 'args' cannot set 'model.shortcut': it is a 'grid' axis",
        ),
        ({"grid": {LR: [0.1, 0.2]}, "args": {"seed_everything": 3}}, "cannot set 'seed_everything': list seeds"),
    ],
)
def test_bad_select_blocks_get_one_error_line(tmp_path, capsys, select, message):
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"]}
    study["grid"] = {"model.shortcut": ["A", "B"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "select": select}))
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("extra", [[f"--{LR}", "0.3"], ["--model.optimizer.lr=0.3"], ["--model.optimizer", "SGD"]])
def test_arguments_after_the_double_dash_cannot_set_a_selected_key(tmp_path, capsys, extra):
    """Every candidate would train at the one value, and selection.json would still report a choice."""
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "select": {"grid": {LR: [0.05, 0.1]}}}))
    assert main([str(study_file), "--dry-run", "--", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the argument {' '.join(extra)!r} after '--' would set ") and err.count("\n") == 1
    assert "chosen per variant by 'select'" in err
    assert main([str(study_file), "--dry-run", "--", "--model.optimizer.init_args.momentum", "0.8"]) == 0


def test_two_select_values_that_name_one_folder_are_refused(tmp_path, capsys):
    """'norm' and 'norm ' (or true and 'true') are two candidates with one folder: their runs would become one."""
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "select": {"grid": {"model.norm": ["norm", "norm "]}}}))
    assert main([str(study_file), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: select values {'model.norm': 'norm'} and {'model.norm': 'norm '} both name the run folder "
        "'select/resnet8-normnorm'; make the values differ in letters or digits (directory names keep only those)\n"
    )
    assert not (tmp_path / "logs").exists()


def test_dry_run_and_slurm_hold_the_variants_back_until_the_selection_ended(tmp_path, capsys):
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "seeds": [0, 1], "select": {"grid": {LR: [0.05, 0.2]}}}))
    assert main([str(study_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[1/4] select/resnet8-lr0.05/seed0: run: " in out and "[2/4] select/resnet8-lr0.2/seed0: run: " in out
    assert "[3/4] resnet8/seed0: pending: trains at the value chosen for resnet8 once its selection runs ended" in out
    script = tmp_path / "a.sbatch"
    assert main([str(study_file), "--slurm", str(script)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) wait for their variant's selection and are left out" in out and "2 array tasks" in out
    assert "#SBATCH --array=0-1\n" in script.read_text() and "select/resnet8-lr0.2/seed0" in script.read_text()


def test_selection_only_plans_the_selection_runs_and_no_seed(tmp_path, capsys):
    """Choose first, look, then train: the selection runs alone (a driver makes them as a unit of their own)."""
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8", "plain8"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "seeds": [0, 1], "select": {"grid": {LR: [0.05, 0.2]}}}))
    assert main([str(study_file), "--arch", "plain8", "--selection-only", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs in" in out and "[1/2] select/plain8-lr0.05/seed0: run: " in out and "plain8/seed0:" not in out
    study_file.write_text(yaml.safe_dump({**study, "seeds": [0, 1]}))
    assert main([str(study_file), "--selection-only", "--dry-run"]) == 2
    assert "error: --selection-only: the study has no 'select' block" in capsys.readouterr().err


@pytest.mark.parametrize(
    "narrowing", [["--seed", "3"], ["--arch", "plain8"]], ids=["one job per seed", "one arch with its own seeds"]
)
def test_a_narrowed_sweep_selects_with_the_whole_studys_selection_runs(tmp_path, capsys, narrowing):
    """Without 'select: seeds' the selection runs take the study's first seed -- the whole study's, or one job per
    seed would make selection runs of its own and train its seed at another value than the others'."""
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8", "plain8"]}
    seeds = {"resnet8": [0, 1, 2, 3], "plain8": [5, 6]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "seeds": seeds, "select": {"grid": {LR: [0.05, 0.2]}}}))
    assert main([str(study_file), *narrowing, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-lr0.05/seed0: run: " in out and "-lr0.2/seed0: run: " in out
    assert not re.search(r"select/\S+/seed[1-9]", out)


def test_a_sweep_narrowed_to_one_arch_writes_every_variants_choice(tmp_path, capsys):
    """selection.json speaks for the whole study: a sweep of one arch wrote that arch's entry alone, and the
    committed results' --check refused it."""
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8", "plain8"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "seeds": [0, 1], "select": {"grid": {LR: [0.05, 0.2]}}}))
    whole = load_study(study_file).validate()
    selecting = [run for run in plan_runs(whole) if run.selects == "plain8"]
    for run in selecting:
        run.run_dir.mkdir(parents=True)
    planned = planned_configs(whole, selecting)  # as the sweep would have made them: not stale
    for run in selecting:
        write_run(run.run_dir, run.arch, run.seed, test_acc=0.9, params=1000, config=planned[run.run_dir],
                  best_val_acc=0.3 if "0.05" in run.variant else 0.4)  # fmt: skip
    assert main([str(study_file), "--arch", "plain8", "--selection-only"]) == 0
    assert "earlier, skipped" in capsys.readouterr().out  # nothing trained: the selection runs had ended
    written = json.loads((tmp_path / "logs" / STUDY / SELECTION_FILE).read_text())
    status = {entry["variant"]: entry["status"] for entry in written["variants"]}
    assert status == {"resnet8": "pending", "plain8": "chosen"}


@pytest.mark.slow
def test_sweep_selects_per_variant_then_trains_the_seeds_and_the_report_shows_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the runs are `python -m src.cli` processes started here
    results = tmp_path / "results"
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"]}
    tiny = {flag.lstrip("-"): value for flag, value in zip(TINY[::2], TINY[1::2])}  # in the file: --check re-plans
    study |= {"seeds": [0], "results": str(results), "args": tiny, "select": {"grid": {LR: [0.02, 0.3]}}}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump(study))

    assert main([str(study_file)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\[1/3\] select/resnet8-lr0\.02/seed0: test_acc", out)
    assert re.search(r"\[3/3\] resnet8/seed0: test_acc", out)
    scores = {}
    for lr in (0.02, 0.3):
        record = json.loads((results / "select" / f"resnet8-lr{lr}" / "seed0" / "efficiency.json").read_text())
        scores[lr] = record["best_val_acc"]
    best = max(scores, key=lambda lr: scores[lr])  # the first of a tie, as the rule says
    final_config = yaml.safe_load((results / "resnet8" / "seed0" / "config.yaml").read_text())
    assert final_config["model"]["optimizer"]["init_args"]["lr"] == best
    selection = json.loads((results / SELECTION_FILE).read_text())
    assert selection == json.loads((tmp_path / "logs" / STUDY / SELECTION_FILE).read_text())
    (entry,) = selection["variants"]
    assert entry["chosen"] == {LR: best} and entry["status"] == "chosen"
    assert [c["scores"]["0"] for c in entry["candidates"]] == [scores[0.02], scores[0.3]]

    assert report_main([str(results)]) == 0
    report = (results / "report" / "report.md").read_text()
    assert "## Per-variant selection (validation split)" in report and "select/" not in report
    rows = list(csv.DictReader((results / "report" / "report_selection.csv").open()))
    assert [(json.loads(row["candidate"])[LR], row["chosen"]) for row in rows] == [
        (0.02, str(best == 0.02)), (0.3, str(best == 0.3)),
    ]  # fmt: skip
    table = list(csv.DictReader((results / "report" / "report.csv").open()))
    assert [row["variant"] for row in table] == ["resnet8"]

    capsys.readouterr()
    assert report_main(["--check", str(results)]) == 0
    selection["variants"][0]["chosen"] = {LR: 0.02 if best == 0.3 else 0.3}  # a hand-edited choice is caught
    (results / SELECTION_FILE).write_text(json.dumps(selection))
    assert report_main(["--check", str(results)]) == 1
    assert "selection.json: not what the committed selection runs give" in capsys.readouterr().err

    # A grid edit that adds a candidate which then wins (the old ones made to score 0): its selection run trains
    # in this sweep, so the seed trained at the old choice turns STALE mid-sweep; the sweep says so and exits 2
    # (as it does when the winner is removed), never 0.
    study["select"]["grid"][LR] = [0.02, 0.3, 0.5]
    study_file.write_text(yaml.safe_dump(study))
    for path in [
        *(tmp_path / "logs" / STUDY / "select").rglob("efficiency.json"),
        *(results / "select").rglob("efficiency.json"),
    ]:
        path.write_text(json.dumps({**json.loads(path.read_text()), "best_val_acc": 0.0}))
    capsys.readouterr()
    assert main([str(study_file)]) == 2
    captured = capsys.readouterr()
    assert re.search(r"resnet8/seed0: STALE", captured.out) and "1 run(s) are STALE" in captured.err


@pytest.mark.parametrize("selection_file", [True, False])  # False: a sweep stopped before it wrote selection.json
def test_a_report_of_a_folder_above_a_study_leaves_its_selection_runs_out(tmp_path, selection_file):
    """Selection runs are no results wherever the report's root is: the selection run of seed 0 must not join the
    final run of seed 0, nor a candidate not chosen become a variant. A ``select`` folder in another layout
    (a logger's ``select/version_0``) is no selection folder: its run counts."""
    study = tmp_path / "logs" / STUDY
    if selection_file:
        (study / SELECTION_FILE).parent.mkdir(parents=True)
        (study / SELECTION_FILE).write_text(json.dumps({"grid": {LR: [0.05, 0.1]}, "variants": []}))
    runs = {f"select/resnet8-lr{lr}/seed0": lr for lr in (0.05, 0.1)} | {f"resnet8/seed{seed}": 0.05 for seed in (0, 1)}
    for name, lr in runs.items():
        run_dir = study / name
        config = resolved_config("resnet8", int(name[-1]), run_dir, **{LR: lr})
        write_run(run_dir, "resnet8", int(name[-1]), test_acc=0.8, params=1000, config=config)
    other = tmp_path / "logs" / "other" / "select" / "version_0"
    write_run(other, "plain8", 3, test_acc=0.7, params=1000, config=resolved_config("plain8", 3, other, **{LR: 0.05}))
    assert report_main([str(tmp_path / "logs")]) == 0
    table = list(csv.DictReader((tmp_path / "logs" / "report" / "report.csv").open()))
    assert [(row["variant"], row["n"], row["seeds"]) for row in table] == [
        ("plain8", "1", "3"),
        ("resnet8", "2", "0 1"),
    ]


def test_select_is_refused_with_a_study_error_not_a_traceback_when_built_in_python(tmp_path):
    study = Study(name=STUDY, root=str(tmp_path), archs=["resnet8"])
    study.select = {"grid": {LR: "0.1"}}
    with pytest.raises(StudyError, match="at least two candidates"):
        study.validate()


def test_a_variant_whose_every_candidate_diverged_is_held_back_with_the_reason(tmp_path, capsys):
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"]}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({**study, "seeds": [0], "select": {"grid": {LR: [5.0, 9.0]}}}))
    from src.cli_support.lightning_cli import resolved_config
    from src.sweeping.study import load_study

    loaded = load_study(study_file).validate()
    for run in plan_runs(loaded):
        if run.selects:  # written as the sweep would have run them (the same config), then diverged
            config = resolved_config(run_command(loaded, run)[3:])
            write_run(run.run_dir, run.arch, 0, test_acc=float("nan"), params=1000, config=config, status="diverged")
    assert main([str(study_file)]) == 1
    captured = capsys.readouterr()
    assert "[3/3] resnet8/seed0: HELD BACK: resnet8's selection has no choice (every candidate diverged" in captured.out
    assert "1 run(s) held back" in captured.err
    assert not (tmp_path / "logs" / STUDY / "resnet8").exists()  # nothing trained
    written = json.loads((tmp_path / "logs" / STUDY / SELECTION_FILE).read_text())
    assert written["variants"][0]["status"] == "no candidate finished"


def _written_as_planned(study_file, pick, best_val_acc):
    """Write the planned runs ``pick`` selects as finished, each with the very config the sweep plans for it."""
    from src.cli_support.lightning_cli import resolved_config as planned_config
    from src.sweeping.study import load_study

    study = load_study(str(study_file))
    for run in plan_runs(study):
        if pick(run):
            config = planned_config(run_command(study, run)[3:])
            write_run(run.run_dir, run.arch, run.seed, test_acc=0.5, params=1000, config=config,
                      best_val_acc=best_val_acc(run))  # fmt: skip


def _select_study(tmp_path, lrs, max_steps):
    study = {"name": STUDY, "root": str(tmp_path / "logs"), "results": str(tmp_path / "results"),
             "configs": [QUICKSTART], "archs": ["resnet8"], "seeds": [0],
             "select": {"grid": {LR: lrs}, "seeds": [0], "args": {"trainer.max_steps": max_steps}}}  # fmt: skip
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump(study))
    return study_file


def test_collect_writes_no_selection_file_from_stale_selection_runs(tmp_path, capsys):
    """An audit: selection runs made at max_steps 2, the study then planned at 3: --collect said they were stale,
    then wrote a selection.json that reported their choice as made at max_steps 3."""
    study_file = _select_study(tmp_path, [0.05, 0.1], max_steps=2)
    _written_as_planned(study_file, lambda run: run.selects, lambda run: 0.7 if dict(run.overrides)[LR] == 0.1 else 0.5)
    _select_study(tmp_path, [0.05, 0.1], max_steps=3)
    assert main([str(study_file), "--collect"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("not copied: made with another config than planned (trainer.max_steps 2 -> 3)") == 2
    assert "selection file NOT written: 2 selection run(s)" in captured.err
    assert not (tmp_path / "results" / SELECTION_FILE).exists()


def test_collect_and_dry_run_leave_a_final_run_pending_when_its_selection_changed(tmp_path, capsys):
    """An audit: a final run trained at the chosen lr 0.1, then a candidate added: --collect copied it into the
    results (nothing to check it against while the choice is open) and --dry-run listed it as finished."""
    study_file = _select_study(tmp_path, [0.05, 0.1], max_steps=2)
    _written_as_planned(study_file, lambda run: run.selects, lambda run: 0.7 if dict(run.overrides)[LR] == 0.1 else 0.5)
    _written_as_planned(study_file, lambda run: not run.selects, lambda run: 0.7)  # the final seed, at lr 0.1
    _select_study(tmp_path, [0.05, 0.1, 0.2], max_steps=2)  # a candidate added: its selection run has not run
    assert main([str(study_file), "--dry-run"]) == 0
    assert "resnet8/seed0: pending: trains at the value chosen" in capsys.readouterr().out
    assert main([str(study_file), "--collect"]) == 0
    assert "resnet8/seed0: not copied: pending" in capsys.readouterr().out
    assert not (tmp_path / "results" / "resnet8").exists()

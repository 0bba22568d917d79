"""A study's committed results (``results:``): copying ended runs, skipping them, and ``src.report --check``.

The first test is the CI check: every committed ``docs/results/<study>/`` (a folder with results.json)
must regenerate to its committed report, and its runs' configs must be what the study file at HEAD
plans. The others build a tiny results folder from written runs (no training) in a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from src.cli_support.lightning_cli import resolved_config
from src.report import main as report
from src.reporting.committed import CHECKED_FILES, file_differences, same_line
from src.runs import read_scalars
from src.sweep import main as sweep
from src.sweeping.plan import plan_runs
from src.sweeping.results import INDEX_FILE, METRICS_FILE, ResultsConflict, export_run, write_index
from src.sweeping.study import load_study, run_command
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, write_run

ACCS = {("resnet8", 0): 0.81, ("resnet8", 1): 0.83, ("resnet8", 2): 0.82,
        ("plain8", 0): 0.74, ("plain8", 1): 0.77, ("plain8", 2): 0.75}  # fmt: skip
PARAMS = {"resnet8": 75_290, "plain8": 74_778}


def committed_results() -> list[Path]:
    """Every committed study's results folder and every planned analysis's folder (``plan.json``), archive too."""
    results = REPO_ROOT / "docs" / "results"
    found = [*results.glob(f"*/{INDEX_FILE}"), *results.glob(f"archive/*/{INDEX_FILE}"), *results.glob("*/plan.json")]
    return sorted(path.parent for path in found)


def test_committed_results_are_what_head_gives(monkeypatch, capsys):
    """CI: each committed study's report and run configs match HEAD (passes while none is committed)."""
    monkeypatch.chdir(REPO_ROOT)
    for results in committed_results():
        code = report(["--check", str(results.relative_to(REPO_ROOT))])
        assert code == 0, capsys.readouterr().err


# report_lines.csv of docs/results/archive/cifar10_jpeg_ladder as committed (an AVX-512 machine) and as a Zen 3 CPU
# (AVX2) regenerated it: curve_fit's parameters differ in their 7th digit.
LINE_START = "resnet,4,resnet20 resnet32 resnet44 resnet56,"
COMMITTED_LINE = LINE_START + "482885.40011476935,0.9832235478655096,,,13.806751463084646,x"
REGENERATED_LINE = LINE_START + "482884.97351081145,0.9832234736538522,,,13.806751362114873,x"


@pytest.mark.parametrize(
    ("regenerated", "same"),
    [
        (REGENERATED_LINE, True),  # another CPU's floating point
        (COMMITTED_LINE.replace("0.9832235478655096", "0.9842235478655096"), False),  # a number changed (1e-3)
        (COMMITTED_LINE.replace("resnet44 ", ""), False),  # the text changed
        (COMMITTED_LINE + ",0.5", False),  # a column more
        (COMMITTED_LINE.replace(",,,", ",0,,"), False),  # a number where there was none
    ],
)
def test_check_forgives_another_cpus_last_digits_and_nothing_else(tmp_path, regenerated, same):
    committed, fresh = tmp_path / "committed", tmp_path / "fresh"
    for folder, line in ((committed, COMMITTED_LINE), (fresh, regenerated)):
        folder.mkdir()
        for name in CHECKED_FILES:
            (folder / name).write_text("header\n" + (line if name == "report_lines.csv" else "same") + "\n")
    problems = file_differences(committed, fresh)
    assert same_line(COMMITTED_LINE, regenerated) == same
    assert problems == ([] if same else [
        f"{committed / 'report_lines.csv'}: 1 line(s) differ from what the committed runs give",
        f"  line 2: committed   {COMMITTED_LINE[:160]!r}",
        f"  line 2: regenerated {regenerated[:160]!r}",
    ])  # fmt: skip


def write_study(path: Path, **args: object) -> Path:
    study = {"name": "tiny", "root": "logs", "configs": [QUICKSTART], "archs": ["resnet8", "plain8"],
             "seeds": [0, 1, 2], "args": {"trainer.max_epochs": 2, **args}, "results": "results/tiny"}  # fmt: skip
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def write_planned_run(run_dir: Path, study_file: Path, run) -> Path:
    """A finished run as the study plans it (its config resolved from the run's command), no training."""
    study = load_study(study_file)
    config = resolved_config(run_command(study, run)[3:])
    write_run(run_dir, run.arch, run.seed, ACCS[(run.arch, run.seed)], PARAMS[run.arch], config=config)
    rows = ["step,tag,value"] + [f"{step},{tag},{0.1 * step / (2 + run.seed)}" for tag in ("train/acc", "val/acc")
                                 for step in (10, 20)]  # fmt: skip
    (run_dir / METRICS_FILE).write_text("\n".join(rows) + "\n")
    return run_dir


@pytest.fixture
def tiny_results(tmp_path, monkeypatch):
    """``tmp_path/results/tiny``: 2 archs x 3 seeds written as the study file plans them, with its report."""
    monkeypatch.chdir(tmp_path)
    study_file = write_study(tmp_path / "tiny.yaml")
    study = load_study(study_file)
    for run in plan_runs(study):
        write_planned_run(study.results_dir(run), study_file, run)
    write_index(study.results, study.name, "tiny.yaml")
    assert report(["results/tiny"]) == 0
    return tmp_path / "results" / "tiny"


def test_check_passes_on_a_fresh_report_and_reads_curves_from_metrics_csv(tiny_results, capsys):
    assert report(["--check", "results/tiny"]) == 0
    assert "report and run configs match what HEAD gives" in capsys.readouterr().out
    out = tiny_results / "report"
    for name in ("report.md", "report.csv", "figures.json"):
        assert str(tiny_results.parent.parent) not in (out / name).read_text()  # no path of this machine
    figures = json.loads((out / "figures.json").read_text())
    curves = figures["training_curves.png"]
    assert sorted(curves) == ["plain8", "resnet8"] and len(curves["resnet8"]["val"]) == 3
    assert curves["resnet8"]["val"][1] == [[10, 20], [pytest.approx(1 / 3), pytest.approx(2 / 3)]]  # seed 1
    points = {p["variant"]: p for p in figures["test_error_vs_params.png"]}
    assert points["resnet8"]["error_mean"] == pytest.approx(18.0) and points["plain8"]["x"] == 74_778
    assert "# Study report: tiny (committed results)" in (out / "report.md").read_text()
    # The study file names the results folder: the same report, from the same files.
    assert report(["tiny.yaml", "--out", "again"]) == 0
    assert Path("again/report.md").read_text() == (out / "report.md").read_text()


def test_check_fails_after_a_number_in_report_csv_is_edited(tiny_results, capsys):
    table = tiny_results / "report" / "report.csv"
    text = table.read_text()
    assert "0.82" in text
    table.write_text(text.replace("0.82", "0.85", 1))
    assert report(["--check", "results/tiny"]) == 1
    err = capsys.readouterr().err
    assert "report.csv: 1 line(s) differ from what the committed runs give" in err and "0.85" in err


def test_check_fails_when_the_study_file_changes_its_args(tiny_results, tmp_path, capsys):
    write_study(tmp_path / "tiny.yaml", **{"model.optimizer.init_args.lr": 0.05})
    assert report(["--check", "results/tiny"]) == 1
    err = capsys.readouterr().err
    assert "resnet8/seed0: config differs from what tiny.yaml plans: model.optimizer.init_args.lr 0.1 -> 0.05" in err
    assert err.count("config differs") == 6


def test_check_refuses_a_folder_that_is_not_a_results_folder(tmp_path, capsys):
    assert report(["--check", str(tmp_path)]) == 2
    assert "is not a study's results folder (it has no results.json)" in capsys.readouterr().err


def test_sweep_skips_results_runs_as_finished_and_shows_stale_ones(tiny_results, tmp_path, capsys):
    assert not (tmp_path / "logs").exists()  # a fresh machine: nothing in the log root
    assert sweep(["tiny.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("[1/6] resnet8/seed0: finished (in results), skip (test_acc 0.8100")
    assert sum("finished (in results), skip" in line for line in out) == 6
    assert sweep(["tiny.yaml"]) == 0  # nothing to train
    assert capsys.readouterr().out.count("finished (in results) earlier, skipped") == 6
    assert not (tmp_path / "logs" / "tiny" / "resnet8").exists()

    write_study(tmp_path / "tiny.yaml", **{"trainer.max_epochs": 3})
    assert sweep(["tiny.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("STALE: the results run was made with another config (trainer.max_epochs 2 -> 3)") == 6
    assert sweep(["tiny.yaml"]) == 2  # refuses to run over committed results made otherwise
    assert "6 run(s) of study 'tiny' were made with another config" in capsys.readouterr().err


def write_events(run_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    for step, value in ((5, 0.25), (10, 0.5)):
        writer.add_scalar("val/acc", value, step)
        writer.add_scalar("train/loss_step", 2.0 - value, step)
    writer.add_scalar("lr-SGD", 0.1, 5)  # not a curve the report draws: not exported
    writer.close()


def test_collect_copies_ended_runs_and_never_overwrites_a_different_result(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study_file = write_study(tmp_path / "tiny.yaml")
    study = load_study(study_file)
    runs = plan_runs(study)
    for run in runs[:2]:  # resnet8 seeds 0 and 1 finished in the log root, the rest not run
        write_planned_run(run.run_dir, study_file, run)
        (run.run_dir / METRICS_FILE).unlink()
        write_events(run.run_dir)
    (runs[0].run_dir / "checkpoints").mkdir()
    (runs[0].run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (runs[0].run_dir / "efficiency-1.json").write_text(json.dumps({"stage": "test", "test_acc": 0.2}))
    (runs[0].run_dir / "data.json").write_text('{"root": "data"}')
    (runs[0].run_dir / "diagnostics.jsonl").write_text('{"step": 0}\n')

    assert sweep(["tiny.yaml", "--collect"]) == 0
    out = capsys.readouterr().out
    assert "[1/6] resnet8/seed0: finished, copied to results/tiny/resnet8/seed0" in out
    assert "[3/6] resnet8/seed2: nothing to copy (missing in logs/tiny)" in out
    assert "2 run(s) copied into results/tiny/" in out
    copied = tmp_path / "results" / "tiny" / "resnet8" / "seed0"
    names = ["config.yaml", "data.json", "diagnostics.jsonl", "efficiency.json", "metrics.csv"]
    assert sorted(p.name for p in copied.iterdir()) == names  # no checkpoint, no events, no later test record
    assert (copied / METRICS_FILE).read_text() == (
        "step,tag,value\n5,val/acc,0.25\n10,val/acc,0.5\n5,train/loss_step,1.75\n10,train/loss_step,1.5\n"
    )
    assert read_scalars(copied, ["val/acc"]) == read_scalars(runs[0].run_dir, ["val/acc"])
    assert json.loads((tmp_path / "results" / "tiny" / INDEX_FILE).read_text()) == {
        "study": "tiny",
        "study_file": "tiny.yaml",
    }

    assert sweep(["tiny.yaml", "--collect"]) == 0  # identical again: fine, nothing written
    assert "already in results/tiny/resnet8/seed0" in capsys.readouterr().out

    record = json.loads((runs[0].run_dir / "efficiency.json").read_text())
    (runs[0].run_dir / "efficiency.json").write_text(json.dumps({**record, "test_acc": 0.9}))
    before = (copied / "efficiency.json").read_bytes()
    assert sweep(["tiny.yaml", "--collect"]) == 1
    err = capsys.readouterr().err
    assert "NOT COPIED" in err and "differing: efficiency.json" in err and "never overwritten" in err
    assert (copied / "efficiency.json").read_bytes() == before
    with pytest.raises(ResultsConflict):
        export_run(runs[0].run_dir, copied)


def test_collect_needs_a_results_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = yaml.safe_load(write_study(tmp_path / "tiny.yaml").read_text())
    del study["results"]
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(study))
    assert sweep(["tiny.yaml", "--collect"]) == 2
    assert "has no 'results' folder to collect into: add e.g. `results: docs/results/tiny`" in capsys.readouterr().err


def test_rerun_stale_moves_a_stale_result_aside_never_deleting_it(tiny_results, tmp_path, capsys):
    from src.sweeping.study_state import clear_the_way

    write_study(tmp_path / "tiny.yaml", **{"trainer.max_epochs": 3})
    study = load_study(tmp_path / "tiny.yaml").validate()
    runs = plan_runs(study)[:1]
    before = (tiny_results / "resnet8" / "seed0" / "efficiency.json").read_bytes()
    states = clear_the_way(study, runs, rerun_stale=True, retry_diverged=False)
    assert [state.status for state in states] == ["missing"]  # nothing in the log root either: to be run
    assert not (tiny_results / "resnet8" / "seed0").exists()
    assert (tiny_results / ".replaced" / "resnet8" / "seed0-1" / "efficiency.json").read_bytes() == before
    assert "resnet8/seed0: stale in results, moved aside to results/tiny/.replaced/resnet8/seed0-1" in (
        capsys.readouterr().out
    )
    assert report(["results/tiny", "--out", "after"]) == 0  # the report never reads the moved-aside run
    assert "`resnet8/seed0` — resnet8/seed0" in Path("after/report.md").read_text()  # listed missing, relative


def test_diagnostics_are_kept_and_their_profiles_are_in_figures_json(tiny_results, capsys):
    records = [{"step": step, "grad_rms": [1.0, 2.0, 3.0], "grad_to_weight": [0.1] * 3,
                "branch_to_shortcut": [0.5, 0.4, 0.3], "stage": [1, 2, 3], "residual": [True] * 3}
               for step in (0, 2)]  # fmt: skip
    run = tiny_results / "resnet8" / "seed0"
    (run / "diagnostics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert report(["--check", "results/tiny"]) == 1  # the committed report lacks the new figure's data
    assert "figures.json" in capsys.readouterr().err
    assert report(["results/tiny"]) == 0 and report(["--check", "results/tiny"]) == 0
    figures = json.loads((tiny_results / "report" / "figures.json").read_text())
    (profile,) = figures["diagnostics_grad_rms.png"]
    assert profile["label"] == "resnet8" and profile["mean"] == [1.0, 2.0, 3.0] and profile["seeds"] == 1
    assert sorted(p.name for p in (tiny_results / "report").glob("diagnostics_*.png")) == [
        "diagnostics_branch_to_shortcut.png", "diagnostics_grad_rms.png", "diagnostics_grad_to_weight.png",
    ]  # fmt: skip


def test_check_passes_with_a_committed_lesion_linked_from_the_report(tiny_results, capsys):
    """--check regenerates into a temporary folder; the links to the runs' own figures stay those of the report."""
    lesion = tiny_results / "resnet8" / "seed0" / "lesion"
    lesion.mkdir()
    (lesion / "lesion.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (lesion / "lesion.csv").write_text("removed,block_index,downsampling,acc,acc_drop\nnone,-1,False,0.8,0.0\n"
                                       "layer1.0,0,False,0.7,0.1\n")  # fmt: skip
    assert report(["--check", "results/tiny"]) == 1  # the committed report lacks the lesion
    capsys.readouterr()
    assert report(["results/tiny"]) == 0
    text = (tiny_results / "report" / "report.md").read_text()
    assert "![resnet8/seed0: block lesions](../resnet8/seed0/lesion/lesion.png)" in text
    assert "| `resnet8` | 0 | 80.00 | 10.00 | 10.00 | 10.00 | — | — |" in text  # its one block is the first
    assert report(["--check", "results/tiny"]) == 0, capsys.readouterr().err

"""``python -m src.report <plan file>``: planned hypotheses, Welch + Holm verdicts, the power table, and
``--check`` failing on an arm that mixes code versions or was trained from a dirty tree."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from src.report import main
from src.reporting.analysis_plan import PlanError, load_plan, mannwhitney_floor
from src.sweeping.plan import plan_runs
from src.sweeping.study import load_study
from tests.study_runs import QUICKSTART, resolved_config, write_run

COMMIT = "a" * 40
TEST_ACC = {"resnet8": [0.80, 0.81, 0.79, 0.805], "resnet14": [0.84, 0.85, 0.83, 0.845]}
TRAIN_EVAL = {"plain8": [0.90, 0.91, 0.92], "plain14": [0.70, 0.75, 0.60]}


def _arm(
    tmp_path: Path,
    *,
    commits: dict[tuple[str, int], str] | None = None,
    dirty: tuple = (),
    name: str = "arm",
    gain: float = 0.0,
) -> Path:
    """A study file whose results folder holds written runs with known numbers and provenance (``gain``: added to
    resnet14's test accuracy, e.g. the deeper net gaining more at a longer budget)."""
    results = tmp_path / "results" / name
    study = {
        "name": name,
        "root": str(tmp_path / "logs"),
        "results": str(results),
        "configs": [QUICKSTART],
        "archs": ["resnet8", "resnet14", "plain8", "plain14"],
        "seeds": {"resnet8": [0, 1, 2, 3], "resnet14": [0, 1, 2, 3], "plain8": [0, 1, 2], "plain14": [0, 1, 2]},
    }
    for arch, accs in {**TEST_ACC, **TRAIN_EVAL}.items():
        for seed, acc in enumerate(accs):
            run_dir = results / arch / f"seed{seed}"
            commit = (commits or {}).get((arch, seed), COMMIT)
            write_run(
                run_dir, arch, seed, test_acc=acc + gain * (arch == "resnet14") if arch in TEST_ACC else 0.5,
                params=1000,
                config=resolved_config(arch, seed, run_dir), train_eval_acc=acc if arch in TRAIN_EVAL else 0.99,
                provenance={"git_commit": commit, "git_dirty": (arch, seed) in dirty, "device": "cpu"},
            )  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _plan(tmp_path: Path, arm: Path, **changes) -> Path:
    plan = {
        "name": "toy",
        "results": str(tmp_path / "results" / "plan"),
        "arms": {"a": str(arm)},
        "alpha": 0.05,
        "hypotheses": [
            {
                "id": "H1",
                "arm": "a",
                "claim": "deeper plain fits worse",
                "metric": "train_eval_error",
                "higher": "plain14",
                "lower": "plain8",
            },
            {
                "id": "H2",
                "arm": "a",
                "claim": "deeper residual tests better",
                "metric": "test_error",
                "higher": "resnet8",
                "lower": "resnet14",
            },
        ],  # fmt: skip
        "power": {"target": 0.8, "assumptions": [{"for": ["H2"], "delta": 1.0, "sd": 0.5, "level": 0.025, "seeds": 4}]},
        **changes,
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def _rows(tmp_path: Path) -> dict[str, dict]:
    with open(tmp_path / "results" / "plan" / "plan.csv") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def test_verdicts_are_welch_then_holm_over_the_family_with_the_exact_check_beside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(_plan(tmp_path, _arm(tmp_path)))]) == 0
    rows = _rows(tmp_path)
    errors = {arch: [100 * (1 - a) for a in accs] for arch, accs in {**TEST_ACC, **TRAIN_EVAL}.items()}
    p1 = stats.ttest_ind(errors["plain14"], errors["plain8"], equal_var=False).pvalue
    p2 = stats.ttest_ind(errors["resnet8"], errors["resnet14"], equal_var=False).pvalue
    holm = multipletests([p1, p2], method="holm")[1]
    assert float(rows["H1"]["p_welch"]) == pytest.approx(p1) and float(rows["H2"]["p_welch"]) == pytest.approx(p2)
    assert float(rows["H1"]["p_holm"]) == pytest.approx(holm[0]) and float(rows["H2"]["p_holm"]) == pytest.approx(
        holm[1]
    )
    mw = stats.mannwhitneyu(errors["resnet8"], errors["resnet14"], method="exact").pvalue
    assert float(rows["H2"]["p_mannwhitney_exact"]) == pytest.approx(mw)
    assert float(rows["H2"]["difference"]) == pytest.approx(4.0)  # 20.125 - 16.125 points
    assert rows["H2"]["verdict"] == "supported" and rows["H2"]["complete"] == "True"
    assert (rows["H1"]["n_higher"], rows["H1"]["planned_higher"]) == ("3", "3")
    report = (tmp_path / "results" / "plan" / "report.md").read_text()
    assert "**exploratory**" in report and "| H2 | a |" in report and "**supported**" in report
    assert "*Interim* verdicts" not in report  # every planned seed is in: the verdicts are the study's
    power = json.loads((tmp_path / "results" / "plan" / "plan.json").read_text())["power"][0]
    assert power["seeds_needed"] == pytest.approx(TTestIndPower().solve_power(2.0, alpha=0.025, power=0.8))


def test_a_verdict_before_every_planned_seed_is_in_is_labelled_interim_and_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arm = _arm(tmp_path)
    for name in ("config.yaml", "efficiency.json"):  # resnet14 has 3 of its 4 planned seeds
        (tmp_path / "results" / "arm" / "resnet14" / "seed3" / name).unlink()
    assert main([str(_plan(tmp_path, arm))]) == 0
    row = _rows(tmp_path)["H2"]
    assert row["complete"] == "False" and (row["n_lower"], row["planned_lower"]) == ("3", "4")
    report = (tmp_path / "results" / "plan" / "report.md").read_text()
    assert "(interim: 4/4 and 3/4 seeds)" in report
    assert "*Interim* verdicts are read before every planned seed is in. They are no stopping rule" in report


def test_a_difference_planned_in_two_arms_is_shown_side_by_side_with_its_change(tmp_path, monkeypatch):
    """The budgets side by side: does the ResNet gain grow at the longer budget (an exploratory change with
    its interval, never a verdict)."""
    monkeypatch.chdir(tmp_path)
    short, long = _arm(tmp_path), _arm(tmp_path, name="long", gain=0.02)
    plan = yaml.safe_load(_plan(tmp_path, short).read_text())
    plan["arms"]["b"] = str(long)
    plan["hypotheses"].append({**plan["hypotheses"][1], "id": "H2-long", "arm": "b"})
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    assert main([str(tmp_path / "plan.yaml")]) == 0
    record = json.loads((tmp_path / "results" / "plan" / "plan.json").read_text())
    (change,) = record["across_arms"]  # H1 is in one arm only
    assert [change[key] for key in ("first", "later", "higher", "lower")] == ["H2", "H2-long", "resnet8", "resnet14"]
    assert change["change"] == pytest.approx(2.0)  # resnet14 2 points better in the long arm, resnet8 the same
    assert change["ci_low"] < 2.0 < change["ci_high"] and 0 < change["p_uncorrected"] < 0.05
    report = (tmp_path / "results" / "plan" / "report.md").read_text()
    assert "## The same difference in each arm (exploratory)" in report
    assert "| `test_error` | resnet8 - resnet14 | H2 (a): 4.00 [" in report and "H2-long (b): 6.00 [" in report


def test_a_significant_difference_the_wrong_way_is_not_supported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, _arm(tmp_path))
    data = yaml.safe_load(plan.read_text())
    data["hypotheses"][1].update(higher="resnet14", lower="resnet8")  # predicts the deeper net is worse
    plan.write_text(yaml.safe_dump(data))
    assert main([str(plan)]) == 0
    row = _rows(tmp_path)["H2"]
    assert float(row["p_holm"]) < 0.05 and float(row["difference"]) < 0 and row["verdict"] == "not supported"


def test_a_hypothesis_without_runs_is_pending_and_counts_with_p_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arm = _arm(tmp_path)
    for seed in (1, 2):  # plain14 keeps one seed: H1 has no test yet
        for name in ("config.yaml", "efficiency.json"):
            (tmp_path / "results" / "arm" / "plain14" / f"seed{seed}" / name).unlink()
    assert main([str(_plan(tmp_path, arm))]) == 0
    rows = _rows(tmp_path)
    assert rows["H1"]["verdict"] == "pending" and rows["H1"]["p_holm"] == ""
    p2 = float(rows["H2"]["p_welch"])
    assert float(rows["H2"]["p_holm"]) == pytest.approx(min(1.0, 2 * p2))  # the family keeps both hypotheses


def test_check_passes_on_one_clean_commit_and_fails_on_mixed_commits_or_a_dirty_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, _arm(tmp_path))
    assert main([str(plan)]) == 0
    assert main(["--check", str(tmp_path / "results" / "plan")]) == 0
    assert "the planned analysis and each arm's one clean commit match what HEAD gives" in capsys.readouterr().out

    mixed = tmp_path / "mixed"
    plan = _plan(mixed, _arm(mixed, commits={("resnet14", 2): "b" * 40}))
    assert main([str(plan)]) == 0
    assert main(["--check", str(mixed / "results" / "plan")]) == 1
    assert "its runs mix 2 commits (aaaaaaaa, bbbbbbbb)" in capsys.readouterr().err

    dirty = tmp_path / "dirty"
    plan = _plan(dirty, _arm(dirty, dirty=(("plain8", 1),)))
    assert main([str(plan)]) == 0
    assert main(["--check", str(dirty / "results" / "plan")]) == 1
    assert "1 run(s) trained from a dirty tree" in capsys.readouterr().err


@pytest.mark.parametrize(
    "earlier, message",
    [
        (
            {"git_commit": COMMIT, "git_dirty": True},
            "1 run(s) trained from a dirty tree, e.g. {run} (before it was resumed)",
        ),
        ({"git_commit": "b" * 40, "git_dirty": False}, "its runs mix 2 commits (aaaaaaaa, bbbbbbbb)"),
        ({"git_dirty": False}, "1 run(s) name no git commit, e.g. {run}"),
    ],
)
def test_check_reads_the_provenance_a_run_had_before_it_was_resumed(tmp_path, monkeypatch, capsys, earlier, message):
    """A run trained on a dirty tree (or another commit) and resumed from a clean one records the clean tree as its
    ``provenance`` and the first part under ``earlier_provenance``: its weights came from both, so both count."""
    monkeypatch.chdir(tmp_path)
    arm = _arm(tmp_path)
    run = tmp_path / "results" / "arm" / "plain8" / "seed1"
    record = json.loads((run / "efficiency.json").read_text())
    (run / "efficiency.json").write_text(json.dumps({**record, "earlier_provenance": [earlier]}))
    assert main([str(_plan(tmp_path, arm))]) == 0
    assert main(["--check", str(tmp_path / "results" / "plan")]) == 1
    assert message.format(run=run) in capsys.readouterr().err


@pytest.mark.parametrize(
    "provenance, code, message",
    [
        ({"git_commit": COMMIT, "git_dirty": False}, 0, "each arm's one clean commit match what HEAD gives"),
        ({"git_commit": COMMIT, "git_dirty": True}, 1, "1 run(s) trained from a dirty tree, e.g. {run}"),
        ({"git_commit": "b" * 40, "git_dirty": False}, 1, "its runs mix 2 commits (aaaaaaaa, bbbbbbbb)"),
    ],
)
def test_check_reads_the_selection_runs_that_chose_the_arms_settings(
    tmp_path, monkeypatch, capsys, provenance, code, message
):
    """The selection runs are no results, but the results were trained at what they chose: one code version."""
    monkeypatch.chdir(tmp_path)
    arm = _arm(tmp_path)
    study = yaml.safe_load(arm.read_text())
    study["select"] = {"grid": {"model.optimizer.init_args.lr": [0.05, 0.1]}, "seeds": [0]}
    arm.write_text(yaml.safe_dump(study))
    results = tmp_path / "results" / "arm"
    selection = [run for run in plan_runs(load_study(str(arm)), True) if run.selects is not None]
    clean = {"git_commit": COMMIT, "git_dirty": False}
    for index, run in enumerate(selection):
        write_run(results / run.variant / f"seed{run.seed}", run.arch, run.seed, test_acc=0.5, params=1000,
                  best_val_acc=0.5, provenance=provenance if index == 1 else clean)  # fmt: skip
    assert main([str(_plan(tmp_path, arm))]) == 0
    assert main(["--check", str(tmp_path / "results" / "plan")]) == code
    output = capsys.readouterr()
    assert message.format(run=results / selection[1].variant / "seed0") in (output.err if code else output.out)


def _pruned_arm(tmp_path: Path) -> Path:
    """The toy arm plus a pruned entry, ``resnet14-p`` (seeds 0-1, each from resnet14's run of its seed), its runs
    written as a fit records them: ``init_from`` names the parent run as trained elsewhere and copies its record."""
    arm = _arm(tmp_path)
    study = yaml.safe_load(arm.read_text())
    study["archs"].append(
        {"name": "resnet14-p", "prune": "resnet14", "pruning": {"params": 600}, "args": {"trainer.max_steps": 0}}
    )
    study["seeds"]["resnet14-p"] = [0, 1]
    arm.write_text(yaml.safe_dump(study))
    results = tmp_path / "results" / "arm"
    for seed in (0, 1):
        parent = json.loads((results / "resnet14" / f"seed{seed}" / "efficiency.json").read_text())
        start = {
            "path": f"/elsewhere/logs/arm/resnet14/seed{seed}/checkpoints/best.ckpt", "sha256": "0" * 64,
            "arch": "resnet14", "run_dir": f"/elsewhere/logs/arm/resnet14/seed{seed}",
            "train_images_seen": parent["train_images_seen"], "best_val_acc": parent["best_val_acc"],
            "git_commit": parent["provenance"]["git_commit"], "git_dirty": False,
        }  # fmt: skip
        write_run(results / "resnet14-p" / f"seed{seed}", "resnet14", seed, test_acc=0.8, params=1000,
                  init_from=start, pruning={"params_remaining": 600}, train_images_seen=0,
                  provenance={"git_commit": COMMIT, "git_dirty": False, "device": "cpu"})  # fmt: skip
    return arm


def _edit_start(results: Path, seed: int, **changes: object) -> None:
    path = results / "resnet14-p" / f"seed{seed}" / "efficiency.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "init_from": {**record["init_from"], **changes}}))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda results: None, None),
        (
            lambda results: _edit_start(results, 1, run_dir="/elsewhere/logs/arm/resnet14/seed0"),
            "arm a: resnet14-p/seed1 started from resnet14/seed0, not resnet14/seed1",
        ),
        (
            lambda results: _edit_start(results, 0, train_images_seen=123),
            "arm a: resnet14-p/seed0 started from a resnet14/seed0 with train_images_seen 123; the committed "
            "resnet14/seed0 has 8192000 (another training of it)",
        ),
        (
            lambda results: _edit_start(results, 0, git_commit="b" * 40),
            f"resnet14-p/seed0 started from a resnet14/seed0 with git_commit '{'b' * 40}'; the committed",
        ),
        (
            lambda results: shutil.rmtree(results / "resnet14" / "seed1"),
            "arm a: resnet14-p/seed1 started from resnet14/seed1, which is no finished run of the arm",
        ),
    ],
)
def test_check_fails_on_a_pruned_run_not_from_its_committed_parent(tmp_path, monkeypatch, capsys, change, message):
    """A pruned net is its parent's too (accuracy and compute): committed beside another training of its parent,
    a parent of another seed or none, the arm is not the study's nets, though every run is one clean commit."""
    monkeypatch.chdir(tmp_path)
    arm = _pruned_arm(tmp_path)
    change(tmp_path / "results" / "arm")
    assert main([str(_plan(tmp_path, arm))]) == 0
    assert main(["--check", str(tmp_path / "results" / "plan")]) == (1 if message else 0)
    output = capsys.readouterr()
    if message:
        assert message in output.err
        assert "a pruned run not from its committed parent" in (tmp_path / "results" / "plan" / "report.md").read_text()
    else:
        assert "each arm's one clean commit match what HEAD gives" in output.out


@pytest.mark.parametrize("n_one, n_two", [(4, 4), (3, 3), (7, 7), (8, 8), (3, 5), (2, 2)])
def test_the_mann_whitney_floor_is_scipys_exact_p_of_two_samples_that_do_not_overlap(n_one, n_two):
    floor = mannwhitney_floor(n_one, n_two)
    separated = stats.mannwhitneyu(range(n_one), range(100, 100 + n_two), alternative="two-sided", method="exact")
    assert floor == pytest.approx(separated.pvalue, rel=1e-12)


def test_the_report_says_where_the_mann_whitney_check_cannot_reach_the_holm_level(tmp_path, monkeypatch):
    """4 against 4 runs cannot give an exact p below 2/70 = 0.029: beside a supported verdict at Holm's 0.05/2 it
    would read as a failed check without its floor."""
    monkeypatch.chdir(tmp_path)
    assert main([str(_plan(tmp_path, _arm(tmp_path)))]) == 0
    report = (tmp_path / "results" / "plan" / "report.md").read_text()
    assert (
        "The smallest Mann-Whitney p there can be at each hypothesis's planned n (2 / C(n1 + n2, n1)): "
        "H1 0.100 (3/3), H2 0.029 (4/4). For H1, H2 it is not below the strictest Holm level, alpha / 2 = 0.025"
    ) in report


def test_check_fails_when_the_committed_plan_report_is_stale(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, _arm(tmp_path))
    assert main([str(plan)]) == 0
    write_run(tmp_path / "results" / "arm" / "resnet8" / "seed3", "resnet8", 3, test_acc=0.70, params=1000,
              train_eval_acc=0.99, provenance={"git_commit": COMMIT, "git_dirty": False})  # fmt: skip
    assert main(["--check", str(tmp_path / "results" / "plan")]) == 1
    assert "plan.csv: differs from what HEAD gives" in capsys.readouterr().err


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"correction": "bonferroni"}, "correction 'bonferroni' is not supported (holm)"),
        ({"typo": 1}, "unknown keys ['typo']"),
        ({"arms": {}}, "'arms' must map arm names to study files"),
    ],
)
def test_a_bad_plan_is_one_error_line(tmp_path, monkeypatch, capsys, changes, message):
    monkeypatch.chdir(tmp_path)
    assert main([str(_plan(tmp_path, _arm(tmp_path), **changes))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_plan_file_with_a_yaml_mistake_says_so(tmp_path, monkeypatch, capsys):
    """A plan whose list item held ': ' (a mapping key to YAML) was refused as "not a study file (no 'archs')"."""
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, _arm(tmp_path), exploratory=["x"])
    plan.write_text(plan.read_text().replace("- x", "- a pair (ResNet-20 against ResNet-8x2: 9.5%)\n  more"))
    assert main([str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: '{plan}' is not valid YAML: ") and "line" in err and err.count("\n") == 1


def test_a_hypothesis_naming_an_unknown_metric_or_arm_is_refused(tmp_path):
    plan = _plan(tmp_path, tmp_path / "arm.yaml")
    data = yaml.safe_load(plan.read_text())
    data["hypotheses"][0]["metric"] = "val_error"
    plan.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match="metric 'val_error' is not one of"):
        load_plan(plan)
    data["hypotheses"][0].update(metric="test_error", arm="b")
    plan.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match="arm 'b' is not one of"):
        load_plan(plan)


def test_the_shipped_depth_plan_loads_and_its_power_table_matches_its_seeds(monkeypatch):
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    plan = load_plan("configs/studies/plans/cifar10_depth.yaml")
    assert [h.id for h in plan.hypotheses] == ["H1-16", "H2-16", "H1-48", "H2-48"]
    arms = {name: yaml.safe_load(Path(path).read_text()) for name, path in plan.arms.items()}
    for assumption in plan.assumptions:
        for hid in assumption.hypotheses:
            h = next(h for h in plan.hypotheses if h.id == hid)
            seeds = arms[h.arm]["seeds"]
            planned = {len(seeds[a]) if isinstance(seeds, dict) else len(seeds) for a in (h.higher, h.lower)}
            assert planned == {assumption.seeds}, hid  # the study runs the seeds the power calculation chose


def test_generated_blocks_follow_the_report_and_a_hand_edit_fails_the_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    plan = _plan(tmp_path, _arm(tmp_path))
    summary = "results/plan/summary.md"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- generated from {summary} -->\nold numbers\n<!-- end generated -->\nrest\n")
    assert main([str(plan)]) == 0
    text = readme.read_text()
    assert (tmp_path / summary).read_text() in text and "old numbers" not in text and text.endswith("rest\n")
    assert main(["--check", str(tmp_path / "results" / "plan")]) == 0
    readme.write_text(text.replace("supported", "SUPPORTED", 1))  # a verdict typed by hand
    assert main(["--check", str(tmp_path / "results" / "plan")]) == 1
    assert f"README.md: the block generated from {summary} differs from it" in capsys.readouterr().err


def test_the_repositorys_generated_blocks_match_their_files(monkeypatch):
    """CI: README.md and docs/results.md quote the generated reports verbatim."""
    from src.reporting.includes import DOCUMENTS, blocks, stale_blocks
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)
    assert sum(len(blocks(Path(doc))) for doc in DOCUMENTS) >= 2
    assert [line for doc in DOCUMENTS for line in stale_blocks(Path(doc))] == []


def test_complete_runs_that_never_vary_are_not_testable_never_pending(tmp_path, monkeypatch):
    """Welch's t is undefined when neither side varies; the runs are in, so the verdict says so (not "pending")
    and the exact check still prints; equal floats whose mean rounds must not pass for a spread either."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(TRAIN_EVAL, "plain8", [0.9] * 3)
    monkeypatch.setitem(TRAIN_EVAL, "plain14", [0.86] * 3)
    assert main([str(_plan(tmp_path, _arm(tmp_path)))]) == 0
    row = _rows(tmp_path)["H1"]
    assert row["verdict"] == "not testable" and row["p_welch"] == "" and row["p_holm"] == ""
    assert float(row["p_mannwhitney_exact"]) == pytest.approx(0.1)  # 2 of the 20 splits of 3 + 3 are as extreme
    summary = (tmp_path / "results" / "plan" / "summary.md").read_text()
    assert "not testable: neither side's runs vary (n = 3, 3)" in summary


def test_committed_runs_left_out_of_a_test_are_listed_with_why(tmp_path, monkeypatch):
    """An audit: a diverged run and one without the metric left the tests without a word (n simply smaller),
    and the secondary measure was computed on other seeds than the primary, its n unprinted."""
    monkeypatch.chdir(tmp_path)
    arm = _arm(tmp_path)
    results = tmp_path / "results" / "arm"
    diverged = results / "resnet14" / "seed3" / "efficiency.json"
    record = json.loads(diverged.read_text())
    record.update(status="diverged", test_acc=None, diverged_step=12, diverged_reason="loss is nan")
    diverged.write_text(json.dumps(record))
    no_metric = results / "plain8" / "seed0" / "efficiency.json"
    no_metric.write_text(json.dumps({**json.loads(no_metric.read_text()), "train_eval_acc": None}))
    plan = _plan(tmp_path, arm)
    data = yaml.safe_load(plan.read_text())
    data["hypotheses"][0]["secondary"] = "test_error"  # plain8 seed0 has a test error: 3 seeds there, 2 in H1
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main([str(plan)]) == 0
    rows = _rows(tmp_path)
    assert (rows["H2"]["n_lower"], rows["H1"]["n_lower"]) == ("3", "2")
    assert rows["H2"]["left_out"] == "resnet14/seed3: diverged at step 12 (loss is nan)"
    assert rows["H1"]["left_out"] == "plain8/seed0: finished, no `train_eval_error` recorded"
    assert (rows["H1"]["secondary_n_higher"], rows["H1"]["secondary_n_lower"]) == ("3", "3")
    report = (tmp_path / "results" / "plan" / "report.md").read_text()
    assert "**Committed runs left out of the tests**" in report
    assert "- H2: resnet14/seed3: diverged at step 12 (loss is nan)" in report
    assert "- H1, `test_error`: difference" in report and "(n = 3, 3)" in report

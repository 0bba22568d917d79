"""The report's frontier: deeper, wider and pruned nets compared at equal parameters and at equal training compute.

Runs are written without training (tests/study_runs.write_run) with chosen test errors; every test statistic and
Holm adjustment below is recomputed by hand (scipy, and Holm's step-down written out). Parameter counts and MACs
are this project's exact counts of the nets named.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from scipy import stats

from src.report import main
from src.reporting import frontier
from tests.study_runs import QUICKSTART, resolved_config, write_run

SIZE = {"resnet8": (75_290, 12_239_488), "resnet20": (269_722, 40_551_040), "resnet44": (658_586, 97_174_144),
        "resnet8_2": (298_026, 48_071_936), "resnet14_2": (685_994, 104_695_040)}  # fmt: skip
ERRORS = {  # test error (%) per seed
    "resnet8": [20.0, 20.4, 19.8, 20.2],
    "resnet20": [15.6, 15.9, 15.4, 15.8],
    "resnet8_2": [16.0, 16.3, 15.7, 16.1],
    "resnet44": [14.6, 14.9, 14.5, 14.8],
    "resnet14_2": [14.0, 14.2, 13.7, 14.1],
    "resnet20-p8": [30.1, 29.5, 29.9],  # resnet20 seeds 0-2 pruned to resnet8's count, BN re-estimated only
    "resnet20-p8-ft": [19.0, 18.6, 19.3, 18.8],  # ... and fine-tuned for 352 steps of 256 images
}
IMAGES, FINE_TUNE = 721_000, 90_112
PRUNED = {"resnet20-p8": 0, "resnet20-p8-ft": 352}  # entry -> its max_steps


def _entry(name: str) -> dict:
    return {"name": name, "prune": "resnet20", "pruning": {"params": 75_290},
            "args": {"trainer.max_steps": PRUNED[name]}}  # fmt: skip


def _study(tmp_path: Path, parents: dict[tuple[str, int], int] | None = None) -> Path:
    """A study file and its results folder of written runs (``parents``: (entry, seed) -> the resnet20 seed it was
    pruned from, when not its own); returns the results folder."""
    results = tmp_path / "results" / "frontier"
    for variant, errors in ERRORS.items():
        for seed, error in enumerate(errors):
            run_dir = results / variant / f"seed{seed}"
            if variant in PRUNED:
                parent = (parents or {}).get((variant, seed), seed)
                origin = f"/elsewhere/lightning_logs/frontier/resnet20/seed{parent}"
                config = resolved_config("resnet20", seed, run_dir, **{
                    "model.init_from": f"{origin}/checkpoints/best.ckpt", "trainer.max_steps": PRUNED[variant],
                    "model.pruning": {"params": 75_290, "scope": "global"}})  # fmt: skip
                write_run(run_dir, "resnet20", seed, 1 - error / 100, *SIZE["resnet20"], config=config,
                          train_images_seen=FINE_TUNE if PRUNED[variant] else 0,
                          init_from={"run_dir": origin, "train_images_seen": IMAGES},
                          pruning={"params_remaining": 75_290, "params_before": 269_722})  # fmt: skip
            else:
                write_run(run_dir, variant, seed, 1 - error / 100, *SIZE[variant], train_images_seen=IMAGES)
    study = {
        "name": "frontier", "root": "logs", "results": "results/frontier", "configs": [QUICKSTART],
        "archs": [*(name for name in ERRORS if name not in PRUNED), *(_entry(name) for name in PRUNED)],
        "seeds": {name: list(range(len(errors))) for name, errors in ERRORS.items()},
    }  # fmt: skip
    (tmp_path / "frontier.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    (results / "results.json").write_text(json.dumps({"study": "frontier", "study_file": "frontier.yaml"}))
    return results


def _pairs(results: Path) -> dict[tuple[str, str, str], dict]:
    with open(results / "report" / frontier.CSV_FILE) as handle:
        return {(row["matched_on"], row["a"], row["b"]): row for row in csv.DictReader(handle)}


def _holm(p_values: dict) -> dict:
    """Holm's step-down by hand: the k-th smallest p times (m - k + 1), made monotone, capped at 1."""
    order, m, running, adjusted = sorted(p_values, key=p_values.get), len(p_values), 0.0, {}
    for k, key in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[key]))
        adjusted[key] = running
    return adjusted


P8, P8FT = "resnet20 pruned to 75,290", "resnet20 pruned, fine-tuned to 75,290"


def test_equal_parameter_and_equal_compute_pairs_with_their_tests_and_holm_by_hand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = _study(tmp_path)
    assert main([str(results)]) == 0
    pairs = _pairs(results)
    # Equal parameters: resnet8's count three ways, ResNet-20 vs ResNet-8x2 (9.5% apart), ResNet-44 vs ResNet-14x2.
    # Equal compute: the fine-tuned pruned ResNet-20 (its parent's 721k images + 90k) vs ResNet-8x2 (5.1% apart),
    # ResNet-44 vs ResNet-14x2. Not there: a pruned net against its own parent (equal compute by construction).
    assert sorted(pairs) == sorted([
        ("params", P8, P8FT), ("params", P8, "resnet8"), ("params", P8FT, "resnet8"),
        ("params", "resnet20", "resnet8_2"), ("params", "resnet44", "resnet14_2"),
        ("compute", P8FT, "resnet8_2"), ("compute", "resnet44", "resnet14_2"),
    ])  # fmt: skip
    err = {name: ERRORS[name] for name in ERRORS}
    # One trained network's: pruned from the same resnet20 runs, paired over the 3 shared seeds.
    paired = pairs[("params", P8, P8FT)]
    assert paired["test"] == "paired t" and (paired["n_a"], paired["n_b"]) == ("3", "3")
    assert float(paired["p_value"]) == pytest.approx(
        stats.ttest_rel(err["resnet20-p8"], err["resnet20-p8-ft"][:3]).pvalue
    )
    # Different networks: Welch.
    expected = {
        (P8, "resnet8"): stats.ttest_ind(err["resnet20-p8"], err["resnet8"], equal_var=False).pvalue,
        (P8FT, "resnet8"): stats.ttest_ind(err["resnet20-p8-ft"], err["resnet8"], equal_var=False).pvalue,
        ("resnet20", "resnet8_2"): stats.ttest_ind(err["resnet20"], err["resnet8_2"], equal_var=False).pvalue,
        ("resnet44", "resnet14_2"): stats.ttest_ind(err["resnet44"], err["resnet14_2"], equal_var=False).pvalue,
        (P8FT, "resnet8_2"): stats.ttest_ind(err["resnet20-p8-ft"], err["resnet8_2"], equal_var=False).pvalue,
    }
    for (a, b), p in expected.items():
        row = pairs.get(("params", a, b)) or pairs[("compute", a, b)]
        assert row["test"] == "Welch t" and float(row["p_value"]) == pytest.approx(p)
    # Holm over the six distinct tests (ResNet-44 vs ResNet-14x2 is in both tables: one test).
    holm = _holm({**expected, (P8, P8FT): float(paired["p_value"])})
    for (cost, a, b), row in pairs.items():
        assert float(row["holm_p"]) == pytest.approx(holm[(a, b)]), (cost, a, b)
    assert pairs[("params", P8, "resnet8")]["verdict"] == "resnet8 lower"
    assert pairs[("compute", P8FT, "resnet8_2")]["verdict"] == "resnet8_2 lower"
    report = (results / "report" / "report.md").read_text()
    assert "## The frontier: deeper, wider or pruned" in report and "Holm over the 6 tested pairs" in report
    assert (results / "report" / frontier.FIGURE).stat().st_size > 10_000
    answer = (results / "report" / frontier.ANSWER).read_text()
    assert answer.startswith("At equal parameters, ") and "At equal training compute, " in answer
    assert f"`resnet8` beats `{P8}` by {sum(err['resnet20-p8']) / 3 - sum(err['resnet8']) / 4:.2f} points" in answer
    beats = answer[answer.index(f"`resnet8` beats `{P8}`") :]
    assert beats[: beats.index("]")].endswith(f"n = 4/3, Holm p = {holm[(P8, 'resnet8')]:.2g}")  # resnet8's 4 first
    assert answer.endswith("(results/frontier/report/frontier.png)\n")  # as README.md, at the root, links it


def test_pairs_with_too_few_seeds_are_said_to_be_untested_never_not_different(tmp_path, monkeypatch):
    """Two seeds a side: some pairs have Holm p < 0.05 but the rule (n >= 3) names no direction -- the answer must
    not read as "none differs"."""
    monkeypatch.chdir(tmp_path)
    for name in ERRORS:
        monkeypatch.setitem(ERRORS, name, ERRORS[name][:2])
    results = _study(tmp_path)
    assert main([str(results)]) == 0
    pairs = _pairs(results)
    assert any(float(row["holm_p"]) < 0.05 for row in pairs.values() if row["holm_p"])  # what made it matter
    answer = (results / "report" / frontier.ANSWER).read_text()
    assert "differ" not in answer.split("\n")[0]
    assert "At equal parameters, no exploratory pair can be told apart yet: each of the 5 pairs has fewer than 3" in (
        answer
    )
    assert "At equal training compute, no exploratory pair can be told apart yet: each of the 2 pairs" in answer
    for name in ("resnet8", "resnet20", "resnet8_2"):  # three seeds for one pair of each table: one testable
        monkeypatch.setitem(ERRORS, name, ERRORS[name] + [ERRORS[name][0] + 0.1])
    results = _study(tmp_path)
    assert main([str(results)]) == 0
    answer = (results / "report" / frontier.ANSWER).read_text()
    assert "not testable yet: fewer than 3 seeds a side, or no test)" in answer
    assert "testable exploratory pair" in answer


def test_a_planned_pair_is_marked_and_left_out_of_the_exploratory_family(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = _study(tmp_path)
    plans = tmp_path / "configs" / "studies" / "plans"
    plans.mkdir(parents=True)
    plan = {"name": "f", "results": "results/plan", "arms": {"f16": "frontier.yaml"}, "hypotheses": [
        {"id": "F4", "arm": "f16", "claim": "pruned beats dense", "metric": "test_error",
         "higher": "resnet8", "lower": "resnet20-p8-ft"}]}  # fmt: skip
    (plans / "frontier.yaml").write_text(yaml.safe_dump(plan))
    assert main([str(results)]) == 0
    pairs = _pairs(results)
    planned = pairs[("params", P8FT, "resnet8")]
    assert planned["planned"] == "F4" and planned["holm_p"] == ""
    assert planned["verdict"] == "planned (F4): the plan's report tests it"
    assert sum(row["holm_p"] != "" for row in pairs.values()) == 6  # 5 distinct tests, one of them in both tables
    report = (results / "report" / "report.md").read_text()
    assert "Holm over the 5 tested pairs" in report
    assert "The planned comparisons are tested in `configs/studies/plans/frontier.yaml`'s report." in report


def test_pairing_needs_the_very_same_parent_run(tmp_path, monkeypatch):
    """Seed 1 of the fine-tuned net was pruned from resnet20 seed 2: the two pruned variants no longer provably
    share their draws seed by seed, so Welch, not a paired test; and that net is no longer resnet20's seed 1."""
    monkeypatch.chdir(tmp_path)
    results = _study(tmp_path, parents={("resnet20-p8-ft", 1): 2})
    assert main([str(results)]) == 0
    row = _pairs(results)[("params", P8, P8FT)]
    assert row["test"] == "Welch t" and (row["n_a"], row["n_b"]) == ("3", "4")
    p = stats.ttest_ind(ERRORS["resnet20-p8"], ERRORS["resnet20-p8-ft"], equal_var=False).pvalue
    assert float(row["p_value"]) == pytest.approx(p)


def test_a_study_of_one_width_without_pruned_nets_has_no_frontier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arch in ("resnet8", "resnet20"):
        for seed, error in enumerate(ERRORS[arch]):
            write_run(tmp_path / "runs" / arch / f"seed{seed}", arch, seed, 1 - error / 100, *SIZE[arch])
    assert main([str(tmp_path / "runs")]) == 0
    out = tmp_path / "runs" / "report"
    assert not (out / frontier.FIGURE).exists() and not (out / frontier.CSV_FILE).exists()
    assert "## The frontier" not in (out / "report.md").read_text()


def test_readme_quotes_the_answer_and_a_hand_edit_fails_the_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    results = _study(tmp_path)
    answer = "results/frontier/report/frontier.md"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- generated from {answer} -->\nold\n<!-- end generated -->\nrest\n")
    assert main([str(results)]) == 0
    text = readme.read_text()
    assert (tmp_path / answer).read_text() in text and "\nold\n" not in text
    capsys.readouterr()
    main(["--check", str(results)])  # (the written runs' configs are not what the study plans: other lines)
    assert "README.md: the block generated from" not in capsys.readouterr().err
    readme.write_text(text.replace("beats", "crushes", 1))
    assert main(["--check", str(results)]) == 1
    assert f"README.md: the block generated from {answer} differs from it" in capsys.readouterr().err


def test_a_plain_net_is_no_way_of_spending_parameters(tmp_path, monkeypatch):
    """plain20 has ResNet-8x2's parameters within 10%, but plain against residual asks what shortcuts do (the
    residual/plain table), not how to spend parameters: only the two residual nets are a frontier pair."""
    monkeypatch.chdir(tmp_path)
    for arch, params in (
        ("resnet20", SIZE["resnet20"]),
        ("plain20", SIZE["resnet20"]),
        ("resnet8_2", SIZE["resnet8_2"]),
    ):
        for seed, error in enumerate(ERRORS["resnet20"]):
            write_run(tmp_path / "runs" / arch / f"seed{seed}", arch, seed, 1 - error / 100, *params)
    assert main([str(tmp_path / "runs")]) == 0
    assert sorted(_pairs(tmp_path / "runs")) == [("params", "resnet20", "resnet8_2")]

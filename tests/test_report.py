"""``python -m src.report``: the study's table and figures from tiny real runs (tests/study_runs.py)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import struct
from pathlib import Path

import pytest
import yaml
from scipy import stats

from src.report import main
from src.reporting import protocol
from src.reporting.figures import pareto_front
from src.reporting.paper import CIFAR10_TABLE6, protocol_differences
from src.reporting.statistics import compare
from src.reporting.study_rows import mean_std
from src.runs import read_scalars, run_status
from tests.study_runs import QUICKSTART, STUDY, resolved_config, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = (
    "test_error_vs_params.png",
    "test_error_vs_macs.png",
    "test_error_vs_compute.png",
    "test_error_vs_time.png",
    "size_to_target.png",
    "training_curves.png",
    "fig6_by_family.png",  # He et al. Fig. 6 per family, every depth overlaid
)


def efficiency(study, arch, seed):
    return json.loads((study / arch / f"seed{seed}" / "efficiency.json").read_text())


def snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def report(tiny_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    before = snapshot(tiny_study)
    assert main([str(tiny_study), "--out", str(out)]) == 0
    assert snapshot(tiny_study) == before, "the report must only read the runs"
    rows = {row["variant"]: row for row in csv.DictReader((out / "report.csv").open())}
    return out, rows


def test_rows_hold_mean_std_and_n_over_finished_seeds(tiny_study, report):
    _, rows = report
    assert set(rows) == {"resnet8", "plain8", "resnet14"}  # plain14 was never tested: no row
    for arch, seeds in (("resnet8", [0, 1]), ("plain8", [0, 1])):
        tests = [efficiency(tiny_study, arch, s)["test_acc"] for s in seeds]
        vals = [efficiency(tiny_study, arch, s)["best_val_acc"] for s in seeds]
        row = rows[arch]
        assert (row["n"], row["n_val"], row["seeds"]) == ("2", "2", "0 1")
        assert float(row["test_acc_mean"]) == pytest.approx(statistics.fmean(tests))
        assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(tests))
        assert float(row["best_val_acc_mean"]) == pytest.approx(statistics.fmean(vals))
    one = rows["resnet14"]
    assert (one["n"], one["test_acc_std"], one["best_val_acc_std"]) == ("1", "", "")  # no std from one seed
    assert (rows["resnet8"]["kind"], rows["plain8"]["kind"]) == ("residual", "plain")
    assert (rows["resnet8"]["shortcut"], rows["plain8"]["shortcut"], rows["resnet8"]["depth"]) == ("A", "-", "8")


def test_size_cost_and_marginal_columns(tiny_study, report):
    _, rows = report
    small, big = efficiency(tiny_study, "resnet8", 0), efficiency(tiny_study, "resnet14", 0)
    r8, r14 = rows["resnet8"], rows["resnet14"]
    assert int(r8["params"]) == small["params_total"] == 75_290 and int(r8["macs"]) == small["macs_per_sample"]
    mean8 = float(r8["test_acc_mean"])
    # The raw ratios stay in the CSV under names that say what they are (they rank size, not efficiency).
    assert float(r8["raw_acc_per_mparam"]) == pytest.approx(mean8 / (small["params_total"] / 1e6))
    assert float(r8["raw_acc_per_gmac"]) == pytest.approx(mean8 / (small["macs_per_sample"] / 1e9))
    # Training compute: 3 x MACs x images seen (these runs predate train_images_seen: global batch x steps).
    seen = small.get("train_images_seen") or small["global_batch_size"] * small["global_step"]
    computes = [3 * small["macs_per_sample"] * seen, 3 * efficiency(tiny_study, "resnet8", 1)["macs_per_sample"] * seen]
    assert float(r8["train_compute_macs"]) == pytest.approx(statistics.fmean(computes))
    # ResNet-14 is the next depth of ResNet-8's line; points gained per extra million parameters / GMACs.
    gain = 100 * (big["test_acc"] - mean8)
    assert r14["marginal_from"] == "resnet8" and r14["marginal_pp_per_extra_mparam_ci_low"] == ""  # resnet14: n = 1
    extra_params = (big["params_total"] - small["params_total"]) / 1e6
    extra_macs = (big["macs_per_sample"] - small["macs_per_sample"]) / 1e9
    assert float(r14["marginal_pp_per_extra_mparam"]) == pytest.approx(gain / extra_params)
    assert float(r14["marginal_pp_per_extra_gmac"]) == pytest.approx(gain / extra_macs)
    # The first depth of a line, and a line of one depth, have nothing to compare with.
    assert r8["marginal_pp_per_extra_mparam"] == rows["plain8"]["marginal_pp_per_extra_mparam"] == ""


def test_markdown_shows_the_table_figures_and_unfinished_runs(tiny_study, report):
    out, rows = report
    text = (out / "report.md").read_text()
    mean, std = float(rows["resnet8"]["test_acc_mean"]), float(rows["resnet8"]["test_acc_std"])
    assert "| `resnet8` | resnet | 75,290 | 3.06M | " in text
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in text
    assert "Runs: 5 finished (tested), 0 diverged, 1 unfinished, 2 missing." in text
    assert "not distinguishable with n = 2" in text and "ahead" not in text  # two seeds decide nothing
    assert "Line plain has one size: no fit, no marginal slope" in text
    assert "One seed only, so no interval and no test: `resnet14`" in text
    assert "Test acc / Mparam" not in text  # the raw ratio leads nothing
    assert "**Unfinished** (1;" in text and "`plain14/seed0`" in text
    # Seed 1 exists for the other variants of the folder: the one-seed variants lack it.
    assert "**Missing** (2;" in text and "`resnet14/seed1`" in text and "`plain14/seed1`" in text
    for figure in FIGURES:
        assert f"]({figure})" in text
    assert "max_epochs 2" in text  # the budget the runs had
    assert "data: SyntheticDataModule; splits: train 128, val 64, test 64; 64 test images scored" in text
    assert "test: synthetic test split, best checkpoint by val/acc" in text
    assert "optimizer: SGD, lr 0.1" in text and "precision: 32-true" in text
    assert "Table 6 is not overlaid" in text  # synthetic data, 4 steps: not the paper's protocol
    assert "Training compute of some runs is estimated" not in text  # the callback counts train_images_seen


def test_training_compute_of_an_old_run_is_estimated_and_said(tmp_path):
    """Runs from before ``train_images_seen`` existed: 3 x MACs x global batch x steps, and report.md says so."""
    for seed in (0, 1):
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, 0.9, 269_722, train_images_seen=None)
    out, _, text = run_report(tmp_path)
    (row,) = read_csv(out / "report.csv")
    assert float(row["train_compute_macs"]) == pytest.approx(3 * 269_722 * 150 * 64000 * 128)
    assert "Training compute of some runs is estimated: global batch x steps" in text


def test_figures_are_valid_non_empty_pngs(report):
    out, _ = report
    for figure in FIGURES:
        data = (out / figure).read_bytes()
        assert data[:8] == PNG_SIGNATURE, figure
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert width >= 600 and height >= 400 and len(data) > 20_000, (figure, width, height, len(data))


def test_training_curves_come_from_the_logged_scalars(tiny_study):
    curves = read_scalars(tiny_study / "resnet8" / "seed0", ["train/acc", "val/acc", "not/logged"])
    assert set(curves) == {"train/acc", "val/acc"}
    assert curves["val/acc"][0] == [1, 3]  # validation after each of the 2 epochs of 2 steps (steps 0-based)
    assert all(0.0 <= value <= 1.0 for value in curves["train/acc"][1])


def test_study_file_lists_planned_runs_that_are_missing(tiny_study, tmp_path):
    study_file = tmp_path / "tiny.yaml"
    study = {"name": STUDY, "root": str(tiny_study.parent), "configs": [QUICKSTART]}
    study_file.write_text(yaml.safe_dump({**study, "archs": ["resnet8", "plain8", "resnet14"], "seeds": [0, 1]}))
    assert main([str(study_file), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "**Missing** (1; no run directory)" in text and "`resnet14/seed1`" in text
    assert "0 unfinished" in text and "1 outside the study's plan (left out)" in text  # plain14: not planned


def test_partial_log_root_reports_a_seed_its_siblings_have(tiny_study, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tiny_study, root)
    shutil.rmtree(root / "plain8" / "seed1")
    assert run_status(root / "plain8" / "seed1") == "missing"
    assert main([str(root)]) == 0  # default output folder: <root>/report
    text = (root / "report" / "report.md").read_text()
    assert "`plain8/seed1`" in text and "`resnet14/seed1`" in text and "3 missing" in text
    rows = {row["variant"]: row for row in csv.DictReader((root / "report" / "report.csv").open())}
    assert rows["plain8"]["n"] == "1"


def test_empty_or_bad_source(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0  # nothing run yet: an empty report, not a failure
    assert "_No finished runs yet._" in (tmp_path / "report" / "report.md").read_text()
    assert all((tmp_path / "report" / figure).read_bytes()[:8] == PNG_SIGNATURE for figure in FIGURES)
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pareto_front_and_statistics():
    # (params, error): the 3rd is beaten by the 2nd (cheaper and better), the 4th is the best at its size.
    assert pareto_front([(1, 9.0), (2, 7.0), (3, 8.0), (4, 6.5)]) == [0, 1, 3]
    assert mean_std([0.5]) == (0.5, None) and mean_std([]) == (None, None)
    assert mean_std([0.1, 0.3])[1] == pytest.approx(statistics.stdev([0.1, 0.3]))


def test_paper_reference_numbers_match_table6_and_our_models():
    from src.models import build_model
    from src.models.complexity import count_flops, count_parameters

    errors = {result.depth: result.test_error for result in CIFAR10_TABLE6}
    assert errors == {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
    resnet110 = next(result for result in CIFAR10_TABLE6 if result.depth == 110)
    assert (resnet110.mean_error, resnet110.std_error) == (6.61, 0.16)
    for result in CIFAR10_TABLE6[:5]:  # 1202 is slow to build; its counts are in the README's model table
        model = build_model(f"resnet{result.depth}", 10)
        assert count_parameters(model) == result.params
        assert count_flops(model, (3, 32, 32)) // 2 == result.macs


def test_runs_with_training_diagnostics_get_depth_profile_figures(tiny_study, tmp_path):
    """diagnostics.jsonl in finished runs -> one gradient-norm and one branch-ratio figure, linked from report.md."""
    root = tmp_path / "with_diagnostics"
    shutil.copytree(tiny_study, root)
    for variant, scale in (("resnet8", 1.0), ("plain8", 0.1)):
        records = [{"step": step, "grad_rms": [scale * (i + 1) for i in range(3)], "grad_to_weight": [0.1] * 3,
                    "branch_to_shortcut": [0.5, 0.4, 0.3], "stage": [1, 2, 3], "residual": [scale == 1.0] * 3}
                   for step in (0, 2)]  # fmt: skip
        (root / variant / "seed0" / "diagnostics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for name in ("diagnostics_grad_rms.png", "diagnostics_grad_to_weight.png", "diagnostics_branch_to_shortcut.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE and f"]({name})" in text
    assert not (tmp_path / "plain_report" / "diagnostics_grad_rms.png").exists()
    assert main([str(tiny_study), "--out", str(tmp_path / "plain_report")]) == 0  # no diagnostics: no such figure
    assert not (tmp_path / "plain_report" / "diagnostics_grad_rms.png").exists()


def test_lesion_and_pruning_figures_of_the_runs_are_linked(tiny_study, tmp_path):
    root = tmp_path / "with_tools"
    shutil.copytree(tiny_study, root)
    (root / "resnet8" / "seed0" / "lesion").mkdir()
    (root / "resnet8" / "seed0" / "lesion" / "lesion.png").write_bytes(PNG_SIGNATURE)
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Block lesions and pruning" in text
    assert "![resnet8/seed0: block lesions](../with_tools/resnet8/seed0/lesion/lesion.png)" in text
    assert "pruning sweep" not in text  # no run has a prune.png


# ------------------------------------------------------------------------------------------------ written runs
# Runs written with known accuracies (tests/study_runs.write_run): statistics checked against closed forms.

T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t quantile, df = 2, closed form: (2p - 1) / sqrt(2 p (1 - p))


def t2_two_sided_p(t):
    """Two-sided p of Student's t with 2 degrees of freedom: its CDF is 1/2 + t / (2 sqrt(2 + t^2))."""
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def read_csv(path):
    return list(csv.DictReader(path.open()))


def run_report(root, *args):
    out = root / "report"
    assert main([str(root), "--out", str(out), *args]) == 0
    rows = {row["variant"]: row for row in read_csv(out / "report.csv")}
    return out, rows, (out / "report.md").read_text()


def test_interval_and_welch_test_match_the_t_formula_even_when_the_seeds_match(tmp_path):
    """3 seeds each, the same seeds: still Welch (one seed does not give two networks the same draws); the
    t-interval of the mean and the test, both by hand."""
    residual, plain = [0.80, 0.82, 0.87], [0.70, 0.75, 0.74]
    for seed, (r, p) in enumerate(zip(residual, plain)):
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, r, 269_722)
        write_run(tmp_path / "plain20" / f"seed{seed}", "plain20", seed, p, 269_722)
    out, rows, text = run_report(tmp_path)
    row = rows["resnet20"]
    mean = sum(residual) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in residual) / 2)  # ddof = 1: 0.036056
    assert float(row["test_acc_std"]) == pytest.approx(std)
    assert float(row["test_acc_ci_low"]) == pytest.approx(mean - T975_DF2 * std / math.sqrt(3))
    assert float(row["test_acc_ci_high"]) == pytest.approx(mean + 0.089566, abs=1e-6)
    assert float(row["test_binomial_se"]) == pytest.approx(math.sqrt(mean * (1 - mean) / 10_000))
    # Variances 0.0013 and 0.0007: se = sqrt(0.0013 / 3 + 0.0007 / 3), t = 0.10 / se = 3.873, Welch df 3.67.
    (comparison,) = read_csv(out / "report_comparisons.csv")
    se = math.sqrt(0.0013 / 3 + 0.0007 / 3)
    t, df = 0.10 / se, se**4 / ((0.0013 / 3) ** 2 / 2 + (0.0007 / 3) ** 2 / 2)
    assert comparison["test"] == "Welch t" and (comparison["residual"], comparison["plain"]) == ("resnet20", "plain20")
    assert float(comparison["statistic"]) == pytest.approx(t)
    assert float(comparison["p_value"]) == pytest.approx(2 * stats.t.sf(t, df))  # 0.0211
    assert float(comparison["effect_size"]) == pytest.approx(0.10 / math.sqrt(0.001) * (1 - 3 / 15))  # Hedges' g
    # n = 3 and p < 0.05: the summary may state a direction.
    assert "the residual net's test accuracy is higher by 10.00 points (Welch t p = 0.021" in text


def test_welch_test_and_hedges_g_when_seeds_differ(tmp_path):
    """2 seeds each, different seeds, equal spread: Welch's df is exactly 2, so p has a closed form."""
    for seed, acc in ((0, 0.80), (1, 0.84)):
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, acc, 269_722)
    for seed, acc in ((2, 0.70), (3, 0.74)):
        write_run(tmp_path / "plain20" / f"seed{seed}", "plain20", seed, acc, 269_722)
    out, _, text = run_report(tmp_path)
    (comparison,) = read_csv(out / "report_comparisons.csv")
    t = 0.10 / math.sqrt(0.0008 / 2 + 0.0008 / 2)  # both variances 0.0008
    assert comparison["test"] == "Welch t"
    assert float(comparison["p_value"]) == pytest.approx(t2_two_sided_p(t))  # 0.0715
    assert float(comparison["effect_size"]) == pytest.approx(0.10 / math.sqrt(0.0008) * (1 - 3 / (4 * 4 - 9)))
    assert "not distinguishable with n = 2" in text and "higher by" not in text


def write_curve(run_dir, train_acc):
    """The run's curves as a results run keeps them (``metrics.csv``): train/acc ends at ``train_acc``."""
    rows = ["step,tag,value", "100,train/acc,0.5", f"200,train/acc,{train_acc}"]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_depth_within_a_line_tests_the_papers_two_findings(tmp_path):
    """Plain-56 against plain-20 (3 seeds): lower test AND final training accuracy, each a Welch t by hand (the
    same seed gives two depths other weights and another data order: never paired)."""
    plain20 = {"test": [0.82, 0.81, 0.83], "train": [0.85, 0.86, 0.84]}
    plain56 = {"test": [0.55, 0.60, 0.58], "train": [0.55, 0.58, 0.57]}
    for depth, accs in ((20, plain20), (56, plain56)):
        for seed in range(3):
            params = 269_722 if depth == 20 else 853_018
            arch = f"plain{depth}"
            run = write_run(tmp_path / arch / f"seed{seed}", arch, seed, accs["test"][seed], params)
            write_curve(run, accs["train"][seed])
    out, rows, text = run_report(tmp_path)
    assert float(rows["plain56"]["final_train_acc_mean"]) == pytest.approx(statistics.mean(plain56["train"]))
    assert float(rows["plain20"]["final_train_acc_std"]) == pytest.approx(statistics.stdev(plain20["train"]))
    (depth,) = read_csv(out / "report_depth.csv")
    assert (depth["deeper"], depth["shallower"], depth["test_test"]) == ("plain56", "plain20", "Welch t")
    for name in ("test", "train"):
        deep, shallow = plain56[name], plain20[name]
        va, vb = statistics.variance(deep), statistics.variance(shallow)
        se = math.sqrt(va / 3 + vb / 3)
        t = (statistics.mean(deep) - statistics.mean(shallow)) / se
        df = se**4 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)  # Welch-Satterthwaite
        assert float(depth[f"{name}_difference_acc"]) == pytest.approx(statistics.mean(deep) - statistics.mean(shallow))
        assert float(depth[f"{name}_statistic"]) == pytest.approx(t)
        assert float(depth[f"{name}_p_value"]) == pytest.approx(2 * stats.t.sf(abs(t), df))
    # Test accuracy 24.33 points lower, p < 0.05 with n = 3, so the summary may say "lower".
    assert "`plain56` against `plain20`: the deeper net's test accuracy is lower by 24.33 points" in text
    assert "the deeper net's final training accuracy is lower by 28.33 points" in text
    assert "## Depth within a line" in text and "| plain | `plain56` | `plain20` | 3/3 |" in text


def test_a_run_without_curves_has_no_training_accuracy_and_says_so(tmp_path):
    """Two depths, curves missing: the training comparison has no numbers, the test comparison still stands."""
    for depth, params in ((20, 269_722), (56, 853_018)):
        for seed, acc in enumerate((0.80, 0.82)):
            write_run(tmp_path / f"resnet{depth}" / f"seed{seed}", f"resnet{depth}", seed, acc + depth / 1000, params)
    out, rows, text = run_report(tmp_path)
    assert rows["resnet56"]["final_train_acc_mean"] == "" and rows["resnet56"]["n_train"] == "0"
    (depth,) = read_csv(out / "report_depth.csv")
    assert depth["train_p_value"] == "" and "needs two seeds on each side (n = 0, 0)" in depth["train_note"]
    assert float(depth["test_difference_acc"]) == pytest.approx(0.036)


def write_power_law_line(
    root, irreducible=0.0, exponent=0.4, depths=(20, 32, 44), kind="resnet", factors=(0.98, 1.0, 1.02)
):
    """Error (%) = irreducible + 30 (params / 1e5)^-exponent at the mean; the seeds spread by ``factors``."""
    sizes = {}
    for depth in depths:
        params = 1e5 * 2 ** ((depth - 20) / 12)
        error = irreducible + 30.0 * (params / 1e5) ** -exponent
        sizes[depth] = (int(params), error)
        for seed, factor in enumerate(factors):
            accuracy = 1.0 - error * factor / 100.0
            write_run(root / f"{kind}{depth}" / f"seed{seed}", f"{kind}{depth}", seed, accuracy, int(params))
    return sizes


def test_power_law_exponent_is_recovered_with_a_bootstrap_interval(tmp_path):
    write_power_law_line(tmp_path)
    out, _, text = run_report(tmp_path)
    (line,) = read_csv(out / "report_lines.csv")
    assert line["line"] == "resnet" and line["sizes"] == "3"
    assert float(line["fit_b"]) == pytest.approx(0.4, abs=1e-3)  # params rounded to integers
    assert float(line["fit_b_ci_low"]) <= 0.4 <= float(line["fit_b_ci_high"])
    assert line["fit_c"] == ""  # three sizes: no irreducible term
    low, high = -float(line["fit_b_ci_high"]), -float(line["fit_b_ci_low"])  # the exponent printed is -b
    assert (
        f"Along resnet, test error falls as params^-0.40 over 3 sizes (95% parametric-bootstrap interval of the "
        f"exponent {low:+.2f} to {high:+.2f})." in text
    )


def test_irreducible_term_with_four_sizes(tmp_path):
    write_power_law_line(tmp_path, irreducible=5.0, depths=(20, 32, 44, 56, 68))
    out, _, _ = run_report(tmp_path)
    (line,) = read_csv(out / "report_lines.csv")
    assert float(line["fit_b"]) == pytest.approx(0.4, abs=0.01)
    assert float(line["fit_c"]) == pytest.approx(5.0, abs=0.05)


def test_size_to_reach_a_target_is_interpolated_in_log_size(tmp_path):
    sizes = write_power_law_line(tmp_path)
    (p1, e1), (p2, e2) = sizes[20], sizes[32]
    target = 1 - (e1 + e2) / 2 / 100  # halfway in accuracy between the two smallest sizes
    out, _, text = run_report(tmp_path, "--target-acc", str(target))
    (line,) = read_csv(out / "report_lines.csv")
    expected = math.exp(math.log(p1) + 0.5 * (math.log(p2) - math.log(p1)))
    assert float(line["params_to_target"]) == pytest.approx(expected)
    assert line["params_to_target_how"].startswith("interpolated [95% CI ")  # with its interval, or not at all
    assert "given with --target-acc" in text


def test_a_rising_line_is_called_rising_never_flattened(tmp_path):
    """A plain net that degrades with depth: error grows with size, and the sentence says so."""
    write_power_law_line(tmp_path, exponent=-0.5, kind="plain")
    out, _, text = run_report(tmp_path)
    (line,) = read_csv(out / "report_lines.csv")
    assert float(line["fit_b"]) == pytest.approx(-0.5, abs=1e-3) and float(line["fit_b_ci_high"]) < 0
    assert "Along plain, test error rises as params^+0.50" in text and "falls" not in text.split("Along plain")[1][:60]
    low = -float(line["fit_b_ci_high"])
    assert low > 0 and f"interval of the exponent {low:+.2f} to +" in text  # its interval in the printed sign


def test_a_rising_line_of_four_sizes_gets_no_irreducible_floor(tmp_path):
    write_power_law_line(tmp_path, exponent=-0.3, depths=(20, 32, 44, 56), kind="plain")
    out, _, text = run_report(tmp_path)
    (line,) = read_csv(out / "report_lines.csv")
    assert float(line["fit_b"]) == pytest.approx(-0.3, abs=1e-3) and line["fit_c"] == ""
    assert "rises as params^+0.30" in text


def test_a_flat_noisy_line_says_no_clear_trend(tmp_path):
    for depth, errors in ((20, (14, 20, 17)), (32, (19, 15, 16)), (44, (16, 18, 14))):
        params = int(1e5 * 2 ** ((depth - 20) / 12))
        for seed, error in enumerate(errors):
            write_run(tmp_path / f"resnet{depth}" / f"seed{seed}", f"resnet{depth}", seed, 1 - error / 100, params)
    _, _, text = run_report(tmp_path)
    assert "Along resnet, test error shows no clear trend with size" in text


def test_two_seeds_per_size_identify_no_fit_and_no_size_to_target(tmp_path):
    write_power_law_line(tmp_path, factors=(0.98, 1.02))
    out, _, text = run_report(tmp_path, "--target-acc", "0.8")
    (line,) = read_csv(out / "report_lines.csv")
    assert line["fit_b"] == "" and line["fit_note"] == "not identified: fewer than 3 seeds at every size"
    assert line["params_to_target"] == "" and "fewer than 3 seeds" in line["params_to_target_how"]
    assert "falls as" not in text and "rises as" not in text
    assert "Along resnet, no size-scaling fit: not identified: fewer than 3 seeds at every size." in text


def test_one_two_seed_size_keeps_the_fit_but_gives_no_interval(tmp_path):
    write_power_law_line(tmp_path)
    for name in ("config.yaml", "efficiency.json"):
        (tmp_path / "resnet44" / "seed2" / name).unlink()
    (tmp_path / "resnet44" / "seed2").rmdir()
    out, _, _ = run_report(tmp_path)
    (line,) = read_csv(out / "report_lines.csv")
    assert line["fit_b"] != "" and line["fit_b_ci_low"] == ""
    assert line["fit_note"] == "no interval on b: a size has fewer than 3 seeds"


def test_a_zero_spread_never_prints_a_zero_width_interval():
    from src.reporting.statistics import summarize

    summary = summarize([0.8, 0.8, 0.8])
    assert (
        (summary.n, summary.mean, summary.std) == (3, 0.8, 0.0) and summary.ci_low is None and summary.ci_high is None
    )


def test_a_target_no_line_reaches_is_said_in_words(tmp_path):
    write_power_law_line(tmp_path)
    out, _, text = run_report(tmp_path, "--target-acc", "0.99")
    assert "Target accuracy 99.00% (given with --target-acc): not reached by resnet at any tested size." in text
    (line,) = read_csv(out / "report_lines.csv")
    assert line["params_to_target"] == "" and line["params_to_target_how"] == "not reached"
    assert all((out / figure).read_bytes()[:8] == PNG_SIGNATURE for figure in FIGURES)


def test_bad_target_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--target-acc", "90"])
    assert "'90' is not an accuracy: give a fraction in (0, 1)" in capsys.readouterr().err


def test_variants_come_from_configs_not_folders(tmp_path):
    """One logger name, five versions: two architectures and two widths at one depth are never averaged."""
    logs = tmp_path / "lightning_logs" / "default"

    def run(version, arch, seed, acc, params, width):
        run_dir = logs / f"version_{version}"
        config = resolved_config(arch, seed, run_dir, **{"model.width": width})
        write_run(run_dir, arch, seed, acc, params, config=config)

    run(0, "resnet8", 0, 0.60, 75_290, 1)
    run(1, "plain20", 0, 0.65, 269_722, 1)
    run(2, "resnet8", 0, 0.70, 300_000, 2)
    run(3, "resnet8", 1, 0.72, 300_000, 2)
    run(4, "resnet20", 0, 0.75, 269_722, 1)
    _, rows, text = run_report(tmp_path)
    assert set(rows) == {"resnet8 width=1", "resnet8 width=2", "plain20 width=1", "resnet20 width=1"}
    assert rows["resnet8 width=2"]["n"] == "2" and rows["resnet8 width=1"]["n"] == "1"
    assert float(rows["resnet8 width=2"]["test_acc_mean"]) == pytest.approx(0.71)
    assert rows["resnet8 width=2"]["line"] == "resnet width=2" and rows["resnet20 width=1"]["line"] == "resnet width=1"
    # The marginal column compares along a line only: resnet20 against the narrow resnet8, never the wide one.
    assert rows["resnet20 width=1"]["marginal_from"] == "resnet8 width=1"
    gain = 100 * (0.75 - 0.60) / ((269_722 - 75_290) / 1e6)
    assert float(rows["resnet20 width=1"]["marginal_pp_per_extra_mparam"]) == pytest.approx(gain)
    assert rows["resnet8 width=2"]["marginal_from"] == ""
    assert "default" not in rows and "Missing" not in text  # version_N folders are not seeds


def test_an_option_added_after_older_runs_does_not_split_their_seeds(tmp_path):
    """Seed 0 saved before `data.init_args.fast_max_gb` existed, seeds 1-2 after: one variant, n = 3."""
    for seed, acc in enumerate((0.80, 0.81, 0.83)):
        run_dir = tmp_path / "resnet20" / f"seed{seed}"
        config = resolved_config("resnet20", seed, run_dir)
        if seed:
            config["data"]["init_args"]["fast_max_gb"] = 8.0
        write_run(run_dir, "resnet20", seed, acc, 269_722, config=config)
    _, rows, _ = run_report(tmp_path)
    assert list(rows) == ["resnet20"] and rows["resnet20"]["n"] == "3"


def test_a_new_option_set_to_two_values_still_splits_the_runs(tmp_path):
    """Newer runs that set the new option differently are different variants; the older run stays apart."""
    for seed, value in ((0, None), (1, 4.0), (2, 8.0)):
        run_dir = tmp_path / "resnet20" / f"seed{seed}"
        config = resolved_config("resnet20", seed, run_dir)
        if value is not None:
            config["data"]["init_args"]["fast_max_gb"] = value
        write_run(run_dir, "resnet20", seed, 0.8, 269_722, config=config)
    _, rows, _ = run_report(tmp_path)
    assert sorted(rows) == ["resnet20 fast_max_gb=4.0", "resnet20 fast_max_gb=8.0", "resnet20 fast_max_gb=unset"]


def test_seeds_never_average_runs_that_differ_in_lr(tmp_path):
    for seed, lr, acc in ((0, 0.1, 0.9), (1, 0.01, 0.5)):
        run_dir = tmp_path / "resnet20" / f"seed{seed}"
        config = resolved_config("resnet20", seed, run_dir, **{"model.optimizer.init_args.lr": lr})
        write_run(run_dir, "resnet20", seed, acc, 269_722, config=config)
    _, rows, _ = run_report(tmp_path)
    assert set(rows) == {"resnet20 lr=0.1", "resnet20 lr=0.01"}
    assert {row["n"] for row in rows.values()} == {"1"}


def test_diverged_and_nan_runs_are_listed_apart_never_averaged(tmp_path):
    for seed, acc in ((0, 0.90), (1, 0.92)):
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, acc, 269_722)
    # Diverged at step 17, yet it has a (meaningless) test accuracy that would be the best of the study's size.
    write_run(tmp_path / "resnet20" / "seed2", "resnet20", 2, 0.129, 269_722, status="diverged", diverged_step=17,
              diverged_reason="train/loss is nan")  # fmt: skip
    write_run(tmp_path / "plain20" / "seed0", "plain20", 0, float("nan"), 269_722, status=None)  # NaN, no status
    write_run(tmp_path / "plain20" / "seed1", "plain20", 1, 0.80, 269_722)
    out, rows, text = run_report(tmp_path)
    assert rows["resnet20"]["n"] == "2" and float(rows["resnet20"]["test_acc_mean"]) == pytest.approx(0.91)
    assert rows["plain20"]["n"] == "1" and rows["plain20"]["seeds"] == "1"
    assert "Runs: 3 finished (tested), 2 diverged, 0 unfinished, 1 missing." in text  # plain20 lacks a seed 2
    assert "**Diverged** (2; never averaged, never on a frontier)" in text
    assert "- `resnet20/seed2` at step 17: train/loss is nan" in text
    assert "- `plain20/seed0` at step 64000: test accuracy is nan" in text
    assert "2 run(s) diverged and are excluded from every number" in text
    assert run_status(tmp_path / "resnet20" / "seed2") == "diverged"


def test_provenance_is_listed_and_a_different_commit_flagged(tmp_path):
    for seed, commit in ((0, "a" * 40), (1, "a" * 40), (2, "b" * 40)):
        provenance = {"git_commit": commit, "git_dirty": seed == 1, "device": "NVIDIA H200", "config_sha256": "c" * 64}
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, 0.9, 269_722, provenance=provenance)
    _, _, text = run_report(tmp_path)
    assert f"Majority commit: `{'a' * 12}` (runs trained at another commit are flagged)." in text
    assert f"| `resnet20/seed2` | finished | `{'b' * 12}` | False | NVIDIA H200 | `{'c' * 12}` " in text
    assert "| **commit differs from the majority** |" in text
    assert text.count("commit differs from the majority") == 1 and text.count("**uncommitted changes**") == 1


def test_runs_each_at_their_own_commit_have_no_majority_and_no_flag(tmp_path):
    """A study that commits each finished run trains every run at its own commit: no run is the odd one out."""
    for seed, commit in ((0, "a" * 40), (1, "b" * 40), (2, "c" * 40), (3, "a" * 40)):
        provenance = {"git_commit": commit, "git_dirty": False, "device": "cpu", "config_sha256": "d" * 64}
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, 0.9, 269_722, provenance=provenance)
    _, _, text = run_report(tmp_path)
    assert "Majority commit" not in text and "commit differs from the majority" not in text  # 2 of 4 is no majority
    assert "The runs were trained at 3 commits, none shared by more than half of them" in text


def test_paper_overlay_only_for_the_papers_protocol(tmp_path):
    """CIFAR-10, all 50k images, final model on the test split, 64k steps at batch 128: overlay; else only forced."""
    paper = tmp_path / "paper"
    write_run(paper / "resnet20" / "seed0", "resnet20", 0, 0.9125, 269_722)
    write_run(paper / "plain20" / "seed0", "plain20", 0, 0.90, 269_722)  # same protocol; Table 6 has no plain nets
    _, _, text = run_report(paper)
    assert "Black marks: He et al. 2016, Table 6" in text and "6.61 ± 0.16" in text and "Different protocol" not in text
    assert "its best run, 6.43, is a grey cross and is not a mean" in text
    assert "data: CIFARDataModule/cifar10 at data" in text
    assert "test: official test split, final checkpoint" in text
    assert "schedule: MultiStepLR (milestones [32000, 48000], gamma 0.1)" in text
    assert "precision: 16-mixed" in text and "max_steps 64000, 64000 steps trained, global batch 128" in text
    short = tmp_path / "short"
    run_dir = short / "resnet20" / "seed0"
    config = resolved_config(
        "resnet20", 0, run_dir, **{"data.init_args.val_size": 5000, "checkpoint.monitor": "val/acc"}
    )
    write_run(run_dir, "resnet20", 0, 0.85, 269_722, config=config, global_step=2000,
              test_ckpt_path="checkpoints/epoch005-step1800-val_acc0.85.ckpt")  # fmt: skip
    _, _, text = run_report(short)
    assert "Table 6 is not overlaid" in text and "trained on 45,000 of the 50,000 images" in text
    assert "2000 steps at batch 128" in text and "tested the best checkpoint by val/acc" in text
    _, _, text = run_report(short, "--paper", "force")
    assert "**Different protocol**: the overlay was forced" in text


def test_a_run_that_tested_its_final_weights_says_so_not_best_checkpoint(tmp_path):
    """``test_ckpt_path: null``: the test after fit found no checkpoint to load (a fit without validation,
    ``--trainer.limit_val_batches 0``) and scored the final weights, whatever the config's monitor. Seeds of one
    study tested differently get one protocol line each, with their counts."""
    ckpt = {"checkpoint.monitor": "val/acc", "data.init_args.val_size": 5000}
    for seed, tested in ((0, None), (1, "checkpoints/epoch005-step1800-val_acc0.85.ckpt"), (2, None)):
        run_dir = tmp_path / "resnet20" / f"seed{seed}"
        config = resolved_config("resnet20", seed, run_dir, **ckpt)
        write_run(run_dir, "resnet20", seed, 0.85, 269_722, config=config, test_ckpt_path=tested)
    _, _, text = run_report(tmp_path)
    budget = [line for line in text.splitlines() if line.startswith("- data: ")]
    assert len(budget) == 2
    (final,) = [line for line in budget if "test: official test split, final weights (no checkpoint loaded);" in line]
    assert final.endswith("(2 runs: resnet20)") and "best checkpoint" not in final
    (best,) = [line for line in budget if "test: official test split, best checkpoint by val/acc;" in line]
    assert best.endswith("(1 runs: resnet20)")


def test_final_weights_are_the_papers_test_protocol():
    """He et al. test the weights training ended with: a run that tested its final weights does not differ there."""
    config = resolved_config("resnet20", 0, Path("run"), **{"checkpoint.monitor": "val/acc"})
    report = {"test_acc": 0.9, "test_ckpt_path": None, "global_step": 64000, "global_batch_size": 128}
    split, checkpoint = protocol.test_protocol(config, report, None)
    assert (split, checkpoint) == ("official test split", "final weights (no checkpoint loaded)")
    assert protocol_differences(config, report, None, split, checkpoint) == []


def test_pareto_marks_sit_on_the_shifted_points(tmp_path, monkeypatch):
    from matplotlib.collections import PathCollection

    from src.reporting import figures as report_figures

    for arch, acc in (("resnet20", 0.90), ("plain20", 0.88), ("resnet32", 0.92)):
        write_run(tmp_path / arch / "seed0", arch, 0, acc, 269_722 if arch.endswith("20") else 464_154)
    from src.reporting.records import collect_runs
    from src.reporting.study_rows import aggregate

    rows = aggregate(collect_runs(tmp_path))
    figures = []
    monkeypatch.setattr(report_figures.plt, "close", figures.append)
    report_figures.plot_error_vs_cost(rows, "params", tmp_path / "f.png")
    (ax,) = figures[0].axes
    means = {tuple(point) for line in ax.lines if line.get_marker() in ("o", "s") for point in line.get_xydata()}
    circles = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_sizes()[0] == 170]
    marked = {tuple(point) for point in circles[0].get_offsets()}
    # resnet20 and resnet32 are on the frontier; plain20 (same size, higher error) is not.
    assert len(marked) == 2 and marked <= means
    assert all(x != 269_722 for x, _ in marked)  # drawn where the (shifted) series point is


def test_only_nan_and_one_seed_one_size_runs_still_give_every_file(tmp_path):
    """Bad input: a NaN accuracy, one seed, one size; the report says so in words and writes everything else."""
    write_run(tmp_path / "plain20" / "seed0", "plain20", 0, float("nan"), 269_722, status="diverged", diverged_step=3)
    out, rows, text = run_report(tmp_path)
    assert rows == {} and "No finished run with a finite test accuracy: nothing to compare yet." in text
    assert "_No target accuracy: no line has a tested run._" in text and "`plain20/seed0` at step 3" in text
    write_run(tmp_path / "resnet20" / "seed0", "resnet20", 0, 0.9, 269_722)
    out, rows, text = run_report(tmp_path)
    assert list(rows) == ["resnet20"] and rows["resnet20"]["test_acc_ci_low"] == ""
    assert "One seed only, so no interval and no test: `resnet20`." in text
    assert "Line resnet has one size: no fit, no marginal slope, no interpolation." in text
    (line,) = read_csv(out / "report_lines.csv")
    assert line["fit_note"] == "1 size with a tested run: a fit needs two"
    assert read_csv(out / "report_comparisons.csv") == []  # its plain twin diverged: nothing to compare
    for name in (*FIGURES, "report.csv", "report_lines.csv", "report_comparisons.csv"):
        assert (out / name).stat().st_size > 0, name


def test_protocol_of_a_folder_run_comes_from_its_data_json(tmp_path):
    run_dir = tmp_path / "resnet20" / "seed0"
    config = resolved_config("resnet20", 0, run_dir, **{"checkpoint.monitor": "val/acc"})
    config["data"] = {"class_path": "src.data.ImageFolderDataModule", "init_args": {"root": "jpeg", "batch_size": 128}}
    write_run(run_dir, "resnet20", 0, 0.85, 269_722, config=config, test_samples=5000)
    record = {"root": "/data/cifar10-jpeg", "split_sizes": {"train": 45000, "val": 5000}, "test_source": "val"}
    (run_dir / "data.json").write_text(json.dumps(record))
    _, _, text = run_report(tmp_path)
    assert (
        "data: ImageFolderDataModule at /data/cifar10-jpeg; splits: train 45,000, val 5,000; 5,000 test images" in text
    )
    assert "test: held-out validation split (also picks the checkpoint), best checkpoint by val/acc" in text
    assert "tested on the held-out validation split" in text  # why Table 6 is not overlaid


def test_protocol_of_a_folder_run_with_a_held_out_test_split(tmp_path):
    run_dir = tmp_path / "resnet20" / "seed0"
    config = resolved_config("resnet20", 0, run_dir, **{"checkpoint.monitor": "val/acc"})
    config["data"] = {"class_path": "src.data.ImageFolderDataModule", "init_args": {"root": "jpeg", "test_split": 5000}}
    write_run(run_dir, "resnet20", 0, 0.85, 269_722, config=config, test_samples=5000)
    sizes = {"train": 40000, "val": 5000, "test": 5000}
    record = {"root": "/data/cifar10-jpeg", "split_sizes": sizes, "test_source": "split of train (5000)"}
    (run_dir / "data.json").write_text(json.dumps(record))
    _, _, text = run_report(tmp_path)
    assert "test: test split of train (5000) (held out before validation; never selects), best checkpoint" in text
    assert "also picks the checkpoint" not in text


def test_a_later_test_of_a_run_never_replaces_its_fit_record(tmp_path):
    """Runs made before evaluations/ existed: `test --run_dir` wrote efficiency-1.json (stage test) beside the fit's."""
    run_dir = write_run(tmp_path / "resnet20" / "seed0", "resnet20", 0, 0.90, 269_722, stage="fit")
    later = {"arch": "resnet20", "params_total": 269_722, "test_acc": 0.10, "stage": "test", "status": "finished"}
    (run_dir / "efficiency-1.json").write_text(json.dumps(later))
    out, _, _ = run_report(tmp_path)
    (row,) = read_csv(out / "report.csv")
    assert float(row["test_acc_mean"]) == pytest.approx(0.90)


def test_a_run_without_config_yaml_is_named_apart_and_renames_nothing(tmp_path):
    write_run(tmp_path / "resnet20" / "seed0", "resnet20", 0, 0.90, 269_722)
    write_run(tmp_path / "resnet20" / "seed1", "resnet20", 1, 0.92, 269_722)
    write_run(tmp_path / "old" / "seed0", "resnet20", 0, 0.50, 269_722)
    (tmp_path / "old" / "seed0" / "config.yaml").unlink()
    _, rows, _ = run_report(tmp_path)
    assert set(rows) == {"resnet20", "resnet20 [no config.yaml: old]"}
    assert rows["resnet20"]["n"] == "2" and rows["resnet20 [no config.yaml: old]"]["n"] == "1"


def test_comparison_intervals_are_those_of_the_paired_and_welch_tests():
    """compare()'s 95% interval of the difference: the paired differences' t-interval, or Welch's (df by
    Welch-Satterthwaite), each equal to the interval SciPy's own test result gives."""
    a, b = [10.0, 12.0, 14.0], [9.0, 10.0, 12.5]
    paired = compare(a, b, [0, 1, 2], [0, 1, 2])
    assert paired.test == "paired t"
    assert paired.ci == pytest.approx(tuple(stats.ttest_rel(a, b).confidence_interval(0.95)))
    welch = compare(a, b[:2])  # no seeds: Welch; mean 12 - 9.5, se^2 = 4/3 + 0.5/2
    assert welch.test == "Welch t" and welch.difference == pytest.approx(2.5)
    assert welch.ci == pytest.approx(tuple(stats.ttest_ind(a, b[:2], equal_var=False).confidence_interval(0.95)))
    assert compare([1.0], [2.0, 3.0]).ci is None  # no test, no interval


def test_a_study_file_reports_its_planned_runs_only_and_lists_what_it_left_out(tmp_path):
    """A second study nested in the first one's folder: its runs are listed as outside, never counted."""
    root = tmp_path / "logs" / "s"
    for seed in (0, 1, 2):
        write_run(root / "resnet8" / f"seed{seed}", "resnet8", seed, 0.8 + seed / 100, 75_290)
    for seed in (0, 1, 2):
        write_run(root / "nested" / "plain8" / f"seed{seed}", "plain8", seed, 0.5, 74_778)
    study_file = tmp_path / "s.yaml"
    study_file.write_text(yaml.safe_dump({"name": "s", "root": str(tmp_path / "logs"), "configs": [QUICKSTART],
                                          "archs": ["resnet8"], "seeds": [0, 1, 2]}))  # fmt: skip
    assert main([str(study_file), "--out", str(tmp_path / "out")]) == 0
    rows = read_csv(tmp_path / "out" / "report.csv")
    assert [row["variant"] for row in rows] == ["resnet8"] and rows[0]["n"] == "3"
    text = (tmp_path / "out" / "report.md").read_text()
    assert "3 outside the study's plan (left out)" in text
    assert "**Outside** (3; run directories under the study's folder that its study file does not plan" in text
    assert "nested/plain8" in text


def test_the_marginal_gain_carries_a_95_percent_welch_interval_or_none(tmp_path):
    """Per extra Mparam: the Welch interval of the difference of the two sizes' means, divided by the extra size;
    two sizes whose seeds do not vary print no interval (never "± 0.00")."""
    sizes = write_power_law_line(tmp_path, depths=(20, 32))
    out, _, text = run_report(tmp_path)
    rows = {row["variant"]: row for row in read_csv(out / "report.csv")}
    small = [1 - sizes[20][1] * f / 100 for f in (0.98, 1.0, 1.02)]
    big = [1 - sizes[32][1] * f / 100 for f in (0.98, 1.0, 1.02)]
    welch = stats.ttest_ind(big, small, equal_var=False).confidence_interval(0.95)
    extra = (sizes[32][0] - sizes[20][0]) / 1e6
    assert float(rows["resnet32"]["marginal_pp_per_extra_mparam_ci_low"]) == pytest.approx(100 * welch.low / extra)
    assert float(rows["resnet32"]["marginal_pp_per_extra_mparam_ci_high"]) == pytest.approx(100 * welch.high / extra)
    assert "| Marginal: pp / extra Mparam [95% Welch CI] |" in text
    flat = tmp_path / "flat"
    write_power_law_line(flat, depths=(20, 32), factors=(1.0, 1.0, 1.0))
    out, _, text = run_report(flat)
    (row,) = [line for line in text.splitlines() if line.startswith("| `resnet32` |")]
    assert row.endswith(" (no interval) (vs resnet20) |")  # not a zero-width [x, x]

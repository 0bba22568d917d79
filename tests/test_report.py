"""``python -m src.report``: the study's table and figures from tiny real runs (tests/study_runs.py)."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import struct

import pytest
import yaml

from src.report import main
from src.study.paper import CIFAR10_TABLE6
from src.study.report_figures import pareto_front
from src.study.report_tables import mean_std
from src.study.runs_io import read_scalars, run_status
from tests.study_runs import QUICKSTART, STUDY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("test_error_vs_params.png", "test_error_vs_macs.png", "training_curves.png")


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
        assert (row["n"], row["n_test"], row["n_val"], row["seeds"]) == ("2", "2", "2", "0 1")
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
    assert float(r8["test_acc_per_mparam"]) == pytest.approx(mean8 / (small["params_total"] / 1e6))
    assert float(r8["test_acc_per_gmac"]) == pytest.approx(mean8 / (small["macs_per_sample"] / 1e9))
    # ResNet-14 is the next depth of ResNet-8's line; points gained per extra million parameters / GMACs.
    gain = 100 * (big["test_acc"] - mean8)
    assert r14["marginal_from"] == "resnet8"
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
    assert "| `resnet8` | A | 75,290 | 3.06M | 2 | " in text
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in text
    assert "Runs: 5 finished (tested), 1 unfinished, 2 missing." in text
    assert "**Unfinished** (1;" in text and "`plain14/seed0`" in text
    # Seed 1 exists for the other variants of the folder: the one-seed variants lack it.
    assert "**Missing** (2;" in text and "`resnet14/seed1`" in text and "`plain14/seed1`" in text
    for figure in FIGURES:
        assert f"]({figure})" in text
    assert "max_epochs 2" in text  # the budget the runs had


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
    assert "1 unfinished" in text  # plain14 is not in this study's plan, but its run exists


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

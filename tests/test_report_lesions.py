"""The report's lesions across seeds: per-seed numbers first, then the mean over seeds and its t-interval."""

from __future__ import annotations

import csv
import json
import math

import pytest

from src.report import main
from tests.study_runs import write_run

T_975_DF1 = 12.706204736174698  # scipy.stats.t.ppf(0.975, 1), written out so the test does not reuse the code's path


def write_lesion(run_dir, baseline, drops, random, settings=True, **recorded):
    """A lesion folder as ``python -m src.lesion`` writes it: blocks ``(removed, downsampling, drop or None)``."""
    folder = run_dir / "lesion"
    folder.mkdir(parents=True)
    rows = [dict(removed="none", block_index=-1, downsampling=False, acc=baseline, acc_drop=0.0)]
    for index, (removed, down, drop) in enumerate(drops):
        acc = "" if drop is None else baseline - drop
        rows.append(dict(removed=removed, block_index=index, downsampling=down, acc=acc, acc_drop="" if drop is None
                         else drop))  # fmt: skip
    with open(folder / "lesion.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(folder / "lesion_random_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["k", "n", "acc_mean"])
        writer.writeheader()
        writer.writerows({"k": k, "n": 3, "acc_mean": acc} for k, acc in random.items())
    if settings:
        record = {"command": f"python -m src.lesion {run_dir}/best.ckpt --k 1 4", "split": "test", "samples": 2560,
                  "k": [1, 4], "trials": 3, "seed": 0, "bn_reestimate": False, **recorded}  # fmt: skip
        (folder / "lesion.json").write_text(json.dumps(record))


def read_rows(path):
    return list(csv.DictReader(path.open()))


@pytest.fixture
def study(tmp_path):
    """resnet20 seeds 0 and 1 lesioned, plain20 seed 0 lesioned (a downsampling block it cannot remove), seed 1 not."""
    for seed in (0, 1):
        for arch in ("resnet20", "plain20"):
            write_run(tmp_path / arch / f"seed{seed}", arch, seed, 0.9, 269_722)
    write_lesion(tmp_path / "resnet20" / "seed0", 0.90, [("layer1.0", False, 0.02), ("layer1.1", False, 0.04),
                 ("layer2.0", True, 0.30)], {1: 0.87, 4: 0.60})  # fmt: skip
    write_lesion(tmp_path / "resnet20" / "seed1", 0.92, [("layer1.0", False, 0.01), ("layer1.1", False, 0.03),
                 ("layer2.0", True, 0.20)], {1: 0.90, 4: 0.70})  # fmt: skip
    write_lesion(tmp_path / "plain20" / "seed0", 0.88, [("layer1.0", False, 0.50), ("layer1.1", False, 0.60),
                 ("layer2.0", True, None)], {1: 0.30, 4: 0.10}, settings=False)  # fmt: skip
    return tmp_path


def test_lesion_summary_is_over_seeds_with_a_t_interval(study):
    assert main([str(study), "--out", str(study / "report")]) == 0
    rows = {(r["variant"], r["measure"], r["k"]): r for r in read_rows(study / "report" / "report_lesions.csv")}
    # resnet20: per-seed mean single drop 3.0 and 2.0 pp -> mean 2.5, std sqrt(0.5), interval t(0.975, 1) * 0.5.
    single = rows[("resnet20", "single_drop_mean", "")]
    assert (single["n_seeds"], single["seeds"]) == ("2", "0 1")
    assert float(single["mean"]) == pytest.approx(2.5)
    assert float(single["std"]) == pytest.approx(math.sqrt(0.5))
    assert float(single["ci_low"]) == pytest.approx(2.5 - T_975_DF1 * 0.5)
    assert float(rows[("resnet20", "single_drop_max", "")]["mean"]) == pytest.approx(3.5)
    # Median of (2, 4) and (1, 3): 3 and 2 -> 2.5; without the first block (layer1.0): 4 and 3 -> 3.5.
    assert float(rows[("resnet20", "single_drop_median", "")]["mean"]) == pytest.approx(2.5)
    assert float(rows[("resnet20", "single_drop_mean_without_first", "")]["mean"]) == pytest.approx(3.5)
    assert float(rows[("resnet20", "downsampling_drop_mean", "")]["mean"]) == pytest.approx(25.0)
    assert float(rows[("resnet20", "acc_random_k", "4")]["mean"]) == pytest.approx(65.0)
    assert float(rows[("resnet20", "intact_acc", "")]["mean"]) == pytest.approx(91.0)
    # plain20: one seed -> a number with no interval; its downsampling block could not be removed -> no row.
    plain = rows[("plain20", "single_drop_mean", "")]
    assert (plain["n_seeds"], float(plain["mean"]), plain["ci_low"]) == ("1", pytest.approx(55.0), "")
    assert ("plain20", "downsampling_drop_mean", "") not in rows

    text = (study / "report" / "report.md").read_text()
    assert "### Block lesions across seeds" in text
    low, high = 2.5 - T_975_DF1 * 0.5, 2.5 + T_975_DF1 * 0.5
    assert "| `resnet20` | 0, 1 | 91.00 [" in text and f"| 2.50 [{low:.2f}, {high:.2f}] |" in text
    assert "| `plain20` | 0 | 88.00 | 55.00 | 60.00 | 55.00 | 60.00 | — | 30.00 | 10.00 |" in text
    assert "- on 2,560 test images, k = [1, 4] × 3 seeded draws (draw seed 0): resnet20/seed0, resnet20/seed1" in text
    assert "- settings not recorded (a lesion written before lesion.json): plain20/seed0" in text
    assert f"- `python -m src.lesion {study}/resnet20/seed0/best.ckpt --k 1 4`" in text
    assert (study / "report" / "lesions_across_seeds.png").stat().st_size > 0
    figures = json.loads((study / "report" / "figures.json").read_text())["lesions_across_seeds.png"]
    assert [seed["seed"] for seed in figures["resnet20"]] == [0, 1]
    assert figures["resnet20"][1]["random"] == [[1, 0.9], [4, 0.7]]


def test_no_lesion_no_section_and_a_header_only_table(tmp_path):
    write_run(tmp_path / "resnet20" / "seed0", "resnet20", 0, 0.9, 269_722)
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report_lesions.csv").read_text().strip() == "none"
    assert "Block lesions" not in (tmp_path / "report" / "report.md").read_text()
    assert not (tmp_path / "report" / "lesions_across_seeds.png").exists()


def test_lesion_figure_breaks_at_unremovable_blocks_and_colours_as_the_other_figures(study):
    """The plain net's single-block line has a gap where a block could not be removed (no segment across it);
    residual is blue and plain red, as in every other figure of the report (they were swapped: plain sorts first)."""
    from matplotlib.colors import to_hex

    from src.reporting.figures import variant_colors
    from src.reporting.lesions import lesion_figure, lesions_by_variant
    from src.reporting.records import collect_runs
    from src.reporting.study_rows import aggregate

    blocks = [("layer1.0", False, 0.40), ("layer1.1", False, 0.70), ("layer2.0", True, None), ("layer2.1", False, 0.45)]
    write_lesion(study / "plain20" / "seed1", 0.86, blocks, {1: 0.30}, settings=False)
    records = collect_runs(study)
    lesions = lesions_by_variant(records)
    colors = variant_colors(aggregate(records), lesions)
    assert colors == {"plain20": "tab:red", "resnet20": "tab:blue"}
    _, right = lesion_figure(lesions, colors).axes
    lines = {line.get_label(): line for line in right.get_lines()}
    plain = lines["plain20"]
    assert list(plain.get_xdata()) == [0, 1, 2, 3]
    means = [float(y) for y in plain.get_ydata()]  # block 2 (layer2.0, downsampling) was removed in no seed
    assert means[:2] == pytest.approx([45.0, 65.0]) and math.isnan(means[2]) and means[3] == pytest.approx(45.0)
    assert to_hex(plain.get_color()) == to_hex("tab:red") and to_hex(lines["resnet20"].get_color()) == to_hex(
        "tab:blue"
    )


def test_seeds_lesioned_in_different_ways_are_never_pooled_and_the_axis_names_the_split(tmp_path):
    """A validation lesion and a test lesion with downsampling blocks drawn are two measurements, not two seeds
    of one: the report gives each its own row, its own line of how it was measured, and the figure's accuracy axis
    names the split (the depth study lesions on validation: the axis said "test accuracy")."""
    from src.reporting.lesions import accuracy_label, lesion_figure, lesions_by_variant
    from src.reporting.records import collect_runs

    for seed in (0, 1, 2):
        write_run(tmp_path / "resnet20" / f"seed{seed}", "resnet20", seed, 0.9, 269_722)
    blocks = [("layer1.0", False, 0.02), ("layer2.0", True, 0.30)]
    write_lesion(tmp_path / "resnet20" / "seed0", 0.90, blocks, {1: 0.87}, split="val", samples=5000)
    write_lesion(tmp_path / "resnet20" / "seed1", 0.92, blocks, {1: 0.88}, split="val", samples=5000)
    write_lesion(tmp_path / "resnet20" / "seed2", 0.91, blocks, {1: 0.20}, include_downsampling=True)
    lesions = lesions_by_variant(collect_runs(tmp_path))
    assert {label: [seed.seed for seed in seeds] for label, seeds in lesions.items()} == {
        "resnet20 (validation split)": [0, 1],
        "resnet20 (test split, downsampling blocks drawn)": [2],
    }
    assert accuracy_label(lesions) == "accuracy (%): split per curve in the report"
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    rows = read_rows(tmp_path / "report" / "report_lesions.csv")
    k1 = {row["variant"]: (row["n_seeds"], float(row["mean"])) for row in rows if row["k"] == "1"}
    assert k1 == {"resnet20 (validation split)": ("2", pytest.approx(87.5)),
                  "resnet20 (test split, downsampling blocks drawn)": ("1", pytest.approx(20.0))}  # fmt: skip
    text = (tmp_path / "report" / "report.md").read_text()
    assert "(draw seed 0), downsampling blocks drawn too: resnet20/seed2" in text
    validation_only = {label: seeds for label, seeds in lesions.items() if label.startswith("resnet20 (validation")}
    left, _ = lesion_figure(validation_only).axes
    assert left.get_ylabel() == "validation accuracy (%)"

"""The report compares shapes: width x depth heatmap, iso-parameter pairs, the published anchors of other families.

Runs are written without training (tests/study_runs.write_run) with chosen accuracies; every number below is
computed by hand. Parameter counts are this project's exact counts of the nets named.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
from scipy import stats

from src.models import build_model
from src.models.complexity import count_macs, count_parameters
from src.report import main
from src.reporting.paper import PUBLISHED_ANCHORS
from src.reporting.shapes import HEATMAP, ISO_COLUMNS, ISO_CSV
from tests.study_runs import resolved_config, write_run

PARAMS = {"resnet8": 75_290, "resnet8_2": 298_026, "resnet14": 172_506, "resnet14_2": 685_994,
          "resnet20": 269_722, "plain20": 269_722, "resnet20_2": 1_073_962, "wrn16_8": 10_961_370}  # fmt: skip
T975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t quantile, df = 2, closed form


def write(root, arch, accuracies, **report):
    for seed, acc in enumerate(accuracies):
        write_run(root / arch / f"seed{seed}", arch, seed, acc, PARAMS[arch], **report)


def report(root, *args):
    out = root / "report"
    assert main([str(root), "--out", str(out), *args]) == 0
    figures = json.loads((out / "figures.json").read_text())
    return out, (out / "report.md").read_text(), figures, list(csv.DictReader((out / ISO_CSV).open()))


def test_width_depth_heatmap_holds_each_cells_mean_error_and_n(tmp_path):
    write(tmp_path, "resnet8", [0.80, 0.82])
    write(tmp_path, "resnet8_2", [0.85, 0.87])
    write(tmp_path, "resnet14", [0.84, 0.86])
    write(tmp_path, "resnet14_2", [0.88, 0.90])
    write(tmp_path, "resnet20", [0.89])
    out, text, figures, _ = report(tmp_path)
    assert (out / HEATMAP).read_bytes().startswith(b"\x89PNG")
    [grid] = figures[HEATMAP]  # one family (resnet) spanning depths 8/14/20 and widths 1/2
    assert (grid["family"], grid["depths"], grid["widths"]) == ("resnet", [8, 14, 20], [1, 2])
    cells = {(c["depth"], c["width"]): (c["variant"], c["n"], c["error_mean"]) for c in grid["cells"]}
    assert set(cells) == {(8, 1), (8, 2), (14, 1), (14, 2), (20, 1)}  # resnet20_2 was not run: no cell
    assert cells[(8, 1)][:2] == ("resnet8", 2) and cells[(8, 1)][2] == pytest.approx(19.0)  # 100 - mean 81%
    assert cells[(14, 2)][:2] == ("resnet14_2", 2) and cells[(14, 2)][2] == pytest.approx(11.0)
    assert cells[(20, 1)][:2] == ("resnet20", 1) and cells[(20, 1)][2] == pytest.approx(11.0)
    assert "## Width against depth" in text and f"![test error by width and depth]({HEATMAP})" in text
    assert "| 8 | 19.00 (n = 2) | 14.00 (n = 2) |" in text and "| 20 | 11.00 (n = 1) | — |" in text


def test_one_width_or_one_depth_draws_no_heatmap_and_the_iso_csv_is_header_only(tmp_path):
    write(tmp_path, "resnet20", [0.90, 0.91])  # the ladder's shape of study: one width, residual/plain twins
    write(tmp_path, "plain20", [0.88, 0.89])
    write(tmp_path, "resnet14", [0.89, 0.90])
    out, text, figures, rows = report(tmp_path)
    assert HEATMAP not in figures and not (out / HEATMAP).exists() and "## Width against depth" not in text
    assert rows == [] and (out / ISO_CSV).read_text() == ",".join(ISO_COLUMNS) + "\n"  # twins are not iso pairs
    assert "## Shapes at matched parameter counts" not in text


def test_iso_pair_found_twin_not_counted_welch_interval_by_hand(tmp_path):
    """resnet20 (269,722) and resnet8_2 (298,026) differ by 9.5% of the larger: a pair; resnet20/plain20 are twins.
    Two networks share no random draws, so the test is Welch's even though both ran seeds 0-2."""
    write(tmp_path, "resnet20", [0.90, 0.91, 0.915])  # errors 10, 9, 8.5: mean 9.1667, variance 0.58333
    write(tmp_path, "resnet8_2", [0.88, 0.885, 0.90])  # errors 12, 11.5, 10: mean 11.1667, variance 1.08333
    write(tmp_path, "plain20", [0.80, 0.81, 0.82])  # same shape as resnet20: the residual/plain table's, not this one's
    write(tmp_path, "resnet14", [0.89, 0.90, 0.91])  # 172,506: 42% below resnet8_2, 36% below resnet20: no pair
    _, text, _, rows = report(tmp_path)
    pairs = {(row["smaller"], row["larger"]): row for row in rows}
    assert set(pairs) == {("resnet20", "resnet8_2"), ("plain20", "resnet8_2")}  # plain20 vs resnet8_2: two shapes
    row = pairs[("resnet20", "resnet8_2")]
    assert float(row["params_rel_difference"]) == pytest.approx((298_026 - 269_722) / 298_026)  # 0.09497
    assert (row["n_smaller"], row["n_larger"], row["test"]) == ("3", "3", "Welch t")
    assert float(row["difference_error_pp"]) == pytest.approx(-2.0)
    va, vb = 0.58333333, 1.08333333
    se = math.sqrt(va / 3 + vb / 3)  # 0.74536
    df = se**4 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)  # Welch-Satterthwaite: 3.6697
    half = stats.t.ppf(0.975, df) * se  # 2.1450
    assert float(row["difference_ci_low_pp"]) == pytest.approx(-2.0 - half, rel=1e-6)
    assert float(row["difference_ci_high_pp"]) == pytest.approx(-2.0 + half, rel=1e-6)
    t = -2.0 / se  # -2.6833
    assert float(row["statistic"]) == pytest.approx(t, rel=1e-6)
    assert float(row["p_value"]) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-6)  # 0.0603
    g = -2.0 / math.sqrt((va + vb) / 2) * (1 - 3 / (4 * 6 - 9))  # Hedges' g: -1.7527
    assert float(row["effect_size"]) == pytest.approx(g, rel=1e-6) and row["test"] == "Welch t"
    assert "## Shapes at matched parameter counts" in text
    assert (
        "no difference detected in test error (-2.00 points, 95% CI [-4.15, +0.15], Welch t p = 0.06, n = 3/3)" in text
    )
    assert "| `resnet20` | `resnet8_2` | 269,722 / 298,026 (9.5%) | 3/3 | 9.17 / 11.17 | -2.00 [-4.15, +0.15]" in text
    _, text, _, rows = report(tmp_path, "--iso-tolerance", "0.05")  # 9.5% apart is outside 5%
    assert rows == [] and "## Shapes at matched parameter counts" not in text


def test_shapes_trained_with_other_settings_are_not_an_iso_pair(tmp_path):
    write(tmp_path, "resnet20", [0.90, 0.91])
    for seed, acc in enumerate([0.88, 0.89]):  # shortcut B: a second difference besides the shape
        run_dir = tmp_path / "resnet8_2" / f"seed{seed}"
        config = resolved_config("resnet8_2", seed, run_dir, **{"model.shortcut": "B"})
        write_run(run_dir, "resnet8_2", seed, acc, PARAMS["resnet8_2"], config=config)
    _, text, _, rows = report(tmp_path)
    assert rows == [] and "## Shapes at matched parameter counts" not in text


def test_iso_pair_with_fewer_than_three_seeds_is_not_distinguishable(tmp_path):
    write(tmp_path, "resnet20", [0.90, 0.91])
    write(tmp_path, "resnet8_2", [0.80, 0.805])  # 10 points worse: still n = 2 per side
    _, text, _, [row] = report(tmp_path)
    assert row["test"] == "Welch t" and float(row["difference_error_pp"]) == pytest.approx(-10.25)
    sentence = next(line for line in text.splitlines() if line.startswith("- `resnet20` (269,722 params) against"))
    assert sentence.endswith("not distinguishable with n = 2/2.") and "-10.25 points of test error" in sentence
    assert "has the lower test error" not in text and "ahead" not in text


def test_bad_iso_tolerance_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--iso-tolerance", "10"])
    assert "'10' is not a tolerance: give a fraction in [0, 1), e.g. 0.1 for 10%" in capsys.readouterr().err


def test_table6_overlay_is_not_applied_to_a_widened_resnet(tmp_path):
    write(tmp_path, "resnet20_2", [0.93])  # the paper's protocol (write_run's default), but not Table 6's ResNet-20
    _, text, figures, _ = report(tmp_path)
    assert "He et al. 2016, Table 6 is not overlaid: no finished CIFAR ResNet run follows its protocol" in text
    assert "(no width-1 residual CIFAR run)" in text and "Black marks" not in text
    assert "published_anchors" not in figures  # no Wide or pre-activation run: no other anchors either


def test_wrn_anchors_only_for_runs_that_follow_the_wrn_protocol(tmp_path):
    wrn = tmp_path / "wrn"
    write(wrn, "wrn16_8", [0.955], global_step=78_200, train_images_seen=78_200 * 128)  # 200 epochs at 128
    _, text, figures, _ = report(wrn)
    assert (
        "Black stars: Zagoruyko & Komodakis 2016 (Wide ResNets), CIFAR-10 test error of WRN-40-4 (8.9M) 4.53%, "
        "WRN-16-8 (11.0M) 4.27%, WRN-28-10 (36.5M) 4.00%; trained with SGD with Nesterov momentum 0.9"
    ) in text
    assert "The 1 finished Wide ResNet runs compared follow that protocol." in text
    anchors = {a["label"]: a for a in figures["published_anchors"]}
    assert set(anchors) == {"WRN-40-4", "WRN-16-8", "WRN-28-10"}
    assert (anchors["WRN-16-8"]["params"], anchors["WRN-16-8"]["test_error"]) == (10_961_370, 4.27)
    short = tmp_path / "short"
    write(short, "wrn16_8", [0.95])  # 64k steps: Table 6's budget, not the WRN paper's 200 epochs
    _, text, figures, _ = report(short)
    assert "Zagoruyko & Komodakis 2016 (Wide ResNets) (WRN-40-4 (8.9M) 4.53%" in text
    assert "no finished Wide ResNet run follows its protocol (64000 steps at batch 128, not 78,200 at 128)" in text
    assert "published_anchors" not in figures
    _, text, figures, _ = report(short, "--paper", "force")
    assert len(figures["published_anchors"]) == 3 and "**Different protocol**: some or all Wide ResNet runs" in text


@pytest.mark.parametrize("anchor", PUBLISHED_ANCHORS, ids=lambda anchor: anchor.arch)
def test_published_anchors_are_drawn_at_this_projects_counts_of_the_same_nets(anchor):
    net = build_model(anchor.arch, 10)
    assert (count_parameters(net), count_macs(net, (3, 32, 32))) == (anchor.params, anchor.macs)
    published = {"WRN-40-4": 4.53, "WRN-16-8": 4.27, "WRN-28-10": 4.00, "pre-act ResNet-164": 5.46,
                 "pre-act ResNet-1001": 4.92}  # fmt: skip
    assert anchor.test_error == published[anchor.label]
    if anchor.arch != "preact_resnet1001":  # its 10.2M leaves out batch norm (tests/test_families.py)
        assert f"{anchor.params / 1e6:.1f}M" == anchor.paper_params

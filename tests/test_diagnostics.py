"""Blocks across depth, and the training-diagnostics callback: gradient norms and residual-branch ratios."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.callbacks import TrainingDiagnostics
from src.callbacks.diagnostics import BranchRatioRecorder, block_layout, gradient_statistics, weight_counts
from src.cli import main
from src.models import build_model
from src.models.blocks import branch_weights, residual_blocks
from src.modules import ImageClassifier
from src.reporting.depth_profiles import depth_profiles, plot_depth_profiles, read_diagnostics, relative_depth
from src.reporting.figure_data import diagnostics_figures
from src.reporting.records import RunRecord
from tests.conftest import REPO_ROOT
from tests.helpers import tiny_data, tiny_trainer


@pytest.mark.parametrize(
    "arch, shortcut, count, kinds",
    [
        ("resnet8", "A", 3, ["identity", "zero-pad", "zero-pad"]),
        ("resnet8", "B", 3, ["identity", "projection", "projection"]),
        ("plain8", None, 3, ["none"] * 3),
        ("resnet20", None, 9, ["identity"] * 3 + ["zero-pad"] + ["identity"] * 2 + ["zero-pad"] + ["identity"] * 2),
        ("resnet18", None, 8, ["identity"] * 2 + ["projection", "identity"] * 3),
        ("plain18", None, 8, ["none"] * 8),
        ("resnet50", None, 16, ["projection"] + ["identity"] * 2 + ["projection"] + ["identity"] * 3
         + ["projection"] + ["identity"] * 5 + ["projection"] + ["identity"] * 2),
    ],
)  # fmt: skip
def test_blocks_in_depth_order_with_their_shortcuts(arch, shortcut, count, kinds):
    blocks = residual_blocks(build_model(arch, 10, shortcut=shortcut))
    assert [b.index for b in blocks] == list(range(count))
    assert [b.shortcut for b in blocks] == kinds
    assert all(b.residual == (k != "none") for b, k in zip(blocks, kinds))
    assert blocks[0].name == "layer1.0" and blocks[-1].stage == (4 if arch.endswith(("18", "50")) else 3)
    # Downsampling: the first block of every stage after the first (and ResNet-50's widening layer1.0).
    first_of_stage = [b.name.endswith(".0") and (b.stage > 1 or arch.endswith("50")) for b in blocks]
    assert [b.downsampling for b in blocks] == first_of_stage


def test_a_network_without_blocks_is_refused():
    with pytest.raises(ValueError, match="Linear has no residual or plain blocks"):
        residual_blocks(torch.nn.Linear(3, 3))


def _block_input(net, block_index, images):
    """The input ``x`` the block sees, captured by a hook."""
    block = residual_blocks(net)[block_index].module
    seen = {}
    handle = block.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].clone()))
    with torch.no_grad():
        net(images)
    handle.remove()
    return block, seen["x"]


def _branch_by_hand(block, x):
    return block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))


def _ratio(numerator, denominator):
    return (numerator.flatten(1).norm(dim=1) / denominator.flatten(1).norm(dim=1)).mean().item()


def _recorded_ratios(net, images):
    recorder = BranchRatioRecorder(residual_blocks(net))
    recorder.attach()
    with torch.no_grad():
        net(images)
    recorder.detach()
    return recorder.ratios()


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_branch_ratio_of_a_downsampling_block_divides_by_the_shortcuts_output(shortcut):
    torch.manual_seed(0)
    net = build_model("resnet8", 10, shortcut=shortcut).eval()
    for module in net.modules():  # BN statistics away from (0, 1), so the projection's BN does something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(6, 3, 16, 16)
    block, x = _block_input(net, 1, images)  # layer2.0: 16 -> 32 channels, stride 2
    with torch.no_grad():
        branch = _branch_by_hand(block, x)
        if shortcut == "A":  # subsample, then zero channels (which add nothing to a norm)
            shortcut_out = x[:, :, ::2, ::2]
        else:
            shortcut_out = block.downsample[1](block.downsample[0](x))
        assert branch.shape[2:] == shortcut_out.shape[2:] == (8, 8)
        expected = _ratio(branch, shortcut_out)
        before_subsampling = _ratio(branch, x)  # what the old branch_ratio divided by
    ratios = _recorded_ratios(net, images)
    assert ratios[1] == pytest.approx(expected, rel=1e-5)
    assert abs(ratios[1] - before_subsampling) > 0.05 * expected
    with torch.no_grad():  # an identity block: s(x) = x
        block0, x0 = _block_input(net, 0, images)
        assert ratios[0] == pytest.approx(_ratio(_branch_by_hand(block0, x0), x0), rel=1e-5)


def test_branch_ratio_in_torchvisions_projection_block():
    """torchvision adds the shortcut to the BN output in place: the ratio must be read before that."""
    torch.manual_seed(0)
    net = build_model("resnet18", 10).eval()
    images = torch.randn(2, 3, 32, 32)
    block, x = _block_input(net, 2, images)  # layer2.0, a 1x1 projection
    with torch.no_grad():
        expected = _ratio(_branch_by_hand(block, x), block.downsample(x))
    assert _recorded_ratios(net, images)[2] == pytest.approx(expected, rel=1e-5)


def test_plain_block_ratio_only_where_the_shapes_match():
    torch.manual_seed(0)
    net = build_model("plain14", 10).eval()  # two blocks per stage: layer2.1 keeps its shape
    images = torch.randn(4, 3, 16, 16)
    ratios = _recorded_ratios(net, images)
    assert [r is None for r in ratios] == [False, False, True, False, True, False]
    for index in (0, 1, 3, 5):
        block, x = _block_input(net, index, images)
        with torch.no_grad():
            assert ratios[index] == pytest.approx(_ratio(_branch_by_hand(block, x), x), rel=1e-5)


def test_branch_ratio_is_zero_for_a_block_whose_last_bn_is_zero():
    torch.manual_seed(0)
    net = build_model("resnet8", 10).eval()
    zeroed = residual_blocks(net)[1].module
    torch.nn.init.zeros_(zeroed.bn2.weight)
    torch.nn.init.zeros_(zeroed.bn2.bias)
    images = torch.randn(8, 3, 16, 16)
    recorder = BranchRatioRecorder(residual_blocks(net))
    recorder.attach()
    with torch.no_grad():
        net(images)
    recorder.detach()
    ratios = recorder.ratios()
    assert ratios[1] == 0.0 and ratios[0] > 0 and ratios[2] > 0  # the shortcut carries the input past it
    assert recorder.ratios() == [None, None, None]  # read once, then reset
    net(images)  # detached: nothing more is recorded
    assert recorder.ratios() == [None, None, None]


def test_imagenet_blocks_get_a_ratio_each():
    net = build_model("resnet50", 10).eval()
    ratios = _recorded_ratios(net, torch.randn(2, 3, 32, 32))
    assert len(ratios) == 16 and all(r is not None and r > 0 for r in ratios)


def test_gradient_statistics_of_known_weights_and_gradients():
    """conv1 weights 3 with gradients 1, conv2 weights 4 with gradients 2, in every block of a ResNet-8.

    Per block with n1 conv1 and n2 conv2 weights: ||g|| = sqrt(n1 + 4 n2), RMS = sqrt((n1 + 4 n2) / (n1 + n2)),
    ||g|| / ||w|| = sqrt((n1 + 4 n2) / (9 n1 + 16 n2)). layer1.0: n1 = n2 = 2304 -> RMS sqrt(5/2), ratio
    sqrt(1/5). layer2.0 (n1 = 4608, n2 = 9216) and layer3.0 (18432, 36864) both have n2 = 2 n1 -> RMS sqrt(3),
    ratio sqrt(9/41), though layer3.0's raw norm is twice layer2.0's (4x the weights).
    """
    net = build_model("resnet8", 10, shortcut="B")
    blocks = residual_blocks(net)
    assert gradient_statistics(blocks) == {key: [None] * 3 for key in ("grad_rms", "grad_to_weight", "raw_grad_norm")}
    for block in blocks:
        for weight, value, grad in ((block.module.conv1.weight, 3.0, 1.0), (block.module.conv2.weight, 4.0, 2.0)):
            weight.data.fill_(value)
            weight.grad = torch.full_like(weight, grad)
    stats = gradient_statistics(blocks)
    assert weight_counts(blocks) == [2304 + 2304, 4608 + 9216, 18432 + 36864]
    assert stats["grad_rms"] == pytest.approx([(5 / 2) ** 0.5, 3**0.5, 3**0.5], rel=1e-6)
    assert stats["grad_to_weight"] == pytest.approx([0.2**0.5, (9 / 41) ** 0.5, (9 / 41) ** 0.5], rel=1e-6)
    assert stats["raw_grad_norm"] == pytest.approx([11520**0.5, 41472**0.5, 165888**0.5], rel=1e-6)
    blocks[1].module.downsample[0].weight.grad = torch.full_like(blocks[1].module.downsample[0].weight, 100.0)
    assert gradient_statistics(blocks) == stats  # the projection shortcut's weight is not the branch's


def test_gradient_statistics_match_the_branch_weights_after_backward():
    net = build_model("resnet8", 10)
    blocks = residual_blocks(net)
    F.cross_entropy(net(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
    grads = [torch.cat([w.grad.flatten() for w in branch_weights(b.module)]) for b in blocks]
    weights = [torch.cat([w.flatten() for w in branch_weights(b.module)]) for b in blocks]
    stats = gradient_statistics(blocks)
    assert stats["raw_grad_norm"] == pytest.approx([g.norm().item() for g in grads], rel=1e-5)
    assert stats["grad_rms"] == pytest.approx([g.pow(2).mean().sqrt().item() for g in grads], rel=1e-5)
    assert stats["grad_to_weight"] == pytest.approx(
        [(g.norm() / w.norm()).item() for g, w in zip(grads, weights)], rel=1e-5
    )


def _train(tmp_path, callback, epochs=2, arch="resnet8"):
    logger = TensorBoardLogger(tmp_path, name="run", default_hp_metric=False)
    model = ImageClassifier(arch, num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    trainer = tiny_trainer(tmp_path, max_epochs=epochs, logger=logger, callbacks=[callback])
    trainer.fit(model, tiny_data())  # 128 samples, batch 32: 4 steps per epoch
    return trainer, tmp_path / "run" / "version_0"


def _scalars(run_dir):
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [e.step for e in accumulator.Scalars(tag)] for tag in tags["scalars"] if "diagnostics" in tag}
    images = {tag: [e.step for e in accumulator.Images(tag)] for tag in tags["images"]}
    images.update({tag: [e.step for e in accumulator.Histograms(tag)] for tag in tags["histograms"]})
    return scalars, images


def test_callback_logs_one_value_per_block_every_n_steps(tmp_path):
    callback = TrainingDiagnostics(enabled=True, every_n_steps=3, profile_image=True)
    trainer, run_dir = _train(tmp_path, callback)
    assert trainer.global_step == 8
    records = [json.loads(line) for line in (run_dir / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3, 6]
    for record in records:
        assert record["blocks"] == ["layer1.0", "layer2.0", "layer3.0"] and record["residual"] == [True] * 3
        assert record["stage"] == [1, 2, 3] and record["stage_starts"] == [0, 1, 2]
        assert record["downsampling"] == [False, True, True]
        assert record["num_weights"] == [2304 + 2304, 4608 + 9216, 18432 + 36864]
        values = [record[key] for key in ("grad_rms", "grad_to_weight", "raw_grad_norm", "branch_to_shortcut")]
        assert all(len(v) == 3 and all(x > 0 for x in v) for v in values)
        assert record["grad_rms"] == pytest.approx(
            [g / n**0.5 for g, n in zip(record["raw_grad_norm"], record["num_weights"])], rel=1e-6
        )

    scalars, images = _scalars(run_dir)
    keys = ("grad_rms", "grad_to_weight", "branch_to_shortcut", "raw_grad_norm")
    assert set(scalars) == {f"diagnostics_{key}/block_{i:02d}" for key in keys for i in range(3)}
    assert all(steps == [0, 3, 6] for steps in scalars.values())
    profiles = ["diagnostics/depth_profile"] + [f"diagnostics_profile/{key}" for key in keys[:3]]
    assert images == {tag: [0, 3, 6] for tag in profiles}
    # The histogram profile: bucket i is block i, its height block i's value.
    accumulator = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    accumulator.Reload()
    first = accumulator.Histograms("diagnostics_profile/grad_rms")[0].histogram_value
    assert list(first.bucket_limit) == [0.5, 1.5, 2.5]
    assert list(first.bucket) == pytest.approx(records[0]["grad_rms"], rel=1e-6)
    # No hook is left on the network after training.
    net = trainer.lightning_module.model
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in net.modules())


def test_layout_of_a_plain_network():
    layout = block_layout(residual_blocks(build_model("plain20", 10)))
    assert layout["stage"] == [1] * 3 + [2] * 3 + [3] * 3 and layout["stage_starts"] == [0, 3, 6]
    assert layout["downsampling"] == [False] * 3 + [True, False, False] * 2 and layout["residual"] == [False] * 9


def test_callback_off_by_default_logs_nothing(tmp_path):
    callback = TrainingDiagnostics()
    assert callback.enabled is False
    _, run_dir = _train(tmp_path, callback, epochs=1)
    assert not (run_dir / "diagnostics.jsonl").exists()
    scalars, images = _scalars(run_dir)
    assert scalars == {} and images == {}
    assert callback.records == [] and callback.blocks == []


def _write_diagnostics(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _layout(arch):
    return block_layout(residual_blocks(build_model(arch, 10)))


def _seed_records(arch, values_by_step, keys=("grad_rms",)):
    layout = _layout(arch)
    return [
        {"step": step, "epoch": 0, **{key: values for key in keys}, **layout} for step, values in values_by_step.items()
    ]


FIGURE_KEYS = ("grad_rms", "grad_to_weight", "branch_to_shortcut")
OLD_RECORD = {"step": 100, "grad_norm": [1.0, 2.0, 3.0], "branch_ratio": [0.5, 0.4, 0.3]}


def test_profile_averages_the_late_window_of_every_seed(tmp_path):
    """Steps >= 75% of the last enter each seed's mean; the curve is the mean over seeds, the band their min-max."""
    seed0 = _write_diagnostics(
        tmp_path / "s0.jsonl", _seed_records("resnet8", {0: [100.0, 100.0, 100.0], 80: [1, 2, 3], 100: [3, 4, 5]})
    )  # step 0 lies outside the window; seed mean [2, 3, 4]
    seed1 = _write_diagnostics(
        tmp_path / "s1.jsonl", _seed_records("resnet8", {0: [50.0, 50.0, 50.0], 100: [4, 5, None]})
    )  # seed mean [4, 5, nan]: a block without a value does not pull the mean
    old = _write_diagnostics(tmp_path / "old.jsonl", [OLD_RECORD])
    profiles, notes = depth_profiles({"resnet8": [seed0, seed1, old]}, "grad_rms")
    (profile,) = profiles
    assert (profile.seeds, profile.first_step, profile.last_step, profile.residual) == (2, 80, 100, True)
    assert profile.mean == pytest.approx([3.0, 4.0, 4.0]) and profile.low == [2.0, 3.0, 4.0]
    assert profile.high == [4.0, 5.0, 4.0]
    assert notes == [f"resnet8: skipped {old}: an old diagnostics.jsonl (size-dependent fields only)"]
    (ci,), _ = depth_profiles({"resnet8": [seed0, seed1]}, "grad_rms", band="ci95")
    t = 12.706204736  # t(0.975, df=1); the two seeds [2, 4] have a standard error of 1
    assert ci.low[0] == pytest.approx(3 - t) and ci.high[0] == pytest.approx(3 + t)

    figure = plot_depth_profiles({"resnet8": [seed0, seed1]}, tmp_path / "rms.png")
    (line,) = figure.axes[0].get_lines()[:1]
    assert list(line.get_ydata()) == pytest.approx([3.0, 4.0, 4.0]) and "n=2" in line.get_label()
    assert (tmp_path / "rms.png").stat().st_size > 0


def test_profiles_of_20_and_56_layers_share_the_relative_depth_axis(tmp_path):
    files = {
        arch: _write_diagnostics(tmp_path / f"{arch}.jsonl", _seed_records(arch, {10: [1.0] * blocks}))
        for arch, blocks in (("resnet20", 9), ("plain56", 27))
    }
    profiles, _ = depth_profiles(files, "grad_rms")
    short, deep = profiles
    assert short.x == pytest.approx([(i + 0.5) / 9 for i in range(9)])
    assert deep.x == pytest.approx([(i + 0.5) / 27 for i in range(27)])
    assert short.stage_boundaries == deep.stage_boundaries == pytest.approx([1 / 3, 2 / 3])
    assert short.x[4] == deep.x[13] == pytest.approx(0.5)  # the middle block of stage 2 in both
    assert (short.residual, deep.residual) == (True, False)
    figure = plot_depth_profiles(files, tmp_path / "both.png")
    lines = figure.axes[0].get_lines()
    assert [line.get_linestyle() for line in lines[:2]] == ["-", "--"]  # residual solid, plain dashed
    assert [line.get_xdata()[-1] for line in lines[:2]] == pytest.approx([8.5 / 9, 26.5 / 27])
    boundaries = [line.get_xdata()[0] for line in lines[2:]]  # the stage boundaries, drawn once each
    assert boundaries == pytest.approx([1 / 3, 2 / 3])


def test_relative_depth_by_position_within_stage():
    depths, boundaries = relative_depth([1, 2, 2, 2, 2, 3, 3, 4])  # uneven stages (ResNet-18-like)
    # (stage order + (position + 0.5) / blocks in the stage) / 4 stages
    assert depths == pytest.approx([0.125, 0.28125, 0.34375, 0.40625, 0.46875, 0.5625, 0.6875, 0.875])
    assert boundaries == [0.25, 0.5, 0.75]


def test_old_files_only_are_skipped_with_a_message(tmp_path):
    old = _write_diagnostics(tmp_path / "old.jsonl", [OLD_RECORD])
    assert read_diagnostics(old)[0]["raw_grad_norm"] == [1.0, 2.0, 3.0]  # the old name reads as the raw norm
    with pytest.raises(ValueError, match="no diagnostics.jsonl has 'grad_rms' with its block layout: .*old"):
        plot_depth_profiles({"resnet8": old}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_depth_profiles_of_real_runs_on_one_figure(tmp_path):
    paths = {}
    for arch in ("resnet8", "plain8"):
        callback = TrainingDiagnostics(enabled=True, every_n_steps=2)
        _, run_dir = _train(tmp_path / arch, callback, epochs=1, arch=arch)
        paths[arch] = run_dir / "diagnostics.jsonl"
    for key in ("grad_rms", "grad_to_weight", "branch_to_shortcut"):
        figure = plot_depth_profiles(paths, tmp_path / f"{key}.png", key=key)
        lines = figure.axes[0].get_lines()
        labels = [line.get_label().split(" ")[:2] for line in lines[:2]]
        assert labels == [["resnet8", "(residual,"], ["plain8", "(plain,"]]
    plain = depth_profiles({"plain8": paths["plain8"]}, "branch_to_shortcut")[0][0]
    assert plain.mean[0] > 0 and all(math.isnan(v) for v in plain.mean[1:])  # plain8's later blocks change shape


def test_report_draws_every_finished_seed_and_notes_old_files(tmp_path):
    seeds = [
        _write_diagnostics(tmp_path / "resnet8" / f"seed{i}" / "diagnostics.jsonl",
                           _seed_records("resnet8", {8: [v, v, v]}, keys=FIGURE_KEYS))
        for i, v in enumerate((1.0, 3.0))
    ]  # fmt: skip
    _write_diagnostics(tmp_path / "plain8" / "seed0" / "diagnostics.jsonl", [OLD_RECORD])
    runs = [RunRecord("resnet8", i, path.parent, "finished") for i, path in enumerate(seeds)]
    runs += [
        RunRecord("resnet8", 2, tmp_path / "nowhere", "finished"),  # no diagnostics.jsonl: not a seed of the curve
        RunRecord("plain8", 0, tmp_path / "plain8" / "seed0", "finished"),
        RunRecord("resnet8", 3, seeds[0].parent, "unfinished"),
    ]
    out = tmp_path / "report"
    out.mkdir()
    notes: list[str] = []
    written = diagnostics_figures(runs, out, notes)
    assert written == [f"diagnostics_{key}.png" for key in FIGURE_KEYS]
    assert all((out / name).stat().st_size > 0 for name in written)
    assert notes == [f"plain8: skipped {tmp_path / 'plain8' / 'seed0' / 'diagnostics.jsonl'}: an old diagnostics.jsonl "
                     "(size-dependent fields only)"]  # fmt: skip
    files = {"resnet8": seeds}
    (profile,), _ = depth_profiles(files, "grad_rms")
    assert profile.seeds == 2 and profile.mean == [2.0, 2.0, 2.0]


def test_bad_interval_is_one_clear_message():
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer, got 0"):
        TrainingDiagnostics(enabled=True, every_n_steps=0)


def test_cli_configures_it_under_its_own_key():
    quickstart = str(REPO_ROOT / "configs" / "quickstart.yaml")
    default = main(["--config", quickstart], run=False)
    (callback,) = [c for c in default.trainer.callbacks if isinstance(c, TrainingDiagnostics)]
    assert callback.enabled is False
    configured = main(
        ["--config", quickstart, "--diagnostics.enabled", "true", "--diagnostics.every_n_steps", "50"], run=False
    )
    (callback,) = [c for c in configured.trainer.callbacks if isinstance(c, TrainingDiagnostics)]
    assert (callback.enabled, callback.every_n_steps) == (True, 50)

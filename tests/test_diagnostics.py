"""Blocks across depth, and the training-diagnostics callback: gradient norms and residual-branch ratios."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.callbacks import TrainingDiagnostics
from src.callbacks.diagnostics import BranchRatioRecorder, gradient_norms
from src.cli import main
from src.models import build_model
from src.models.blocks import branch_weights, residual_blocks
from src.modules import ImageClassifier
from src.study.plots import plot_depth_profiles
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


def _branch_ratio_by_hand(net, block_index, images):
    """||F(x)|| / ||x|| per sample, averaged: the block's input from a hook, its branch recomputed."""
    block = residual_blocks(net)[block_index].module
    seen = {}
    handle = block.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].clone()))
    net(images)
    handle.remove()
    x = seen["x"]
    branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    return (branch.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean().item()


@pytest.mark.parametrize("arch", ["resnet8", "plain8"])
def test_branch_ratio_is_zero_for_a_block_whose_last_bn_is_zero(arch):
    torch.manual_seed(0)
    net = build_model(arch, 10).eval()
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
    assert ratios[1] == 0.0
    with torch.no_grad():
        assert ratios[0] == pytest.approx(_branch_ratio_by_hand(net, 0, images), rel=1e-5) and ratios[0] > 0
        if arch == "resnet8":  # the shortcut carries the input past the silenced block
            assert ratios[2] == pytest.approx(_branch_ratio_by_hand(net, 2, images), rel=1e-5) and ratios[2] > 0
        else:  # a plain net is dead beyond it: the next block's input is all zeros (0 / 0 reads as 0)
            assert ratios[2] == 0.0
    assert recorder.ratios() == [None, None, None]  # read once, then reset
    net(images)  # detached: nothing more is recorded
    assert recorder.ratios() == [None, None, None]


def test_imagenet_blocks_get_a_ratio_each():
    net = build_model("resnet50", 10).eval()
    recorder = BranchRatioRecorder(residual_blocks(net))
    recorder.attach()
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    ratios = recorder.ratios()
    assert len(ratios) == 16 and all(r is not None and r > 0 for r in ratios)


def test_gradient_norms_are_the_branch_weights_norms():
    net = build_model("resnet8", 10, shortcut="B")
    blocks = residual_blocks(net)
    assert gradient_norms(blocks) == [None, None, None]  # before any backward
    F.cross_entropy(net(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
    by_hand = [torch.cat([w.grad.flatten() for w in branch_weights(b.module)]).norm().item() for b in blocks]
    assert gradient_norms(blocks) == pytest.approx(by_hand, rel=1e-5)
    assert len(branch_weights(blocks[1].module)) == 2  # the projection shortcut's weight is not the branch's


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
        assert len(record["grad_norm"]) == len(record["branch_ratio"]) == 3
        assert all(v > 0 for v in record["grad_norm"] + record["branch_ratio"])

    scalars, images = _scalars(run_dir)
    expected = {f"diagnostics_{key}/block_{i:02d}" for key in ("grad_norm", "branch_ratio") for i in range(3)}
    assert set(scalars) == expected
    assert all(steps == [0, 3, 6] for steps in scalars.values())
    profiles = ("diagnostics/depth_profile", "diagnostics_profile/grad_norm", "diagnostics_profile/branch_ratio")
    assert images == {tag: [0, 3, 6] for tag in profiles}
    # The histogram profile: bucket i is block i, its height block i's value.
    accumulator = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    accumulator.Reload()
    first = accumulator.Histograms("diagnostics_profile/grad_norm")[0].histogram_value
    assert list(first.bucket_limit) == [0.5, 1.5, 2.5]
    assert list(first.bucket) == pytest.approx(records[0]["grad_norm"], rel=1e-6)
    # No hook is left on the network after training.
    assert all(not b.module._forward_pre_hooks for b in residual_blocks(trainer.lightning_module.model))


def test_callback_off_by_default_logs_nothing(tmp_path):
    callback = TrainingDiagnostics()
    assert callback.enabled is False
    _, run_dir = _train(tmp_path, callback, epochs=1)
    assert not (run_dir / "diagnostics.jsonl").exists()
    scalars, images = _scalars(run_dir)
    assert scalars == {} and images == {}
    assert callback.records == [] and callback.blocks == []


def test_depth_profiles_of_two_runs_on_one_figure(tmp_path):
    paths = {}
    for arch in ("resnet8", "plain8"):
        callback = TrainingDiagnostics(enabled=True, every_n_steps=2)
        _, run_dir = _train(tmp_path / arch, callback, epochs=1, arch=arch)
        paths[arch] = run_dir / "diagnostics.jsonl"
    figure = plot_depth_profiles(paths, tmp_path / "grad.png")
    assert (tmp_path / "grad.png").stat().st_size > 0
    lines = figure.axes[0].get_lines()
    assert [line.get_label().split(" ")[0] for line in lines] == ["resnet8", "plain8"]
    assert all(len(line.get_xdata()) == 3 for line in lines)


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

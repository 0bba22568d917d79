"""Block lesions and the pruning sweep: on tiny trained networks, through the library and the commands."""

from __future__ import annotations

import copy
import csv
import statistics
import subprocess
import sys
from functools import partial

import pytest
import torch
import yaml

from src import lesion as lesion_command
from src import prune as prune_command
from src.models import build_model
from src.models.blocks import branch_output, residual_blocks
from src.modules import ImageClassifier
from src.study import (
    PlainNetworkError,
    accuracy,
    check_sparsities,
    lesion_study,
    lesioned,
    prunable_weights,
    prune_sweep,
    random_lesions,
    sgd_finetune,
)
from src.study.prune import zero_count
from tests.conftest import REPO_ROOT
from tests.helpers import tiny_data, tiny_trainer

DATA = dict(num_classes=10, image_size=16, train_size=128, val_size=64, test_size=64, batch_size=32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ResNet-8 and plain-8 trained for a few steps, saved as checkpoints beside a run's config.yaml."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for arch in ("resnet8", "plain8"):
        torch.manual_seed(0)
        model = ImageClassifier(arch, num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
        data = tiny_data()
        trainer = tiny_trainer(root, max_epochs=2)
        trainer.fit(model, data)
        test_acc = trainer.test(model, data, verbose=False)[0]["test/acc"]
        run_dir = root / arch
        (run_dir / "checkpoints").mkdir(parents=True)
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        config = {"data": {"class_path": "src.data.synthetic.SyntheticDataModule", "init_args": DATA}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        runs[arch] = dict(model=model, data=data, test_acc=test_acc, checkpoint=run_dir / "checkpoints" / "last.ckpt")
    return runs


def _loader(run):
    run["data"].setup("test")
    return run["data"].test_dataloader()


# ---------------------------------------------------------------------------------------------- lesions
def test_lesion_removes_each_block_once_and_the_intact_row_is_the_test_accuracy(trained):
    run = trained["resnet8"]
    net = run["model"].model
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rows = lesion_study(net, _loader(run))
    assert rows[0]["removed"] == "none" and rows[0]["acc"] == pytest.approx(run["test_acc"], abs=1e-6)
    assert [r["removed"] for r in rows[1:]] == ["layer1.0", "layer2.0", "layer3.0"]
    assert [r["shortcut"] for r in rows[1:]] == ["identity", "zero-pad", "zero-pad"]
    assert [r["downsampling"] for r in rows[1:]] == [False, True, True]
    assert all(r["acc_drop"] == pytest.approx(rows[0]["acc"] - r["acc"]) for r in rows)
    # The network is restored: same modules, same weights, same accuracy.
    assert [b.name for b in residual_blocks(net)] == ["layer1.0", "layer2.0", "layer3.0"]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert accuracy(net, _loader(run)) == rows[0]["acc"]


@pytest.mark.parametrize("arch, shortcut", [("resnet8", "A"), ("resnet8", "B"), ("resnet18", None)])
def test_a_lesioned_block_computes_what_it_does_with_a_silent_branch(arch, shortcut):
    """Keeping only the shortcut == F(x) = 0: the same output as zeroing the branch's last BN."""
    torch.manual_seed(0)
    net = build_model(arch, 10, shortcut=shortcut).eval()
    images = torch.randn(2, 3, 32, 32)
    for block in residual_blocks(net):
        with torch.no_grad(), lesioned(net, [block]):
            removed = net(images)
        silent = copy.deepcopy(net)
        bn = branch_output(residual_blocks(silent)[block.index].module)
        torch.nn.init.zeros_(bn.weight)
        torch.nn.init.zeros_(bn.bias)
        with torch.no_grad():
            assert torch.allclose(removed, silent(images), atol=1e-5), block.name


def test_plain_network_lesions_skip_shape_keeping_blocks_and_refuse_downsampling_ones(trained):
    """Veit et al.'s control: a plain block whose shapes match is replaced by the identity; the others refused."""
    run = trained["plain8"]
    net = run["model"].model
    rows = lesion_study(net, _loader(run), name="plain8")
    assert [(r["removed"], r["replaced_by"]) for r in rows] == [
        ("none", ""), ("layer1.0", "identity"), ("layer2.0", ""), ("layer3.0", "")
    ]
    assert rows[0]["acc"] == pytest.approx(run["test_acc"], abs=1e-6)
    assert rows[1]["acc"] is not None and rows[1]["acc_drop"] == pytest.approx(rows[0]["acc"] - rows[1]["acc"])
    assert [r["acc"] for r in rows[2:]] == [None, None] and [r["acc_drop"] for r in rows[2:]] == [None, None]
    assert rows[2]["note"] == "not removable: no shortcut, changes shape (16 -> 32 channels, stride 2)"
    # The skipped block is exactly absent: stem -> layer2 -> layer3 -> head.
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad(), lesioned(net, residual_blocks(net)[:1]):
        skipped = net(images)
    with torch.no_grad():
        x = net.relu(net.bn1(net.conv1(images)))
        by_hand = net.fc(torch.flatten(net.pool(net.layer3(net.layer2(x))), 1))
    assert torch.equal(skipped, by_hand)
    assert isinstance(net.layer1[0], type(residual_blocks(net)[0].module))  # restored
    with pytest.raises(
        PlainNetworkError,
        match=r"block layer2.0 of plain8 \(BasicBlock\) has no shortcut and changes the feature map's shape "
        r"\(16 -> 32 channels, stride 2\): it cannot be removed",
    ):
        with lesioned(net, residual_blocks(net)[1:2], "plain8"):
            pass


def test_random_lesions_are_seeded_and_remove_k_distinct_blocks(trained):
    run = trained["resnet8"]
    net, loader = run["model"].model, _loader(run)
    rows = random_lesions(net, loader, ks=[1, 2, 3], trials=2, seed=7, include_downsampling=True)
    assert [(r["k"], r["trial"]) for r in rows] == [(k, t) for k in (1, 2, 3) for t in range(2)]
    assert all(len(set(r["removed"].split())) == r["k"] for r in rows)
    assert rows[-1]["removed"] == "layer1.0 layer2.0 layer3.0"
    assert rows == random_lesions(net, loader, ks=[1, 2, 3], trials=2, seed=7, include_downsampling=True)
    baseline = accuracy(net, loader)
    assert all(r["acc_drop"] == pytest.approx(baseline - r["acc"]) for r in rows)
    only_identity = random_lesions(net, loader, ks=[1], trials=3)  # the default: no downsampling block
    assert {r["removed"] for r in only_identity} == {"layer1.0"}
    with pytest.raises(ValueError, match=r"k must be between 1 and the 1 removable blocks, got \[2\]"):
        random_lesions(net, loader, ks=[2])


# ---------------------------------------------------------------------------------------------- pruning
def test_pruning_zeroes_exactly_the_requested_fraction(trained):
    run = trained["resnet8"]
    net = run["model"].model
    prunable = sum(module.weight.numel() for module, _ in prunable_weights(net))
    assert prunable == 74_800  # all conv + linear weights of ResNet-8 (75,290 minus BN and the head's bias)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sparsities = [0.0, 0.25, 0.5, 0.9, 0.999]
    rows = prune_sweep(net, _loader(run), sparsities)
    for row, sparsity in zip(rows, sparsities):
        expected = round(sparsity * prunable)
        assert row["pruned_weights"] == expected
        assert row["zero_fraction"] * prunable == pytest.approx(expected)  # counted on the pruned copy
        assert row["remaining_params"] == 75_290 - expected
    assert rows[0]["acc"] == pytest.approx(run["test_acc"], abs=1e-6)
    assert zero_count(net)[0] == 0 and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_fine_tuning_keeps_the_pruned_weights_zero(trained):
    run = trained["resnet8"]
    run["data"].setup("fit")
    finetune = sgd_finetune(run["data"].train_dataloader(), steps=5, lr=0.01)
    (row,) = prune_sweep(run["model"].model, _loader(run), [0.8], finetune=finetune)
    assert row["acc_finetuned"] is not None and 0.0 <= row["acc_finetuned"] <= 1.0
    assert row["zero_fraction"] * row["prunable_weights"] == pytest.approx(round(0.8 * row["prunable_weights"]))


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_zero_one_is_one_clear_message(bad):
    with pytest.raises(ValueError, match=rf"sparsity must be a fraction in \[0, 1\).*got \[{bad}\]"):
        check_sparsities([0.5, bad])


# ---------------------------------------------------------------------------------------------- commands
def _csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_lesion_command_writes_tables_and_figure_without_overwriting(trained, tmp_path):
    run = trained["resnet8"]
    out = tmp_path / "lesion"
    args = [str(run["checkpoint"]), "--k", "1", "2", "--trials", "2", "--include-downsampling", "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    paths = lesion_command.main(args)
    single, random = _csv(paths["single"]), _csv(paths["random"])
    assert [r["removed"] for r in single] == ["none", "layer1.0", "layer2.0", "layer3.0"]
    assert float(single[0]["acc"]) == pytest.approx(run["test_acc"], abs=1e-6)
    assert len(random) == 4 and (out / "lesion.png").stat().st_size > 0
    stages = _csv(paths["stages"])
    assert [(r["stage"], r["downsampling"], r["blocks"], r["removed"]) for r in stages] == [
        ("1", "False", "1", "1"), ("2", "True", "1", "1"), ("3", "True", "1", "1")
    ]
    assert float(stages[1]["drop_mean"]) == pytest.approx(float(single[2]["acc_drop"])) and stages[1]["drop_std"] == ""
    summary = _csv(paths["random_summary"])
    assert [(r["k"], r["n"]) for r in summary] == [("1", "2"), ("2", "2")]
    accs = [float(r["acc"]) for r in random if r["k"] == "2"]
    assert float(summary[1]["acc_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-4)  # ddof = 1
    again = lesion_command.main(args)
    assert again["single"] == str(out / "lesion-1.csv") and again["figure"] == str(out / "lesion-1.png")
    assert again["random_summary"] == str(out / "lesion_random_summary-1.csv")
    assert _csv(paths["single"]) == single


def test_lesion_command_on_a_plain_net_skips_what_it_can(trained, tmp_path):
    run = trained["plain8"]
    paths = lesion_command.main([str(run["checkpoint"]), "--trials", "2", "--out", str(tmp_path), "--bn-reestimate",
                                 "--bn-batches", "2"])  # fmt: skip
    single = _csv(paths["single"])
    assert [(r["removed"], r["replaced_by"], r["bn_reestimated"]) for r in single] == [
        ("none", "", "True"), ("layer1.0", "identity", "True"), ("layer2.0", "", "True"), ("layer3.0", "", "True")
    ]
    assert single[3]["acc"] == "" and "not removable" in single[3]["note"]
    assert [r["removed"] for r in _csv(paths["random"])] == ["layer1.0", "layer1.0"]  # k = 1, 2 draws
    stages = _csv(paths["stages"])
    assert [(r["stage"], r["downsampling"], r["removed"], r["drop_mean"]) for r in stages][1:] == [
        ("2", "True", "0", ""), ("3", "True", "0", "")
    ]


def test_prune_command_puts_residual_and_plain_with_their_controls_on_one_figure(trained, tmp_path):
    checkpoints = [str(trained[arch]["checkpoint"]) for arch in ("resnet8", "plain8")]
    args = [*checkpoints, "--sparsities", "0", "0.5", "0.9", "--bn-batches", "2", "--out", str(tmp_path)]
    paths = prune_command.main(args)
    rows = _csv(paths["table"])
    assert [(r["model"], r["scope"], r["sparsity"], r["method"]) for r in rows] == [
        (arch, scope, s, method)
        for arch in ("resnet8", "plain8")
        for scope in ("global", "layer")
        for s in ("0.0", "0.5", "0.9")
        for method in ("magnitude", "random")
    ]
    assert {r["finetune_steps"] for r in rows} == {"0"} and {r["bn_batches"] for r in rows} == {"2"}
    plain_intact = next(r for r in rows if r["model"] == "plain8" and r["sparsity"] == "0.0")
    assert float(plain_intact["acc_original_bn"]) == pytest.approx(trained["plain8"]["test_acc"], abs=1e-6)
    layers = _csv(paths["layers"])
    assert len(layers) == 2 * 2 * 2 * 3 * 8  # models x scopes x methods x sparsities x 8 prunable layers (7 conv, fc)
    assert {r["layer_sparsity"] for r in layers if r["scope"] == "layer" and r["sparsity"] == "0.5"} == {"0.5"}
    markdown = (tmp_path / "prune.md").read_text()
    assert "## Collapse" in markdown and "### plain8: global scope" in markdown
    assert "| layer3.0.conv2 | conv | 36864 | 0.0% | 50.0% | 90.0% |" in markdown  # layer scope: exactly s
    assert "BN statistics: re-estimated on 2 training batches" in markdown and "Fine-tuning: 0 steps" in markdown
    for name in ("prune.png", "prune_layers.png"):
        assert (tmp_path / name).stat().st_size > 0
    again = prune_command.main([*args[:2], "--sparsities", "0.5", "--scope", "layer", "--no-random-control",
                                "--no-bn-recalibrate", "--out", str(tmp_path)])  # fmt: skip
    assert sorted(again.values()) == sorted(
        str(tmp_path / f"{stem}-1.{ext}")
        for stem, ext in [("prune", "csv"), ("prune_layers", "csv"), ("prune", "md"), ("prune", "png"),
                          ("prune_layers", "png")]  # fmt: skip
    )
    rows_again = _csv(again["table"])
    assert [(r["scope"], r["method"], r["bn_batches"]) for r in rows_again] == [("layer", "magnitude", "0")] * 2
    assert rows_again[0]["acc"] == rows_again[0]["acc_original_bn"]
    assert _csv(paths["table"]) == rows  # the first run's files are untouched


def test_default_output_is_inside_the_checkpoints_run(trained):
    run = trained["resnet8"]
    paths = prune_command.main([str(run["checkpoint"]), "--sparsities", "0.5"])
    assert paths["table"] == str(run["checkpoint"].parent.parent / "prune" / "prune.csv")


@pytest.mark.parametrize(
    "command, extra, message",
    [
        ("lesion", ["--include-downsampling"], "plain8: downsampling blocks layer2.0 layer3.0 have no shortcut"),
        ("prune", ["--sparsities", "0.5", "1.0"], r"sparsity must be a fraction in [0, 1)"),
    ],
)
def test_command_refusals_are_one_message(trained, capsys, command, extra, message):
    module = lesion_command if command == "lesion" else prune_command
    with pytest.raises(SystemExit) as exit_info:
        module.main([str(trained["plain8"]["checkpoint"]), *extra])
    assert message in str(exit_info.value.code) and str(exit_info.value.code).startswith("error: ")


def test_a_checkpoint_of_another_kind_exits_with_one_line(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, other)
    result = subprocess.run(
        [sys.executable, "-m", "src.lesion", str(other)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {str(other)!r} is not a checkpoint of src.modules.ImageClassifier (hyper_parameters ['lr']; "
        "expected an 'arch' such as resnet56): train one with python -m src.cli fit"
    ]
    with pytest.raises(SystemExit, match="is not a PyTorch checkpoint"):
        prune_command.main([str(REPO_ROOT / "README.md")])


def test_pruning_a_channels_last_network(trained):
    """A model trained with channels_last: true (the fast recipe) prunes like any other."""
    run = trained["resnet8"]
    net = copy.deepcopy(run["model"].model).to(memory_format=torch.channels_last)
    rows = prune_sweep(net, _loader(run), [0.0, 0.5])
    assert rows[1]["pruned_weights"] == round(0.5 * 74_800)
    assert rows[0]["acc"] == pytest.approx(run["test_acc"], abs=1e-6)

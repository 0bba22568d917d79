"""Block lesions and the pruning sweep: on tiny trained networks, through the library and the commands."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import statistics
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import yaml

from src import lesion as lesion_command
from src import prune as prune_command
from src.analysis import (
    PlainNetworkError,
    accuracy,
    check_sparsities,
    collapse_findings,
    evaluate,
    lesion_study,
    lesioned,
    prunable_weights,
    prune_study,
    prune_sweep,
    random_lesions,
    random_summary,
    recalibrate_batch_norm,
    sgd_finetune,
    stage_summary,
)
from src.analysis.checkpoint import split_loader
from src.analysis.magnitude_pruning import prune_random, zero_count
from src.analysis.plots import plot_lesion
from src.data.folder import ImageFolderDataModule
from src.models import build_model
from src.models.blocks import branch_output, residual_blocks
from src.modules import ImageClassifier
from src.modules.batchnorm_stats import DEFAULT_BN_BATCHES, QUICK_LOOK_BN_BATCHES
from src.modules.pruning import prune_magnitude
from tests.conftest import REPO_ROOT
from tests.helpers import tiny_data, tiny_trainer
from tests.image_trees import write_tree

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
        ("none", ""),
        ("layer1.0", "identity"),
        ("layer2.0", ""),
        ("layer3.0", ""),
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
    # 3 blocks: C(3,1) = C(3,2) = 3 > 2 trials -> 2 distinct random subsets; C(3,3) = 1 -> that one, once
    assert [(r["k"], r["trial"], r["draw"]) for r in rows] == [
        (1, 0, "sampled"), (1, 1, "sampled"), (2, 0, "sampled"), (2, 1, "sampled"), (3, 0, "all"),
    ]  # fmt: skip
    assert all(len(set(r["removed"].split())) == r["k"] for r in rows)
    for k in (1, 2):
        assert len({r["removed"] for r in rows if r["k"] == k}) == 2  # without replacement: never one subset twice
    assert rows[-1]["removed"] == "layer1.0 layer2.0 layer3.0"
    assert rows == random_lesions(net, loader, ks=[1, 2, 3], trials=2, seed=7, include_downsampling=True)
    baseline = accuracy(net, loader)
    assert all(r["acc_drop"] == pytest.approx(baseline - r["acc"]) for r in rows)
    only_identity = random_lesions(net, loader, ks=[1], trials=3)  # the default: no downsampling block
    assert [(r["removed"], r["draw"]) for r in only_identity] == [("layer1.0", "all")]  # n = 1, not 3 repeats
    (summary,) = random_summary(only_identity)
    assert (summary["n"], summary["draw"]) == (1, "all")
    with pytest.raises(ValueError, match=r"k must be between 1 and the 1 removable blocks, got \[2\]"):
        random_lesions(net, loader, ks=[2])


def test_lesion_subsets_enumerate_when_few_and_never_repeat_when_sampled():
    import random

    from src.analysis.block_lesions import lesion_subsets

    pool = [SimpleNamespace(index=i, name=f"b{i}") for i in range(4)]
    subsets, how = lesion_subsets(pool, 1, 5, random.Random(0))  # 4 single blocks <= 5 trials: each once
    assert how == "all" and [[b.name for b in s] for s in subsets] == [["b0"], ["b1"], ["b2"], ["b3"]]
    subsets, how = lesion_subsets(pool, 2, 5, random.Random(0))  # C(4,2) = 6 > 5: 5 distinct pairs
    keys = {tuple(b.index for b in s) for s in subsets}
    assert how == "sampled" and len(subsets) == 5 and len(keys) == 5


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
        ("1", "False", "1", "1"),
        ("2", "True", "1", "1"),
        ("3", "True", "1", "1"),
    ]
    assert float(stages[1]["drop_mean"]) == pytest.approx(float(single[2]["acc_drop"])) and stages[1]["drop_std"] == ""
    summary = _csv(paths["random_summary"])
    assert [(r["k"], r["n"]) for r in summary] == [("1", "2"), ("2", "2")]
    accs = [float(r["acc"]) for r in random if r["k"] == "2"]
    assert float(summary[1]["acc_std"]) == pytest.approx(statistics.stdev(accs), abs=1e-4)  # ddof = 1
    settings = json.loads((out / "lesion.json").read_text())
    assert settings["command"] == "python -m src.lesion " + " ".join(args)
    assert (settings["arch"], settings["split"], settings["samples"], settings["limit_batches"]) == (
        "resnet8", "test", DATA["test_size"], None)  # fmt: skip
    assert (settings["k"], settings["trials"], settings["include_downsampling"]) == ([1, 2], 2, True)
    again = lesion_command.main(args + ["--limit-batches", "1"])
    assert again["single"] == str(out / "lesion-1.csv") and again["figure"] == str(out / "lesion-1.png")
    assert json.loads((out / "lesion-1.json").read_text())["samples"] == DATA["batch_size"]  # one batch of 32
    assert again["random_summary"] == str(out / "lesion_random_summary-1.csv")
    assert _csv(paths["single"]) == single


def test_lesion_command_on_a_plain_net_skips_what_it_can(trained, tmp_path):
    run = trained["plain8"]
    paths = lesion_command.main([str(run["checkpoint"]), "--trials", "2", "--out", str(tmp_path), "--bn-reestimate",
                                 "--bn-batches", "2"])  # fmt: skip
    single = _csv(paths["single"])
    assert [(r["removed"], r["replaced_by"], r["bn_reestimated"]) for r in single] == [
        ("none", "", "True"),
        ("layer1.0", "identity", "True"),
        ("layer2.0", "", "True"),
        ("layer3.0", "", "True"),
    ]
    assert single[3]["acc"] == "" and "not removable" in single[3]["note"]
    assert [r["removed"] for r in _csv(paths["random"])] == ["layer1.0"]  # k = 1 of 1 block: that one, once (n = 1)
    stages = _csv(paths["stages"])
    assert [(r["stage"], r["downsampling"], r["removed"], r["drop_mean"]) for r in stages][1:] == [
        ("2", "True", "0", ""),
        ("3", "True", "0", ""),
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
    assert f"Regenerate with: `python -m src.prune {' '.join(args)}`" in markdown
    for name in ("prune.png", "prune_layers.png"):
        assert (tmp_path / name).stat().st_size > 0
    again = prune_command.main([*args[:2], "--sparsities", "0.5", "--scope", "layer", "--no-random-control",
                                "--no-bn-recalibrate", "--out", str(tmp_path)])  # fmt: skip
    assert sorted(again.values()) == sorted(
        str(tmp_path / f"{stem}-1.{ext}")
        for stem, ext in [
            ("prune", "csv"),
            ("prune_layers", "csv"),
            ("prune", "md"),
            ("prune", "png"),
            ("prune_layers", "png"),
        ]  # fmt: skip
    )
    rows_again = _csv(again["table"])
    assert [(r["scope"], r["method"], r["bn_batches"]) for r in rows_again] == [("layer", "magnitude", "0")] * 2
    assert rows_again[0]["acc"] == rows_again[0]["acc_original_bn"]
    assert _csv(paths["table"]) == rows  # the first run's files are untouched


def test_the_tools_record_the_batches_and_images_they_used_not_those_asked(trained, tmp_path):
    """The training split has 4 batches: "re-estimated on 50 training batches" (what was asked) was printed where 4
    were used; prune's records had no split, image count or fine-tune images."""
    run = trained["resnet8"]
    args = ["--sparsities", "0.5", "--scope", "global", "--no-random-control", "--finetune-steps", "2"]
    paths = prune_command.main([str(run["checkpoint"]), *args, "--out", str(tmp_path / "p")])
    [row] = _csv(paths["table"])
    assert (row["split"], row["samples"], row["bn_batches"]) == ("test", str(DATA["test_size"]), "4")
    assert (row["finetune_steps"], row["finetune_images"]) == ("2", str(2 * DATA["batch_size"]))
    markdown = (tmp_path / "p" / "prune.md").read_text()
    assert f"Split: test, {DATA['test_size']} images." in markdown
    assert "re-estimated on 4 training batches (--bn-batches 50: the training split has fewer)" in markdown
    assert "Fine-tuning: 2 steps of 32 images (64 images in all)" in markdown and "not the run's test_flip" in markdown
    lesion_command.main([str(run["checkpoint"]), "--k", "1", "--trials", "1", "--bn-reestimate", "--out",
                         str(tmp_path / "l")])  # fmt: skip
    settings = json.loads((tmp_path / "l" / "lesion.json").read_text())
    assert settings["bn_batches"] == 4 and "not the run's test_flip" in settings["evaluation"]


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


# ---------------------------------------------------------------------------------------------- hand-checked cases
def _toy_net() -> torch.nn.Sequential:
    """Linear(2->4) with weight magnitudes 0.1..0.8, ReLU, Linear(4->2) with magnitudes 1..8 (signs alternate)."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 4, bias=False), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    signs = torch.tensor([1.0, -1.0] * 4)
    with torch.no_grad():
        net[0].weight.copy_((torch.arange(1, 9) / 10 * signs).view(4, 2))
        net[2].weight.copy_((torch.arange(1, 9) * signs).view(2, 4))
        net[2].bias.copy_(torch.tensor([0.0, 0.5]))
    return net


def _toy_loader(samples: int = 64, batch: int = 16):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, 2, generator=generator)
    labels = torch.randint(2, (samples,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch)


@pytest.mark.parametrize(
    "scope, sparsity, pruned",
    [
        ("global", 0.25, [4, 0]),  # the 4 smallest of all 16 weights are all in the first layer
        ("global", 0.5, [8, 0]),  # the first layer entirely: collapsed
        ("layer", 0.25, [2, 2]),
        ("layer", 0.5, [4, 4]),
    ],
)
def test_per_layer_sparsity_of_a_toy_net_for_global_and_layer_scope(scope, sparsity, pruned):
    study = prune_study(_toy_net(), _toy_loader(), [sparsity], scopes=[scope])
    assert [(r["layer"], r["kind"], r["weights"], r["pruned"]) for r in study.layers] == [
        ("0", "linear", 8, pruned[0]),
        ("2", "linear", 8, pruned[1]),
    ]
    assert [r["layer_sparsity"] for r in study.layers] == [pruned[0] / 8, pruned[1] / 8]
    (row,) = study.rows
    assert row["pruned_weights"] == sum(pruned) and row["zero_fraction"] == sum(pruned) / 16
    assert row["remaining_params"] == 18 - sum(pruned)  # 16 weights + 2 biases of the head
    assert row["max_layer_sparsity"] == max(pruned) / 8


def test_a_fully_pruned_layer_and_one_class_predictions_are_reported():
    net, loader = _toy_net(), _toy_loader()
    rows = prune_study(net, loader, [0.25, 0.5], scopes=["global"]).rows
    assert [r["collapsed_layers"] for r in rows] == ["", "0"]
    # Without its first layer the net outputs its head's bias (0, 0.5) for every input: class 1 for all.
    labels = torch.cat([labels for _, labels in loader])
    assert rows[1]["predictions_collapsed"] is True and rows[1]["top_class_share"] == 1.0
    assert rows[1]["acc"] == pytest.approx(float((labels == 1).float().mean()))
    assert rows[0]["predictions_collapsed"] is False and rows[0]["top_class_share"] < 0.99
    assert collapse_findings([{"model": "toy", **r} for r in rows]) == [
        "toy, global magnitude at sparsity 0.5: 1 layer(s) at least 99% pruned (0); "
        "predictions collapsed after pruning: 100.0% of samples get one class"
    ]
    assert evaluate(net, loader).top_class_share < 0.99  # the net itself is untouched


def test_the_random_control_prunes_the_same_number_per_layer_but_other_weights(trained):
    run = trained["resnet8"]
    net = run["model"].model
    study = prune_study(net, _loader(run), [0.5, 0.9], scopes=["global", "layer"], random_control=True, seed=3)
    magnitude, random = (
        [(r["scope"], r["sparsity"], r["layer"], r["pruned"]) for r in study.layers if r["method"] == method]
        for method in ("magnitude", "random")
    )
    assert magnitude == random and len(magnitude) == 2 * 2 * 8
    assert len({pruned / weights for pruned, weights in _global_layer_counts(study)}) > 1  # global is not uniform
    rows = {(r["scope"], r["sparsity"], r["method"]): r for r in study.rows}
    for scope in ("global", "layer"):
        twin, control = rows[(scope, 0.9, "magnitude")], rows[(scope, 0.9, "random")]
        assert twin["pruned_weights"] == control["pruned_weights"] and control["random_seed"] == 3
    # The masks differ: the random net's zeros are not the smallest weights.
    pruned = copy.deepcopy(net)
    counts = prune_magnitude(pruned, 0.5, "layer")
    control = copy.deepcopy(net)
    assert prune_random(control, counts, torch.Generator().manual_seed(0)) == counts
    pairs = zip(prunable_weights(pruned), prunable_weights(control))
    assert all(not torch.equal(a.weight_mask, b.weight_mask) for (a, _), (b, _) in pairs)


def _global_layer_counts(study):
    return [(r["pruned"], r["weights"]) for r in study.layers
            if r["scope"] == "global" and r["method"] == "magnitude" and r["sparsity"] == 0.5]  # fmt: skip


def test_bn_recalibration_gives_the_batch_statistics_of_the_pruned_net():
    """Hand check: a 1x1 conv (2 channels) + BN; prune one channel's weight, recalibrate on two batches."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1, bias=False), torch.nn.BatchNorm2d(2, momentum=0.1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([2.0, -0.5]).view(2, 1, 1, 1))
    net[1].running_mean.fill_(7.0)  # stale statistics of the intact network
    counts = prune_magnitude(net, 0.5, "layer")  # the smaller weight (-0.5, channel 1) goes
    assert counts == [1]
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 1, 3, 3, generator=generator) + i, torch.zeros(4)) for i in range(2)]
    used = recalibrate_batch_norm(net, batches, batches=5)
    assert used == 2 and net[1].momentum == 0.1 and not net.training
    # Cumulative average (momentum None): each batch counts the same; variances are the unbiased ones.
    expected_mean = sum(2.0 * x.mean() for x, _ in batches) / 2
    expected_var = sum(4.0 * x.var(unbiased=True) for x, _ in batches) / 2
    assert net[1].running_mean.tolist() == pytest.approx([float(expected_mean), 0.0], abs=1e-5)
    assert net[1].running_var.tolist() == pytest.approx([float(expected_var), 0.0], abs=1e-5)
    assert int(net[1].num_batches_tracked) == 2 and net[0].weight[1].item() == 0.0  # the mask is still on
    with pytest.raises(ValueError, match="at least 1 batch, got 0"):
        recalibrate_batch_norm(net, batches, batches=0)


def test_prune_sweep_recalibrates_bn_on_request_and_records_it(trained):
    run = trained["resnet8"]
    run["data"].setup("fit")
    train = run["data"].train_dataloader()
    net = run["model"].model
    before = {k: v.clone() for k, v in net.state_dict().items()}
    (row,) = prune_sweep(net, _loader(run), [0.0], bn_loader=train, bn_batches=3)
    assert row["bn_batches"] == 3 and row["finetune_steps"] == 0 and row["acc_finetuned"] is None
    assert row["acc_original_bn"] == pytest.approx(run["test_acc"], abs=1e-6)  # unpruned, training statistics
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # a copy was recalibrated
    tuned = prune_sweep(net, _loader(run), [0.5], finetune=sgd_finetune(train, steps=2))[0]
    assert tuned["finetune_steps"] == 2 and tuned["bn_batches"] == 0 and tuned["acc"] == tuned["acc_original_bn"]


def test_random_draws_never_pick_a_downsampling_block_unless_asked():
    torch.manual_seed(0)
    net = build_model("resnet14", 10).eval()  # 6 blocks; layer2.0 and layer3.0 downsample
    loader = _toy_image_loader()
    rows = random_lesions(net, loader, ks=[1, 2, 3, 4], trials=6, seed=1)
    drawn = {name for row in rows for name in row["removed"].split()}
    assert drawn == {"layer1.0", "layer1.1", "layer2.1", "layer3.1"}
    asked = random_lesions(net, loader, ks=[6], trials=1, include_downsampling=True)
    assert asked[0]["removed"] == "layer1.0 layer1.1 layer2.0 layer2.1 layer3.0 layer3.1"
    with pytest.raises(ValueError, match=r"k must be between 1 and the 4 removable blocks, got \[5\]"):
        random_lesions(net, loader, ks=[5])


def _toy_image_loader():
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 16, 16, generator=generator), torch.arange(8) % 10)
    return torch.utils.data.DataLoader(data, batch_size=4)


def test_bn_reestimated_lesions_leave_the_network_untouched():
    torch.manual_seed(0)
    net = build_model("resnet14", 10).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = _toy_image_loader()
    rows = lesion_study(net, loader, bn_loader=loader, bn_batches=2)
    assert all(r["bn_reestimated"] for r in rows) and len(rows) == 7
    random = random_lesions(net, loader, ks=[2], trials=2, bn_loader=loader, bn_batches=2, baseline=rows[0]["acc"])
    assert all(r["bn_reestimated"] and r["acc_drop"] == pytest.approx(rows[0]["acc"] - r["acc"]) for r in random)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [b.name for b in residual_blocks(net)] == [r["removed"] for r in rows[1:]]


def test_summaries_use_the_sample_standard_deviation():
    random = [{"k": 2, "acc": a, "acc_drop": 0.9 - a} for a in (0.5, 0.7, 0.9)]
    random.append({"k": 1, "acc": 0.8, "acc_drop": 0.1})
    summary = random_summary(random)
    assert [(s["k"], s["n"]) for s in summary] == [(1, 1), (2, 3)]
    assert summary[0]["acc_std"] is None and summary[0]["drop_std"] is None  # one draw: no spread
    assert summary[1]["acc_mean"] == pytest.approx(0.7) and summary[1]["acc_std"] == pytest.approx(0.2)  # ddof = 1
    assert summary[1]["drop_std"] == pytest.approx(0.2)
    assert (summary[1]["acc_min"], summary[1]["acc_max"]) == (0.5, 0.9)
    single = [
        {"removed": "none", "stage": 0, "downsampling": False, "acc_drop": 0.0},
        {"removed": "layer1.0", "stage": 1, "downsampling": False, "acc_drop": 0.1},
        {"removed": "layer1.1", "stage": 1, "downsampling": False, "acc_drop": 0.3},
        {"removed": "layer2.0", "stage": 2, "downsampling": True, "acc_drop": None},
        {"removed": "layer2.1", "stage": 2, "downsampling": False, "acc_drop": 0.05},
    ]
    stages = stage_summary(single)
    assert [(s["stage"], s["downsampling"], s["blocks"], s["removed"]) for s in stages] == [
        (1, False, 2, 2),
        (2, False, 1, 1),
        (2, True, 1, 0),
    ]
    assert stages[0]["drop_mean"] == pytest.approx(0.2) and stages[0]["drop_std"] == pytest.approx(0.1414214)
    assert (stages[0]["drop_min"], stages[0]["drop_max"]) == (0.1, 0.3)
    assert stages[1]["drop_std"] is None and stages[2]["drop_mean"] is None


def test_the_lesion_figure_draws_sample_std_error_bars_and_says_n(tmp_path):
    single = [
        {"removed": "none", "block_index": -1, "downsampling": False, "acc": 0.9},
        {"removed": "layer1.0", "block_index": 0, "downsampling": False, "acc": 0.8},
        {"removed": "layer2.0", "block_index": 1, "downsampling": True, "acc": None},
    ]
    random = [{"k": 1, "acc": a} for a in (0.5, 0.7, 0.9)]
    figure = plot_lesion(single, random, tmp_path / "lesion.png")
    right = figure.axes[1]
    (bars,) = right.containers[0].lines[2]
    lower, upper = bars.get_segments()[1][:, 1]
    assert upper - lower == pytest.approx(2 * 0.2)  # ± stdev (ddof = 1), not the population 0.163
    assert right.get_legend().get_texts()[0].get_text() == "n = 3 per k"
    assert "ddof = 1" in right.get_ylabel()


def test_bn_recalibration_reads_the_same_shuffled_batches_every_time():
    """Every pruned copy is recalibrated on the same images, and the caller's random state is left alone."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    generator = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 2, generator=generator), torch.zeros(64))
    shuffled = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    state = torch.random.get_rng_state()
    recalibrate_batch_norm(net, shuffled, batches=2)
    first = net[1].running_mean.clone()
    recalibrate_batch_norm(net, shuffled, batches=2)
    assert torch.equal(net[1].running_mean, first) and torch.equal(torch.random.get_rng_state(), state)
    recalibrate_batch_norm(net, shuffled, batches=2, seed=5)
    assert not torch.equal(net[1].running_mean, first)


class CountingLoader:
    """A DataLoader that counts how often it is read (``iter`` calls)."""

    def __init__(self, loader):
        self.loader, self.reads = loader, 0

    def __iter__(self):
        self.reads += 1
        return iter(self.loader)


def test_a_prune_sweep_reads_its_batches_once_and_measures_what_rereading_measured(trained, monkeypatch):
    """32 copies used to re-read (decode, augment) the same batches each; replayed, every number is unchanged."""
    from src.analysis import batch_replay

    run = trained["resnet8"]
    run["data"].setup("fit")
    options = dict(scopes=["global", "layer"], random_control=True, bn_batches=3, seed=2)

    def sweep():
        test, train = CountingLoader(_loader(run)), CountingLoader(run["data"].train_dataloader())
        rows = prune_sweep(run["model"].model, test, [0.0, 0.5, 0.9], bn_loader=train, limit_batches=1, **options)
        return rows, test.reads, train.reads

    replayed, test_reads, train_reads = sweep()
    assert (len(replayed), test_reads, train_reads) == (12, 1, 1)  # 2 scopes x 3 sparsities x 2 methods
    monkeypatch.setattr(batch_replay, "DEFAULT_MAX_BYTES", 0)  # over budget: each copy reads the loaders again
    reread, test_reads, train_reads = sweep()
    assert (test_reads, train_reads) == (1 + 2 * 12, 1 + 12)  # the first read stopped at once, then 2 evals + 1 BN
    assert reread == replayed


def test_replay_keeps_the_seeded_batches_and_leaves_the_random_state_alone():
    from src.analysis.batch_replay import replay

    generator = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 2, generator=generator), torch.arange(64))
    shuffled = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    state = torch.random.get_rng_state()
    kept = replay(shuffled, 3, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(4)
    expected = [labels for _, labels in itertools.islice(shuffled, 3)]
    assert len(kept) == 3 and all(torch.equal(k[1], e) for k, e in zip(kept, expected))
    assert replay(shuffled, 3, seed=4, max_bytes=100) is shuffled  # 3 batches of 8 x (2 floats + 1 int64) = 384 B


def test_a_quick_look_re_estimates_bn_on_fewer_batches_unless_told(trained, tmp_path):
    """``--limit-batches`` (a quick look) defaults to 10 BN batches -- most of the command's time is those passes --
    says so in prune.md, and records it in every row; an explicit ``--bn-batches`` always wins."""
    assert prune_command.parse_args(["x.ckpt"]).bn_batches == DEFAULT_BN_BATCHES == 50
    assert prune_command.parse_args(["x.ckpt", "--limit-batches", "4"]).bn_batches == QUICK_LOOK_BN_BATCHES == 10
    assert prune_command.parse_args(["x.ckpt", "--limit-batches", "4", "--bn-batches", "50"]).bn_batches == 50
    checkpoint = str(trained["resnet8"]["checkpoint"])
    args = [checkpoint, "--sparsities", "0.5", "--scope", "layer", "--no-random-control", "--limit-batches", "1"]
    paths = prune_command.main([*args, "--out", str(tmp_path)])
    (row,) = _csv(paths["table"])
    assert 1 <= int(row["bn_batches"]) <= QUICK_LOOK_BN_BATCHES  # fewer when the training split has fewer batches
    markdown = (tmp_path / "prune.md").read_text()
    assert "(a quick look; --bn-batches 50 for the full estimate)" in markdown


def test_seeded_passes_over_a_training_loader_with_workers_draw_the_same_augmented_batches(tmp_path):
    """BN re-estimated after each lesion, a fine-tune per pruned copy: each pass is seeded so that the comparisons
    are paired. A training loader's persistent workers kept their random state between passes (BN means up to 0.56
    apart between two identical calls with one worker); the tools' loaders start fresh workers at every pass."""
    root = write_tree(tmp_path / "tree", {"train": {"a": 24, "b": 24}, "test": {"a": 8, "b": 8}}, size=(16, 16))
    data = ImageFolderDataModule(str(root), preset="cifar", image_size=16, fast=False, num_workers=1, batch_size=16,
                                 val_split=8, pin_memory=False, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    train = split_loader(data, "train")
    torch.manual_seed(0)
    net = build_model("resnet8", 2)
    means, weights = [], []
    for _ in range(2):
        twin = copy.deepcopy(net)
        recalibrate_batch_norm(twin, train, 2, "cpu", seed=0)
        means.append(twin.bn1.running_mean.clone())
        tuned = copy.deepcopy(net)
        sgd_finetune(train, 2, seed=0)(tuned)
        weights.append(tuned.fc.weight.detach().clone())
    assert torch.equal(*means) and torch.equal(*weights)
    assert not torch.equal(means[0], net.bn1.running_mean)  # the statistics were re-estimated at all

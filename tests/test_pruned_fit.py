"""A fit that starts from a trained run, pruned to a parameter count (``model.init_from`` + ``model.pruning``).

The pruned points of a parameter-efficiency frontier (issue 30) are runs like any other: one tiny ResNet-8 is
trained, then fits start from it -- measured without training (``trainer.max_steps 0``) and fine-tuned -- and what
they record is checked against the pruned network built by hand, the zeros against the masks, and the report's
size and compute against the parent's.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from src import runs
from src.analysis.checkpoint import load as load_checkpoint
from src.analysis.evaluate import evaluate
from src.cli import main
from src.models.complexity import count_parameters
from src.modules.batchnorm_stats import recalibrate_batch_norm
from src.modules.pruning import prunable_layers, prune_magnitude
from src.reporting.records import collect_runs, read_run
from tests.study_runs import QUICKSTART, TINY

KEEP = 30_000  # of resnet8's 75,290 parameters


def fit(run_dir: Path, *extra: str) -> dict:
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", "resnet8", *TINY, *extra])
    return json.loads((run_dir / "efficiency.json").read_text())


def pruned_fit(run_dir: Path, parent: Path, steps: int, *extra: str) -> dict:
    pruning = json.dumps({"params": KEEP, "bn_batches": 2})
    return fit(run_dir, "--model.init_from", str(parent), "--model.pruning", pruning,
               "--trainer.max_steps", str(steps), *extra)  # fmt: skip


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("pruned") / "parent"
    fit(run_dir)
    return run_dir


def test_a_pruned_start_measured_without_training_is_the_pruned_network_built_by_hand(parent, tmp_path):
    report = pruned_fit(tmp_path / "bn_only", parent, 0)
    assert report["status"] == "finished" and report["global_step"] == 0 and report["train_images_seen"] == 0
    best = runs.best_checkpoint(str(parent))
    assert report["init_from"]["path"] == best and report["init_from"]["arch"] == "resnet8"
    # the parent's file byte for byte: what the study driver compares before it commits a pruned run with its parent
    assert report["init_from"]["sha256"] == hashlib.sha256(Path(best).read_bytes()).hexdigest()
    assert (
        report["init_from"]["train_images_seen"]
        == json.loads((parent / "efficiency.json").read_text())["train_images_seen"]
    )
    pruning = report["pruning"]
    assert pruning["params_remaining"] == KEEP and pruning["params_before"] == report["params_total"] == 75_290
    assert pruning["pruned_weights"] == 75_290 - KEEP and pruning["bn_batches_used"] == 2

    # By hand: the parent's best network, the same global magnitude mask, BN on the same seeded batches.
    model, data = load_checkpoint(best)
    net = model.model
    prune_magnitude(net, (75_290 - KEEP) / pruning["prunable_weights"], "global")
    data.setup("fit")
    recalibrate_batch_norm(net, data.train_dataloader(), 2, seed=0)
    data.setup("test")
    assert report["test_acc"] == pytest.approx(evaluate(net, data.test_dataloader()).acc, abs=1e-9)


def test_a_pruned_fine_tune_holds_its_zeros_in_every_checkpoint_and_after_a_resume(parent, tmp_path):
    run_dir = tmp_path / "tuned"
    pruned_fit(run_dir, parent, 2)  # stopped half-way ...
    report = pruned_fit(run_dir, parent, 4, "--ckpt_path", "last")  # ... and continued
    assert report["global_step"] == 4 and report["resumed_at_steps"] == [2]
    assert report["pruning"]["params_remaining"] == KEEP
    start = torch.load(runs.best_checkpoint(str(parent)), map_location="cpu", weights_only=True)["state_dict"]
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        masks = checkpoint["pruning"]["masks"]
        state = checkpoint["state_dict"]
        assert sum(int((~mask).sum()) for mask in masks.values()) == 75_290 - KEEP
        for name, mask in masks.items():
            weight = state[f"model.{name}"]
            assert bool((weight[~mask] == 0).all()), f"{path.name}: {name} has pruned weights that are not zero"
        kept = masks["layer1.0.conv1.weight"]
        changed = state["model.layer1.0.conv1.weight"][kept] != start["model.layer1.0.conv1.weight"][kept]
        assert bool(changed.any()), "the kept weights were not trained"


def test_the_report_counts_what_a_pruned_net_kept_and_what_both_trainings_cost(parent, tmp_path):
    run_dir = tmp_path / "tuned"
    report = pruned_fit(run_dir, parent, 2)
    record = read_run(run_dir, "tuned")
    assert record.status == "finished" and record.params == KEEP
    images = report["train_images_seen"] + report["init_from"]["train_images_seen"]
    assert record.train_compute == 3.0 * report["macs_per_sample"] * images
    assert not any(key.startswith("model.init_from") for key in record.settings)  # one per seed: not the variant
    assert json.loads(record.settings["model.pruning.params"]) == KEEP


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.pruning", '{"params": 100}'], r"model.pruning.params 100 cannot be reached: .* 490 to 75,290"),
        (["--model.pruning", '{"params": 30000, "sparsity": 0.5}'], "needs exactly one of params"),
        (["--model.pruning", '{"sparsity": 0.5, "scope": "stage"}'], r"scope must be one or both of"),
        (["--model.pruning", '{"sparsity": 0.5, "bn_batch": 2}'], r"unknown keys \['bn_batch'\]"),
        (["--model.arch", "plain8"], "holds a resnet8, not the plain8 this fit builds"),
        (["--model.init_from", "nowhere"], r"model.init_from 'nowhere' does not exist \(give a .ckpt file or a run"),
        (["--model.init_from", "CONFIG"], r"config.yaml' cannot be read: not a zip archive"),
    ],
)
def test_a_pruned_start_that_cannot_be_made_is_one_line(parent, tmp_path, extra, message):
    extra = [str(parent / "config.yaml") if word == "CONFIG" else word for word in extra]
    with pytest.raises(SystemExit) as refused:
        fit(tmp_path / "bad", "--model.init_from", str(parent), "--trainer.max_steps", "0", *extra)
    text = str(refused.value.code)
    assert text.startswith("error: ") and "\n" not in text and re.search(message, text), text
    assert not (tmp_path / "bad").exists()  # refused before the run directory was made: the same command can rerun


def test_max_steps_0_without_a_start_is_refused(tmp_path):
    with pytest.raises(SystemExit) as refused:
        fit(tmp_path / "nothing", "--trainer.max_steps", "0")
    assert "0 only with model.init_from" in str(refused.value.code)


def test_pruning_counts_whole_parameters_of_the_built_network():
    from src.models import build_model
    from src.modules.pruning import Pruning

    net = build_model("resnet20", 10)
    pruning = Pruning.from_config({"params": 75_290})
    sparsity = pruning.sparsity_of(net)
    prunable = sum(module.weight.numel() for _, module in prunable_layers(net))
    assert round(sparsity * prunable) == count_parameters(net) - 75_290


def test_a_channels_last_network_gets_the_masks_of_the_default_layout(parent, tmp_path):
    """torch's global pruning flattens weights with ``view``: the masks are drawn on a default-layout copy."""
    masks = {}
    for layout in ("false", "true"):
        run_dir = tmp_path / f"channels_last_{layout}"
        pruned_fit(run_dir, parent, 1, "--model.channels_last", layout)
        masks[layout] = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["pruning"]["masks"]
    assert masks["false"].keys() == masks["true"].keys()
    assert all(torch.equal(masks["false"][name], masks["true"][name]) for name in masks["false"])


def test_the_report_names_a_pruned_net_by_what_it_kept_and_leaves_the_dense_names_alone(parent, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(parent, root / "resnet8" / "seed0")
    pruned_fit(root / "resnet8-p30k" / "seed0", parent, 0)
    pruned_fit(root / "resnet8-p30k-ft" / "seed0", parent, 2, "--model.optimizer.init_args.lr", "0.01")
    records = {run.run_dir.parent.name: run for run in collect_runs(root)}
    assert records["resnet8"].variant == "resnet8" and records["resnet8"].line == "resnet"
    assert records["resnet8-p30k"].variant == "resnet8 pruned to 30,000"
    assert records["resnet8-p30k-ft"].variant == "resnet8 pruned, fine-tuned to 30,000"
    assert records["resnet8-p30k-ft"].line == "resnet8 pruned, fine-tuned"

"""The new families and a fork's own net through the command line: train, save, resume, test; bad names refused.

Each family's smallest member trains two steps on 8x8 synthetic images, continues for two more from
``last.ckpt`` in the same run directory, and is tested from its checkpoint. Bad input runs the CLI in a
subprocess: one ``error:`` line, exit status 2... and nothing written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from src.cli import main
from src.models import build_model
from src.models.complexity import count_parameters
from tests.conftest import REPO_ROOT
from tests.fork_models import TinyNet

QUICKSTART = str(REPO_ROOT / "configs" / "quickstart.yaml")
TINY = [
    "--trainer.max_epochs", "1",
    "--model.lr_scheduler.init_args.warmup_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data.image_size", "8",
    "--data.train_size", "32",
    "--data.val_size", "16",
    "--data.test_size", "16",
    "--data.batch_size", "16",
    "--data.num_workers", "0",
]  # fmt: skip
FORK_NET = ["--model.net_class", "tests.fork_models.TinyNet", "--model.net_args", json.dumps({"width": 8})]


def fit_resume_test(run_dir, *model_args: str) -> tuple[dict, dict]:
    """Fit 2 steps, continue to 4 from last.ckpt, test the last checkpoint; return efficiency.json and test.json."""
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), *model_args, *TINY, "--test_after_fit", "false"])
    first = json.loads((run_dir / "efficiency.json").read_text())
    assert first["global_step"] == 2
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), *model_args, *TINY,
          "--trainer.max_epochs", "2", "--ckpt_path", "last", "--test_after_fit", "false"])  # fmt: skip
    main(["test", "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")])
    report = json.loads((run_dir / "efficiency.json").read_text())
    tested = json.loads((run_dir / "evaluations" / "test.json").read_text())
    assert report["global_step"] == 4 and 0.0 <= tested["test_acc"] <= 1.0
    return report, tested


@pytest.mark.parametrize(
    "arch", ["resnet8_2", "plain8_2", "wrn10_2", "plain_wrn10_1", "preact_resnet8", "preact_resnet11"]
)
def test_each_family_trains_saves_resumes_and_tests(tmp_path, arch):
    report, tested = fit_resume_test(tmp_path / arch, "--model.arch", arch)
    assert report["arch"] == tested["arch"] == arch
    assert report["params_total"] == count_parameters(build_model(arch, 10))


def test_wrn_with_block_dropout_and_diagnostics(tmp_path):
    run_dir = tmp_path / "wrn"
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", "wrn10_1",
          "--model.block_dropout", "0.3", "--diagnostics.enabled", "true", "--diagnostics.every_n_steps", "1",
          *TINY, "--test_after_fit", "false"])  # fmt: skip
    records = [json.loads(line) for line in (run_dir / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1]
    # WRN-10-1: one block per stage, the last two with projections; every block has a ratio against its shortcut.
    assert records[-1]["blocks"] == ["layer1.0", "layer2.0", "layer3.0"]
    assert all(value is not None and value > 0 for value in records[-1]["branch_to_shortcut"])


def test_a_fork_net_by_class_path_gets_classes_and_channels_from_the_data(tmp_path):
    run_dir = tmp_path / "fork"
    report, tested = fit_resume_test(run_dir, *FORK_NET, "--data.num_classes", "7")
    assert report["arch"] == tested["arch"] == "TinyNet"
    (hparams,) = run_dir.rglob("hparams.yaml")  # it said the default arch, resnet20 (an audit)
    assert yaml.safe_load(hparams.read_text())["arch"] == "TinyNet"
    assert report["params_total"] == count_parameters(TinyNet(num_classes=7, width=8)) == 3 * 8 * 9 + 2 * 8 + 8 * 7 + 7
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state["model.fc.weight"].shape == (7, 8)


def test_a_fork_net_that_reads_values_in_its_forward_trains_and_is_counted(tmp_path):
    """Its MACs are counted on a CPU copy (the meta device cannot run ``.item()``; the fit failed at its start)."""
    run_dir = tmp_path / "reads"
    net = ["--model.net_class", "tests.fork_models.ValueReadingNet", "--model.net_args", json.dumps({"width": 8})]
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), *net, *TINY, "--test_after_fit", "false"])
    report = json.loads((run_dir / "efficiency.json").read_text())
    assert report["global_step"] == 2
    assert report["macs_per_sample"] == 8 * 8 * 8 * 3 * 9 + 8 * 10  # the 3x3 conv on 8x8 images, then the head


# ---------------------------------------------------------------------------------------------- bad input
def cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "src.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--model.arch", "wrn17_4"], "WRN depth 17 is not 6n+4"),
        (["--model.arch", "resnet20_0"], "width 0: the width multiplier k must be an integer >= 1"),
        (["--model.arch", "preact_plain110"], "the pre-activation family has no plain twin"),
        (["--model.net_class", "torch.optim.SGD"], "is the class SGD, not a torch.nn.Module"),
        # The project's own words, not the ImportError it replaced (the CLI printed "... has no attribute 'Nope'").
        (["--model.net_class", "tests.fork_models.Nope"], "model.net_class: cannot import 'tests.fork_models.Nope'"),
        ([*FORK_NET[:2], "--model.net_args", '{"widht": 8}'], "model.net_args: TinyNet(widht): "),
    ],
    ids=["wrn17_4", "width0", "preact_plain", "not_a_module", "no_such_class", "misspelt_net_arg"],
)
def test_bad_names_and_class_paths_are_one_error_line_and_write_nothing(tmp_path, args, says):
    result = cli("fit", "--config", QUICKSTART, *args, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr[-2000:]
    if "--model.arch" in args:  # every valid form is listed
        assert all(form in errors[0] for form in ("resnet<d>_<k>", "wrn<d>_<k>", "preact_resnet<d>", "wide_resnet"))
    assert list(tmp_path.iterdir()) == []  # no run directory, no lightning_logs/


def test_class_path_mistakes_say_what_is_wrong():
    from src.modules import ImageClassifier

    model = ImageClassifier(net_class="tests.fork_models.TinyNet", net_args={"width": 4}, num_classes=5, in_channels=1)
    assert model.hparams.arch == "TinyNet" and model.model.fc.out_features == 5
    assert model.model.features[0].in_channels == 1
    tiny = "tests.fork_models.TinyNet"
    for kwargs, says in [
        ({"net_class": tiny, "dropout": 0.2}, "apply to the named architectures only"),
        ({"net_class": tiny, "net_args": {"num_classes": 3}}, "come from the data"),
        ({"net_class": tiny, "net_args": {"depth": 3}}, "unexpected keyword argument 'depth'"),
        ({"net_class": "torch.nn.ReLU"}, "takes no num_classes"),
        ({"net_class": "tests.fork_models.Nope"}, "has no 'Nope'"),
        ({"net_class": "TinyNet"}, "not a dotted import path"),
    ]:
        with pytest.raises(ValueError, match=says):
            ImageClassifier(**kwargs)


def test_an_own_net_named_like_a_built_in_one_must_be_given_its_own_name(monkeypatch):
    """A fork's own ResNet20 class was recorded as arch 'ResNet20', read as the CIFAR resnet20 by the report (its
    family, depth, shortcut and line), and left out of the own-nets section (an audit)."""
    from src.modules import ImageClassifier
    from tests import fork_models

    own = type("ResNet20", (fork_models.TinyNet,), {"__module__": fork_models.__name__})
    monkeypatch.setattr(fork_models, "ResNet20", own, raising=False)
    with pytest.raises(
        ValueError, match=r"class name 'ResNet20' reads as the built-in network 'resnet20'.*--model.arch"
    ):
        ImageClassifier(net_class="tests.fork_models.ResNet20", num_classes=10)
    named = ImageClassifier(arch="my_resnet20", net_class="tests.fork_models.ResNet20", num_classes=10)
    assert named.hparams.arch == "my_resnet20" and isinstance(named.model, own)


@pytest.mark.parametrize("outputs", [12, 4], ids=["wider_than_the_classes", "narrower"])
def test_a_fork_net_whose_head_ignores_the_class_count_is_one_error_line(tmp_path, outputs):
    """A head wider than the data's 10 classes trained without a word; a narrower one failed inside cross-entropy."""
    net = ["--model.net_class", "tests.fork_models.FixedHeadNet", "--model.net_args", json.dumps({"outputs": outputs})]
    result = cli("fit", "--config", QUICKSTART, *net, *TINY, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"returned an output of shape (16, {outputs})" in errors[0] and "must return (16, 10)" in errors[0]

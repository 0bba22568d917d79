"""Your own network in a study, by class path with a name: planned, labelled, trained and reported as itself."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from src.reporting.records import RunRecord
from src.reporting.study_rows import aggregate
from src.sweeping.plan import plan_runs
from src.sweeping.study import StudyError, load_study, run_command
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, run_module
from tests.test_fork_family import TINY_ARGS

TINY = {"name": "tiny", "net_class": "tests.fork_models.TinyNet", "net_args": {"width": 4}}


def _study(tmp_path, **changes):
    study = {"name": "mine", "root": str(tmp_path / "logs"), "configs": [QUICKSTART], "seeds": [0, 1],
             "archs": ["resnet8", "plain8", TINY], "grid": {"model.shortcut": ["A", "B"]}, **changes}  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_a_class_path_net_is_planned_and_run_under_its_own_name(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    study = load_study(_study(tmp_path)).validate()
    runs = plan_runs(study)
    labels = [run.label for run in runs]
    # resnet8 at both shortcuts; plain8 and your net have no shortcut option: once per seed, named without it
    expected = ["resnet8-shortcutA/seed0", "resnet8-shortcutA/seed1", "resnet8-shortcutB/seed0",
                "resnet8-shortcutB/seed1", "plain8/seed0", "plain8/seed1", "tiny/seed0", "tiny/seed1"]  # fmt: skip
    assert labels == expected
    tiny = next(run for run in runs if run.variant == "tiny")
    assert tiny.run_dir == tmp_path / "logs" / "mine" / "tiny" / "seed0"
    command = run_command(study, tiny)
    at = command.index("--model.arch")
    assert command[at : at + 6] == ["--model.arch", "tiny", "--model.net_class", "tests.fork_models.TinyNet",
                                    "--model.net_args", json.dumps({"width": 4})]  # fmt: skip
    assert "--model.net_class" not in run_command(study, runs[0])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"archs": ["resnet8", "myfork.models.SmallCNN"]},
         "give it a name: {name: smallcnn, net_class: myfork.models.SmallCNN"),
        ({"archs": ["resnet8", {"name": "resnet20", "net_class": "tests.fork_models.TinyNet"}]},
         "the name 'resnet20' is a built-in architecture's: give your entry its own"),
        ({"archs": [{"name": "tiny", "net_class": "TinyNet"}]}, "'net_class' must be a dotted class path"),
        ({"archs": [{"name": "tiny", "net_class": "a.B", "width": 2}]}, "an 'archs' entry has unknown keys ['width']"),
        ({"widths": [1, 2]}, "['tiny'] are your own classes"),
        ({"archs": ["resnet8"], "args": {"model.net_class": "tests.fork_models.TinyNet"}},
         "list your own network under 'archs' as {name: smallcnn"),
    ],
)  # fmt: skip
def test_a_study_refuses_own_nets_it_cannot_label_with_the_fix(tmp_path, monkeypatch, changes, message):
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(StudyError) as error:
        load_study(_study(tmp_path, **changes)).validate()
    assert message in str(error.value)


@pytest.mark.slow
def test_a_class_path_net_beside_two_built_in_nets_is_swept_reported_and_compared_as_itself(tmp_path):
    path = _study(tmp_path, grid={}, args=TINY_ARGS, results=str(tmp_path / "results"))

    swept = run_module("src.sweep", str(path)).stdout
    assert "[6/6] tiny/seed1: test_acc" in swept and "net_class" not in swept
    record = json.loads((tmp_path / "results" / "tiny" / "seed0" / "efficiency.json").read_text())
    # TinyNet(width 4): conv 3*4*9 = 108, BN 8, linear 4*10 + 10 = 50
    assert (record["arch"], record["params_total"]) == ("tiny", 166)
    run_module("src.report", str(path), "--out", str(tmp_path / "report"))
    with open(tmp_path / "report" / "report.csv", newline="") as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"resnet8", "plain8", "tiny"}
    assert (rows["tiny"]["arch"], rows["tiny"]["n"], rows["tiny"]["params"]) == ("tiny", "2", "166")
    with open(tmp_path / "report" / "report_own_nets.csv", newline="") as handle:
        compared = list(csv.DictReader(handle))
    pairs = sorted((row["own"], row["built_in"], row["test"]) for row in compared)
    assert pairs == [("tiny", "plain8", "Welch t"), ("tiny", "resnet8", "Welch t")]
    for row in compared:
        built_in = rows[row["built_in"]]
        assert float(row["difference_acc"]) == pytest.approx(
            float(rows["tiny"]["test_acc_mean"]) - float(built_in["test_acc_mean"]), abs=1e-9
        )
        assert (row["n_own"], row["n_built_in"], row["params_built_in"]) == ("2", "2", built_in["params"])
    assert "## Your networks against the built-in ones (exploratory)" in (tmp_path / "report" / "report.md").read_text()
    # lesion applies to nets with residual blocks; yours has none and is refused with one line
    checkpoint = tmp_path / "logs" / "mine" / "tiny" / "seed0" / "checkpoints" / "last.ckpt"
    refused = run_module("src.lesion", str(checkpoint), code=1)
    assert refused.stderr.startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1


def test_an_own_net_row_is_of_its_own_kind_with_no_shortcut(tmp_path):
    """report.csv called a class-path net kind "residual" (an audit); nothing says it has shortcuts."""

    def record(variant, seed, **fields):
        return RunRecord(variant, seed, tmp_path / variant / f"seed{seed}", "finished", arch=variant, test_acc=0.5,
                         identity=(("model.arch", variant),), **fields)  # fmt: skip

    runs = [record("tiny", 0), record("tiny", 1)]
    runs += [
        record("resnet8", 0, family="cifar", depth=8),
        record("plain8", 0, family="cifar", depth=8, residual=False),
    ]
    rows = {row.variant: row for row in aggregate(runs)}
    assert [(rows[v].kind, rows[v].shortcut) for v in ("tiny", "resnet8", "plain8")] == [
        ("own", "-"),
        ("residual", "A"),
        ("plain", "-"),
    ]

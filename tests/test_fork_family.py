"""A model family written in one file of a fork trains, sweeps, reports, lesions and prunes: no core file changes.

The family is docs/fork.md's own (``myfork/twin.py``, taken from the guide's code block), registered through
the entry point the guide shows, in a temporary directory on ``PYTHONPATH``. Every command runs in a fresh
process, as a user runs them: the sweep's runs, the report, lesion and prune each find the family there.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART
from tests.test_docs_fork import blocks, section

TINY_ARGS = {
    "trainer.max_epochs": 1,
    "model.lr_scheduler.init_args.warmup_steps": 0,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
    "data.image_size": 16,
    "data.train_size": 128,
    "data.val_size": 64,
    "data.test_size": 64,
    "data.batch_size": 64,
    "data.num_workers": 0,
}


def _install_fork(root):
    """``myfork/twin.py`` from the guide, and the entry point its pyproject.toml declares (a dist-info on the path)."""
    (root / "myfork").mkdir()
    (root / "myfork" / "__init__.py").write_text("")
    (root / "myfork" / "twin.py").write_text(blocks(section("Add a model"), "python")[1])
    toml = blocks(section("Add a model"), "toml")[0]
    assert '"resnet_efficiency.families"' in toml and 'twin = "myfork.twin"' in toml
    dist = root / "myfork-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myfork\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[resnet_efficiency.families]\ntwin = myfork.twin\n")


def _run(root, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{args[0]}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_a_family_in_one_fork_file_is_swept_reported_lesioned_and_pruned(tmp_path):
    _install_fork(tmp_path)
    study = {
        "name": "twins",
        "root": str(tmp_path / "logs"),
        "configs": [QUICKSTART],
        "archs": ["twin8", "twin_plain8"],
        "widths": [1, 2],  # the family's width rule: twin8_2, twin_plain8_2
        "seeds": [0],
        "args": TINY_ARGS,
        "results": str(tmp_path / "results"),
    }
    (tmp_path / "twins.yaml").write_text(yaml.safe_dump(study))
    _run(tmp_path, "src.sweep", "twins.yaml")

    _run(tmp_path, "src.report", "twins.yaml", "--out", str(tmp_path / "report"))
    with open(tmp_path / "report" / "report.csv", newline="") as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"twin8", "twin8_2", "twin_plain8", "twin_plain8_2"}
    assert (rows["twin8"]["family"], rows["twin8"]["kind"], rows["twin8"]["shortcut"]) == ("twin", "residual", "A")
    assert (rows["twin_plain8"]["kind"], rows["twin_plain8"]["shortcut"]) == ("plain", "-")
    assert rows["twin8"]["line"] == "twin" and rows["twin8_2"]["line"] == "twin_2"
    assert rows["twin8"]["params"] == rows["twin_plain8"]["params"]  # option A: identity shortcuts add nothing

    checkpoint = next((tmp_path / "logs" / "twins" / "twin8" / "seed0" / "checkpoints").glob("epoch*.ckpt"))
    _run(tmp_path, "src.lesion", str(checkpoint), "--trials", "1", "--out", str(tmp_path / "lesion"))
    with open(tmp_path / "lesion" / "lesion.csv", newline="") as handle:
        removed = [row["removed"] for row in csv.DictReader(handle)]
    assert removed == ["none", "layer1.0", "layer2.0", "layer3.0"]  # depth 8: the intact net, then each block

    _run(tmp_path, "src.prune", str(checkpoint), "--sparsities", "0.5", "--out", str(tmp_path / "prune"))
    assert (tmp_path / "prune" / "prune.csv").is_file()

"""The fork guide's own examples run: docs/fork.md's DataModule, callback and metric, trained through the CLI.

The code is taken from the guide's code blocks, not copied here, so the guide cannot drift from what works.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "fork.md"


def section(title: str) -> str:
    text = GUIDE.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def fit_command(bash: str) -> list[str]:
    """The arguments after ``python -m src.cli`` of the first command in a bash block (continuations joined)."""
    line = next(c for c in bash.replace("\\\n", " ").splitlines() if "-m src.cli" in c)
    return shlex.split(line.split("-m src.cli", 1)[1])


def test_fork_guide_datamodule_and_callback_train_through_the_cli(tmp_path):
    data, callback = section("Add a data set"), section("Add a callback")
    package = tmp_path / "myfork"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "data.py").write_text(blocks(data, "python")[0])
    (package / "callbacks.py").write_text(blocks(callback, "python")[0])
    (package / "weight_norm.yaml").write_text(blocks(callback, "yaml")[0])
    (package / "macro.yaml").write_text(blocks(section("Add a metric"), "yaml")[0])

    args = fit_command(blocks(data, "bash")[0])  # fit --config configs/quickstart.yaml --data myfork.data.... ...
    args = [str(REPO_ROOT / a) if a.startswith("configs/") else a for a in args]
    tiny = [
        "--model.arch", "resnet8", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--model.lr_scheduler.init_args.warmup_steps", "0", "--data.train_size", "128", "--data.val_size", "64",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}  # the guide's PYTHONPATH=.
    extra = ["--config", "myfork/weight_norm.yaml", "--config", "myfork/macro.yaml"]
    command = [sys.executable, "-m", "src.cli", *args, *tiny, *extra]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    record = json.loads((run_dir / "efficiency.json").read_text())
    assert record["num_classes"] == 5 and record["input_shape"] == [3, 16, 16]  # from the DataModule, no model edit
    assert record["test_samples"] == 64  # the guide's test split: val_size images
    norms = [row for row in (run_dir / "scalars.csv").read_text().splitlines() if ",weights/l2_norm," in row]
    assert len(norms) == 1 and float(norms[0].split(",")[2]) > 0  # one validation, one value from the callback
    logged = {row.split(",")[1] for row in (run_dir / "scalars.csv").read_text().splitlines()[1:]}
    assert {"train/acc_macro", "val/acc_macro", "test/acc_macro"} <= logged  # the metric guide's YAML, no src/ edit

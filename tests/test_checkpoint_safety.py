"""A checkpoint from elsewhere is data, never code: pickled payloads and hostile class paths are refused.

Each malicious file is built here; each would run code (create a file, start a process, import a module
with side effects) if a loader trusted it. Every command that reads a checkpoint must refuse it in one
``error:`` line, and the payload must not have run.
"""

from __future__ import annotations

import builtins
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from src import runs
from src.analysis.checkpoint import CheckpointError, load
from src.class_paths import UntrustedClassError, trusted_class
from src.modules import ImageClassifier
from tests.conftest import REPO_ROOT
from tests.helpers import clean_environment, tiny_data, tiny_trainer

COMMANDS = (["src.lesion"], ["src.prune", "--sparsities", "0.5"])


class Payload:
    """Unpickled without ``weights_only``, this creates ``marker``: the stand-in for any code a pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real ResNet-8 checkpoint of a run (config.yaml beside it), trained for one epoch of tiny data."""
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = ImageClassifier("resnet8", num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.05))
    data = tiny_data()
    trainer = tiny_trainer(run_dir)
    trainer.fit(model, data)
    (run_dir / "checkpoints").mkdir()
    path = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    config = {"data": {"class_path": "src.data.synthetic.SyntheticDataModule", "init_args": {"image_size": 16}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def _edited(checkpoint: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``checkpoint`` with ``edit(dict)`` applied: what someone could send as a checkpoint."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    edit(data)
    run_dir = tmp_path / "sent"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text((checkpoint.parent.parent / "config.yaml").read_text())
    path = run_dir / "checkpoints" / "sent.ckpt"
    torch.save(data, path)
    return path


def _run(module: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *module[:1], str(path), *module[1:], "--limit-batches", "1"],
        cwd=cwd,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m[0])
def test_a_pickled_payload_is_refused_by_lesion_and_prune_and_never_runs(checkpoint, tmp_path, module):
    marker = tmp_path / "payload-ran"
    path = _edited(checkpoint, tmp_path, lambda data: data["hyper_parameters"].update(extra=Payload(marker)))
    result = _run(module, path, REPO_ROOT)
    assert not marker.exists(), "the checkpoint's pickle ran code"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(path) in line and "weights_only=True" in line


def test_a_pickled_payload_is_refused_by_cli_test(checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    path = _edited(checkpoint, tmp_path, lambda data: data.update(extra=Payload(marker)))
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "test", "--ckpt_path", str(path), "--trainer.logger", "false"],
        cwd=REPO_ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert not marker.exists() and result.returncode != 0
    assert "weights_only=True" in result.stderr and "Traceback" not in result.stderr


HOSTILE = [
    # (the key the message names, how the checkpoint is edited)
    ("run_model_class", lambda data: data.update(run_model_class="subprocess.run")),
    ("hyper_parameters.net_class", lambda data: data["hyper_parameters"].update(net_class="subprocess.Popen")),
    ("hyper_parameters._class_path", lambda data: data["hyper_parameters"].update(_class_path="os.system")),
    (
        "hyper_parameters.metrics.evil.class_path",
        lambda data: data["hyper_parameters"].update(metrics={"evil": {"class_path": "subprocess.run"}}),
    ),
    (
        "hyper_parameters._instantiator",
        lambda data: data["hyper_parameters"].update(_instantiator="subprocess.run"),
    ),
    (
        "data.class_path",
        lambda data: data.update(datamodule_hyper_parameters={"_class_path": "subprocess.run", "args": ["touch"]}),
    ),
    # Not loaded here and not under the current directory: importing it alone would act (it opens a browser).
    ("hyper_parameters.net_class", lambda data: data["hyper_parameters"].update(net_class="antigravity.Net")),
]


@pytest.mark.parametrize("key, edit", HOSTILE, ids=[f"{key}-{i}" for i, (key, _) in enumerate(HOSTILE)])
def test_a_class_path_that_is_not_the_expected_kind_is_refused_before_any_call(checkpoint, tmp_path, key, edit):
    path = _edited(checkpoint, tmp_path, edit)
    with pytest.raises(CheckpointError, match=re.escape(key)) as error:
        load(path)
    assert "\n" not in str(error.value) and "refused" in str(error.value)


def test_lesion_refuses_a_checkpoint_naming_subprocess_run_in_one_line(checkpoint, tmp_path):
    """The issue's case: a checkpoint that loads with weights_only=True but names subprocess.run as its model."""
    marker = tmp_path / "ran"
    path = _edited(
        checkpoint,
        tmp_path,
        lambda data: data.update(
            run_model_class="subprocess.run", datamodule_hyper_parameters={"_class_path": "subprocess.run"}
        ),
    )
    for module in COMMANDS:
        result = _run(module, path, REPO_ROOT)
        assert result.returncode == 1 and not marker.exists() and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: checkpoint {str(path)!r}: run_model_class 'subprocess.run' is refused: a file from elsewhere "
            "may name only a LightningModule class, and it names a function"
        ]


def test_an_unloaded_module_outside_the_current_directory_is_not_even_imported(checkpoint, tmp_path):
    path = _edited(checkpoint, tmp_path, lambda data: data["hyper_parameters"].update(net_class="antigravity.Net"))
    code = (
        "import sys; from src.analysis.checkpoint import load, CheckpointError\n"
        f"try: load({str(path)!r})\n"
        "except CheckpointError as e: print('refused:', e)\n"
        "print('imported' if 'antigravity' in sys.modules or 'webbrowser' in sys.modules else 'not imported')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=clean_environment(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "antigravity" in result.stdout
    assert result.stdout.strip().endswith("not imported")


def test_a_forks_own_module_under_the_current_directory_is_trusted(tmp_path, monkeypatch):
    """The fork case (docs/fork.md): a net class in a package of the current directory resolves, once checked."""
    package = tmp_path / "my_fork_nets"
    package.mkdir()
    (package / "__init__.py").write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\nNOT_A_CLASS = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert trusted_class("my_fork_nets.Net", torch.nn.Module, "net_class", "x.ckpt").__name__ == "Net"
    with pytest.raises(UntrustedClassError, match="it names a int"):
        trusted_class("my_fork_nets.NOT_A_CLASS", torch.nn.Module, "net_class", "x.ckpt")


def test_the_projects_own_checkpoints_still_load(checkpoint):
    model, datamodule = runs.load_checkpoint_run(str(checkpoint))
    assert isinstance(model, ImageClassifier) and model.hparams.arch == "resnet8" and not model.training
    reference = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(value, reference[key]) for key, value in model.state_dict().items())


TORCH_LOAD = re.compile(r"torch\.load\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\)")


def test_every_torch_load_in_src_reads_weights_only():
    """A grep over ``src/``: every ``torch.load`` passes ``weights_only=True``; Lightning's loader gets only
    bytes that ``weights_only=True`` accepted first (``runs.load_checkpoint_run``)."""
    loads, unsafe = 0, []
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        text = path.read_text()
        for match in TORCH_LOAD.finditer(text):
            loads += 1
            if "weights_only=True" not in match["args"]:
                unsafe.append(f"{path.relative_to(REPO_ROOT)}: torch.load({match['args']})")
        if "weights_only=False" in text:
            unsafe.append(f"{path.relative_to(REPO_ROOT)}: weights_only=False")
        for line in text.splitlines():
            if ".load_from_checkpoint(" in line and "io.BytesIO(raw)" not in line:
                unsafe.append(f"{path.relative_to(REPO_ROOT)}: {line.strip()} (not the checked bytes)")
    assert loads >= 3 and unsafe == []

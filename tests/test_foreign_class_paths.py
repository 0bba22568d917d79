"""Every name a file from elsewhere chooses is checked before anything imports or calls it.

A checkpoint's saved ``run_config`` (the defaults of ``test|validate|predict|fit --ckpt_path``), its
``hyper_parameters`` (``optimizer`` / ``lr_scheduler``, resolved by Lightning's loader), the callback and
logger entries it carries, and the configs of a committed study (``report --check``) all name code. Each
payload here is a harmless module outside the current directory whose import (or call) creates a marker
file: the marker must never appear, and the refusal must name the key, the value and what is accepted.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from src import class_paths, runs
from src.analysis.checkpoint import CheckpointError, load
from src.class_paths import UntrustedClassError, foreign_class_paths, trusted_class
from src.cli import main
from src.reporting.committed import config_problems
from tests.study_runs import QUICKSTART, TINY, resolved_config, write_run

PAYLOAD = "open({marker!r}, 'w').write('ran')\n"


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory) -> Path:
    """A genuine ``last.ckpt`` of ``src.cli fit`` (ResNet-8, tiny synthetic data): it carries a run_config."""
    run_dir = tmp_path_factory.mktemp("own") / "run"
    main(["fit", "--config", QUICKSTART, "--run_dir", str(run_dir), "--model.arch", "resnet8", *TINY,
          "--trainer.max_epochs", "1", "--test_after_fit", "false"])  # fmt: skip
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Iterator[Callable[[str, str], Path]]:
    """``write(module, code)``: a module in a folder on ``sys.path`` but outside the working directory (a
    fresh ``work/`` folder). Returns the marker its payload creates. Modules are forgotten afterwards."""
    folder, work = tmp_path / "elsewhere", tmp_path / "work"
    folder.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(folder))
    written: list[str] = []

    def write(module: str, code: str = "") -> Path:
        marker = tmp_path / f"{module}-ran"
        path = folder.joinpath(*module.split("."))
        if "." in module:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".py").write_text(code + PAYLOAD.format(marker=str(marker)))
        written.append(module.split(".")[0])
        import importlib

        importlib.invalidate_caches()
        return marker

    yield write
    for name in [name for name in sys.modules if name.split(".")[0] in written]:
        del sys.modules[name]


def _sent(checkpoint: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """A loose edited copy of ``checkpoint``: what someone could send."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    edit(data)
    path = tmp_path / "sent.ckpt"
    torch.save(data, path)
    return path


def _refused(args: list[str]) -> str:
    """The one ``error:`` line ``src.cli`` stops with."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    message = str(stopped.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


# ------------------------------------------------------------------------ 1: run_config as the CLI's defaults
def test_a_run_config_net_class_from_elsewhere_is_refused_before_import(cli_checkpoint, tmp_path, elsewhere):
    marker = elsewhere("payload_net")
    path = _sent(
        cli_checkpoint, tmp_path, lambda c: c[runs.RUN_CONFIG_KEY]["model"].update(net_class="payload_net.Net")
    )
    message = _refused(["test", "--ckpt_path", str(path), "--trainer.accelerator", "cpu"])
    assert not marker.exists(), "the checkpoint's run_config imported a module from elsewhere"
    assert "run_config.model.net_class 'payload_net.Net' is refused" in message
    assert "already loaded" in message and "current directory" in message  # what is accepted


@pytest.mark.parametrize("section", ["callbacks", "logger"])
def test_a_run_config_callback_or_logger_from_elsewhere_is_refused_before_import(
    cli_checkpoint, tmp_path, elsewhere, section
):
    marker = elsewhere("payload_entry")
    entry = {"class_path": "payload_entry.Thing", "init_args": {}}
    value = [entry] if section == "callbacks" else entry
    path = _sent(cli_checkpoint, tmp_path, lambda c: c[runs.RUN_CONFIG_KEY]["trainer"].update({section: value}))
    message = _refused(["test", "--ckpt_path", str(path), "--trainer.accelerator", "cpu"])
    assert not marker.exists(), f"the checkpoint's trainer.{section} entry was imported"
    key = "trainer.callbacks.0.class_path" if section == "callbacks" else "trainer.logger.class_path"
    assert f"run_config.{key} 'payload_entry.Thing' is refused" in message


def test_a_lambda_callback_naming_a_loaded_function_is_refused_before_it_is_called(cli_checkpoint, tmp_path, elsewhere):
    """``os.system`` in the audit: a function of a module already loaded, called with (trainer, pl_module)."""
    marker = elsewhere(
        "payload_hooks", "def touch(*args):\n    "
    )  # the import defines touch; a call creates the marker
    import payload_hooks  # noqa: F401  # loaded in this process, as ``os`` is

    assert not marker.exists()
    callback = {
        "class_path": "lightning.pytorch.callbacks.LambdaCallback",
        "init_args": {"on_test_start": "payload_hooks.touch"},
    }
    path = _sent(cli_checkpoint, tmp_path, lambda c: c[runs.RUN_CONFIG_KEY]["trainer"].update(callbacks=[callback]))
    message = _refused(["test", "--ckpt_path", str(path), "--trainer.accelerator", "cpu"])
    assert not marker.exists(), "a function named by the checkpoint was called"
    assert "run_config.trainer.callbacks.0.init_args.on_test_start 'payload_hooks.touch' is refused" in message


def test_os_system_and_builtins_are_no_callables_a_file_may_name():
    for name in ("os.system", "subprocess.run", "builtins.exec", "functools.partial"):
        with pytest.raises(UntrustedClassError, match=rf"x\.on_test_start '{name}' is refused: .*this project"):
            class_paths.trusted_name(name, "x.on_test_start", "sent.ckpt")


def test_the_names_the_project_uses_still_pass():
    from lightning.pytorch.callbacks import Callback, LearningRateMonitor
    from lightning.pytorch.loggers import Logger
    from torchmetrics import Metric

    for name, base in [
        ("torchmetrics.classification.MulticlassAccuracy", Metric),
        ("lightning.pytorch.callbacks.LearningRateMonitor", Callback),
        ("lightning.pytorch.loggers.TensorBoardLogger", Logger),
        ("lightning.pytorch.loggers.CSVLogger", Logger),
        ("torch.optim.SGD", torch.optim.Optimizer),
        ("torch.optim.lr_scheduler.MultiStepLR", torch.optim.lr_scheduler.LRScheduler),
        ("src.modules.WarmupCosineLR", torch.optim.lr_scheduler.LRScheduler),
        ("src.callbacks.CompileModel", Callback),
    ]:
        class_paths.trusted_name(name, "key", "sent.ckpt", base)
    class_paths.trusted_name(
        "src.modules.classifier.paper_sgd", "model.optimizer", "sent.ckpt"
    )  # a function of the project
    assert issubclass(trusted_class("lightning.pytorch.callbacks.LearningRateMonitor", Callback, "k", "s"),
                      LearningRateMonitor)  # fmt: skip
    class_paths.trusted_name(
        "efficiency.json", "efficiency.filename", "sent.ckpt"
    )  # names nothing importable: plain data


def test_the_projects_own_cli_checkpoint_still_tests(cli_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["test", "--ckpt_path", str(cli_checkpoint), "--trainer.accelerator", "cpu"])


# ------------------------------------------------------------------------ 2: hyper_parameters resolved by Lightning
@pytest.mark.parametrize("key", ["optimizer", "lr_scheduler"])
def test_lesion_and_prune_loading_refuse_a_callable_hyperparameter_from_elsewhere(
    cli_checkpoint, tmp_path, elsewhere, key
):
    marker = elsewhere("payload_hparam")
    value = "payload_hparam.nothing" if key == "optimizer" else {"class_path": "payload_hparam.Schedule"}
    path = _sent(cli_checkpoint, tmp_path, lambda c: c["hyper_parameters"].update({key: value}))
    with pytest.raises(CheckpointError, match=rf"hyper_parameters\.{key}(\.class_path)? 'payload_hparam\.") as error:
        load(path)
    assert not marker.exists(), f"hyper_parameters.{key} was imported by the loader"
    assert "refused" in str(error.value) and "\n" not in str(error.value)


def test_the_projects_own_cli_checkpoint_still_loads_for_lesion(cli_checkpoint):
    model, datamodule = load(cli_checkpoint)
    assert model.hparams.arch == "resnet8" and datamodule is not None


# ------------------------------------------------------------------------ 3: a submodule is not its package
def test_a_submodule_of_a_loaded_package_is_not_trusted_for_its_package(tmp_path, elsewhere):
    (tmp_path / "elsewhere" / "payload_pkg").mkdir()
    (tmp_path / "elsewhere" / "payload_pkg" / "__init__.py").write_text("")
    marker = elsewhere("payload_pkg.evil")
    import payload_pkg  # noqa: F401  # the package is loaded, its submodule is not

    with pytest.raises(UntrustedClassError, match="'payload_pkg.evil'"):
        trusted_class("payload_pkg.evil.Net", nn.Module, "hyper_parameters.net_class", "sent.ckpt")
    assert not marker.exists() and "payload_pkg.evil" not in sys.modules


def test_a_main_module_is_never_trusted(cli_checkpoint, tmp_path):
    assert "unittest.__main__" not in sys.modules
    path = _sent(cli_checkpoint, tmp_path, lambda c: c["hyper_parameters"].update(net_class="unittest.__main__.main"))
    with pytest.raises(CheckpointError, match=r"hyper_parameters\.net_class 'unittest\.__main__\.main' is refused"):
        load(path)
    assert "unittest.__main__" not in sys.modules
    with pytest.raises(UntrustedClassError, match="__main__"):
        trusted_class("__main__.Net", nn.Module, "net_class", "sent.ckpt")


# ------------------------------------------------------------------------ 4: report --check
def _committed_study(tmp_path: Path, **study: object) -> Path:
    results = tmp_path / "results"
    run_dir = results / "resnet8" / "seed0"
    write_run(run_dir, "resnet8", 0, 0.8, 1000, config=resolved_config("resnet8", 0, run_dir))
    study = {"name": "s", "configs": [QUICKSTART], "archs": ["resnet8"], "results": str(results), **study}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    (results / "results.json").write_text(json.dumps({"study": "s", "study_file": str(tmp_path / "s.yaml")}))
    return results


def test_report_check_treats_every_dotted_name_of_a_study_as_an_import(tmp_path, elsewhere):
    marker = elsewhere("payload_study")
    results = _committed_study(tmp_path, args={"model.optimizer": "payload_study.nothing"})
    problems = config_problems(results)
    assert not marker.exists(), "report --check imported a module the committed study names"
    assert len(problems) == 1 and "(payload_study.nothing)" in problems[0] and "does not import it" in problems[0]


def test_report_check_follows_a_config_file_a_config_names(tmp_path, elsewhere):
    marker = elsewhere("payload_nested")
    nested = tmp_path / "optimizer.yaml"
    nested.write_text(yaml.safe_dump({"class_path": "payload_nested.Opt"}))
    config = tmp_path / "extra.yaml"
    config.write_text(yaml.safe_dump({"model": {"optimizer": str(nested)}}))
    assert foreign_class_paths({"model": {"optimizer": str(nested)}}) == []  # the file's content is checked by:
    results = _committed_study(tmp_path, configs=[QUICKSTART, str(config)])
    problems = config_problems(results)
    assert not marker.exists()
    assert len(problems) == 1 and "payload_nested.Opt" in problems[0]


def test_report_check_still_resolves_and_compares_a_studys_own_configs(tmp_path):
    """The quickstart names torch, lightning and src classes and files (efficiency.json): none is foreign."""
    [problem] = config_problems(_committed_study(tmp_path))
    assert "names code" not in problem and "config differs from what" in problem  # resolved, then compared


# ------------------------------------------------------------------------ bypasses a second look found
def test_a_function_reached_through_a_trusted_modules_attribute_is_refused():
    """jsonargparse resolves ``torch.os.system`` as ``getattr(torch, "os").system``: the name is judged by what it
    reaches, not by the trusted package it passes through."""
    for name in ("torch.os.system", "torch.builtins.exec", "src.class_paths.importlib.import_module"):
        with pytest.raises(UntrustedClassError, match=rf"x\.on_test_end '{re.escape(name)}' is refused"):
            class_paths.trusted_name(name, "x.on_test_end", "sent.ckpt")
    class_paths.trusted_name("torch.optim.SGD", "model.optimizer", "sent.ckpt")  # a module's own class still passes


def test_a_callback_list_given_as_yaml_text_is_searched_too(cli_checkpoint, tmp_path, elsewhere):
    """A string where a list is expected is parsed as YAML by jsonargparse, class paths and all."""
    marker = elsewhere("payload_text")
    path = _sent(
        cli_checkpoint, tmp_path,
        lambda c: c[runs.RUN_CONFIG_KEY]["trainer"].update(callbacks="[{class_path: payload_text.Thing}]"),
    )  # fmt: skip
    message = _refused(["test", "--ckpt_path", str(path), "--trainer.accelerator", "cpu"])
    assert not marker.exists(), "a class path inside a YAML string was imported"
    assert "'payload_text.Thing' is refused" in message

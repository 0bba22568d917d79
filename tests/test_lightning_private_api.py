"""The private parts of LightningCLI and argparse that ``src.cli_support`` relies on, pinned.

``ResNetCLI`` (``src/cli_support/lightning_cli.py``, the one file that touches them) overrides or calls
methods Lightning does not promise to keep. A Lightning release that renames one, or changes its arguments,
fails here by name, instead of the CLI silently losing a behaviour (an override that is never called).
"""

from __future__ import annotations

import inspect

import pytest
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from src.cli_support.lightning_cli import ResNetCLI, _ParseOnlyCLI, resolved_config

# name -> the parameters (after self) our code passes or overrides with
OVERRIDDEN = {
    "_run_subcommand": ["subcommand"],
    "_parse_ckpt_path": [],
    "_prepare_subcommand_kwargs": ["subcommand"],
    "_set_seed": [],
}
CALLED = {
    "_get": ["config", "key", "default"],
    "_parser": ["subcommand"],
    "_instantiate_trainer": ["config", "callbacks"],
}


@pytest.mark.parametrize("name, parameters", [*OVERRIDDEN.items(), *CALLED.items()])
def test_the_private_lightningcli_methods_we_use_exist_with_the_arguments_we_pass(name, parameters):
    method = getattr(LightningCLI, name, None)
    assert callable(method), f"LightningCLI.{name} is gone: update src/cli_support/lightning_cli.py"
    found = [p for p in inspect.signature(method).parameters if p != "self"]
    assert found == parameters, f"LightningCLI.{name}{tuple(found)} changed from {tuple(parameters)}"


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_each_override_is_called_by_lightningcli_itself(name):
    """An override only works while Lightning's own code calls the method by that name."""
    callers = inspect.getsource(LightningCLI)
    assert f"self.{name}(" in callers, f"LightningCLI no longer calls self.{name}(): ResNetCLI's override is dead"
    assert name in vars(ResNetCLI) or name in vars(_ParseOnlyCLI)


def test_the_private_attributes_we_read_are_set():
    assert "_subcommand_parsers" in inspect.getsource(LightningCLI)
    parser = LightningArgumentParser()
    assert isinstance(parser._option_string_actions, dict) and "--help" in parser._option_string_actions


def test_the_parse_only_cli_still_parses_without_building_anything():
    """``resolved_config`` goes through ``_set_seed`` / ``before_instantiate_classes`` and ``_parser``."""
    config = resolved_config(["fit", "--config", "configs/quickstart.yaml", "--seed_everything", "3"])
    assert config["seed_everything"] == 3 and config["model"]["arch"]

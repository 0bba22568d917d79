"""``resolved_config`` keeps one parser per process: every command still resolves as on a parser of its own.

The report's ``--check`` and the sweep resolve every run of a study; building LightningCLI's parser once instead
of per run is what keeps that linear cost small. These tests hold the reuse to its promise: the same config as a
fresh parser gives, in any order, and a checkpoint's settings never leak into the next command.
"""

from __future__ import annotations

import torch

from src.cli_support import lightning_cli
from src.cli_support.lightning_cli import _parse_only, parsed_config, resolved_config
from tests.study_runs import QUICKSTART

COMMANDS = [
    ["fit", "--config", QUICKSTART, "--model.arch", "resnet8", "--seed_everything", "0"],
    ["fit", "--config", "configs/cifar10/resnet20.yaml", "--model.arch", "plain20", "--seed_everything", "7"],
    ["fit", "--config", QUICKSTART, "--config", "configs/debug/limit_batches.yaml", "--model.dropout", "0.25"],
    [
        "fit",
        "--config",
        "configs/cifar10_folder/resnet20_fast.yaml",
        "--data.root",
        "nowhere",
        "--model.metrics",
        '{"acc_macro": {"class_path": "torchmetrics.classification.MulticlassAccuracy", '
        '"init_args": {"average": "macro"}}}',
    ],  # fmt: skip
    ["test", "--config", QUICKSTART, "--model.shortcut", "B"],
]


def fresh(args: list[str]) -> dict:
    """What a parser of its own resolves ``args`` to (resolved_config before it kept its parser)."""
    return parsed_config(_parse_only(args))


def test_one_parser_resolves_every_command_as_a_parser_of_its_own_would(monkeypatch):
    monkeypatch.setattr(lightning_cli, "_PARSERS", {})
    built = []
    monkeypatch.setattr(lightning_cli, "_parse_only", lambda args: built.append(args) or _parse_only(args))
    order = [*COMMANDS, *reversed(COMMANDS), COMMANDS[0]]  # each after the others: nothing carries over
    resolved = [resolved_config(args) for args in order]
    assert len(built) == 1  # the parser is built once, not per command
    expected = {i: fresh(args) for i, args in enumerate(COMMANDS)}
    for args, config in zip(order, resolved, strict=True):
        assert config == expected[COMMANDS.index(args)], args
    assert resolved[0]["model"]["arch"] == "resnet8" and resolved[0]["seed_everything"] == 0
    assert resolved[1]["model"]["arch"] == "plain20" and resolved[2]["model"]["dropout"] == 0.25
    assert resolved[3]["model"]["metrics"]["acc_macro"]["init_args"]["average"] == "macro"


def test_a_checkpoints_settings_stay_with_its_own_command(tmp_path, monkeypatch):
    """``--ckpt_path`` makes the checkpoint's config the parser's defaults: that parser is never reused."""
    monkeypatch.setattr(lightning_cli, "_PARSERS", {})
    checkpoint = tmp_path / "trained.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "hyper_parameters": {"dropout": 0.3}}, checkpoint)
    plain = ["fit", "--config", QUICKSTART]
    before = resolved_config(plain)
    from_checkpoint = resolved_config([*plain, "--ckpt_path", str(checkpoint)])
    assert from_checkpoint["model"]["dropout"] == 0.3 and before["model"]["dropout"] == 0.0
    assert resolved_config(plain) == before

"""The ``--config`` files named on a command line, and what they hold: one reading for every part of the CLI.

Why one home: the checkpoint a command starts from (``--ckpt_path`` in a config file) and the message for a
mistyped key (which file holds it) both need the config files before jsonargparse has parsed them; read twice,
two spellings of the command line (``-c FILE``, ``--config=FILE``) would drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml

from src import runs

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def early_parser() -> argparse.ArgumentParser:
    """An argparse parser for a first look at the command line: it knows ``-c/--config`` (repeatable) only.

    Add what else the look needs; read it with ``parse_known_args``. No abbreviations: ``--conf`` is not
    ``--config`` here either.
    """
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("-c", "--config", action="append", default=[])
    return early


def config_files(argv: Sequence[str]) -> list[str]:
    """The files given as ``--config FILE`` / ``--config=FILE`` / ``-c FILE``, in order (none for a line argparse
    cannot read, such as a trailing ``--config`` without a file: the real parse reports that)."""
    early = early_parser()
    early.exit_on_error = False
    try:
        known, _ = early.parse_known_args(list(argv))
    except argparse.ArgumentError:
        return []
    return list(known.config)


def read_config_file(path: str) -> dict[str, Any]:
    """A ``--config`` file's settings; a file that is not YAML, empty, or not a mapping is a one-line error."""
    try:
        with open(path) as handle:
            loaded = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise runs.RunError(
            f"config file '{path}' is not valid YAML{where}: {problem}; fix the file (indentation, ':' after keys)"
        ) from None
    except OSError as error:
        raise runs.RunError(f"cannot read config file '{path}': {error.strerror}") from None
    if loaded is None:
        raise runs.RunError(
            f"config file '{path}' is empty; a config is a YAML mapping of settings such as 'trainer:', 'model:', "
            "'data:' (see configs/quickstart.yaml)"
        )
    if not isinstance(loaded, dict):
        raise runs.RunError(
            f"config file '{path}' holds a YAML {type(loaded).__name__}, not a mapping of settings such as "
            "'trainer:', 'model:', 'data:' (see configs/quickstart.yaml)"
        )
    return loaded


def config_files_with_key(argv: Sequence[str], key: str) -> list[str]:
    """The config files on the command line that set ``key`` (dotted: ``trainer.max_step``), nested or flat.

    Why: the parser merges every file before it checks keys, so its message cannot say which file holds the typo.
    A file that cannot be read is skipped (this serves an error message, which must not fail itself).
    """
    found = []
    for name in config_files(argv):
        try:
            loaded = read_config_file(name)
        except runs.RunError:
            continue
        if has_key(loaded, key.split(".")):
            found.append(name)
    return found


def has_key(tree: Any, parts: list[str]) -> bool:
    """Whether the mapping ``tree`` holds the dotted key ``parts`` (``a: {b: 1}`` or ``a.b: 1``, also under a
    subcommand's name: ``fit: {trainer: ...}``)."""
    if not isinstance(tree, dict) or not parts:
        return False
    for split in range(len(parts), 0, -1):
        head = ".".join(parts[:split])
        if head in tree and (split == len(parts) or has_key(tree[head], parts[split:])):
            return True
    return any(has_key(tree[name], parts) for name in SUBCOMMANDS if name in tree)

"""A ``--ckpt_path`` checkpoint as the command's starting point: its saved config becomes the defaults.

Why: ``test --ckpt_path X`` (or ``fit --ckpt_path last``) needs nothing but the checkpoint, because every
checkpoint ``src.cli`` writes carries the run's resolved config. What the user gives still wins; and
unlike Lightning's own ``--ckpt_path`` handling, the checkpoint never overrides the user's config: a
checkpoint of another network is an error (``check_fits_model``), never a silent load.
"""

from __future__ import annotations

import os
from typing import Any

from src import runs
from src.class_paths import UntrustedClassError
from src.cli_support import config_files
from src.cli_support.config_files import SUBCOMMANDS, read_config_file
from src.runs.checkpoints import check_names

# Parts of a checkpoint's saved config that become the defaults of a command given that checkpoint.
CHECKPOINT_CONFIG_KEYS = ("seed_everything", "trainer", "model", "data", "checkpoint", "efficiency", "test_after_fit")
# Settings that define the network's weights: a checkpoint with others cannot belong to this model.
NETWORK_HPARAMS = ("arch", "num_classes", "in_channels", "shortcut")
RUN_CHECKPOINTS = ("last", "best", "hpc")  # --ckpt_path words that name a checkpoint of a run
# What a fit that continues a run may set otherwise than the run did: the machine (machine_settings), the budget
# (a longer run, warned about), where and how it reports, where the same data lies (data.json's digest guards its
# content). Anything else would change what the run computes half-way, its files mixing two configs.
RESUME_MAY_DIFFER = (
    "ckpt_path", "run_dir", "seed_everything", "test_after_fit", "trainer.max_steps", "trainer.max_epochs",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.plugins",
    "trainer.sync_batchnorm", "trainer.precision", "trainer.callbacks", "trainer.logger", "trainer.default_root_dir",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "data.init_args.num_workers",
    "data.init_args.pin_memory", "data.init_args.root", "data.init_args.data_dir", "data.init_args.cache_dir",
    "data.init_args.allow_changed_data", "data.init_args.fast_max_gb", "checkpoint.dirpath", "efficiency",
    "diagnostics",
)  # fmt: skip


def states_callbacks(argv: list[str], files: list[str]) -> bool:
    """Whether a command names trainer callbacks itself (``--trainer.callbacks[+]=``, or a config file that does).

    Resuming with the run's own command restores the checkpoint's callbacks *and* re-applies the
    command's: a ``callbacks+=`` (``configs/trainer/compile.yaml``, a sweep's extra callback) would then
    add the same callback twice on every resume. A command that states callbacks gives them all.
    """
    if any(arg.split("=", 1)[0].rstrip("+") == "--trainer.callbacks" for arg in argv):
        return True
    for config_file in files:
        if os.path.isfile(config_file):
            trainer = read_config_file(config_file).get("trainer")
            if isinstance(trainer, dict) and ("callbacks" in trainer or "callbacks+" in trainer):
                return True
    return False


def early_settings(argv: list[str]) -> tuple[str, str | None, str | None, list[str]] | None:
    """``(subcommand, ckpt_path, run_dir, config files)`` read before the real parse, ``None`` for no subcommand.

    ``--ckpt_path`` and ``--run_dir`` may come from the command line or a ``--config`` file (later files
    win, the command line over all). ``--ckpt_path last`` with neither a run nor a config is an error here.
    """
    early = config_files.early_parser()
    early.add_argument("subcommand", nargs="?")
    early.add_argument("--ckpt_path")
    early.add_argument("--run_dir")
    known, _ = early.parse_known_args(argv)
    if known.subcommand not in SUBCOMMANDS:
        return None
    settings = {"ckpt_path": known.ckpt_path, "run_dir": known.run_dir}
    for config_file in known.config:  # later files win, the command line wins over all
        if os.path.isfile(config_file):
            loaded = read_config_file(config_file)
            for key in settings:
                if loaded.get(key) is not None and getattr(known, key) is None:
                    settings[key] = loaded[key]
    ckpt_path = settings["ckpt_path"]
    if ckpt_path in RUN_CHECKPOINTS and not settings["run_dir"] and not known.config:
        raise runs.RunError(
            f"--ckpt_path {ckpt_path} names a checkpoint of a run, but no run is given: add --run_dir DIR "
            "(the run's directory, e.g. lightning_logs/default/version_0), or give the checkpoint's file path"
        )
    return known.subcommand, ckpt_path, settings["run_dir"], known.config


def checkpoint_summary(path: str) -> dict[str, Any]:
    """What a command needs of its checkpoint: path, hyperparameters, tensor shapes, step, saved configs."""
    checkpoint, why = runs.read_checkpoint(path)
    if checkpoint is None:  # a truncated file, pickled objects, or not a checkpoint at all
        raise runs.UnreadableCheckpoint(path, why or "unreadable")
    try:
        runs.check_classes(checkpoint, path)  # its class paths are data: refused unless they name the right kind
    except UntrustedClassError as error:
        raise runs.RunError(str(error)) from None
    return {
        "path": path,
        "hparams": dict(checkpoint.get("hyper_parameters") or {}),
        "shapes": {key: tuple(value.shape) for key, value in (checkpoint.get("state_dict") or {}).items()},
        "global_step": checkpoint.get("global_step"),
        "run_config": runs.checkpoint_run_config(checkpoint),
        "data": runs.datamodule_config(checkpoint),
    }


def defaults_from_checkpoint(checkpoint: dict[str, Any], subcommand: str) -> dict[str, Any]:
    """Flat ``{"model.arch": ..., "data": {...}, "trainer.max_steps": ...}`` from a ``checkpoint_summary``.

    The parser imports what the defaults name (callbacks, loggers, ``model.net_class``, an optimizer given
    by name) as it takes them, before any other check: a name that is not trusted code is a ``RunError``
    here (``src.runs.checkpoints.check_names``), whoever built the summary.
    """
    config = checkpoint["run_config"]
    if config is None:  # not written by this CLI: the model's and the data's hyperparameters
        model = {k: v for k, v in checkpoint["hparams"].items() if not k.startswith("_")}
        config = {"model": model, "data": checkpoint["data"]}
    defaults: dict[str, Any] = {}
    for key in CHECKPOINT_CONFIG_KEYS:
        if key == "test_after_fit" and subcommand != "fit":
            continue
        value = config.get(key)
        if value is None:
            continue
        if key in ("trainer", "model", "checkpoint", "efficiency") and isinstance(value, dict):
            for inner, inner_value in value.items():
                if key == "model" and inner in ("num_classes", "in_channels"):
                    continue  # linked from the DataModule
                defaults[f"{key}.{inner}"] = inner_value
        else:
            defaults[key] = value
    try:
        check_names(defaults, "", checkpoint["path"])
    except UntrustedClassError as error:
        raise runs.RunError(str(error)) from None
    return defaults


def check_fits_model(checkpoint: dict[str, Any], hparams: dict[str, Any], shapes: dict[str, tuple]) -> None:
    """A checkpoint of another network (architecture, classes, shortcut, tensors) is an error, never a silent load.

    ``hparams`` / ``shapes``: of the model the config builds (``model.hparams``, its state dict's shapes).
    """
    saved = checkpoint["hparams"]
    differs = [key for key in NETWORK_HPARAMS if key in saved and key in hparams and saved[key] != hparams[key]]
    wrong = sorted(set(shapes) ^ set(checkpoint["shapes"])) + [
        key for key in shapes if key in checkpoint["shapes"] and shapes[key] != checkpoint["shapes"][key]
    ]
    if differs or wrong:
        have = ", ".join(f"{key}={saved.get(key)!r}" for key in differs) or f"different tensors ({wrong[0]}, ...)"
        want = ", ".join(f"{key}={hparams.get(key)!r}" for key in differs) or "other tensors"
        raise runs.RunError(
            f"checkpoint '{checkpoint['path']}' holds a network with {have}, but the config builds {want}; "
            "leave model and data settings out to take them from the checkpoint, or give its own config"
        )


def refuse_other_config(checkpoint: dict[str, Any], config: dict[str, Any], run_dir: str) -> None:
    """A fit that continues a run must compute what the run computed: ``RunError`` naming the first settings that
    differ from the checkpoint's config (``config``: this command's, dumped), except ``RESUME_MAY_DIFFER``."""
    saved = checkpoint.get("run_config")
    if not isinstance(saved, dict):
        return  # a checkpoint not written by this CLI: nothing to compare with
    before, now = runs.flatten(saved), runs.flatten(config)
    differ = [
        key
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
        and not any(key == allowed or key.startswith(allowed + ".") for allowed in RESUME_MAY_DIFFER)
    ]
    if differ:
        shown = ", ".join(f"{key} {before.get(key)!r} -> {now.get(key)!r}" for key in differ[:3])
        raise runs.RunError(
            f"the run '{run_dir}' was trained with other settings than this resume gives ({shown}"
            f"{', ...' if len(differ) > 3 else ''}): continuing it would mix two configs in one run. Resume without "
            "them (the checkpoint's settings are the defaults), or start a new run in another directory"
        )


def resume_changes(checkpoint: dict[str, Any], trainer: Any) -> str | None:
    """The warning for a resume with longer ``max_steps`` / ``max_epochs``, or ``None``: the LR schedule
    is restored from the checkpoint as it was and is not extended. ``trainer``: the command's trainer config."""
    saved = (checkpoint["run_config"] or {}).get("trainer") or {}
    changed = [
        f"{key} {saved[key]} -> {trainer.get(key)}"
        for key in ("max_steps", "max_epochs")
        if key in saved and saved[key] != trainer.get(key)
    ]
    if not changed:
        return None
    return (
        f"Resuming with {', '.join(changed)}: training runs to the new limit, but the learning-rate "
        "schedule is restored from the checkpoint as it was (milestones, total_steps) and is NOT "
        "extended; to change it, set the scheduler's own arguments in a new run."
    )

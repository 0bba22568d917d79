"""Command line: ``python -m src.cli fit|validate|test|predict --config configs/....yaml``.

LightningCLI with this project's defaults:

* the model is ``ImageClassifier`` (``--model.arch resnet56``); the DataModule is chosen by
  short class name (``--data SyntheticDataModule``, ``--data CIFARDataModule``), and its
  ``num_classes`` and ``in_channels`` are linked into the model;
* one directory per run (``src.runs`` describes it): ``--run_dir DIR``, or a fresh
  ``lightning_logs/<logger name>/version_N``; TensorBoard, checkpoints, config, ``efficiency.json``
  and Lightning's SLURM requeue checkpoints all go there (it is the Trainer's ``default_root_dir``),
  so nothing one run writes can be picked up by another; CSV, W&B and MLflow loggers get one logger
  run per run directory (``src.loggers``), and every run writes ``scalars.csv``, its curves whatever
  the logger (``src.callbacks.metrics_record``);
* ``fit --ckpt_path last|FILE`` continues *that* run in its own directory (weights, optimizer,
  schedule, loop counters, random state, best checkpoint, efficiency record); ``validate``,
  ``test`` and ``predict`` need nothing but ``--ckpt_path``: the checkpoint carries the config;
* Rich progress bar in a terminal (plain progress lines when stdout is a file), learning-rate monitor;
* always-on callbacks configured from YAML under their own keys: ``checkpoint``
  (best by ``val/acc`` + last) and ``efficiency`` (parameters, MACs, throughput, accuracy per
  parameter, ``efficiency.json``);
* ``test_after_fit: true`` tests the best checkpoint right after ``fit``, in the same run
  directory;
* the resolved config is saved with each run and never overwrites an earlier one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import os
import re
import shutil
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src import machine_settings, runs, slurm_job
from src.callbacks import LineProgress, ParameterEfficiency, TrainingDiagnostics
from src.callbacks.checkpoint_io import AtomicCheckpointIO
from src.callbacks.divergence import DivergenceGuard, TrainingDiverged
from src.callbacks.metrics_record import MetricsRecord
from src.callbacks.predictions import PredictionWriter
from src.callbacks.preemption import SaveOnSigterm
from src.callbacks.resume import EpochStartResume, RandomState, RunCheckpoint, ValidateLastStep
from src.data import BatchSizeError, DataError, DatasetNotFoundError, ImageClassificationDataModule
from src.data.cifar import CIFARDataModule  # noqa: F401  (registers the short name)
from src.data.folder import ImageFolderDataModule  # noqa: F401  (registers the short name)
from src.data.synthetic import SyntheticDataModule  # noqa: F401  (registers the short name)
from src.files import disk_error_message, free_path
from src.loggers import LoggerRunIds, RunTrainer, is_directory_logger, point_logger_at_run
from src.modules import ImageClassifier

LOG_ROOT = "lightning_logs"
DEFAULT_LOGGER_NAME = "default"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Parts of a checkpoint's saved config that become the defaults of a command given that checkpoint.
CHECKPOINT_CONFIG_KEYS = ("seed_everything", "trainer", "model", "data", "checkpoint", "efficiency", "test_after_fit")
# "<pid>:<run dir>" of the process that chose a fresh run directory: DDP processes it launches join that run.
RUN_DIR_ENV = "SRC_CLI_RUN_DIR"
# Settings that define the network's weights: a checkpoint with others cannot belong to this model.
NETWORK_HPARAMS = ("arch", "num_classes", "in_channels", "shortcut")


def _one_line(message: str) -> str:
    """jsonargparse's multi-line type errors as one line: the key, the bad value, what is valid."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)"', lines[0]) if lines else None
    given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None)
    expected = [line[len("- Expected a ") :] for line in lines if line.startswith("- Expected a ")]
    nested = _nested_one_line(lines)
    if nested is not None:
        return nested
    if key and given is not None and expected:
        valid = " or ".join(expected).replace("typing.Literal", "one of ").replace("<class 'NoneType'>", "null")
        return f"--{key[1]}: invalid value {given!r}; valid: {valid}"
    return " ".join(lines)


TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _nested_one_line(lines: list[str]) -> str | None:
    """A bad value of a subclass's argument (``--data.init_args.batch_size 1.5``): its full key, value, type.

    jsonargparse reports it as the outer key (``data``) failing every Union subtype, with the inner
    ``Parser key "batch_size": Expected a <class 'int'>. Got value: 1.5`` buried in the list.
    """
    keys: list[str] = []
    for line in lines:
        if line.startswith("- Problem with given class_path"):
            keys.append("init_args")
            continue
        match = re.match(r'Parser key "([^"]+)"', line)
        if match:
            keys.append(match[1])
            continue
        bad = re.match(r"Expected a (.+?)\. Got value: (.*)$", line)
        if bad and len(keys) > 1:
            kind = re.sub(r"<class '(\w+)'>", lambda m: TYPE_NAMES.get(m[1], m[1]), bad[1])
            return f"--{'.'.join(keys)}: invalid value {bad[2].strip()!r}; valid: {kind}"
    return None


def states_callbacks(argv: list[str], config_files: list[str]) -> bool:
    """Whether a command names trainer callbacks itself (``--trainer.callbacks[+]=``, or a config file that does).

    Resuming with the run's own command restores the checkpoint's callbacks *and* re-applies the
    command's: a ``callbacks+=`` (``configs/trainer/compile.yaml``, a sweep's extra callback) would then
    add the same callback twice on every resume. A command that states callbacks gives them all.
    """
    if any(arg.split("=", 1)[0].rstrip("+") == "--trainer.callbacks" for arg in argv):
        return True
    for config_file in config_files:
        if os.path.isfile(config_file):
            trainer = read_config_file(config_file).get("trainer")
            if isinstance(trainer, dict) and ("callbacks" in trainer or "callbacks+" in trainer):
                return True
    return False


class ArgumentParser(LightningArgumentParser):
    """Parse errors as one ``error: ...`` line (no page of usage) and exit status 2; no abbreviated options.

    ``allow_abbrev=False``: argparse would otherwise take ``--trainer.max_epoch 2`` as the only option it
    is a prefix of (``--trainer.max_epochs``); a typo must be an error, not a guess.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _suggest(self, message: str) -> str:
        """``unrecognized arguments: --trainer.max_epoch 2`` + the options the unknown ones were probably meant as."""
        known = set(self._option_string_actions)
        subcommands = self._subcommands_action.choices if getattr(self, "_subcommands_action", None) else {}
        for parser in subcommands.values():
            known |= set(parser._option_string_actions)
        unknown = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
        hints = []
        for option in unknown:
            close = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.8)
            if close:
                hints.append(f"{option} -> {close[0]}?")
        return f"{message} (did you mean: {', '.join(hints)})" if hints else message

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        if message.startswith("unrecognized arguments:"):
            message = self._suggest(message)
        sys.stderr.write(f"error: {_one_line(message)}\n(python -m src.cli <subcommand> --help lists every option)\n")
        sys.exit(2)


class KeepingSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` with the run; if the log directory already has one, save ``config-1.yaml``...

    Lightning's callback aborts (or overwrites) when the file exists, which happens when a
    run reuses a log directory (a fixed logger version, a resumed run).
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
            free = free_path(log_dir, self.config_filename) if trainer.is_global_zero else None
            name = os.path.relpath(free, log_dir) if free is not None else None
            self.config_filename = trainer.strategy.broadcast(name)
            if trainer.is_global_zero:  # evaluations/<subcommand>-config.yaml: its folder may not exist yet
                os.makedirs(os.path.dirname(os.path.join(log_dir, self.config_filename)), exist_ok=True)
        super().setup(trainer, pl_module, stage)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Every checkpoint carries the run's config: ``test --ckpt_path X`` needs nothing else."""
        if not hasattr(self, "_config_dict"):
            self._config_dict = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        checkpoint[runs.RUN_CONFIG_KEY] = self._config_dict
        checkpoint["run_model_class"] = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"


def default_progress_bar() -> ProgressBar:
    """Rich's live bar in a terminal; plain, flushed lines when stdout is a file or pipe (every cluster job)."""
    return RichProgressBar() if sys.stdout.isatty() else LineProgress()


class ResNetCLI(LightningCLI):
    """LightningCLI with the links, defaults and extra callbacks described in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.checkpoint: dict[str, Any] | None = None  # the checkpoint this command starts from, summarised
        self.run_dir: str | None = None
        self._run_dir_existed = True  # until a run directory is chosen: never remove what is not ours
        self._first_created: str | None = None
        self._evaluates_a_run = False  # test/validate/predict in the directory of an earlier run
        try:
            super().__init__(*args, **kwargs)
        except Exception:
            self._remove_unused_run_dir()
            raise

    # ---------------------------------------------------------------- what a command wrote
    def _run_subcommand(self, subcommand: str) -> None:
        """Say where the run writes; run; convert a schedule that does not fit the run into a user error;
        list the files written."""
        global_zero = self.trainer.is_global_zero
        before = _file_stamps(self.run_dir) if self.run_dir else {}
        if global_zero and self.run_dir:
            print(f"Run directory: {self.run_dir}", flush=True)
        try:
            with self._holding_the_run(subcommand):
                super()._run_subcommand(subcommand)
        except ValueError as error:
            if _raised_in_lr_schedule(error):  # warmup longer than the run, no total_steps...: the config's fault
                raise runs.RunError(" ".join(str(error).split())) from error
            raise
        if global_zero and self.run_dir:
            written = sorted(path for path, stamp in _file_stamps(self.run_dir).items() if before.get(path) != stamp)
            shown = ", ".join(written[:12]) + (f", ... ({len(written)} files)" if len(written) > 12 else "")
            print(f"Wrote in {self.run_dir}: {shown or 'nothing'}", flush=True)

    def _remove_unused_run_dir(self) -> None:
        """A failed command leaves no run directory it created, unless training reached a checkpoint or a step.

        Validation (bad data, a schedule that does not fit, a full disk...) can only fail once the trainer has
        set the directory up (events file, config.yaml, data.json); what it left would look like a run.
        """
        run_dir = self.run_dir
        if self._run_dir_existed or not run_dir or not os.path.isdir(run_dir) or runs.has_checkpoints(run_dir):
            return
        trainer = getattr(self, "trainer", None)
        if trainer is not None and (trainer.global_step > 0 or not trainer.is_global_zero):
            return
        shutil.rmtree(run_dir, ignore_errors=True)
        # and the parents this command created (lightning_logs/<name>/), if nothing else went into them since
        parent, top = os.path.dirname(os.path.abspath(run_dir)), os.path.abspath(self._first_created or run_dir)
        while (parent == top or parent.startswith(top + os.sep)) and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
            parent = os.path.dirname(parent)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-step{step}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ParameterEfficiency, "efficiency")
        parser.add_lightning_class_args(TrainingDiagnostics, "diagnostics")  # off unless diagnostics.enabled: true
        parser.add_lightning_class_args(DivergenceGuard, "divergence")  # on: a NaN loss stops the run, untested
        parser.add_argument(
            "--test_after_fit",
            type=bool | None,
            default=None,
            help=(
                "After fit, test the best checkpoint (by checkpoint.monitor) in the same run directory. "
                "Default (null): when the data has a test split (the DataModule's has_test_split)."
            ),
        )
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help=(
                "The run's directory, exactly (TensorBoard, checkpoints/, config, efficiency.json, SLURM hpc "
                "checkpoints). Default: a new lightning_logs/<logger name>/version_N."
            ),
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add a progress bar and the LR monitor unless the config turns off what they need."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config["trainer"]
        user_callbacks = trainer_config.get("callbacks") or []
        extra = []
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(callback, ProgressBar) for callback in user_callbacks
        ):
            extra.append(default_progress_bar())
        if trainer_config.get("logger") is not False:  # None means Lightning's default logger
            extra.append(LearningRateMonitor(logging_interval="step"))
        extra += self._run_callbacks()
        self.trainer_defaults["callbacks"] = extra
        return self._instantiate_run_trainer(**kwargs)

    def after_fit(self) -> None:
        test_after_fit = self.config[self.subcommand].get("test_after_fit")
        if test_after_fit is None:  # auto: whenever the data has a test split
            test_after_fit = bool(getattr(self.datamodule, "has_test_split", False))
        if test_after_fit:
            checkpoint = self.trainer.checkpoint_callback
            ckpt_path = "best" if checkpoint is not None and checkpoint.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)

    # ================================================================ run identity and resume
    # (Everything below decides *which* run a command belongs to; see src/runs.py for the layout.)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as usual, with a given checkpoint's own config as the defaults the user's config overrides."""
        self._checkpoint_config_as_defaults(args)
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Replaced: Lightning's version lets the checkpoint's hyperparameters override the user's config,
        silently loading e.g. a ResNet checkpoint into what was asked to be a plain net. Here the checkpoint
        only provides defaults (``_checkpoint_config_as_defaults``) and a mismatch is an error."""

    def before_instantiate_classes(self) -> None:
        if self.subcommand is not None:
            self._choose_run_dir(self.config[self.subcommand])

    def instantiate_classes(self) -> None:
        """Instantiate from a copy of the config pointed at the run directory; the saved config stays as given."""
        self._given_config = self.config
        if self.subcommand is not None and self.run_dir is not None:
            self.config = copy.deepcopy(self.config)
            self._point_config_at_run_dir(self.config[self.subcommand])
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as error:  # a bad value in the config, not a bug
            raise runs.RunError(_root_message(error)) from None
        finally:
            self.config = self._given_config
        self._check_checkpoint_fits_model()

    def before_fit(self) -> None:
        if self.checkpoint is not None:
            self._say_what_resume_keeps(self.config["fit"])

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "ckpt_path" in kwargs:
            kwargs["ckpt_path"] = self.checkpoint["path"] if self.checkpoint is not None else None
        return kwargs

    @contextlib.contextmanager
    def _holding_the_run(self, subcommand: str) -> Iterator[None]:
        """Run the command holding the run directory's lock; a SIGTERM'd fit exits 143 after saving its step."""
        lock = runs.RunLock(self.run_dir) if self.run_dir is not None and _launching_rank() else None
        if lock is not None:
            lock.acquire(role=f"src.cli {subcommand}")
            slurm_job.warn_if_cpus_unbound()
            if subcommand == "fit":
                slurm_job.record_start(self.run_dir)  # which job this run is, for telling a requeue from a new job
        try:
            if lock is not None and subcommand == "fit" and self.checkpoint is None:
                self._refuse_run_with_checkpoints(self.run_dir)  # it may have gained some while we waited to start
            yield
        except SIGTERMException:
            sys.stderr.write(f"error: stopped by SIGTERM {self._what_sigterm_stopped(subcommand)}\n")
            raise SystemExit(128 + signal.SIGTERM) from None
        finally:
            if lock is not None:
                lock.release()

    def _what_sigterm_stopped(self, subcommand: str) -> str:
        saver = next((cb for cb in self.trainer.callbacks if isinstance(cb, SaveOnSigterm)), None)
        if saver is not None and saver.saved_path is not None:
            return (
                f"at step {saver.saved_step}; saved '{saver.saved_path}'; continue with: python -m src.cli fit "
                f"--run_dir {self.run_dir} --ckpt_path last"
            )
        if subcommand == "fit" and self.trainer.state.fn == "test":
            return (
                "during the test after fit; its training is complete: python -m src.cli fit --run_dir "
                f"{self.run_dir} --ckpt_path last tests it without training"
            )
        return "before a step was trained; nothing saved" if subcommand == "fit" else f"during {subcommand}"

    def _run_callbacks(self) -> list:
        callbacks = [RandomState(), EpochStartResume(), ValidateLastStep(), MetricsRecord()]
        if self.run_dir is not None:
            callbacks.append(LoggerRunIds(self.run_dir))
        if self.subcommand == "fit":
            callbacks.append(SaveOnSigterm())
        if self.subcommand == "predict":
            callbacks.append(PredictionWriter())
        return callbacks

    def _instantiate_run_trainer(self, **kwargs: Any) -> Trainer:
        """LightningCLI.instantiate_trainer, minus ModelCheckpoint when checkpointing is off, and with the
        config callback saving the config as given (not the copy pointed at the run directory)."""
        extra_callbacks = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if trainer_config.get("enable_checkpointing") is False:
            extra_callbacks = [cb for cb in extra_callbacks if not isinstance(cb, ModelCheckpoint)]
        trainer = self._instantiate_trainer(trainer_config, extra_callbacks)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: make it atomic
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for callback in trainer.callbacks:
            if isinstance(callback, SaveConfigCallback) and self.subcommand is not None:
                callback.config = self._given_config[self.subcommand]
            if self._evaluates_a_run:  # test/validate/predict of an existing run: recorded apart from its fit
                if isinstance(callback, SaveConfigCallback):
                    callback.config_filename = runs.evaluation_file(f"{self.subcommand}-config.yaml")
                if isinstance(callback, ParameterEfficiency):
                    callback.filename = runs.evaluation_file(f"{self.subcommand}.json")
                if isinstance(callback, MetricsRecord):
                    callback.filename = runs.evaluation_file(f"{self.subcommand}-scalars.csv")
        if self._evaluates_a_run and hasattr(self.datamodule, "record_file"):
            self.datamodule.record_file = runs.evaluation_file(f"{self.subcommand}-data.json")
        return trainer

    # ---------------------------------------------------------------- the checkpoint a command starts from
    def _checkpoint_config_as_defaults(self, args: Any) -> None:
        """``--ckpt_path`` given: read the checkpoint before parsing, and make its config the defaults."""
        if isinstance(args, (dict, Namespace)):
            return
        argv = list(sys.argv[1:] if args is None else args)
        early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        early.add_argument("subcommand", nargs="?")
        early.add_argument("--ckpt_path")
        early.add_argument("--run_dir")
        early.add_argument("-c", "--config", action="append", default=[])
        known, _ = early.parse_known_args(argv)
        if known.subcommand not in SUBCOMMANDS:
            return
        settings = {"ckpt_path": known.ckpt_path, "run_dir": known.run_dir}
        for config_file in known.config:  # later files win, the command line wins over all
            if os.path.isfile(config_file):
                loaded = read_config_file(config_file)
                for key in settings:
                    if loaded.get(key) is not None and getattr(known, key) is None:
                        settings[key] = loaded[key]
        ckpt_path = settings["ckpt_path"]
        if ckpt_path in ("last", "best", "hpc") and not settings["run_dir"] and not known.config:
            raise runs.RunError(
                f"--ckpt_path {ckpt_path} names a checkpoint of a run, but no run is given: add --run_dir DIR "
                "(the run's directory, e.g. lightning_logs/default/version_0), or give the checkpoint's file path"
            )
        if not ckpt_path or (ckpt_path in ("last", "best", "hpc") and not settings["run_dir"]):
            return  # nothing to read, or a run named by its logger: resolved after parsing
        self._read_checkpoint(runs.resolve_checkpoint(ckpt_path, settings["run_dir"]))
        defaults = self._defaults_from_checkpoint(known.subcommand)
        if "trainer.callbacks" in defaults and states_callbacks(argv, known.config):
            del defaults["trainer.callbacks"]  # the command gives them again: restored too, `callbacks+=` doubles them
        if known.subcommand != "fit":  # evaluating it here: this machine's hardware, not the training's
            defaults, left_out = machine_settings.machine_free(defaults)
            if left_out and _launching_rank():
                print(machine_settings.notice(left_out), flush=True)
        parser = self._subcommand_parsers[known.subcommand]
        for key, value in defaults.items():
            try:
                parser.set_defaults({key: value})
            except (KeyError, ValueError, TypeError) as error:  # a setting this version no longer has
                rank_zero_warn(f"ignoring the checkpoint's setting {key!r}: {error}")

    def _read_checkpoint(self, path: str) -> None:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated file, or not a checkpoint at all
            raise runs.RunError(f"cannot read checkpoint '{path}': {error}") from None
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        self.checkpoint = {
            "path": path,
            "hparams": hparams,
            "shapes": {key: tuple(value.shape) for key, value in (checkpoint.get("state_dict") or {}).items()},
            "global_step": checkpoint.get("global_step"),
            "run_config": runs.checkpoint_run_config(checkpoint),
            "data": runs.datamodule_config(checkpoint),
        }

    def _defaults_from_checkpoint(self, subcommand: str) -> dict[str, Any]:
        """Flat ``{"model.arch": ..., "data": {...}, "trainer.max_steps": ...}`` from the checkpoint."""
        assert self.checkpoint is not None
        config = self.checkpoint["run_config"]
        if config is None:  # not written by this CLI: the model's and the data's hyperparameters
            model = {k: v for k, v in self.checkpoint["hparams"].items() if not k.startswith("_")}
            config = {"model": model, "data": self.checkpoint["data"]}
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
        return defaults

    def _check_checkpoint_fits_model(self) -> None:
        """A checkpoint of another network (architecture, classes, shortcut) is an error, never a silent load."""
        if self.checkpoint is None or self.model is None:
            return
        saved, built = self.checkpoint["hparams"], dict(self.model.hparams)
        differs = [key for key in NETWORK_HPARAMS if key in saved and key in built and saved[key] != built[key]]
        shapes = {key: tuple(value.shape) for key, value in self.model.state_dict().items()}
        wrong = sorted(set(shapes) ^ set(self.checkpoint["shapes"])) + [
            key for key in shapes if key in self.checkpoint["shapes"] and shapes[key] != self.checkpoint["shapes"][key]
        ]
        if differs or wrong:
            have = ", ".join(f"{key}={saved.get(key)!r}" for key in differs) or f"different tensors ({wrong[0]}, ...)"
            want = ", ".join(f"{key}={built.get(key)!r}" for key in differs) or "other tensors"
            raise runs.RunError(
                f"checkpoint '{self.checkpoint['path']}' holds a network with {have}, but the config builds {want}; "
                "leave model and data settings out to take them from the checkpoint, or give its own config"
            )

    def _say_what_resume_keeps(self, config: Namespace) -> None:
        """Longer max_steps / max_epochs on resume run longer, but the LR schedule is the checkpoint's."""
        assert self.checkpoint is not None
        saved = (self.checkpoint["run_config"] or {}).get("trainer") or {}
        changed = [
            f"{key} {saved[key]} -> {config.trainer.get(key)}"
            for key in ("max_steps", "max_epochs")
            if key in saved and saved[key] != config.trainer.get(key)
        ]
        if changed:
            rank_zero_warn(
                f"Resuming with {', '.join(changed)}: training runs to the new limit, but the learning-rate "
                "schedule is restored from the checkpoint as it was (milestones, total_steps) and is NOT "
                "extended; to change it, set the scheduler's own arguments in a new run."
            )

    # ---------------------------------------------------------------- which directory a run writes to
    def _choose_run_dir(self, config: Namespace) -> None:
        """Decide the run directory (and, for ``fit``, whether this continues a run); refuse what mixes runs."""
        given = config.get("run_dir")
        ckpt_path = config.get("ckpt_path")
        named = given or self._named_run_dir(config)
        self._refuse_busy_run(named)
        if ckpt_path and self.checkpoint is None:  # last/best/hpc of a run named by its logger version
            self._read_checkpoint(runs.resolve_checkpoint(ckpt_path, named))
        if self.subcommand == "fit":
            run_dir = self._fit_run_dir(given, named) or self._fresh_run_dir(config)
        else:
            run_dir = named or self._evaluated_run_dir() or self._fresh_run_dir(config)
            self._evaluates_a_run = runs.is_existing_run(run_dir)
        self._run_dir_existed = os.path.exists(run_dir)  # before anything of this command creates it
        self._first_created = _first_missing(run_dir)  # e.g. lightning_logs/ itself, on a first run
        self.run_dir = os.path.normpath(run_dir)

    def _fit_run_dir(self, given: str | None, named: str | None) -> str | None:
        if self.checkpoint is not None:  # continue the run the checkpoint belongs to, in its own directory
            owner = runs.run_dir_of_checkpoint(self.checkpoint["path"])
            if owner is None:
                raise runs.RunError(
                    f"'{self.checkpoint['path']}' is not inside a run directory (<run>/checkpoints/*.ckpt or "
                    "<run>/hpc_ckpt_N.ckpt), so there is no run to continue; copy the whole run directory"
                )
            self._refuse_busy_run(owner)
            if given and os.path.realpath(given) != os.path.realpath(owner):
                raise runs.RunError(
                    f"--ckpt_path belongs to the run '{owner}', not --run_dir '{given}'; a run continues only "
                    "in its own directory (drop --run_dir)"
                )
            return owner
        if named is not None and runs.has_checkpoints(named):
            job = slurm_job.current_job()
            if job is None:
                self._refuse_run_with_checkpoints(named)
            else:  # a requeue of the job that made them continues; a new job reusing the directory does not
                slurm_job.refuse_another_job(named, job)
            # A requeued SLURM job: the same command, the same directory -- continue from its newest checkpoint.
            self._read_checkpoint(runs.resume_checkpoint(named))
            rank_zero_info(f"SLURM job restarted: continuing the run in {named} from {self.checkpoint['path']}")
            return named
        if named is None and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
            raise runs.RunError(
                "this SLURM job was requeued, but without --run_dir its first attempt's directory is unknown, so "
                "it would silently start over; launch SLURM jobs with --run_dir DIR"
            )
        return named

    def _evaluated_run_dir(self) -> str | None:
        """test/validate/predict of a run's checkpoint: that run's directory (its ``evaluations/``), as if
        ``--run_dir`` named it, so the result stays with the run rather than in an unrelated new version_N.

        ``None`` (a fresh directory, as before) for a checkpoint file that is not inside a run this CLI wrote,
        and while the run's fit still holds its lock: testing a checkpoint of a running fit must keep working.
        """
        owner = runs.run_dir_of_checkpoint(self.checkpoint["path"]) if self.checkpoint is not None else None
        if owner is None or not runs.config_files(owner):
            return None
        if not _launching_rank():  # a DDP process Lightning started: follow its launcher's choice
            launcher_pid = os.environ.get(RUN_DIR_ENV, "").partition(":")[0]
            return None if launcher_pid == str(os.getppid()) else owner
        holder = runs.RunLock(owner).holder_if_busy()
        if holder is not None:
            print(f"The run '{owner}' is in use by {holder}; {self.subcommand} writes into a new directory", flush=True)
            return None
        return owner

    @staticmethod
    def _refuse_busy_run(run_dir: str | None) -> None:
        """Another process writing the run (it holds its lock) comes first: anything else we said would mislead."""
        if run_dir is not None and _launching_rank():
            runs.RunLock(run_dir).refuse_if_busy()

    @staticmethod
    def _refuse_run_with_checkpoints(run_dir: str) -> None:
        if runs.has_checkpoints(run_dir):
            raise runs.RunError(
                f"the run directory '{run_dir}' already holds checkpoints of a run; continue it with "
                "--ckpt_path last, or start a new run in another directory"
            )

    def _fresh_run_dir(self, config: Namespace) -> str:
        """A new ``<save_dir>/<name>/version_N``; processes launched for DDP join their launcher's run."""
        launcher_pid, _, launcher_dir = os.environ.get(RUN_DIR_ENV, "").partition(":")
        # Lightning's DDP launcher starts ranks 1..N-1 as children with LOCAL_RANK set; any other child
        # process (a test, a notebook's subprocess) is a run of its own.
        launched_rank = os.environ.get("LOCAL_RANK", "0") != "0"
        if launcher_dir and launcher_pid == str(os.getppid()) and launched_rank:
            return launcher_dir
        save_dir, name = self._logger_location(config)
        run_dir = runs.next_version_dir(save_dir, name)
        os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{run_dir}"
        return run_dir

    @staticmethod
    def _loggers(config: Namespace) -> list:
        logger = config.trainer.get("logger")
        return list(logger) if isinstance(logger, list) else [logger]

    def _logger_location(self, config: Namespace) -> tuple[str, str]:
        """Where a fresh run goes: a TensorBoard/CSV logger's ``save_dir/name``; W&B and MLflow have no such folder."""
        for logger in self._loggers(config):
            init_args = logger.get("init_args") if is_directory_logger(logger) else None
            if init_args is not None and init_args.get("save_dir") is not None:
                return str(init_args["save_dir"]), str(init_args.get("name") or "")
        return LOG_ROOT, DEFAULT_LOGGER_NAME

    def _named_run_dir(self, config: Namespace) -> str | None:
        """``save_dir/name/version`` when the logger config fixes its version, else ``None``."""
        for logger in self._loggers(config):  # W&B's version is its run id, not a folder
            init_args = logger.get("init_args") if is_directory_logger(logger) else None
            if init_args is not None and init_args.get("version") is not None:
                version = init_args["version"]
                save_dir, name = self._logger_location(config)
                return os.path.join(save_dir, name, version if isinstance(version, str) else f"version_{version}")
        return None

    def _point_config_at_run_dir(self, config: Namespace) -> None:
        """Logger, checkpoints and ``default_root_dir`` (where Lightning's SLURM hpc checkpoints go) -> run_dir."""
        run_dir = self.run_dir
        assert run_dir is not None
        config.trainer.default_root_dir = run_dir
        parent, leaf = os.path.split(run_dir)
        loggers = self._loggers(config)
        if loggers == [None] or loggers == [True]:
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=parent, name="", version=leaf, default_hp_metric=False),
            )
        for logger in loggers:  # one logger run per run directory (src.loggers)
            if isinstance(logger, Namespace):
                point_logger_at_run(logger, run_dir, LOG_ROOT)
        wanted = runs.checkpoint_dir(run_dir)
        dirpath = config.checkpoint.get("dirpath") if config.get("checkpoint") is not None else None
        if dirpath is not None and os.path.realpath(dirpath) != os.path.realpath(wanted):
            raise runs.RunError(
                f"checkpoint.dirpath '{dirpath}' would put this run's checkpoints outside its directory; "
                f"they go to '{wanted}' (choose the run's place with --run_dir)"
            )
        if config.get("checkpoint") is not None:
            config.checkpoint.dirpath = wanted


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


def trainer_defaults() -> dict:
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": LOG_ROOT, "name": DEFAULT_LOGGER_NAME, "default_hp_metric": False},
        },
        "default_root_dir": LOG_ROOT,
    }


def _launching_rank() -> bool:
    """Whether this process starts the run (global rank zero), before Lightning has set any ranks up.

    DDP processes Lightning launches (LOCAL_RANK), torchrun/SLURM tasks (RANK, SLURM_PROCID) other than
    the first join a run whose lock rank zero holds.
    """
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None and value.strip().isdigit():
            return int(value) == 0
    return True


class _ConfigParsed(Exception):
    def __init__(self, cli: ResNetCLI) -> None:
        self.cli = cli


class _ParseOnlyCLI(ResNetCLI):
    def _set_seed(self) -> None:
        """Parsing only: leave the process's random state alone."""

    def before_instantiate_classes(self) -> None:
        raise _ConfigParsed(self)


def cli_arguments(args: list[str] | None) -> dict[str, Any]:
    """How the CLI is built, the same for a run (``main``) and for parsing its config alone (``resolved_config``)."""
    return dict(
        model_class=ImageClassifier,
        datamodule_class=ImageClassificationDataModule,
        subclass_mode_data=True,
        save_config_callback=KeepingSaveConfigCallback,
        trainer_defaults=trainer_defaults(),
        parser_class=ArgumentParser,
        trainer_class=RunTrainer,
        auto_configure_optimizers=False,
        args=args,
    )


def resolved_config(args: list[str]) -> dict[str, Any]:
    """The config ``python -m src.cli <args>`` would save as its ``config.yaml``: parsed, nothing built or written.

    For the sweep, to tell a run made with another config (a stale run) from one it can skip.
    """
    # Quiet: "args and sys.argv both given" (the sweep's own argv) and jsonargparse's skip_none deprecation
    # (the same dump SaveConfigCallback makes) are not the user's business here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _ParseOnlyCLI(**cli_arguments(args), run=True)
        except _ConfigParsed as parsed:
            cli = parsed.cli
            return yaml.safe_load(cli._parser(cli.subcommand).dump(cli.config[cli.subcommand], skip_none=False))
    raise AssertionError("unreachable: the parse-only CLI stops before instantiating")


def main(args: list[str] | None = None, run: bool = True) -> ResNetCLI:
    """Run the CLI (``args`` as on the command line; ``None`` reads ``sys.argv``)."""
    try:
        return ResNetCLI(**cli_arguments(args), run=run)
    except Exception as error:
        # A user's mistake or missing or unusable data, not a bug: say what to do, without a stack trace.
        user_error = _user_error(error)
        if user_error is None:
            disk = disk_error_message(error)  # a full or read-only disk
            if disk is None:
                raise
            raise SystemExit(f"error: {disk}") from None
        raise SystemExit(f"error: {user_error}") from None
    finally:
        # Called in-process (a notebook, a test), leave no run directory behind for the next run to join.
        if os.environ.get(RUN_DIR_ENV, "").partition(":")[0] == str(os.getpid()):
            del os.environ[RUN_DIR_ENV]
        if run and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Shut the process group down before the interpreter does: left to exit, a DDP rank can abort
            # in a communication thread's destructor ("terminate called without an active exception").
            torch.distributed.destroy_process_group()


USER_ERRORS = (DatasetNotFoundError, DataError, BatchSizeError, runs.RunError, TrainingDiverged)


def _first_missing(path: str) -> str | None:
    """The outermost of ``path`` and its parents that does not exist yet (``None`` if ``path`` exists)."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing, path = path, os.path.dirname(path)
    return missing


def _file_stamps(directory: str) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime)}`` of the files under ``directory`` (none if it does not exist)."""
    stamps = {}
    for folder, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            stamps[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return stamps


def _raised_in_lr_schedule(error: BaseException) -> bool:
    """Whether ``error`` came from building the LR schedule (``configure_optimizers``, ``src/modules/lr_schedules``)."""
    traceback = error.__traceback__
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if code.co_name == "configure_optimizers" or code.co_filename.endswith(
            os.path.join("modules", "lr_schedules.py")
        ):
            return True
        traceback = traceback.tb_next
    return False


def _root_message(error: BaseException) -> str:
    """The first line of the innermost error in ``error``'s chain: the constructor's own words.

    jsonargparse wraps an error raised in a DataModule's ``__init__`` (a subclass-mode union) as
    "Does not validate against any of the Union subtypes"; the user needs the message under it.
    """
    seen, innermost = set(), error
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        innermost = error
        error = error.__cause__ or error.__context__
    lines = str(innermost).strip().splitlines()
    return lines[0] if lines else type(innermost).__name__


def _user_error(error: BaseException | None) -> BaseException | None:
    """The user's mistake (one of ``USER_ERRORS``) in ``error``'s chain, if any.

    jsonargparse wraps an error raised in a DataModule's ``__init__`` in its own ``ValueError``.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, USER_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    main()

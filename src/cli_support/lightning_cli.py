"""``ResNetCLI``: LightningCLI with this project's defaults (what ``python -m src.cli`` builds, described there).

Every override of LightningCLI's private methods lives in this file, so a Lightning upgrade that changes them
breaks here and in ``tests/test_lightning_private_api.py``, not somewhere silent. ``resolved_config`` parses a
command line into the config the run would save, with nothing built: the sweep and the report compare runs by it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import Any, cast

import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from src import runs
from src.callbacks import LineProgress, ParameterEfficiency, TrainingDiagnostics
from src.callbacks.checkpoint_io import AtomicCheckpointIO
from src.callbacks.divergence import DivergenceGuard
from src.callbacks.metrics_record import MetricsRecord
from src.callbacks.predictions import PredictionWriter
from src.callbacks.preemption import SaveOnSigterm
from src.callbacks.progress import RichProgress
from src.callbacks.resume import EpochStartResume, RandomState, RunCheckpoint, ValidateLastStep
from src.cli_support import checkpoint_config, machine_settings, run_dirs, slurm_job
from src.cli_support.cpu_precision import slow_bf16_notice
from src.cli_support.loggers import LoggerRunIds, RunTrainer
from src.cli_support.messages import raised_in_lr_schedule, root_message
from src.cli_support.parser import ArgumentParser
from src.cli_support.run_dirs import DEFAULT_LOGGER_NAME, LOG_ROOT, file_stamps
from src.cli_support.save_config import KeepingSaveConfigCallback
from src.data import ImageClassificationDataModule
from src.data.cifar import CIFARDataModule  # noqa: F401  (registers the short name)
from src.data.folder import ImageFolderDataModule  # noqa: F401  (registers the short name)
from src.data.synthetic import SyntheticDataModule  # noqa: F401  (registers the short name)
from src.files import resolves_inside
from src.modules import ImageClassifier, start_weights


def default_progress_bar() -> ProgressBar:
    """Rich's live bar in a terminal; plain, flushed lines when stdout is a file or pipe (every cluster job)."""
    return RichProgress() if sys.stdout.isatty() else LineProgress()


class ResNetCLI(LightningCLI):
    """LightningCLI with the links, defaults and extra callbacks described in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.checkpoint: dict[str, Any] | None = None  # the checkpoint this command starts from, summarised
        self._machine_left_out: list[str] = []  # a --ckpt_path checkpoint's hardware settings not restored here
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
        before = file_stamps(self.run_dir) if self.run_dir else {}
        if global_zero and self.run_dir:
            print(f"Run directory: {self.run_dir}", flush=True)
        try:
            with self._holding_the_run(subcommand):
                super()._run_subcommand(subcommand)
        except ValueError as error:
            if raised_in_lr_schedule(error):  # warmup longer than the run, no total_steps...: the config's fault
                raise runs.RunError(" ".join(str(error).split())) from error
            raise
        if global_zero and self.run_dir:
            written = sorted(path for path, stamp in file_stamps(self.run_dir).items() if before.get(path) != stamp)
            shown = ", ".join(written[:12]) + (f", ... ({len(written)} files)" if len(written) > 12 else "")
            print(f"Wrote in {self.run_dir}: {shown or 'nothing'}", flush=True)

    def _remove_unused_run_dir(self) -> None:
        if not self._run_dir_existed:  # never remove what was there before this command
            run_dirs.remove_unused_run_dir(self.run_dir, self._first_created, getattr(self, "trainer", None))

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
        extra: list[Callback] = []
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(callback, ProgressBar) for callback in user_callbacks
        ):
            extra.append(default_progress_bar())
        if trainer_config.get("logger") is not False:  # None means Lightning's default logger
            extra.append(LearningRateMonitor(logging_interval="step"))
        extra += self._run_callbacks()
        self.trainer_defaults["callbacks"] = extra
        return self._instantiate_run_trainer(**kwargs)

    def _test_after_fit(self) -> bool:
        test_after_fit = self.config[self.subcommand].get("test_after_fit")
        if test_after_fit is None:  # auto: whenever the data has a test split
            test_after_fit = bool(getattr(self.datamodule, "has_test_split", False))
        return bool(test_after_fit)

    def after_fit(self) -> None:
        if self._test_after_fit():
            checkpoint = cast(ModelCheckpoint | None, self.trainer.checkpoint_callback)  # the CLI adds ModelCheckpoint
            ckpt_path = best_to_test(checkpoint, self.run_dir)
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)

    # ================================================================ run identity and resume
    # (Everything below decides *which* run a command belongs to: src/cli_support/run_dirs.py decides,
    # src/cli_support/checkpoint_config.py reads a --ckpt_path checkpoint; src/runs/ holds the layout.)

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
            run_dirs.point_config_at_run_dir(self.config[self.subcommand], self.run_dir)
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as error:  # a bad value in the config, not a bug
            raise runs.RunError(root_message(error)) from None
        finally:
            self.config = self._given_config
        if self.checkpoint is not None and self.model is not None:
            shapes = {key: tuple(value.shape) for key, value in self.model.state_dict().items()}
            checkpoint_config.check_fits_model(self.checkpoint, dict(self.model.hparams), shapes)

    def before_fit(self) -> None:
        if self.checkpoint is not None and self.run_dir is not None:  # continuing a run: with the run's settings
            given = yaml.safe_load(self._parser("fit").dump(self._given_config["fit"], skip_none=False))
            checkpoint_config.refuse_other_config(self.checkpoint, given, self.run_dir)
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]  # Lightning's callback connector sets it
            if isinstance(callback, ParameterEfficiency):  # "finished" only once the test that follows has run
                callback.test_follows_fit = self._test_after_fit()
        if self.checkpoint is not None:
            warning = checkpoint_config.resume_changes(self.checkpoint, self.config["fit"].trainer)
            if warning is not None:
                rank_zero_warn(warning)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "ckpt_path" in kwargs:
            kwargs["ckpt_path"] = self.checkpoint["path"] if self.checkpoint is not None else None
        return kwargs

    @contextlib.contextmanager
    def _holding_the_run(self, subcommand: str) -> Iterator[None]:
        """Run the command holding the run directory's lock; a SIGTERM'd fit exits 143 after saving its step."""
        lock = runs.RunLock(self.run_dir) if self.run_dir is not None and run_dirs.launching_rank() else None
        if lock is not None:
            lock.acquire(role=f"src.cli {subcommand}")
            slurm_job.warn_if_cpus_unbound()
            if subcommand == "fit":
                # Which job this run is, for telling a requeue from a new job (a lock means a run_dir).
                slurm_job.record_start(cast(str, self.run_dir))
                run_dirs.remove_debris(cast(str, self.run_dir))  # holding the lock: a killed writer's leftovers
        try:
            if lock is not None and subcommand == "fit" and self.checkpoint is None:
                # It may have gained some while we waited to start.
                run_dirs.refuse_used_run_dir(cast(str, self.run_dir))
            yield
        except SIGTERMException:
            sys.stderr.write(f"error: stopped by SIGTERM {self._what_sigterm_stopped(subcommand)}\n")
            raise SystemExit(128 + signal.SIGTERM) from None
        finally:
            if lock is not None:
                lock.release()

    def _what_sigterm_stopped(self, subcommand: str) -> str:
        # Trainer.callbacks is set by Lightning's connectors, not declared on the class.
        saver = next((cb for cb in self.trainer.callbacks if isinstance(cb, SaveOnSigterm)), None)  # type: ignore[attr-defined]
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
        if self._machine_left_out and run_dirs.launching_rank():
            used = machine_settings.used_instead(self._machine_left_out, trainer, self.datamodule)
            print(machine_settings.notice(self._machine_left_out, used), flush=True)
        slow_bf16 = slow_bf16_notice(trainer)
        if slow_bf16 is not None:
            rank_zero_warn(slow_bf16)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default: make it atomic
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning's callback connector sets it
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
        early = checkpoint_config.early_settings(argv)
        if early is None:
            return
        subcommand, ckpt_path, run_dir, config_files = early
        if not ckpt_path or (ckpt_path in checkpoint_config.RUN_CHECKPOINTS and not run_dir):
            return  # nothing to read, or a run named by its logger: resolved after parsing
        self.checkpoint = checkpoint_config.checkpoint_summary(runs.resolve_checkpoint(ckpt_path, run_dir))
        defaults = checkpoint_config.defaults_from_checkpoint(self.checkpoint, subcommand)
        if "trainer.callbacks" in defaults and checkpoint_config.states_callbacks(argv, config_files):
            del defaults["trainer.callbacks"]  # the command gives them again: restored too, `callbacks+=` doubles them
        if subcommand != "fit":  # evaluating it here: this machine's hardware, not the training's
            defaults, self._machine_left_out = machine_settings.machine_free(defaults)  # told once a Trainer exists
        parser = self._subcommand_parsers[subcommand]
        for key, value in defaults.items():
            try:
                parser.set_defaults({key: value})
            except (KeyError, ValueError, TypeError) as error:  # a setting this version no longer has
                rank_zero_warn(f"ignoring the checkpoint's setting {key!r}: {error}")

    # ---------------------------------------------------------------- which directory a run writes to
    def _choose_run_dir(self, config: Namespace) -> None:
        """Decide the run directory (and, for ``fit``, whether this continues a run); refuse what mixes runs."""
        given = config.get("run_dir")
        ckpt_path = config.get("ckpt_path")
        if given and os.path.exists(given) and not os.path.isdir(given):
            raise runs.RunError(f"--run_dir '{given}' is a file, not a directory: name a directory for the run")
        max_steps = (config.get("trainer") or {}).get("max_steps")
        model = config.get("model") or {}
        starts_trained = bool(model.get("init_from"))
        if self.subcommand == "fit" and starts_trained and not ckpt_path:  # refused before a run directory is made
            start_weights.read_start(model["init_from"], None if model.get("net_class") else model.get("arch"))
        if self.subcommand == "fit" and isinstance(max_steps, int) and max_steps < (-1 if starts_trained else 1):
            if max_steps != -1:
                raise runs.RunError(
                    f"--trainer.max_steps {max_steps}: give -1 (no limit, max_epochs decides) or >= 1 (0 only with "
                    "model.init_from: measure the network it starts from, pruned or not, without training it)"
                )
        named = given or run_dirs.named_run_dir(config)
        run_dirs.refuse_busy_run(named)
        if ckpt_path and self.checkpoint is None:  # last/best/hpc of a run named by its logger version
            self.checkpoint = checkpoint_config.checkpoint_summary(runs.resolve_checkpoint(ckpt_path, named))
        checkpoint_path = self.checkpoint["path"] if self.checkpoint is not None else None
        if self.subcommand == "fit":
            run_dir, requeued_from = run_dirs.fit_run_dir(checkpoint_path, given, named)
            if requeued_from is not None:
                self.checkpoint = checkpoint_config.checkpoint_summary(requeued_from)
                rank_zero_info(f"SLURM job restarted: continuing the run in {run_dir} from {requeued_from}")
            run_dir = run_dir or run_dirs.fresh_run_dir(config)
        else:
            if not given and self.checkpoint is not None:  # a logger version only the checkpoint's config names
                named = run_dirs.checked_named_run_dir(
                    named, checkpoint_path, self.checkpoint.get("run_config"), cast(str, self.subcommand)
                )
            run_dir = named or run_dirs.evaluated_run_dir(checkpoint_path, cast(str, self.subcommand))
            run_dir = run_dir or run_dirs.fresh_run_dir(config)
            self._evaluates_a_run = runs.is_existing_run(run_dir)
        if os.path.isdir(run_dir):
            run_dirs.refuse_planted_links(run_dir)  # a run folder from elsewhere: its files may be links out
        self._run_dir_existed = os.path.exists(run_dir)  # before anything of this command creates it
        self._first_created = run_dirs.first_missing(run_dir)  # e.g. lightning_logs/ itself, on a first run
        self.run_dir = os.path.normpath(run_dir)


def best_to_test(checkpoint: ModelCheckpoint | None, run_dir: str | None) -> str | None:
    """The best checkpoint the test after fit loads: inside the run's ``checkpoints/``, read as checked data.

    Not Lightning's ``ckpt_path="best"``, which loads ``best_model_path`` as it stands -- a path that a resumed
    checkpoint may have restored -- with ``torch.load`` (a pickle on torch < 2.6). A recorded path outside the
    run's checkpoint folder is replaced by the run's own best checkpoint (``runs.best_checkpoint``: the best one
    its checkpoints record, looked up in its ``checkpoints/``), as is none at all when a resumed checkpoint's
    path was dropped (``RunCheckpoint``); without either the final weights are tested (``None``), as before.
    The file is read first as the project reads every checkpoint (``weights_only``, class paths checked).
    """
    if checkpoint is None:
        return None
    best = checkpoint.best_model_path
    folder = runs.checkpoint_dir(run_dir) if run_dir is not None else checkpoint.dirpath
    if not best or folder is None or not resolves_inside(best, folder):
        instead = runs.best_checkpoint(run_dir) if run_dir is not None else None
        if best:
            rank_zero_warn(
                f"The best checkpoint recorded for this run, {best!r}, is not inside the run's checkpoint folder "
                f"'{folder}'; the test after fit loads "
                + (
                    f"the run's own best checkpoint '{instead}' instead"
                    if instead
                    else "none: it tests the final weights"
                )
            )
        if instead is None:
            return None
        best = instead
    checkpoint_config.checkpoint_summary(best)  # refuses pickled objects and untrusted class paths, in one line
    return best


def trainer_defaults() -> dict:
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": LOG_ROOT, "name": DEFAULT_LOGGER_NAME, "default_hp_metric": False},
        },
        "default_root_dir": LOG_ROOT,
    }


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

    For the sweep, to tell a run made with another config (a stale run) from one it can skip, and for the
    report's ``--check``, which resolves every committed run of a study. Building LightningCLI's parser costs
    more than a parse (~0.55 s against ~0.35 s on 2 cores), so the parser of the first command is kept and
    reused for every later one in this process; a command that starts from a checkpoint (``--ckpt_path``) gets
    a parser of its own, because the checkpoint's config becomes that parser's defaults.
    """
    # Quiet: "args and sys.argv both given" (the sweep's own argv) and jsonargparse's skip_none deprecation
    # (the same dump SaveConfigCallback makes) are not the user's business here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        early = checkpoint_config.early_settings(list(args))
        reusable = early is not None and not early[1]
        cli = _PARSERS.get("cli") if reusable else None
        if cli is None:
            cli = _parse_only(args)
            if reusable:
                _PARSERS["cli"] = cli
        else:
            cli.parse_arguments(cli.parser, args)  # a parse does not change the parser: only its defaults would
        return parsed_config(cli)


def parsed_config(cli: ResNetCLI) -> dict[str, Any]:
    """The config ``cli`` parsed last, as its run would save it (``config.yaml``: every default filled in)."""
    subcommand = cli.config["subcommand"]
    return yaml.safe_load(cli._parser(subcommand).dump(cli.config[subcommand], skip_none=False))


_PARSERS: dict[str, ResNetCLI] = {}  # resolved_config's parse-only CLI, built once per process


def _parse_only(args: list[str]) -> ResNetCLI:
    """A CLI that has built its parser and parsed ``args``, stopped before it instantiates anything."""
    try:
        _ParseOnlyCLI(**cli_arguments(args), run=True)
    except _ConfigParsed as parsed:
        return parsed.cli
    raise AssertionError("unreachable: the parse-only CLI stops before instantiating")

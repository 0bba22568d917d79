"""Finding, reading and loading a run's checkpoints: resume (the newest intact), best, hpc, ``--ckpt_path``.

A truncated file (a kill while it was written) is passed over, never trusted; see ``resume_checkpoint``.
A checkpoint is data, never code, wherever it came from: every file is read with ``weights_only=True``
(tensors and plain containers, no pickled objects) and every class path it carries must name a class of
the expected kind before anything is built from it (``check_classes``).
"""

from __future__ import annotations

import glob
import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torchmetrics import Metric

from src.class_paths import UntrustedClassError, refuse_untrusted_names, trusted_class
from src.runs.layout import (
    _HPC_PATTERN,
    CHECKPOINT_DIR,
    DEFAULT_MODEL_CLASS,
    HPC_PREFIX,
    LAST_CHECKPOINT,
    RUN_CONFIG_KEY,
    CheckpointFallbackWarning,
    RunError,
    checkpoint_dir,
)


def last_checkpoint(run_dir: str) -> str | None:
    """``<run>/checkpoints/last.ckpt`` if it exists."""
    path = os.path.join(checkpoint_dir(run_dir), LAST_CHECKPOINT)
    return path if os.path.isfile(path) else None


def hpc_checkpoints(run_dir: str) -> list[str]:
    """The run's SLURM requeue checkpoints, oldest (lowest N) first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), f"{HPC_PREFIX}*.ckpt")):
        match = _HPC_PATTERN.match(os.path.basename(path))
        if match:
            found.append((int(match[1]), path))
    return [path for _, path in sorted(found)]


def _saved_checkpoints(run_dir: str) -> list[str]:
    """Every checkpoint file of the run, in tie-break order: hpc (newest first), last, then the others."""
    directory = checkpoint_dir(run_dir)
    others = sorted(
        os.path.join(directory, name)
        for name in (os.listdir(directory) if os.path.isdir(directory) else [])
        if name.endswith(".ckpt") and name != LAST_CHECKPOINT
    )
    return [*reversed(hpc_checkpoints(run_dir)), *filter(None, [last_checkpoint(run_dir)]), *others]


REFUSED_PICKLE = (
    "it holds pickled Python objects besides tensors and plain data, which could run code: refused "
    "(checkpoints are read with torch.load(weights_only=True); see docs/runs.md#checkpoints-from-elsewhere)"
)
# What LightningCLI writes as a module's ``_instantiator`` (Lightning's own allowlist, for every version we allow).
LIGHTNING_INSTANTIATORS = ("lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module")


def _why_unreadable(error: Exception) -> str:
    """One line: a refused pickle (``REFUSED_PICKLE``), or the first line of what broke (truncated, not a zip)."""
    if isinstance(error, pickle.UnpicklingError) and "weights only" in str(error).lower():
        return REFUSED_PICKLE
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")


class UnreadableCheckpoint(RunError):
    """A file ``torch.load(weights_only=True)`` refuses or cannot read; ``why`` says which (``REFUSED_PICKLE``...)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"cannot read checkpoint {path!r}: {why}")
        self.why = why


def read_checkpoint(path: str | bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(checkpoint, None)``, or ``(None, why)`` for a file that cannot be read (truncated, not a checkpoint).

    The project's one ``torch.load``: every reader of a checkpoint comes here, and it reads tensors and plain
    data only (``weights_only=True``). ``path`` may be the file's bytes, for a loader that builds from the
    same bytes it checked. A path is memory-mapped: reading a checkpoint's step and callback states does not
    pull its tensors in.
    """
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    if not zipfile.is_zipfile(source):  # every torch.save file since PyTorch 1.6 is a zip archive
        return None, "not a zip archive, as every PyTorch checkpoint is (a truncated file, or another kind of file)"
    if isinstance(source, io.BytesIO):
        source.seek(0)  # is_zipfile read the archive's end
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True, mmap=not isinstance(path, bytes))
    except Exception as error:  # pickled objects; truncated zip, not a zip at all
        return None, _why_unreadable(error)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return None, "not a Lightning checkpoint (no state_dict)"
    return checkpoint, None


def _intact_checkpoints(run_dir: str) -> tuple[list[tuple[int, str, dict[str, Any]]], dict[str, str]]:
    """``([(global_step, path, checkpoint), ...] newest first, {broken path: why})``."""
    intact, broken = [], {}
    for order, path in enumerate(_saved_checkpoints(run_dir)):
        checkpoint, why = read_checkpoint(path)
        if checkpoint is None:
            broken[path] = why or "unreadable"
        else:
            intact.append((int(checkpoint.get("global_step") or 0), -order, path, checkpoint))
    intact.sort(key=lambda item: item[:2], reverse=True)  # highest step; at equal steps hpc, last, others
    return [(step, path, checkpoint) for step, _, path, checkpoint in intact], broken


def resume_checkpoint(run_dir: str) -> str | None:
    """The checkpoint to continue the run from: the intact one with the most steps (hpc, last, best, ...).

    A requeued or SIGTERM'd job may hold an hpc checkpoint from an earlier preemption *and* a newer
    ``last.ckpt`` written after it; Lightning on its own would take the hpc one and lose the progress
    in between. A truncated ``last.ckpt`` (a kill while it was written) is passed over, with a
    warning naming it and the checkpoint used instead, rather than blocking the run for good.
    """
    intact, broken = _intact_checkpoints(run_dir)
    chosen = intact[0][1] if intact else None
    last = os.path.join(checkpoint_dir(run_dir), LAST_CHECKPOINT)
    # No last.ckpt at all is ordinary (a SIGTERM before the first epoch ended leaves only its hpc checkpoint):
    # only a broken one is worth a warning.
    if chosen is not None and chosen != last and last in broken:
        warnings.warn(
            f"'{last}' cannot be read ({broken[last]}); continuing from '{chosen}' (step {intact[0][0]}), "
            "the newest intact checkpoint",
            CheckpointFallbackWarning,
            stacklevel=2,
        )
    return chosen


def has_checkpoints(run_dir: str) -> bool:
    """Whether a run has already saved an intact checkpoint it could be resumed from.

    Broken files alone (a kill during the first checkpoint write) do not count: such a run has nothing
    to continue from and is started again (new checkpoints get new names; the broken files stay).
    """
    return bool(_intact_checkpoints(run_dir)[0])


def best_checkpoint(run_dir: str) -> str | None:
    """The best-by-monitor checkpoint, as ModelCheckpoint recorded it in the run's newest intact checkpoint.

    Any intact checkpoint of the run knows the best one (the best checkpoint itself included), so a
    broken ``last.ckpt`` does not hide it. The recorded path is taken relative to the run's
    ``checkpoints/`` folder, so a run directory that was moved or copied still finds its own file.
    """
    intact, broken = _intact_checkpoints(run_dir)
    for _, _, checkpoint in intact:
        for state in (checkpoint.get("callbacks") or {}).values():
            if isinstance(state, dict) and state.get("best_model_path"):  # ModelCheckpoint and subclasses
                path = os.path.join(checkpoint_dir(run_dir), os.path.basename(state["best_model_path"]))
                if path in broken:
                    raise RunError(f"the run's best checkpoint '{path}' cannot be read ({broken[path]})")
                return path if os.path.isfile(path) else None
    return None


def resolve_checkpoint(ckpt_path: str, run_dir: str | None) -> str:
    """Turn ``--ckpt_path`` into a file: ``last`` / ``best`` / ``hpc`` of ``run_dir``, or an existing path.

    Raises ``RunError`` (one line, what to do) when there is nothing to load.
    """
    if ckpt_path in ("last", "best", "hpc"):
        if not run_dir:
            raise RunError(
                f"--ckpt_path {ckpt_path} needs the run it belongs to: add --run_dir DIR "
                f"(or pass the checkpoint file itself, e.g. DIR/{CHECKPOINT_DIR}/{LAST_CHECKPOINT})"
            )
        if ckpt_path == "last":
            found = resume_checkpoint(run_dir)
        elif ckpt_path == "best":
            found = best_checkpoint(run_dir)
        else:
            hpc = hpc_checkpoints(run_dir)
            found = hpc[-1] if hpc else None
        if found is None:
            broken = _intact_checkpoints(run_dir)[1]
            detail = (
                f"{len(broken)} checkpoint file(s) there cannot be read, e.g. '{next(iter(broken))}'"
                if broken
                else f"nothing in '{checkpoint_dir(run_dir)}' or '{run_dir}/{HPC_PREFIX}*.ckpt'"
            )
            raise RunError(
                f"--ckpt_path {ckpt_path}: the run '{run_dir}' has no such checkpoint ({detail}); there is nothing "
                "to continue: start a new run in another directory (or move this one away first)"
            )
        return found
    if not os.path.isfile(ckpt_path):
        raise RunError(f"--ckpt_path: no checkpoint file '{ckpt_path}' (valid: a .ckpt file, or last/best/hpc)")
    return ckpt_path


def checkpoint_run_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved CLI config a checkpoint carries (``None`` for checkpoints not written by ``src.cli``)."""
    return checkpoint.get(RUN_CONFIG_KEY)


def datamodule_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``{"class_path": ..., "init_args": {...}}`` of the checkpoint's DataModule, if it can be known."""
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    run_config = checkpoint_run_config(checkpoint) or {}
    data = run_config.get("data") or {}
    if class_path is None and isinstance(data, dict):
        class_path = data.get("class_path")
        hparams = {**(data.get("init_args") or {}), **hparams}
    if class_path is None:
        return None
    if "." not in class_path:  # a short name as typed on the command line
        class_path = f"src.data.{class_path}"
    return {"class_path": class_path, "init_args": hparams}


DATA_CLASS_KEY = "data.class_path"


def _class_paths(checkpoint: dict[str, Any]) -> Iterator[tuple[str, Any, type | tuple[type, ...]]]:
    """``(key, class path, expected base)`` for every class path a checkpoint asks its loader to build."""
    yield "run_model_class", checkpoint.get("run_model_class", DEFAULT_MODEL_CLASS), pl.LightningModule
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        return
    for key, base in (("_class_path", pl.LightningModule), ("net_class", nn.Module)):
        if hparams.get(key) is not None:
            yield f"hyper_parameters.{key}", hparams[key], base
    metrics = hparams.get("metrics")
    for name, entry in metrics.items() if isinstance(metrics, dict) else []:
        class_path = entry.get("class_path") if isinstance(entry, dict) else entry
        yield f"hyper_parameters.metrics.{name}.class_path", class_path, Metric
    data = datamodule_config(checkpoint)
    if data is not None:
        yield DATA_CLASS_KEY, data["class_path"], pl.LightningDataModule


# The kind of class each key of a checkpoint's configs builds: ``hyper_parameters.*`` (the model's arguments),
# ``run_config.*`` (the CLI's config) and the same keys without a prefix (the defaults a command takes from it).
_MODEL = r"(?:run_config\.model|model|hyper_parameters)"
NAMED_KINDS: tuple[tuple[re.Pattern[str], type | tuple[type, ...]], ...] = tuple(
    (re.compile(pattern), base)
    for pattern, base in (
        (r"(?:run_config\.)?trainer\.callbacks(?:\.\d+)?\.class_path", pl.Callback),
        (r"(?:run_config\.)?trainer\.logger(?:\.\d+)?\.class_path", Logger),
        (rf"{_MODEL}\.optimizer\.class_path", torch.optim.Optimizer),
        (rf"{_MODEL}\.lr_scheduler\.class_path", (torch.optim.lr_scheduler.LRScheduler,
                                                   torch.optim.lr_scheduler.ReduceLROnPlateau)),
        (rf"{_MODEL}\.metrics\.[^.]+\.class_path", Metric),
        (rf"{_MODEL}\.net_class", nn.Module),
        (r"hyper_parameters\._class_path", pl.LightningModule),
        (r"(?:run_config\.)?data\.class_path|datamodule_hyper_parameters\._class_path", pl.LightningDataModule),
    )
)  # fmt: skip
NAMED_SECTIONS = ("hyper_parameters", "datamodule_hyper_parameters", RUN_CONFIG_KEY)


def named_kind(key: str) -> type | tuple[type, ...] | None:
    """The base class a checkpoint config's key builds (``NAMED_KINDS``), ``None`` where it is not known."""
    return next((base for pattern, base in NAMED_KINDS if pattern.fullmatch(key)), None)


def check_names(config: Any, key: str, path: str) -> None:
    """Refuse (``UntrustedClassError``) a checkpoint's config (``key``: where it sits) that names untrusted code.

    Every string that could name code, not only the class paths ``check_classes`` builds from: Lightning's
    loader resolves the model's ``optimizer`` / ``lr_scheduler`` hyperparameters, and the CLI turns the saved
    ``run_config`` (callbacks, loggers, ``model.net_class``, a ``LambdaCallback``'s hooks) into its defaults,
    importing each name it holds. See ``src.class_paths.trusted_name`` for what passes.
    """
    refuse_untrusted_names(config, key, f"checkpoint {path!r}", named_kind)


def check_classes(checkpoint: dict[str, Any], path: str) -> dict[str, type]:
    """Refuse (``UntrustedClassError``, one line naming the key) a checkpoint whose class paths could run code.

    Every class path must resolve to a subclass of what its key builds (a LightningModule, an ``nn.Module``,
    a torchmetrics ``Metric``, a DataModule) from trusted code (``src.class_paths.importable_without_new_code``),
    and an ``_instantiator`` must be LightningCLI's own. Every other name in its hyperparameters, its
    DataModule's and its saved run config must be trusted too (``check_names``): a loader or the CLI would
    import it. Checked before anything is called. Returns ``{key: class}``.
    """
    classes = {
        key: trusted_class(class_path, base, key, f"checkpoint {path!r}")
        for key, class_path, base in _class_paths(checkpoint)
    }
    for section in ("hyper_parameters", "datamodule_hyper_parameters"):
        instantiator = (checkpoint.get(section) or {}).get("_instantiator")
        if instantiator is not None and instantiator not in LIGHTNING_INSTANTIATORS:
            raise UntrustedClassError(
                f"checkpoint {path!r}: {section}._instantiator {instantiator!r} is refused: only LightningCLI's "
                f"own ({LIGHTNING_INSTANTIATORS[0]}) may build a module from a checkpoint"
            )
    for section in NAMED_SECTIONS:
        check_names(checkpoint.get(section), section, path)
    return classes


def load_checkpoint_run(
    path: str, map_location: str | torch.device = "cpu", check: Callable[[dict[str, Any]], None] | None = None
) -> tuple[Any, Any]:
    """``(model, datamodule)`` exactly as the run that wrote the checkpoint built them, weights loaded.

    The model comes from the checkpoint's hyperparameters (``load_from_checkpoint`` of its class); the
    DataModule from the hyperparameters it saved (``save_hyperparameters()``) and its class path.
    ``datamodule`` is ``None`` when the checkpoint does not say which data it was trained on.
    For lesion and pruning tools: ``datamodule.setup("test")`` then ``datamodule.test_dataloader()``.
    ``check`` sees the checkpoint's contents before anything is built (a tool's own requirements).

    Safe with a file from elsewhere: the file is read once; its bytes are accepted only by
    ``torch.load(weights_only=True)`` (``read_checkpoint``), and every class path is checked
    (``check_classes``) before Lightning builds the model from the same bytes (so no torch version's
    ``weights_only`` default, and no file changed in between, can let a pickle through).
    Raises ``UnreadableCheckpoint`` (a ``RunError``) for a file that is not such a checkpoint,
    ``UntrustedClassError`` for a refused class.
    """
    with open(path, "rb") as file:
        raw = file.read()
    checkpoint, why = read_checkpoint(raw)
    if checkpoint is None:
        raise UnreadableCheckpoint(path, why or "unreadable")
    if check is not None:
        check(checkpoint)
    classes = check_classes(checkpoint, path)
    model_class = cast(type[pl.LightningModule], classes["run_model_class"])
    model = model_class.load_from_checkpoint(io.BytesIO(raw), map_location=map_location)
    model.eval()
    data = datamodule_config(checkpoint)
    datamodule = classes[DATA_CLASS_KEY](**data["init_args"]) if data is not None else None
    return model, datamodule

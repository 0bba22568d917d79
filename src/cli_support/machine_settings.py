"""Which of a checkpoint's saved settings belong to the machine it was trained on, not to the run.

``test`` / ``validate`` / ``predict --ckpt_path X`` take their defaults from the config the checkpoint
carries, so no ``--config`` is needed. Model, data and run settings must travel with it (they decide
what is computed); hardware settings must not: a checkpoint trained under ``configs/trainer/slurm.yaml``
(``accelerator: gpu``, ``num_nodes: 2``, ``strategy: ddp``, a ``SLURMEnvironment`` plugin, the compile
callback) would otherwise fail on a laptop with ``No supported gpu backend found!``. Those settings
are left to this machine's defaults and to whatever the user passes on the command line.

``machine_free`` takes the flat defaults the CLI builds from the checkpoint (``{"trainer.devices": 4,
"data": {...}, ...}``) and returns them without the hardware settings, plus a short description of
each saved value that was left out; once the Trainer exists, ``used_instead`` says what ran in their place
and ``notice`` puts both on one line.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from lightning.pytorch import Trainer

from src.callbacks.compile import CompileModel
from src.class_paths import entry_class

# Trainer arguments that say where and how many processes run, not what they compute.
HARDWARE_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "plugins", "sync_batchnorm")
# DataModule arguments that only size the loaders to the machine's CPUs and GPUs (null: chosen here).
LOADER_KEYS = ("num_workers", "pin_memory")
# Precisions that need a CUDA GPU: on a CPU Lightning would silently swap fp16 autocast for bf16, which is
# slow without bf16 instructions and coarser than fp16; fp32 (the default) evaluates the same weights best.
FP16_MIXED = ("16-mixed", "16", 16)


def _trainer_default(name: str) -> Any:
    return inspect.signature(Trainer.__init__).parameters[name].default


def _short(value: Any) -> str:
    """``gpu``, ``4``, ``[SLURMEnvironment]``: a saved value as the notice shows it."""
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    if isinstance(value, list):
        return "[" + ", ".join(_short(item) for item in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_compile_callback(entry: Any) -> bool:
    """Whether a saved ``trainer.callbacks`` entry is ``CompileModel`` (or a subclass of it).

    The entry comes from a checkpoint: ``entry_class`` imports nothing that is not trusted code (a module of
    elsewhere is simply not ``CompileModel``), and ``checkpoint_summary`` has refused such a checkpoint already.
    """
    found = entry_class(entry) if isinstance(entry, dict) else None
    return found is not None and issubclass(found, CompileModel)


def _fp16_without_cuda(precision: Any) -> bool:
    return precision in FP16_MIXED and not torch.cuda.is_available()


def machine_free(defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(defaults without this machine's settings, ["trainer.devices (4)", ...])``.

    Only saved values that differ from Lightning's defaults are listed: ``devices: auto`` replaced by
    ``auto`` is no news. The input is left untouched.
    """
    kept, left_out = dict(defaults), []
    for name in HARDWARE_KEYS:
        value = kept.pop(f"trainer.{name}", None)
        if value is not None and value != _trainer_default(name):
            left_out.append(f"trainer.{name} ({_short(value)})")
    callbacks = kept.get("trainer.callbacks")
    if isinstance(callbacks, list) and any(_is_compile_callback(entry) for entry in callbacks):
        kept["trainer.callbacks"] = [entry for entry in callbacks if not _is_compile_callback(entry)] or None
        left_out.append("the CompileModel callback (torch.compile)")
    if _fp16_without_cuda(kept.get("trainer.precision")):
        precision = kept.pop("trainer.precision")
        left_out.append(f"trainer.precision ({precision}: fp16 autocast needs a CUDA GPU)")
    data = kept.get("data")
    init_args = data.get("init_args") if isinstance(data, dict) else None
    if isinstance(init_args, dict):
        loader = {key: init_args[key] for key in LOADER_KEYS if init_args.get(key) is not None}
        if loader:
            kept["data"] = copy.deepcopy(data)
            kept["data"]["init_args"].update(dict.fromkeys(loader))  # null: sized to this machine
            left_out += [f"data.{key} ({_short(value)})" for key, value in loader.items()]
    return kept, left_out


def _strategy_name(strategy: Any) -> str:
    return str(getattr(strategy, "strategy_name", type(strategy).__name__))


def used_instead(left_out: list[str], trainer: Trainer, datamodule: Any = None) -> dict[str, str]:
    """What this command runs with in place of each left-out setting: ``{"trainer.devices (4)": "1", ...}``.

    Why: "not restored: trainer.devices (4)" alone leaves the user to guess whether 1, all or 4 were used.
    """
    connector = getattr(trainer, "_accelerator_connector", None)  # the only home of plugins / sync_batchnorm
    used = {
        "trainer.accelerator": lambda: type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "trainer.devices": lambda: str(trainer.num_devices),
        "trainer.num_nodes": lambda: str(trainer.num_nodes),
        "trainer.strategy": lambda: _strategy_name(trainer.strategy),
        "trainer.plugins": lambda: _plugins(trainer),
        "trainer.sync_batchnorm": lambda: _short(bool(getattr(connector, "sync_batchnorm", False))),
        "trainer.precision": lambda: str(trainer.precision),
        "the CompileModel callback": lambda: "not compiled",
        "data.num_workers": lambda: str(getattr(datamodule, "num_workers", "the DataModule's default")),
        "data.pin_memory": lambda: _short(getattr(datamodule, "pin_memory", "the DataModule's default")),
    }
    return {entry: value() for entry in left_out for prefix, value in used.items() if entry.startswith(prefix + " (")}


def _plugins(trainer: Trainer) -> str:
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return f"[{type(environment).__name__}]" if environment is not None else "none"


def notice(left_out: list[str], used: dict[str, str] | None = None) -> str:
    """The one line saying which saved settings this machine replaced, and with what (empty when none were):
    ``trainer.devices (4 -> 1)``: saved 4, ran with 1."""
    if not left_out:
        return ""
    used = used or {}
    shown = [f"{entry[:-1]} -> {used[entry]})" if entry in used else entry for entry in left_out]
    why = "saved -> used here: this machine's defaults, or what you pass"
    return f"Not restored from the checkpoint ({why}): {', '.join(shown)}"

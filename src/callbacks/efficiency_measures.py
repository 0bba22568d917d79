"""What ``ParameterEfficiency`` measures, as plain functions of the trainer and the module (no callback state).

The model's size (parameters by stage and kind, bytes) and its record's empty fields (``describe_model``),
the run context that tells a sweep's runs apart (``run_context``), the batch as trained (``batch_facts``),
peak training memory less the data held on the GPU (``peak_memory_mb``, ``data_on_device_bytes``), and the
resolved config the provenance hashes (``trainer_config``). The callback (``src.callbacks.efficiency``)
decides *when* each is taken and writes ``efficiency.json``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from torch.utils.data import Subset

from src.models.complexity import count_parameters, model_size_bytes, parameters_by_kind, parameters_by_stage

FLOP_CONVENTION = (
    "per sample and forward pass; MACs of conv and linear layers counted by torch.utils.flop_counter; "
    "FLOPs = 2 x MACs; batch norm, activations, pooling and residual additions not counted"
)

CPU_MEMORY_NOTE = (
    "not measured on CPU: the process's peak RSS is mostly Python, torch and data-loader memory and does not "
    "compare models; compare peak_memory_mb from GPU runs"
)

CUDA_MEMORY_KIND = "cuda_max_allocated_excluding_data"

CUDA_MEMORY_NOTE = (
    "torch.cuda.max_memory_allocated since training started, the largest over all processes, less the data set "
    "held on the GPU by the fast data path (data_on_device_mb): model, optimizer state, activations, workspace"
)

SPLITS = ("train_set", "val_set", "test_set", "predict_set")

CONTAINER_ITEMS = 64


def peak_memory_mb(device: torch.device, data_bytes: int = 0) -> tuple[float | None, str]:
    """Peak memory of training in MiB and what it measures; ``None`` where no number would compare models (CPUs).

    ``data_bytes`` (the data set resident on the device, see :func:`data_on_device_bytes`) is taken
    out: it is a constant offset per data set, not a property of the model.
    """
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - data_bytes) / 2**20, CUDA_MEMORY_KIND
    return None, "not_measured_on_cpu"


def _tensors(value: Any, depth: int = 3) -> list[torch.Tensor]:
    """Tensors held by a data set object: its attributes, their attributes, lists and dicts, a few levels deep.

    Containers are looked into for their first ``CONTAINER_ITEMS`` items only: tensors sit in short
    tuples (images, labels), and a folder data set's list of 50,000 file names holds none.
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if depth == 0 or value is None or isinstance(value, (str, bytes, int, float, bool)):
        return []
    if isinstance(value, Subset):
        return _tensors(value.dataset, depth)
    if isinstance(value, dict):
        items = list(islice(value.values(), CONTAINER_ITEMS))
    elif isinstance(value, (list, tuple)):
        items = list(islice(value, CONTAINER_ITEMS))
    elif hasattr(value, "__dict__"):
        items = list(vars(value).values())
    else:
        return []
    return [tensor for item in items for tensor in _tensors(item, depth - 1)]


def data_on_device_bytes(datamodule: Any, device: torch.device) -> int:
    """Bytes of the tensors that the DataModule's splits hold on ``device``.

    On the fast data path (``src.data.fast``) on a GPU: every split's uint8 images and labels
    (~150 MB for CIFAR, ~1.35 GB for Tiny-ImageNet). Each storage is counted once.
    """
    storages: dict[int, int] = {}
    for split in SPLITS:
        for tensor in _tensors(getattr(datamodule, split, None)):
            if tensor.device == device:
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def batch_facts(trainer: pl.Trainer) -> dict[str, int | None]:
    """World size and batch sizes as trained: ``global_batch_size`` is samples per optimizer step."""
    # Trainer.datamodule is set by Lightning's connectors, not declared on the class.
    per_process = getattr(trainer.datamodule, "per_process_batch_size", None)  # type: ignore[attr-defined]
    accumulate = trainer.accumulate_grad_batches
    return {
        "world_size": trainer.world_size,
        "per_process_batch_size": per_process,
        "accumulate_grad_batches": accumulate,
        "global_batch_size": per_process * trainer.world_size * accumulate if per_process else None,
    }


def trainer_config(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
    """The run's config as the CLI saves it (``config.yaml``), else the module's and DataModule's hparams."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning's callback connector sets it
        if any(cls.__name__ == "SaveConfigCallback" for cls in type(callback).__mro__):
            try:
                return yaml.safe_load(callback.parser.dump(callback.config, skip_none=False))
            except Exception:  # a config that does not dump: fall back to the hparams, never fail the run
                break
    config: dict[str, Any] = {"model": dict(pl_module.hparams)}
    # Trainer.datamodule is set by Lightning's connectors, not declared on the class.
    data_hparams = getattr(trainer.datamodule, "hparams", None)  # type: ignore[attr-defined]
    if data_hparams:
        config["data"] = dict(data_hparams)
    return config


def run_context(trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> dict[str, Any]:
    """What tells the runs of a sweep apart: data, batch, optimizer, schedule, seed, limits, test protocol."""
    datamodule = trainer.datamodule  # type: ignore[attr-defined]  # Lightning's data connector sets it
    dataset = getattr(datamodule, "dataset", None)
    seed = os.environ.get("PL_GLOBAL_SEED")
    test_flip = bool(pl_module.hparams.get("test_flip", False))
    context: dict[str, Any] = {
        "stage": stage,
        "data": type(datamodule).__name__ if datamodule is not None else None,
        "dataset": dataset if isinstance(dataset, str) else None,
        "batch_size": getattr(datamodule, "batch_size", None),
        "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
        "max_steps": trainer.max_steps if trainer.max_steps >= 0 else None,
        "max_epochs": trainer.max_epochs,
        "test_flip": test_flip,
        "test_passes_per_sample": 2 if test_flip else 1,
    }
    if trainer.optimizers:
        optimizer = trainer.optimizers[0]
        group = optimizer.param_groups[0]
        context.update(
            optimizer=type(optimizer).__name__,
            lr=group.get("initial_lr", group.get("lr")),
            weight_decay=optimizer.defaults.get("weight_decay"),
        )
    if trainer.lr_scheduler_configs:
        config = trainer.lr_scheduler_configs[0]
        context.update(lr_scheduler=type(config.scheduler).__name__, lr_scheduler_interval=config.interval)
    elif trainer.optimizers:
        context.update(lr_scheduler=None, lr_scheduler_interval=None)
    return context


def describe_model(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The record's fields before anything is measured: sizes counted now, the rest ``None`` until known."""
    net = getattr(pl_module, "model", pl_module)
    return {
        "arch": pl_module.hparams.get("arch", type(net).__name__),
        "num_classes": pl_module.hparams.get("num_classes"),
        "params_total": count_parameters(net),
        "params_trainable": count_parameters(net, trainable_only=True),
        "params_by_stage": parameters_by_stage(net),
        "params_by_kind": parameters_by_kind(net),
        "model_size_bytes": model_size_bytes(net),
        "input_shape": None,
        "macs_per_sample": None,
        "flops_per_sample": None,
        "flop_convention": FLOP_CONVENTION,
        "best_val_acc": None,
        "best_val_step": None,
        "last_val_acc": None,
        "test_acc": None,
        "val_acc_per_mparam": None,
        "val_acc_per_gmac": None,
        "test_acc_per_mparam": None,
        "test_acc_per_gmac": None,
        "raw_acc_per_mparam": None,
        "raw_acc_per_gmac": None,
        "acc_source": None,
        "test_ckpt_path": None,
        "train_images_per_sec": None,
        "train_time_sec": None,
        "train_images_seen": 0,
        "peak_memory_mb": None,
        "peak_memory_kind": None,
        "peak_memory_note": None,
        "data_on_device_mb": None,
        "val_samples": None,
        "test_samples": None,
        **batch_facts(trainer),
        "precision": str(trainer.precision),
        "global_step": trainer.global_step,
        "epoch": trainer.current_epoch,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed_at_steps": [],
        "earlier_provenance": [],
    }


def start_of(pl_module: pl.LightningModule) -> dict[str, Any]:
    """What a fit started from (``model.init_from``) and how it was pruned (``model.pruning``), when it was.

    ``init_from``: the parent checkpoint (path, sha256, architecture, step, its run's training images and commit):
    a pruned network's training compute is its parent's plus its own. ``pruning``: the settings, the weights
    pruned and ``params_remaining`` -- the network's size as a frontier counts it (``params_total`` stays the size
    of its tensors, zeros included).
    """
    record: dict[str, Any] = {}
    start = getattr(pl_module, "start_record", None)
    if start:
        record["init_from"] = dict(start)
    pruned = getattr(pl_module, "pruned", None)
    if pruned is not None and getattr(pruned, "record", None):
        record["pruning"] = dict(pruned.record)
    return record

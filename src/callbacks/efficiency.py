"""Parameter-efficiency callback: what each parameter and each MAC buys, per run.

On rank zero it measures, once per run (never per step):

* parameters -- total, trainable, per stage (top-level child) and per kind (conv, norm,
  linear, shortcut projection) -- model size in bytes, and MACs / FLOPs per sample at the
  DataModule's ``input_shape`` (conventions in ``src.models.complexity``: FLOPs = 2 x MACs,
  conv + linear layers, counted with ``torch.utils.flop_counter``);
* while training: images per second (all ranks, per epoch) and peak memory (CUDA allocated
  memory on GPUs, the process's peak RSS on CPUs);
* after each validation and test: accuracy per million parameters and per GMAC.

Everything goes to every logger as scalars under ``efficiency/``; TensorBoard also gets an
HPARAMS session (so its HPARAMS tab plots accuracy against parameters across runs); and all
of it is written to ``efficiency.json`` in the run's log directory, rewritten after each
evaluation so a crashed run still leaves its numbers behind.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from datetime import datetime, timezone
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from src.models.complexity import (
    count_flops,
    count_parameters,
    model_size_bytes,
    parameters_by_kind,
    parameters_by_stage,
)

FLOP_CONVENTION = (
    "per sample; MACs of conv and linear layers counted by torch.utils.flop_counter; FLOPs = 2 x MACs; "
    "batch norm, activations, pooling and residual additions not counted"
)
HPARAM_METRICS = ("hp/best_val_acc", "hp/val_acc_per_mparam", "hp/val_acc_per_gmac", "hp/test_acc")


def free_path(directory: str, filename: str) -> str:
    """``directory/filename``, or ``stem-1.ext``, ``stem-2.ext``... if it exists: never overwrite a file."""
    stem, ext = os.path.splitext(filename)
    path, index = os.path.join(directory, filename), 0
    while os.path.exists(path):
        index += 1
        path = os.path.join(directory, f"{stem}-{index}{ext}")
    return path


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process_peak_rss"


class ParameterEfficiency(pl.Callback):
    """Measure parameters, MACs, throughput and memory, and relate accuracy to them.

    Args:
        filename: file written into the run's log directory (never overwriting one that exists).
        val_metric: the logged validation accuracy to relate to size and cost.
        test_metric: the logged test accuracy.
        input_shape: (C, H, W) to count MACs at; ``null`` takes the DataModule's ``input_shape``,
            or the first training batch's shape.
        log_hparams: write a TensorBoard HPARAMS session with the size/cost numbers.
    """

    def __init__(
        self,
        filename: str = "efficiency.json",
        val_metric: str = "val/acc",
        test_metric: str = "test/acc",
        input_shape: list[int] | None = None,
        log_hparams: bool = True,
    ) -> None:
        self.filename = filename
        self.val_metric = val_metric
        self.test_metric = test_metric
        self.input_shape = tuple(input_shape) if input_shape else None
        self.log_hparams = log_hparams
        self.path: str | None = None
        self.report: dict[str, Any] = {}
        self._epoch_start = 0.0
        self._epoch_images = 0

    # ---------------------------------------------------------------- static numbers
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not trainer.is_global_zero or self.report:
            return
        shape = self.input_shape or getattr(trainer.datamodule, "input_shape", None)
        self.path = free_path(log_dir or trainer.default_root_dir, self.filename)
        self.report = self._describe_model(trainer, pl_module)
        if shape is not None:
            self._count_cost(pl_module, tuple(shape))
        self._write()
        if stage == "fit" and self.log_hparams:
            self._log_hparams(trainer, pl_module)

    def _describe_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
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
            "acc_per_mparam": None,
            "acc_per_gmac": None,
            "acc_source": None,
            "train_images_per_sec": None,
            "peak_memory_mb": None,
            "peak_memory_kind": None,
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
        }

    def _count_cost(self, pl_module: pl.LightningModule, shape: tuple[int, ...]) -> None:
        net = getattr(pl_module, "model", pl_module)
        flops = count_flops(net, shape)
        self.report.update(input_shape=list(shape), flops_per_sample=flops, macs_per_sample=flops // 2)

    def _log_hparams(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        numbers = {
            f"efficiency/{key}": self.report[key]
            for key in ("params_total", "params_trainable", "macs_per_sample", "model_size_bytes")
            if self.report[key] is not None
        }
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                params = {**dict(pl_module.hparams), **numbers}
                logger.log_hyperparams(params, metrics={name: math.nan for name in HPARAM_METRICS})
            else:
                logger.log_metrics(numbers, step=trainer.global_step)

    # ---------------------------------------------------------------- training cost
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._epoch_start, self._epoch_images = time.perf_counter(), 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.is_global_zero and self.report and self.report["macs_per_sample"] is None:
            self._count_cost(pl_module, tuple(batch[0].shape[1:]))  # no input_shape anywhere else
            self._write()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_images += len(batch[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        if not trainer.is_global_zero or elapsed <= 0 or not self._epoch_images:
            return
        # Every rank sees its own shard of equal size: the global rate is world_size times ours.
        throughput = self._epoch_images * trainer.world_size / elapsed
        memory, kind = peak_memory_mb(pl_module.device)
        self.report.update(train_images_per_sec=throughput, peak_memory_mb=memory, peak_memory_kind=kind)
        metrics = {"efficiency/train_images_per_sec": throughput, f"efficiency/peak_memory_mb_{kind}": memory}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self._write()

    # ---------------------------------------------------------------- accuracy per cost
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation inside a training epoch stops the epoch clock: train_images_per_sec is training only.
        self._epoch_start += time.perf_counter() - getattr(self, "_validation_start", time.perf_counter())
        if trainer.sanity_checking:
            return
        self._record(trainer, "val", self.val_metric)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer, "test", self.test_metric)

    def _record(self, trainer: pl.Trainer, split: str, metric_name: str) -> None:
        if not trainer.is_global_zero or not self.report:
            return
        value = trainer.callback_metrics.get(metric_name)
        if value is None:
            rank_zero_warn(f"ParameterEfficiency: no metric {metric_name!r} was logged; nothing recorded for {split}")
            return
        acc = float(value)
        per_mparam = acc / (self.report["params_total"] / 1e6)
        macs = self.report["macs_per_sample"]
        per_gmac = acc / (macs / 1e9) if macs else None
        report = self.report
        report.update(global_step=trainer.global_step, epoch=trainer.current_epoch)
        if split == "val":
            report["last_val_acc"] = acc
            if report["best_val_acc"] is None or acc > report["best_val_acc"]:
                report.update(
                    best_val_acc=acc,
                    best_val_step=trainer.global_step,
                    val_acc_per_mparam=per_mparam,
                    val_acc_per_gmac=per_gmac,
                )
        else:
            report.update(test_acc=acc, test_acc_per_mparam=per_mparam, test_acc_per_gmac=per_gmac)
        source = "test" if report["test_acc"] is not None else "val"
        report.update(
            acc_source=source,
            acc_per_mparam=report[f"{source}_acc_per_mparam"],
            acc_per_gmac=report[f"{source}_acc_per_gmac"],
        )

        metrics = {f"efficiency/{split}_acc_per_mparam": per_mparam}
        if per_gmac is not None:
            metrics[f"efficiency/{split}_acc_per_gmac"] = per_gmac
        if split == "val":
            metrics.update(
                {"hp/best_val_acc": report["best_val_acc"], "hp/val_acc_per_mparam": report["val_acc_per_mparam"]}
            )
            if report["val_acc_per_gmac"] is not None:
                metrics["hp/val_acc_per_gmac"] = report["val_acc_per_gmac"]
        else:
            metrics["hp/test_acc"] = acc
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        self._write()

    def _write(self) -> None:
        """Rewrite the JSON atomically, so a reader never sees half a file."""
        assert self.path is not None
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.report["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(self.report, handle, indent=2)
        os.replace(tmp, self.path)

"""Parameter-efficiency callback: what each parameter and each MAC buys, per run.

On rank zero it measures, once per run (never per step):

* parameters -- total, trainable, per stage (top-level child) and per kind (conv, norm,
  linear, shortcut projection) -- model size in bytes, and MACs / FLOPs per sample at the
  DataModule's ``input_shape`` (conventions in ``src.models.complexity``: FLOPs = 2 x MACs,
  conv + linear layers, counted with ``torch.utils.flop_counter``);
* the run's scale: world size, per-process and global batch (samples per optimizer step);
* while training: images per second (all ranks, per epoch) and peak memory -- on GPUs the CUDA
  allocator's peak, the max over ranks; on CPUs nothing (see ``CPU_MEMORY_NOTE``);
* after each validation and test: accuracy per million parameters and per GMAC, and the number
  of samples scored (all ranks together: under DDP it must equal the split's size).

Everything goes to every logger as scalars under ``efficiency/``; TensorBoard also gets an
HPARAMS session (so its HPARAMS tab plots accuracy against parameters across runs); and all
of it is written to ``efficiency.json`` in the run's log directory, rewritten after each
evaluation so a crashed run still leaves its numbers behind.

The run context (data set, batch size, optimizer, lr, weight decay, schedule, seed, step and
epoch limits) is recorded beside the numbers, so runs of a sweep can be told apart without
their configs. The callback's record is part of every checkpoint (``state_dict``): a resumed
run continues the same ``efficiency.json`` -- best validation accuracy, its step, training
time -- instead of starting a new one, and opens no second HPARAMS session.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from src.files import free_path
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
RUN_CONTEXT_FIELDS = (
    "data", "dataset", "batch_size", "optimizer", "lr", "weight_decay", "lr_scheduler", "lr_scheduler_interval",
    "seed", "max_steps", "max_epochs",
)  # fmt: skip
# What a resumed run takes over from its checkpoint (the rest is measured afresh, e.g. the limits it now runs to).
RESUMED_FIELDS = (
    "best_val_acc", "best_val_step", "last_val_acc", "val_acc_per_mparam", "val_acc_per_gmac", "test_acc",
    "test_acc_per_mparam", "test_acc_per_gmac", "acc_per_mparam", "acc_per_gmac", "acc_source",
    "train_images_per_sec", "peak_memory_mb", "peak_memory_kind", "peak_memory_note", "train_time_sec", "started",
    "resumed_at_steps",
)  # fmt: skip
CPU_MEMORY_NOTE = (
    "not measured on CPU: the process's peak RSS is mostly Python, torch and data-loader memory and does not "
    "compare models; compare peak_memory_mb from GPU runs"
)


def peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    """Peak memory in MiB and what it measures; ``None`` where no number would compare models (CPUs)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return None, "not_measured_on_cpu"


def batch_facts(trainer: pl.Trainer) -> dict[str, int | None]:
    """World size and batch sizes as trained: ``global_batch_size`` is samples per optimizer step."""
    per_process = getattr(trainer.datamodule, "per_process_batch_size", None)
    accumulate = trainer.accumulate_grad_batches
    return {
        "world_size": trainer.world_size,
        "per_process_batch_size": per_process,
        "accumulate_grad_batches": accumulate,
        "global_batch_size": per_process * trainer.world_size * accumulate if per_process else None,
    }


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
        self._restored: dict[str, Any] | None = None  # from a checkpoint, merged in on_train_start
        self._log_dir: str | None = None
        self._eval_samples = 0

    # ---------------------------------------------------------------- static numbers
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        shape = self.input_shape or getattr(trainer.datamodule, "input_shape", None)
        if shape is not None and getattr(pl_module, "example_input_array", None) is None:
            # Lightning's model summary counts FLOPs only with an example input ("Total FLOPs: 0" otherwise).
            pl_module.example_input_array = torch.zeros(1, *shape)
        batch_facts(trainer)  # on every rank: a global batch that does not divide stops all ranks, not rank zero alone
        if not trainer.is_global_zero or self.report:
            return
        self._log_dir = log_dir or trainer.default_root_dir
        self.report = self._describe_model(trainer, pl_module)
        self.report.update(self._run_context(trainer, pl_module, stage))
        if shape is not None:
            self._count_cost(pl_module, tuple(shape))
        if stage != "fit":  # fitting waits for on_train_start: a resumed run's record is restored by then
            self.path = free_path(self._log_dir, self.filename)
            self._write()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.report or self.path is not None:
            return
        self.report.update(self._run_context(trainer, pl_module, "fit"))
        restored = self._restored
        if restored is not None:  # the same run, continued: same file, same record
            self.path = os.path.join(self._log_dir, restored["filename"])
            kept = {key: value for key, value in restored["report"].items() if key in RESUMED_FIELDS}
            self.report.update(kept)
            self.report["resumed_at_steps"] = [*restored["report"].get("resumed_at_steps", []), trainer.global_step]
        else:
            self.path = free_path(self._log_dir, self.filename)
        self._write()
        self._log_size_scalars(trainer)
        if self.log_hparams and restored is None:
            self._log_hparams(trainer, pl_module)

    # ---------------------------------------------------------------- checkpointed state
    def state_dict(self) -> dict[str, Any]:
        if not self.report or self.path is None:
            return {}
        return {"filename": os.path.basename(self.path), "report": json.loads(json.dumps(self.report))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict or None

    # ---------------------------------------------------------------- run context
    def _run_context(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> dict[str, Any]:
        """What tells the runs of a sweep apart: data, batch, optimizer, schedule, seed, limits."""
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "dataset", None)
        seed = os.environ.get("PL_GLOBAL_SEED")
        context: dict[str, Any] = {
            "stage": stage,
            "data": type(datamodule).__name__ if datamodule is not None else None,
            "dataset": dataset if isinstance(dataset, str) else None,
            "batch_size": getattr(datamodule, "batch_size", None),
            "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
            "max_steps": trainer.max_steps if trainer.max_steps >= 0 else None,
            "max_epochs": trainer.max_epochs,
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
            "test_ckpt_path": None,
            "train_images_per_sec": None,
            "train_time_sec": None,
            "peak_memory_mb": None,
            "peak_memory_kind": None,
            "peak_memory_note": None,
            "val_samples": None,
            "test_samples": None,
            **batch_facts(trainer),
            "precision": str(trainer.precision),
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "resumed_at_steps": [],
        }

    def _count_cost(self, pl_module: pl.LightningModule, shape: tuple[int, ...]) -> None:
        net = getattr(pl_module, "model", pl_module)
        flops = count_flops(net, shape)
        self.report.update(input_shape=list(shape), flops_per_sample=flops, macs_per_sample=flops // 2)

    def _size_numbers(self) -> dict[str, float]:
        return {
            f"efficiency/{key}": self.report[key]
            for key in ("params_total", "params_trainable", "macs_per_sample", "model_size_bytes")
            if self.report[key] is not None
        }

    def _log_size_scalars(self, trainer: pl.Trainer) -> None:
        """Parameters and MACs as scalars in every logger (TensorBoard's HPARAMS tab gets them too)."""
        for logger in trainer.loggers:
            logger.log_metrics(self._size_numbers(), step=trainer.global_step)

    def _log_hparams(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        context = {f"run/{key}": self.report.get(key) for key in RUN_CONTEXT_FIELDS}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                params = {**dict(pl_module.hparams), **context, **self._size_numbers()}
                logger.log_hyperparams(params, metrics={name: math.nan for name in HPARAM_METRICS})

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
        if trainer.is_global_zero and self.report and self.report["global_batch_size"] is None:
            per_process = len(batch[0])  # a DataModule without per_process_batch_size, or plain loaders
            global_batch = per_process * trainer.world_size * trainer.accumulate_grad_batches
            self.report.update(per_process_batch_size=per_process, global_batch_size=global_batch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_images += len(batch[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        memory, kind = peak_memory_mb(pl_module.device)
        if memory is not None and trainer.world_size > 1:  # every rank takes part; rank zero reports the largest
            memory = float(trainer.strategy.reduce(torch.tensor(memory, device=pl_module.device), reduce_op="max"))
        if not trainer.is_global_zero or elapsed <= 0 or not self._epoch_images:
            return
        # Every rank sees its own shard of equal size: the global rate is world_size times ours.
        throughput = self._epoch_images * trainer.world_size / elapsed
        note = CPU_MEMORY_NOTE if memory is None else None
        self.report.update(
            train_images_per_sec=throughput, peak_memory_mb=memory, peak_memory_kind=kind, peak_memory_note=note
        )
        self.report["train_time_sec"] = (self.report.get("train_time_sec") or 0.0) + elapsed
        metrics = {"efficiency/train_images_per_sec": throughput}
        if memory is not None:
            metrics[f"efficiency/peak_memory_mb_{kind}"] = memory
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self._write()

    # ---------------------------------------------------------------- samples scored
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_samples = 0

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._eval_samples += len(batch[0])

    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end

    def _samples_scored(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        """Samples this evaluation scored on all ranks together (a collective: every rank calls it)."""
        count = torch.tensor(self._eval_samples, device=pl_module.device)
        return int(trainer.strategy.reduce(count, reduce_op="sum")) if trainer.world_size > 1 else self._eval_samples

    # ---------------------------------------------------------------- accuracy per cost
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Validation inside a training epoch stops the epoch clock: train_images_per_sec is training only.
        self._epoch_start += time.perf_counter() - getattr(self, "_validation_start", time.perf_counter())
        if trainer.sanity_checking:
            return
        samples = self._samples_scored(trainer, pl_module)
        if self.report:
            self.report["val_samples"] = samples
        self._record(trainer, "val", self.val_metric)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.report and self.path is None and self._restored is not None:
            # `fit --ckpt_path last` of a run whose training was complete (killed in its test): the fit loop
            # never started, so on_train_start never opened the record; continue the saved one as it was.
            self.path = os.path.join(self._log_dir, self._restored["filename"])
            self.report.update(self._restored["report"])
            self.report["resumed_at_steps"] = [*self.report.get("resumed_at_steps", []), trainer.global_step]
        if trainer.is_global_zero and self.report:
            path = str(trainer.ckpt_path) if trainer.ckpt_path else None
            if path and self._log_dir and os.path.abspath(path).startswith(os.path.abspath(self._log_dir) + os.sep):
                path = os.path.relpath(path, self._log_dir)  # inside the run: stays true if the run is moved
            self.report["test_ckpt_path"] = path

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = self._samples_scored(trainer, pl_module)
        if self.report:
            self.report["test_samples"] = samples
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

    def mark_diverged(self, step: int, reason: str) -> None:
        """Record that training diverged (``status``, ``diverged_step``, ``diverged_reason``) and write it now.

        Called by ``src.callbacks.divergence.DivergenceGuard`` just before it stops the run.
        """
        if not self.report or self.path is None:
            return
        self.report.update(status="diverged", diverged_step=int(step), diverged_reason=str(reason))
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

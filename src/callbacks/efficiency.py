"""Parameter-efficiency callback: what each parameter and each MAC buys, per run.

On rank zero it measures, once per run (never per step):

* parameters -- total, trainable, per stage (top-level child) and per kind (conv, norm,
  linear, shortcut projection) -- model size in bytes, and MACs / FLOPs per sample at the
  DataModule's ``input_shape`` (conventions in ``src.models.complexity``: FLOPs = 2 x MACs,
  conv + linear layers, counted with ``torch.utils.flop_counter``);
* the run's scale: world size, per-process and global batch (samples per optimizer step);
* while training: training wall time and images seen (summed over epochs and resumes),
  images per second (all ranks, last epoch) and peak memory -- on GPUs the CUDA allocator's
  peak since training started, the max over ranks, *less* the data set's tensors that the fast
  data path keeps on the GPU (reported apart as ``data_on_device_mb``); on CPUs nothing (see
  ``CPU_MEMORY_NOTE``);
* the test protocol's cost: ``test_flip`` and ``test_passes_per_sample`` (2 forward passes per
  test image with flip test-time augmentation);
* after each validation and test: the accuracy, the number of samples scored (all ranks
  together: under DDP it must equal the split's size), and the *raw* ratios accuracy / Mparam
  and accuracy / GMAC (GMACs of the forward passes actually made per sample);
* provenance (``src.callbacks.provenance``): git commit and dirty flag, package versions,
  device name and a hash of the resolved config.

The raw ratios are kept for reference only: accuracy divided by size rewards being small (a
constant classifier scores above zero, ResNet-20 beats ResNet-110 by 6x), so they rank size,
not efficiency. Compare models by error against parameters / MACs / training compute
(``3 x macs_per_sample x train_images_seen``), as ``src.report`` does.

Why the clock is kept per batch: Lightning does not call ``on_train_epoch_start`` when it
resumes mid-epoch (a SLURM requeue, ``val_check_interval < 1``, a ``max_steps`` stop continued),
and a checkpoint taken at an epoch's last validation precedes ``on_train_epoch_end``. So training
time is added up at every batch end and paused for validation, which keeps the record in every
checkpoint exact whatever point a run is resumed from.

Everything goes to every logger as scalars under ``efficiency/``; TensorBoard also gets an
HPARAMS session with accuracy, parameters and MACs as its metrics (so its HPARAMS tab plots
accuracy against size across runs); and all of it is written to ``efficiency.json`` in the
run's log directory, rewritten after each epoch and evaluation so a crashed run still leaves its
numbers behind. ``status`` is ``"finished"`` once fit (or test) ended normally, ``"diverged"``
when :meth:`ParameterEfficiency.mark_diverged` was called, absent while a run is in progress.

The run context (data set, batch size, optimizer, lr, weight decay, schedule, seed, step and
epoch limits) is recorded beside the numbers, so runs of a sweep can be told apart without
their configs. The callback's record is part of every checkpoint (``state_dict``): a resumed
run continues the same ``efficiency.json`` -- best validation accuracy, its step, training
time, images seen -- instead of starting a new one, and opens no second HPARAMS session.

The measurements themselves (sizes, run context, batch, memory) are plain functions in
``src.callbacks.efficiency_measures``; this module decides when each is taken and keeps the record.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from src.callbacks.efficiency_measures import (
    CPU_MEMORY_NOTE,
    CUDA_MEMORY_NOTE,
    batch_facts,
    data_on_device_bytes,
    describe_model,
    peak_memory_mb,
    run_context,
    start_of,
    trainer_config,
)
from src.callbacks.provenance import provenance
from src.callbacks.train_split_score import score_train_split
from src.files import free_path, write_json_atomic
from src.models.complexity import count_flops

DEFAULT_FILENAME = "efficiency.json"  # a resumed run's record, when its checkpoint names no usable file

# TensorBoard HPARAMS metrics: accuracy and size, never a ratio of the two (see the module docstring).
HPARAM_METRICS = ("hp/best_val_acc", "hp/test_acc", "hp/params_total", "hp/macs_per_sample")

RUN_CONTEXT_FIELDS = (
    "data", "dataset", "batch_size", "optimizer", "lr", "weight_decay", "lr_scheduler", "lr_scheduler_interval",
    "seed", "max_steps", "max_epochs",
)  # fmt: skip

# What a resumed run takes over from its checkpoint (the rest is measured afresh, e.g. the limits it now runs to).
RESUMED_FIELDS = (
    "best_val_acc", "best_val_step", "last_val_acc", "val_acc_per_mparam", "val_acc_per_gmac", "test_acc",
    "test_acc_per_mparam", "test_acc_per_gmac", "raw_acc_per_mparam", "raw_acc_per_gmac", "acc_source",
    "train_images_per_sec", "peak_memory_mb", "peak_memory_kind", "peak_memory_note", "train_time_sec",
    "train_images_seen", "started", "resumed_at_steps", "earlier_provenance",
)  # fmt: skip


def is_plain_filename(name: Any) -> bool:
    """Whether ``name`` is a file name alone: no folder (either separator), not ``.`` / ``..``, not empty."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    return "/" not in name and "\\" not in name and os.path.basename(name) == name


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
        filename: str = DEFAULT_FILENAME,
        val_metric: str = "val/acc",
        test_metric: str = "test/acc",
        input_shape: list[int] | None = None,
        log_hparams: bool = True,
        score_train_split: bool = False,
    ) -> None:
        self.filename = filename
        self.val_metric = val_metric
        self.test_metric = test_metric
        self.input_shape = tuple(input_shape) if input_shape else None
        self.log_hparams = log_hparams
        self.score_train_split = score_train_split
        self.test_follows_fit = False  # set by the CLI when test_after_fit will test right after this fit
        self.path: str | None = None
        self.report: dict[str, Any] = {}
        self._running_since: float | None = None  # the training clock; None while paused (validation, between epochs)
        self._epoch_seconds = 0.0
        self._epoch_images = 0
        self._data_bytes = 0
        self._restored: dict[str, Any] | None = None  # from a checkpoint, merged in on_train_start
        self._log_dir: str | None = None
        self._eval_samples = 0
        self._train_split_scored = False

    # ---------------------------------------------------------------- static numbers
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        # Trainer.datamodule is set by Lightning's connectors, not declared on the class.
        shape = self.input_shape or getattr(trainer.datamodule, "input_shape", None)  # type: ignore[attr-defined]
        if shape is not None and getattr(pl_module, "example_input_array", None) is None:
            # Lightning's model summary counts FLOPs only with an example input ("Total FLOPs: 0" otherwise).
            pl_module.example_input_array = torch.zeros(1, *shape)
        batch_facts(trainer)  # on every rank: a global batch that does not divide stops all ranks, not rank zero alone
        if stage == "fit":
            self._train_split_scored = False
        if not trainer.is_global_zero or self.report:
            return
        self._log_dir = log_dir or trainer.default_root_dir
        self.report = describe_model(trainer, pl_module)
        self.report.update(run_context(trainer, pl_module, stage))
        self.report["provenance"] = provenance(trainer.strategy.root_device, trainer_config(trainer, pl_module))
        if shape is not None:
            self._count_cost(pl_module, tuple(shape))
        if stage != "fit":  # fitting waits for on_train_start: a resumed run's record is restored by then
            self.path = free_path(self._log_dir, self.filename)
            self._write()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        # Trainer.datamodule is set by Lightning's connectors, not declared on the class.
        self._data_bytes = data_on_device_bytes(trainer.datamodule, device) if device.type == "cuda" else 0  # type: ignore[attr-defined]
        if device.type == "cuda":  # the peak of training, not of setup, the sanity check or an earlier fit
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        if trainer.is_global_zero and self.report and self.path is None:
            self._start_record(trainer, pl_module)
        # Started here, not in on_train_epoch_start, which a run resumed mid-epoch never gets.
        self._epoch_seconds, self._epoch_images = 0.0, 0
        self._running_since = time.perf_counter()

    def _start_record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report.update(run_context(trainer, pl_module, "fit"))
        self.report.update(start_of(pl_module))
        self.report["data_on_device_mb"] = self._data_bytes / 2**20 if pl_module.device.type == "cuda" else None
        restored = self._restored
        if restored is not None:  # the same run, continued: same file, same record
            self.path = os.path.join(cast(str, self._log_dir), self._restored_filename())  # set in setup
            old = restored["report"]
            kept = {key: value for key, value in old.items() if key in RESUMED_FIELDS}
            self.report.update(kept)
            self.report["resumed_at_steps"] = [*old.get("resumed_at_steps", []), trainer.global_step]
            if old.get("provenance") and old["provenance"] != self.report["provenance"]:
                # Resumed with other code, packages, device or config: keep what the earlier part ran on.
                self.report["earlier_provenance"] = [*old.get("earlier_provenance", []), old["provenance"]]
        else:
            self.path = free_path(cast(str, self._log_dir), self.filename)
        self._write()
        if restored is None:  # a continued run logged them when it started (once, as an uninterrupted run does)
            self._log_size_scalars(trainer)
            if self.log_hparams:
                self._log_hparams(trainer, pl_module)

    # ---------------------------------------------------------------- checkpointed state
    def state_dict(self) -> dict[str, Any]:
        if not self.report or self.path is None:
            return {}
        return {"filename": os.path.basename(self.path), "report": json.loads(json.dumps(self.report))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict or None

    def _restored_filename(self) -> str:
        """The record's file name saved in the checkpoint, if it is a plain name; else ``DEFAULT_FILENAME``.

        ``state_dict`` saves a bare file name, and the record continues in the run's own directory. A checkpoint
        is data that may come from anyone: a name with a folder, ``..`` or an absolute path would make a resumed
        run overwrite a file outside the run.
        """
        name = (self._restored or {}).get("filename")
        if is_plain_filename(name):
            return cast(str, name)
        rank_zero_warn(
            f"ParameterEfficiency: the checkpoint names its record file {name!r}, which is not a plain file name "
            f"(a folder, '..' or an absolute path would write outside the run directory); the record continues in "
            f"{DEFAULT_FILENAME!r} in the run directory instead"
        )
        return DEFAULT_FILENAME

    # ---------------------------------------------------------------- run status
    def mark_diverged(self, step: int, reason: str) -> None:
        """Record that training diverged (``status: "diverged"``, its step and why) and write the file now.

        For the divergence check (``src.callbacks.divergence``); a diverged run is listed apart by the
        sweep and the report and never averaged. A no-op on ranks other than zero.
        """
        if not self.report:
            return
        self.report.update(status="diverged", diverged_step=int(step), diverged_reason=str(reason))
        if self.path is not None:
            self._write()

    def _finish(self, trainer: pl.Trainer, status: str = "finished") -> None:
        """``status`` (``finished``; ``trained`` when a test follows) after a normal end -- not after divergence,
        not when stopped by SIGTERM."""
        if not trainer.is_global_zero or not self.report or self.path is None:
            return
        if self.report.get("status") != "diverged" and not getattr(trainer, "received_sigterm", False):
            self.report["status"] = status
        self._write()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.report and self.path is None:  # trained nothing (max_steps 0, init_from)
            self._start_record(trainer, pl_module)
        self._record_train_split(trainer, pl_module)  # only when no training loop ran (max_steps 0): see there
        # With a test to follow, "finished" waits for it: a test that fails leaves "test_failed", never "finished".
        self._finish(trainer, "trained" if self.test_follows_fit else "finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A test that raised (an image deleted since training, a full disk): ``status: "test_failed"`` and why."""
        if trainer.testing and trainer.is_global_zero and self.report and self.path is not None:
            if self.report.get("status") != "diverged":
                reason = f"{type(exception).__name__}: {str(exception).splitlines()[0] if str(exception) else ''}"
                self.report.update(status="test_failed", test_failed_reason=reason.rstrip(": "))
                self._write()

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
        metrics = {name: math.nan for name in HPARAM_METRICS}
        for key in ("params_total", "macs_per_sample"):
            if self.report[key] is not None:
                metrics[f"hp/{key}"] = self.report[key]
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                params = {**dict(pl_module.hparams), **context, **self._size_numbers()}
                logger.log_hyperparams(params, metrics=metrics)

    # ---------------------------------------------------------------- training cost
    def _lap(self, trainer: pl.Trainer, pause: bool = False) -> None:
        """Add the training time since the last lap to the epoch's and the run's; ``pause`` stops the clock."""
        now = time.perf_counter()
        if self._running_since is not None:
            seconds = now - self._running_since
            self._epoch_seconds += seconds
            if trainer.is_global_zero and self.report:
                self.report["train_time_sec"] = (self.report.get("train_time_sec") or 0.0) + seconds
        self._running_since = None if pause else now

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_seconds, self._epoch_images = 0.0, 0
        self._running_since = time.perf_counter()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._running_since is None:  # whatever path led here, a training batch runs on the clock
            self._running_since = time.perf_counter()
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
        images = len(batch[0])
        self._epoch_images += images
        self._lap(trainer)  # the record in a checkpoint taken after this batch counts this batch
        if trainer.is_global_zero and self.report and self.report["train_images_seen"] is not None:
            # Every rank sees its own shard of equal size (DistributedSampler pads): all ranks = world_size x ours.
            self.report["train_images_seen"] += images * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lap(trainer, pause=True)
        memory, kind = peak_memory_mb(pl_module.device, self._data_bytes)
        if memory is not None and trainer.world_size > 1:  # every rank takes part; rank zero reports the largest
            memory = float(trainer.strategy.reduce(torch.tensor(memory, device=pl_module.device), reduce_op="max"))
        if not trainer.is_global_zero or not self.report:
            return
        report = self.report
        if memory is not None and report.get("peak_memory_kind") == kind and report.get("peak_memory_mb") is not None:
            memory = max(memory, report["peak_memory_mb"])  # the run's peak, over resumes too
        report.update(
            peak_memory_mb=memory,
            peak_memory_kind=kind,
            peak_memory_note=CPU_MEMORY_NOTE if memory is None else CUDA_MEMORY_NOTE,
            global_step=trainer.global_step,
        )
        metrics = {}
        if self._epoch_seconds > 0 and self._epoch_images:  # none after a resume at an epoch's very end
            # Every rank sees its own shard of equal size: the global rate is world_size times ours.
            throughput = self._epoch_images * trainer.world_size / self._epoch_seconds
            report["train_images_per_sec"] = throughput
            metrics["efficiency/train_images_per_sec"] = throughput
        if memory is not None:
            metrics[f"efficiency/peak_memory_mb_{kind}"] = memory
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self._write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lap(trainer, pause=True)
        self._record_train_split(trainer, pl_module)
        if trainer.is_global_zero and self.report and self.path is not None:
            self._write()

    def _record_train_split(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``score_train_split`` once per fit that ended normally, on every rank (its sums are reduced).

        At the end of training, where the module still is on its device: Lightning's teardown, which runs before
        ``on_fit_end``, moves it to the CPU, so a GPU run was scored on the CPU, outside its CUDA autocast (fp32
        where validation and test ran bf16) and, under DDP with NCCL, with CPU tensors to reduce. A fit whose
        training loop never ran (``max_steps`` 0) is scored from ``on_fit_end``, the module moved back for it.
        """
        if not self.score_train_split or self._train_split_scored:
            return
        if self.report.get("status") == "diverged" or getattr(trainer, "received_sigterm", False):
            return
        self._train_split_scored = True
        device = trainer.strategy.root_device
        moved = pl_module.device != device
        if moved:
            pl_module.to(device)
        try:
            scores = score_train_split(trainer, pl_module)
        finally:
            if moved:
                pl_module.cpu()
        if scores is None:
            rank_zero_warn("efficiency.score_train_split: this DataModule has no clean_train_dataloader()")
        elif self.report:
            self.report.update(scores)

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
        self._lap(trainer, pause=True)  # validation inside training stops the clock: train time is training only

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._running_since = time.perf_counter()  # back to training (data loading included)
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
            self.path = os.path.join(cast(str, self._log_dir), self._restored_filename())  # set in setup
            self.report.update(self._restored["report"])
            self.report["resumed_at_steps"] = [*self.report.get("resumed_at_steps", []), trainer.global_step]
        if trainer.is_global_zero and self.report:
            path = str(trainer.ckpt_path) if trainer.ckpt_path else None
            if path and self._log_dir and os.path.abspath(path).startswith(os.path.abspath(self._log_dir) + os.sep):
                path = os.path.relpath(path, self._log_dir)  # inside the run: stays true if the run is moved
            self.report["test_ckpt_path"] = path
            # The module tested may differ from the one trained (its own hparams): record the protocol run.
            test_flip = bool(pl_module.hparams.get("test_flip", False))
            self.report.update(test_flip=test_flip, test_passes_per_sample=2 if test_flip else 1)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = self._samples_scored(trainer, pl_module)
        if self.report:
            self.report["test_samples"] = samples
        self._record(trainer, "test", self.test_metric)
        self._finish(trainer)

    def _record(self, trainer: pl.Trainer, split: str, metric_name: str) -> None:
        if not trainer.is_global_zero or not self.report:
            return
        value = trainer.callback_metrics.get(metric_name)
        if value is None:
            rank_zero_warn(f"ParameterEfficiency: no metric {metric_name!r} was logged; nothing recorded for {split}")
            return
        acc = float(value)
        report = self.report
        per_mparam = acc / (report["params_total"] / 1e6)
        macs = report["macs_per_sample"]
        passes = report.get("test_passes_per_sample", 1) if split == "test" else 1  # MACs actually spent per image
        per_gmac = acc / (macs * passes / 1e9) if macs else None
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
            raw_acc_per_mparam=report[f"{source}_acc_per_mparam"],
            raw_acc_per_gmac=report[f"{source}_acc_per_gmac"],
        )

        metrics = {f"efficiency/{split}_acc_per_mparam": per_mparam}
        if per_gmac is not None:
            metrics[f"efficiency/{split}_acc_per_gmac"] = per_gmac
        if split == "val":
            metrics["hp/best_val_acc"] = report["best_val_acc"]
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

        write_json_atomic(self.path, self.report)  # same directory, fsync, rename; no fragment on a full disk

"""A callback that records, at every fit start, what the run's process was given: for the parallel-sweep tests.

Added to a sweep's runs with ``-- --trainer.callbacks+=tests.sweep_probe.FitProbe``; each fit start appends
one JSON line to the file named by ``SWEEP_PROBE`` (so the tests count fit starts per run directory and
read the environment, threads, CPUs and loader workers each child really had).

While the file named by ``SWEEP_HOLD`` exists, a run that has finished its first epoch waits after each batch
until it gets SIGTERM: a test that signals a sweep once both runs have a checkpoint can then never find one of
them already finished (a run that started late on a busy machine used to let the other one end first).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import lightning.pytorch as pl
import torch

PROBE_ENV = "SWEEP_PROBE"
HOLD_ENV = "SWEEP_HOLD"


class FitProbe(pl.Callback):
    """Append ``{run_dir, pid, OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES, torch threads, cpus, workers}`` per fit."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = os.environ.get(PROBE_ENV)
        if not path:
            return
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        record = {
            "run_dir": os.path.realpath(trainer.default_root_dir),
            "pid": os.getpid(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "torch_threads": torch.get_num_threads(),
            "cpus": cpus,
            "num_workers": trainer.datamodule.num_workers,
        }
        with open(path, "a") as handle:  # one short write per line: appends from several processes stay whole
            handle.write(json.dumps(record) + "\n")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        hold = os.environ.get(HOLD_ENV)
        if not hold or trainer.current_epoch < 1:
            return
        # Lightning's SIGTERM handler sets received_sigterm at once; it acts on it after this batch's hooks.
        while os.path.exists(hold) and not getattr(trainer, "received_sigterm", False):
            time.sleep(0.05)

"""efficiency.json across a real mid-epoch resume: ``python -m src.cli`` in subprocesses, real clock.

The run validates (and so checkpoints) twice per epoch (``val_check_interval: 0.5``), is killed with
``kill -9`` after step 7 and resumed with ``--ckpt_path last`` from the step-6 checkpoint, in the
middle of its second epoch: the kind of resume (like a SLURM requeue) that Lightning starts without
``on_train_epoch_start``. Its training time and throughput must match the uninterrupted run's.

The exact check (train_time_sec equal to the uninterrupted run's) is done with a fake clock in
``tests/test_efficiency_training_clock.py``. Here the real clock runs on a shared CPU, where a step of
a tiny net takes 0.1-1 s depending on what else runs (measured: 15 s and 57 s for the same 16 steps),
so the bounds are the ones that hold whatever the load: every batch sleeps ``SLEEP`` seconds inside
the clock (a floor), training time cannot exceed the wall time of the processes that trained (a
ceiling; the old bug read the machine's uptime), and the last epoch's throughput cannot be slower
than that epoch's images over the whole resumed process (the old bug read ~0.4 images/s).
"""

from __future__ import annotations

import signal
import time

import lightning.pytorch as pl
import pytest
import torch
import yaml

from src import runs
from src.callbacks.provenance import config_sha256
from tests.conftest import REPO_ROOT
from tests.test_resume import cli, launch

SLEEP = 0.25  # seconds per training batch
STEPS = 16  # 4 epochs x 4 batches
ARGS = [
    "--config", str(REPO_ROOT / "configs" / "quickstart.yaml"),
    "--model.arch", "resnet8",
    "--trainer.max_epochs", "4",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data", "SyntheticDataModule",
    "--data.image_size", "16",
    "--data.train_size", "64",
    "--data.val_size", "32",
    "--data.test_size", "32",
    "--data.batch_size", "16",
    "--model.lr_scheduler.init_args.warmup_steps", "2",
    "--test_after_fit", "false",
    "--trainer.val_check_interval", "0.5",
    "--trainer.callbacks+=tests.test_efficiency_resume.SleepPerBatch",
    "--trainer.callbacks+=tests.helpers.KillAt",
]  # fmt: skip


class SleepPerBatch(pl.Callback):
    """Makes each training batch take at least ``SLEEP`` seconds (see the module docstring)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(SLEEP)


@pytest.fixture(scope="module")
def runs_made(tmp_path_factory):
    root = tmp_path_factory.mktemp("timing")
    straight = launch("fit", *ARGS, "--run_dir", "straight", cwd=root)
    started = time.monotonic()
    killed = cli("fit", *ARGS, "--run_dir", "resumed", cwd=root, env={"KILL_AT_STEP": "7"})
    killed_wall = time.monotonic() - started
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoint = torch.load(root / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    started = time.monotonic()
    resumed = cli("fit", "--run_dir", "resumed", "--ckpt_path", "last", cwd=root)
    resumed_wall = time.monotonic() - started
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {
        "root": root,
        "checkpoint": (checkpoint["global_step"], checkpoint["epoch"]),
        "wall": (killed_wall, resumed_wall),
    }


def test_mid_epoch_resume_keeps_wall_time_and_throughput(runs_made):
    root = runs_made["root"]
    straight, resumed = runs.read_efficiency(root / "straight"), runs.read_efficiency(root / "resumed")
    assert runs_made["checkpoint"] == (6, 1)  # in the second epoch (steps 5-8): a mid-epoch checkpoint
    assert resumed["resumed_at_steps"] == [6] and resumed["global_step"] == straight["global_step"] == STEPS
    assert resumed["train_images_seen"] == straight["train_images_seen"] == STEPS * 16
    for report in (straight, resumed):
        assert report["train_time_sec"] >= STEPS * SLEEP
        assert report["train_images_per_sec"] <= 16 / SLEEP  # a batch of 16 never takes less than SLEEP
        assert report["status"] == "finished"
    killed_wall, resumed_wall = runs_made["wall"]
    assert resumed["train_time_sec"] <= killed_wall + resumed_wall
    assert 64 / resumed_wall <= resumed["train_images_per_sec"]  # the last epoch's 64 images within the process
    # Both ran at the same time, under the same load: a loose band (the old bug read the uptime: 1,140 s here).
    assert 1 / 3 <= resumed["train_time_sec"] / straight["train_time_sec"] <= 3


def test_provenance_hashes_the_saved_config_and_survives_the_resume(runs_made):
    root = runs_made["root"]
    straight, resumed = runs.read_efficiency(root / "straight"), runs.read_efficiency(root / "resumed")

    def hash_of(path) -> str:
        return config_sha256(yaml.safe_load(path.read_text()))

    assert straight["provenance"]["config_sha256"] == hash_of(root / "straight" / "config.yaml")
    assert straight["earlier_provenance"] == []
    # Resumed with the checkpoint's own config: the same hash (ckpt_path does not count), no earlier record.
    assert resumed["provenance"]["config_sha256"] == hash_of(root / "resumed" / "config-1.yaml")
    assert resumed["provenance"]["config_sha256"] == hash_of(root / "resumed" / "config.yaml")
    assert resumed["earlier_provenance"] == []
    same = ("git_commit", "git_dirty", "packages", "device")  # the config differs: its run_dir
    assert [resumed["provenance"][key] for key in same] == [straight["provenance"][key] for key in same]
    assert resumed["provenance"]["git_commit"] == straight["provenance"]["git_commit"]

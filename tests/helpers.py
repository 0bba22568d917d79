"""Small builders shared by the tests that train for a few steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch as pl

from src.data import SyntheticDataModule


def tiny_data(**overrides) -> SyntheticDataModule:
    """A few hundred 16x16 images: enough to train a ResNet-8 for a handful of steps in seconds."""
    options = dict(num_classes=10, image_size=16, train_size=128, val_size=64, test_size=64, batch_size=32)
    return SyntheticDataModule(**{**options, **overrides})


def tiny_trainer(tmp_path, **overrides) -> pl.Trainer:
    options = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**options, **overrides})


class KillAt(pl.Callback):
    """``kill -9`` this very process when training reaches ``step`` -- if ``$KILL_AT_STEP`` asks for it.

    A real SIGKILL (no cleanup, no checkpoint on the way out), at an exact step, so resume tests are
    deterministic. The environment switch lets the resumed run carry the same config without dying again.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import os
        import signal

        if str(trainer.global_step) == os.environ.get("KILL_AT_STEP"):
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- commands run as processes, stopped by a signal
def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a ``python -m src...`` child: this checkout first on the path, no
    ``SLURM_*`` of a surrounding job, no run lock handed down; ``extra`` added."""
    import os

    from src.runs import LOCK_FD_ENV
    from tests.conftest import REPO_ROOT

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}
    return {key: value for key, value in env.items() if not key.startswith("SLURM_") and key != LOCK_FD_ENV}


def wait_for(condition, timeout: float = 300, what: str = "", process=None) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` s, or at once if ``process`` has exited meanwhile."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the process exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextmanager
def sweep_process(*args: str, cwd, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``python -m src.sweep ARGS`` started in ``cwd`` (text pipes for stdout/stderr), killed on the way out
    if a failed assertion left it running. Stop it with ``stop_with_signal``."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "src.sweep", *args],
        cwd=cwd,
        env=clean_environment() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield sweep
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()


def stop_with_signal(
    process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 300
) -> tuple[int, str, str]:
    """Send ``sig`` and wait for the process to exit: ``(returncode, stdout, stderr)``."""
    process.send_signal(sig)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

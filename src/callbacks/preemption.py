"""Save a resumable checkpoint when a fit is told to stop with SIGTERM (preemption, ``kill``, a scheduler).

Lightning 2.6 (``_SignalConnector``) installs a SIGTERM handler on every run: it forwards the signal
to DDP worker processes and sets ``trainer.received_sigterm``; the training loops then raise
``SIGTERMException`` (a ``SystemExit`` with no code, i.e. exit status 0) after the current batch.
Only under SLURM with auto-requeue does anything get saved (on SIGUSR1, ``hpc_ckpt_<N>.ckpt``).

``SaveOnSigterm`` builds on that: on the ``SIGTERMException`` of a fit it saves the state of the
step reached as the run's next ``hpc_ckpt_<N>.ckpt`` -- the file Lightning's own requeue handler
writes, which ``src.runs.resume_checkpoint`` (``--ckpt_path last``) and SLURM restarts already pick
up by step. The CLI then exits with status 143 (128 + SIGTERM), so a scheduler sees a stopped run,
not a finished one.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn


class SaveOnSigterm(pl.Callback):
    """On SIGTERM during a fit, save ``<run>/hpc_ckpt_<N>.ckpt`` of the current step (see the module docstring)."""

    def __init__(self) -> None:
        self.saved_path: str | None = None
        self.saved_step: int | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        if trainer.global_step == 0:
            return  # nothing trained yet: the run simply starts again
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        try:
            trainer.save_checkpoint(path)  # every rank takes part (a barrier); rank zero writes
        except Exception as error:  # a full disk must not turn a clean stop into a traceback
            rank_zero_warn(f"SIGTERM: could not save a checkpoint to '{path}': {error}")
            return
        self.saved_path, self.saved_step = path, trainer.global_step

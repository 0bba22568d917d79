"""What a resumed run needs beyond Lightning's checkpointing: a fresh last.ckpt, random state, a validated last step.

* ``RunCheckpoint``: Lightning's ModelCheckpoint (2.6) rewrites ``last.ckpt`` only when a top-k
  checkpoint was saved at the same step -- after an epoch that did not improve ``val/acc`` the
  "last" checkpoint is stale, and a killed run would resume from epochs ago. This one rewrites
  it at every save point.
* ``RandomState`` saves the global random generators (torch, CUDA, NumPy, Python) in every
  checkpoint and restores them when the run resumes, so the shuffling order and random
  augmentations drawn after an epoch-end checkpoint are the ones the uninterrupted run draws.
  (Lightning restores model, optimizer, schedulers, loop counters and callback states, but not
  these.) Exact for epoch-end checkpoints (``last.ckpt``, written after each validation) with
  in-process data loading (``num_workers: 0``); loader worker processes keep their own
  generators, and a mid-epoch checkpoint (a SLURM ``hpc_ckpt``) restarts the data order of its
  epoch, so those resume correctly but not bit for bit.
* ``EpochStartResume``: a run limited by ``max_steps`` is "iteration based" for Lightning (2.6), which
  then treats *every* resume as a restart inside an epoch. From an epoch-end ``last.ckpt`` it replays
  the end of the finished epoch -- a second ``on_train_epoch_end`` (ModelCheckpoint's "could not find
  the monitored key" warning), one more pass over the loader (a sampler seed drawn from the global
  RNG: a different shuffle and different augmentations from then on), epoch metrics logged one step
  late. This callback marks such a checkpoint's epoch as completed when it is loaded, so the resumed
  run starts the next epoch exactly as the uninterrupted one does. (``max_epochs`` runs need nothing.)
* ``ValidateLastStep``: with ``max_steps`` the last epoch is usually cut short, and Lightning
  never validates (or checkpoints) a partial epoch. This asks for a stop at the last step,
  which Lightning answers with a validation run -- and ModelCheckpoint saves after it.

``RunCheckpoint`` also refuses the checkpoint paths a resumed checkpoint names outside its own folder.
Lightning (2.6) restores ``last_model_path``, ``best_model_path``, ``kth_best_model_path`` and
``best_k_models`` from the file (all of them when the saved state has no ``dirpath``), later *deletes* the
"previous" ones when newer checkpoints replace them -- checking only lexical parents, so
``<run>/checkpoints/../../notes.txt`` passes -- and ``ckpt_path="best"`` loads ``best_model_path`` as it
is. A checkpoint is data that may come from anyone, so such paths are dropped when it is loaded. A run folder
that was moved or copied keeps its own checkpoints' scores: paths of its old folder are read as the same files here.
"""

from __future__ import annotations

import os
import random
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from src.files import resolves_inside


def collect_random_state() -> dict[str, Any]:
    """The global generators' state, in types ``torch.load(weights_only=True)`` accepts."""
    # legacy=True (the default) returns this tuple; numpy's stub also allows the dict of legacy=False.
    state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, position, has_gauss, cached = state
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss],
    }


def process_seed(epoch: int, rank: int) -> int:
    """A seed for one process and epoch, from the run's seed (``seed_everything``'s, else torch's initial seed)."""
    base = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
    return int(np.random.SeedSequence([base, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def loaders_in(value: Any) -> list[DataLoader]:
    """The DataLoaders in what ``trainer.train_dataloader`` holds (one, or a list or dict of them)."""
    if isinstance(value, DataLoader):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [loader for item in value for loader in loaders_in(item)]
    return []


def restore_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` always holds the newest state, and which never takes a checkpoint
    path from a resumed checkpoint that lies outside its own folder (see the module docstring)."""

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Called just before load_state_dict, from the same checkpoint. Only a fit acts on the restored paths
        # (replaces, deletes, tests "best"); test/validate/predict drop them without a word.
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._restoring_a_fit = trainer.state.fn == TrainerFn.FITTING

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(self._moved_here(state_dict))
        self._drop_paths_outside_dirpath(warn=getattr(self, "_restoring_a_fit", True))

    def _moved_here(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """A run folder moved or copied since the checkpoint was written: its checkpoint names files of the old
        folder. Lightning (2.6) then restores no score and no top-k (a "changed dirpath"), so the first validation
        after the resume became "best" whatever its score, and the test after fit loaded it instead of the
        best by validation. Each path directly in the old folder whose file is in this folder is read as that
        file, and the state as this folder's; everything else is still judged by ``_drop_paths_outside_dirpath``."""
        saved, here = state_dict.get("dirpath"), self.dirpath
        if not isinstance(saved, str) or here is None or saved == here:
            return state_dict

        def here_path(path: Any) -> Any:
            if isinstance(path, str) and path and os.path.dirname(path) == saved:
                moved = os.path.join(here, os.path.basename(path))
                if os.path.isfile(moved):
                    return moved
            return path

        moved = dict(state_dict, dirpath=here)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in moved:
                moved[key] = here_path(moved[key])
        if isinstance(moved.get("best_k_models"), dict):
            moved["best_k_models"] = {here_path(path): score for path, score in moved["best_k_models"].items()}
        return moved

    def _drop_paths_outside_dirpath(self, warn: bool) -> None:
        """Forget every restored checkpoint path outside ``dirpath``: Lightning would delete or load it."""
        folder = self.dirpath
        dropped: list[str] = []

        def outside(path: Any) -> bool:
            if not isinstance(path, str) or not path:
                return False
            # Not a checkpoint file of this folder: Lightning must not replace or delete it. The extension counts
            # too: a received run whose checkpoints/ is itself a link to another folder puts that folder's files
            # "inside" it, and only checkpoint files may ever be deleted there.
            if folder is None or not resolves_inside(path, folder) or not path.endswith(self.FILE_EXTENSION):
                dropped.append(path)
                return True
            return False

        if outside(self.last_model_path):
            # What the run's own state holds: the next "last" then replaces last.ckpt (not a new last-v1.ckpt).
            plain_last = folder is not None and "{" not in self.CHECKPOINT_NAME_LAST
            last = os.path.join(str(folder), self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION) if plain_last else ""
            self.last_model_path = last if last and os.path.isfile(last) else ""
        if outside(self.best_model_path):
            self.best_model_path, self.best_model_score = "", None
        kept = {path: score for path, score in self.best_k_models.items() if not outside(path)}
        kth_dropped = outside(self.kth_best_model_path)
        if kth_dropped or len(kept) != len(self.best_k_models):
            self.best_k_models = kept
            # Lightning pops ``kth_best_model_path`` from ``best_k_models`` once it holds save_top_k entries:
            # the worst one left, or none (the next checkpoints fill the top k again).
            worst = (max if self.mode == "min" else min)(kept, key=kept.__getitem__) if kept else ""
            self.kth_best_model_path = worst
            self.kth_value = kept[worst] if worst else torch.tensor(torch.inf if self.mode == "min" else -torch.inf)
        if dropped and warn:
            unique = list(dict.fromkeys(dropped))
            rank_zero_warn(
                f"The resumed checkpoint names checkpoint file(s) outside this run's checkpoint folder "
                f"'{folder}': {', '.join(repr(path) for path in unique)}. A checkpoint may come from anyone, and "
                "Lightning would delete these files when newer checkpoints replace them, or test the 'best' one; "
                "they are forgotten instead (only checkpoints inside the folder are replaced or tested)."
            )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, at_train_epoch_end=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, at_train_epoch_end=True)

    def _refresh_last(self, trainer: pl.Trainer, at_train_epoch_end: bool) -> None:
        # _should_skip_saving_checkpoint is also true when this step was saved already (e.g. a new best + last).
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RandomState(pl.Callback):
    """Save the global random state in checkpoints; restore it on resume (see the module docstring).

    Under DDP every process starts from the same seed (``seed_everything`` runs in each), so the random draws of
    a batch made in the process were the same on every process: the k-th image of each process's batch got the
    same crop and flip on the fast path (an audit hashed two processes' generators at each epoch start: equal).
    A training set that draws from a generator of its own (``seed_draws``, as the fast path's does) gets one seed
    per process and epoch here, from (seed, epoch, rank) alone: a resume from an epoch-end checkpoint draws what
    the uninterrupted run draws. One process: unchanged (the global generators, saved and restored). Per-sample
    transforms in the main process (``num_workers: 0``) still draw from the global generators; loader workers get
    seeds of their own per process from Lightning.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size == 1:
            return
        seed = process_seed(trainer.current_epoch, trainer.global_rank)
        for loader in loaders_in(trainer.train_dataloader):
            seed_draws = getattr(loader.dataset, "seed_draws", None)
            if callable(seed_draws):
                seed_draws(seed)

    def state_dict(self) -> dict[str, Any]:
        return collect_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after the model exists and before the first training batch is
        # drawn; nothing between here and there draws random numbers (the sanity check is isolated).
        restore_random_state(state_dict)


def _zero(tracker: dict[str, Any]) -> None:
    for key in tracker:
        if isinstance(tracker[key], dict):
            _zero(tracker[key])
        elif isinstance(tracker[key], int) and not isinstance(tracker[key], bool):
            tracker[key] = 0


def _processed_not_completed(loops: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """``(fit-loop state, epoch_progress, batch_progress)`` of a checkpoint saved by Lightning's
    ``on_train_epoch_end`` (the epoch processed but not yet counted completed), else ``None``."""
    fit = loops.get("fit_loop") if isinstance(loops, dict) else None
    if not isinstance(fit, dict) or "epoch_progress" not in fit or "epoch_loop.batch_progress" not in fit:
        return None
    epochs, batches = fit["epoch_progress"], fit["epoch_loop.batch_progress"]
    total, current = epochs["total"], epochs["current"]
    if total["ready"] == total["started"] == total["processed"] == total["completed"] + 1 and (
        current["processed"] == current["completed"] + 1
    ):
        return fit, epochs, batches
    return None


def mark_epoch_completed(loops: dict[str, Any]) -> bool:
    """Make a checkpoint's fit-loop state that of the next epoch's start, if it was saved at the end of an epoch.

    "The end of an epoch" is what Lightning's ``on_train_epoch_end`` saves: the epoch processed but not yet
    counted completed, every batch of it done. Returns whether the state was changed.
    """
    saved = _processed_not_completed(loops)
    if saved is None:
        return False
    fit, epochs, batches = saved
    if not batches.get("is_last_batch") or batches["total"]["ready"] != batches["total"]["completed"]:
        return False
    epochs["total"]["completed"], epochs["current"]["completed"] = (
        epochs["total"]["processed"],
        epochs["current"]["processed"],
    )
    # What Lightning's epoch loop does at the start of an epoch: the per-epoch counters start again from 0.
    _zero(batches["current"])
    batches["is_last_batch"] = False
    for key in ("epoch_loop.scheduler_progress", "epoch_loop.automatic_optimization.optim_progress"):
        for tracker in _currents(fit.get(key)):
            _zero(tracker)
    return True


def mark_epoch_unfinished(loops: dict[str, Any]) -> bool:
    """Make a checkpoint saved at the end of a cut epoch (a ``max_steps`` stop inside it) that of the epoch's middle.

    Lightning's ``on_train_epoch_end`` saves a cut epoch as processed, like a whole one; a fit continued with a
    larger ``max_steps`` then finished the epoch's remaining batches and counted it processed again (an audit:
    ``max_steps`` 12 of 8-step epochs and ``max_epochs`` 3, continued to ``max_steps`` 20, stopped at step 16 with
    "max_epochs=3 reached" after two epochs). Counted as not yet processed, it is finished once. Returns whether
    the state was changed.
    """
    saved = _processed_not_completed(loops)
    if saved is None or saved[2].get("is_last_batch"):
        return False
    epochs = saved[1]
    epochs["total"]["processed"], epochs["current"]["processed"] = (
        epochs["total"]["completed"],
        epochs["current"]["completed"],
    )
    return True


def _currents(progress: Any) -> list[dict[str, Any]]:
    """Every ``current`` counter dict inside a (nested) progress state."""
    if not isinstance(progress, dict):
        return []
    found = [progress["current"]] if isinstance(progress.get("current"), dict) else []
    for key, value in progress.items():
        if key != "current":
            found += _currents(value)
    return found


class EpochStartResume(pl.Callback):
    """Resume a ``max_steps`` run from an epoch-end checkpoint at the next epoch's start (see the module docstring),
    and one cut short by ``max_steps`` in the middle of the epoch it stopped in."""

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Callbacks are restored before the loops, from this same dict: the loops then load the edited state.
        self._logged_step = None
        if trainer.max_steps == -1 or "loops" not in checkpoint:
            return
        if mark_epoch_completed(checkpoint["loops"]) or mark_epoch_unfinished(checkpoint["loops"]):
            state = checkpoint["loops"]["fit_loop"].get("epoch_loop.state_dict") or {}
            self._logged_step = state.get("_batches_that_stepped")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Lightning's epoch loop adds one to its logging step when it restarts (it assumes a checkpoint taken
        # before the step count was updated); this one was taken after, so the logged steps would shift by one.
        logged_step = getattr(self, "_logged_step", None)
        if logged_step is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = logged_step
            # Still "restarting", the fit loop would skip this epoch's end-of-epoch LR-scheduler step.
            trainer.fit_loop._restarting = False
            self._logged_step = None


class ValidateLastStep(pl.Callback):
    """Validate (and so checkpoint) the model at ``max_steps`` even when that step ends no epoch."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and not trainer.should_stop:
            trainer.should_stop = True  # Lightning validates when a stop is requested (epoch loop)

"""``model.init_from``: a fit that starts from another run's trained network, with a record of where it came from.

Why: a pruned network, or any fine-tune, is trained *on top of* a run: its accuracy belongs to the pair, and its
training compute is the parent's plus its own. The weights are read with the project's one checkpoint reader
(``src.runs.read_checkpoint``: tensors and plain data only, nothing a file could execute), only the network's
tensors are taken, and they must fit the network this fit built (same architecture, same shapes) -- a checkpoint of
another network is one line of error, never a partial load. ``record`` goes into ``efficiency.json`` (``init_from``)
so a report can add the parent's training images to the pruned net's and name the parent's commit.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from src import runs
from src.files import file_sha256

MODEL_PREFIX = "model."  # the ImageClassifier keeps its network as ``self.model``


def resolve_start(path: str) -> str:
    """A ``.ckpt`` file, or a run directory (its best-by-validation checkpoint, else its last one)."""
    if os.path.isdir(path):
        found = runs.best_checkpoint(path) or runs.resume_checkpoint(path)
        if found is None:
            raise runs.RunError(f"model.init_from {path!r} is a directory with no checkpoint of a run in checkpoints/")
        return found
    if not os.path.isfile(path):
        raise runs.RunError(f"model.init_from {path!r} does not exist (give a .ckpt file or a run directory)")
    return path


def read_start(path: str, arch: str | None) -> tuple[str, dict[str, Any]]:
    """``(checkpoint file, checkpoint)`` for ``model.init_from``, refused (``RunError``, one line) when it cannot be
    read or holds another architecture than ``arch`` (``None``: not checked by name -- a net given by class path;
    its tensors are still checked on loading). The CLI calls it before a fit makes its run directory."""
    path = resolve_start(path)
    checkpoint, why = runs.read_checkpoint(path)
    if checkpoint is None:
        raise runs.RunError(f"model.init_from {path!r} cannot be read: {why}")
    hparams = checkpoint.get("hyper_parameters") or {}
    if arch is not None and hparams.get("arch") not in (None, arch):
        raise runs.RunError(f"model.init_from {path!r} holds a {hparams.get('arch')}, not the {arch} this fit builds")
    return path, checkpoint


def load_start_weights(net: nn.Module, path: str, arch: str) -> dict[str, Any]:
    """Load the network tensors of the checkpoint ``path`` into ``net`` (strictly); return where they came from."""
    path, checkpoint = read_start(path, arch)
    hparams = checkpoint.get("hyper_parameters") or {}
    state = {
        key[len(MODEL_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(key for key in set(own) & set(state) if tuple(own[key].shape) != tuple(state[key].shape))
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise runs.RunError(
            f"model.init_from {path!r} does not fit this {arch}: {len(missing)} tensor(s) missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape (e.g. {first!r})"
        )
    net.load_state_dict(state)
    run_dir = runs.run_dir_of_checkpoint(path)  # <run>/checkpoints/*.ckpt or <run>/hpc_ckpt_<N>.ckpt
    parent = (runs.read_efficiency(run_dir) if run_dir else None) or {}
    return {
        "path": path,
        "sha256": file_sha256(path),
        "arch": hparams.get("arch", arch),
        "global_step": checkpoint.get("global_step"),
        "run_dir": run_dir if parent else None,
        **parent_facts(parent),
    }


def parent_facts(parent: dict[str, Any]) -> dict[str, Any]:
    """What ``init_from`` copies from the parent run's ``efficiency.json``: its training images (a pruned net's
    compute counts them), best validation accuracy and code version. One home for the copy and its check: a plan's
    ``--check`` compares these with the committed parent's (``src.reporting.analysis_plan.lineage_problems``)."""
    provenance = parent.get("provenance")
    if not isinstance(provenance, dict):
        provenance = {}
    return {
        "train_images_seen": parent.get("train_images_seen"),
        "best_val_acc": parent.get("best_val_acc"),
        "git_commit": provenance.get("git_commit"),
        "git_dirty": provenance.get("git_dirty"),
    }

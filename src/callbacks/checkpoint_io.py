"""Checkpoints written whole or not at all, inside the run directory.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction whose temporary file lives in
``$TMPDIR``: on another file system the final "rename" is a copy, so a full disk leaves a fragment of
a checkpoint in ``checkpoints/`` (which the next resume then fails to read), and every kill leaves a
temporary file in ``$TMPDIR``. :class:`AtomicCheckpointIO` writes beside the checkpoint instead
(:func:`src.files.atomic_write`: same directory, fsync, rename) and removes its temporary file on any
error. The CLI installs it for local paths; remote (``s3://``...) paths keep Lightning's own.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is atomic on local disks (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        local = os.fspath(path).removeprefix("file://")
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        atomic_write(local, lambda handle: torch.save(checkpoint, handle))

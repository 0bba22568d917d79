"""torch.compile as a callback, so checkpoints stay plain.

``torch.compile(model)`` returns a wrapper whose ``state_dict`` keys start with ``_orig_mod.``:
a checkpoint saved from it does not load into the uncompiled network. ``nn.Module.compile()``
compiles *in place* instead: the module's forward is compiled, its parameters, buffers and
``state_dict`` keys are untouched. This callback does that to the LightningModule's network
(``pl_module.model``) when fit / validate / test / predict start, so compiled training writes
checkpoints that ``load_from_checkpoint`` and ``test --ckpt_path`` read without compiling.
(Not earlier, in ``setup``: the efficiency callback counts FLOPs there on a meta-device copy,
and a copy of an in-place-compiled module would still call the original's compiled forward.)
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class CompileModel(pl.Callback):
    """Compile ``pl_module.model`` in place with ``torch.compile`` options.

    Args:
        mode: ``default``, ``reduce-overhead``, ``max-autotune``, ... (``torch.compile``'s ``mode``).
        backend: ``inductor`` (the default compiler) or another registered backend (``eager``: no codegen,
            for checking a setup quickly).
        dynamic: compile for varying shapes (``null``: torch decides; the last, smaller batch recompiles once).
        fullgraph: fail instead of falling back to Python when the network cannot be compiled whole.
    """

    def __init__(
        self, mode: str | None = None, backend: str = "inductor", dynamic: bool | None = None, fullgraph: bool = False
    ) -> None:
        self.options: dict[str, Any] = {"backend": backend, "dynamic": dynamic, "fullgraph": fullgraph}
        if mode is not None:
            self.options["mode"] = mode

    def compile(self, pl_module: pl.LightningModule) -> None:
        net = getattr(pl_module, "model", pl_module)
        if getattr(net, "_compiled_call_impl", None) is None:  # once per module, whatever the stage
            net.compile(**self.options)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compile(pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compile(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compile(pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compile(pl_module)

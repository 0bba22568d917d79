"""Training diagnostics across depth: why a residual network trains where its plain twin does not.

Two numbers per block (``src.models.blocks``), every ``every_n_steps`` optimizer steps:

* ``grad_norm``: the L2 norm of the gradient of the block's branch convolution weights,
  taken just before the optimizer step (after AMP unscaling). Vanishing gradients in a deep
  plain network show up as a profile that falls towards the input.
* ``branch_ratio``: ||F(x)|| / ||x|| for the block's input ``x`` and its branch output
  ``F(x)`` (the last BN's output, before the shortcut is added), per sample, averaged over
  the batch. Small ratios mean the block stays close to its shortcut. A plain block has the
  same branch but no shortcut: its ratio is its output (before the last ReLU) relative to its input.

Off by default (``enabled: false``): then the callback does nothing at all. When on, forward
hooks are attached only for the measured steps and removed right after, so the other steps
run exactly as without it; the cost is in ``BENCHMARKS.md``.

Rank zero logs the numbers to every logger as scalars ``diagnostics_grad_norm/block_XX`` and
``diagnostics_branch_ratio/block_XX``; TensorBoard also gets each per-depth profile as a histogram
(``diagnostics_profile/grad_norm``: bucket ``i`` is block ``i``), and with ``profile_image: true`` as
a figure (``diagnostics/depth_profile``). Everything is appended to ``diagnostics.jsonl`` in the run's log
directory, one JSON object per measured step, so a report can draw "gradient norm vs block
index" for plain and residual runs side by side (``src.study.plots.plot_depth_profiles``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from src.files import free_path
from src.models.blocks import Block, branch_output, branch_weights, residual_blocks

_EPS = 1e-12


class BranchRatioRecorder:
    """Forward hooks that record ||F(x)|| / ||x|| for each block; Lightning-free, so a test can use it.

    ``attach()`` registers the hooks, ``detach()`` removes them; ``ratios()`` averages what the
    forward passes since ``attach`` saw (several with gradient accumulation) and resets.
    """

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self._handles: list[Any] = []
        self._input_norms: dict[int, Tensor] = {}
        self._sums: dict[int, Tensor] = {}
        self._counts: dict[int, int] = {}

    def attach(self) -> None:
        if self._handles:
            return
        for block in self.blocks:
            self._handles.append(block.module.register_forward_pre_hook(self._pre_hook(block.index)))
            self._handles.append(branch_output(block.module).register_forward_hook(self._branch_hook(block.index)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._input_norms.clear()

    def _pre_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            self._input_norms[index] = _sample_norms(args[0])

        return hook

    def _branch_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            ratio = (_sample_norms(output) / self._input_norms.pop(index).clamp_min(_EPS)).mean()
            self._sums[index] = self._sums.get(index, 0) + ratio
            self._counts[index] = self._counts.get(index, 0) + 1

        return hook

    def ratios(self) -> list[float | None]:
        """One average ratio per block (``None`` for a block no forward pass reached); then reset."""
        indices = [block.index for block in self.blocks]
        seen = [i for i in indices if i in self._sums]
        values = torch.stack([self._sums[i] / self._counts[i] for i in seen]).tolist() if seen else []
        by_index = dict(zip(seen, values))
        self._sums.clear()
        self._counts.clear()
        return [by_index.get(i) for i in indices]


@torch.no_grad()
def _sample_norms(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x.detach().flatten(1).float(), dim=1)


@torch.no_grad()
def gradient_norms(blocks: list[Block]) -> list[float | None]:
    """L2 norm of each block's branch weight gradients (``None`` where no gradient exists yet)."""
    norms: list[Tensor | None] = []
    for block in blocks:
        grads = [w.grad for w in branch_weights(block.module) if w.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])) if grads else None)
    present = [n for n in norms if n is not None]
    values = iter(torch.stack(present).tolist() if present else [])  # one device sync for all blocks
    return [next(values) if n is not None else None for n in norms]


def _add_depth_histogram(writer: Any, tag: str, values: list[float | None], step: int) -> None:
    """A per-depth profile as a TensorBoard histogram: bucket ``i`` is block ``i``, its height the value.

    Costs microseconds (no drawing), and TensorBoard's histogram tab then shows how the whole
    profile moves over training, one slice per measured step.
    """
    heights = [0.0 if v is None else max(float(v), 0.0) for v in values]
    total = sum(heights)
    if total <= 0:
        return
    indices = range(len(heights))
    writer.add_histogram_raw(
        tag,
        min=0,
        max=len(heights) - 1,
        num=total,
        sum=sum(i * h for i, h in zip(indices, heights)),
        sum_squares=sum(i * i * h for i, h in zip(indices, heights)),
        bucket_limits=[i + 0.5 for i in indices],
        bucket_counts=heights,
        global_step=step,
    )


class TrainingDiagnostics(pl.Callback):
    """Per-block gradient norms and residual-branch ratios across depth, every ``every_n_steps`` steps.

    Args:
        enabled: measure at all (off by default: the callback then does nothing).
        every_n_steps: measure at optimizer steps 0, N, 2N, ... (the step about to be taken).
        grad_norms: record the per-block gradient norm of the branch weights.
        branch_ratios: record ||F(x)|| / ||x|| per block (forward hooks on the measured steps only).
        profile_image: also draw the per-depth profile as a matplotlib figure for TensorBoard's images tab at
            each measured step (readable, but it costs tenths of a second per measurement on a CPU).
        filename: JSON-lines file in the run's log directory (never overwriting one that exists).
    """

    def __init__(
        self,
        enabled: bool = False,
        every_n_steps: int = 100,
        grad_norms: bool = True,
        branch_ratios: bool = True,
        profile_image: bool = False,
        filename: str = "diagnostics.jsonl",
    ) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"diagnostics every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.enabled = enabled
        self.every_n_steps = every_n_steps
        self.grad_norms = grad_norms
        self.branch_ratios = branch_ratios
        self.profile_image = profile_image
        self.filename = filename
        self.path: str | None = None
        self.blocks: list[Block] = []
        self.records: list[dict[str, Any]] = []
        self._recorder: BranchRatioRecorder | None = None

    def _active(self, trainer: pl.Trainer) -> bool:
        return self.enabled and trainer.is_global_zero and bool(self.blocks)

    def _due(self, trainer: pl.Trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0 and not (
            self.records and self.records[-1]["step"] == trainer.global_step  # already measured this step
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit":
            return
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
        if not trainer.is_global_zero or self.blocks:
            return
        self.blocks = residual_blocks(getattr(pl_module, "model", pl_module))
        self._recorder = BranchRatioRecorder(self.blocks)
        self.path = free_path(log_dir or trainer.default_root_dir, self.filename)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._active(trainer) and self.branch_ratios and self._due(trainer):
            self._recorder.attach()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._active(trainer) or not self._due(trainer):
            return
        record: dict[str, Any] = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        record["blocks"] = [block.name for block in self.blocks]
        if self.grad_norms:
            record["grad_norm"] = gradient_norms(self.blocks)
        if self.branch_ratios:
            record["branch_ratio"] = self._recorder.ratios()
            self._recorder.detach()
        self.records.append(record)
        self._log(trainer, record)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._recorder is not None:
            self._recorder.detach()  # a skipped step (or manual optimization) must not leave hooks behind

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._recorder is not None:
            self._recorder.detach()

    def _log(self, trainer: pl.Trainer, record: dict[str, Any]) -> None:
        metrics = {
            f"diagnostics_{key}/block_{index:02d}": value
            for key in ("grad_norm", "branch_ratio")
            for index, value in enumerate(record.get(key, []))
            if value is not None
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, TensorBoardLogger):
                for key in ("grad_norm", "branch_ratio"):
                    if key in record:
                        _add_depth_histogram(
                            logger.experiment, f"diagnostics_profile/{key}", record[key], record["step"]
                        )
            if self.profile_image and isinstance(logger, TensorBoardLogger):
                from src.study.plots import depth_profile_figure  # matplotlib, only when drawing

                figure = depth_profile_figure(
                    {key: record[key] for key in ("grad_norm", "branch_ratio") if key in record},
                    title=f"step {record['step']}",
                )
                logger.experiment.add_figure("diagnostics/depth_profile", figure, global_step=trainer.global_step)
        assert self.path is not None
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({**record, "residual": [block.residual for block in self.blocks]}) + "\n")

"""Training diagnostics across depth: why a residual network trains where its plain twin does not.

Per block (``src.models.blocks``), every ``every_n_steps`` optimizer steps, numbers that do not
grow with the size of the block's tensors (a stage-3 CIFAR block has 16x the weights of a
stage-1 block, so any raw L2 norm over it is ~4x larger by size alone):

* ``grad_rms``: RMS gradient per weight, ||g|| / sqrt(n), over the block's branch convolution
  weights (``n`` of them), taken just before the optimizer step (after AMP unscaling). Vanishing
  gradients in a deep plain network show up as a profile that falls towards the input.
* ``grad_to_weight``: ||g|| / ||w|| over the same weights. Batch norm after every convolution
  makes the loss invariant to the scale of its weights, so the gradient *relative to the
  weights* is what decides how fast a block learns (the angle SGD turns it by per step).
* ``branch_to_shortcut``: ||F(x)|| / ||s(x)||, per sample, averaged over the batch, for the
  branch output ``F(x)`` (the last BN's output, before the shortcut is added) and the
  shortcut's *own* output ``s(x)``: ``x`` for the identity, ``x`` subsampled and zero-padded for
  option A, the 1x1 projection + BN for option B. Both tensors have the shape the block adds
  together, so the ratio says how much the branch changes what flows past it. A **plain** block
  has no shortcut: there the value is ||F(x)|| / ||x|| (what an identity shortcut would carry)
  where ``F(x)`` and ``x`` have the same shape -- the block's gain on its input, not a balance
  against a shortcut -- and ``null`` in the blocks that change shape (no like-for-like tensor).
* ``raw_grad_norm``: ||g|| itself, the secondary (size-dependent) number, for reference.

Each record also says where each block sits: ``stage`` (1-based) and ``downsampling`` per block,
``stage_starts`` (the block index where each stage begins), ``residual`` per block and
``num_weights`` (``n`` above), so a report can draw profiles against *relative* depth on which a
20- and a 56-layer network line up (``src.reporting.depth_profiles``). Files written before these
fields existed have ``grad_norm`` (= ``raw_grad_norm``) and ``branch_ratio`` (||F(x)|| / ||x||
with ``x`` taken before subsampling) instead; readers skip them for the new profiles.

Off by default (``enabled: false``): then the callback does nothing at all. When on, forward
hooks are attached only for the measured steps and removed right after, so the other steps
run exactly as without it; the cost is in ``BENCHMARKS.md`` (``benchmarks/diagnostics_overhead.py``).

Rank zero logs the numbers to every logger as scalars ``diagnostics_<key>/block_XX``; TensorBoard also
gets each per-depth profile as a histogram (``diagnostics_profile/<key>``: bucket ``i`` is block ``i``),
and with ``profile_image: true`` as a figure (``diagnostics/depth_profile``). Everything is appended
to ``diagnostics.jsonl`` in the run's log directory, one JSON object per measured step.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from src.files import free_path
from src.models.blocks import Block, branch_output, branch_weights, residual_blocks

_EPS = 1e-12
GRADIENT_KEYS = ("grad_rms", "grad_to_weight", "raw_grad_norm")
RATIO_KEY = "branch_to_shortcut"
PROFILE_KEYS = ("grad_rms", "grad_to_weight", RATIO_KEY)  # drawn as TensorBoard histograms / the profile figure


class BranchRatioRecorder:
    """Forward hooks that record ||F(x)|| / ||s(x)|| for each block; Lightning-free, so a test can use it.

    ``s(x)`` is read where the block computes it: the block's input for an identity shortcut (and for
    a plain block whose output has its input's shape), the shortcut module's output otherwise. A plain
    block that changes shape gets no hooks and reads ``None``. ``attach()`` registers the hooks,
    ``detach()`` removes them; ``ratios()`` averages what the forward passes since ``attach`` saw
    (several with gradient accumulation) and resets.
    """

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self._handles: list[Any] = []
        self._branch: dict[int, Tensor] = {}
        self._shortcut: dict[int, Tensor] = {}
        self._sums: dict[int, Tensor] = {}
        self._counts: dict[int, int] = {}

    def attach(self) -> None:
        if self._handles:
            return
        for block in self.blocks:
            module = block.module
            shortcut = getattr(module, "downsample", None) if block.residual else None
            if not block.residual and block.downsampling:
                continue  # no tensor of F(x)'s shape to compare with
            if shortcut is None:  # identity shortcut, or a plain block that keeps the shape
                self._handles.append(module.register_forward_pre_hook(self._input_hook(block.index)))
            else:
                self._handles.append(shortcut.register_forward_hook(self._output_hook(self._shortcut, block.index)))
            branch = branch_output(module)
            self._handles.append(branch.register_forward_hook(self._output_hook(self._branch, block.index)))
            self._handles.append(module.register_forward_hook(self._block_hook(block.index)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._branch.clear()
        self._shortcut.clear()

    def _input_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            self._shortcut[index] = _sample_norms(args[0])

        return hook

    @staticmethod
    def _output_hook(store: dict[int, Tensor], index: int) -> Any:
        # The norm is taken at once: torchvision's blocks add the shortcut to the BN output in place.
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            store[index] = _sample_norms(output)

        return hook

    def _block_hook(self, index: int) -> Any:
        # Runs after the whole block, whatever order it computed its branch and shortcut in.
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            branch, shortcut = self._branch.pop(index, None), self._shortcut.pop(index, None)
            if branch is None or shortcut is None:
                return
            ratio = (branch / shortcut.clamp_min(_EPS)).mean()
            self._sums[index] = self._sums.get(index, 0) + ratio
            self._counts[index] = self._counts.get(index, 0) + 1

        return hook

    def ratios(self) -> list[float | None]:
        """One average ratio per block (``None`` where none was measured); then reset."""
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


def weight_counts(blocks: list[Block]) -> list[int]:
    """How many branch convolution weights each block has (``n`` in ``grad_rms``)."""
    return [sum(w.numel() for w in branch_weights(block.module)) for block in blocks]


@torch.no_grad()
def gradient_statistics(blocks: list[Block]) -> dict[str, list[float | None]]:
    """Per block: ``grad_rms`` (||g|| / sqrt(n)), ``grad_to_weight`` (||g|| / ||w||) and ``raw_grad_norm`` (||g||).

    Over the block's branch convolution weights taken together. ``None`` where a block has no
    gradient yet (and ``grad_to_weight`` is ``None`` for all-zero weights). One device sync for all blocks.
    """
    pairs: list[Tensor | None] = []
    for block in blocks:
        weights = branch_weights(block.module)
        if any(w.grad is None for w in weights):
            pairs.append(None)
            continue
        grads = [cast(Tensor, w.grad) for w in weights]  # none is None (checked above)
        squares = torch.stack([torch.stack([g.float().norm(), w.float().norm()]) for g, w in zip(grads, weights)])
        pairs.append(torch.linalg.vector_norm(squares, dim=0))  # [||g||, ||w||] over all the block's weights
    present = [p for p in pairs if p is not None]
    values = iter(torch.stack(present).tolist() if present else [])
    stats: dict[str, list[float | None]] = {key: [] for key in GRADIENT_KEYS}
    for pair, count in zip(pairs, weight_counts(blocks)):
        grad, weight = next(values) if pair is not None else (None, None)
        stats["raw_grad_norm"].append(grad)
        stats["grad_rms"].append(None if grad is None else grad / math.sqrt(count))
        stats["grad_to_weight"].append(None if grad is None or weight is None or weight <= 0 else grad / weight)
    return stats


def block_layout(blocks: list[Block]) -> dict[str, list]:
    """Where each block sits: its stage, whether it downsamples, the first block of each stage, and more."""
    stages = [block.stage for block in blocks]
    return {
        "blocks": [block.name for block in blocks],
        "stage": stages,
        "downsampling": [block.downsampling for block in blocks],
        "stage_starts": [i for i, stage in enumerate(stages) if i == 0 or stage != stages[i - 1]],
        "residual": [block.residual for block in blocks],
        "num_weights": weight_counts(blocks),
    }


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
    """Scale-free per-block gradients and branch/shortcut ratios across depth, every ``every_n_steps`` steps.

    Args:
        enabled: measure at all (off by default: the callback then does nothing).
        every_n_steps: measure at optimizer steps 0, N, 2N, ... (the step about to be taken).
        grad_norms: record the per-block gradient numbers (``grad_rms``, ``grad_to_weight``, ``raw_grad_norm``).
        branch_ratios: record ``branch_to_shortcut`` per block (forward hooks on the measured steps only).
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
        self.layout: dict[str, list] = {}
        self.records: list[dict[str, Any]] = []
        self._recorder: BranchRatioRecorder | None = None

    def _branch_recorder(self) -> BranchRatioRecorder:
        """The recorder: made with ``blocks`` (which ``_active`` requires) before the first step."""
        return cast(BranchRatioRecorder, self._recorder)

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
        self.layout = block_layout(self.blocks)
        self._recorder = BranchRatioRecorder(self.blocks)
        self.path = free_path(log_dir or trainer.default_root_dir, self.filename)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._active(trainer) and self.branch_ratios and self._due(trainer):
            self._branch_recorder().attach()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._active(trainer) or not self._due(trainer):
            return
        record: dict[str, Any] = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        if self.grad_norms:
            record.update(gradient_statistics(self.blocks))
        if self.branch_ratios:
            record[RATIO_KEY] = self._branch_recorder().ratios()
            self._branch_recorder().detach()
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
        keys = [key for key in (*PROFILE_KEYS, "raw_grad_norm") if key in record]
        metrics = {
            f"diagnostics_{key}/block_{index:02d}": value
            for key in keys
            for index, value in enumerate(record[key])
            if value is not None
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, TensorBoardLogger):
                for key in PROFILE_KEYS:
                    if key in record:
                        _add_depth_histogram(
                            logger.experiment, f"diagnostics_profile/{key}", record[key], record["step"]
                        )
            if self.profile_image and isinstance(logger, TensorBoardLogger):
                from src.callbacks.diagnostics_figure import depth_profile_figure  # matplotlib, only when drawing

                figure = depth_profile_figure(
                    {key: record[key] for key in PROFILE_KEYS if key in record},
                    title=f"step {record['step']}",
                    stage_starts=self.layout.get("stage_starts", []),
                )
                logger.experiment.add_figure("diagnostics/depth_profile", figure, global_step=trainer.global_step)
        assert self.path is not None
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({**record, **self.layout}) + "\n")

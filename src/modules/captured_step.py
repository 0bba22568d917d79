"""The training step's forward, loss and backward as one CUDA graph, replayed every step (``model.captured_step``).

Why: a CIFAR ResNet on a large GPU waits on the host. Its eager step launches hundreds of small kernels from Python
(ResNet-20: forward, backward, the loss), each taking longer to launch than to run. A CUDA graph records those
launches once and replays them all with one call, so the GPU is no longer paced by Python.

What runs where, every step:

* **in the graph** -- the batch copied into fixed input buffers, the forward (under the trainer's autocast), the loss
  (label smoothing, an L1 term) and the backward, which writes the gradients into fixed buffers;
* **eager, a few launches** -- the optimizer step, made a single kernel: SGD runs ``fused``, Adam / AdamW
  ``capturable``; then the schedule's step and the training accuracy from the step's logits. The learning rate is
  a device tensor that the schedule fills in place: not needed while the optimizer runs eagerly (a Python number
  reads nothing from the device either), but what lets its step join the graph without a new capture per LR.

Not captured: the data's random crop and flip, which the fast data path already does on the GPU as a few batched
tensor operations in the loader. The first ``warmup_steps`` steps run eagerly on a side stream (CUDA graphs need
the allocator and cuDNN warmed before a capture); a batch of another shape -- an epoch's shorter last batch -- runs
eagerly through the same gradient buffers and optimizer, so no image is dropped and the numbers are the eager ones.

What cannot be captured fails when the fit starts, with the reason (``check_trainer``): a CPU, several processes
(DDP), fp16 (its loss scaler reads the host to skip steps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

# A step's forward and loss: (images, labels) -> {"loss": what backward differentiates, ...what is logged}.
LossFn = Callable[[Tensor, Tensor], dict[str, Tensor]]

# Optimizers whose step needs no host value with a device LR tensor: the group option that makes them so.
CAPTURE_READY_OPTIONS: dict[type[torch.optim.Optimizer], dict[str, Any]] = {
    torch.optim.SGD: {"fused": True, "foreach": None},
    torch.optim.Adam: {"capturable": True},
    torch.optim.AdamW: {"capturable": True},
}


class CaptureError(ValueError):
    """A fit that asks for a captured step where one cannot run: the reason, and what to change."""


class StepGraph(Protocol):
    """How a step is recorded and replayed (a CUDA graph; tests on a CPU use a stand-in that re-runs the step)."""

    needs_cuda: bool

    def warmup(self) -> contextlib.AbstractContextManager[None]:
        """The context the eager steps before the capture run in."""
        ...

    def capture(self, step: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Record ``step`` and run it once; return its outputs, which every ``replay`` rewrites in place."""
        ...

    def replay(self) -> None: ...


class CudaGraph:
    """``torch.cuda.CUDAGraph``: the warm-up on a side stream, autocast without its weight cache during the capture."""

    needs_cuda = True

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    def capture(self, step: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        # A cached bf16 copy of a weight would be a stale constant in the graph: the casts must be recorded.
        dtype = torch.get_autocast_dtype("cuda")
        autocast = torch.autocast("cuda", dtype=dtype, enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
        with torch.cuda.graph(self.graph), autocast:
            outputs = step()
        self.graph.replay()
        return outputs

    def replay(self) -> None:
        self.graph.replay()


def check_trainer(trainer: Any, device: torch.device, graph: type[StepGraph]) -> None:
    """Raise, with the reason and what to change, where a captured step cannot run."""
    if graph.needs_cuda and device.type != "cuda":
        raise CaptureError(
            f"model.captured_step needs a CUDA GPU (it replays the step as a CUDA graph), and this fit runs on "
            f"{device.type}: set trainer.accelerator gpu on a machine with one, or leave captured_step off"
        )
    if trainer.world_size > 1:
        raise CaptureError(
            f"model.captured_step runs in one process, and this fit has {trainer.world_size} (DDP): a graph would "
            "record the gradient all-reduce as well; use the eager step with DDP, or devices 1"
        )
    if str(trainer.precision).startswith("16"):
        raise CaptureError(
            f"model.captured_step cannot replay trainer.precision {trainer.precision}: fp16's loss scaler reads the "
            "host to skip steps with inf gradients; use bf16-mixed or 32-true"
        )


def make_capture_ready(optimizer: torch.optim.Optimizer) -> None:
    """Switch the optimizer to its single-kernel, host-free step (before its first step: Adam's state depends on it)."""
    options = CAPTURE_READY_OPTIONS.get(type(optimizer))
    if options is None:
        supported = ", ".join(sorted(kind.__name__ for kind in CAPTURE_READY_OPTIONS))
        raise CaptureError(
            f"model.captured_step: {type(optimizer).__name__} has no step that runs without reading the host; "
            f"use one of {supported}"
        )
    for group in optimizer.param_groups:
        group.update(options)


def lr_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Each group's LR as a device tensor, which a schedule fills in place (its base LRs stay Python numbers)."""
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], Tensor):
            group.setdefault("initial_lr", group["lr"])  # what a schedule made later starts from: a number
            group["lr"] = torch.tensor(float(group["lr"]), device=device)


def lr_as_numbers(checkpoint: dict[str, Any]) -> None:
    """A checkpoint's LRs as plain numbers: it loads into an eager run, or on a CPU, as any other checkpoint does."""
    for state in checkpoint.get("optimizer_states", []):
        for group in state.get("param_groups", []):
            if isinstance(group.get("lr"), Tensor):
                group["lr"] = float(group["lr"])
    for state in checkpoint.get("lr_schedulers", []):
        if "_last_lr" in state:
            state["_last_lr"] = [float(lr) for lr in state["_last_lr"]]


# Where Lightning's checkpoint counts optimizer steps: one counter for automatic optimization, one for manual.
_STEP_COUNTERS = (
    "epoch_loop.automatic_optimization.optim_progress",
    "epoch_loop.manual_optimization.optim_step_progress",
)


def share_step_count(checkpoint: dict[str, Any]) -> None:
    """Both of a checkpoint's step counters at its step count, so a captured run resumes eagerly and the other way
    round at the right step (``trainer.global_step`` reads the automatic counter in one, the manual in the other)."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    if not all(key in loop for key in _STEP_COUNTERS):
        return
    automatic = loop[_STEP_COUNTERS[0]]["optimizer"]["step"]["total"]
    manual = loop[_STEP_COUNTERS[1]]["total"]
    for key in ("ready", "completed"):
        automatic[key] = manual[key] = max(automatic[key], manual[key])


class CapturedStep:
    """Forward, loss and backward of a training step, recorded once and replayed (the module's ``captured_step``).

    Args:
        loss_fn: the step's forward and loss on a batch, ``(images, labels) -> {"loss": ..., ...}``.
        warmup_steps: eager steps before the capture.
        graph: how to record and replay (``CudaGraph`` on a GPU).
    """

    def __init__(self, loss_fn: LossFn, warmup_steps: int = 3, graph: type[StepGraph] = CudaGraph) -> None:
        if warmup_steps < 1:
            raise ValueError(f"captured_step needs warmup_steps >= 1 before its capture, got {warmup_steps}")
        self.loss_fn = loss_fn
        self.warmup_steps = warmup_steps
        self.new_graph = graph
        self.graph: StepGraph | None = None  # made at the first step (a CUDA graph cannot be made on a CPU)
        self.captured = False
        self.eager_steps = 0
        self.replays = 0
        self.inputs: tuple[Tensor, Tensor] = (torch.empty(0), torch.empty(0))
        self.outputs: dict[str, Tensor] = {}

    def __call__(self, params: list[nn.Parameter], images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Run one step's forward and backward on the batch; return detached copies of ``loss_fn``'s outputs."""
        if self.graph is None:
            self.graph = self.new_graph()
        if not self.captured:
            if self.eager_steps < self.warmup_steps:
                if len(images) > len(self.inputs[0]):  # the shape captured: the largest warm-up batch
                    self.inputs = (torch.empty_like(images), torch.empty_like(labels))
                with self.graph.warmup():
                    return self.eager(params, images, labels)
            if self._same_shapes(images, labels):
                return self.capture(self.graph, params, images, labels)
        if not self._same_shapes(images, labels):
            return self.eager(params, images, labels)  # an epoch's shorter last batch
        static_images, static_labels = self.inputs
        static_images.copy_(images)
        static_labels.copy_(labels)
        self.graph.replay()
        self.replays += 1
        return _copies(self.outputs)

    def _same_shapes(self, images: Tensor, labels: Tensor) -> bool:
        return images.shape == self.inputs[0].shape and labels.shape == self.inputs[1].shape

    def eager(self, params: list[nn.Parameter], images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The step without the graph, its gradients written into the buffers the optimizer reads."""
        self.eager_steps += 1
        held = [param.grad for param in params]
        for grad in held:
            if grad is not None:
                grad.zero_()
        outputs = self.loss_fn(images, labels)
        outputs["loss"].backward()
        for param, grad in zip(params, held, strict=True):
            if grad is not None and param.grad is not None and param.grad is not grad:  # keep the graph's buffer
                grad.copy_(param.grad)
                param.grad = grad
        return _copies(outputs)

    def capture(
        self, graph: StepGraph, params: list[nn.Parameter], images: Tensor, labels: Tensor
    ) -> dict[str, Tensor]:
        """Record the step on fixed buffers (the gradients too: allocated by the capture) and run it on this batch."""
        self.inputs = static_images, static_labels = images.clone(), labels.clone()  # (also: on the GPU's stream)
        for param in params:
            param.grad = None

        def step() -> dict[str, Tensor]:
            for param in params:  # a stand-in that re-runs the step would add to the last step's gradients
                if param.grad is not None:
                    param.grad.zero_()
            outputs = self.loss_fn(static_images, static_labels)
            outputs["loss"].backward()
            return {key: value.detach() for key, value in outputs.items()}

        self.outputs = graph.capture(step)
        self.captured = True
        self.replays += 1
        return _copies(self.outputs)


def _copies(outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """What leaves a step: copies, never the graph's buffers that the next replay overwrites."""
    return {key: value.detach().clone() for key, value in outputs.items()}

"""Learning-rate schedules that ``torch.optim.lr_scheduler`` has no single class for.

Everything else (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, OneCycleLR, ...) is
named directly in YAML. Whether a schedule counts epochs or optimizer steps is set by the
LightningModule's ``lr_scheduler_interval`` -- e.g. the paper's MultiStepLR at iterations
32k and 48k is ``MultiStepLR`` with ``lr_scheduler_interval: step``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosineLR(LambdaLR):
    """Linear warmup from ``warmup_start_factor * lr`` to ``lr``, then cosine decay to ``min_lr_factor * lr``.

    Args:
        optimizer: the wrapped optimizer.
        warmup_steps: length of the linear warmup (in scheduler steps).
        total_steps: length of the whole schedule. ``None`` lets the LightningModule fill in
            the trainer's total (``estimated_stepping_batches`` for per-step schedules,
            ``max_epochs`` for per-epoch ones) before training starts.
        warmup_start_factor: learning-rate factor at step 0.
        min_lr_factor: learning-rate factor reached at ``total_steps``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        warmup_start_factor: float = 0.01,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps  # validated by the setter, also when the LightningModule fills it in later
        self.warmup_start_factor = warmup_start_factor
        self.min_lr_factor = min_lr_factor
        super().__init__(optimizer, self.lr_factor, last_epoch)

    @property
    def total_steps(self) -> int | None:
        return self._total_steps

    @total_steps.setter
    def total_steps(self, total_steps: int | None) -> None:
        # Checked here, not only in __init__: with total_steps=None the LightningModule sets the trainer's
        # total after construction, and a total <= warmup_steps would divide by zero or never decay.
        if total_steps is not None and total_steps <= self.warmup_steps:
            raise ValueError(
                f"WarmupCosineLR: total_steps ({total_steps}) must be larger than warmup_steps ({self.warmup_steps}); "
                "the warmup would take the whole run and the cosine decay would never happen. "
                "Shorten lr_scheduler.init_args.warmup_steps or train longer (trainer.max_steps / max_epochs)."
            )
        self._total_steps = total_steps

    def load_state_dict(self, state_dict: dict) -> None:
        if "total_steps" in state_dict:  # state saved before total_steps became a property
            state_dict = {**state_dict, "_total_steps": state_dict["total_steps"]}
            del state_dict["total_steps"]
        super().load_state_dict(state_dict)

    def lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps
        if self.total_steps is None:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupMultiStepLR(LambdaLR):
    """Multiply the lr by ``gamma`` at each milestone, after a warmup at ``warmup_factor * lr``.

    He et al.'s ResNet-110 recipe: lr 0.01 (``warmup_factor=0.1`` of 0.1) for the first 400
    iterations, then 0.1, divided by 10 at iterations 32k and 48k. ``warmup_method`` is
    ``constant`` (the paper) or ``linear`` (ramp from ``warmup_factor`` to 1).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[int],
        gamma: float = 0.1,
        warmup_steps: int = 0,
        warmup_factor: float = 0.1,
        warmup_method: str = "constant",
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {milestones}")
        if warmup_method not in ("constant", "linear"):
            raise ValueError(f"warmup_method must be 'constant' or 'linear', got {warmup_method!r}")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.warmup_steps = warmup_steps
        self.warmup_factor = warmup_factor
        self.warmup_method = warmup_method
        super().__init__(optimizer, self.lr_factor, last_epoch)

    def lr_factor(self, step: int) -> float:
        decay = self.gamma ** sum(step >= milestone for milestone in self.milestones)
        if step >= self.warmup_steps:
            return decay
        if self.warmup_method == "constant":
            return self.warmup_factor * decay
        return (self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps) * decay

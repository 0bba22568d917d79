"""The schedules torch has no single class for: exact factors at the steps that matter."""

from __future__ import annotations

import math

import pytest
import torch

from src.modules import WarmupCosineLR, WarmupMultiStepLR


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lrs(scheduler, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def test_paper_resnet110_schedule():
    """lr 0.01 for 400 iterations, then 0.1, then / 10 at 32k and 48k (milestones scaled down 100x here)."""
    scheduler = WarmupMultiStepLR(optimizer(0.1), milestones=[320, 480], warmup_steps=4, warmup_factor=0.1)
    values = lrs(scheduler, 500)
    assert values[:4] == pytest.approx([0.01] * 4)
    assert values[4] == pytest.approx(0.1) and values[319] == pytest.approx(0.1)
    assert values[320] == pytest.approx(0.01) and values[479] == pytest.approx(0.01)
    assert values[480] == pytest.approx(0.001)


def test_linear_warmup_multistep():
    scheduler = WarmupMultiStepLR(
        optimizer(1.0), milestones=[10], warmup_steps=4, warmup_factor=0.2, warmup_method="linear"
    )
    assert lrs(scheduler, 12)[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_warmup_cosine_values():
    scheduler = WarmupCosineLR(
        optimizer(1.0), warmup_steps=2, total_steps=10, warmup_start_factor=0.0, min_lr_factor=0.1
    )
    values = lrs(scheduler, 11)
    assert values[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert values[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert values[10] == pytest.approx(0.1)


def test_schedule_state_survives_a_checkpoint():
    first = WarmupCosineLR(optimizer(), warmup_steps=3, total_steps=20)
    lrs(first, 7)
    second = WarmupCosineLR(optimizer(), warmup_steps=0, total_steps=99)
    second.load_state_dict(first.state_dict())
    assert (second.warmup_steps, second.total_steps, second.last_epoch) == (3, 20, 7)
    assert second.lr_factor(7) == first.lr_factor(7)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosineLR(optimizer(), warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(optimizer(), warmup_steps=-1)
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(optimizer(), milestones=[48000, 32000])
    with pytest.raises(ValueError, match="warmup_method"):
        WarmupMultiStepLR(optimizer(), milestones=[1], warmup_method="cosine")


def test_total_steps_filled_in_later_is_checked():
    """The LightningModule sets total_steps after construction: a too-short total must fail there, clearly."""
    scheduler = WarmupCosineLR(optimizer(), warmup_steps=10)
    with pytest.raises(ValueError, match=r"total_steps \(10\) must be larger than warmup_steps \(10\)"):
        scheduler.total_steps = 10  # used to divide by zero at step 10
    with pytest.raises(ValueError, match=r"total_steps \(4\) must be larger than warmup_steps \(10\)"):
        scheduler.total_steps = 4  # used to warm up and never decay, silently
    scheduler.total_steps = 11
    assert scheduler.lr_factor(11) == pytest.approx(0.0)


def test_schedule_loads_state_saved_before_total_steps_was_checked():
    scheduler = WarmupCosineLR(optimizer(), warmup_steps=2, total_steps=30)
    state = scheduler.state_dict()
    state["total_steps"] = state.pop("_total_steps")  # the old attribute name
    restored = WarmupCosineLR(optimizer(), warmup_steps=0, total_steps=5)
    restored.load_state_dict(state)
    assert (restored.total_steps, restored.warmup_steps) == (30, 2)

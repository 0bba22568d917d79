"""Whether this CPU runs bf16 natively, and the warning a bf16 run gets where it does not.

PyTorch's CPU convolutions take bf16 through oneDNN only on CPUs with AVX-512 (its bf16 instructions or AMX make it
fast). On an AVX2-only CPU (AMD Zen 2/3, many laptops) bf16 autocast falls back to reference kernels: ResNet-20 trains
about 11x slower than in fp32 on a 2-core AMD EPYC (Zen 3; BENCHMARKS.md), and Lightning says nothing. The shipped fast
recipes are bf16 (tuned where bf16 is fast), so a user would wait hours for minutes of work without knowing why.

A warning, not a switch to fp32: the precision is part of a recipe's numerics, and a study arm pinned to bf16 must stay
so (its driver, ``scripts/depth_study/run.sh``, refuses such a CPU instead).
"""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import CPUAccelerator

from src.machine import cpu_features, cpu_model

BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")
# What it costs, in the words of every warning about it (fit's here, sweep's in src/sweeping/cpu_precision_check.py).
EMULATED_BF16 = (
    "bf16 is emulated here, several times slower than fp32 (ResNet-20: 11x on an AMD EPYC Zen 3, BENCHMARKS.md)"
)


def bf16_is_emulated() -> bool:
    """True where PyTorch's oneDNN has no bf16 kernels for this CPU; False where it has, or where it cannot tell."""
    if not torch.backends.mkldnn.is_available():
        return False  # no oneDNN in this build (e.g. macOS arm64): nothing known to say
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # an operator this PyTorch does not have
        return False


def slow_bf16_notice(trainer: Trainer) -> str | None:
    """The warning for a bf16 run on a CPU that emulates bf16, else None."""
    if str(trainer.precision) not in BF16_PRECISIONS or not isinstance(trainer.accelerator, CPUAccelerator):
        return None
    if not bf16_is_emulated():
        return None
    features = cpu_features()
    flags = ", ".join(features) if features else "unknown"
    return (
        f"trainer.precision {trainer.precision} on a CPU without bf16 kernels ({cpu_model()}, speed flags: {flags}; "
        f"PyTorch's oneDNN needs AVX-512): {EMULATED_BF16}. Add --trainer.precision 32-true for speed; keep bf16 only "
        "where the numerics must match other runs (a study arm)."
    )

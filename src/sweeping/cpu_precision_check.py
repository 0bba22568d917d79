"""Before a sweep trains on this CPU: a word where its runs' bf16 would be emulated (~11x slower than fp32).

Each run's log says so (``src.cli_support.cpu_precision``), but a sweep shows one line per run, so without this the
user learns it from a progress log whose ETA reads a day. Runs on a GPU are not concerned. Resolving a run's config
takes a parse, so only the first ``LOOKED_AT`` runs are looked at: a study's runs share their precision unless its
grid varies it.
"""

from __future__ import annotations

import torch

from src.cli_support.cpu_precision import BF16_PRECISIONS, EMULATED_BF16, bf16_is_emulated
from src.sweeping.study import RunSpec, Study, run_command

LOOKED_AT = 8
CPU_ACCELERATORS = ("cpu", "auto", None)  # "auto" is the CPU on a machine without a GPU


def slow_bf16_runs_notice(study: Study, runs: list[RunSpec]) -> str | None:
    """The notice for the first bf16 CPU run among the first ``LOOKED_AT``, on a CPU that emulates bf16; else None."""
    if torch.cuda.is_available() or not bf16_is_emulated():
        return None
    from src.cli_support.lightning_cli import resolved_config  # start-up cost: Lightning's CLI, only on such a CPU

    for run in runs[:LOOKED_AT]:
        trainer = resolved_config(run_command(study, run)[3:]).get("trainer") or {}
        precision = str(trainer.get("precision"))
        if precision in BF16_PRECISIONS and trainer.get("accelerator") in CPU_ACCELERATORS:
            return (
                f"note: {run.label} trains in {precision} on this CPU, which has no bf16 kernels in PyTorch (no "
                f"AVX-512): {EMULATED_BF16}. For speed, sweep with -- --trainer.precision 32-true (unless the runs "
                "must match bf16 runs made elsewhere, as a study arm's must)"
            )
    return None

"""``--jobs N`` on this machine: its slots (``src.sweeping.slots`` assigns them), the check that every run
wants the one GPU a slot gives it, and what ``--dry-run`` shows of them.
"""

from __future__ import annotations

import os

from src.machine import available_cpus
from src.sweeping.slots import CAN_PIN, Slot, assign_slots, cpu_ranges, usable_cpus, visible_gpus
from src.sweeping.study import RunSpec, Study, StudyError, run_command


def make_slots(study: Study, runs: list[RunSpec], jobs: int) -> list[Slot]:
    """The slots for ``--jobs`` on this machine (saying so when capped); refuses runs that want several GPUs."""
    import torch

    gpus = visible_gpus(os.environ, torch.cuda.device_count())
    slots, notice = assign_slots(jobs, gpus, usable_cpus(available_cpus()))
    if notice:
        print(notice, flush=True)
    if any(slot.gpu is not None for slot in slots):
        check_one_device(study, runs)
    return slots


ONE_DEVICE = (1, "1", "auto", -1, "-1", [0], "0,")  # every way of saying "the GPU it sees", given one to see


def check_one_device(study: Study, runs: list[RunSpec]) -> None:
    """Refuse, before anything starts, runs whose config wants more than the one GPU a slot gives them."""
    from src.cli_support.lightning_cli import resolved_config

    for run in runs:
        trainer = resolved_config(run_command(study, run)[3:]).get("trainer") or {}
        devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes") or 1
        if devices not in ONE_DEVICE or nodes != 1:
            nodes_note = f" on {nodes} nodes" if nodes != 1 else ""
            raise StudyError(
                f"--jobs gives each run one GPU, but {run.label} asks for trainer.devices {devices}{nodes_note}; "
                "set trainer.devices: 1 (e.g. -- --trainer.devices 1) or sweep with --jobs 1"
            )


def print_slots(slots: list[Slot]) -> None:
    """``--dry-run --jobs N``: where the runs would go, and the environment each would get."""
    print(f"--jobs {len(slots)}: {len(slots)} runs at once, each started when a slot is free:")
    for slot in slots:
        gpu = f"CUDA_VISIBLE_DEVICES={slot.gpu} " if slot.gpu is not None else ""
        cpus = f"pinned to CPUs {cpu_ranges(slot.cpus)}" if CAN_PIN else "(this system cannot pin CPUs)"
        print(f"  slot {slot.index + 1}: {gpu}OMP_NUM_THREADS={slot.threads}, {cpus}")

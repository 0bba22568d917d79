"""``--jobs N`` (and ``--runs-per-gpu K``) on this machine: the options' checks, the slots (``src.sweeping.slots``
assigns them), the check that every run wants the one GPU a slot gives it, and what ``--dry-run`` shows of them.
"""

from __future__ import annotations

import argparse
import os

from src.machine import available_cpus
from src.sweeping.slots import CAN_PIN, Slot, assign_slots, cpu_ranges, usable_cpus, visible_gpus
from src.sweeping.study import RunSpec, Study, StudyError, run_command


def make_slots(study: Study, runs: list[RunSpec], jobs: int, per_gpu: int = 1) -> list[Slot]:
    """The slots for ``--jobs`` (``--runs-per-gpu``) on this machine, saying so when capped or when there is no GPU
    to share; refuses runs that want several GPUs."""
    import torch  # start-up cost: only a sweep that runs in parallel asks CUDA

    gpus = visible_gpus(os.environ, torch.cuda.device_count())
    if per_gpu > 1 and not gpus:
        print(f"--runs-per-gpu {per_gpu}: no GPU visible; the {jobs} jobs share the CPUs", flush=True)
    slots, notice = assign_slots(jobs, gpus, usable_cpus(available_cpus()), per_gpu)
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


def check_jobs(args: argparse.Namespace) -> None:
    """``--jobs`` / ``--runs-per-gpu`` with the options they cannot mean anything with: one clear refusal."""
    if args.runs_per_gpu < 1:
        raise StudyError(f"--runs-per-gpu must be at least 1 (runs sharing one GPU), got {args.runs_per_gpu}")
    if args.runs_per_gpu > 1 and (args.jobs or 1) < 2:
        raise StudyError(
            f"--runs-per-gpu {args.runs_per_gpu} shares a GPU between runs that train at once: give --jobs N too "
            f"(up to GPUs x {args.runs_per_gpu})"
        )
    if args.runs_per_gpu > 1 and args.slurm:
        raise StudyError(
            "--runs-per-gpu places runs on this machine's GPUs; a SLURM array task gets its own: drop one of them"
        )
    if args.jobs is None:
        return
    if args.jobs < 1:
        raise StudyError(f"--jobs must be at least 1 (runs at once), got {args.jobs}")
    if args.collect:
        raise StudyError("--jobs sets how many runs train at once; --collect trains nothing: drop one of them")
    if args.show_output and args.jobs > 1 and not args.dry_run and not args.slurm:
        raise StudyError(
            f"--show-output streams one run's output here; with --jobs {args.jobs} each run writes its own log "
            "under <study>/sweep_logs/: drop --show-output (or use --jobs 1)"
        )


def print_slots(slots: list[Slot]) -> None:
    """``--dry-run --jobs N``: where the runs would go, and the environment each would get."""
    print(f"--jobs {len(slots)}: {len(slots)} runs at once, each started when a slot is free:")
    for slot in slots:
        gpu = f"CUDA_VISIBLE_DEVICES={slot.gpu} " if slot.gpu is not None else ""
        cpus = f"pinned to CPUs {cpu_ranges(slot.cpus)}" if CAN_PIN else "(this system cannot pin CPUs)"
        print(f"  slot {slot.index + 1}: {gpu}OMP_NUM_THREADS={slot.threads}, {cpus}")

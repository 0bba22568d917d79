"""Where the runs of a parallel sweep (``python -m src.sweep STUDY --jobs N``) run: one *slot* per run at once.

With GPUs, a slot is one GPU: its child sees only that device (``CUDA_VISIBLE_DEVICES=<id>``), so the
run configs' ``trainer.devices: 1`` (or ``auto``) means *that* GPU. By default two runs never share one:
more jobs than GPUs are capped to one per GPU, with a notice. ``--runs-per-gpu K`` gives each GPU K slots:
a small network (a CIFAR ResNet) leaves a large GPU mostly idle, waiting on the host between kernels, and
K processes keep it busier (each run its own process, record and checkpoints, as alone; their memory adds up).

Without GPUs, a slot is a share of the CPUs. Every child is pinned to its own CPUs (its affinity), so
everything that counts CPUs from the affinity -- ``src.machine.available_cpus`` for the loader
workers, OpenMP's default thread count -- sees its share, not the whole machine; ``OMP_NUM_THREADS``
says the same to libraries that do not look at the affinity (and on systems that cannot pin). Left
unsplit, N runs would each start one thread per CPU and N loader pools, and the oversubscribed
machine would run them slower together than one at a time. More jobs than CPUs are capped to one
CPU each, with a notice.

GPU slots get a CPU share too: their loaders run on the CPUs. To split only the CPUs of a machine
with GPUs (CPU runs there), hide the GPUs: ``CUDA_VISIBLE_DEVICES= python -m src.sweep ... --jobs N``.

Pure functions (no torch, no process state) so the assignment can be tested without GPUs;
``pinned`` is the one piece that touches the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

CAN_PIN = hasattr(os, "sched_setaffinity")


@dataclass(frozen=True)
class Slot:
    """One run at a time: a GPU (or none) and the CPUs its process and loader workers may use."""

    index: int
    gpu: str | None  # an entry of the parent's CUDA_VISIBLE_DEVICES (an index, a UUID or a MIG id)
    cpus: tuple[int, ...]

    @property
    def threads(self) -> int:
        return len(self.cpus)

    def describe(self) -> str:
        """``GPU 1, 4 CPUs`` / ``CPUs 2-3``: what the sweep prints when it starts a run here."""
        where = f"CPU {self.cpus[0]}" if self.threads == 1 else f"CPUs {cpu_ranges(self.cpus)}"
        return f"GPU {self.gpu}, {where}" if self.gpu is not None else where

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: ``base`` with this slot's GPU and thread count.

        A smaller ``OMP_NUM_THREADS`` the user set is kept (they asked for fewer); a larger one is
        cut to the slot's CPUs.
        """
        env = dict(base)
        threads = self.threads
        current = env.get("OMP_NUM_THREADS", "")
        if current.isdigit() and 0 < int(current) < threads:
            threads = int(current)
        env["OMP_NUM_THREADS"] = str(threads)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        return env


def cpu_ranges(cpus: tuple[int, ...] | list[int]) -> str:
    """``0-3,8,10-11``: a CPU list as ``taskset`` and ``/proc`` write it."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in spans)


def visible_gpus(env: Mapping[str, str], device_count: int) -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``device_count`` is what CUDA sees (``torch.cuda.device_count()``, which already applies the
    variable). With the variable set, its entries are the ids to hand on -- the child must get the
    *parent's* name of the device (``CUDA_VISIBLE_DEVICES=4,5`` gives children ``4`` and ``5``, not
    ``0`` and ``1``); CUDA stops at the first invalid entry, so only the first ``device_count`` count.
    """
    if device_count <= 0:
        return []
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(device_count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:device_count]


def split_cpus(cpus: list[int], parts: int) -> list[tuple[int, ...]]:
    """``cpus`` cut into ``parts`` contiguous groups, as even as can be (the first ones get the remainder)."""
    size, extra = divmod(len(cpus), parts)
    groups, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        groups.append(tuple(cpus[start:end]))
        start = end
    return groups


def assign_slots(jobs: int, gpus: list[str], cpus: list[int], per_gpu: int = 1) -> tuple[list[Slot], str | None]:
    """``jobs`` slots over ``gpus`` (``per_gpu`` each) or, without GPUs, over ``cpus``; and a notice if capped.

    ``jobs`` and ``per_gpu`` must be >= 1 (the command line checks). The slots never outnumber the GPUs times
    ``per_gpu`` (with GPUs) or the CPUs (without): the notice says how many run at once instead and why. Slots
    take the GPUs in turn (slot i: GPU i mod n), so fewer runs than places still spread over every GPU.
    """
    if jobs < 1 or per_gpu < 1:
        raise ValueError(f"--jobs and --runs-per-gpu must be at least 1, got {jobs} and {per_gpu}")
    cpus = sorted(cpus) or [0]
    notice = None
    if gpus:
        count = min(jobs, len(gpus) * per_gpu)
        if count < jobs:
            each = "one per GPU" if per_gpu == 1 else f"{per_gpu} per GPU (--runs-per-gpu)"
            notice = (
                f"--jobs {jobs}: only {len(gpus)} GPU(s) visible ({','.join(gpus)}); running {count} at once, {each}"
            )
        groups = split_cpus(cpus, count) if len(cpus) >= count else [tuple(cpus)] * count
        return [Slot(index, gpus[index % len(gpus)], group) for index, group in enumerate(groups)], notice
    count = min(jobs, len(cpus))
    if count < jobs:
        notice = f"--jobs {jobs}: only {len(cpus)} CPU(s) to share; running {count} at once, one CPU each"
    return [Slot(index, None, group) for index, group in enumerate(split_cpus(cpus, count))], notice


def usable_cpus(available: int) -> list[int]:
    """The CPUs to split: the affinity's first ``available`` (``available_cpus()``, which a cgroup quota caps)."""
    if CAN_PIN:
        return sorted(os.sched_getaffinity(0))[: max(1, available)]
    return list(range(max(1, available)))


@contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """Pin this thread to ``cpus`` while a child is started, so the child inherits the affinity from birth.

    Affinity is per thread and copied at fork; pinning the parent briefly (rather than the child
    after it started) leaves no moment in which the child's first threads land on other CPUs. A
    no-op where the system cannot pin.
    """
    if not CAN_PIN or not cpus:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)

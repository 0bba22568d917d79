"""What this machine offers a run: the CPUs it may use, the CPU's model and the flags that decide its bf16 speed.

One home for the machine's facts: the data loaders size their workers by ``available_cpus``, the sweep splits
CPUs among its jobs by it, and every run's provenance records ``cpu_model`` and ``cpu_features`` (machines of
one model name differ ~5x in bf16 speed, with and without AMX). Standard library only.
"""

from __future__ import annotations

import os
import platform


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by a cgroup CPU quota (containers, some schedulers), or None when unlimited/unknown."""
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as quota_file:
            quota_us = int(quota_file.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as period_file:
            period_us = int(period_file.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup quota (``os.cpu_count`` sees neither)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


SPEED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # what decides bf16 speed on a CPU


def cpu_features() -> list[str] | None:
    """The CPU flags among ``SPEED_FLAGS`` (Linux ``/proc/cpuinfo``): two CPUs of one model name can differ ~5x
    in bf16 speed (with and without AMX), so timings cite these too; ``None`` where unknown."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags") and ":" in line:
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in SPEED_FLAGS if flag in present]
    except OSError:
        pass
    return None

"""The runs a study expands to, in the order the sweep trains them (a variant's selection runs first).

The study file and its checks live in ``src.sweeping.study``; choosing a selected setting from its selection
runs lives in ``src.sweeping.selection``, which this module applies to the planned runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from src.sweeping.pruned_nets import pruned_overrides, start_dir
from src.sweeping.selection import with_selection, write_selection
from src.sweeping.study import SHORTCUT_KEY, RunSpec, Study, claim_folder, key_labels, name_part


def is_plain(arch: str) -> bool:
    from src.models import parse_arch  # imports torch: only when a study is planned, not for --help

    return not parse_arch(arch)[1]


def plan_runs(study: Study, results_only: bool = False) -> list[RunSpec]:
    """Every run of the study, in launch order: arch, then grid combination, then seed.

    With a ``select`` block, its selection runs come first and every other run carries its variant's chosen
    values, or is ``pending`` (``src.sweeping.selection``; ``results_only``: chosen from committed runs only).
    A pruned entry's runs (``src.sweeping.pruned_nets``) carry ``after``: the parent run each starts from.
    """
    keys = list(study.grid)
    labels = key_labels(keys)
    runs: list[RunSpec] = []
    seen: dict[str, tuple] = {}  # folder -> the settings that name it
    for arch in study.arch_names():
        if arch in study.pruned:  # its seeds start from its parent's runs (no grid: Study.validate)
            spec = study.pruned[arch]
            for seed in study.seeds_of(arch):
                overrides = pruned_overrides(study.directory, spec, seed)
                run_dir = study.directory / arch / f"seed{seed}"
                after = start_dir(study.directory, spec, seed)
                runs.append(RunSpec(study.name, arch, spec["from"], seed, overrides, run_dir, after=after))
            continue
        for values in itertools.product(*(study.grid[key] for key in keys)):
            combo = list(zip(keys, values))
            if arch in study.nets or is_plain(arch):  # no shortcut option: run once, named without it
                combo = [(k, v) for k, v in combo if k != SHORTCUT_KEY]
            variant = "-".join([arch, *(f"{labels[k]}{name_part(v)}" for k, v in combo)])
            if not claim_folder(seen, variant, combo, dict(combo), "grid values"):
                continue  # a plain net's second shortcut value: the same run
            for seed in study.seeds_of(arch):
                run_dir = study.directory / variant / f"seed{seed}"
                runs.append(RunSpec(study.name, variant, arch, seed, tuple(combo), run_dir))
    if study.select is None:
        return runs
    return with_selection(study, runs, results_only)


def write_study_selection(study: Study) -> list[Path]:
    """Write ``selection.json`` for the whole study, also when the sweep was narrowed to some archs or seeds."""
    whole = study.whole or study
    return write_selection(whole, plan_runs(whole))

"""A pruned network in a study: an ``archs`` entry whose runs start, seed by seed, from another entry's runs.

    archs:
      - resnet20
      - resnet56
      - {name: resnet56-p20, prune: resnet56, pruning: {params: 269722}, args: {trainer.max_steps: 0}}
      - {name: resnet56-p20-ft, prune: resnet56, pruning: {params: 269722},
         args: {trainer.max_steps: 352, model.optimizer.init_args.lr: 0.01,
                model.lr_scheduler.init_args.warmup_steps: 0}}

Seed ``k`` of ``resnet56-p20`` is ``fit --model.arch resnet56 --model.init_from <study>/resnet56/seed<k>
--model.pruning {params: 269722}`` plus the entry's ``args`` (after the study's): the parent's seed-``k`` network,
pruned by magnitude to exactly ResNet-20's parameter count, BN re-estimated, then trained for
``trainer.max_steps`` steps with the zeros held (0: scored as it is) -- ``src.modules.pruning``. So a pruned net is
a run like every dense one: its own folder, ``efficiency.json`` (with ``pruning`` and ``init_from``), the test split
scored once at the end, results exported and reported under its name.

Why ``trainer.max_steps`` must be given: the study's ``args`` (e.g. ``trainer.max_epochs: 16``) would otherwise train
the pruned net for a whole training budget; a fine-tune is a budget of its own, stated where the entry is.
A pruned entry's runs wait for their parent's (the sweep holds one back until its parent finished), take no part
in the study's ``select`` (their settings are the entry's), and its seeds are some of its parent's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from src.modules.start_weights import resolve_start
from src.runs import RunError, run_status

PRUNED_KEYS = ("name", "prune", "pruning", "args")
EXAMPLE = "{name: resnet56-p20, prune: resnet56, pruning: {params: 269722}, args: {trainer.max_steps: 0}}"
BUDGET_KEY = "trainer.max_steps"


def is_pruned_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and "prune" in entry


def parse_pruned(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, {"from": parent, "pruning": {...}, "args": {...}})``; ``ValueError`` naming what to write instead."""
    unknown = sorted(set(entry) - set(PRUNED_KEYS))
    if unknown:
        raise ValueError(f"a pruned 'archs' entry has unknown keys {unknown}; it is {EXAMPLE}")
    name, parent, pruning, args = entry.get("name"), entry.get("prune"), entry.get("pruning"), entry.get("args")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.+-]+", name):
        raise ValueError(f"a pruned entry's 'name' must be a folder name (letters, digits, _ . + -), got {name!r}")
    if not isinstance(parent, str) or not parent:
        raise ValueError(
            f"{name}: 'prune' names the entry of this study it starts from (e.g. resnet56), got {parent!r}"
        )
    if not isinstance(pruning, dict) or not pruning:
        raise ValueError(f"{name}: 'pruning' is model.pruning, e.g. {{params: 269722}} or {{sparsity: 0.7}}")
    if not isinstance(args, dict) or BUDGET_KEY not in args:
        raise ValueError(
            f"{name}: 'args' must state {BUDGET_KEY} -- 0 to score the pruned net as it is, N to train it N steps "
            f"(the study's own budget would retrain it from the start's length): {EXAMPLE}"
        )
    return name, {"from": parent, "pruning": dict(pruning), "args": dict(args)}


def start_dir(directory: Path, spec: dict[str, Any], seed: int) -> Path:
    """The parent run a pruned entry's seed starts from: ``<study>/<parent>/seed<k>``."""
    return directory / spec["from"] / f"seed{seed}"


def pruned_overrides(directory: Path, spec: dict[str, Any], seed: int) -> tuple[tuple[str, Any], ...]:
    """The settings a pruned entry's run gets: where it starts, how it is pruned, its own args (after the study's)."""
    return (
        ("model.init_from", str(start_dir(directory, spec, seed))),
        ("model.pruning", spec["pruning"]),
        *spec["args"].items(),
    )


def waits_for(after: Path) -> str | None:
    """Why a pruned entry's run cannot start yet (its parent run ``after`` is not a finished run with a checkpoint
    here), or ``None`` when it can."""
    if not after.is_dir():
        return f"its parent run {after} has not run yet"
    status = run_status(after)
    if status != "finished":
        return f"its parent run {after} is {status}, not finished"
    try:
        resolve_start(str(after))  # the checkpoint the pruned run will start from: the same choice, one home
    except RunError:
        return (
            f"its parent run {after} has no checkpoint on this machine (checkpoints stay out of git: a run "
            "finished elsewhere must be trained here too, or its checkpoints copied)"
        )
    return None

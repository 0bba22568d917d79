"""A unit: what is made in one sitting (a variant's selection runs, or a dense run with every pruned run that
starts from its checkpoint), and how long what is left of one will take."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from scripts.study_driver.checkouts import DriverError
from src.sweeping.plan import plan_runs
from src.sweeping.study import RunSpec, Study

OVERHEAD_S = 150  # seconds per run beyond its steps: start, data, test on 10k images, validation


ETA_LINE = re.compile(r"^\[train\] .*?step (\d+)/(\d+) .*? eta (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


@dataclass
class Unit:
    """What is made in one sitting: a variant's selection runs (``selects``), or a dense run with every pruned run
    that starts from its checkpoint."""

    main: RunSpec  # the dense run; for a selection unit, the variant's first selection run
    runs: list[RunSpec] = field(default_factory=list)  # in the sweep's order
    selects: str | None = None  # a selection unit: the variant whose settings its runs choose

    @property
    def label(self) -> str:
        if self.selects is not None:
            return f"{self.selects}'s {len(self.runs)} selection runs"
        children = sum(1 for run in self.runs if run.after is not None)
        return self.main.label + (f" (+ {children} pruned runs)" if children else "")

    def sweep_args(self) -> list[str]:
        """``--arch`` / ``--seed`` / ``--selection-only``: the sweep then plans exactly this unit's runs."""
        if self.selects is not None:
            return ["--arch", self.selects, "--selection-only"]
        names = [self.main.variant] + sorted({run.variant for run in self.runs if run.after is not None})
        return ["--arch", *names, "--seed", str(self.main.seed)]


def plan_units(study: Study) -> list[Unit]:
    """The study's runs as units, in the sweep's order: a variant's selection unit just before its dense units."""
    units: list[Unit] = []
    dense: dict[Path, Unit] = {}
    for run in plan_runs(study):
        if run.selects is not None:
            if not units or units[-1].selects != run.selects:
                units.append(Unit(run, selects=run.selects))
            units[-1].runs.append(run)
        elif run.after is None:
            dense[run.run_dir] = Unit(run, [run])
            units.append(dense[run.run_dir])
        elif run.after in dense:
            dense[run.after].runs.append(run)
        else:
            raise DriverError(f"{run.label} starts from {run.after}, which is no dense run planned before it")
    return units


def selection_of(units: list[Unit], unit: Unit) -> Unit | None:
    """The selection unit that chooses ``unit``'s settings, if the study selects."""
    return next((other for other in units if other.selects == unit.main.variant), None)


def run_steps(study: Study, run: RunSpec, steps_per_epoch: float) -> float:
    """The optimizer steps a run takes: its ``trainer.max_steps`` (0 for a pruned net scored as it is), else its
    ``trainer.max_epochs`` x ``steps_per_epoch`` (the study's settings, then the run's own, the last one wins)."""
    settings = dict([*study.args.items(), *run.overrides])
    max_steps = settings.get("trainer.max_steps")
    if isinstance(max_steps, int) and max_steps >= 0:
        return float(max_steps)
    epochs = settings.get("trainer.max_epochs")
    if not isinstance(epochs, int):
        raise DriverError(f"{run.label}: neither trainer.max_steps nor trainer.max_epochs is set in the study")
    return epochs * steps_per_epoch


def eta_of(log: Path, offset: int = 0) -> tuple[int, int, int] | None:
    """``(step, total steps, eta seconds)`` of the newest progress line of a run's log after byte ``offset``."""
    if not log.is_file():
        return None
    found = None
    with open(log, errors="replace") as handle:
        handle.seek(offset)
        for line in handle:
            match = ETA_LINE.search(line)
            if match:
                step, total, days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
                found = (step, total, ((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return found


def unit_seconds(study: Study, unit: Unit, first: RunSpec, progress: tuple[int, int, int]) -> float:
    """What is left of ``unit`` once ``first`` (running now) is at ``progress``: its ETA, and the rest of the unit's
    steps at the same rate (every run of a unit is one architecture: masked weights still cost a dense kernel), plus
    ``OVERHEAD_S`` a run."""
    step, total, eta = progress
    rate = eta / max(total - step, 1)
    epochs = dict([*study.args.items(), *first.overrides]).get("trainer.max_epochs")
    steps_per_epoch = total / epochs if isinstance(epochs, int) and epochs > 0 else 0.0
    later = unit.runs[unit.runs.index(first) + 1 :]
    return eta + OVERHEAD_S + sum(rate * run_steps(study, run, steps_per_epoch) + OVERHEAD_S for run in later)


def log_name(run: RunSpec) -> str:
    return f"{run.variant.replace('/', '_')}_seed{run.seed}.log"

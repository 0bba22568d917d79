"""Per-variant selection of the learning rate (or any setting) on the validation split, before the seeds.

Why: one learning rate favours the shape it was tuned on, so a width x depth study run at ResNet-20's
learning rate compares shapes *and* how well each suits that rate. A study may name a small grid instead;
every variant then gets its own value, picked on the validation split, and only then are its seeds trained::

    select:
      grid:                                    # the candidates: every combination is tried
        model.optimizer.init_args.lr: [0.05, 0.1, 0.2, 0.4]
        model.optimizer.init_args.weight_decay: [1.0e-4, 5.0e-4]   # optional, "if asked"
      seeds: [0]                               # the selection runs' seeds (default: the study's first)
      metric: best_val_acc                     # or last_val_acc (efficiency.json); higher is better
      args: {trainer.max_epochs: 8}            # optional: the selection runs' budget (default: the study's)

Plan (``plan_runs``): each variant's selection runs come just before its seeds, one per candidate x
selection seed, in ``<root>/<study>/select/<variant>-<label><value>.../seed<k>/`` (results:
``<results>/select/...``); the seeds train at the variant's chosen values (a long study on one machine
finishes variant after variant). The choice is a pure function of the selection runs,
recomputed whenever the study is planned: once all of a variant's selection runs ended (finished or
diverged), the candidate with the highest mean ``metric`` over the selection seeds wins; a candidate with
a diverged seed is out; a tie goes to the first candidate in grid order. Until then the variant's runs are
*pending*: the sweep holds them back and says why. The held-out test split plays no part: the selection
runs are tested at their end like any run, and that accuracy is never read here.

The sweep writes the choice and every candidate's numbers to ``selection.json`` (in the study folder and
the results folder); the report renders it and leaves the selected keys out of what names a variant (the
variants' values differ by design, not as a grid axis); ``python -m src.report --check`` verifies that the
committed ``selection.json`` is what the committed selection runs give.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from src.files import atomic_write
from src.runs import read_json
from src.sweeping.study import (
    SELECT_DIR,
    SELECTION_FILE,
    RunSpec,
    Selection,
    Study,
    claim_folder,
    key_labels,
    name_part,
    parse_selection,
)
from src.sweeping.study_state import current_state, results_state


def selection_runs(study: Study, selection: Selection, finals: list[RunSpec]) -> list[RunSpec]:
    """The selection runs of every variant in ``finals``: variant x candidate x selection seed."""
    labels = key_labels(list(selection.grid))
    runs = []
    seen: dict[str, tuple] = {}  # folder -> the variant and candidate that name it
    for final in {run.variant: run for run in finals if run.after is None}.values():
        for candidate in selection.candidates():
            name = "-".join([final.variant, *(f"{labels[k]}{name_part(v)}" for k, v in candidate)])
            variant = f"{SELECT_DIR}/{name}"
            claim_folder(seen, variant, (final.variant, candidate), dict(candidate), "select values")
            overrides = (*final.overrides, *selection.args.items(), *candidate)  # the candidate last: choices()
            for seed in selection.seeds:
                run_dir = study.directory / variant / f"seed{seed}"
                runs.append(RunSpec(study.name, variant, final.arch, seed, overrides, run_dir, selects=final.variant))
    return runs


@dataclass
class Candidate:
    """One candidate of one variant: its values and what each selection seed reached."""

    values: dict[str, Any]
    scores: dict[int, float | None]  # seed -> metric (None: diverged, or no validation recorded)
    ended: bool  # every seed's run ended (finished or diverged)

    @property
    def mean(self) -> float | None:
        """The mean over seeds; None when a seed diverged or recorded no metric (the candidate is out)."""
        values = list(self.scores.values())
        if not self.ended or not values or any(v is None or not math.isfinite(v) for v in values):
            return None
        return sum(v for v in values if v is not None) / len(values)


@dataclass
class Choice:
    """A variant's selection: its candidates and, once they all ended, the winner (None: pending or none)."""

    variant: str
    candidates: list[Candidate]

    @property
    def complete(self) -> bool:
        return all(candidate.ended for candidate in self.candidates)

    @property
    def chosen(self) -> Candidate | None:
        if not self.complete:
            return None
        scored = [c for c in self.candidates if c.mean is not None]
        return max(scored, key=lambda c: c.mean or 0.0) if scored else None  # max keeps the first of a tie


def _ended_metric(study: Study, run: RunSpec, metric: str, results_only: bool) -> tuple[bool, float | None]:
    """Whether the selection run ended, and its validation metric (None if it diverged or recorded none)."""
    state = results_state(study, run, None) if results_only else current_state(study, run, None)
    if state is None or state.status not in ("finished", "diverged"):
        return False, None
    if state.status == "diverged":
        return True, None
    value = (state.report or {}).get(metric)
    return True, float(value) if isinstance(value, (int, float)) else None


def choices(study: Study, selection: Selection, runs: list[RunSpec], results_only: bool = False) -> list[Choice]:
    """Each variant's candidates and choice from its selection runs (``results_only``: the committed ones)."""
    by_variant: dict[str, dict[tuple, Candidate]] = {}
    for run in runs:
        if run.selects is None:
            continue
        candidate_values = dict(run.overrides[-len(selection.grid) :])
        key = tuple(json.dumps(candidate_values[k], sort_keys=True) for k in selection.grid)
        candidates = by_variant.setdefault(run.selects, {})
        candidate = candidates.setdefault(key, Candidate(candidate_values, {}, True))
        ended, score = _ended_metric(study, run, selection.metric, results_only)
        candidate.scores[run.seed] = score
        candidate.ended = candidate.ended and ended
    return [Choice(variant, list(candidates.values())) for variant, candidates in by_variant.items()]


def with_selection(study: Study, finals: list[RunSpec], results_only: bool = False) -> list[RunSpec]:
    """Per variant its selection runs, then its runs in ``finals`` at the chosen values (``pending`` until then)."""
    selection = parse_selection(study)
    if selection is None:
        return finals
    selecting = selection_runs(study, selection, finals)
    chosen = {choice.variant: choice.chosen for choice in choices(study, selection, selecting, results_only)}
    planned: list[RunSpec] = []
    started: set[str] = set()
    for run in finals:
        if run.after is not None:  # a pruned entry's run: its settings are the entry's, nothing is selected for it
            planned.append(run)
            continue
        if run.variant not in started:  # a variant's selection runs, then its seeds
            started.add(run.variant)
            planned += [other for other in selecting if other.selects == run.variant]
        winner = chosen.get(run.variant)
        if winner is None:
            planned.append(replace(run, pending=True))
        else:
            planned.append(replace(run, overrides=(*run.overrides, *winner.values.items())))
    return planned


def summary(study: Study, runs: list[RunSpec], results_only: bool = False) -> dict[str, Any] | None:
    """What ``selection.json`` holds: the rule, and per variant every candidate's scores and the choice."""
    selection = parse_selection(study)
    if selection is None:
        return None
    variants = []
    for choice in choices(study, selection, runs, results_only):
        winner = choice.chosen
        variants.append(
            {
                "variant": choice.variant,
                "status": "chosen" if winner else ("no candidate finished" if choice.complete else "pending"),
                "chosen": winner.values if winner else None,
                "candidates": [
                    {
                        "values": c.values,
                        "scores": {str(seed): score for seed, score in sorted(c.scores.items())},
                        "mean": c.mean,
                        "ended": c.ended,
                    }
                    for c in choice.candidates
                ],
            }
        )
    return {
        "study": study.name,
        "grid": selection.grid,
        "seeds": selection.seeds,
        "metric": selection.metric,
        "args": selection.args,
        "rule": "highest mean validation metric over the selection seeds; a candidate with a diverged seed is out; "
        "ties go to the first candidate in grid order; the test split is not read",
        "variants": variants,
    }


def write_selection(study: Study, runs: list[RunSpec]) -> list[Path]:
    """Write ``selection.json`` into the study folder (and the results folder) when its content changed."""
    data = summary(study, runs)
    if data is None:
        return []
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    written = []
    folders = [study.directory, *([Path(study.results)] if study.results else [])]
    for folder in folders:
        target = folder / SELECTION_FILE
        if target.is_file() and target.read_text() == text:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda handle: handle.write(text), binary=False)  # a reader never sees half a file
        written.append(target)
    return written


def read_selection(folder: str | Path) -> dict[str, Any] | None:
    """A folder's ``selection.json`` (None if absent or unreadable)."""
    return read_json(Path(folder) / SELECTION_FILE)

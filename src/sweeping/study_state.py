"""What each planned run of a study is now, and clearing the way before a sweep starts.

A run's state comes from the study's committed results folder first (a result there is final: finished,
diverged or stale), else from its log directory (``src.sweeping.run_state.assess``). Stale runs (made with
another config than the study plans now) stop the sweep unless ``--rerun-stale``; what is run again is
moved aside, never deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

from src.runs import RunBusy, RunLock, network_params
from src.sweeping.run_state import RunState, assess, move_aside
from src.sweeping.study import RunSpec, Study, StudyError, run_command


def result_line(report: dict | None) -> str:
    if not report:
        return "no efficiency.json"
    parts = []
    if report.get("test_acc") is not None:
        parts.append(f"test_acc {report['test_acc']:.4f}")
    if report.get("best_val_acc") is not None:
        parts.append(f"best val_acc {report['best_val_acc']:.4f}")
    params = network_params(report)
    if params is not None:
        pruned = params != report.get("params_total")  # a pruned net: the size it kept
        parts.append(f"{params:,} params" + (f" (pruned from {report.get('params_total'):,})" if pruned else ""))
    if report.get("macs_per_sample"):
        parts.append(f"{report['macs_per_sample'] / 1e6:.2f}M MACs")
    return ", ".join(parts) or "no results recorded"


def planned_configs(study: Study, runs: list[RunSpec]) -> dict[Path, dict]:
    """The config each run's command resolves to now (parsed in this process, nothing built), by run directory.

    Only runs that already have a directory need one (to tell a stale run); parsing is cheap once
    the CLI is imported.
    """

    def exists(run: RunSpec) -> bool:
        results = study.results_dir(run)
        return run.run_dir.is_dir() or (results is not None and results.is_dir())

    # A pending run's command lacks its selected values: nothing to compare against yet.
    existing = [run for run in runs if exists(run) and not run.pending]
    if not existing:
        return {}
    # lightning and the models: imported only when a run exists
    from src.cli_support.lightning_cli import resolved_config

    return {run.run_dir: resolved_config(run_command(study, run)[3:]) for run in existing}


def planned_config(study: Study, run: RunSpec, planned: dict[Path, dict]) -> dict | None:
    """``run``'s entry of ``planned`` (:func:`planned_configs`), parsed now when its folder appeared since.

    A sweep parses the configs of the runs that exist when it starts; a run that another sweep (or a user)
    put in place while this one ran had none to be compared with, and was skipped as finished whatever
    config it was made with (an audit: a run made with other settings, moved in mid-sweep, was skipped and
    would have been exported). Cached in ``planned``.
    """
    if run.run_dir not in planned:
        planned.update(planned_configs(study, [run]))
    return planned.get(run.run_dir)


def results_state(study: Study, run: RunSpec, planned: dict | None) -> RunState | None:
    """The run's state from the study's results folder: finished / diverged / stale there, else None."""
    target = study.results_dir(run)
    if target is None or not target.is_dir():
        return None
    state = assess(target, planned)
    if state.status not in ("finished", "diverged", "stale"):
        return None  # a results folder without a fit record: not a result
    state.in_results = True
    return state


def current_state(study: Study, run: RunSpec, planned: dict | None) -> RunState:
    """A matching committed result first (finished / diverged / stale there), else the log directory's state."""
    return results_state(study, run, planned) or assess(run.run_dir, planned)


def assess_runs(study: Study, runs: list[RunSpec]) -> list[RunState]:
    planned = planned_configs(study, runs)
    return [current_state(study, run, planned.get(run.run_dir)) for run in runs]


def state_line(state: RunState) -> str:
    where = " (in results)" if state.in_results else ""
    if state.status == "finished":
        return f"finished{where}, skip ({result_line(state.report)})"
    if state.status == "diverged":
        return f"DIVERGED{where} {state.detail}; skip (--retry-diverged moves it aside and starts it again)"
    if state.status == "stale":
        what = "the results run was made" if state.in_results else "made"
        return f"STALE: {what} with another config ({state.detail}); --rerun-stale moves it aside and runs it again"
    return ""


def clear_the_way(study: Study, runs: list[RunSpec], rerun_stale: bool, retry_diverged: bool) -> list[RunState]:
    """Refuse a study with stale runs (unless ``rerun_stale``); move aside what is to be run again."""
    states = assess_runs(study, runs)
    stale = [(run, state) for run, state in zip(runs, states) if state.status == "stale"]
    if stale and not rerun_stale:
        for run, state in stale:
            print(f"{run.label}: {state_line(state)}", file=sys.stderr)
        raise StudyError(
            f"{len(stale)} run(s) of study {study.name!r} were made with another config than planned now; "
            "rerun them with --rerun-stale (the old runs are moved aside, not deleted) or give the study a new --name"
        )
    moving = {"stale"} | ({"diverged"} if retry_diverged else set())
    planned = planned_configs(study, runs) if any(state.in_results for state in states) else {}
    for index, (run, state) in enumerate(zip(runs, states)):
        if state.status not in moving:
            continue
        if state.in_results:  # the committed result goes aside (never deleted); then the log run is looked at
            # In results: the study has a results folder, hence this run a results_dir.
            target = move_aside(cast(Path, study.results_dir(run)), cast(str, study.results))
            print(f"{run.label}: {state.status} in results, moved aside to {target}", flush=True)
            state = states[index] = assess(run.run_dir, planned.get(run.run_dir))
            if state.status not in moving:
                continue
        try:
            with RunLock(run.run_dir).acquire(role="src.sweep (moving the run aside)"):
                target = move_aside(run.run_dir, study.directory)
        except RunBusy as busy:
            print(f"{run.label}: not moved aside: {busy}", flush=True)
            continue
        print(f"{run.label}: {state.status}, moved aside to {target}", flush=True)
        states[index] = RunState("missing")
    return states

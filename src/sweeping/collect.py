"""``sweep --collect``: copy every run of a study that ended into its results folder, training nothing.

A run made with another config than planned (stale) is not copied, nor is a run whose variant's selection has not
chosen yet (pending: nothing to check it against); a results run that already holds other files is a conflict,
reported, never overwritten. The selection file is rewritten from what is there, unless a selection run is stale.
"""

from __future__ import annotations

import sys
from typing import cast

from src.sweeping.plan import write_study_selection
from src.sweeping.results import ResultsConflict, export
from src.sweeping.run_state import assess
from src.sweeping.study import RunSpec, Study, StudyError
from src.sweeping.study_state import planned_configs, results_state, state_line


def collect(study: Study, runs: list[RunSpec]) -> int:
    """``--collect``: copy every run that ended (finished or diverged) into the results folder; trains nothing."""
    if not study.results:
        raise StudyError(
            f"study {study.name!r} has no 'results' folder to collect into: add e.g. "
            f"`results: docs/results/{study.name}` to the study file"
        )
    planned = planned_configs(study, runs)
    copied, conflicts, stale_selection = 0, 0, 0
    for index, run in enumerate(runs, 1):
        prefix = f"[{index}/{len(runs)}] {run.label}"
        if run.pending:  # its planned config waits for the choice: nothing to check it against (an audit)
            print(f"{prefix}: not copied: pending (its variant's selection has no choice yet)", flush=True)
            continue
        state = assess(run.run_dir, planned.get(run.run_dir))
        if state.status == "stale":
            print(f"{prefix}: not copied: made with another config than planned ({state.detail})", flush=True)
            stale_selection += run.selects is not None
            continue
        if state.status not in ("finished", "diverged"):
            held = results_state(study, run, planned.get(run.run_dir))
            note = f"; {state_line(held)}" if held else ""
            print(f"{prefix}: nothing to copy ({state.status} in {study.directory}){note}", flush=True)
            continue
        try:
            line = cast(str, export(study, run))  # a line, not None: the study has a results folder (checked above)
        except ResultsConflict as conflict:
            conflicts += 1
            print(f"{prefix}: NOT COPIED: {conflict}", file=sys.stderr, flush=True)
            continue
        copied += line.startswith("copied")
        print(f"{prefix}: {state.status}, {line}", flush=True)
    if stale_selection:
        # selection.json would report a choice scored by runs made with another config (an audit: selection runs
        # of max_steps 2 chose the lr of a study now planned at 3, and the file said it was chosen at 3).
        print(
            f"selection file NOT written: {stale_selection} selection run(s) were made with another config than "
            "planned; run the sweep with --rerun-stale to train them again, then --collect",
            file=sys.stderr,
            flush=True,
        )
    else:
        for path in write_study_selection(study):
            print(f"wrote {path}", flush=True)
    print(f"{copied} run(s) copied into {study.results}/; commit them (git add {study.results})", flush=True)
    return 1 if conflicts or stale_selection else 0

"""A SLURM array script for a study: one array task per run, plain ``sbatch --array``.

The study file's ``slurm:`` section sets the resources; everything in ``sbatch`` becomes an
``#SBATCH --key=value`` line::

    slurm:
      sbatch: {partition: gpu, gres: "gpu:1", cpus-per-task: 8, time: "12:00:00", mem: 32G}
      setup: ["module load cuda", "source .venv/bin/activate"]   # run before each task
      srun: false        # true: launch with srun (one process per task, for DDP over several GPUs)
      max_parallel: 8    # at most this many array tasks at once (--array=0-N%8)

For several GPUs per run, ask for them in ``sbatch`` (``gres: "gpu:4"``, ``ntasks-per-node: 4``),
set ``srun: true`` and pass ``trainer.devices: 4`` under the study's ``args``. The script exports
``SRUN_CPUS_PER_TASK`` so that each srun task gets the ``cpus-per-task`` asked of sbatch (Slurm >= 22.05
no longer passes it on by itself).

Each task picks its command from the list by ``SLURM_ARRAY_TASK_ID`` and decides when it starts
(not when the script was written) whether to skip a finished or diverged run, resume one from its
``last.ckpt``, or set aside what an attempt that died before its first checkpoint left (into
``<study>/.replaced/``, as the sweep does; a fit never starts among another fit's files) -- so a requeued or
re-submitted array continues where it stopped. Stale runs (made
with another config) are refused when the script is written (``python -m src.sweep --slurm``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from src.sweeping.pruned_nets import waits_for
from src.sweeping.run_state import MOVED_ASIDE_DIR
from src.sweeping.study import RunSpec, Study, StudyError, check_slurm, format_command, run_command
from src.sweeping.study_state import clear_the_way

DEFAULT_SBATCH: dict[str, Any] = {"nodes": 1, "ntasks-per-node": 1, "gres": "gpu:1", "cpus-per-task": 8}


def render_sbatch(study: Study, runs: list[RunSpec], workdir: str | Path) -> str:
    """The text of the array script for ``runs`` (the runs still to do), run from ``workdir``."""
    if not runs:
        raise ValueError("no runs to put in a SLURM array")
    options = study.slurm or {}
    check_slurm(options)
    sbatch = {**DEFAULT_SBATCH, **(options.get("sbatch") or {})}
    log_dir = study.directory / "sweep_logs"
    sbatch.setdefault("job-name", study.name)
    sbatch.setdefault("output", str(log_dir / "slurm-%A_%a.out"))
    array = f"0-{len(runs) - 1}"
    if options.get("max_parallel"):
        array += f"%{options['max_parallel']}"
    setup = options.get("setup") or []
    setup = [setup] if isinstance(setup, str) else list(setup)
    launcher = "srun " if options.get("srun") else ""

    lines = [
        "#!/bin/bash",
        f"# Study {study.name!r}: {len(runs)} runs, one array task each. Written by python -m src.sweep",
        f"#SBATCH --array={array}",
        *(f"#SBATCH --{key}={value}" for key, value in sbatch.items()),
        "set -euo pipefail",
        f"cd {shlex.quote(str(Path(workdir).resolve()))}",
        f"mkdir -p {shlex.quote(str(log_dir))}",
        *setup,
        "# srun does not inherit --cpus-per-task from sbatch since Slurm 22.05: without this, each srun task",
        "# would be bound to one CPU and the data loaders would get no workers.",
        'if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi',
        "",
        "# set_aside DIR: what an attempt that died before its first checkpoint left (nothing a fit can continue,",
        "# and a new fit never starts among another fit's files) goes to <study>/.replaced/<variant>/<seed>-<n>, as",
        "# python -m src.sweep moves it (src/sweeping/run_state.py, move_attempt_aside), holding the run's lock.",
        "set_aside() {",
        f"    local dir=$1 aside={shlex.quote(str(study.directory / MOVED_ASIDE_DIR))} rel target n=1",
        f"    rel=${{dir#{shlex.quote(str(study.directory))}/}}",
        '    while [ -e "$aside/$rel-$n" ]; do n=$((n + 1)); done',
        '    target="$aside/$rel-$n"',
        '    if ! (flock -n 9 && mkdir -p "$target" &&',
        '          find "$dir" -mindepth 1 -maxdepth 1 ! -name run.lock -exec mv -t "$target" {} +) \\',
        '          9>>"$dir/run.lock"; then',
        '        echo "$dir: in use by another process, or its files could not be moved aside; not started" >&2',
        "        exit 1",
        "    fi",
        '    echo "$dir: the earlier attempt left no checkpoint; its files moved aside to $target"',
        "}",
        "",
        "# run DIR COMMAND...: skip DIR if it diverged or was tested (by its fit: evaluations/ does not count),",
        "# resume it from its newest checkpoint if it has one (--ckpt_path last: a re-submitted array is a new",
        "# SLURM job, which src.cli lets continue a run only when asked to), else set aside what a dead attempt",
        "# left and start it. The run's own run.lock keeps out a second writer.",
        "run() {",
        "    local dir=$1; shift",
        '    if grep -qs \'"status": "diverged"\' "$dir"/efficiency*.json; then',
        '        echo "$dir: DIVERGED, skipped (python -m src.sweep --retry-diverged to start it again)"; exit 0',
        "    fi",
        '    if grep -qsE \'"test_acc": [-0-9]\' "$dir"/efficiency*.json; then',
        '        echo "$dir: finished, skipped"; exit 0',
        "    fi",
        '    if [ -f "$dir/checkpoints/last.ckpt" ] || compgen -G "$dir/hpc_ckpt_*.ckpt" >/dev/null; then',
        '        set -- "$@" --ckpt_path last',
        '    elif [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 ! -name run.lock -print -quit 2>/dev/null)" ]; then',
        '        set_aside "$dir"',
        "    fi",
        f'    exec {launcher}"$@"',
        "}",
        "",
        'case "$SLURM_ARRAY_TASK_ID" in',
    ]
    for index, run in enumerate(runs):
        command = format_command(run_command(study, run, python="python"))
        lines.append(f"    {index}) run {shlex.quote(str(run.run_dir))} {command} ;;")
    lines += [
        '    *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;',
        "esac",
        "",
    ]
    return "\n".join(lines)


def write_slurm(
    study: Study, runs: list[RunSpec], path: str, rerun_stale: bool, retry_diverged: bool, jobs: int | None = None
) -> None:
    """Write the array script; ``jobs`` caps the tasks running at once (the study's ``slurm.max_parallel``)."""
    if jobs is not None:  # the same promise as here: at most N runs at once, each on its own GPU(s)
        study.slurm = {**study.slurm, "max_parallel": jobs}
    states = clear_the_way(study, runs, rerun_stale, retry_diverged)
    todo = [run for run, state in zip(runs, states) if state.status not in ("finished", "diverged")]
    pending = [run for run in todo if run.pending]
    waiting = [run for run in todo if run.after is not None and waits_for(run.after) is not None]
    todo = [run for run in todo if not run.pending and run not in waiting]
    if pending:
        print(
            f"{len(pending)} run(s) wait for their variant's selection and are left out: when the selection runs "
            f"have ended, run the sweep with --collect (or without --slurm), then --slurm again",
            flush=True,
        )
    if waiting:
        print(
            f"{len(waiting)} pruned run(s) wait for their parent runs and are left out (an array task cannot wait for "
            f"another): when those have finished, run the sweep with --slurm again",
            flush=True,
        )
    if not todo:
        print(f"study {study.name!r}: all {len(runs)} runs are finished or diverged; no SLURM script written")
        return
    target = Path(path)
    if target.exists():
        raise StudyError(f"{path!r} exists; choose another file name (the sweep never overwrites a file)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_sbatch(study, todo, Path.cwd()))
    counts = {status: sum(state.status == status for state in states) for status in ("finished", "diverged")}
    left_out = " and ".join(f"{count} {status}" for status, count in counts.items() if count)
    note = f" ({left_out} runs left out)" if left_out else ""
    print(f"wrote {path}: {len(todo)} array tasks{note}. Submit with: sbatch {path}")

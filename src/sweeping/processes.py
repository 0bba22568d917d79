"""The sweep's runs as processes: each started in its own session holding the run's lock, watched, and
stopped with the sweep (a signal to the sweep reaches every run once; a second one kills them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from src.runs import RunLock
from src.sweeping.run_state import RunState, move_attempt_aside
from src.sweeping.slots import Slot, pinned
from src.sweeping.study import RunSpec, Study, format_command, run_command

POLL_SECONDS = 0.2  # how often a parallel sweep looks whether one of its runs has ended


class SignalForwarder:
    """While the sweep waits for its runs, pass SIGTERM / SIGINT on to every one; a second signal kills them.

    SIGHUP (the terminal or the SSH session closed) reaches each run as SIGTERM: a run saves its step on
    SIGTERM, while SIGHUP would end it without a checkpoint; the sweep still exits 128 + SIGHUP.

    The runs are started in their own sessions, so a Ctrl-C in the terminal reaches each once, through
    here; a ``kill`` of the sweep alone stops its runs too, none is left training, re-parented to PID 1.
    """

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.signum: int | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None] = {}

    def __enter__(self) -> SignalForwarder:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:  # the sweep itself broke: stop its runs rather than orphan them
            self.signum = self.signum or signal.SIGTERM
            self.forward()
            for child in self.children:
                child.wait()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        again = self.signum is not None
        self.signum = signum
        self.forward(kill=again)

    def forward(self, kill: bool = False) -> None:
        if self.signum is None:
            return
        for child in self.children:
            if child.poll() is not None:
                continue
            if kill:
                child.kill()
            else:
                child.send_signal(signal.SIGTERM if self.signum == signal.SIGHUP else self.signum)

    def start(self, command: list[str], **popen: Any) -> subprocess.Popen:
        """Start a run in its own session and watch it; a signal that came while it started reaches it too."""
        child = subprocess.Popen(command, start_new_session=True, **popen)
        self.children.append(child)
        if self.signum is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if self.signum == signal.SIGHUP else self.signum)
        return child

    def done(self, child: subprocess.Popen) -> None:
        """Stop watching a run that has ended."""
        self.children.remove(child)


@dataclass
class Running:
    """A run this sweep started and has not yet seen end: what it holds until then."""

    run: RunSpec
    prefix: str
    lock: RunLock
    child: subprocess.Popen
    slot: Slot | None
    log: IO[str] | None
    started: float


def wait_any(running: list[Running]) -> Running:
    """The first of the running runs to end (waited for); one alone is simply waited on, as before ``--jobs``."""
    if len(running) == 1:
        running[0].child.wait()
        return running[0]
    while True:
        for entry in running:
            if entry.child.poll() is not None:
                return entry
        time.sleep(POLL_SECONDS)


def launch(
    study: Study,
    run: RunSpec,
    state: RunState,
    lock: RunLock,
    slot: Slot | None,
    forwarder: SignalForwarder,
    log_dir: Path,
    show_output: bool,
    prefix: str,
) -> Running:
    """Start the run's ``src.cli fit`` process in ``slot`` (None: as this process runs), handing it the run's lock."""
    resume = state.status == "resume"
    if state.status == "restart":  # the lock is held: nobody else writes there now
        moved = move_attempt_aside(run.run_dir, study.directory)
        if moved is not None:
            print(f"{prefix}: the earlier attempt left no checkpoint; its files moved aside to {moved}", flush=True)
    command = run_command(study, run, resume=resume)
    env = {**os.environ, **lock.child_env()}
    popen: dict = {"env": slot.env(env) if slot is not None else env, "pass_fds": [lock.fd]}
    log = None
    if not show_output:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{run.variant.replace('/', '_')}_seed{run.seed}.log"
        action = "continuing from its checkpoint" if resume else "running"
        where = f" on {slot.describe()}" if slot is not None else ""
        print(f"{prefix}: {action}{where} (output: {log_path})", flush=True)
        log = open(log_path, "a")
        log.write(f"$ {format_command(command)}\n")
        log.flush()
        popen.update(stdout=log, stderr=subprocess.STDOUT)
    try:
        with pinned(slot.cpus if slot is not None else ()):
            child = forwarder.start(command, **popen)
    except BaseException:
        if log is not None:
            log.close()
        raise
    return Running(run, prefix, lock, child, slot, log, time.monotonic())

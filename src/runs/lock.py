"""``run.lock``: one process writes a run at a time, and a busy run says who holds it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone

from src.runs.layout import LOCK_FD_ENV, LOCK_FILE, RunBusy


class RunLock:
    """``run.lock`` in the run directory, held with ``flock`` by the one process writing the run.

    Not ``src.data.locking.file_lock``: that one *waits* (right for a download), this one refuses at
    once and says who holds it; and it is an ``flock``, tied to the open file rather than to the
    process, so a sweep can hand the very lock it claimed a run with to the ``src.cli`` process it
    starts for it (``LOCK_FD_ENV``), and reading the holder's record never drops it (POSIX record
    locks are dropped when *any* descriptor of the file is closed). The kernel releases it when the
    holder exits in any way, ``kill -9`` included: a crashed run leaves no stale lock, only a stale
    record, which the next holder overwrites.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_FILE)
        self._fd: int | None = None
        self._inherited = False

    @property
    def fd(self) -> int | None:
        return self._fd

    def acquire(self, role: str = "src.cli") -> RunLock:
        """Take the lock, or raise ``RunBusy`` naming the process that holds it."""
        inherited = self._inherited_fd()
        if inherited is not None:  # our parent (a sweep) holds it for us: same open file, same lock
            self._fd, self._inherited = inherited, True
            self._write_record(role)
            return self
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._busy(self.holder()) from None
        self._fd = fd
        self._write_record(role)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if not self._inherited:  # an inherited lock stays with the parent that claimed the run
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def child_env(self) -> dict[str, str]:
        """Environment (and, with ``pass_fds=[lock.fd]``, descriptor) that hands this lock to a child."""
        assert self._fd is not None, "acquire the lock first"
        return {LOCK_FD_ENV: f"{self._fd}:{os.path.realpath(self.path)}"}

    def refuse_if_busy(self) -> None:
        """Raise ``RunBusy`` if another process holds the lock (one that was handed to us does not count)."""
        holder = self.holder_if_busy()
        if holder is not None:
            raise self._busy(holder)

    def _busy(self, holder: str) -> RunBusy:
        return RunBusy(
            f"the run directory '{self.run_dir}' is in use by {holder}; wait for it to finish, "
            "or use another run directory"
        )

    def holder_if_busy(self) -> str | None:
        """Who holds the lock now (``holder()``), or ``None`` when nobody does (or it was handed to us)."""
        if self._inherited_fd() is not None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return self.holder()
        finally:
            os.close(fd)  # closing drops the shared lock if we got it
        return None

    def holder(self) -> str:
        """``process 123 on host (src.cli, since ...)`` from the record the holder wrote."""
        try:
            with open(self.path) as handle:
                record = json.loads(handle.read() or "{}")
        except (OSError, ValueError):
            record = {}
        if not record.get("pid"):
            return "another process (it has not written its name yet)"
        where = record.get("host") or "?"
        note = ""
        if where == socket.gethostname() and not _alive(int(record["pid"])):
            note = "; that process is gone, so the lock is held by a process it started, or by a stale network lock"
        return f"process {record['pid']} on {where} ({record.get('role', '?')}, since {record.get('since', '?')}{note})"

    def _inherited_fd(self) -> int | None:
        fd_text, _, path = os.environ.get(LOCK_FD_ENV, "").partition(":")
        if not fd_text.isdigit() or path != os.path.realpath(self.path):
            return None
        fd = int(fd_text)
        try:
            if not os.path.samestat(os.fstat(fd), os.stat(self.path)):
                return None  # the variable came along, the descriptor did not (a process of ours it started)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op for the open file that holds it
        except OSError:
            return None
        return fd

    def _write_record(self, role: str) -> None:
        assert self._fd is not None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "role": role,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

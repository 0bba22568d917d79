"""A lock file for work that must happen once per shared folder: downloads, extraction, caches.

Caches of decoded images, file checks and statistics use it too (:func:`lock_if_writable`): the first
process of a node builds them, the others wait on the lock and then read what it wrote.

Lightning calls ``prepare_data`` on the first process of *every node* (``prepare_data_per_node``
is true by default, which is right when each node has its own disk). When ``data_dir`` is on a
filesystem all nodes share, those processes would download and extract into the same folder at
once. Holding :func:`file_lock` around the download makes them take turns: the first one
downloads, the others then find verified files and skip. The lock is a POSIX record lock
(``fcntl.lockf``), which NFS and Lustre (mounted with ``flock``) honour across nodes, and which
the kernel releases when its holder dies -- a crashed download never leaves a stale lock.

The holder writes who it is (pid, host, since when) into the lock file, so a process that waits says whom it
waits for -- a builder that was stopped (SIGSTOP, a hung file system) holds the lock without dying -- repeats
that every ``REMIND_S``, and gives up after ``CACHE_WAIT_S`` for caches (``TimeoutError`` naming the holder).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

LOCK_NAME = ".prepare_data.lock"
REMIND_S = 600.0  # a waiting process repeats whom it waits for this often
CACHE_WAIT_S = 6 * 3600.0  # the longest a cache build of another process is waited for (an ImageNet cache: ~1 h)


@contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None, poll_s: float = 0.5) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, never deleted) while the ``with`` block runs.

    Args:
        path: the lock file; put it inside the folder it protects.
        timeout: seconds to wait before a ``TimeoutError``; ``None`` waits as long as it takes.
        poll_s: seconds between attempts while another process holds the lock.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+") as handle, _locked(handle, path, timeout, poll_s):  # lockf needs a file open for writing
        yield


@contextmanager
def lock_if_writable(path: str | os.PathLike, timeout: float | None = CACHE_WAIT_S) -> Iterator[bool]:
    """:func:`file_lock` on ``path``, yielding ``True``; ``False`` (and no lock) where it cannot be created.

    For caches that are a convenience: a read-only data folder must not stop a run, it only loses the
    once-per-node guarantee (each process then does the work itself).
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handle = open(path, "a+")
    except OSError:
        yield False
        return
    # The same handle is locked and closed: a POSIX lock belongs to the process and the file, and closing
    # any other handle of the file would drop it.
    with handle, _locked(handle, path, timeout, 0.5):
        yield True


def holder(path: str | os.PathLike) -> str:
    """Who holds (or last held) the lock at ``path``, as its holder wrote it; ``"unknown"`` when unsaid."""
    try:
        with open(path) as handle:
            return handle.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def _locked(handle: IO, path: str | os.PathLike, timeout: float | None, poll_s: float) -> Iterator[None]:
    start, reminded = time.monotonic(), None
    while True:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:  # EACCES or EAGAIN: another process holds it
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise TimeoutError(
                    f"{holder(path)} has held the lock {path} for over {timeout:g} s; if that process is stopped or "
                    "hung, end it (its files are cleaned up by the next process), then start again"
                ) from None
            if reminded is None or waited - reminded >= REMIND_S:
                folder = os.path.dirname(path) or "."
                still = f"still waiting ({waited / 60:.0f} min)" if reminded is not None else "waiting"
                print(f"{still} for {holder(path)} to finish with {folder} (lock: {path})", flush=True)
                reminded = waited
            time.sleep(poll_s)
    try:
        try:  # say who holds it, for the processes that wait
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
        except OSError:
            pass
        yield
    finally:
        fcntl.lockf(handle, fcntl.LOCK_UN)

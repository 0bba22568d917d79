"""File helpers every layer may use (imports nothing of the project).

The project's rules about files:

* never overwrite a file a user already has: a second run into a directory, a resumed run, a second
  report of the same runs -- each writes ``name-1.ext`` beside ``name.ext`` instead (:func:`free_path`);
* a file is either whole or not there (:func:`atomic_write`): written to a temporary file *in the
  same directory* (so the final rename never becomes a cross-filesystem copy, and nothing lands in
  ``$TMPDIR``), flushed to disk, then renamed over the target. A kill or a full disk leaves the old
  file (or none), never a fragment; the temporary file is removed on any error. The rename replaces a
  symbolic link at the target instead of writing through it, so a link planted in a received folder
  cannot redirect the write; :func:`staged_writes` gives the same to writers that open their own paths;
* a full or read-only disk is the user's to fix, not a bug: :func:`disk_error_message` turns it into
  one line naming the path and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

# Errors of the disk, not of the program: out of space or quota, read-only, not allowed.
DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def free_path(directory: str | os.PathLike, filename: str) -> str:
    """``directory/filename``, or ``stem-1.ext``, ``stem-2.ext``... if it exists: never overwrite a file.

    A symbolic link occupies its name even when its target is missing (``lexists``): writing to a dangling link
    would create the file it points to, wherever a received folder's planted link says.
    """
    stem, ext = os.path.splitext(filename)
    path, index = os.path.join(directory, filename), 0
    while os.path.lexists(path):
        index += 1
        path = os.path.join(directory, f"{stem}-{index}{ext}")
    return path


def resolves_inside(path: str | os.PathLike, folder: str | os.PathLike, *, folder_itself: bool = False) -> bool:
    """Whether ``path`` lies inside ``folder`` once links, ``..`` and relative parts are resolved on both.

    The one check for "is this file from elsewhere really in its folder": a restored checkpoint path, an archive
    member's destination, a module's source. ``folder_itself`` says whether the folder itself counts as inside
    (an archive member ``.`` lands there; a checkpoint path equal to its folder names no file in it).
    """
    real_path, real_folder = os.path.realpath(path), os.path.realpath(folder)
    if real_path == real_folder:
        return folder_itself
    return os.path.commonpath([real_path, real_folder]) == real_folder


TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")  # what temporary_path names


def remove_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove the temporary files ``temporary_path`` made in ``directory`` that a killed writer left behind.

    Call it only while holding the lock of the folder (a run's ``run.lock``, a cache's build lock): then no
    live writer of that folder exists, so every such file is debris (a preallocated image cache's can be
    hundreds of GB). Returns the names removed.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if TEMPORARY.match(name):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return sorted(removed)


def temporary_path(path: str | os.PathLike) -> str:
    """A hidden, unique temporary name beside ``path`` (same directory, hence same file system)."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], object], binary: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write(handle)`` into a temporary file beside it, fsync, rename.

    Any error (ENOSPC halfway, a kill...) leaves ``path`` as it was and removes the temporary file; the
    ``OSError`` raised names ``path``. A symbolic link at ``path`` is replaced by the file, never written through.
    """
    path = os.fspath(path)
    tmp = temporary_path(path)
    try:
        # 0o666 & ~umask, like open(): mkstemp would make the file private (0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        handle: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        # Name the file. A writer may wrap the disk's error (torch.save: a RuntimeError whose context is the
        # OSError(ENOSPC) of its write), so look for it in the chain.
        found = disk_error(error) or (error if isinstance(error, OSError) and error.errno is not None else None)
        if found is not None and (found is not error or found.filename is None):
            # errno is set: disk_error matched it against DISK_ERRNOS, or the test above checked it.
            code = cast(int, found.errno)
            raise OSError(code, found.strerror or os.strerror(code), path) from error
        raise
    _fsync_directory(os.path.dirname(path) or ".")


@contextmanager
def staged_writes(directory: str | os.PathLike) -> Iterator[Path]:
    """A fresh, private folder inside ``directory`` to write into; on success its files replace ``directory``'s.

    Why: a writer that opens its own path (matplotlib's ``savefig``, ``csv``, ``write_text``) follows a symbolic
    link planted at that path and overwrites the link's target -- anywhere the user can write. Written into the
    staging folder instead, each file is then renamed over ``directory/<name>`` (``os.replace``), which replaces
    a link (or a hard-linked file) as :func:`atomic_write` does, never writing through it. A sub-folder is merged
    the same way and refused (``FileExistsError``) where ``directory`` holds a link or a file in its place. On any
    error the staging folder is removed; files already moved stay (as a write that stopped halfway leaves them).
    """
    directory = os.fspath(directory)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory) or 'out'}.staging-", dir=directory)
    try:
        yield Path(staging)
        _move_into(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_directory(directory)


def _move_into(source: str, target: str) -> None:
    """Rename every file under ``source`` to the same place under ``target`` (folders merged, links replaced)."""
    for name in sorted(os.listdir(source)):
        moved, into = os.path.join(source, name), os.path.join(target, name)
        if os.path.isdir(moved) and not os.path.islink(moved):
            if os.path.islink(into) or (os.path.lexists(into) and not os.path.isdir(into)):
                raise FileExistsError(
                    errno.EEXIST,
                    "a link or a file is where a folder is to be written (valid: a folder or nothing)",
                    into,
                )
            os.makedirs(into, exist_ok=True)
            _move_into(moved, into)
        else:
            os.replace(moved, into)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (a crash right after it keeps the new file); best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, content: Any, indent: int | None = 2) -> None:
    """``json.dump(content)`` to ``path`` through :func:`atomic_write` (a reader never sees half a file)."""
    text = json.dumps(content, indent=indent)
    atomic_write(path, lambda handle: handle.write(text), binary=False)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (a checkpoint need not fit in memory twice).

    The one hash that ties a pruned or fine-tuned run to the checkpoint it started from: ``model.init_from`` records
    it, and the study driver compares it with the parent's file before it commits the pair.
    ``hashlib.file_digest`` would do, from Python 3.11; the project supports 3.10.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def error_chain(error: BaseException | None, stop_at_from_none: bool = False) -> Iterator[BaseException]:
    """``error``, then what it was raised from or while handling (``__cause__``, else ``__context__``), and so on.

    The one walker of exception chains (the disk check here, the CLI's messages): each error once, so a chain that
    loops ends. ``stop_at_from_none``: end at an error raised ``from None``, a message written in place of the one
    it caught (``src.cli_support.messages.root_message`` wants the project's words, not the error they replaced).
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        if stop_at_from_none and error.__cause__ is None and error.__suppress_context__:
            return
        error = error.__cause__ or error.__context__


def disk_error(error: BaseException | None) -> OSError | None:
    """The full-disk / read-only / permission ``OSError`` in ``error``'s chain (``__cause__``/``__context__``)."""
    return next(
        (found for found in error_chain(error) if isinstance(found, OSError) and found.errno in DISK_ERRNOS), None
    )


def disk_error_message(error: BaseException) -> str | None:
    """One line for a disk error in ``error``'s chain: the path, what is wrong, what to do; ``None`` otherwise."""
    found = disk_error(error)
    if found is None:
        return None
    code = cast(int, found.errno)  # disk_error matched it against DISK_ERRNOS
    where = found.filename if found.filename is not None else "a file"
    what = DISK_ERRNOS[code]
    if code in (errno.ENOSPC, errno.EDQUOT):
        todo = "free space there (or write elsewhere: --run_dir, data.cache_dir), then run again"
    elif code == errno.EROFS:
        todo = "write to a writable place instead (--run_dir, data.cache_dir), then run again"
    else:
        todo = "make it writable for you, or write elsewhere (--run_dir, data.cache_dir), then run again"
    return f"cannot write '{where}': {what} ({found.strerror or os.strerror(code)}); {todo}"

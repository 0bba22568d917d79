"""The fast path's decoded-image cache at ImageNet scale: built once per node, in parallel, memory-mapped.

Why this shape:

* **once per node**: under DDP every process of a node needs the same decoded split. The first to take the
  cache folder's lock (:func:`src.data.locking.lock_if_writable`) decodes; the others wait on the lock, then
  find the finished file and map it. Nothing is decoded twice, and the page cache holds one copy for all;
* **no 2x peak**: the file is preallocated at its final size (a full disk fails at once, not after an hour),
  then decoded chunks are written at their offsets as they arrive from the decoding processes. The builder
  holds a few chunks, never a list of every image nor a stacked copy of it;
* **parallel**: ``workers`` loader processes decode chunks of files (:func:`src.data.decode.decode`, the
  per-sample path's own decoding), with a progress line and an ETA every few seconds;
* **memory-mapped**: readers map the file copy-on-write (``np.memmap`` mode ``c``): pages come from the
  page cache on demand, shared by every process on the node;
* **whole or absent**: written under a temporary name and renamed; a file that does not match its header's
  size (a copy cut short) is named in a warning and rebuilt. Replace or delete a cache file, never write
  over it in place (``cp`` onto it) while a run maps it: a mapping whose file shrinks under it crashes the
  run with SIGBUS. The template itself only renames new files into place, which running readers never see.

File layout: a 4 KiB JSON header (``version``, ``count``, ``channels``, ``height``, ``width``), the images
(``count x channels x height x width`` uint8, C order), then the labels (``count`` int64, little-endian).
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.base import DataError
from src.data.decode import decode
from src.data.locking import lock_if_writable
from src.files import remove_temporaries, temporary_path

FORMAT = "decoded-images"
HEADER_BYTES = 4096
LOCK_NAME = ".build.lock"
UNUSED_DAYS = 30.0  # a decoded-image cache no run has read for this long is removed at the next build there
CHUNK = 256  # images per decoding task: big enough to amortise the hand-over, small enough to show progress
PROGRESS_EVERY_S = 10.0
GB = 1e9

Sample = tuple[str, int]


# ---------------------------------------------------------------- sizes and the budget
def bytes_needed(count: int, channels: int, size: int) -> int:
    """Bytes of ``count`` decoded ``channels x size x size`` uint8 images (labels are negligible)."""
    return count * channels * size * size


def default_budget_gb() -> float:
    """Half of this machine's physical memory: the decoded splits live in the page cache, shared on the node."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 / GB
    except (ValueError, OSError, AttributeError):  # no sysconf (macOS variants, Windows)
        return 16.0


def format_bytes(count: float) -> str:
    return f"{count / GB:.2f} GB" if count >= 0.1 * GB else f"{count / 1e6:.1f} MB"


def check_budget(count: int, channels: int, size: int, max_gb: float | None) -> str:
    """The line announcing what the fast path will hold; a ``DataError`` when it is above ``max_gb``.

    Checked from directory listings before anything is decoded, so a folder too big for memory is refused in
    seconds, with the way out, instead of swapping or being killed an hour into the decode.
    """
    budget = default_budget_gb() if max_gb is None else max_gb
    needed = bytes_needed(count, channels, size)
    where = "half this machine's memory" if max_gb is None else "data.fast_max_gb"
    if needed > budget * GB:
        raise DataError(
            f"the fast path would hold {count:,} decoded images of {channels}x{size}x{size} = "
            f"{format_bytes(needed)} in memory, above the budget of {budget:g} GB ({where}). Set data.fast "
            "false to decode per sample in loader workers (no cache), lower data.image_size, or raise "
            "data.fast_max_gb"
        )
    return (
        f"Fast path: {count:,} images of {channels}x{size}x{size} = {format_bytes(needed)} decoded "
        f"(budget {budget:.3g} GB, {where})"
    )


# ---------------------------------------------------------------- reading
def _header(count: int, channels: int, height: int, width: int) -> bytes:
    text = json.dumps(dict(format=FORMAT, count=count, channels=channels, height=height, width=width)) + "\n"
    return text.encode().ljust(HEADER_BYTES, b" ")


def _mark_used(path: Path) -> None:
    """Touch a cache as it is read (where the folder is writable): its modification time says when it was
    last used, which is what ``remove_unused`` goes by."""
    try:
        os.utime(path)
    except OSError:
        pass


def remove_unused(cache_dir: str | os.PathLike, keep: Path, days: float = UNUSED_DAYS) -> list[str]:
    """Remove the decoded-image caches of ``cache_dir`` that no run has read for ``days`` (a folder that changed
    leaves its old cache behind: a new key, never read again), except ``keep``; call it holding the build lock.
    Returns ``"name (size)"`` of each one removed."""
    removed = []
    cutoff = time.time() - days * 86400
    for path in sorted(Path(cache_dir).glob("*.uint8")):
        try:
            stat = path.stat()
            if path != keep and stat.st_mtime < cutoff:
                path.unlink()
                removed.append(f"{path.name} ({format_bytes(stat.st_size)})")
        except OSError:
            continue
    return removed


def read_cache(path: Path, count: int, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` of a whole cache file, the images memory-mapped; ``None`` if there is none.

    A file that is there but unusable (truncated, corrupt, another layout) is named in a warning and removed,
    so it is rebuilt instead of blocking every run on the folder.
    """
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(HEADER_BYTES).decode())
        shape = (header["count"], header["channels"], header["height"], header["width"])
        if header.get("format") != FORMAT or shape[0] != count or shape[1] != channels:
            raise ValueError(f"{shape[0]} images of {shape[1]} channels, expected {count} of {channels}")
        expected = HEADER_BYTES + math.prod(shape) + 8 * count
        if os.path.getsize(path) != expected:
            raise ValueError(f"{os.path.getsize(path)} bytes where its header needs {expected}")
        images = np.memmap(path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=shape)
        labels = np.fromfile(path, dtype="<i8", count=count, offset=HEADER_BYTES + math.prod(shape))
        _mark_used(path)
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    except Exception as error:  # noqa: BLE001  (whatever is wrong with the file, the remedy is the same)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"the decoded-image cache {path} is unreadable ({reason}); decoding the images again"
        warnings.warn(message, stacklevel=3)
        try:
            path.unlink()
        except OSError:
            pass
        return None


# ---------------------------------------------------------------- decoding in parallel
class _Chunks(Dataset):
    """Chunk ``i``: ``(first index, uint8 images)`` of files ``i * CHUNK ...``, each checked against ``shape``."""

    def __init__(self, paths: Sequence[str], channels: int, size: int | None, shape: tuple[int, int, int]) -> None:
        self.paths, self.channels, self.size, self.shape = list(paths), channels, size, shape

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / CHUNK)

    def __getitem__(self, chunk: int) -> tuple[int, torch.Tensor]:
        start = chunk * CHUNK
        paths = self.paths[start : start + CHUNK]
        images = torch.empty((len(paths), *self.shape), dtype=torch.uint8)
        for offset, path in enumerate(paths):
            image = decode(path, self.channels, self.size)
            if tuple(image.shape) != self.shape:
                raise ValueError(
                    f"images have different sizes ({tuple(image.shape)} at '{path}', {self.shape} for the first "
                    "image): pass a size to resize them to"
                )
            images[offset] = image
        return start, images


class Progress:
    """A progress line with rate and ETA at most every ``every_s`` seconds (a log line, not a live bar)."""

    def __init__(self, total: int, what: str, every_s: float = PROGRESS_EVERY_S) -> None:
        self.total, self.what, self.every_s = total, what, every_s
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate else float("inf")
        tail = f"ETA {eta:.0f} s" if done < self.total else f"done in {elapsed:.1f} s"
        print(f"{self.what}: {done:,}/{self.total:,} images ({100 * done / self.total:.0f}%), "
              f"{rate:,.0f} images/s, {tail}", flush=True)  # fmt: skip


def decode_chunks(
    samples: Sequence[Sample], channels: int, size: int | None, workers: int, what: str
) -> tuple[tuple[int, int, int], DataLoader]:
    """The image shape and a loader of ``(start, chunk)`` decoded by ``workers`` processes (0: this one), in order."""
    paths = [str(path) for path, _ in samples]
    shape = tuple(decode(paths[0], channels, size).shape)  # the size to preallocate (size None: the first image's)
    loader = DataLoader(
        _Chunks(paths, channels, size, shape),  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        # Its own generator: with the global RNG a run's shuffles would depend on whether the cache was cold.
        generator=torch.Generator().manual_seed(0),
    )
    print(f"{what}: {len(paths):,} images, {format_bytes(len(paths) * math.prod(shape))} at "
          f"{'x'.join(map(str, shape))}, {max(workers, 1)} decoding process(es)", flush=True)  # fmt: skip
    return shape, loader  # type: ignore[return-value]


def decode_to_memory(
    samples: Sequence[Sample], channels: int, size: int | None, workers: int = 0, what: str = "images"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode into one preallocated uint8 tensor (no cache folder)."""
    what = f"Decoding {what} into memory"
    shape, loader = decode_chunks(samples, channels, size, workers, what)
    images = torch.empty((len(samples), *shape), dtype=torch.uint8)
    progress = Progress(len(samples), what)
    for start, chunk in loader:
        images[start : start + len(chunk)] = chunk
        progress.update(start + len(chunk))
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes now, so a full disk fails here and not an hour into the decode.

    Where the file system cannot reserve (some network file systems, macOS), the file is only extended.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as error:
        if isinstance(error, OSError) and error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)


def build_cache(samples: Sequence[Sample], path: Path, channels: int, size: int | None, workers: int) -> None:
    """Decode ``samples`` into the cache file ``path``: preallocated, written chunk by chunk, renamed when whole."""
    what = f"Decoding {path.name}"
    shape, loader = decode_chunks(samples, channels, size, workers, what)
    image_bytes = math.prod(shape)
    total = HEADER_BYTES + image_bytes * len(samples) + 8 * len(samples)
    tmp = temporary_path(path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        _preallocate(fd, total)
        os.pwrite(fd, _header(len(samples), *shape), 0)
        progress = Progress(len(samples), what)
        for start, chunk in loader:
            os.pwrite(fd, memoryview(chunk.numpy()).cast("B"), HEADER_BYTES + start * image_bytes)
            progress.update(start + len(chunk))
        labels = np.asarray([label for _, label in samples], dtype="<i8")
        os.pwrite(fd, labels.tobytes(), HEADER_BYTES + image_bytes * len(samples))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_or_build(
    samples: Sequence[Sample], cache_dir: str | os.PathLike, name: str, key: str, channels: int, size: int | None,
    workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The cache ``cache_dir/<name>-<key>.uint8``, built first if needed by whichever process holds the lock.

    A cache folder that cannot be written (a read-only data set) is a warning: the images are decoded into
    memory for this run.
    """
    path = Path(cache_dir) / f"{name}-{key}.uint8"
    cached = read_cache(path, len(samples), channels)
    if cached is not None:
        return cached
    with lock_if_writable(Path(cache_dir) / LOCK_NAME) as locked:
        if not locked:
            warnings.warn(f"cannot write the cache folder {cache_dir}: decoding {name} into memory", stacklevel=2)
            return decode_to_memory(samples, channels, size, workers, name)
        cached = read_cache(path, len(samples), channels)  # another process built it while this one waited
        if cached is not None:
            return cached
        removed = remove_temporaries(cache_dir)  # holding the lock: any temporary file here is a dead build's
        if removed:
            print(f"removed {len(removed)} unfinished cache file(s) a stopped build left in {cache_dir}", flush=True)
        unused = remove_unused(cache_dir, keep=path)
        if unused:
            print(
                f"removed caches no run read for {UNUSED_DAYS:g} days from {cache_dir}: {', '.join(unused)}", flush=True
            )
        try:
            build_cache(samples, path, channels, size, workers)
        except OSError as error:
            message = f"could not write the decoded-image cache {path} ({error}); decoding into memory"
            warnings.warn(message, stacklevel=2)
            return decode_to_memory(samples, channels, size, workers, name)
    cached = read_cache(path, len(samples), channels)
    return cached if cached is not None else decode_to_memory(samples, channels, size, workers, name)

"""The work an image folder needs once per node, before training: the file check and the channel statistics.

Both are cached (``src.data.folder_cache``) under a key of the files' identities; the first process of a node
to miss a cache computes it while the others wait on the cache folder's lock, then read it. A mixin of
``ImageFolderDataModule`` (``src.data.folder``), which holds the settings these methods read.
"""

from __future__ import annotations

import os
import random
from contextlib import ExitStack
from typing import Any

from src.data import image_cache
from src.data.folder_cache import cache_key, file_identities, load_cache, save_cache
from src.data.folder_decode import Sample, channel_stats, probe
from src.data.locking import lock_if_writable
from src.machine import available_cpus

STATS_IMAGES_WITHOUT_CHECK = 5000  # images to compute statistics from when the full file check is off


class FolderScanMixin:
    """File check and statistics, cached per node; the DataModule sets the attributes read here."""

    root: str
    cache_dir: str
    channels: int
    image_size: int
    check_files: bool
    split_seed: int
    num_workers: Any
    _auto_workers: bool
    _results: dict
    _node_lock: ExitStack | None
    _node_locked: bool

    def _cache_path(self, key: str) -> str:
        return os.path.join(self.cache_dir, f"folder-{key}.json")

    def _load_cache(self, key: str, fields: dict[str, type]) -> dict:
        return load_cache(self._cache_path(key), fields)

    def _save_cache(self, key: str, content: dict) -> None:
        save_cache(self._cache_path(key), content)

    def _build_workers(self) -> int:
        """Processes for work done once per node (file check, statistics, fast-path cache).

        While one process does it the node's other processes wait on the lock, so with ``num_workers: null``
        it may use every CPU it can run on; a ``num_workers`` that is set is taken as it is.
        """
        return max(0, available_cpus() - 1) if self._auto_workers else self.num_workers

    def _hold_node_lock(self) -> None:
        """Take the cache folder's lock (if not held yet) and keep it until ``_collect`` ends.

        The first process of a node to miss a cache computes it while the others wait here, then read it.
        Held over both the file check and the statistics: released in between, a waiting process could take
        it first and compute the statistics a second time.
        """
        if self._node_lock is not None and not self._node_locked:
            self._node_lock.enter_context(lock_if_writable(os.path.join(self.cache_dir, image_cache.LOCK_NAME)))
            self._node_locked = True

    def _check(self, paths: list[str], key: str) -> dict[str, str]:
        """``{path: reason}`` of every file that does not decode (cached by the list of paths, once per node)."""
        cache = self._load_cache(key, {"bad": dict})
        if "bad" not in cache:
            self._hold_node_lock()
            cache = self._load_cache(key, {"bad": dict})  # done by another process while this one waited
            if "bad" not in cache:
                return self._scan(paths, key)
        # Files fixed in place since: decode the listed ones again (few, cheap).
        listed = sorted(cache["bad"])
        results = probe(listed, self.channels, 0, self.image_size) if listed else []
        bad = {path: result[0] for path, result in zip(listed, results) if result[0]}
        if bad != cache["bad"]:
            self._save_cache(key, {**cache, "bad": bad})
        return bad

    def _scan(self, paths: list[str], key: str) -> dict[str, str]:
        # print, not rank_zero_info: the process that holds the lock does it, whatever its rank.
        where = f"under '{self.root}' (once per node; cached in '{self.cache_dir}')"
        print(f"Checking {len(paths):,} image files {where}", flush=True)
        results = probe(paths, self.channels, self._build_workers(), self.image_size)
        bad = {path: result[0] for path, result in zip(paths, results) if result[0]}
        self._results = dict(zip(paths, results))  # reused for the statistics of this run
        self._save_cache(key, {"root": os.path.abspath(self.root), "files": len(paths), "bad": bad})
        return bad

    def _statistics(self, train: list[Sample]) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split, cached; computed once per node."""
        paths = [path for path, _ in train]
        if not self.check_files and len(paths) > STATS_IMAGES_WITHOUT_CHECK:
            paths = sorted(random.Random(self.split_seed).sample(paths, STATS_IMAGES_WITHOUT_CHECK))
        # "per-image": each image weighs the same, measured at image_size (older caches weighed pixels)
        key = cache_key("stats", "per-image", file_identities(paths), self.channels, self.image_size)
        cache = self._load_statistics(key)
        if "mean" not in cache:
            self._hold_node_lock()
            cache = self._load_statistics(key)  # computed by another process while this one waited
            if "mean" not in cache:
                missing = [p for p in paths if p not in self._results]
                probed = dict(zip(missing, probe(missing, self.channels, self._build_workers(), self.image_size)))
                results = dict(self._results, **probed)
                cache["mean"], cache["std"] = channel_stats([results[p] for p in paths])
                self._save_cache(key, {**cache, "images": len(paths)})
        return cache["mean"], cache["std"]

    def _load_statistics(self, key: str) -> dict:
        cache = self._load_cache(key, {"mean": list, "std": list})
        return cache if all(len(cache.get(name, ())) == self.channels for name in ("mean", "std")) else {}

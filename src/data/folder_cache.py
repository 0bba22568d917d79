"""The folder's small JSON caches (file check, normalisation statistics): keyed by the files, never trusted blindly.

A key changes when a file is added, removed or replaced in place (path, size, mtime), so a stale cache is
never read; a truncated or corrupt cache file is named in a warning, removed and rebuilt, never blocking
the folder; a cache that cannot be written is a warning (the work runs again next time), not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

from lightning.pytorch.utilities import rank_zero_warn

from src.files import write_json_atomic


def cache_key(*parts: object) -> str:
    """A short, stable hash of JSON-able ``parts``."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def file_identities(paths: Sequence[str]) -> list[tuple[str, int, int, int]]:
    """``(absolute path, size, mtime, ctime in ns)`` per file: a cache key that changes when a file is replaced.

    The ctime catches a same-size replacement whose mtime was kept (``cp -p``, ``rsync -a``): tools set mtimes only.
    """
    identities = []
    for path in paths:
        stat = os.stat(path)
        identities.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return identities


def load_cache(path: str, fields: dict[str, type]) -> dict:
    """The cache file at ``path`` if it is whole and has ``fields`` (name -> type), else ``{}``.

    A truncated or corrupt file is named in a warning, removed and rebuilt: it must not block the folder.
    """
    try:
        with open(path) as handle:
            content = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        return _drop_cache(path, f"{type(err).__name__}: {err}")
    if not isinstance(content, dict):
        return _drop_cache(path, f"a JSON {type(content).__name__}, not an object")
    wrong = [name for name, kind in fields.items() if not isinstance(content.get(name), kind)]
    if wrong:
        return _drop_cache(path, f"missing or malformed {', '.join(wrong)}")
    return content


def _drop_cache(path: str, reason: str) -> dict:
    rank_zero_warn(f"the data cache '{path}' is unreadable ({reason}); rebuilding it")
    try:
        os.remove(path)
    except OSError:
        pass
    return {}


def save_cache(path: str, content: dict) -> None:
    """Write the cache whole or not at all; a folder that cannot be written is a warning."""
    cache_dir = os.path.dirname(path)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        write_json_atomic(path, content, indent=None)  # whole or not at all
    except OSError as err:
        rank_zero_warn(f"could not cache the file check in '{cache_dir}' ({err}); it will run again next time")

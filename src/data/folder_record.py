"""What a run trained on, as ``data.json`` records it, and the check that a resumed run still trains on it.

Why: a folder can change while a run is stopped (an image added, one deleted, a class folder renamed).
Resuming such a run silently re-lists the folder and re-normalises it: the run's weights were trained on
other files and other statistics, and its record would not say so. ``data.json`` therefore holds each
split's file count and a digest of its files (path relative to the root, label, size); a ``fit`` that
continues a run compares them with the run's first record and refuses a change unless told to go on
(``data.allow_changed_data: true``, recorded in the new ``data-N.json``). Either way the resumed run
keeps the normalisation statistics it started with.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

from src.data.base import DataError

Sample = tuple[str, int]


def split_files(samples: Sequence[Sample], root: str) -> dict[str, object]:
    """``{"count": n, "sha256": ...}`` of one split: the sorted ``relative path, label, size`` lines.

    Relative paths and sizes, not modification times: a copy of the same folder on another machine
    (or the same data under another root) has the same digest.
    """
    digest = hashlib.sha256()
    lines = sorted(f"{os.path.relpath(path, root)}\t{label}\t{os.path.getsize(path)}\n" for path, label in samples)
    for line in lines:
        digest.update(line.encode())
    return {"count": len(lines), "sha256": digest.hexdigest()}


def first_record(run_dir: str, name: str) -> dict | None:
    """The run's first ``data.json`` (the one its first fit wrote), or ``None``."""
    try:
        with open(os.path.join(run_dir, name)) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def changes(before: dict, now: dict) -> list[str]:
    """What differs between two records' files and classes, one phrase each (``[]``: the same data)."""
    found = []
    if before.get("classes") != now.get("classes"):
        found.append(f"classes {sorted(before.get('classes') or {})} -> {sorted(now.get('classes') or {})}")
    old, new = before.get("files") or {}, now.get("files") or {}
    for split in sorted(set(old) | set(new)):
        a, b = old.get(split) or {}, new.get(split) or {}
        if a.get("sha256") != b.get("sha256"):
            same = a.get("count") == b.get("count")
            found.append(f"{split}: {a.get('count')} files -> {b.get('count')}" + (" (other files)" if same else ""))
    return found


def check_resume(before: dict, now: dict, allow: bool, run_dir: str) -> list[str]:
    """Raise ``DataError`` when a resumed fit would train on other data; ``allow`` returns the changes instead.

    A first record without ``files`` (written before they were recorded) cannot be compared: nothing to check.
    """
    if "files" not in before:
        return []
    found = changes(before, now)
    if found and not allow:
        raise DataError(
            f"the data changed since the run '{run_dir}' started ({'; '.join(found)}): resuming would train "
            "it on other files. Restore the folder, start a new run, or continue anyway with "
            "--data.init_args.allow_changed_data true (recorded in the run's data-N.json)"
        )
    return found

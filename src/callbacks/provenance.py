"""Where a run's numbers came from: the code (git commit, dirty flag), the packages, the device, the config.

Why: a study's runs are made over days, on several machines, from a repository that keeps
changing. Two runs whose accuracies are compared must have run the same code on the same
config; ``efficiency.json`` carries this record so the report can list it per run and flag the
runs that differ from the rest.

Nothing here may stop a run: every probe that fails (no git, not a repository, no
``/proc/cpuinfo``, a config that does not serialise) gives ``None`` for its field.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from src.machine import cpu_features, cpu_model

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics")
# The package this file belongs to lives at <repo>/src: the repository the code runs from.
CODE_ROOT = Path(__file__).resolve().parents[2]
# Left out of the config's hash: where a command started from, not what it trains.
UNHASHED_CONFIG_KEYS = ("ckpt_path",)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git repository whose top level is ``root``; ``(None, None)`` otherwise.

    ``dirty``: a tracked file differs from the commit (untracked files -- run outputs, notes -- do not
    count). ``root`` must be the repository's top level itself: code installed into a virtual
    environment that happens to sit inside some other repository is not that repository's code.
    """

    root = CODE_ROOT if root is None else root  # read at call time: a source archive has no repository at all

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None, None
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None
    return commit, dirty


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that compute a run's numbers, and Python's."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, the CPU's model otherwise."""
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            return "cuda (name unavailable)"
    if device.type == "cpu":
        return cpu_model()
    return device.type


def _jsonable(value: Any) -> Any:
    """Config values as JSON; objects by their repr without memory addresses (stable between processes)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _ADDRESS.sub("", repr(value))


def config_sha256(config: dict[str, Any] | None) -> str | None:
    """SHA-256 of the config as canonical JSON (sorted keys, no spaces), ``ckpt_path`` left out.

    For a CLI run, ``config`` is ``yaml.safe_load`` of the ``config.yaml`` it saved, so the hash can
    be checked from that file alone.
    """
    if config is None:
        return None
    kept = {key: value for key, value in config.items() if key not in UNHASHED_CONFIG_KEYS}
    try:
        text = json.dumps(_jsonable(kept), sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def untracked_code(root: Path | None = None) -> list[str] | None:
    """The Python files this process imported from inside the repository that git does not track (a fork's own
    model in a new, uncommitted file), relative to the top level; ``None`` outside a repository or without git.

    ``git status --untracked-files=no`` cannot see them, yet they decide what the run computed.
    """
    root = CODE_ROOT if root is None else root
    here = root.resolve()
    imported = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            resolved = Path(path).resolve()
            if here in resolved.parents:
                imported.append(resolved.relative_to(here).as_posix())
    if not imported:
        return []
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z", "--", *sorted(set(imported))],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return sorted(name for name in done.stdout.split("\0") if name)


def provenance(device: torch.device, config: dict[str, Any] | None, root: Path | None = None) -> dict[str, Any]:
    """The ``provenance`` record of ``efficiency.json`` (see the module docstring). ``git_dirty`` is also true
    when the run imported code git does not track (``untracked_code``, listed)."""
    commit, dirty = git_state(root)
    untracked = untracked_code(root) if commit is not None else None
    return {
        "git_commit": commit,
        "git_dirty": dirty or bool(untracked) if dirty is not None else None,
        "untracked_code": untracked,
        "packages": package_versions(),
        "device": device_name(device),
        "cpu": cpu_model(),  # also on a GPU: the host's speed matters to small nets, and timings cite it
        "cpu_features": cpu_features(),
        "torch_threads": torch.get_num_threads(),  # CPU numerics can differ with the thread count (sweep --jobs)
        "config_sha256": config_sha256(config),
    }

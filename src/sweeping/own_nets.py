"""Your own network in a study: an ``archs`` entry that names a class path instead of a built-in architecture.

    archs:
      - resnet20
      - plain20
      - {name: smallcnn, net_class: myfork.models.SmallCNN, net_args: {width: 16}}

Why a name of its own: the run folders, the sweep's lines, ``efficiency.json``'s ``arch``, the report's rows
and lesion / prune all say ``smallcnn``, so the net is planned, labelled and compared as itself (a built-in
name plus ``args: {model.net_class: ...}`` would label every run of it as that built-in net). Each run gets
``--model.arch smallcnn --model.net_class ... --model.net_args ...``; the classifier records the name
(``src.modules.classifier``). The class is imported by the runs, not by the sweep, so ``--dry-run`` and
``report --check`` never import it.
"""

from __future__ import annotations

import re
from typing import Any

from src.sweeping.pruned_nets import EXAMPLE as PRUNED_EXAMPLE
from src.sweeping.pruned_nets import is_pruned_entry, parse_pruned

NET_KEYS = ("name", "net_class", "net_args")
EXAMPLE = "{name: smallcnn, net_class: myfork.models.SmallCNN, net_args: {width: 16}}"
CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def split_archs(entries: list[Any]) -> tuple[list[Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """``archs`` as names (built-in names as given, your nets and pruned entries by their ``name``), your nets by
    name, and the pruned entries by name (``src.sweeping.pruned_nets``).

    ``ValueError`` for an entry that is neither a name nor a mapping of ``NET_KEYS`` with a ``name`` and a
    dotted ``net_class`` (nor a pruned entry); checking names against the built-in grammar is the study's job.
    """
    names: list[Any] = []
    nets: dict[str, dict[str, Any]] = {}
    pruned: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            names.append(entry)
            continue
        if is_pruned_entry(entry):
            pruned_name, spec = parse_pruned(entry)
            names.append(pruned_name)
            pruned[pruned_name] = spec
            continue
        unknown = sorted(set(entry) - set(NET_KEYS))
        if unknown:
            raise ValueError(
                f"an 'archs' entry has unknown keys {unknown}; your own network is {EXAMPLE}, a pruned one "
                f"{PRUNED_EXAMPLE}"
            )
        name, class_path, net_args = entry.get("name"), entry.get("net_class"), entry.get("net_args")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.+-]+", name):
            raise ValueError(f"your network's 'name' must be a folder name (letters, digits, _ . + -), got {name!r}")
        if not isinstance(class_path, str) or not CLASS_PATH.fullmatch(class_path):
            raise ValueError(
                f"{name}: 'net_class' must be a dotted class path like myfork.models.SmallCNN, got {class_path!r}"
            )
        if net_args is not None and not isinstance(net_args, dict):
            raise ValueError(f"{name}: 'net_args' must be a mapping of the class's arguments, got {net_args!r}")
        names.append(name)
        nets[name] = {"net_class": class_path, **({"net_args": net_args} if net_args else {})}
    return names, nets, pruned


def unknown_name_hint(name: Any) -> str:
    """What to add to the grammar's error when an ``archs`` entry is not a built-in name."""
    if isinstance(name, str) and CLASS_PATH.fullmatch(name):
        return f"; to put your own class in a study, give it a name: {EXAMPLE.replace('myfork.models.SmallCNN', name)}"
    return f"; your own network goes in as {EXAMPLE}"


def net_args_for(nets: dict[str, dict[str, Any]], arch: str) -> list[tuple[str, Any]]:
    """The settings a run of ``arch`` gets for being your own network (none for a built-in name)."""
    net = nets.get(arch)
    if net is None:
        return []
    return [(f"model.{key}", value) for key, value in net.items()]

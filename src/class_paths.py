"""From a config's ``class_path`` to the class it names: one place, for every reader of saved configs.

Why: the loggers (is this a directory logger?), the machine settings (is this callback ``CompileModel``?)
and the checkpoint loader (which model / DataModule class wrote this?) all turn a dotted path into a
class; they differ only in what a path that does not import means (``None`` here, an error there).
"""

from __future__ import annotations

import importlib
from typing import Any

from jsonargparse import Namespace  # a parsed config entry; dicts are saved ones


def import_class(class_path: str) -> Any:
    """The object ``package.module.Name`` names; raises ``ImportError`` / ``AttributeError`` if there is none."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def entry_class(entry: Any) -> type | None:
    """The class a config entry (``{"class_path": ..., "init_args": ...}``) names.

    ``None`` for anything else: ``true``/``false``/``null``, a short name without a module, a path that
    does not import (a saved config from another version of the code), or an object that is not a class.
    """
    class_path = entry.get("class_path") if isinstance(entry, (Namespace, dict)) else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    try:
        found = import_class(class_path)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None

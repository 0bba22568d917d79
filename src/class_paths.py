"""From a config's ``class_path`` to the class it names: one place, for every reader of saved configs.

Why: the loggers (is this a directory logger?), the machine settings (is this callback ``CompileModel``?)
and the checkpoint loader (which model / DataModule class wrote this?) all turn a dotted path into a
class; they differ only in what a path that does not import means (``None`` here, an error there).

A class path read from a *file from elsewhere* (a downloaded checkpoint, a colleague's run) is data, never
code: ``trusted_class`` resolves it only to a subclass of the kind the reader expects (an ``nn.Module``, a
LightningModule, a DataModule, ...), checked before anything is called, and imports a module only when that
import runs no code a user did not already choose to run: a module already loaded in this process, or one
under the current directory (a fork's own package). Anything else is refused in one line naming the key.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

from jsonargparse import Namespace  # a parsed config entry; dicts are saved ones


class UntrustedClassError(ValueError):
    """A class path from a file names something that is not a class of the expected kind (or unloaded code)."""


def import_class(class_path: str) -> Any:
    """The object ``package.module.Name`` names; raises ``ImportError`` / ``AttributeError`` if there is none.

    The one place ``src`` turns a dotted path into an object: every other function here, and every reader of
    a class path in the project, goes through it.
    """
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _what(found: Any) -> str:
    return f"the class {found.__name__}" if isinstance(found, type) else f"a {type(found).__name__}"


def config_class(class_path: Any, base: type, kind: str, key: str, example: str) -> type:
    """The subclass of ``base`` that a class path *the user wrote* names (``model.net_class``, a metric's
    ``class_path``): the user chose to run that code. ``kind`` names ``base`` in messages. ``ValueError``
    saying what is wrong otherwise, e.g. ``model.net_class 'torch.optim.SGD' is the class SGD, not a
    torch.nn.Module subclass``.
    (A class path read from a *file from elsewhere* goes through ``trusted_class`` instead.)
    """
    if not isinstance(class_path, str) or not class_path.strip(".") or "." not in class_path.strip("."):
        raise ValueError(f"{key} {class_path!r} is not a dotted import path such as {example}")
    module, _, name = class_path.rpartition(".")
    try:
        found = import_class(class_path)
    except ImportError as error:
        raise ValueError(f"{key}: cannot import {class_path!r} ({error})") from None
    except AttributeError:
        raise ValueError(f"{key}: cannot import {class_path!r} (module {module!r} has no {name!r})") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(f"{key} {class_path!r} is {_what(found)}, not a {kind} subclass (e.g. {example})")
    return found


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


def importable_without_new_code(module: str) -> bool:
    """Whether importing ``module`` runs only code this process or the user's own directory already holds.

    A loaded module (or a submodule of a loaded package: torch, lightning, src, ...) is fine; otherwise the
    top-level package must live under the current directory (a fork's own code). ``find_spec`` of a
    top-level name locates it without executing it. The standard library and other installed packages that
    are not loaded yet are refused: their import alone can act (``antigravity`` opens a browser).
    """
    top = module.split(".")[0]
    if module in sys.modules or top in sys.modules:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) or next(iter(getattr(spec, "submodule_search_locations", None) or []), None)
    if not origin:
        return False
    here = os.path.realpath(os.getcwd())
    return os.path.commonpath([here, os.path.realpath(origin)]) == here


def trusted_class(class_path: Any, base: type | tuple[type, ...], key: str, source: str) -> type:
    """The class ``class_path`` names, if it is a subclass of ``base``; ``UntrustedClassError`` otherwise.

    ``key`` (``hyper_parameters.net_class``) and ``source`` (the file's path) go into the message.
    Nothing the path names is called, and no new module is imported unless it lies under the current
    directory (see ``importable_without_new_code``).
    """
    kinds = " or ".join(b.__name__ for b in (base if isinstance(base, tuple) else (base,)))
    refused = f"{source}: {key} {class_path!r} is refused: a file from elsewhere may name only a {kinds} class"
    if not isinstance(class_path, str) or "." not in class_path.strip("."):
        raise UntrustedClassError(f"{refused} (not a dotted class path)")
    module, _, name = class_path.rpartition(".")
    if not importable_without_new_code(module):
        raise UntrustedClassError(
            f"{refused} from code already loaded or under the current directory, and {module!r} is neither "
            "(checkpoints are data, never code: see docs/runs.md#checkpoints-from-elsewhere)"
        )
    try:
        found = import_class(class_path)
    except (ImportError, AttributeError) as error:
        raise UntrustedClassError(f"{refused} (it does not import here: {error})") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise UntrustedClassError(f"{refused}, and it names {_what(found)}")
    return found


CLASS_PATH_KEYS = ("class_path", "net_class", "_instantiator")


def foreign_class_paths(config: Any) -> list[str]:
    """The class paths in a (nested) config whose import would run code neither loaded here nor under the
    current directory: what a check of committed files (``report --check``) must not import."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            if key in CLASS_PATH_KEYS and isinstance(value, str) and "." in value:
                if not importable_without_new_code(value.rpartition(".")[0]):
                    found.append(value)
            else:
                found += foreign_class_paths(value)
    elif isinstance(config, list):
        for item in config:
            found += foreign_class_paths(item)
    return found

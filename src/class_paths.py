"""From a config's ``class_path`` to the class it names: one place, for every reader of saved configs.

Why: the loggers (is this a directory logger?), the machine settings (is this callback ``CompileModel``?)
and the checkpoint loader (which model / DataModule class wrote this?) all turn a dotted path into a
class; they differ only in what a path that does not import means (``None`` here, an error there).

A class path read from a *file from elsewhere* (a downloaded checkpoint, a colleague's run) is data, never
code: ``trusted_class`` resolves it only to a subclass of the kind the reader expects (an ``nn.Module``, a
LightningModule, a DataModule, ...), checked before anything is called, and imports a module only when that
import runs no code a user did not already choose to run: that very module already loaded in this process,
one of this project's or of the libraries it builds on (``TRUSTED_PACKAGES``), or one under the current
directory or a ``PYTHONPATH`` folder (a fork's own package); never a ``__main__`` module. Anything else
is refused in one line naming the key. A file names code in more places than its class paths (a callable
given by name: an optimizer, a ``LambdaCallback`` hook): ``names_in`` finds every string that could name
code, ``trusted_name`` checks one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from jsonargparse import Namespace  # a parsed config entry; dicts are saved ones

from src.files import resolves_inside


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
    does not import (a saved config from another version of the code), an object that is not a class, or a
    module whose import would run code neither loaded nor trusted (``importable_without_new_code``): the
    entry may come from a checkpoint's saved config, and asking what it is must not run it. (An entry the
    user's own config gave was imported when the config was parsed, so it is loaded here.)
    """
    class_path = entry.get("class_path") if isinstance(entry, (Namespace, dict)) else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    if not importable_without_new_code(class_path.rpartition(".")[0]):
        return None
    try:
        found = import_class(class_path)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


PROJECT = __name__.partition(".")[0]  # this project's package: ``src``
# The libraries whose classes the project's configs name (optimizers, schedulers, metrics, callbacks, loggers):
# importing one of their modules defines code, and it is code this project runs anyway.
TRUSTED_PACKAGES = (
    PROJECT,
    "torch",
    "torchvision",
    "torchmetrics",
    "lightning",
    "lightning_fabric",
    "pytorch_lightning",
)
# ``python -m X`` runs ``X.__main__``: importing such a module *is* running a program (``unittest.__main__``).
MAIN_MODULES = ("__main__", "__mp_main__")
# What an import path looks like: dotted identifiers, ``package.module.Name`` (``efficiency.json`` too: see
# ``trusted_name`` for how a string that names nothing importable is told apart).
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _top_level_spec(top: str) -> Any:
    """``find_spec`` of a top-level name (locates it without executing it), ``None`` if there is none."""
    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None


def users_folders() -> list[str]:
    """Where the user's own code lives: the current directory and the folders ``PYTHONPATH`` names.

    Code there is code the user chose to run (a fork's package beside ``src``, or put on ``PYTHONPATH`` as
    docs/fork.md does); a file naming it runs nothing the user's own commands would not.
    """
    listed = [os.getcwd(), *(folder for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep) if folder)]
    return [os.path.realpath(folder) for folder in listed]


def _users_own_code(top: str) -> bool:
    """Whether the top-level package ``top`` lives in one of ``users_folders`` (a fork's own code).

    Only a file's path counts: a built-in or frozen module's ``origin`` is the word ``built-in`` / ``frozen``,
    which a relative path check would place here (``posix``, home of ``os.system``).
    """
    spec = _top_level_spec(top)
    origin = getattr(spec, "origin", None) or next(iter(getattr(spec, "submodule_search_locations", None) or []), None)
    if not isinstance(origin, str) or not os.path.isabs(origin):
        return False
    return any(resolves_inside(origin, folder, folder_itself=True) for folder in users_folders())


def importable_without_new_code(module: str) -> bool:
    """Whether importing ``module`` runs only code this process, the project or the user's folders hold.

    Trusted: that very module already loaded (not merely its top-level package: ``unittest`` loaded says
    nothing of ``unittest.__main__``), a module of ``TRUSTED_PACKAGES``, or one whose top-level package
    lives under the current directory or a ``PYTHONPATH`` folder (a fork's own code, ``users_folders``;
    ``find_spec`` of a top-level name locates it without executing it). Never a ``__main__`` module,
    whose import runs a program. The standard library and other installed packages that are not loaded
    yet are refused: their import alone can act (``antigravity`` opens a browser, ``this`` prints).
    """
    parts = module.split(".")
    if any(part in MAIN_MODULES for part in parts):
        return False
    if module in sys.modules or parts[0] in TRUSTED_PACKAGES:
        return True
    return _users_own_code(parts[0])


def _exists(module: str) -> bool:
    """Whether an import of ``module`` could find anything at all (loaded, or its top-level package is installed)."""
    return module in sys.modules or _top_level_spec(module.split(".")[0]) is not None


def _home(found: Any, module: str) -> str:
    """The module that defines ``found`` (named ``module.X``): its ``__module__``, a module's own name, else
    ``module``."""
    home = found.__name__ if isinstance(found, types.ModuleType) else getattr(found, "__module__", None)
    return home if isinstance(home, str) else module


def _defined_in_trusted_code(found: Any, module: str) -> bool:
    """Whether ``found`` (named ``module.X``) is defined by the project, its libraries or the user's folders."""
    home = _home(found, module)
    top = home.split(".")[0]
    if any(part in MAIN_MODULES for part in home.split(".")):
        return False
    return top in TRUSTED_PACKAGES or _users_own_code(top)


ACCEPTED = (
    "code already loaded in this process, of this project or its libraries ("
    + ", ".join(TRUSTED_PACKAGES)
    + "), or under the current directory or a PYTHONPATH folder (never a __main__ module)"
)


def trusted_class(class_path: Any, base: type | tuple[type, ...], key: str, source: str) -> type:
    """The class ``class_path`` names, if it is a subclass of ``base``; ``UntrustedClassError`` otherwise.

    ``key`` (``hyper_parameters.net_class``) and ``source`` (the file's path) go into the message.
    Nothing the path names is called, and no module is imported unless it is trusted code (see
    ``importable_without_new_code``).
    """
    kinds = " or ".join(b.__name__ for b in (base if isinstance(base, tuple) else (base,)))
    refused = f"{source}: {key} {class_path!r} is refused: a file from elsewhere may name only a {kinds} class"
    if not isinstance(class_path, str) or "." not in class_path.strip("."):
        raise UntrustedClassError(f"{refused} (not a dotted class path)")
    module, _, name = class_path.rpartition(".")
    if not importable_without_new_code(module):
        raise UntrustedClassError(
            f"{refused} from {ACCEPTED}, and {module!r} is none of these "
            "(checkpoints are data, never code: see docs/runs.md#checkpoints-from-elsewhere)"
        )
    try:
        found = import_class(class_path)
    except (ImportError, AttributeError) as error:
        raise UntrustedClassError(f"{refused} (it does not import here: {error})") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise UntrustedClassError(f"{refused}, and it names {_what(found)}")
    return found


def trusted_name(value: str, key: str, source: str, base: type | tuple[type, ...] | None = None) -> None:
    """Check one string of a file from elsewhere that could name code (``names_in``); ``UntrustedClassError``
    (one line: the key, the value, what is accepted) before anything the name would run is imported or called.

    ``base``: the kind of class the key builds (a ``Callback`` for ``trainer.callbacks.0.class_path``); a class
    of another kind is refused. At a key of no known kind (a callable given by name, such as a
    ``LambdaCallback`` hook, which something will call) the object must be defined by trusted code: this
    project, its libraries or the user's folders; ``os.system`` is refused although ``os`` is loaded.
    A string that names nothing importable (``efficiency.json``: no module ``efficiency``) is plain data and
    passes: whatever reads it cannot import it either, so it runs nothing.
    """
    if not DOTTED.fullmatch(value):
        return  # a short class name resolves among the classes already loaded, or not at all
    module = value.rpartition(".")[0]
    if not _exists(module):
        return
    refused = f"{source}: {key} {value!r} is refused: a file from elsewhere may name only"
    found = _reachable(value, refused)  # checks each module before importing it, ``module`` first
    if found is None:
        return  # nothing of that name here: nothing to call
    if base is not None and isinstance(found, type):
        if not issubclass(found, base):
            kinds = " or ".join(b.__name__ for b in (base if isinstance(base, tuple) else (base,)))
            raise UntrustedClassError(f"{refused} a {kinds} class here, and it names {_what(found)}")
    elif not _defined_in_trusted_code(found, module):
        home = _home(found, module)
        raise UntrustedClassError(
            f"{refused} code of this project or its libraries ({', '.join(TRUSTED_PACKAGES)}) or under the "
            f"current directory or a PYTHONPATH folder, and it names {_what(found)} of {home!r}"
        )


def _reachable(value: str, refused: str) -> Any | None:
    """What a loader can reach by the name ``value``: the longest module prefix that imports, then attributes.

    Not only ``import_class``'s ``module.Name``: jsonargparse falls back to an attribute of the parent module
    (``torch.os.system`` is ``os.system``, reached through ``torch``), so every prefix is tried, longest first,
    each checked (``importable_without_new_code``) before it is imported. ``None``: nothing of that name.
    """
    parts = value.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if not importable_without_new_code(module):
            raise UntrustedClassError(
                f"{refused} {ACCEPTED}, and importing {module!r} would run code that is none of these "
                "(checkpoints are data, never code: see docs/runs.md#checkpoints-from-elsewhere)"
            )
        try:
            found: Any = importlib.import_module(module)
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                found = getattr(found, attribute)
        except AttributeError:
            return None
        return found
    return None


def strings_in(config: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """``(key, string)`` for every string in a (nested) config, and in any YAML or JSON text one holds:
    jsonargparse parses a string given where a list or a dict is expected (``trainer.callbacks:
    "[{class_path: this.X}]"``), so what it would parse is walked too. Keys are dotted:
    ``trainer.callbacks.0.init_args.on_test_start``."""
    if isinstance(config, dict):
        for inner, value in config.items():
            yield from strings_in(value, f"{key}.{inner}" if key else str(inner))
    elif isinstance(config, (list, tuple)):
        for index, value in enumerate(config):
            yield from strings_in(value, f"{key}.{index}" if key else str(index))
    elif isinstance(config, str):
        yield key, config
        if any(mark in config for mark in "[{:"):
            try:
                parsed = yaml.safe_load(config)
            except yaml.YAMLError:
                return
            if isinstance(parsed, (dict, list)):
                yield from strings_in(parsed, key)


def names_in(config: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """``(key, string)`` for every string in a (nested) config that could name code (``strings_in``): shaped
    like an import path (``DOTTED``), wherever it is. Which strings a loader imports depends on types this file
    cannot show (a ``Callable`` argument of any class a config names; a nested config file), so every one is a
    candidate."""
    return ((inner, text) for inner, text in strings_in(config, key) if DOTTED.fullmatch(text))


def refuse_untrusted_names(
    config: Any, key: str, source: str, kind: Callable[[str], type | tuple[type, ...] | None] = lambda key: None
) -> None:
    """``trusted_name`` for every name in ``config`` (keys start with ``key``); ``kind(key)`` gives the base a
    key builds (``None``: no known kind). The first untrusted name raises ``UntrustedClassError``."""
    for name_key, value in names_in(config, key):
        trusted_name(value, name_key, source, kind(name_key))


def foreign_class_paths(config: Any) -> list[str]:
    """The names in a (nested) config whose import would run code that is not trusted (neither loaded, nor
    this project's or its libraries', nor the user's own, ``users_folders``): what a check of committed files
    (``report --check``) must not import. Every string shaped like an import path counts (``names_in``),
    not only ``class_path`` values: ``model.optimizer: this.nothing`` is imported too. Nothing is imported here.
    """
    return [
        value
        for _, value in names_in(config)
        if _exists(value.rpartition(".")[0]) and not importable_without_new_code(value.rpartition(".")[0])
    ]

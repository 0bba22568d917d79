"""A fork's own network, named in the config by ``class_path``: no edit to ``build_model`` or the grammar.

    model:
      net_class: my_fork.models.TinyNet   # the class path of any torch.nn.Module subclass (importable)
      net_args: {width: 32}               # its own arguments; num_classes / in_channels come from the data

(Two flat keys rather than a ``{class_path, init_args}`` mapping: jsonargparse treats such a mapping as
one of its own subclass specs and fails to merge it with a checkpoint's config on resume.)

The class is imported, checked to be an ``nn.Module`` subclass, and called with ``net_args`` plus
``num_classes`` (required: the head must match the data) and ``in_channels`` (when its ``__init__``
takes it, or takes ``**kwargs``). Both come from the DataModule, as for the named networks, so a
fork's net trains on CIFAR-100 or a folder of 37 classes without a config change.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from src.class_paths import config_class

FROM_THE_DATA = ("num_classes", "in_channels")


def net_class(class_path: Any) -> type[nn.Module]:
    """The ``nn.Module`` subclass that ``class_path`` names; ``ValueError`` saying what is wrong otherwise."""
    return config_class(class_path, nn.Module, "torch.nn.Module", "model.net_class", "my_fork.models.TinyNet")


def build_net(class_path: str, net_args: Mapping[str, Any] | None, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Instantiate the class ``class_path`` names with ``net_args`` and the data's ``num_classes`` / ``in_channels``."""
    cls = net_class(class_path)
    if net_args is not None and not isinstance(net_args, Mapping):
        raise ValueError(f"model.net_args must be a mapping of the net's arguments, got {net_args!r}")
    init_args = dict(net_args or {})
    given = [key for key in FROM_THE_DATA if key in init_args]
    if given:
        raise ValueError(
            f"model.net_args sets {given}: these come from the data (the DataModule's num_classes / in_channels)"
        )
    parameters = inspect.signature(cls).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "num_classes" not in parameters and not open_ended:
        raise ValueError(
            f"{cls.__qualname__}.__init__ takes no num_classes: the data's class count must reach the network's head "
            "(add a num_classes argument)"
        )
    extra = {"num_classes": num_classes}
    if "in_channels" in parameters or open_ended:
        extra["in_channels"] = in_channels
    try:
        return cls(**init_args, **extra)
    except TypeError as error:  # a misspelt init_args key, a missing argument
        raise ValueError(f"model.net_args: {cls.__qualname__}({', '.join(init_args)}): {error}") from None


def net_name(class_path: str) -> str:
    """What runs record as the architecture of a plugged-in net: its class name (``TinyNet``)."""
    return str(class_path).rpartition(".")[2]

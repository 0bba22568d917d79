"""Architecture names: one grammar, one parser, and the registry of the families that give names meaning.

Every name reads ``[<prefix>_]<kind><depth>[_<width>]`` (``resnet20``, ``plain56_4``, ``wrn28_10``,
``preact_resnet164``, ``wide_resnet50_2``); its *stem* is ``<prefix>_<kind>`` without the numbers. A
**family** (``Family``) owns stems, reads what a name of its stems means (``ArchSpec``: residual or plain,
depth, width, block kind), builds the network, says whether it widens, which shortcut option its residual
nets use, and which block classes diagnostics and lesions look for. ``build_model``, the CLI
(``--model.arch``), the sweep (a study's ``archs`` and ``widths``), the report, lesion and prune all read
a name through ``arch_spec`` here, so a name means the same network everywhere and a bad name gets the
same one-line error, listing every registered family's valid forms.

The built-in families register themselves where their blocks are: ``cifar`` (He et al. 2015, section 4.2:
``resnet<d>`` / ``plain<d>``, ``d = 6n + 2``, any width) in ``cifar_resnet.py``; ``imagenet`` (torchvision's
ResNet-18...152 and its wide nets) in ``imagenet_resnet.py``; ``wrn`` (Zagoruyko & Komodakis 2016) and
``preact`` (He et al. 2016) in ``preact_resnet.py``. A fork adds a family in one file of its own
(``register(Family(...))``) and names that module in an entry point of the group ``FAMILY_ENTRY_POINTS``
(docs/fork.md): every process (the CLI, the sweep's runs, the report, lesion, prune) loads it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from torch import nn

FAMILY_ENTRY_POINTS = "resnet_efficiency.families"  # modules that register a Family when imported
_NAME = re.compile(r"^(?P<prefix>(?:[a-z]+_)*)(?P<kind>[a-z]+)(?P<depth>\d+)(?:_(?P<width>\d+))?$")


@dataclass(frozen=True)
class ArchSpec:
    """What a name says about its network.

    Attributes:
        name: the name as read (stripped, lower case).
        family: the registered family that owns it (``cifar``, ``imagenet``, ``wrn``, ``preact``, a fork's).
        residual: whether the blocks add shortcuts (False: the plain twin).
        depth: the depth in the name (weighted layers, as each paper counts them).
        width: the width multiplier ``k`` (1: the paper's widths).
        block: ``basic`` or ``bottleneck`` (or a fork's own kind).
        stem: the name without its numbers (``plain_wrn`` for ``plain_wrn16_8``).
    """

    name: str
    family: str
    residual: bool
    depth: int
    width: int = 1
    block: str = "basic"
    stem: str = ""

    @property
    def input_size(self) -> int:
        """The image side the family was designed for (CIFAR 32, ImageNet 224)."""
        return family(self.family).input_size

    @property
    def line(self) -> str:
        """The name without its depth (``resnet20_4`` -> ``resnet_4``): nets of one line differ only in depth."""
        return family(self.family).line(self)


@dataclass(frozen=True)
class NameParts:
    """A name cut along the grammar: what a family's ``parse`` reads."""

    arch: Any  # as given, for messages
    name: str
    prefix: str  # "" or "wide_", "plain_", "preact_", ...
    kind: str
    depth: int
    width: int | None  # None: no ``_<k>`` suffix

    @property
    def stem(self) -> str:
        return self.prefix + self.kind

    def error(self, reason: str, suggest: bool = False) -> ValueError:
        return name_error(self.arch, reason, suggest)


def default_line(spec: ArchSpec) -> str:
    """A line is the stem, plus ``_<k>`` when widened (``resnet20_1`` is on ``resnet20``'s line)."""
    return spec.stem + (f"_{spec.width}" if spec.width != 1 else "")


@dataclass(frozen=True)
class Family:
    """A family of named networks: everything the project needs to know about it, in one place.

    Attributes:
        name: the family's name (``ArchSpec.family``).
        stems: the name stems it owns (``("resnet", "plain", "cifar_resnet", "cifar_plain")``). Two
            families may share a stem; each ``parse`` then claims its own names and declines the rest.
        parse: ``NameParts -> ArchSpec``; ``None`` to decline a name of a shared stem; raises
            ``parts.error(reason)`` for a name of its own that is not valid.
        build: ``(spec, num_classes, in_channels, shortcut, dropout, pooling, block_dropout) -> nn.Module``
            (``shortcut`` is None unless the user set it).
        forms: its valid forms, for the error message of a bad name.
        examples: names for docs/models.md (``scripts/model_table.py``), in table order.
        shortcut: the shortcut option its residual nets use by default (``A``: zero-padding, ``B``:
            projections where the shape changes), shown in the report.
        input_size: the image side it was designed for.
        widen: ``(spec, k) -> name`` at width multiplier ``k`` (a study's ``widths``); None: no multiplier.
        no_width: why it has no width multiplier (when ``widen`` is None).
        block_types: its block classes, in which diagnostics and lesions find branch and shortcut
            (``src.models.blocks``: a block with ``residual``, ``downsample``, ``conv1``/``conv2`` and the
            branch's last norm ``bn2`` or a ``branch_last`` module works as it is).
        line: the name without its depth, for the report's lines (default: stem, plus ``_<k>`` if widened).
        order: where it sorts among the families (error messages, docs/models.md); a fork's default: last.
    """

    name: str
    stems: tuple[str, ...]
    parse: Callable[[NameParts], ArchSpec | None]
    build: Callable[..., nn.Module]
    forms: str
    examples: tuple[str, ...] = ()
    shortcut: str = "B"
    input_size: int = 32
    widen: Callable[[ArchSpec, int], str] | None = None
    no_width: str = "its names take no width multiplier"
    block_types: tuple[type, ...] = field(default=())
    line: Callable[[ArchSpec], str] = default_line
    order: int = 1000


_FAMILIES: dict[str, Family] = {}


def register(new: Family) -> Family:
    """Add a family (its module calls this when imported); a second family of the same name is refused."""
    if new.name in _FAMILIES and _FAMILIES[new.name] is not new:
        raise ValueError(f"a model family named {new.name!r} is registered already ({_FAMILIES[new.name].forms})")
    _FAMILIES[new.name] = new
    return new


def _load_fork_families() -> None:
    """Import every module named in the ``FAMILY_ENTRY_POINTS`` group: each registers its family."""
    for entry in metadata.entry_points(group=FAMILY_ENTRY_POINTS):
        entry.load()


def families() -> list[Family]:
    """Every registered family, by ``order`` (the built-ins first, then a fork's)."""
    if not getattr(families, "_forks_loaded", False):
        families._forks_loaded = True  # type: ignore[attr-defined]
        _load_fork_families()
    return sorted(_FAMILIES.values(), key=lambda f: f.order)  # stable: registration order within an order


def family(name: str) -> Family:
    """The registered family ``name``; ``ValueError`` naming the registered ones otherwise."""
    for candidate in families():
        if candidate.name == name:
            return candidate
    raise ValueError(f"no model family {name!r}; registered: {[f.name for f in families()]}")


def valid_forms() -> str:
    return "valid: " + "; ".join(f.forms for f in families())


def name_error(arch: object, reason: str, suggest: bool = False) -> ValueError:
    """The one message for a bad name. With ``suggest`` (a name outside the grammar, a typo): the nearest known
    name and its family's forms when one is close; else every family's forms (docs/models.md lists every name)."""
    if isinstance(arch, str) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", arch):
        return ValueError(
            f"Unknown architecture {arch!r}: a class path, not a name: give it as model.net_class (in a study: "
            f"an 'archs' entry {{name: ..., net_class: {arch}}})"
        )
    if suggest and isinstance(arch, str):
        named = {example: f for f in families() for example in f.examples}
        close = difflib.get_close_matches(arch.strip().lower(), list(named), n=1, cutoff=0.75)
        if close:
            return ValueError(
                f"Unknown architecture {arch!r}: {reason}; did you mean {close[0]!r}? valid: {named[close[0]].forms} "
                "(every family: docs/models.md)"
            )
    return ValueError(f"Unknown architecture {arch!r}: {reason}; {valid_forms()}")


def arch_spec(arch: str) -> ArchSpec:
    """Parse an architecture name: the one parser. ``ValueError`` with every valid form if it is bad."""
    if not isinstance(arch, str):
        raise name_error(arch, "not a string")
    name = arch.strip().lower()
    match = _NAME.match(name)
    if match is None:
        raise name_error(arch, "not a name of this grammar", suggest=True)
    width = int(match["width"]) if match["width"] is not None else None
    parts = NameParts(arch, name, match["prefix"], match["kind"], int(match["depth"]), width)
    if width is not None and width < 1:
        raise parts.error(f"width {width}: the width multiplier k must be an integer >= 1")
    owners = [f for f in families() if parts.stem in f.stems]
    for owner in owners:
        spec = owner.parse(parts)
        if spec is not None:
            return spec
    if not owners:
        raise parts.error("not a name of this grammar", suggest=True)
    raise parts.error(f"no {parts.stem} network of this depth")


def with_width(arch: str, width: int) -> str:
    """``arch`` at width multiplier ``width``: ``resnet20`` -> ``resnet20_2`` (``width = 1`` keeps the name).

    What a study's ``widths`` crosses its ``archs`` with; a family without a multiplier is refused with a
    ``ValueError`` saying why (``Family.no_width``).
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width {width!r}: a width multiplier k must be an integer >= 1 (e.g. widths: [1, 2, 4])")
    spec = arch_spec(arch)
    owner = family(spec.family)
    if owner.widen is None:
        raise ValueError(f"{arch!r} has no width multiplier to cross with 'widths': {owner.no_width}")
    return owner.widen(spec, width)


def refuse_block_dropout(spec: ArchSpec, block_dropout: float) -> None:
    """For families without dropout inside their blocks: a ``block_dropout`` is an error, not ignored."""
    if block_dropout:
        raise ValueError(
            f"block_dropout (dropout between a block's two 3x3 convolutions, the WRN paper's) applies to wrn and basic "
            f"preact nets, not to {spec.name}; dropout before the head is 'dropout'"
        )


def refuse_shortcut_option(spec: ArchSpec, shortcut: str | None) -> None:
    """For families whose shortcuts are projections where shapes change (option B), as their papers' are."""
    if shortcut not in (None, "B") and spec.residual:
        raise ValueError(
            f"{spec.name} uses projection shortcuts where shapes change (option B); got shortcut={shortcut!r}"
        )

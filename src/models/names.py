"""Architecture names: one grammar, parsed here and nowhere else.

``build_model``, the CLI (``--model.arch``), the sweep (``--arch`` / a study's ``archs``) and the
report all read a name through ``arch_spec``, so a name means the same network everywhere and a bad
name gets the same one-line error, listing every valid form (``VALID_FORMS``):

* ``resnet<d>`` / ``plain<d>``: He et al. (2015). ``d`` in 18, 34, 50, 101, 152 is the ImageNet
  network (torchvision's); any other ``d = 6n + 2`` is the CIFAR network of section 4.2.
* ``resnet<d>_<k>`` / ``plain<d>_<k>``: the CIFAR network with stage widths ``16k / 32k / 64k``
  (``_1`` is the plain name's network); ``cifar_resnet<d>[_<k>]`` / ``cifar_plain<d>[_<k>]`` force
  the CIFAR network where ``d`` is also an ImageNet depth (50, 152).
* ``wrn<d>_<k>`` / ``plain_wrn<d>_<k>``: Wide ResNet WRN-d-k (Zagoruyko & Komodakis, 2016),
  ``d = 6n + 4``, and its plain twin.
* ``preact_resnet<d>``: pre-activation ResNet (He et al., 2016). Like torchvision's ImageNet table,
  the depth picks the block: basic blocks for ``d = 6n + 2``, bottleneck blocks for ``d = 9n + 2``;
  where both fit (``d = 18m + 2``) the paper's choice decides: basic up to 110 (ResNet-110), bottleneck
  from 164 (ResNet-164, ResNet-1001). ``preact_resnet11`` is the smallest bottleneck net. It has no plain twin of its
  own: without shortcuts the basic net is ``plain_wrn<d + 2>_1`` (the WRN paper counts the two
  projection shortcuts in its depth), and a plain bottleneck net is not a network either paper trains.
* ``wide_resnet<d>_<k>`` / ``wide_plain<d>_<k>``: torchvision's wide ImageNet ResNets
  (``wide_resnet50_2``, ``wide_resnet101_2``: bottleneck inner width ``64k``), ``d`` in 50, 101, 152.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
IMAGENET_BOTTLENECK_DEPTHS = (50, 101, 152)
FAMILIES = ("cifar", "imagenet", "wrn", "preact")
PREACT_BOTTLENECK_FROM = 164  # He et al. (2016): ResNet-164 and -1001 are bottleneck nets, ResNet-110 is not

VALID_FORMS = (
    "valid: resnet<d>|plain<d> (CIFAR d = 6n+2: resnet20, resnet56, resnet110, resnet1202; "
    "ImageNet d in 18, 34, 50, 101, 152: resnet18, resnet152); "
    "resnet<d>_<k>|plain<d>_<k> (CIFAR, stage widths 16k/32k/64k, k >= 1: resnet20_4); "
    "cifar_resnet<d>[_<k>]|cifar_plain<d>[_<k>] (force the CIFAR net); "
    "wrn<d>_<k>|plain_wrn<d>_<k> (Wide ResNet, d = 6n+4: wrn16_8, wrn28_10); "
    "preact_resnet<d> (pre-activation: basic d = 6n+2, e.g. preact_resnet110; bottleneck d = 9n+2, e.g. "
    "preact_resnet11, preact_resnet164, preact_resnet1001 (both fit: basic below 164); no plain twin); "
    "wide_resnet<d>_<k>|wide_plain<d>_<k> (torchvision's wide ImageNet nets, d in 50, 101, 152: wide_resnet50_2)"
)

_NAME = re.compile(
    r"^(?P<prefix>cifar_|preact_|wide_|plain_)?(?P<kind>resnet|plain|wrn)(?P<depth>\d+)(?:_(?P<width>\d+))?$"
)


@dataclass(frozen=True)
class ArchSpec:
    """What a name says about its network.

    Attributes:
        name: the name as read (stripped, lower case).
        family: ``cifar`` (He et al.'s CIFAR nets, any width), ``imagenet`` (torchvision's, wide ones
            included), ``wrn`` or ``preact``.
        residual: whether the blocks add shortcuts (False: the plain twin).
        depth: the depth in the name (weighted layers, as each paper counts them).
        width: the width multiplier ``k`` (1: the paper's widths).
        block: ``basic`` or ``bottleneck``.
    """

    name: str
    family: str
    residual: bool
    depth: int
    width: int = 1
    block: str = "basic"

    @property
    def input_size(self) -> int:
        """The image side the family was designed for (CIFAR 32, ImageNet 224)."""
        return 224 if self.family == "imagenet" else 32

    @property
    def line(self) -> str:
        """The name without its depth (``resnet20_4`` -> ``resnet_4``): nets of one line differ only in depth."""
        match = _NAME.match(self.name)
        assert match is not None
        widened = self.family == "wrn" or self.width != 1  # resnet20_1 is resnet20's line
        stem = (match["prefix"] or "") + match["kind"] + (f"_{self.width}" if widened else "")
        return f"{stem}-bottleneck" if self.family == "preact" and self.block == "bottleneck" else stem


def _error(arch: object, reason: str) -> ValueError:
    return ValueError(f"Unknown architecture {arch!r}: {reason}; {VALID_FORMS}")


def arch_spec(arch: str) -> ArchSpec:
    """Parse an architecture name (see the module docstring); ``ValueError`` with every valid form if it is bad."""
    if not isinstance(arch, str):
        raise _error(arch, "not a string")
    name = arch.strip().lower()
    match = _NAME.match(name)
    if match is None:
        raise _error(arch, "not a name of this grammar")
    prefix, kind, depth = match["prefix"] or "", match["kind"], int(match["depth"])
    width = int(match["width"]) if match["width"] is not None else None
    if width is not None and width < 1:
        raise _error(arch, f"width {width}: the width multiplier k must be an integer >= 1")
    if kind == "wrn":
        return _wrn(arch, name, prefix, depth, width)
    if prefix == "plain_":
        raise _error(arch, "the 'plain_' prefix names the plain Wide ResNet only (plain_wrn<d>_<k>)")
    residual = kind == "resnet"
    if prefix == "preact_":
        return _preact(arch, name, residual, depth, width)
    if prefix == "wide_":
        return _wide_imagenet(arch, name, residual, depth, width)
    if not prefix and depth in IMAGENET_DEPTHS:
        if width is not None:
            raise _error(
                arch,
                f"ImageNet ResNet-{depth} has no width suffix; torchvision's wide nets are wide_resnet<d>_<k>, "
                f"the CIFAR net of that depth is cifar_{kind}{depth}_{width}",
            )
        block = "basic" if depth < 50 else "bottleneck"
        return ArchSpec(name, "imagenet", residual, depth, 1, block)
    if depth < 8 or (depth - 2) % 6:
        raise _error(
            arch,
            f"CIFAR depth {depth} is not 6n+2 (n >= 1), and ImageNet depths are {list(IMAGENET_DEPTHS)}",
        )
    return ArchSpec(name, "cifar", residual, depth, width or 1)


def _wrn(arch: str, name: str, prefix: str, depth: int, width: int | None) -> ArchSpec:
    if prefix not in ("", "plain_"):
        raise _error(arch, f"'{prefix}' does not combine with wrn (Wide ResNets are wrn<d>_<k> / plain_wrn<d>_<k>)")
    if width is None:
        raise _error(arch, "a Wide ResNet needs its width: wrn<d>_<k> (WRN-d-k), e.g. wrn16_8")
    if depth < 10 or (depth - 4) % 6:
        raise _error(arch, f"WRN depth {depth} is not 6n+4 (n >= 1: 10, 16, 22, 28, 40, ...)")
    return ArchSpec(name, "wrn", prefix != "plain_", depth, width)


def _preact(arch: str, name: str, residual: bool, depth: int, width: int | None) -> ArchSpec:
    if not residual:
        raise _error(
            arch,
            "the pre-activation family has no plain twin (its subject is the identity path); without shortcuts "
            "a basic pre-activation net is plain_wrn<d+2>_1, and plain<6n+2> is He et al.'s plain baseline",
        )
    if width is not None:
        raise _error(arch, "preact_resnet<d> takes no width; the wide pre-activation nets are wrn<d>_<k>")
    basic_fits, bottleneck_fits = depth >= 8 and (depth - 2) % 6 == 0, depth >= 11 and (depth - 2) % 9 == 0
    if bottleneck_fits and (depth >= PREACT_BOTTLENECK_FROM or not basic_fits):
        return ArchSpec(name, "preact", True, depth, 1, "bottleneck")
    if not basic_fits:
        raise _error(arch, f"pre-activation depth {depth} is neither 6n+2 (basic blocks) nor 9n+2 (bottleneck blocks)")
    return ArchSpec(name, "preact", True, depth, 1, "basic")


def _wide_imagenet(arch: str, name: str, residual: bool, depth: int, width: int | None) -> ArchSpec:
    if depth not in IMAGENET_BOTTLENECK_DEPTHS:
        raise _error(arch, f"wide ImageNet ResNets are bottleneck nets: depth in {list(IMAGENET_BOTTLENECK_DEPTHS)}")
    if width is None:
        raise _error(arch, "a wide ImageNet ResNet needs its width: wide_resnet<d>_<k>, e.g. wide_resnet50_2")
    return ArchSpec(name, "imagenet", residual, depth, width, "bottleneck")


def with_width(arch: str, width: int) -> str:
    """``arch`` at width multiplier ``width``: ``resnet20`` -> ``resnet20_2`` (``width = 1`` keeps the name).

    What a study's ``widths`` crosses its ``archs`` with. Only the CIFAR ResNets and their plain twins have a
    width multiplier to set; a name that already carries a width, a Wide ResNet (its width is in its name),
    a pre-activation net or an ImageNet net is refused with a ``ValueError`` saying why.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width {width!r}: a width multiplier k must be an integer >= 1 (e.g. widths: [1, 2, 4])")
    spec = arch_spec(arch)
    match = _NAME.match(spec.name)
    assert match is not None
    if spec.family != "cifar":
        why = {
            "wrn": "a Wide ResNet's width is in its name (wrn<d>_<k>): list each one under 'archs'",
            "preact": "pre-activation nets take no width (their wide versions are wrn<d>_<k>)",
            "imagenet": "the ImageNet nets take no width multiplier (torchvision's wide ones are wide_resnet<d>_<k>)",
        }[spec.family]
        raise ValueError(f"{arch!r} has no width multiplier to cross with 'widths': {why}")
    if match["width"] is not None:
        stem = f"{match['prefix'] or ''}{match['kind']}{match['depth']}"
        raise ValueError(f"{arch!r} already names its width: list {stem!r} under 'archs' and the widths under 'widths'")
    return arch if width == 1 else f"{spec.name}_{width}"

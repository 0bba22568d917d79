"""Small image-folder trees written on the spot: the folder DataModule's tests never need real data."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", value: int | None = None, seed: int = 0):
    """A ``size`` (width, height) image in PIL ``mode``; ``value`` fills it with one grey level, else noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if value is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.full((height, width, 3), value, dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        image = image.quantize(16)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def write_tree(
    root: Path,
    counts: dict[str, dict[str, int]],
    size: tuple[int, int] = (8, 8),
    mode: str = "RGB",
    ext: str = "png",
    learnable: bool = False,
) -> Path:
    """``root/<split>/<class>/<i>.<ext>`` with ``counts[split][class]`` images each.

    ``learnable``: each class has its own grey level (plus noise), so a small net can tell them apart.
    """
    for split, classes in counts.items():
        for class_index, (name, count) in enumerate(sorted(classes.items())):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())
                if learnable:
                    rng = np.random.default_rng(seed)
                    level = 40 + 170 * class_index / max(1, len(classes) - 1)
                    pixels = np.clip(level + rng.normal(0, 20, (size[1], size[0])), 0, 255).astype(np.uint8)
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels, "L").convert(mode).save(folder / f"{i}.{ext}")
                else:
                    write_image(folder / f"{i}.{ext}", size, mode, seed=seed)
    return root

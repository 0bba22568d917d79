"""Decoding a folder's files: the per-sample dataset, and the one pass that checks every file and measures it.

The check (``probe``) runs once per node and is cached by ``src.data.folder`` (``src.data.folder_cache``);
the per-image channel means it returns give the training split's normalisation statistics
(``channel_stats``) without decoding the files a second time.

Bounded: a file's header is read first (PIL, no pixels) and an image over PIL's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``) is reported as unreadable rather than decoded; every other image is measured
as the model sees it -- resized and cropped to ``image_size`` -- in float64 only at that size, and each image
weighs the same in the statistics. (Weighting by native pixel count let one 16000 x 16000 photo in 451 set the
statistics and took 12.8 GB to measure.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from src.data.base import DataError
from src.data.decode import decode, load_image

Sample = tuple[str, int]


class ImageFiles(Dataset):
    """``(path, label)`` samples, decoded to uint8 ``(channels, H, W)`` and passed through ``transform``."""

    def __init__(self, samples: Sequence[Sample], channels: int, transform: Callable | None = None) -> None:
        self.samples = list(samples)
        self.channels = channels
        self.transform = transform
        self.classes: list[str] | None = None  # names by label index, when the DataModule knows them

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = load_image(path, self.channels)
        return (self.transform(image) if self.transform is not None else image), label


class _Probe(Dataset):
    """Decode each file as the model sees it; return its error (or '') and its per-channel mean and mean square."""

    def __init__(self, paths: Sequence[str], channels: int, size: int | None) -> None:
        self.paths, self.channels, self.size = list(paths), channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, list[float], list[float], int]:
        path = self.paths[index]
        try:
            with Image.open(path) as header:  # the header only: no pixel is decoded here
                width, height = header.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:
                return (f"{width} x {height} pixels: over the decompression-bomb limit of {limit:,} pixels "
                        "(PIL.Image.MAX_IMAGE_PIXELS); shrink the file or raise the limit", [], [], 0)  # fmt: skip
        except Exception:  # noqa: BLE001  (a format PIL cannot open: torchvision's decoder may still; see below)
            pass
        try:
            pixels = decode(path, self.channels, self.size).to(torch.float64).div_(255).flatten(1)
        except Exception as err:  # noqa: BLE001  (any failure to decode is what we report)
            return (f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}", [], [], 0)
        return "", pixels.mean(1).tolist(), pixels.square().mean(1).tolist(), 1


def _as_list(batch: list) -> list:
    return batch


def probe(
    paths: Sequence[str], channels: int, num_workers: int, size: int | None = None
) -> list[tuple[str, list[float], list[float], int]]:
    """Check every file (in ``num_workers`` processes): per file ``(error, channel means, channel mean squares,
    1)`` of the image resized to ``size`` (``None``: as stored), or ``(error, [], [], 0)``."""
    # Its own generator: a DataLoader draws a seed from the global RNG when iterated, and this one runs only when
    # the cache is cold -- with the global RNG, a run's shuffles and augmentations would depend on the cache.
    loader = DataLoader(
        _Probe(paths, channels, size),
        batch_size=64,
        num_workers=num_workers,
        collate_fn=_as_list,
        generator=torch.Generator().manual_seed(0),
    )
    return [result for batch in loader for result in batch]


def channel_stats(results: Sequence[tuple[str, list[float], list[float], int]]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over the decodable images in ``results``, each image weighing the
    same: the mean of the images' means, and the root of the mean of their mean squares minus its square."""
    good = [r for r in results if not r[0]]
    if not good:
        raise DataError("no readable training image to compute the normalisation statistics from")
    mean = torch.tensor([r[1] for r in good], dtype=torch.float64).mean(0)
    squares = torch.tensor([r[2] for r in good], dtype=torch.float64).mean(0)
    std = (squares - mean.square()).clamp_min(1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]

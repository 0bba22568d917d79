"""Decoding a folder's files: the per-sample dataset, and the one pass that checks every file and sums its pixels.

The check (``probe``) runs once per node and is cached by ``src.data.folder`` (``src.data.folder_cache``);
the pixel sums it returns give the training split's normalisation statistics (``channel_stats``) without
decoding the files a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from src.data.base import DataError
from src.data.decode import load_image

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
    """Decode each file; return its error (or '') and its per-channel pixel sums, for the scan."""

    def __init__(self, paths: Sequence[str], channels: int) -> None:
        self.paths, self.channels = list(paths), channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, list[float], list[float], int]:
        try:
            pixels = load_image(self.paths[index], self.channels).to(torch.float64).div_(255).flatten(1)
        except Exception as err:  # noqa: BLE001  (any failure to decode is what we report)
            return (f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}", [], [], 0)
        return "", pixels.sum(1).tolist(), pixels.square().sum(1).tolist(), pixels.shape[1]


def _as_list(batch: list) -> list:
    return batch


def probe(paths: Sequence[str], channels: int, num_workers: int) -> list[tuple[str, list[float], list[float], int]]:
    """Decode every file (in ``num_workers`` processes): per file ``(error, sums, sums of squares, pixels)``."""
    # Its own generator: a DataLoader draws a seed from the global RNG when iterated, and this one runs only when
    # the cache is cold -- with the global RNG, a run's shuffles and augmentations would depend on the cache.
    loader = DataLoader(
        _Probe(paths, channels),
        batch_size=64,
        num_workers=num_workers,
        collate_fn=_as_list,
        generator=torch.Generator().manual_seed(0),
    )
    return [result for batch in loader for result in batch]


def channel_stats(results: Sequence[tuple[str, list[float], list[float], int]]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over all pixels of the decodable files in ``results``."""
    good = [r for r in results if not r[0]]
    pixels = sum(r[3] for r in good)
    if not pixels:
        raise DataError("no readable training image to compute the normalisation statistics from")
    sums = torch.tensor([r[1] for r in good], dtype=torch.float64).sum(0)
    squares = torch.tensor([r[2] for r in good], dtype=torch.float64).sum(0)
    mean = sums / pixels
    std = (squares / pixels - mean.square()).clamp_min(1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]

"""Named transform presets shared by every image DataModule (``torchvision.transforms.v2``).

A preset picks the augmentation; every preset first brings an image to ``image_size`` x
``image_size`` (resize the shorter side, center crop: a no-op on images that already have that
size, so CIFAR's own pipeline is unchanged) and ends with float conversion and normalisation.

* ``cifar`` -- He et al. (2015) section 4.2, for small images: pad 4, random crop, horizontal flip.
* ``imagenet`` -- RandomResizedCrop + horizontal flip for training; resize to ``image_size / 0.875``
  and center crop for evaluation (the usual 256 -> 224 ratio).
* ``none`` -- no augmentation: the evaluation pipeline for training too.

Inputs may be PIL images or uint8 ``(C, H, W)`` tensors; the augmentations run on uint8, before
the conversion to float, which is the cheap place for them. Each preset is a list of
``v2`` transforms, so a caller can compose them differently (for example run the augmentation
on a batch on the GPU and skip the per-sample part).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
import torch
from torchvision.transforms import v2

Preset = Literal["cifar", "imagenet", "none"]
PRESETS: tuple[str, ...] = ("cifar", "imagenet", "none")
EVAL_CROP_RATIO = 0.875  # 224 / 256


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"transform preset must be one of {list(PRESETS)}, got {preset!r}")


def resize_to(image_size: int) -> list[v2.Transform]:
    """Shorter side to ``image_size``, then a center square: any image becomes ``image_size`` x ``image_size``."""
    return [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]


def augmentation(preset: Preset, image_size: int) -> list[v2.Transform]:
    """The training split's geometric steps (on uint8 images or PIL), before ``to_float``."""
    check_preset(preset)
    if preset == "cifar":
        return [*resize_to(image_size), v2.RandomCrop(image_size, padding=4), v2.RandomHorizontalFlip()]
    if preset == "imagenet":
        return [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    return resize_to(image_size)


def evaluation(preset: Preset, image_size: int) -> list[v2.Transform]:
    """The validation / test splits' steps, before ``to_float``."""
    check_preset(preset)
    if preset == "imagenet":
        return [v2.Resize(round(image_size / EVAL_CROP_RATIO), antialias=True), v2.CenterCrop(image_size)]
    return resize_to(image_size)


def to_float(mean: Sequence[float] | None, std: Sequence[float] | None) -> list[v2.Transform]:
    """To a float32 tensor in [0, 1], then ``(x - mean) / std`` per channel (skipped when ``mean`` is None)."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if mean is not None:
        steps.append(v2.Normalize(list(mean), list(cast(Sequence[float], std))))  # callers pass both or neither
    return steps


def build(
    preset: Preset, image_size: int, train: bool, mean: Sequence[float] | None, std: Sequence[float] | None
) -> v2.Compose:
    """The whole per-sample pipeline of one split."""
    steps = augmentation(preset, image_size) if train else evaluation(preset, image_size)
    return v2.Compose(steps + to_float(mean, std))


class SubtractImage:
    """``x - image`` on a float ``(C, H, W)`` tensor: the per-pixel mean subtraction of He et al. (2015)."""

    def __init__(self, image: torch.Tensor) -> None:
        self.image = image

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.image


def mean_image(images: np.ndarray) -> torch.Tensor:
    """The per-pixel mean of ``N x H x W x C`` uint8 images, as a ``(C, H, W)`` float tensor on the 0-1 scale."""
    return torch.from_numpy(images.astype(np.float64).mean(axis=0) / 255.0).permute(2, 0, 1).float().contiguous()


def minus_image(image: torch.Tensor, augment: bool, padding: int = 4) -> v2.Compose:
    """To float on the 0-1 scale, subtract the mean ``image``, then (``augment``) pad with zeros -- the mean --
    random crop and flip: the paper's order, so the padding is mean-coloured rather than black."""
    steps: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), SubtractImage(image)]
    if augment:
        size = list(image.shape[-2:])
        steps += [v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()]
    return v2.Compose(steps)

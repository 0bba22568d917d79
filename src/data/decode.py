"""One image file -> one uint8 tensor, the same for both folder paths (per sample and fast).

Why one module: the per-sample path (``ImageFiles`` + a preset) and the fast path (decode once, cache,
augment whole batches) must feed the model the same pixels for the same file, or ``data.fast true|false``
changes the experiment. Both decode with :func:`load_image` and bring the image to ``size`` x ``size`` with
:func:`fit_square`, which is the presets' own resize-and-crop (``transforms.resize_to``), not a copy of it.
"""

from __future__ import annotations

import warnings

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import Compose
from torchvision.transforms.v2 import functional as F

from src.data import transforms

READ_MODES = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB, 4: ImageReadMode.RGB_ALPHA}
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

# torchvision 0.29 announces that torchvision.io's decoders will move to TorchCodec. They are still the fastest
# here (libjpeg-turbo on the file's bytes, straight to uint8 CHW); PIL takes over whatever they cannot read.
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision", DeprecationWarning)


def load_image(path: str, channels: int) -> torch.Tensor:
    """The image at ``path`` as a uint8 ``(channels, H, W)`` tensor (``channels``: 1 grey, 3 RGB, 4 RGBA).

    torchvision's decoders first (fast); PIL for what they reject (BMP, TIFF, PPM, some CMYK and palette
    files). Animated images give their first frame; 16-bit images are scaled to 8 bits (65535 -> 255).
    """
    if channels not in READ_MODES:
        raise ValueError(f"channels must be one of {sorted(READ_MODES)}, got {channels}")
    try:
        image = decode_image(read_file(path), mode=READ_MODES[channels])
    except RuntimeError:  # a format or mode libjpeg / libpng / libwebp do not take: let PIL try
        with Image.open(path) as pil_image:
            image = F.pil_to_tensor(pil_image.convert(PIL_MODES[channels]))
    if image.ndim == 4:  # an animated image: its first frame
        image = image[0]
    if image.dtype != torch.uint8:  # 16-bit PNGs
        image = F.to_dtype(image, torch.uint8, scale=True)
    return image


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """``image`` resized (shorter side to ``size``, antialiased) and centre-cropped to ``size`` x ``size``.

    Exactly the presets' first steps (``transforms.resize_to``), so both paths crop the same square; an image
    already ``size`` x ``size`` comes back unchanged, bit for bit.
    """
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return Compose(transforms.resize_to(size))(image)


def decode(path: str, channels: int, size: int | None) -> torch.Tensor:
    """:func:`load_image`, then :func:`fit_square` to ``size`` (``None``: as stored)."""
    image = load_image(path, channels)
    return image if size is None else fit_square(image, size)

"""A fork's own network, plugged in by class path (``model.net``); the fork guide quotes this file."""

from torch import Tensor, nn


class TinyNet(nn.Module):
    """Conv-BN-ReLU, global average pooling, a linear head. ``num_classes`` and ``in_channels`` come from the data."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class FixedHeadNet(TinyNet):
    """A fork's net that ignores the data's class count: its head has ``outputs`` logits whatever the data."""

    def __init__(self, num_classes: int, in_channels: int = 3, outputs: int = 12) -> None:
        super().__init__(outputs, in_channels, width=4)


class ValueReadingNet(TinyNet):
    """A fork's net whose forward reads a value on the host (``.item()``), which the meta device cannot run."""

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        if features.abs().max().item() > 1e6:  # never true; the read is what matters
            features = features / 2
        return self.fc(features.mean(dim=(2, 3)))

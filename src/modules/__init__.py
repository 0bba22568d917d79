"""LightningModules: how a network is trained (loss, metrics, optimizer, LR schedule)."""

from src.modules.classifier import ImageClassifier
from src.modules.lr_schedules import WarmupCosineLR, WarmupMultiStepLR

__all__ = ["ImageClassifier", "WarmupCosineLR", "WarmupMultiStepLR"]

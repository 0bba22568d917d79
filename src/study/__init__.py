"""Studies of trained networks: block lesions, pruning, and their figures.

Library code on a plain ``nn.Module`` and a ``DataLoader`` (no Lightning, no checkpoints);
the commands ``python -m src.lesion`` and ``python -m src.prune`` load a checkpoint and call it.
"""

from src.study.evaluate import accuracy
from src.study.lesion import PlainNetworkError, lesion_study, lesioned, random_lesions
from src.study.prune import check_sparsities, prunable_weights, prune_sweep, sgd_finetune

__all__ = [
    "PlainNetworkError",
    "accuracy",
    "check_sparsities",
    "lesion_study",
    "lesioned",
    "prunable_weights",
    "prune_sweep",
    "random_lesions",
    "sgd_finetune",
]

"""Studies of trained networks: block lesions, pruning, and their figures.

Library code on a plain ``nn.Module`` and a ``DataLoader`` (no Lightning, no checkpoints);
the commands ``python -m src.lesion`` and ``python -m src.prune`` load a checkpoint and call it.
"""

from src.study.batchnorm import recalibrate_batch_norm
from src.study.evaluate import Evaluation, accuracy, evaluate
from src.study.lesion import (
    PlainNetworkError,
    lesion_study,
    lesioned,
    random_lesions,
    random_summary,
    stage_summary,
)
from src.study.prune import (
    check_sparsities,
    collapse_findings,
    prunable_weights,
    prune_study,
    prune_sweep,
    sgd_finetune,
)

__all__ = [
    "Evaluation",
    "PlainNetworkError",
    "accuracy",
    "check_sparsities",
    "collapse_findings",
    "evaluate",
    "lesion_study",
    "lesioned",
    "prunable_weights",
    "prune_study",
    "prune_sweep",
    "random_lesions",
    "random_summary",
    "recalibrate_batch_norm",
    "sgd_finetune",
    "stage_summary",
]

"""What ``python -m src.lesion`` and ``python -m src.prune`` use: looking inside trained networks.

Block lesions (``block_lesions``), magnitude pruning with its random control (``magnitude_pruning``), accuracy on a
loader (``evaluate``), BatchNorm recalibration (``batchnorm``), loading the checkpoints a command is
given (``checkpoint``), and the commands' figures (``plots``; their tables go through ``src.table_files``). The library
parts work on a plain ``nn.Module`` and a ``DataLoader`` (no Lightning); the commands load a
checkpoint and call them.
"""

from src.analysis.batchnorm import recalibrate_batch_norm
from src.analysis.block_lesions import (
    PlainNetworkError,
    lesion_study,
    lesioned,
    random_lesions,
    random_summary,
    stage_summary,
)
from src.analysis.evaluate import Evaluation, accuracy, evaluate
from src.analysis.magnitude_pruning import (
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

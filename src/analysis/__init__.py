"""What ``python -m src.lesion`` and ``python -m src.prune`` use: looking inside trained networks.

Block lesions (``block_lesions``), magnitude pruning with its random control (``magnitude_pruning``), accuracy on a
loader (``evaluate``), loading the checkpoints a command is given (``checkpoint``), and the commands' figures
(``plots``; their tables go through ``src.table_files``). The library parts work on a plain ``nn.Module`` and a
``DataLoader`` (no Lightning); the commands load a checkpoint and call them. BatchNorm recalibration and the
magnitude masks live one floor down (``src.modules.batchnorm_stats``, ``src.modules.pruning``): a ``fit`` that
starts from a pruned network uses them too.
"""

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
    prune_study,
    prune_sweep,
    sgd_finetune,
)
from src.modules.batchnorm_stats import recalibrate_batch_norm
from src.modules.pruning import prunable_weights

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

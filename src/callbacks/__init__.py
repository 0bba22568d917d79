"""Lightning callbacks: measurements taken while training (they never change the training)."""

from src.callbacks.diagnostics import TrainingDiagnostics
from src.callbacks.efficiency import ParameterEfficiency

__all__ = ["ParameterEfficiency", "TrainingDiagnostics"]

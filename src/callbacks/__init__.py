"""Lightning callbacks: measurements taken while training, and how training is run (never what it computes)."""

from src.callbacks.compile import CompileModel
from src.callbacks.diagnostics import TrainingDiagnostics
from src.callbacks.efficiency import ParameterEfficiency
from src.callbacks.progress import LineProgress

__all__ = ["CompileModel", "LineProgress", "ParameterEfficiency", "TrainingDiagnostics"]

"""initcheck: static diagnosis of a PyTorch model's weight initialization."""

from .api import diagnose
from .report import LayerReport, Report
from .rules import RULES, Finding

__version__ = "0.1.0"
__all__ = ["diagnose", "Report", "LayerReport", "Finding", "RULES", "__version__"]

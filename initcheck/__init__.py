"""initcheck: static diagnosis of a PyTorch model's weight initialization."""

from . import startup  # noqa: F401  (first: Ctrl-C while torch imports is one line when run as the command)
from .api import diagnose
from .findings import RULES, Finding, Severity
from .fix import fix
from .plan import InitPlan, plan
from .probe import ProbeLayer, probe
from .report import LayerReport, Report

__version__ = "0.1.0"
__all__ = ["diagnose", "fix", "probe", "plan", "InitPlan", "ProbeLayer", "Report", "LayerReport", "Finding", "Severity", "RULES", "__version__"]

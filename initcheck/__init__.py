"""initcheck: static diagnosis of a PyTorch model's weight initialization."""

from .api import diagnose
from .fix import fix
from .plan import InitPlan, plan
from .probe import ProbeLayer, probe
from .report import LayerReport, Report
from .findings import RULES, Finding, Severity

__version__ = "0.1.0"
__all__ = ["diagnose", "fix", "probe", "plan", "InitPlan", "ProbeLayer", "Report", "LayerReport", "Finding", "Severity", "RULES", "__version__"]

"""Lightning callback: judge the model's initialization at fit start, before the first step.

    from initcheck.integrations.lightning import InitCheck
    trainer = L.Trainer(callbacks=[InitCheck(fail_on="error", fix=False)])

Needs `pip install initcheck[lightning]` (the `lightning` package, or `pytorch_lightning`)."""

from __future__ import annotations

import importlib
from typing import Any

from ..guard import check
from . import MissingExtra, counts, judge, validate


def _callback_base() -> type:
    # `lightning` (the unified package) first, then the standalone `pytorch_lightning`
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name).Callback  # type: ignore[no-any-return]
        except ImportError:
            continue
    raise MissingExtra("initcheck", "lightning is not installed: pip install initcheck[lightning]")


class InitCheck(_callback_base()):  # type: ignore[misc]
    """Diagnose the LightningModule at `on_fit_start`: after `setup` and `configure_model` (so it
    sees the real weights) and before the first training step. Logs the summary (and the counts to
    every logger of the trainer); raises InitError when findings at or above `fail_on` exist, or,
    with `fix=True`, reinitializes the mis-scaled weights in place first and raises only if
    findings remain. The model's `example_input_array` is used when it has one.

    After the check, `self.report` holds the Report."""

    def __init__(self, fail_on: str = "error", fix: bool = False, example_inputs: Any = None):
        super().__init__()
        self.fail_on = validate(fail_on)
        self.fix = fix
        self.example_inputs = example_inputs
        self.report: Any = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        from lightning_utilities.core.rank_zero import rank_zero_info

        inputs = self.example_inputs if self.example_inputs is not None else getattr(pl_module, "example_input_array", None)
        self.report, lines = judge(pl_module, inputs, self.fail_on, self.fix, type(pl_module).__name__)
        for line in lines:
            rank_zero_info(line)
        for logger in getattr(trainer, "loggers", None) or []:
            logger.log_metrics(counts(self.report), step=0)
        check(self.report, self.fail_on)  # raising here stops fit() before the first step

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

    Sharded models (ModelParallelStrategy with FSDP2's fully_shard, DTensor parameters): every rank
    judges the whole weights (their statistics are all-reduced, never gathered), only rank 0 logs,
    and every rank raises, so no rank is left waiting. `fix=True` does not repair sharded
    weights: call initcheck.fix in configure_model before sharding. FSDPStrategy (FSDP1) leaves
    each rank a flattened slice of its flat parameter in place of every weight: the check is
    skipped with a log line rather than judging slices (Lightning runs FSDP1 on GPUs only; untested).

    After the check, `self.report` holds the Report."""

    def __init__(self, fail_on: str = "error", fix: bool = False, example_inputs: Any = None):
        super().__init__()
        self.fail_on = validate(fail_on)
        self.fix = fix
        self.example_inputs = example_inputs
        self.report: Any = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        from lightning_utilities.core.rank_zero import rank_zero_info

        if flattened(trainer, pl_module):  # every rank sees the same wrapping: every rank skips
            rank_zero_info(f"initcheck: {type(pl_module).__name__}: not judged: FSDPStrategy (FSDP1) holds flattened "
                           "shards, not the weights; use ModelParallelStrategy (FSDP2), or call initcheck.guard(module) "
                           "in configure_model, before the strategy wraps it")
            return
        inputs = self.example_inputs if self.example_inputs is not None else getattr(pl_module, "example_input_array", None)
        # every rank judges: the statistics of sharded parameters are reduced over the ranks inside
        self.report, lines = judge(pl_module, inputs, self.fail_on, self.fix, type(pl_module).__name__)
        if getattr(trainer, "is_global_zero", True):
            for line in lines:
                rank_zero_info(line)
            for logger in getattr(trainer, "loggers", None) or []:
                logger.log_metrics(counts(self.report), step=0)
        failed = self.report.fails(self.fail_on)
        # one decision for every rank: a rank that went on alone would wait forever in the first
        # step's collective. The reports agree by construction; this holds even if they did not.
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and strategy.reduce_boolean_decision(failed, all=False) and not failed:
            raise RuntimeError(f"initcheck: {self.report.target}: another rank found findings at or above "
                               f"{self.fail_on}; this one did not")
        check(self.report, self.fail_on)  # raising here, on every rank, stops fit() before the first step


def flattened(trainer: Any, pl_module: Any) -> bool:
    """Whether FSDP1 (FullyShardedDataParallel) wraps the module: its parameters are then views of
    flat shards, whose shapes and statistics are not the weights'."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return False
    root = getattr(getattr(trainer, "strategy", None), "model", None)
    trees = [m for m in (root, pl_module) if m is not None]
    return any(isinstance(m, FullyShardedDataParallel) for tree in trees for m in tree.modules())

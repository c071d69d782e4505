"""Hugging Face transformers callback: judge the weights at `on_train_begin`, after HF's own init.

    from initcheck.integrations.transformers import InitCheckCallback
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[InitCheckCallback()])

Needs `pip install initcheck[hf]`."""

from __future__ import annotations

import logging
from typing import Any

from ..guard import check
from . import counts, judge, require, validate

_base = require("transformers", "hf").TrainerCallback
log = logging.getLogger("initcheck")


def pretrained_from(model: Any) -> str | None:
    """Where the weights were loaded from (`from_pretrained`), or None for a model built from a
    config, whose weights are what `post_init`/`_init_weights` drew."""
    config = getattr(model, "config", None)
    path = getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "")
    return str(path) if path else None


class InitCheckCallback(_base):  # type: ignore[misc, valid-type]
    """At `on_train_begin` (the model is built, so `post_init` ran `_init_weights` on every module,
    and no step has been taken): diagnose the model; raise InitError when findings at or above
    `fail_on` exist, or with `fix=True` reinitialize the mis-scaled weights in place first.

    A model loaded with `from_pretrained` holds trained weights, not an initialization: it is
    skipped (with a log line) unless `judge_pretrained=True`. The counts go into the trainer's
    log history; `self.report` holds the Report."""

    def __init__(self, fail_on: str = "error", fix: bool = False, example_inputs: Any = None,
                 judge_pretrained: bool = False):
        self.fail_on = validate(fail_on)
        self.fix = fix
        self.example_inputs = example_inputs
        self.judge_pretrained = judge_pretrained
        self.report: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        source = pretrained_from(model)
        if source and not self.judge_pretrained:
            log.info("initcheck: %s was loaded from %s: trained weights, not judged (judge_pretrained=True to judge them)",
                     type(model).__name__, source)
            return
        self.report, lines = judge(model, self.example_inputs, self.fail_on, self.fix, type(model).__name__)
        for line in lines:
            log.info(line)
        if getattr(state, "is_world_process_zero", True):
            state.log_history.append({**counts(self.report), "step": state.global_step})
        check(self.report, self.fail_on)  # raising here stops train() before the first step

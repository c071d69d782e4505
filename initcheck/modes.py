"""Which forward a report judges: training's (BatchNorm on each batch's statistics, dropout on), the
default since an init is judged for the training it starts, or evaluation's (BatchNorm on its running
statistics, dropout off). The model's own flags are never changed; they only decide the note that
says the two differ."""

from __future__ import annotations

from enum import Enum

from torch import nn

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class Mode(str, Enum):
    TRAIN = "train"
    EVAL = "eval"

    @classmethod
    def parse(cls, value: Mode | str) -> Mode:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown mode {value!r}; expected 'train' or 'eval'") from None


def _differs(m: nn.Module) -> bool:
    """A module whose forward depends on its training flag."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.track_running_stats
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return m.track_running_stats
    return isinstance(m, _DROPOUT) and m.p > 0


def note(model: nn.Module, mode: Mode) -> str | None:
    """A line for the report when the judged forward is not the one the model's flags select:
    which modules run differently, and how."""
    other = [f"{name} ({type(m).__name__})" for name, m in model.named_modules()
             if _differs(m) and m.training != (mode is Mode.TRAIN)]
    if not other:
        return None
    shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
    if mode is Mode.TRAIN:
        return (f"the model is in eval mode: judged as training runs it (BatchNorm on each batch's statistics, "
                f"dropout on), the forward the init starts; mode='eval' (--mode eval) judges the eval forward "
                f"({len(other)} module(s) differ: {shown})")
    return (f"judged in eval mode (BatchNorm on its running statistics, dropout off) while the model is in "
            f"training mode ({len(other)} module(s) differ: {shown})")

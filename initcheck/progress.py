"""Progress on stderr, drawn only on a terminal: nothing of it reaches a CI log, a pipe or pre-commit."""

from __future__ import annotations

import sys
from typing import Any

import click


class Bars:
    """fix()'s progress(stage, done, total) drawn as one bar per stage on a terminal; silent when
    the stream is not a terminal (CI logs, pipes, pre-commit)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.stage: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.done = stage, 0
            self.bar = click.progressbar(length=max(total, 1), label=f"initcheck: {stage}", file=self.stream,
                                         show_pos=True, show_eta=False)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
            self.stage = None


def say(message: str) -> None:
    if sys.stderr.isatty():
        click.echo(f"initcheck: {message}", err=True)

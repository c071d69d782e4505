"""Ctrl-C while the command starts (torch takes seconds to import) is one line and exit 130, not a
traceback. Imported first by the package, and it imports nothing Python has not loaded already but
`signal`, so that the window in which Python's own handler would answer (with a traceback) closes as
early as initcheck's code can close it. Active only when this process is the initcheck command (the
console script or `python -m initcheck`), never for a library user or a notebook.

What it cannot cover: a SIGINT before Python runs any code kills the process silently (the shell
reports 130, as for any program), and one during Python's own startup (site, its .pth files, the
console script's `import re`) is Python's to print."""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # not typing's: importing typing would cost milliseconds before the handler is in
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any


def running_as_cli() -> bool:
    orig = list(getattr(sys, "orig_argv", []))
    after_m = orig[orig.index("-m") + 1] if "-m" in orig[:-1] else None
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "initcheck" or after_m == "initcheck"


def _quit(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"initcheck: interrupted\n")
    os._exit(130)  # nothing is open yet: no file of the user's is being written while importing


def install() -> None:
    if running_as_cli() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _set(_quit)


def release() -> None:
    """From here on Ctrl-C is a KeyboardInterrupt again, so `finally` blocks (temporary files,
    the model's restored state) run; the CLI's `interruptible` turns it into the same one line."""
    if signal.getsignal(signal.SIGINT) is _quit:
        _set(signal.default_int_handler)


def _set(handler: Callable[[int, FrameType | None], Any]) -> None:
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (an embedding, a test runner's worker): Python's own stays
        pass


install()

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
    # Ends the process at once, whatever runs: a KeyboardInterrupt raised inside torch's import or a
    # model's code can be swallowed by a bare `except` there (the run then goes on, or hangs). It
    # stays installed for the whole command: every file initcheck writes goes through safe_write,
    # which swaps in a raising handler for the write so that its temporary file is removed; the
    # model lives in this process only, so nothing else of the user's is left half done.
    os._exit(130)


def install() -> None:
    if running_as_cli() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _set(_quit)


def ours(handler: object) -> bool:
    """Whether `handler` is this module's: safe_write swaps it for one that raises while it writes,
    so that its `finally` removes the temporary file before the process ends."""
    return handler is _quit


def _set(handler: Callable[[int, FrameType | None], Any]) -> None:
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (an embedding, a test runner's worker): Python's own stays
        pass


install()

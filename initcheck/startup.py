"""Ctrl-C while the command starts (torch takes seconds to import) is one line and exit 130, not a
traceback. Imported first by the package; active only when this process is the initcheck command
(the console script or `python -m initcheck`), never for a library user or a notebook."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType


def running_as_cli() -> bool:
    orig = list(getattr(sys, "orig_argv", []))
    after_m = orig[orig.index("-m") + 1] if "-m" in orig[:-1] else None
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "initcheck" or after_m == "initcheck"


def _quit(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"initcheck: interrupted\n")
    os._exit(130)  # nothing is open yet: no file of the user's is being written while importing


def install() -> None:
    if (running_as_cli() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _quit)


def release() -> None:
    """From here on Ctrl-C is a KeyboardInterrupt again, so `finally` blocks (temporary files,
    the model's restored state) run; the CLI's `interruptible` turns it into the same one line."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _quit:
        signal.signal(signal.SIGINT, signal.default_int_handler)


install()

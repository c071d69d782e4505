"""Ctrl-C in the first moments of the command: exit 130 and one line, never a traceback, from the
moment initcheck's own code has run. The moments are found from the child's progress (`-X importtime`
writes a line when each import finishes), so the test does not depend on how loaded the machine is;
a sweep of early wall-clock moments checks every run that got that far the same way, and says nothing
of a signal that came before (the process dies silently, or Python itself prints: not initcheck's).
Later moments (while torch imports, while a model builds) are test_real_code's."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT by PID is POSIX")

NEVER = ("import time\nimport torch.nn as nn\n\nclass Never(nn.Module):\n    def __init__(self):\n"
         "        super().__init__()\n        while True:\n            time.sleep(0.01)\n")
INSTALLED = os.path.join(os.path.dirname(sys.executable), "initcheck")  # the console script, when installed


def command(target: str, as_module: bool = False) -> list[str]:
    if as_module or not os.path.isfile(INSTALLED):
        return [sys.executable, "-X", "importtime", "-m", "initcheck", target]
    return [sys.executable, "-X", "importtime", INSTALLED, target]


@pytest.fixture
def start(tmp_path):
    """Starts the command on a model that never finishes building; whatever a failed test left
    running is killed, by its PID, at teardown."""
    (tmp_path / "never.py").write_text(NEVER)
    started: list[subprocess.Popen[bytes]] = []

    def run(as_module: bool = False) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command("never.py:Never", as_module), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_import(proc: subprocess.Popen[bytes], module: str, limit: float = 300.0) -> bytes:
    """Read the child's stderr until `module` has been imported; what was read."""
    seen = b""
    deadline = time.monotonic() + limit
    assert proc.stderr is not None
    while not imported(seen[: seen.rfind(b"\n") + 1].decode(errors="replace").splitlines(), module):
        ready, _, _ = select.select([proc.stderr], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(proc.stderr.fileno(), 65536) if ready else b""
        if not chunk:
            pytest.fail(f"{module} was never imported: {seen.decode(errors='replace')[-2000:]}")
        seen += chunk
    return seen


def imported(lines: list[str], module: str) -> bool:
    """Whether -X importtime's lines say `module` finished importing (`import time: us | us |   name`)."""
    return any(ln.startswith("import time:") and ln.rsplit("|", 1)[-1].strip() == module for ln in lines)


def interrupt(proc: subprocess.Popen[bytes], read: bytes = b"") -> tuple[int, list[str], str]:
    """SIGINT to the child by its PID; (exit status, its own stderr lines, stdout)."""
    try:
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    own = [ln for ln in (read + err).decode(errors="replace").splitlines() if not ln.startswith("import time:")]
    return proc.returncode, own, out.decode(errors="replace")


def assert_clean(rc: int, own: list[str], out: str) -> None:
    assert not any("Traceback" in ln or "KeyboardInterrupt" in ln for ln in own), "\n".join(own)
    assert rc == 130 and own == ["initcheck: interrupted"] and out == "", (rc, own)


FRAME = re.compile(r'\s*File "([^"]+)", line \d+')


def before_the_handler(own: list[str]) -> bool:
    """A traceback from before initcheck's handler was in: its frames are Python's startup, the
    console script, or the package's own first lines (initcheck/__init__.py up to `from . import
    startup`, and startup.py itself); none from the command's code."""
    files = [m.group(1) for m in map(FRAME.match, own) if m]
    ours = [f for f in files if f"{os.sep}initcheck{os.sep}" in f]
    return bool(files) and all(os.path.basename(f) in ("__init__.py", "startup.py") and
                               os.path.basename(os.path.dirname(f)) == "initcheck" for f in ours)


@pytest.mark.parametrize("module, as_module", [
    ("initcheck.startup", False),  # the earliest moment initcheck's code has run: its handler is in
    ("initcheck.startup", True),  # the same through `python -m initcheck`
    ("initcheck.cli", False),  # the command's modules imported, click about to parse
])
def test_ctrl_c_right_after_initcheck_starts(start, module, as_module):
    proc = start(as_module)
    read = wait_for_import(proc, module)
    assert_clean(*interrupt(proc, read))


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06, 0.1, 0.2])
def test_ctrl_c_at_early_moments(start, delay):
    proc = start()
    time.sleep(delay)
    rc, own, out = interrupt(proc)
    if rc == -signal.SIGINT and not own:
        return  # before Python installed any handler: killed by the default action (the shell says 130)
    if any(ln.startswith("Traceback") for ln in own) and before_the_handler(own):
        return  # Python's own startup answered: the interrupt came before initcheck's first line ran
    if own == ["KeyboardInterrupt"] and rc == 1:
        return  # no frame at all: raised while the interpreter itself started (seen on a loaded machine)
    assert_clean(rc, own, out)

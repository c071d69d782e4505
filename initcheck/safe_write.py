"""Writing a user's output file without ever losing one: a unique temporary file beside the target,
fsync'd, committed by a rename that refuses to overwrite unless forced, removed on any failure or
signal.

The no-overwrite check happens at the commit itself (`os.link` fails atomically when the name
exists), so two runs racing for one name cannot both "win"; a name that exists but is not a regular
file (a FIFO, a directory, a device, a symlink without force) is never opened nor replaced.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from . import startup
from .errors import OutputError

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM received during a write, raised after the temporary file is removed."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def resolve_output(path: str, force: bool = False) -> str:
    """The file a write to `path` will create or replace, or OutputError saying why it cannot be.

    A check made before the work starts (fail early); `write_file` makes it again, and the
    existence check is repeated atomically at the commit."""
    final = path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(path, f"cannot be inspected: {e.strerror}") from e
    if st is not None and stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        if not force:
            dangling = "" if os.path.exists(path) else ", which does not exist"
            raise OutputError(path, f"is a symbolic link to {target}{dangling}; pass --force to write the link's target")
        final = target
        try:
            st = os.stat(final)
        except FileNotFoundError:
            st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(final, f"exists and is {_kind(st.st_mode)}, not a regular file; it is never replaced")
        if not force:
            raise OutputError(final, "exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(final))
    if not os.path.isdir(folder):
        raise OutputError(final, "cannot be written: its directory does not exist")
    return final


def write_file(path: str, write: Callable[[IO[bytes]], Any], *, force: bool = False) -> str:
    """Call `write(f)` on a temporary file beside `path` and commit it to `path`; return the path
    written (a symlink's target when forced). Nothing is left behind on failure or SIGINT/SIGTERM
    (re-raised as `Interrupted` once cleaned up); an OS error is one-line OutputError."""
    final = resolve_output(path, force)
    folder = os.path.dirname(os.path.abspath(final))
    tmp: str | None = None
    with _signals_raise():
        try:
            with _masked():  # mkstemp and the note of its name are one step for a signal handler
                fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", suffix=".initcheck-tmp", dir=folder)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _mode_for(final))
            _commit(tmp, final, force)
            tmp = None
        except OSError as e:
            raise OutputError(final, f"cannot be written: {e.strerror or e}") from e
        except RuntimeError as e:
            # torch's zip writer turns the file's OSError into RuntimeError("... file write failed")
            if "write" not in str(e):
                raise
            raise OutputError(final, f"cannot be written: {_first_line(e)}") from e
        finally:
            if tmp is not None:
                with _masked():
                    _remove(tmp)
    _sync_folder(folder)
    return final


def save(obj: object, path: str, *, force: bool = False) -> str:
    """torch.save(obj) to `path` through `write_file`; a state_dict holding meta tensors (shapes
    without values) is refused: written, it would load as nothing."""
    import torch

    if isinstance(obj, dict):
        meta = [k for k, v in obj.items() if isinstance(v, torch.Tensor) and v.is_meta]
        if meta:
            raise OutputError(path, f"not written: {len(meta)} tensor(s) live on the meta device and have no values "
                                    f"(first: {meta[0]}); build the model on a real device, or materialize it with to_empty() and init")
    return write_file(path, lambda f: torch.save(obj, f), force=force)


def _commit(tmp: str, final: str, force: bool) -> None:
    if force:
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):  # appeared since resolve_output
            raise OutputError(final, f"exists and is {_kind(st.st_mode)}, not a regular file; it is never replaced")
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # atomic: fails if the name exists, whoever created it and when
    except FileExistsError:
        raise OutputError(final, "exists; pass --force to overwrite it") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        _commit_without_links(tmp, final)
        return
    _remove(tmp)


def _commit_without_links(tmp: str, final: str) -> None:
    """For filesystems without hard links: claim the name with O_EXCL, then rename over the claim."""
    try:
        os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise OutputError(final, "exists; pass --force to overwrite it") from None
    os.replace(tmp, final)


def _mode_for(final: str) -> int:
    """An overwritten file keeps its permissions; a new one gets what open() would give it."""
    try:
        return stat.S_IMODE(os.stat(final).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable (best effort: not every filesystem lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """While writing, SIGINT and SIGTERM raise `Interrupted` (so `finally` cleans up) instead of
    killing the process; handlers that are neither the default nor the command's own
    (startup.py: SIG_IGN, a library user's) are kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in _SIGNALS}
    for s, h in old.items():
        if h in (signal.SIG_DFL, signal.default_int_handler) or startup.ours(h):
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _masked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a step that must not be cut in half; they arrive after it."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "not a regular file"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__

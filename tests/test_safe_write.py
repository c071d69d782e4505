"""safe_write: nothing of the user's is lost or touched, whatever is at the output's name."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from initcheck.errors import OutputError
from initcheck.safe_write import resolve_output, save, write_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _payload(data: bytes):
    return lambda f: f.write(data)


def _leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".initcheck-tmp"))


def test_writes_a_new_file_with_the_usual_permissions(tmp_path):
    out = tmp_path / "f.pt"
    assert write_file(str(out), _payload(b"abc")) == str(out)
    assert out.read_bytes() == b"abc"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # what open() would have made, not mkstemp's 0600
    assert _leftovers(tmp_path) == []


def test_an_existing_file_is_refused_without_force_and_replaced_with_it(tmp_path):
    out = tmp_path / "f.pt"
    out.write_bytes(b"mine")
    out.chmod(0o640)
    with pytest.raises(OutputError, match="exists; pass --force"):
        write_file(str(out), _payload(b"new"))
    assert out.read_bytes() == b"mine"
    write_file(str(out), _payload(b"new"), force=True)
    assert out.read_bytes() == b"new"
    assert out.stat().st_mode & 0o777 == 0o640  # an overwritten file keeps its permissions
    assert _leftovers(tmp_path) == []


def test_the_users_own_dot_tmp_file_is_never_touched(tmp_path):
    out = tmp_path / "f.pt"
    mine = tmp_path / "f.pt.tmp"
    mine.write_bytes(b"precious")
    os.mkfifo(tmp_path / "g.pt.tmp")  # a FIFO of the old fixed temporary name would have hung the write
    write_file(str(out), _payload(b"x"))
    write_file(str(tmp_path / "g.pt"), _payload(b"y"))
    assert mine.read_bytes() == b"precious"
    assert (tmp_path / "g.pt").read_bytes() == b"y"
    assert _leftovers(tmp_path) == []


def test_a_symlinked_output_is_refused_and_its_target_written_only_with_force(tmp_path):
    real = tmp_path / "real.pt"
    real.write_bytes(b"old")
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    with pytest.raises(OutputError, match="symbolic link to .*real.pt"):
        write_file(str(link), _payload(b"new"))
    assert real.read_bytes() == b"old"
    assert write_file(str(link), _payload(b"new"), force=True) == str(real)
    assert link.is_symlink() and real.read_bytes() == b"new"  # the link itself is kept


def test_a_dangling_symlink_is_not_missing(tmp_path):
    link = tmp_path / "out.pt"
    link.symlink_to(tmp_path / "nowhere.pt")
    with pytest.raises(OutputError, match="does not exist; pass --force"):
        write_file(str(link), _payload(b"x"))
    assert not (tmp_path / "nowhere.pt").exists()
    assert write_file(str(link), _payload(b"x"), force=True) == str(tmp_path / "nowhere.pt")
    assert (tmp_path / "nowhere.pt").read_bytes() == b"x"


@pytest.mark.parametrize("force", [False, True])
def test_a_fifo_is_refused_without_opening_it(tmp_path, force):
    fifo = tmp_path / "out.pt"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def run():
        try:
            write_file(str(fifo), _payload(b"x"), force=force)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)  # opening a FIFO for writing would block forever: a hang shows as a live thread
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], OutputError)
    assert "a FIFO" in str(errors[0])
    assert _leftovers(tmp_path) == []


def test_a_directory_or_a_link_to_one_is_refused_even_with_force(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "d")
    for name in ("d", "l"):
        with pytest.raises(OutputError, match="a directory"):
            write_file(str(tmp_path / name), _payload(b"x"), force=True)


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(OutputError, match="its directory does not exist"):
        resolve_output(str(tmp_path / "no" / "f.pt"))


def _write_as_nobody(folder: str, queue) -> None:
    os.setgid(65534)
    os.setuid(65534)
    try:
        write_file(os.path.join(folder, "f.pt"), _payload(b"x"))
        queue.put("written")
    except OutputError as e:
        queue.put(str(e))


def test_a_read_only_folder_is_one_line_naming_the_path():
    # a folder of its own under /tmp, so that an unprivileged child can reach it (pytest's tmp_path is 0700)
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK) and os.geteuid() != 0:
            pytest.skip("this user can write a 0555 folder")
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        if os.geteuid() == 0:  # root writes anywhere: test as an unprivileged user instead
            child = ctx.Process(target=_write_as_nobody, args=(str(folder), queue))
            child.start()
            line = queue.get(timeout=60)
            child.join(60)
        else:
            with pytest.raises(OutputError) as info:
                write_file(str(folder / "f.pt"), _payload(b"x"))
            line = str(info.value)
    finally:
        folder.chmod(0o755)
        leftovers = os.listdir(folder)
        shutil.rmtree(folder)
    assert line == f"{folder / 'f.pt'}: cannot be written: Permission denied"
    assert leftovers == []


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    def write(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match="f.pt: cannot be written: No space left on device"):
        write_file(str(tmp_path / "f.pt"), write)
    assert os.listdir(tmp_path) == []


def test_torch_saves_write_failure_is_an_output_error(tmp_path):
    class Full:
        """A file whose every write fails as a full disk does, seen through torch.save."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    with pytest.raises(OutputError, match="cannot be written"):
        write_file(str(tmp_path / "f.pt"), lambda f: torch.save({"w": torch.ones(1000)}, Full(f)))
    assert os.listdir(tmp_path) == []


def test_an_exception_in_the_writer_leaves_nothing_and_propagates(tmp_path):
    def write(f):
        f.write(b"half")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        write_file(str(tmp_path / "f.pt"), write)
    assert os.listdir(tmp_path) == []


def test_save_round_trips_a_state_dict(tmp_path):
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    save(sd, str(tmp_path / "f.pt"))
    assert torch.equal(torch.load(tmp_path / "f.pt")["w"], sd["w"])


def test_save_refuses_meta_tensors(tmp_path):
    with pytest.raises(OutputError, match=r"1 tensor\(s\) live on the meta device .*first: w"):
        save({"b": torch.zeros(2), "w": torch.empty(3, device="meta")}, str(tmp_path / "f.pt"))
    assert os.listdir(tmp_path) == []


def _racer(path: str, data: bytes, barrier, results) -> None:
    def write(f):
        f.write(data)
        barrier.wait(30)  # both temporaries are complete before either commits

    try:
        write_file(path, write)
        results.put(("won", data))
    except OutputError as e:
        results.put(("lost", str(e)))


def test_two_concurrent_writers_without_force_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    out = str(tmp_path / "f.pt")
    procs = [ctx.Process(target=_racer, args=(out, bytes([65 + i]) * 100_000, barrier, results)) for i in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=60) for _ in procs)  # read before join: a child exits once its queue is drained
    for p in procs:
        p.join(60)
    assert [g[0] for g in got] == ["lost", "won"]
    assert got[0][1] == f"{out}: exists; pass --force to overwrite it"
    with open(out, "rb") as f:
        assert f.read() == got[1][1]  # the winner's bytes, whole
    assert _leftovers(tmp_path) == []


_SLOW_WRITER = """
import sys, time
from initcheck.cli import interruptible
from initcheck.safe_write import write_file

def write(f):
    f.write(b"x" * 100000)
    f.flush()
    print("ready", flush=True)
    while True:
        f.write(b"x" * 1000)
        time.sleep(0.01)

interruptible(lambda: write_file(sys.argv[1], write))()
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_write_leaves_nothing_and_exits_128_plus_signal(tmp_path, sig, code):
    out = tmp_path / "f.pt"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(_leftovers(tmp_path)) == 1  # the write is under way, in its own temporary file
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert err.strip() == "initcheck: interrupted"
    assert os.listdir(tmp_path) == []


def test_signal_handlers_are_restored_after_a_write(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    write_file(str(tmp_path / "f.pt"), _payload(b"x"))
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_write_from_a_thread_does_not_touch_signals(tmp_path):
    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(write_file(str(tmp_path / "f.pt"), _payload(b"x"))))
    t.start()
    t.join(30)
    assert done == [str(tmp_path / "f.pt")]


def test_time_is_not_what_decides_the_race(tmp_path):
    # a writer that started first but commits second still loses: the check is at the commit
    out = str(tmp_path / "f.pt")
    started = threading.Event()

    def slow(f):
        started.set()
        f.write(b"slow")
        while not os.path.exists(out):
            time.sleep(0.001)

    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(errors, lambda: write_file(out, slow)))
    t.start()
    started.wait(30)
    write_file(out, _payload(b"fast"))
    t.join(30)
    assert len(errors) == 1 and "exists" in str(errors[0])
    with open(out, "rb") as f:
        assert f.read() == b"fast"


def _catch(errors: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as e:
        errors.append(e)

"""The directory lock: one live writer, refused second writers, stale locks taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from contrastlocal._lock import (
    LOCK_NAME,
    DirectoryLock,
    LockHeldError,
    StaleLockWarning,
    pid_alive,
)

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from contrastlocal._lock import DirectoryLock

    with DirectoryLock(sys.argv[1], purpose="holder") as lock:
        Path(sys.argv[2]).write_text("held")
        deadline = time.monotonic() + 60
        while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    """
)


def _env():
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the holder exited before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_second_live_writer_is_refused_naming_the_holder(tmp_path):
    target = tmp_path / "out"
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(target), str(ready), str(stop)], env=_env()
    )
    try:
        _wait_for(ready, proc)
        with pytest.raises(LockHeldError) as info:
            DirectoryLock(target, purpose="second").acquire()
        message = str(info.value)
        assert "\n" not in message
        assert f"PID {proc.pid} on {socket.gethostname()}" in message
        assert "holder" in message
        assert LOCK_NAME in message
        assert info.value.holder["pid"] == proc.pid
        assert isinstance(info.value, RuntimeError)
        stop.write_text("")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # released by the holder: free again
    with DirectoryLock(target) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (target / LOCK_NAME).exists()


_RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from contrastlocal._lock import DirectoryLock, LockHeldError

    target, log = Path(sys.argv[1]), Path(sys.argv[2])
    while not (log.parent / "go").exists():
        time.sleep(0.005)
    got = 0
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            with DirectoryLock(target):
                fd = os.open(log, os.O_WRONLY | os.O_APPEND)
                os.write(fd, f"+{os.getpid()}\\n".encode())
                time.sleep(0.002)
                os.write(fd, f"-{os.getpid()}\\n".encode())
                os.close(fd)
                got += 1
        except LockHeldError:
            time.sleep(0.001)
    print(got)
    """
)


def test_concurrent_processes_never_hold_the_lock_together(tmp_path):
    log = tmp_path / "log"
    log.write_text("")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path / "d"), str(log)],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(1.0)
    (tmp_path / "go").write_text("")
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) >= 3
    holders = 0
    for line in log.read_text().splitlines():
        holders += 1 if line.startswith("+") else -1
        assert holders in (0, 1), "two processes held the lock at once"


def test_stale_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path):
    target = tmp_path / "out"
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(target), str(ready), str(tmp_path / "never")],
        env=_env(),
    )
    try:
        _wait_for(ready, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads((target / LOCK_NAME).read_text())["pid"] == proc.pid
    with pytest.warns(StaleLockWarning, match=f"PID {proc.pid}"), DirectoryLock(target) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (target / LOCK_NAME).exists()


def test_stale_lock_from_a_dead_pid_and_empty_lock_file(tmp_path):
    (tmp_path / LOCK_NAME).write_text(
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "purpose": "x"})
    )
    with pytest.warns(StaleLockWarning, match="no longer runs"):
        DirectoryLock(tmp_path).acquire().release()
    (tmp_path / LOCK_NAME).write_text("")  # creator died between creating and filling it
    with pytest.warns(StaleLockWarning, match="empty lock file"):
        DirectoryLock(tmp_path).acquire().release()


def test_lock_on_another_host_is_refused(tmp_path):
    (tmp_path / LOCK_NAME).write_text(
        json.dumps({"pid": _dead_pid(), "host": "elsewhere.invalid", "purpose": "run"})
    )
    with pytest.raises(LockHeldError, match=r"on elsewhere\.invalid"):
        DirectoryLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).exists()


def test_release_is_idempotent_and_leaves_foreign_locks(tmp_path):
    lock = DirectoryLock(tmp_path).acquire()
    assert lock.held
    assert lock.acquire() is lock
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "h"}))
    lock.release()
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()

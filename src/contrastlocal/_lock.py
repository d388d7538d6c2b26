"""One writer per directory: a lock file holding the owner's PID and host (private).

:class:`DirectoryLock` creates ``<directory>/.lock`` atomically (``O_CREAT | O_EXCL``) and writes
the owner's PID, host name and purpose into it; it is removed on release. A second writer finds
the file and is refused with :class:`LockHeldError`, one line naming the holder. A lock left by a
process that no longer runs on this host (killed with ``kill -9``, power loss) is stale: it is
taken over with a :class:`StaleLockWarning`. A lock held on another host cannot be checked from
here and is always refused; the message says which file to remove once that process is gone.

Used by ``prepare`` for each cache folder; the run side uses the same lock for its output folder.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LOCK_NAME", "DirectoryLock", "LockHeldError", "StaleLockWarning", "pid_alive"]

#: Name of the lock file inside the locked directory.
LOCK_NAME = ".lock"
# a lock file without readable content is given this long to be filled in by its creator
_FILL_GRACE_S = 2.0
# a take-over marker older than this was left by a process that died while taking over
_TAKEOVER_STALE_S = 10.0


class LockHeldError(RuntimeError):
    """Another live process holds the lock of a directory.

    Attributes
    ----------
    path : Path
        The lock file.
    holder : dict
        What the lock file says: ``pid``, ``host``, ``purpose``, ``since`` (when readable).
    """

    def __init__(self, message: str, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer runs was taken over."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host.

    Parameters
    ----------
    pid : int
        Process id.

    Returns
    -------
    bool
        True if it exists (also when it belongs to another user), False otherwise.

    Examples
    --------
    >>> pid_alive(os.getpid())
    True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "?")
    host = holder.get("host", "?")
    purpose = holder.get("purpose") or "a writer"
    since = holder.get("since")
    when = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if since else ""
    return f"{purpose} (PID {pid} on {host}{when})"


def _read_holder(path: Path) -> dict[str, Any] | None:
    """Content of a lock file; None if it is empty or not (yet) valid JSON."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class DirectoryLock:
    """Exclusive lock of a directory by one process, held by a lock file.

    Parameters
    ----------
    directory : path
        The directory to lock (created if missing).
    purpose : str
        What the holder does, shown to a refused writer (e.g. ``"prepare acdc/all"``).

    Raises
    ------
    LockHeldError
        From :meth:`acquire` (and ``with``) when another live process holds the lock.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with DirectoryLock(tmp, purpose="demo") as lock:
    ...         held = lock.path.is_file()
    ...     held, lock.path.exists()
    (True, False)
    """

    def __init__(self, directory: str | os.PathLike[str], *, purpose: str = "") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.purpose = purpose
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._held

    def _content(self) -> bytes:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": time.time(),
        }
        return json.dumps(info).encode()

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._content())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return True

    def _refuse(self, holder: dict[str, Any]) -> LockHeldError:
        msg = (
            f"{os.fspath(self.directory)!r} is in use by {_describe(holder)}; wait for it to "
            f"finish, or remove {os.fspath(self.path)!r} if that process is gone."
        )
        return LockHeldError(msg, self.path, holder)

    def _is_stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:  # never filled in: its creator died between create and write
            return True
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid)

    def _take_over(self, holder: dict[str, Any] | None) -> bool:
        """Replace a stale lock; False if another process got there first."""
        marker = self.path.with_name(f"{LOCK_NAME}.takeover")
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - marker.stat().st_mtime
            except FileNotFoundError:
                return False
            if age > _TAKEOVER_STALE_S:
                marker.unlink(missing_ok=True)
            return False
        os.close(fd)
        try:
            if _read_holder(self.path) != holder:  # changed since we judged it: not ours to take
                return False
            self.path.unlink(missing_ok=True)
            if not self._try_create():
                return False
        finally:
            marker.unlink(missing_ok=True)
        what = "an empty lock file" if holder is None else f"a lock of {_describe(holder)}"
        warnings.warn(
            f"{os.fspath(self.directory)!r}: took over {what}, a process that no longer runs; "
            "its unfinished work is redone or resumed.",
            StaleLockWarning,
            stacklevel=4,
        )
        return True

    def acquire(self) -> DirectoryLock:
        """Take the lock (creating the directory if needed).

        Returns
        -------
        DirectoryLock
            Self.

        Raises
        ------
        LockHeldError
            If another live process (or a process on another host) holds it.
        OSError
            If the lock file cannot be created (e.g. a read-only folder).
        """
        if self._held:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + _FILL_GRACE_S
        while True:
            if self._try_create():
                self._held = True
                return self
            holder = _read_holder(self.path)
            if holder is None and not self.path.exists():
                continue  # released between our create and read: try again
            if holder is None and time.monotonic() < deadline:
                time.sleep(0.05)  # its creator is writing it right now
                continue
            if not self._is_stale(holder):
                raise self._refuse(holder or {})
            if self._take_over(holder):
                self._held = True
                return self
            if time.monotonic() > deadline + _TAKEOVER_STALE_S:
                raise self._refuse(_read_holder(self.path) or {})
            time.sleep(0.05)

    def release(self) -> None:
        """Remove the lock file if this process still holds it; a no-op otherwise."""
        if not self._held:
            return
        self._held = False
        holder = _read_holder(self.path)
        if holder is not None and holder.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except OSError as err:  # pragma: no cover - folder removed or made read-only
                if err.errno not in (errno.ENOENT, errno.EROFS, errno.EACCES):
                    raise

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

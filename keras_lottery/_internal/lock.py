"""One writer per folder: an operating-system lock on a lock file.

`FolderLock(folder)` takes an exclusive `fcntl.flock` on `folder/LOCK_NAME`
and writes the holder's pid and host into it. The operating system releases
the lock when the holder closes it or dies (even by SIGKILL), so a killed
process never leaves a folder locked; the file itself stays, harmless. A
second process (or a second lock in the same process) gets `FolderLockedError`,
naming the holder's pid and host; with `blocking=True` it waits instead
until the holder lets go (for short critical sections, such as merging one
JSON file from several processes; in one thread, a second blocking lock on
a folder it holds waits forever). Where `fcntl` is missing (Windows), the
lock is a no-op.

Example:

>>> import os
>>> from keras_lottery._internal.lock import FolderLock, FolderLockedError
>>> os.makedirs("search", exist_ok=True)
>>> with FolderLock("search", what="lottery_search"):
...     try:
...         FolderLock("search", what="lottery_search").acquire()
...     except FolderLockedError as error:
...         print("held by pid", error.holder["pid"] > 0)
held by pid True
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from keras_lottery.errors import KerasLotteryError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: The lock file's name inside the locked folder.
LOCK_NAME = ".keras_lottery.lock"


class FolderLockedError(KerasLotteryError, RuntimeError):
    """Another process (or another lock in this one) holds the folder.

    Attributes:
        holder: `{"pid": ..., "host": ...}` of the holder, as far as known.
    """

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class FolderLock:
    """An exclusive, process-lifetime lock on a folder (see the module).

    Args:
        folder: The folder; it must exist.
        what: Who locks, for messages, e.g. `"lottery_search"`.
        blocking: False (the default): `acquire` refuses a held lock
            (`FolderLockedError`); True: it waits until the holder
            releases it (or dies).

    Example: several processes merging one file, one at a time.

    >>> from keras_lottery._internal.lock import FolderLock
    >>> with FolderLock(".", what="merge", blocking=True):
    ...     pass  # read, merge and write the shared file here
    """

    def __init__(self, folder: str | os.PathLike, what: str, *,
                 blocking: bool = False):
        if not isinstance(blocking, bool):
            raise TypeError(
                f"`blocking` is True or False. Received: blocking={blocking!r}")
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.blocking = blocking
        self._fd: int | None = None

    def _holder(self) -> dict:
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(self.path.read_text(encoding="utf-8")))
        return {"pid": "unknown", "host": "unknown"}

    def acquire(self) -> FolderLock:
        """Takes the lock: waits for it (`blocking`), or raises
        `FolderLockedError` if another holder has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
            except OSError:
                os.close(fd)
                if self.blocking:  # not "held": waiting itself failed
                    raise
                holder = self._holder()
                raise FolderLockedError(
                    f"{self.path.parent} is being written by another "
                    f"{self.what} (pid {holder.get('pid')} on host "
                    f"{holder.get('host')!r}; lock file {self.path}). One "
                    "process writes a search directory at a time: wait for it "
                    "to finish, stop it, or choose another directory.",
                    holder) from None
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        os.ftruncate(fd, 0)
        os.write(fd, me.encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Gives the lock back (closing the file releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["LOCK_NAME", "FolderLock", "FolderLockedError"]

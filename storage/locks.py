"""The one cross-process lock: an exclusive ``flock`` on a file.

A second process (a second `onebox` command) that wants the same lock waits until the first lets
go; the kernel lets go for a process that dies, even by SIGKILL, so no stale lock is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its folder, when missing) while inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Hold the exclusive lock on ``path`` inside when no one holds it (True), else do not wait (False)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

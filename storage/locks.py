"""The one cross-process lock: an exclusive ``flock`` on a file.

A second process (a second `onebox` command) that wants the same lock waits until the first lets
go; the kernel lets go for a process that dies, even by SIGKILL, so no stale lock is left behind.
The holder writes its pid and command line into the file, so one that waits can say whom it
waits for (the file is only ever a lock: nothing else reads it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

HOLDER_CHARS = 300


def _record_holder(handle: IO[str]) -> None:
    handle.truncate(0)  # opened for appending: the write lands at the new end, 0
    handle.write(f"{os.getpid()} {shlex.join(sys.argv)}"[:HOLDER_CHARS] + "\n")
    handle.flush()


def holder(path: Path) -> str:
    """Who holds (or last held) the lock at ``path``: "pid N: command", or "" when unknown."""
    try:
        pid, _, command = path.read_text().strip().partition(" ")
    except OSError:
        return ""
    return f"pid {pid}: {command}" if pid.isdigit() else ""


@contextlib.contextmanager
def exclusive_lock(path: Path, *, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its folder, when missing) while inside.

    ``waiting``: what the lock guards, for a line printed when another process holds it
    ("waiting for WAITING: another onebox command holds it (pid N: onebox rollback ...)"), before
    waiting for it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                by = holder(path)
                print(f"waiting for {waiting}: another onebox command holds it" + (f" ({by})" if by else ""))
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _record_holder(handle)
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
            _record_holder(handle)
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

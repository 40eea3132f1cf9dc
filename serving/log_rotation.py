"""A server's output written to a log that is rotated by size: ``python -m serving.log_rotation LOG -- COMMAND...``.

The local runtime's model server ran for weeks appending to one file that nothing rotated (and a
traceback per bad upload grew it fast). This runs ``COMMAND`` as its child, in its own process
group, and copies its output, line by line, to ``LOG``; past MAX_BYTES the file becomes
``LOG.1`` (``LOG.1`` becomes ``LOG.2`` ..., KEEP files in all) and a new ``LOG`` starts.

It ignores SIGTERM and SIGINT: stopping the group signals the server, and this goes on copying
until the server's output ends, so the last lines (how it stopped) are kept. It exits with the
server's exit status. Standard library only.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, BinaryIO

MAX_BYTES = 10 * 1024 * 1024
KEEP = 3  # LOG.1 to LOG.3 beside LOG


class RotatingLog:
    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.file: BinaryIO = path.open("ab")

    def write(self, line: bytes) -> None:
        if self.file.tell() and self.file.tell() + len(line) > self.max_bytes:
            self.rotate()
        self.file.write(line)
        self.file.flush()  # readers (onebox logs, the start-up check) see each line at once

    def rotate(self) -> None:
        self.file.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.file = self.path.open("ab")

    def close(self) -> None:
        self.file.close()


def copy_output(source: IO[bytes], log: RotatingLog) -> None:
    for line in iter(source.readline, b""):
        log.write(line)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m serving.log_rotation LOG -- COMMAND...", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = RotatingLog(Path(argv[0]))
    # The server gets the default signal handling back (Popen restores SIG_IGN'd signals only
    # for SIGPIPE and friends), so a stop of the group still stops it.
    server = subprocess.Popen(
        argv[2:],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_default_signals,
    )
    assert server.stdout is not None
    try:
        copy_output(server.stdout, log)
    finally:
        log.close()
    return server.wait()


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

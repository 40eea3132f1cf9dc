"""CPU time of the processes that answer requests, from /proc: a figure other load cannot shift.

Requests/s on a shared machine depend on what else runs; the CPU seconds a server spends per
request hardly do, so the serving benchmark reports both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of the processes (all their threads); gone ones count 0."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def process_tree(leader: int) -> list[int]:
    """``leader`` and every process it started, however deep (BentoML's workers are grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4 of stat: the parent
    found, pending = [], [leader]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += children.get(pid, [])
    return found

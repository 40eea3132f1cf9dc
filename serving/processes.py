"""Background processes onebox starts (model servers, Prefect's server, benchmarks' baselines).

Each runs in a process group of its own, so it outlives the command that started it and stops
whole: MLflow, BentoML and Prefect leave children behind when only the parent is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from serving.waiting import NotYet, WaitTimeout, wait_for

STOP_TIMEOUT_S = 20.0


def process_alive(pid: int, *, command_marker: str | None = None) -> bool:
    """Whether ``pid`` runs (an exited child of ours is reaped on the way).

    Args:
        command_marker: text its command line must contain; a recycled pid that belongs to some
            other program then counts as gone.
    """
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if command_marker is None:
        return True
    try:
        return command_marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap the leader if it is our child: no zombie
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pgid: int, *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group ``pgid`` (its leader's pid), SIGKILL what is left after ``timeout_s``.

    Returns once no process of the group is left; a group already gone is not an error.
    """

    def group_gone() -> None:
        if _group_alive(pgid):
            raise NotYet(f"process group {pgid} still runs")

    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_for(group_gone, timeout_s=timeout_s, what=f"process group {pgid} to exit", interval_s=0.1)
        return
    except WaitTimeout:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(group_gone, timeout_s=10, what=f"process group {pgid} to exit after SIGKILL", interval_s=0.1)

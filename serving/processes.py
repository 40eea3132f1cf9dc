"""Background processes onebox starts (model servers, Prefect's server, benchmarks' baselines).

Each runs in a process group of its own, so it outlives the command that started it and stops
whole: MLflow, BentoML and Prefect leave children behind when only the parent is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from serving.waiting import NotYet, WaitTimeout, wait_for

STOP_TIMEOUT_S = 20.0


def start_process_group(
    command: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None, append: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a process group of its own, its output (stdout and stderr) in ``log_path``.

    It outlives the command that started it; stop it with :func:`stop_process_group`.

    Args:
        append: keep what the log holds (a server's earlier runs); False starts it empty.
    """
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


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
    if _exited(pid):
        return False  # its parent, not us, has yet to reap it
    if command_marker is None:
        return True
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask
    # Empty while a process exits (its memory already gone, its threads and sockets not yet):
    # it still runs, and may still hold its port.
    return not command_line or command_marker.encode() in command_line


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap the leader if it is our child: no zombie
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = _group_members(pgid)
    return True if members is None else not all(_exited(member) for member in members)


def _group_members(pgid: int) -> list[int] | None:
    """The processes of group ``pgid``, from /proc; None where /proc is unreadable.

    A zombie among them counts as stopped (see :func:`_exited`): the leader of a group another
    process started (a model server started by an earlier `onebox` command) stays one until
    that process reaps it.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for entry in proc.iterdir():
        fields = _stat(Path("/proc", entry.name)) if entry.name.isdigit() else []
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _exited(pid: int) -> bool:
    """Whether ``pid`` is a zombie whose every thread has exited too.

    A multi-threaded process's main thread turns zombie as soon as it exits, while its other
    threads may still be exiting with the process's sockets open (a killed server's port is not
    free yet): it has exited only once they all have.
    """
    if _stat(Path(f"/proc/{pid}"))[0:1] != ["Z"]:
        return False
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True  # reaped meanwhile
    return all(_stat(thread)[0:1] in (["Z"], ["X"], []) for thread in threads)


def _stat(entry: Path) -> list[str]:
    """The fields of a /proc process or thread entry's stat after the command (state, ppid,
    pgrp, ...); [] when unreadable."""
    try:
        # pid (command) state ppid pgrp ...: the command may hold spaces and parentheses.
        return (entry / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []  # gone meanwhile, or no /proc


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


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port`` (a server of ours or another program's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0

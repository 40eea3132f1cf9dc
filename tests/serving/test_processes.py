"""The shared wait helper and process-group stop, with real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.processes import process_alive, stop_process_group
from serving.waiting import NotYet, WaitTimeout, wait_for
from storage.errors import ServingError


def test_wait_for_returns_what_the_check_returns_once_it_passes() -> None:
    calls = []

    def check() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NotYet(f"only {len(calls)} calls")
        return "done"

    assert wait_for(check, timeout_s=5, what="three calls", interval_s=0.01) == "done"
    assert len(calls) == 3


def test_a_timeout_names_what_was_awaited_and_what_was_last_seen() -> None:
    def never() -> None:
        raise NotYet("/readyz answered 503")

    with pytest.raises(WaitTimeout, match=r"waited 0.2 s for the server to be ready \(/readyz answered 503\)"):
        wait_for(never, timeout_s=0.2, what="the server to be ready", interval_s=0.05)


def test_another_error_ends_the_wait_at_once() -> None:
    started = time.monotonic()

    def dead() -> None:
        raise ServingError("the server exited while starting")

    with pytest.raises(ServingError, match="exited while starting"):
        wait_for(dead, timeout_s=30, what="the server")
    assert time.monotonic() - started < 1


def test_stop_process_group_stops_the_children_too() -> None:
    # A parent that leaves a child behind, as MLflow and BentoML do when only the parent is signalled.
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    wait_for(lambda: _children(parent.pid) or _raise(NotYet("no child yet")), timeout_s=10, what="the child")
    child = _children(parent.pid)[0]
    stop_process_group(parent.pid)
    assert not process_alive(parent.pid)
    assert not process_alive(child)


def test_a_group_that_ignores_sigterm_is_killed() -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    stop_process_group(process.pid, timeout_s=0.5)
    assert not process_alive(process.pid)


def test_stopping_a_group_that_is_gone_is_not_an_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    stop_process_group(process.pid)


def test_a_group_whose_leader_is_another_processs_zombie_counts_as_stopped() -> None:
    # As when `onebox stop` stops a server an earlier command started: the leader's parent is
    # alive and does not reap it, so it stays a zombie after it exits.
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    leader = int(parent.stdout.readline())
    try:
        started = time.monotonic()
        stop_process_group(leader, timeout_s=5)
        assert time.monotonic() - started < 5  # not waited out, then SIGKILLed
        assert Path(f"/proc/{leader}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        assert not process_alive(leader)
    finally:
        stop_process_group(parent.pid)


def test_a_recycled_pid_of_another_program_counts_as_gone() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert process_alive(process.pid)
        assert not process_alive(process.pid, command_marker="serving.service:Classifier")
    finally:
        stop_process_group(process.pid)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


def _raise(error: Exception) -> list[int]:
    raise error

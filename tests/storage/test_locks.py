"""The cross-process lock: a second holder waits and says for whom; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from storage.locks import exclusive_lock, holder, lock_if_free
from tests.conftest import holding_process

HOLD = """
import sys
from pathlib import Path
from storage.locks import exclusive_lock
with exclusive_lock(Path(sys.argv[1])):
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_second_holder_says_whom_it_waits_for_and_a_sigkill_frees_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "locks" / "model-digits.lock"
    other = holding_process(HOLD, str(path), "onebox", "rollback")
    got = threading.Event()

    def take() -> None:
        with exclusive_lock(path, waiting="model digits"):
            got.set()

    thread = threading.Thread(target=take)
    thread.start()
    assert not got.wait(0.5)  # it waits
    os.kill(other.pid, signal.SIGKILL)  # no cleanup of any kind: the kernel drops the lock
    other.wait()
    assert got.wait(10)
    thread.join()
    out = capsys.readouterr().out
    assert f"waiting for model digits: another onebox command holds it (pid {other.pid}: " in out
    assert "onebox rollback" in out
    assert holder(path).startswith(f"pid {os.getpid()}: ")  # the last holder is recorded


def test_a_free_lock_is_taken_without_a_word(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.lock"
    started = time.perf_counter()
    with exclusive_lock(path, waiting="the thing"), lock_if_free(path) as free:  # another open: it is held
        assert not free
    with lock_if_free(path) as free:
        assert free
    assert time.perf_counter() - started < 5
    assert capsys.readouterr().out == ""


def test_holder_of_a_file_that_is_no_lock_is_unknown(tmp_path: Path) -> None:
    assert holder(tmp_path / "missing.lock") == ""
    (tmp_path / "empty.lock").write_text("")
    assert holder(tmp_path / "empty.lock") == ""

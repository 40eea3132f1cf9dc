"""Fixtures of the flow tests on the appliance: a worker on this host for a module's appliance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.settings import Settings

ONEBOX = str(Path(sys.executable).with_name("onebox"))


@pytest.fixture(scope="module")
def worker(appliance: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`onebox worker` as a user starts it; yields its log file."""
    from flows.remote import online_workers

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [ONEBOX, "worker", "--name", "test-worker", "--poll-seconds", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its flow-run processes go down with it
        )
    try:
        deadline = time.monotonic() + 120
        while "test-worker" not in online_workers():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the worker never came online:\n{log.read_text()}"
            time.sleep(1)
        yield log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

"""The compose profile `worker`: the same Prefect worker, in a container, running a run end to end.

Its own appliance (`onebox up --worker`): no host worker polls the pool, so the run below can only
have been executed, trained and deployed by the container.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.registry import PRODUCTION, version_by_alias
from storage.settings import Settings
from tests.conftest import isolated_appliance
from tests.flows.test_deployments import _create_run, _logs, _wait_final

# The module's first test builds the worker image when the engine has none (3 GB of wheels, a
# 6.5 GB image: 10-20 min on 2 cores), inside `onebox up --worker`'s own 30-minute limit.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]

ONEBOX = str(Path(sys.executable).with_name("onebox"))


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Settings]:
    with isolated_appliance(tmp_path_factory) as settings:
        up = subprocess.run([ONEBOX, "up", "--worker"], capture_output=True, text=True, timeout=1800, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        yield settings


def test_the_worker_container_trains_and_deploys(appliance: Settings) -> None:
    from flows.remote import online_workers

    deadline = time.monotonic() + 180
    while "onebox-container" not in online_workers():
        assert time.monotonic() < deadline, subprocess.run(
            [ONEBOX, "logs", "worker"], capture_output=True, text=True, check=False
        ).stdout
        time.sleep(2)
    run_id = _create_run({"epochs": 2, "seed": 3})
    state = _wait_final([run_id])[run_id].state
    logs = _logs(run_id)
    assert state.name == "Completed", (state.message, logs[-20:])
    assert any(line.startswith("Worker 'onebox-container' submitting flow run") for line in logs)
    production = version_by_alias(appliance, "digits", PRODUCTION)
    assert production is not None  # trained, registered and swapped in from inside the container
    assert any(line.startswith(f"digits version {production.version} serves at") for line in logs)


def test_up_without_the_worker_removes_its_container(appliance: Settings) -> None:
    from serving.compose import ComposeRuntime

    down = subprocess.run([ONEBOX, "up", "--no-worker"], capture_output=True, text=True, timeout=600, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert ComposeRuntime(appliance)._container("worker") is None
    assert ComposeRuntime(appliance).state().worker is False

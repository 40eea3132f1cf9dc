"""Shared fixtures: a temp ONEBOX_HOME per test, and one real trained pipeline per session.

Everything is real: a Prefect test server, an MLflow SQLite store, a BentoML server over HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from benchmarks.servers import free_port, isolated_appliance_environment
from storage.credentials import client_environment
from storage.settings import Settings, get_settings

if TYPE_CHECKING:
    from flows.pipeline import PipelineResult

pytest_plugins = ["tests.inbox_fixtures"]  # a home with a model in production and a filled inbox


def pytest_configure(config: pytest.Config) -> None:
    # Prefect reads its settings on import; point it away from ~/.prefect before any test module imports it.
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="onebox-test-prefect-")
    for name, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        "TORCH_LOGS": "-all",
        # Tests that want the appliance ask for it; the others must not find one on this machine.
        "ONEBOX_RUNTIME": "local",
    }.items():
        os.environ.setdefault(name, value)


REQUIRE_DOCKER_VARIABLE = "ONEBOX_REQUIRE_DOCKER"  # set by .ci/run: docker tests fail instead of skipping
REQUIRE_DOCKER = os.environ.get(REQUIRE_DOCKER_VARIABLE) == "1"


@functools.cache
def docker_problem() -> str | None:
    """Why Docker tests cannot run here, or None when the engine and compose are usable."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as error:  # no socket, no permission, engine down: all mean "no engine"
        return f"Docker Engine not reachable: {error}"
    from serving.compose_cli import compose_command
    from storage.errors import ServingError

    try:
        compose_command()
    except ServingError as error:
        return str(error)
    return None


@pytest.fixture(autouse=True)
def _docker_engine(request: pytest.FixtureRequest) -> None:
    """Docker-marked tests skip without an engine, and fail instead when CI requires Docker."""
    if request.node.get_closest_marker("docker") is None:
        return
    problem = docker_problem()
    if problem is None:
        return
    if REQUIRE_DOCKER:
        pytest.fail(f"{REQUIRE_DOCKER_VARIABLE}=1 but {problem}")
    pytest.skip(problem)


def holding_process(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A Python process running ``script``, returned once it printed "holding".

    The script takes what it holds (a lock, a lease, a record), prints "holding", and keeps it
    until its stdin closes (or it is killed).
    """
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def png_bytes(pixels: np.ndarray, *, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


@contextlib.contextmanager
def isolated_appliance(tmp_path_factory: pytest.TempPathFactory, *, credentials: bool = False) -> Iterator[Settings]:
    """An environment for one appliance of its own: home, compose project and ports.

    The caller brings the stack up (``ComposeRuntime.up`` or ``onebox up``); leaving the block
    takes it down with its volumes and model images. Prefect calls in this process go to the
    stack's Prefect server meanwhile. ``credentials``: a random login and API key are set (the
    appliance asks for them, on loopback too), and this process's MLflow and Prefect clients
    send the login, as onebox's commands do.
    """
    from prefect.concurrency.services import ConcurrencySlotAcquisitionService
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from serving.compose import ComposeRuntime
    from serving.image_builds import remove_model_images

    if docker_problem():
        pytest.skip("needs Docker")  # the autouse fixture turns this into a failure in CI
    patch = pytest.MonkeyPatch()
    environment = isolated_appliance_environment("test", tmp_path_factory.mktemp("appliance-home"))
    if credentials:
        environment |= {"ONEBOX_PASSWORD": secrets.token_urlsafe(18), "ONEBOX_API_KEY": secrets.token_urlsafe(24)}
    for name, value in {**environment, "ONEBOX_DRAIN_S": "3"}.items():
        patch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    login = client_environment(settings.username, settings.password_value)
    for name, value in login.items():
        patch.setenv(name, value)  # MLflow's client reads them per request
    prefect = {PREFECT_API_URL: settings.prefect_api_url}
    if login:
        prefect[PREFECT_API_AUTH_STRING] = login["PREFECT_API_AUTH_STRING"]
    try:
        assert settings.prefect_api_url
        # Prefect's slot-acquisition service keeps the client of the server it first talked to:
        # restarted here and on the way out, a flow run's `gpu` slot is taken and released on the
        # same server.
        ConcurrencySlotAcquisitionService.drain_all(timeout=10)
        with temporary_settings(prefect):
            yield settings
            # Send the flow runs' last logs and events while the stack's Prefect server still
            # answers; left queued, they stall the test harness's shutdown later.
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)
            ConcurrencySlotAcquisitionService.drain_all(timeout=10)
    finally:
        ComposeRuntime(settings).down(volumes=True)
        remove_model_images(settings)
        patch.undo()
        get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh, empty home folder."""
    return Settings(home=tmp_path / "home", serve_port=free_port())


@dataclass
class TrainedPipeline:
    settings: Settings
    result: PipelineResult


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[TrainedPipeline]:
    """One real run of the training pipeline (deployed and promoted), its server left running."""
    from flows.pipeline import training_pipeline
    from serving.local import LocalRuntime

    patch = pytest.MonkeyPatch()
    patch.setenv("ONEBOX_HOME", str(tmp_path_factory.mktemp("onebox-home")))
    patch.setenv("ONEBOX_SERVE_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    try:
        result = training_pipeline(epochs=10, seed=0, deploy=True)
        yield TrainedPipeline(settings=settings, result=result)
    finally:
        LocalRuntime(settings).stop()
        patch.undo()
        get_settings.cache_clear()

"""The compose profile `worker`: the same Prefect worker, in a container, running a run end to end.

Its own appliance (`onebox up --worker`): no host worker polls the pool, so the run below can only
have been executed, trained and deployed by the container. The appliance has credentials set
(ONEBOX_PASSWORD, ONEBOX_API_KEY), so that run also proves the worker passes them to MLflow,
Prefect and the gateway; the doors that ask for them are checked after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.health import blank_png
from storage.credentials import client_environment
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
    with isolated_appliance(tmp_path_factory, credentials=True) as settings:
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


def test_with_credentials_every_door_asks_for_them(appliance: Settings) -> None:
    password, api_key = appliance.password_value, appliance.api_key_value
    assert password
    assert api_key
    login = httpx.BasicAuth(appliance.username, password)
    production = version_by_alias(appliance, "digits", PRODUCTION)  # MLflow's client, with the login
    assert production is not None
    # MLflow's basic-auth app, its health check open.
    mlflow = appliance.mlflow_tracking_uri
    search = f"{mlflow}/api/2.0/mlflow/registered-models/search"
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, auth=httpx.BasicAuth(appliance.username, password + "x")).status_code == 401
    assert httpx.get(search, auth=login).json()["registered_models"][0]["name"] == "digits"
    assert httpx.get(f"{mlflow}/health").status_code == 200
    # Prefect's server auth string, its health check open.
    prefect = appliance.prefect_api_url
    assert prefect
    assert httpx.post(f"{prefect}/flows/filter", json={}).status_code == 401
    assert httpx.post(f"{prefect}/flows/filter", json={}, auth=login).status_code == 200
    assert httpx.get(f"{prefect}/health").status_code == 200
    # The gateway: /predict needs the key (or the login); health and the index stay open.
    predict = f"{appliance.serve_url}/models/digits/predict"
    image = {"image": ("x.png", blank_png((1, 8, 8)), "image/png")}
    refused = httpx.post(predict, files=image)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    for headers in ({"Authorization": f"Bearer {api_key}"}, {"X-API-Key": api_key}):
        assert httpx.post(predict, files=image, headers=headers).json()["model_version"] == production.version
    assert httpx.post(predict, files=image, auth=login).status_code == 200
    assert httpx.get(f"{appliance.serve_url}/gateway/healthz").status_code == 200
    assert "digits" in httpx.get(f"{appliance.serve_url}/").text
    assert httpx.get(f"{appliance.serve_url}/models/digits/readyz").status_code == 200
    # The labeling page behind the gateway asks for the login.
    assert httpx.get(f"{appliance.serve_url}/label/").status_code == 401
    assert httpx.get(f"{appliance.serve_url}/label/", auth=login).json()["models"][0]["model"] == "digits"
    # The CLI derives the clients' login from ONEBOX_PASSWORD alone.
    env = {k: v for k, v in os.environ.items() if k not in client_environment("x", "y")}
    done = subprocess.run([ONEBOX, "status", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [model["name"] for model in report["models"]] == ["digits"]
    assert report["models"][0]["healthy"] is True
    assert "onebox-container" in report["workers"]


def test_up_without_the_worker_removes_its_container(appliance: Settings) -> None:
    from serving.compose import ComposeRuntime

    down = subprocess.run([ONEBOX, "up", "--no-worker"], capture_output=True, text=True, timeout=600, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert ComposeRuntime(appliance)._container("worker") is None
    assert ComposeRuntime(appliance).state().worker is False

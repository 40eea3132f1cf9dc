"""Each service of the appliance refuses, by itself, to listen beyond loopback without credentials:
a plain `docker compose up` with ONEBOX_BIND=0.0.0.0 (no onebox to check first) starts nothing
that answers without a login."""

from __future__ import annotations

import secrets

import pytest

from serving.image_builds import ApplianceImages, build_appliance_images
from storage.settings import Settings

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def images() -> ApplianceImages:
    return build_appliance_images(Settings())  # cached: seconds when the appliance's tests built them


def _exit(image: str, environment: dict[str, str]) -> tuple[int, str]:
    """Run ``image`` until it exits (it must, within 60 s): its status and output."""
    from serving.docker_client import docker_client

    container = docker_client().containers.run(image, detach=True, network_mode="none", environment=environment)
    try:
        status = container.wait(timeout=60)["StatusCode"]
        return status, container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("service", ["mlflow", "prefect"])
def test_mlflow_and_prefect_refuse_a_public_bind_without_a_password(images: ApplianceImages, service: str) -> None:
    image = getattr(images, service)
    status, logs = _exit(image, {"ONEBOX_BIND": "0.0.0.0"})
    assert status == 2, logs
    assert f"refusing to start: ONEBOX_BIND=0.0.0.0 publishes {'MLflow' if service == 'mlflow' else 'Prefect'}" in logs
    assert "ONEBOX_PASSWORD is not set" in logs
    # An empty password is none.
    status, logs = _exit(image, {"ONEBOX_BIND": "10.1.2.3", "ONEBOX_PASSWORD": ""})
    assert status == 2, logs


def test_the_gateway_refuses_to_listen_beyond_loopback_without_credentials(images: ApplianceImages) -> None:
    status, logs = _exit(images.gateway, {"ONEBOX_GATEWAY_LISTEN": "0.0.0.0:3999"})
    assert status == 2, logs
    assert "refusing to start: ONEBOX_BIND publishes the gateway on 0.0.0.0" in logs
    assert "ONEBOX_PASSWORD and ONEBOX_API_KEY are not set" in logs
    api_key = secrets.token_urlsafe(24)
    status, half = _exit(images.gateway, {"ONEBOX_GATEWAY_LISTEN": "127.0.0.1:3999", "ONEBOX_API_KEY": api_key})
    assert status == 2, half
    assert "set both ONEBOX_PASSWORD and ONEBOX_API_KEY" in half
    quoted = {"ONEBOX_GATEWAY_LISTEN": "127.0.0.1:3999", "ONEBOX_PASSWORD": 'x";}', "ONEBOX_API_KEY": api_key}
    status, logs = _exit(images.gateway, quoted)
    assert status == 2, logs
    assert "may hold letters, digits and ._~+/=@%!*,- only" in logs


def test_the_labeling_service_refuses_a_public_bind_without_credentials(images: ApplianceImages) -> None:
    status, logs = _exit(images.labeling, {"ONEBOX_BIND": "0.0.0.0", "ONEBOX_HOME": "/tmp/home"})
    assert status == 1, logs
    assert "refusing to start: ONEBOX_BIND=0.0.0.0 publishes the appliance beyond this machine" in logs
    assert "Traceback" not in logs

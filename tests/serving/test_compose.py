"""The appliance for real: docker compose, offline-built images, blue/green swaps under load.

One stack per module under a unique compose project, ports and model name; torn down after.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.compose import ComposeRuntime
from serving.loadtest import SteadyLoad
from storage.errors import ServingError
from storage.registry import PRODUCTION, materialize_bundle, version_by_alias
from storage.settings import Settings
from tests.conftest import isolated_appliance, png_bytes

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SWAP_REQUESTS = 2000


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Settings]:
    with isolated_appliance(tmp_path_factory) as settings:
        ComposeRuntime(settings).up()
        yield settings


def digit_png() -> bytes:
    pixels = np.zeros((8, 8), np.uint8)
    pixels[1:7, 3:5] = 255  # a one
    return png_bytes(pixels)


def predict(client: httpx.Client, url: str) -> httpx.Response:
    return client.post(f"{url}/predict", files={"image": ("digit.png", digit_png(), "image/png")})


def test_gateway_without_a_model_says_how_to_train_one(appliance: Settings) -> None:
    url = appliance.serve_url
    assert httpx.get(f"{url}/gateway/healthz").status_code == 200
    answer = httpx.post(f"{url}/predict", files={"image": ("d.png", digit_png(), "image/png")})
    assert answer.status_code == 503
    assert "onebox train" in answer.json()["error"]


def test_a_second_build_rebuilds_nothing(appliance: Settings) -> None:
    from serving.docker_client import docker_client
    from serving.image_builds import build_appliance_images

    def image_ids() -> dict[str, str]:
        tags = vars(build_appliance_images(appliance)).values()
        return {tag: docker_client().images.get(tag).id for tag in tags}

    assert image_ids() == image_ids()


def test_ports_listen_on_loopback_only(appliance: Settings) -> None:
    import psutil

    runtime = ComposeRuntime(appliance)
    for service in ("mlflow", "prefect", "gateway"):
        container = runtime._container(service)
        assert container is not None
        assert container.attrs["Config"]["User"] not in ("", "root", "0")
        if service == "gateway":  # on the host's network: nginx listens itself, no port is published
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
            continue
        bindings = [b for ports in container.attrs["NetworkSettings"]["Ports"].values() if ports for b in ports]
        assert bindings
        assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    listening = {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == appliance.serve_port
    }
    assert listening == {"127.0.0.1"}


def test_the_network_has_a_free_subnet_and_the_colors_fixed_addresses(appliance: Settings) -> None:
    from serving.appliance_network import ApplianceNetwork, overlap, subnets_in_use

    runtime = ComposeRuntime(appliance)
    recorded = runtime.state().network
    assert recorded is not None
    subnet = recorded.subnet
    assert recorded == ApplianceNetwork.for_subnet(subnet)
    network = runtime._network()
    assert network is not None
    assert network.attrs["IPAM"]["Config"][0]["Subnet"] == str(subnet)
    # Nothing else here (no other Docker network, no host route) overlaps it.
    others = {taken: what for taken, what in subnets_in_use().items() if what != f"Docker network {network.name}"}
    assert overlap(subnet, others) is None


def test_train_through_the_appliance_serves_via_the_gateway(appliance: Settings) -> None:
    from mlflow import MlflowClient

    from flows.pipeline import training_pipeline

    result = training_pipeline(epochs=4, seed=0, deploy=True)

    assert result.served_url == appliance.serve_url
    assert appliance.mlflow_tracking_uri.startswith("http://")
    assert MlflowClient(appliance.mlflow_tracking_uri).get_run(result.run_id).info.status == "FINISHED"
    answer = predict(httpx.Client(), appliance.serve_url)
    assert answer.status_code == 200
    assert answer.json()["model_version"] == result.model_version
    assert httpx.get(f"{appliance.serve_url}/metadata").json()["run_id"] == result.run_id
    assert "<html" in httpx.get(f"{appliance.serve_url}/").text.lower()  # Swagger UI through the gateway


def test_better_model_swaps_in_with_zero_failed_requests(appliance: Settings) -> None:
    from flows.pipeline import training_pipeline

    before = version_by_alias(appliance, "digits", PRODUCTION)
    assert before is not None
    with SteadyLoad(appliance.serve_url) as load:
        result = training_pipeline(epochs=4, seed=1, deploy=True, min_improvement=-1.0)
        load.finish(at_least=SWAP_REQUESTS)

    assert result.promoted
    assert load.failures == []
    assert load.sent >= SWAP_REQUESTS
    assert set(load.answers) == {before.version, result.model_version}  # old, then new
    assert version_by_alias(appliance, "digits", PRODUCTION).version == result.model_version  # type: ignore[union-attr]


def test_broken_model_is_refused_and_the_old_one_keeps_serving(appliance: Settings, tmp_path: Path) -> None:
    production = version_by_alias(appliance, "digits", PRODUCTION)
    assert production is not None
    broken = tmp_path / "broken"
    shutil.copytree(materialize_bundle(appliance, "digits", production.version), broken)
    (broken / "metadata.json").write_text(
        (broken / "metadata.json")
        .read_text()
        .replace(f'"model_version": "{production.version}"', '"model_version": "999"')
    )
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    runtime = ComposeRuntime(appliance)
    state = runtime.state()

    with SteadyLoad(appliance.serve_url, clients=1) as load:
        with pytest.raises(ServingError, match="v999 was not switched to"):
            runtime.deploy(broken)
        load.finish(at_least=50)

    assert load.failures == []
    assert set(load.answers) == {production.version}
    assert runtime.state() == state
    assert version_by_alias(appliance, "digits", PRODUCTION) == production


def test_rollback_then_down_and_up_restore_serving(appliance: Settings) -> None:
    from flows.promote import rollback

    production = version_by_alias(appliance, "digits", PRODUCTION)
    assert production is not None
    with SteadyLoad(appliance.serve_url, clients=2) as load:
        version, url = rollback(appliance, "digits")
        load.finish(at_least=200)

    assert load.failures == []
    assert version != production.version
    assert version_by_alias(appliance, "digits", PRODUCTION).version == version  # type: ignore[union-attr]
    assert predict(httpx.Client(), url).json()["model_version"] == version

    runtime = ComposeRuntime(appliance)
    runtime.down()
    runtime.up()
    assert predict(httpx.Client(), appliance.serve_url).json()["model_version"] == version

"""The gateway image run on its own, on the host's network, with this checkout's gateway.sh and
nginx template mounted over the image's: the tests of its nginx need no appliance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from benchmarks.servers import free_port
from serving.checkout import COMPOSE_DIR
from serving.waiting import NotYet, wait_for

if TYPE_CHECKING:
    from docker.models.containers import Container

GATEWAY_IMAGE = "onebox/gateway:latest"


class ColorServer(BaseHTTPRequestHandler):
    """Answers any request with which model color it is and the path it got."""

    protocol_version = "HTTP/1.1"
    server_version = "color"

    def do_GET(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"color": self.server.color, "path": self.path}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def gateway_container(
    environment: dict[str, str] | None = None, volumes: dict[str, dict[str, str]] | None = None
) -> Iterator[tuple[Container, str]]:
    """The running gateway container and its URL, once it answers; stopped (and removed) after.

    Skips when the image is not built (the appliance's tests build it first).
    """
    from serving.docker_client import docker_client, image_exists

    if not image_exists(GATEWAY_IMAGE):
        pytest.skip(f"{GATEWAY_IMAGE} is not built (make up builds it)")
    port = free_port()
    gateway_dir = Path(COMPOSE_DIR, "gateway")
    container = docker_client().containers.run(
        GATEWAY_IMAGE,
        detach=True,
        remove=True,
        network_mode="host",
        environment={"ONEBOX_GATEWAY_LISTEN": f"127.0.0.1:{port}", **(environment or {})},
        volumes={
            str(gateway_dir / "nginx.conf.template"): {"bind": "/etc/onebox/nginx.conf.template", "mode": "ro"},
            str(gateway_dir / "gateway.sh"): {"bind": "/usr/local/bin/onebox-gateway", "mode": "ro"},
            **(volumes or {}),
        },
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> None:
        try:
            httpx.get(f"{url}/gateway/healthz", timeout=2).raise_for_status()
        except httpx.HTTPError as error:
            raise NotYet(str(error)) from error

    try:
        wait_for(healthy, timeout_s=60, what="the gateway to answer")
        yield container, url
    finally:
        container.stop(timeout=5)

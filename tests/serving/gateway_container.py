"""The gateway image run on its own, on the host's network, with this checkout's gateway.sh and
nginx template mounted over the image's: the tests of its nginx need no appliance."""

from __future__ import annotations

import json
import os
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from benchmarks.servers import free_port
from serving.appliance_network import ApplianceNetwork
from serving.checkout import COMPOSE_DIR
from serving.gateway_config import SOCKETS_DIR, socket_path
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


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    color: str


@contextmanager
def color_servers(network: ApplianceNetwork, colors: dict[tuple[int, str], str]) -> Iterator[Path]:
    """A ColorServer for each (slot, color) of ``colors``, answering as its value, on the Unix
    socket that color has in the appliance (serving/gateway_config.py), in a folder of its own:
    mount it at /sockets (``gateway_container(sockets=...)``)."""
    servers = []
    with tempfile.TemporaryDirectory(prefix="onebox-sockets-") as folder:
        os.chmod(folder, 0o755)  # the gateway's user finds the sockets (each is its to write)
        try:
            for (slot, color), name in colors.items():
                path = Path(folder, Path(socket_path(slot, color, network)).relative_to(SOCKETS_DIR))
                server = UnixHTTPServer(str(path), ColorServer)
                os.chmod(path, 0o666)
                server.color = name
                threading.Thread(target=server.serve_forever, daemon=True).start()
                servers.append(server)
            yield Path(folder)
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()


@contextmanager
def gateway_container(
    environment: dict[str, str] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
    *,
    sockets: Path | None = None,
) -> Iterator[tuple[Container, str]]:
    """The running gateway container and its URL, once it answers; stopped (and removed) after.
    ``sockets``: the folder of the model colors' sockets (:func:`color_servers`).

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
            **({str(sockets): {"bind": SOCKETS_DIR, "mode": "rw"}} if sockets else {}),
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

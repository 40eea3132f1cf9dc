"""Talking to the running gateway container: switch a model's live color (a marker file), and
publish which models serve, the default and the index page (files nginx reads per request); none
of it reloads nginx. compose/gateway/gateway.sh does both in the container.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import fields
from typing import TYPE_CHECKING

import httpx

from serving.appliance_state import Color
from serving.docker_client import project_container
from serving.gateway_config import (
    GatewayModel,
    index_html,
    index_json,
    models_list,
    routes_conf,
    routes_digest,
    unknown_model_json,
    upstreams_conf,
)
from serving.metadata import METADATA_FILE, ModelMetadata
from serving.waiting import NotYet, wait_for
from storage.errors import ServingError

if TYPE_CHECKING:
    from docker.models.containers import Container

    from serving.appliance_network import ApplianceNetwork

GATEWAY_SERVICE = "gateway"
GATEWAY_UID = 10004  # the gateway image's user (compose/gateway/Dockerfile)
RELOAD_TIMEOUT_S = 15.0


def _tar(files: dict[str, str]) -> bytes:
    """``files`` (path under /state: text) as a tar archive owned by the gateway's user."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            info.uid = info.gid = GATEWAY_UID
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def container_metadata(container: Container | None) -> ModelMetadata | None:
    """The metadata of the bundle a model container serves; None when it does not say."""
    if container is None:
        return None
    code, output = container.exec_run(["cat", f"/model/{METADATA_FILE}"])
    if code != 0:
        return None
    try:
        raw = json.loads(output)
        known = {f.name for f in fields(ModelMetadata)}
        raw = {key: value for key, value in raw.items() if key in known}
        return ModelMetadata(**{**raw, "classes": tuple(raw["classes"]), "image_shape": tuple(raw["image_shape"])})
    except (ValueError, KeyError, TypeError):
        return None


class Gateway:
    def __init__(self, compose_project: str, url: str) -> None:
        self.compose_project = compose_project
        self.url = url  # where it listens (the settings' serve_url)

    def container(self) -> Container:
        container = project_container(self.compose_project, GATEWAY_SERVICE)
        if container is None or container.status != "running":
            raise ServingError("the gateway is not running; start the appliance with: make up")
        return container

    def _run(self, *command: str) -> str:
        code, output = self.container().exec_run(["onebox-gateway", *command])
        text = bytes(output).decode(errors="replace").strip()
        if code != 0:
            raise ServingError(f"onebox-gateway {' '.join(command)} failed: {text}")
        return text

    def switch(self, model_name: str, color: Color | None) -> None:
        """Point ``model_name``'s routes at ``color`` (None: it has no live color, 503)."""
        self._run("switch", model_name, color or "none")

    def live_color(self, model_name: str) -> str:
        return self._run("color", model_name)

    def publish(
        self,
        models: list[GatewayModel],
        *,
        network: ApplianceNetwork,
        default: str | None,
        labeling: str | None = None,
    ) -> bool:
        """Route ``models`` (every served model) and ``default`` (the unprefixed routes), and
        install the index page; ``labeling`` (host:port of the labeling service) adds ``/label/``
        and the index's links to it.

        Adding, removing or swapping a model changes files nginx reads per request: nothing is
        reloaded, so no client connection is closed. The nginx configuration is the same for any
        set of models, and changes (then is checked and reloaded gracefully) only with the
        network or the labeling service, at `up`.

        Returns:
            Whether nginx reloaded.

        Raises:
            ServingError: nginx refused the configuration (the old one stays) or is not running.
        """
        files = {
            "incoming/upstreams.conf": upstreams_conf(network),
            "incoming/routes.conf": routes_conf(network, labeling=labeling),
            "incoming/models": models_list(models, network),
            "incoming/default": f"{default or ''}\n",
            "incoming/index.html": index_html(models, default=default, labeling=labeling is not None),
            "incoming/index.json": index_json(models, default=default, labeling=labeling is not None),
            "incoming/unknown-model.json": unknown_model_json(models),
        }
        if not self.container().put_archive("/state", _tar(files)):
            raise ServingError("copying the gateway's routes into its container failed")
        if not self._run("apply").endswith("reloaded"):
            return False
        self._await_routes(routes_digest(network, labeling=labeling))
        return True

    def _await_routes(self, digest: str) -> None:
        """Wait until nginx's new workers answer (a reload only starts them), so that a caller
        that adds or removes a model sees its routes come or go."""

        def answers_new_routes() -> None:
            try:
                answer = httpx.get(f"{self.url}/gateway/routes", timeout=2.0).text
            except httpx.TransportError as error:
                raise NotYet(str(error)) from None
            if answer != digest:
                raise NotYet(f"the gateway still answers with routes {answer[:40]!r}")

        wait_for(answers_new_routes, timeout_s=RELOAD_TIMEOUT_S, what="the gateway's new routes", interval_s=0.05)

"""The compose runtime: every served model behind one gateway, each swapped blue/green on its own.

A deploy of model NAME starts NAME's idle color with the new model image, waits until it is
healthy and has answered a smoke prediction, switches NAME's marker in the gateway (a file nginx
reads per request: no reload, so nothing in flight on any model is cut), checks a prediction
through the gateway at /models/NAME, lets the old color drain, then stops it. A model's first
deploy, or its removal, changes the gateway's files alike: nginx reloads only when the network
or the labeling service changes, at `up` (serving/gateway_config.py).
Which image each model's colors run and which is live is the appliance's state
(serving/appliance_state.py), so every model comes back as it was after a restart.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from serving.appliance_state import (
    ApplianceState,
    Color,
    ServedModel,
    image_version,
    other_color,
    read_state,
    state_lock,
    state_path,
    write_state,
)
from serving.compose_cli import run_compose
from serving.compose_health import (
    APPLIANCE_SERVICES,
    WORKER,
    Phases,
    await_version,
    prepare_network,
    start_on_free_subnet,
    wait_healthy,
)
from serving.docker_client import project_container, project_network
from serving.gateway import Gateway, container_metadata
from serving.gateway_config import GatewayModel, check_model_name
from serving.image_builds import build_appliance_images, build_model_image, build_worker_image
from serving.metadata import METADATA_FILE, ModelMetadata
from serving.runtime import ServerState, default_model
from storage.errors import ServingError
from storage.settings import Settings

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.networks import Network

SINGLE_MODEL_SERVICES = ("model-blue", "model-green")  # what the single-model onebox ran


class ComposeRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_path = state_path(settings)
        self.gateway = Gateway(settings.compose_project, settings.serve_url)
        self.last_deploy_phases: dict[str, float] = {}
        self.last_deploy_reloaded_gateway = False
        self._retiring: dict[str, Color] = {}  # per model, the color a deploy replaced

    # -- state, docker compose, containers ---------------------------------------------
    def state(self) -> ApplianceState:
        return read_state(self.state_path)

    def compose(
        self, *args: str, profiles: tuple[str, ...] = (), check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_compose(self.settings, *args, profiles=profiles, check=check)

    def _container(self, service: str) -> Container | None:
        return project_container(self.settings.compose_project, service)

    def _network(self) -> Network | None:
        return project_network(self.settings.compose_project)

    def _all_profiles(self, state: ApplianceState) -> tuple[str, ...]:
        return (*(m.service(c) for m in state.models for c in ("blue", "green") if m.image(c)), WORKER)

    # -- the appliance -----------------------------------------------------------------
    def is_up(self) -> bool:
        try:
            gateway = self._container("gateway")
        except ServingError:
            return False
        return gateway is not None and gateway.status == "running"

    def up(self, *, worker: bool | None = None, timeout_s: float = 300) -> ApplianceState:
        """Build what is missing, start the appliance and every model's live color, wait until
        healthy, and point the gateway at them (a state of the single-model onebox migrates here).

        ``worker``: also run the containerized worker (True), stop running it (False), or keep
        what the last `up` chose (None).
        """
        if problem := self.settings.exposure_problem:  # before minutes of building
            raise ServingError(problem)
        build_appliance_images(self.settings)
        if worker or (worker is None and self.state().worker):
            # Before the network is chosen: minutes of building between choosing a free subnet
            # and creating the network on it let another appliance take the subnet meanwhile.
            build_worker_image(self.settings)
        with state_lock(self.state_path):
            state = prepare_network(self, self.state())
            if worker is not None:
                state = replace(state, worker=worker)
            write_state(self.state_path, state)  # also the first write of a migrated state
            for service in SINGLE_MODEL_SERVICES:  # they hold the addresses of the first model's slot
                if (old := self._container(service)) is not None:
                    old.remove(force=True)
            if not state.worker and self._container(WORKER) is not None:
                self.compose("rm", "-f", "-s", WORKER, profiles=(WORKER,), check=False)
            live = tuple(m.service(m.live_color) for m in state.live_models() if m.live_color)
            profiles = live + ((WORKER,) if state.worker else ())
            state = start_on_free_subnet(
                self.state_path,
                state,
                lambda: self.compose("up", "-d", "--remove-orphans", profiles=profiles),
                configured=self.settings.subnet,
            )
            wait_healthy(self, APPLIANCE_SERVICES + live, timeout_s)
            for model in state.live_models():  # the gateway's own record may predate a `down -v`
                self.gateway.switch(model.name, model.live_color)
            self._publish()
        return state

    def down(self, *, volumes: bool = False) -> None:
        # Under the state's lock, like every change of the colors: the supervisor (which starts a
        # stopped live color again) waits until they are gone.
        with state_lock(self.state_path):
            self.down_holding_lock(volumes=volumes)

    def down_holding_lock(self, *, volumes: bool = False) -> None:
        """:meth:`down` for a caller that holds the state's lock already (``up``)."""
        profiles = self._all_profiles(self.state())
        self.compose("down", *(["-v"] if volumes else []), "--remove-orphans", profiles=profiles)

    # -- serving ---------------------------------------------------------------------
    def _server_state(self, model: ServedModel) -> ServerState | None:
        if model.live_color is None:
            return None
        container = self._container(model.service(model.live_color))
        if container is None or container.status != "running":
            return None
        image = model.image(model.live_color)
        started = container.attrs["State"].get("StartedAt", "")
        url = f"{self.settings.serve_url}/models/{model.name}"
        return ServerState(0, model.name, image_version(image), image, url, started)

    def served(self) -> list[ServerState]:
        """Every model serving now, in the order each was first served."""
        return [s for model in self.state().models if (s := self._server_state(model)) is not None]

    def current(self, model_name: str) -> ServerState | None:
        """What serves ``model_name``; None when it is not served."""
        model = self.state().model(model_name)
        return self._server_state(model) if model is not None else None

    def default_model(self) -> str | None:
        return default_model(self.settings, self.served())

    def _publish(self) -> bool:
        """Write the gateway's routes and index for what serves now; True when nginx reloaded."""
        state, entries = self.state(), []
        assert state.network is not None  # every `up` records it before a model runs
        for served in self.served():
            model = state.model(served.model_name)
            assert model is not None
            assert model.live_color is not None
            metadata = container_metadata(self._container(model.service(model.live_color)))
            entries.append(GatewayModel(model, metadata))
        return self.gateway.publish(
            entries, network=state.network, default=self.default_model(), labeling=self.labeling_address()
        )

    def labeling_address(self) -> str:
        """host:port of the labeling service, on the host's network where it listens on ONEBOX_BIND."""
        host = "127.0.0.1" if self.settings.bind in ("0.0.0.0", "::", "") else self.settings.bind
        return f"{host}:{self.settings.label_port}"

    def deploy(self, bundle: Path) -> ServerState:
        """Swap the model ``bundle``'s metadata names for ``bundle``, with no failed requests on
        it or any other model; a model served for the first time is added beside the others.

        Returns once the gateway serves the new version; the old color still runs until
        :meth:`retire_previous`, so the caller can move the production alias first.

        Raises:
            ServingError: the new version did not become healthy or answer; what served that
                model before keeps serving, and no other model was touched.
        """
        clock = Phases()
        metadata = ModelMetadata.read(bundle / METADATA_FILE)
        name = check_model_name(metadata.model_name)
        image = build_model_image(self.settings, bundle, metadata)
        clock.mark("build_image")
        with state_lock(self.state_path):
            state = self.state()
            if state.network is None:
                raise ServingError("the appliance was started by an earlier onebox: run `onebox up` once, then deploy")
            model = state.model(name) or ServedModel(name, state.free_slot())
            state.network.addresses(model.slot)  # room for it on the network?
            live = model.live_color
            idle = other_color(live) if live else "blue"
            names = [m.name for m in state.live_models()] + ([] if live else [name])
            default = self.settings.default_model if self.settings.default_model in names else names[0]
            workers = self.settings.serve_workers if name == default else self.settings.other_model_workers
            trial = replace(model.with_image(idle, image), workers=workers)
            write_state(self.state_path, state.with_model(trial))
            service = trial.service(idle)
            try:
                self.compose("up", "-d", "--no-deps", "--force-recreate", service, profiles=(service,))
                wait_healthy(self, (service,), self.settings.serve_ready_timeout_s)
                clock.mark("start_until_healthy")
                container = self._container(service)
                if container is None:
                    raise ServingError(f"{service} is gone")
                code, output = container.exec_run(["python3", "-m", "serving.health", "http://127.0.0.1:3000"])
                if code != 0:
                    raise ServingError(output.decode(errors="replace").strip())
                clock.mark("smoke_in_container")
                self.gateway.switch(name, idle)
                write_state(self.state_path, state.with_model(replace(trial, live_color=idle)))
                self.last_deploy_reloaded_gateway = self._publish()
                await_version(f"{self.settings.serve_url}/models/{name}", metadata, api_key=self.settings.api_key_value)
            except ServingError as error:
                self._go_back(state, model, service)
                raise ServingError(f"model {name} v{metadata.model_version} was not switched to: {error}") from error
        clock.mark("switch_and_confirm")
        self.last_deploy_phases = clock.phases
        if live:
            self._retiring[name] = live
        url = f"{self.settings.serve_url}/models/{name}"
        return ServerState(0, name, metadata.model_version, image, url, datetime.now(UTC).isoformat(timespec="seconds"))

    def _go_back(self, state: ApplianceState, model: ServedModel, service: str) -> None:
        """After a failed deploy: ``model``'s old color serves again (or, new, it is not routed)."""
        self.gateway.switch(model.name, model.live_color)
        self.compose("rm", "-f", "-s", service, profiles=(service,), check=False)
        write_state(self.state_path, state)
        self._publish()

    def retire_previous(self, model_name: str) -> None:
        """After a deploy of ``model_name``: let its old color drain, then stop and remove it."""
        color = self._retiring.pop(model_name, None)
        model = self.state().model(model_name)
        if color is None or model is None:
            return
        started = time.perf_counter()
        time.sleep(self.settings.drain_s)  # in-flight requests on the old color finish
        self.compose("rm", "-f", "-s", model.service(color), profiles=(model.service(color),))
        self.last_deploy_phases["drain_and_stop_old"] = round(time.perf_counter() - started, 3)

    def stop(self, model_name: str | None = None) -> list[ServerState]:
        """Stop serving ``model_name`` (its routes then answer 404), or every model; returns what served."""
        with state_lock(self.state_path):
            state = self.state()
            doomed = [state.known(model_name)] if model_name is not None else list(state.models)
            served = [s for s in self.served() if s.model_name in {m.name for m in doomed}]
            for model in doomed:
                self.gateway.switch(model.name, None)
            remaining = state
            for model in doomed:
                remaining = remaining.without_model(model.name)
                self._retiring.pop(model.name, None)
            services = tuple(m.service(c) for m in doomed for c in ("blue", "green") if m.image(c))
            if services:
                self.compose("rm", "-f", "-s", *services, profiles=services, check=False)
            write_state(self.state_path, remaining)
            self._publish()
        return served

    def logs(self, *, model_name: str | None = None, lines: int = 100, service: str = "model") -> str:
        """Recent logs of a model's live color (``model_name``, else the default model's), or of
        another appliance service (``service``: mlflow, prefect, gateway, worker)."""
        state = self.state()
        if service == "model":
            name = model_name or self.default_model()
            if name is None:
                return "no model is deployed yet"
            model = state.known(name)
            if model.live_color is None:
                return f"model {name} has no live color"
            service = model.service(model.live_color)
        profiles = self._all_profiles(state)
        return self.compose("logs", "--no-color", "--tail", str(lines), service, profiles=profiles).stdout

"""The compose runtime: the appliance's model served through a gateway, swapped blue/green.

A deploy starts the idle color with the new model image, waits until it is healthy and has
answered a smoke prediction, switches the gateway (a marker file nginx reads per request: no
reload, so no connection or request in flight is cut), checks a prediction through the gateway,
lets the old color drain, then stops it. Which image each color runs and which color is live is
the appliance's state (serving/appliance_state.py), so it comes back as it was after a restart.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from serving.appliance_network import ApplianceNetwork, choose_subnet, subnets_in_use
from serving.appliance_state import COLORS, ApplianceState, Color, other_color, read_state, state_path, write_state
from serving.compose_cli import run_compose
from serving.docker_client import project_container, project_network
from serving.health import STARTUP_FAILED_MARKER, smoke_predict
from serving.image_builds import build_appliance_images, build_model_image, build_worker_image, model_of_image
from serving.metadata import ModelMetadata
from serving.runtime import ServerState
from serving.waiting import NotYet, wait_for
from storage.errors import ServingError
from storage.settings import Settings

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.networks import Network

APPLIANCE_SERVICES = ("mlflow", "prefect", "gateway")
WORKER = "worker"  # the compose profile and service of the containerized Prefect worker
GATEWAY_CONFIRM_TIMEOUT_S = 20.0


def model_service(color: Color) -> str:
    return f"model-{color}"


class _Phases:
    """Seconds spent in each named phase, for benchmarks and logs."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 3)
        self._last = now


class ComposeRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_path = state_path(settings)
        self.last_deploy_phases: dict[str, float] = {}
        self._retiring: Color | None = None  # the color a deploy replaced, until retire_previous()

    # -- persisted state, docker compose, containers ------------------------------------
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

    def _wait_healthy(self, services: tuple[str, ...], timeout_s: float) -> None:
        pending = list(services)

        def all_healthy() -> None:
            for service in list(pending):
                if self._healthy(service):
                    pending.remove(service)
            if pending:
                raise NotYet(f"not healthy yet: {', '.join(pending)}")

        wait_for(all_healthy, timeout_s=timeout_s, what=f"{', '.join(services)} to be healthy", interval_s=0.5)

    def _healthy(self, service: str) -> bool:
        """Whether ``service`` is healthy; raises ServingError once it cannot become so."""
        container = self._container(service)
        if container is None:
            return False
        container.reload()
        if container.status in {"exited", "dead", "restarting"} or container.attrs.get("RestartCount", 0):
            logs = container.logs(tail=30).decode(errors="replace")
            raise ServingError(f"{service} exited while starting:\n{logs}")
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return True
        # BentoML's supervisor restarts a worker whose model fails to load, so the container
        # stays "running"; its log says so at once, which saves waiting for the timeout.
        logs = container.logs(tail=40).decode(errors="replace")
        if STARTUP_FAILED_MARKER in logs:
            raise ServingError(f"{service} could not load its model:\n{logs[-1500:]}")
        return False

    # -- the network -------------------------------------------------------------------
    def _prepare_network(self, state: ApplianceState) -> ApplianceState:
        """Record the subnet this `up` creates the network with (or finds it has); returns the state.

        ONEBOX_SUBNET wins; else the recorded subnet while it is free; else a free one. A network
        with another subnet (made by an earlier onebox, or before ONEBOX_SUBNET changed) is
        recreated: the containers stop and start again, the data volumes stay.
        """
        recorded = state.network.subnet if state.network else None
        wanted = self.settings.subnet or recorded
        network = self._network()
        if network is not None:
            configs = (network.attrs.get("IPAM") or {}).get("Config") or []
            current = configs[0].get("Subnet", "") if configs else ""
            if current and wanted is not None and ipaddress.IPv4Network(current) == wanted:
                return state
            print(
                f"the appliance's network {network.name} has subnet {current or 'none'}; "
                "recreating it with a fixed one (containers restart, data stays)"
            )
            self.down()
        subnet = choose_subnet(configured=self.settings.subnet, recorded=recorded, used=subnets_in_use())
        state = replace(state, network=ApplianceNetwork.for_subnet(subnet))
        write_state(self.state_path, state)
        return state

    # -- the appliance -----------------------------------------------------------------
    def is_up(self) -> bool:
        try:
            gateway = self._container("gateway")
        except ServingError:
            return False
        return gateway is not None and gateway.status == "running"

    def up(self, *, worker: bool | None = None, timeout_s: float = 300) -> ApplianceState:
        """Build what is missing, start the appliance and the live model color, wait until healthy.

        ``worker``: also run the containerized worker (True), stop running it (False), or keep
        what the last `up` chose (None).
        """
        build_appliance_images(self.settings)
        state = self._prepare_network(self.state())
        if worker is not None:
            state = replace(state, worker=worker)
            write_state(self.state_path, state)
        if not state.worker and self._container(WORKER) is not None:
            self.compose("rm", "-f", "-s", WORKER, profiles=(WORKER,), check=False)
        if state.worker:
            build_worker_image(self.settings)
        colors = (state.live_color,) if state.live_color else ()
        profiles = colors + ((WORKER,) if state.worker else ())
        self.compose("up", "-d", "--remove-orphans", profiles=profiles)
        self._wait_healthy(APPLIANCE_SERVICES + tuple(model_service(color) for color in colors), timeout_s)
        self._switch_gateway(state.live_color)  # the gateway's own record may predate a `down -v`
        return state

    def down(self, *, volumes: bool = False) -> None:
        self.compose("down", *(["-v"] if volumes else []), "--remove-orphans", profiles=(*COLORS, WORKER))

    # -- serving ---------------------------------------------------------------------
    def current(self) -> ServerState | None:
        state = self.state()
        if state.live_color is None:
            return None
        container = self._container(model_service(state.live_color))
        if container is None or container.status != "running":
            return None
        image = state.image(state.live_color)  # onebox/model:PROJECT.NAME-vVERSION
        model_name, model_version = model_of_image(self.settings, image)
        return ServerState(
            pid=0,
            model_name=model_name,
            model_version=model_version,
            bundle=image,
            url=self.settings.serve_url,
            started=container.attrs["State"].get("StartedAt", ""),
        )

    def _switch_gateway(self, color: Color | None) -> None:
        gateway = self._container("gateway")
        if gateway is None:
            raise ServingError("the gateway is not running; start the appliance with: make up")
        target = color or "none"
        code, output = gateway.exec_run(["onebox-gateway", "switch", target])
        if code != 0:
            raise ServingError(f"switching the gateway to {target} failed: {output.decode(errors='replace')}")

    def deploy(self, bundle: Path) -> ServerState:
        """Swap the model behind the gateway for ``bundle`` with no failed requests.

        Returns once the gateway serves the new model; the old color still runs until
        :meth:`retire_previous`, so the caller can move the production alias first.

        Raises:
            ServingError: the new model did not become healthy or answer; the old one keeps serving.
        """
        clock = _Phases()
        metadata = ModelMetadata.read(bundle / "metadata.json")
        image = build_model_image(self.settings, bundle, metadata)
        clock.mark("build_image")
        state = self.state()
        if state.network is None:
            raise ServingError("the appliance was started by an earlier onebox: run `onebox up` once, then deploy")
        live = state.live_color
        idle = other_color(live) if live else "blue"
        service = model_service(idle)
        write_state(self.state_path, state.with_image(idle, image))
        try:
            self.compose("up", "-d", "--no-deps", "--force-recreate", service, profiles=(idle,))
            self._wait_healthy((service,), self.settings.serve_ready_timeout_s)
            clock.mark("start_until_healthy")
            container = self._container(service)
            if container is None:
                raise ServingError(f"{service} is gone")
            code, output = container.exec_run(["python3", "-m", "serving.health", "http://127.0.0.1:3000"])
            if code != 0:
                raise ServingError(output.decode(errors="replace").strip())
            clock.mark("smoke_in_container")
            self._switch_gateway(idle)
        except ServingError as error:
            self.compose("rm", "-f", "-s", service, profiles=(idle,), check=False)
            write_state(self.state_path, state)
            raise ServingError(f"model v{metadata.model_version} was not switched to: {error}") from error
        write_state(self.state_path, replace(state.with_image(idle, image), live_color=idle))
        try:
            self._await_gateway_version(metadata)
        except ServingError:
            if live:  # the gateway path is broken: go back while the old color still runs
                self._switch_gateway(live)
                write_state(self.state_path, state)
            raise
        clock.mark("switch_and_confirm")
        self.last_deploy_phases = clock.phases
        self._retiring = live
        return ServerState(
            pid=0,
            model_name=metadata.model_name,
            model_version=metadata.model_version,
            bundle=image,
            url=self.settings.serve_url,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def logs(self, *, lines: int = 100, service: str = "model") -> str:
        """Recent logs of an appliance service; ``model`` means the live model color."""
        if service == "model":
            live = self.state().live_color
            if live is None:
                return "no model is deployed yet"
            service = model_service(live)
        return self.compose("logs", "--no-color", "--tail", str(lines), service, profiles=(*COLORS, WORKER)).stdout

    def retire_previous(self) -> None:
        """After a deploy: let the old color drain, then stop and remove it."""
        if self._retiring is None:
            return
        started = time.perf_counter()
        time.sleep(self.settings.drain_s)  # in-flight requests on the old color finish
        self.compose("rm", "-f", "-s", model_service(self._retiring), profiles=(self._retiring,))
        self.last_deploy_phases["drain_and_stop_old"] = round(time.perf_counter() - started, 3)
        self._retiring = None

    def _await_gateway_version(self, metadata: ModelMetadata) -> None:
        """Wait until predictions through the gateway come from ``metadata``'s version.

        The switch is immediate; this proves the path through the gateway end to end.
        """

        def answers_new_version() -> None:
            try:
                smoke_predict(
                    self.settings.serve_url, expected_version=metadata.model_version, image_shape=metadata.image_shape
                )
            except ServingError as error:
                raise NotYet(str(error)) from None

        wait_for(
            answers_new_version,
            timeout_s=GATEWAY_CONFIRM_TIMEOUT_S,
            what=f"the gateway to serve model v{metadata.model_version}",
            interval_s=0.2,
        )

    def stop(self) -> ServerState | None:
        """Stop the live model; the gateway then answers 503 until the next deploy."""
        current = self.current()
        state = self.state()
        if state.live_color is not None:
            self._switch_gateway(None)
            self.compose("rm", "-f", "-s", model_service(state.live_color), profiles=COLORS, check=False)
            write_state(self.state_path, replace(state, live_color=None))
        return current

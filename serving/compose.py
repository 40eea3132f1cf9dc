"""The compose runtime: the appliance's model served through a gateway, swapped blue/green.

A deploy starts the idle color with the new model image, waits until it is healthy and has
answered a smoke prediction, switches the gateway (a marker file nginx reads per request: no
reload, so no connection or request in flight is cut), checks a prediction through the gateway,
lets the old color drain, then stops it.
Which image each color runs and which color is live is kept in $ONEBOX_HOME/compose/state.env,
which docker compose reads, so the appliance comes back as it was after a restart.

The gateway runs on the host's network and reaches each color at a fixed address on the
appliance's network, so it can keep connections to it open; the subnet is picked on the first
`up` (one no Docker network or host route uses) and kept in state.env too.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from serving.health import smoke_predict
from serving.images import SOURCE_ROOT, build_appliance_images, build_model_image, build_worker_image
from serving.local import ServerState
from serving.metadata import ModelMetadata
from storage.errors import ServingError
from storage.settings import Settings

COMPOSE_FILE = SOURCE_ROOT / "docker-compose.yml"
COLORS = ("blue", "green")
APPLIANCE_SERVICES = ("mlflow", "prefect", "gateway")
WORKER = "worker"  # the compose profile and service of the containerized Prefect worker
WORKER_KEY = "ONEBOX_WORKER"  # state.env: "on" once `onebox up --worker` asked for it
# state.env: the appliance network's subnet, the part of it Docker hands out, the colors' addresses.
SUBNET_KEY = "ONEBOX_SUBNET"
NETWORK_KEYS = (SUBNET_KEY, "ONEBOX_SUBNET_DYNAMIC_RANGE", "ONEBOX_MODEL_BLUE_ADDRESS", "ONEBOX_MODEL_GREEN_ADDRESS")
# Where a subnet is picked: private addresses Docker itself uses, from the top down (Docker's own
# networks are handed out from 172.17 up, so the two rarely meet).
SUBNET_POOL = ipaddress.IPv4Network("172.16.0.0/12")


@functools.cache
def compose_command() -> tuple[str, ...]:
    """The `docker compose` plugin when present, else the standalone `docker-compose` (probed once)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise ServingError("neither `docker compose` nor `docker-compose` is installed")


def _other(color: str) -> str:
    return "green" if color == "blue" else "blue"


def _image_key(color: str) -> str:
    """The state.env variable that names the image ``color`` runs."""
    return f"ONEBOX_MODEL_{color.upper()}_IMAGE"


def network_addresses(subnet: ipaddress.IPv4Network) -> dict[str, str]:
    """The state.env entries for ``subnet``: the colors take its last two addresses, and Docker
    gives other containers addresses from its lower half only, so none ever takes a color's."""
    return {
        SUBNET_KEY: str(subnet),
        "ONEBOX_SUBNET_DYNAMIC_RANGE": str(next(subnet.subnets(prefixlen_diff=1))),
        "ONEBOX_MODEL_BLUE_ADDRESS": str(subnet.broadcast_address - 2),
        "ONEBOX_MODEL_GREEN_ADDRESS": str(subnet.broadcast_address - 1),
    }


def subnets_in_use() -> dict[ipaddress.IPv4Network, str]:
    """IPv4 subnets of every Docker network and every host route (but the default route), each
    with what uses it."""
    from serving.images import _docker

    used: dict[ipaddress.IPv4Network, str] = {}
    for network in _docker().networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                used[ipaddress.IPv4Network(config.get("Subnet", ""), strict=False)] = f"Docker network {network.name}"
            except ValueError:
                continue  # IPv6, or none
    routes = Path("/proc/net/route")
    for line in routes.read_text().splitlines()[1:] if routes.is_file() else []:
        fields = line.split()
        # Destination and mask are little-endian hex (/proc/net/route's format).
        destination, mask = (ipaddress.IPv4Address(bytes.fromhex(f)[::-1]) for f in (fields[1], fields[7]))
        if int(mask):
            route = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
            used.setdefault(route, f"the host's route via {fields[0]}")
    return used


def overlap(subnet: ipaddress.IPv4Network, used: dict[ipaddress.IPv4Network, str]) -> str | None:
    """What in ``used`` (see :func:`subnets_in_use`) overlaps ``subnet``; None: it is free."""
    return next((what for taken, what in used.items() if taken.overlaps(subnet)), None)


def pick_subnet(used: dict[ipaddress.IPv4Network, str]) -> ipaddress.IPv4Network:
    """The highest /24 of SUBNET_POOL that overlaps nothing in ``used``."""
    for candidate in reversed(list(SUBNET_POOL.subnets(new_prefix=24))):
        if overlap(candidate, used) is None:
            return candidate
    raise ServingError(f"no /24 of {SUBNET_POOL} is free for the appliance's network: set ONEBOX_SUBNET to one")


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
        self.state_path = settings.compose_dir / "state.env"
        self.last_deploy_phases: dict[str, float] = {}
        self._retiring: str | None = None  # the color a deploy replaced, until retire_previous()

    # -- persisted state ---------------------------------------------------------------
    def state(self) -> dict[str, str]:
        state = {
            "ONEBOX_LIVE_COLOR": "none",
            WORKER_KEY: "off",
            **{_image_key(color): "" for color in COLORS},
            **dict.fromkeys(NETWORK_KEYS, ""),
        }
        if self.state_path.is_file():
            for line in self.state_path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key in state:
                    state[key] = value.strip()
        return state

    def _write_state(self, state: dict[str, str]) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.state_path.with_suffix(".new")
        staging.write_text("".join(f"{key}={value}\n" for key, value in sorted(state.items())))
        staging.replace(self.state_path)  # atomic: a crash leaves the old state or the new one

    # -- docker compose ----------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        s = self.settings
        state = self.state()
        return {
            **os.environ,
            # The worker container mounts the checkout and the home at the paths they have here.
            "ONEBOX_SOURCE": str(SOURCE_ROOT),
            "ONEBOX_HOME": str(s.home),
            "ONEBOX_IMAGE_TAG": s.image_tag,
            "ONEBOX_BIND": s.bind_address,
            "ONEBOX_GATEWAY_PORT": str(s.serve_port),
            "ONEBOX_MLFLOW_PORT": str(s.mlflow_port),
            "ONEBOX_PREFECT_PORT": str(s.prefect_port),
            "ONEBOX_SERVE_WORKERS": str(s.serve_workers),
            # The recorded network, not a variable of this shell that may name another one.
            **{key: state[key] for key in NETWORK_KEYS if state[key]},
        }

    def compose(
        self, *args: str, profiles: tuple[str, ...] = (), check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if not self.state_path.is_file():
            self._write_state(self.state())
        command = [
            *compose_command(), "-p", self.settings.compose_project, "-f", str(COMPOSE_FILE),
            "--env-file", str(self.state_path),
        ]  # fmt: skip
        for profile in profiles:
            command += ["--profile", profile]
        done = subprocess.run([*command, *args], capture_output=True, text=True, env=self._environment(), check=False)
        if check and done.returncode != 0:
            raise ServingError(f"docker compose {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-2000:]}")
        return done

    def _container(self, service: str):  # type: ignore[no-untyped-def]
        from serving.images import _docker

        found = _docker().containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.settings.compose_project}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        return found[0] if found else None

    def _wait_healthy(self, services: tuple[str, ...], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(services)
        while pending and time.monotonic() < deadline:
            for service in list(pending):
                container = self._container(service)
                if container is None:
                    continue
                container.reload()
                if container.status in {"exited", "dead", "restarting"} or container.attrs.get("RestartCount", 0):
                    logs = container.logs(tail=30).decode(errors="replace")
                    raise ServingError(f"{service} exited while starting:\n{logs}")
                if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                    pending.remove(service)
                    continue
                # BentoML's supervisor restarts a worker whose model fails to load, so the container
                # stays "running"; its log says so at once, which saves waiting for the timeout.
                logs = container.logs(tail=40).decode(errors="replace")
                if "Application startup failed" in logs:
                    raise ServingError(f"{service} could not load its model:\n{logs[-1500:]}")
            time.sleep(0.5)
        if pending:
            raise ServingError(f"not healthy within {timeout_s:.0f} s: {', '.join(pending)}")

    # -- the network -------------------------------------------------------------------
    def _network(self):  # type: ignore[no-untyped-def]
        from serving.images import _docker

        found = _docker().networks.list(
            filters={
                "label": [
                    f"com.docker.compose.project={self.settings.compose_project}",
                    "com.docker.compose.network=default",
                ]
            }
        )
        return found[0] if found else None

    def _prepare_network(self, state: dict[str, str]) -> dict[str, str]:
        """Record the subnet this `up` creates the network with (or finds it has); returns the state.

        ONEBOX_SUBNET wins; else the recorded subnet while it is free; else a free one. A network
        with another subnet (made by an earlier onebox, or before ONEBOX_SUBNET changed) is
        recreated: the containers stop and start again, the data volumes stay.
        """
        wanted = str(self.settings.subnet) if self.settings.subnet else state[SUBNET_KEY]
        network = self._network()
        if network is not None:
            configs = (network.attrs.get("IPAM") or {}).get("Config") or []
            current = configs[0].get("Subnet", "") if configs else ""
            if current and current == wanted:
                return state
            print(
                f"the appliance's network {network.name} has subnet {current or 'none'}; "
                "recreating it with a fixed one (containers restart, data stays)"
            )
            self.down()
        used = subnets_in_use()
        if self.settings.subnet is not None:
            clash = overlap(self.settings.subnet, used)
            if clash:
                raise ServingError(f"ONEBOX_SUBNET={self.settings.subnet} overlaps {clash}; choose another subnet")
            subnet = self.settings.subnet
        elif wanted and overlap(ipaddress.IPv4Network(wanted), used) is None:
            subnet = ipaddress.IPv4Network(wanted)
        else:
            subnet = pick_subnet(used)
        state = {**state, **network_addresses(subnet)}
        self._write_state(state)
        return state

    # -- the appliance -----------------------------------------------------------------
    def is_up(self) -> bool:
        try:
            gateway = self._container("gateway")
        except ServingError:
            return False
        return gateway is not None and gateway.status == "running"

    def up(self, *, worker: bool | None = None, timeout_s: float = 300) -> dict[str, str]:
        """Build what is missing, start the appliance and the live model color, wait until healthy.

        ``worker``: also run the containerized worker (True), stop running it (False), or keep
        what the last `up` chose (None).
        """
        build_appliance_images(self.settings)
        state = self._prepare_network(self.state())
        if worker is not None:
            state[WORKER_KEY] = "on" if worker else "off"
            self._write_state(state)
        if state[WORKER_KEY] == "off" and self._container(WORKER) is not None:
            self.compose("rm", "-f", "-s", WORKER, profiles=(WORKER,), check=False)
        if state[WORKER_KEY] == "on":
            build_worker_image(self.settings)
        live = state["ONEBOX_LIVE_COLOR"]
        colors = (live,) if live in COLORS else ()
        profiles = colors + ((WORKER,) if state[WORKER_KEY] == "on" else ())
        self.compose("up", "-d", "--remove-orphans", profiles=profiles)
        services = APPLIANCE_SERVICES + tuple(f"model-{color}" for color in colors)
        self._wait_healthy(services, timeout_s)
        self._switch_gateway(live)  # the gateway's own record may predate a `down -v`
        return state

    def down(self, *, volumes: bool = False) -> None:
        self.compose("down", *(["-v"] if volumes else []), "--remove-orphans", profiles=(*COLORS, WORKER))

    # -- serving ---------------------------------------------------------------------
    def current(self) -> ServerState | None:
        state = self.state()
        live = state["ONEBOX_LIVE_COLOR"]
        if live not in COLORS:
            return None
        container = self._container(f"model-{live}")
        if container is None or container.status != "running":
            return None
        image = state[_image_key(live)]  # onebox/model:NAME-vVERSION
        return ServerState(
            pid=0,
            model_name=self.settings.model_name,
            model_version=image.rsplit("-v", 1)[-1],
            bundle=image,
            url=self.settings.serve_url,
            started=container.attrs["State"].get("StartedAt", ""),
        )

    def _switch_gateway(self, color: str) -> None:
        gateway = self._container("gateway")
        if gateway is None:
            raise ServingError("the gateway is not running; start the appliance with: make up")
        code, output = gateway.exec_run(["onebox-gateway", "switch", color])
        if code != 0:
            raise ServingError(f"switching the gateway to {color} failed: {output.decode(errors='replace')}")

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
        if not state[SUBNET_KEY]:
            raise ServingError("the appliance was started by an earlier onebox: run `onebox up` once, then deploy")
        live = state["ONEBOX_LIVE_COLOR"]
        idle = _other(live) if live in COLORS else "blue"
        service = f"model-{idle}"
        self._write_state({**state, _image_key(idle): image})
        try:
            self.compose("up", "-d", "--no-deps", "--force-recreate", service, profiles=(idle,))
            self._wait_healthy((service,), self.settings.serve_ready_timeout_s)
            clock.mark("start_until_healthy")
            container = self._container(service)
            code, output = container.exec_run(["python3", "-m", "serving.health", "http://127.0.0.1:3000"])
            if code != 0:
                raise ServingError(output.decode(errors="replace").strip())
            clock.mark("smoke_in_container")
            self._switch_gateway(idle)
        except ServingError as error:
            self.compose("rm", "-f", "-s", service, profiles=(idle,), check=False)
            self._write_state(state)
            raise ServingError(f"model v{metadata.model_version} was not switched to: {error}") from error
        self._write_state({**state, _image_key(idle): image, "ONEBOX_LIVE_COLOR": idle})
        try:
            self._await_gateway_version(metadata)
        except ServingError:
            if live in COLORS:  # the gateway path is broken: go back while the old color still runs
                self._switch_gateway(live)
                self._write_state(state)
            raise
        clock.mark("switch_and_confirm")
        self.last_deploy_phases = clock.phases
        self._retiring = live if live in COLORS else None
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
            live = self.state()["ONEBOX_LIVE_COLOR"]
            if live not in COLORS:
                return "no model is deployed yet"
            service = f"model-{live}"
        return self.compose("logs", "--no-color", "--tail", str(lines), service, profiles=(*COLORS, WORKER)).stdout

    def retire_previous(self) -> None:
        """After a deploy: let the old color drain, then stop and remove it."""
        if self._retiring is None:
            return
        started = time.perf_counter()
        time.sleep(self.settings.drain_s)  # in-flight requests on the old color finish
        self.compose("rm", "-f", "-s", f"model-{self._retiring}", profiles=(self._retiring,))
        self.last_deploy_phases["drain_and_stop_old"] = round(time.perf_counter() - started, 3)
        self._retiring = None

    def _await_gateway_version(self, metadata: ModelMetadata, timeout_s: float = 20) -> None:
        """Wait until predictions through the gateway come from ``metadata``'s version.

        The switch is immediate; this proves the path through the gateway end to end.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                smoke_predict(
                    self.settings.serve_url, expected_version=metadata.model_version, image_shape=metadata.image_shape
                )
                return
            except ServingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> ServerState | None:
        """Stop the live model; the gateway then answers 503 until the next deploy."""
        current = self.current()
        state = self.state()
        if state["ONEBOX_LIVE_COLOR"] in COLORS:
            self._switch_gateway("none")
            self.compose("rm", "-f", "-s", f"model-{state['ONEBOX_LIVE_COLOR']}", profiles=COLORS, check=False)
            self._write_state({**state, "ONEBOX_LIVE_COLOR": "none"})
        return current

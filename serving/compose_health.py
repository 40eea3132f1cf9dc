"""The steps of the compose runtime's `up` and deploy that only wait and check: the appliance's
network (a fixed subnet, recorded), services becoming healthy, a new version answering through
the gateway, and the time each phase took."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from serving.appliance_network import ApplianceNetwork, choose_subnet, subnets_in_use
from serving.appliance_state import ApplianceState, write_state
from serving.health import STARTUP_FAILED_MARKER, smoke_predict
from serving.metadata import ModelMetadata
from serving.waiting import NotYet, wait_for
from storage.errors import ServingError

if TYPE_CHECKING:
    from serving.compose import ComposeRuntime

APPLIANCE_SERVICES = ("mlflow", "prefect", "gateway", "labeling", "supervisor")
WORKER = "worker"  # the compose profile and service of the containerized Prefect worker
GATEWAY_CONFIRM_TIMEOUT_S = 20.0
# What Docker answers a network create whose subnet another network took (compose passes it on).
POOL_OVERLAPS = "Pool overlaps with other one on this address space"
SUBNET_ATTEMPTS = 3


class Phases:
    """Seconds spent in each named phase, for benchmarks and logs."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._last, 3)
        self._last = now


def healthy(runtime: ComposeRuntime, service: str) -> bool:
    """Whether ``service`` is healthy; raises ServingError once it cannot become so."""
    container = runtime._container(service)
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


def wait_healthy(runtime: ComposeRuntime, services: tuple[str, ...], timeout_s: float) -> None:
    pending = list(services)

    def all_healthy() -> None:
        for service in list(pending):
            if healthy(runtime, service):
                pending.remove(service)
        if pending:
            raise NotYet(f"not healthy yet: {', '.join(pending)}")

    wait_for(all_healthy, timeout_s=timeout_s, what=f"{', '.join(services)} to be healthy", interval_s=0.5)


def prepare_network(runtime: ComposeRuntime, state: ApplianceState) -> ApplianceState:
    """Record the subnet this `up` creates the network with (or finds it has); returns the state.

    ONEBOX_SUBNET wins; else the recorded subnet while it is free; else a free one. A network
    with another subnet (made by an earlier onebox, or before ONEBOX_SUBNET changed) is
    recreated: the containers stop and start again, the data volumes stay.
    """
    recorded = state.network.subnet if state.network else None
    wanted = runtime.settings.subnet or recorded
    network = runtime._network()
    if network is not None:
        configs = (network.attrs.get("IPAM") or {}).get("Config") or []
        current = configs[0].get("Subnet", "") if configs else ""
        if current and wanted is not None and ipaddress.IPv4Network(current) == wanted:
            return state
        print(
            f"the appliance's network {network.name} has subnet {current or 'none'}; "
            "recreating it with a fixed one (containers restart, data stays)"
        )
        runtime.down_holding_lock()  # `up` holds the state's lock
    subnet = choose_subnet(configured=runtime.settings.subnet, recorded=recorded, used=subnets_in_use())
    state = replace(state, network=ApplianceNetwork.for_subnet(subnet))
    write_state(runtime.state_path, state)
    return state


def start_on_free_subnet(
    state_path: Path,
    state: ApplianceState,
    start: Callable[[], object],
    *,
    configured: ipaddress.IPv4Network | None,
    attempts: int = SUBNET_ATTEMPTS,
) -> ApplianceState:
    """Run ``start`` (the compose `up` that creates the network on the recorded subnet); when another
    network took that subnet since it was chosen, choose a free one, record it, and start again.

    The subnet is claimed only when the network exists, and the recorded state always names the
    subnet the next ``start`` uses (compose reads it from state.env; the colors' fixed addresses
    follow it). Returns the state that started.

    Raises:
        ServingError: ``configured`` (ONEBOX_SUBNET) was taken, or ``attempts`` subnets were.
    """
    for attempt in range(1, attempts + 1):
        try:
            start()
            return state
        except ServingError as error:
            if POOL_OVERLAPS not in str(error) or state.network is None:
                raise
            taken = state.network.subnet
            if configured is not None:
                message = f"ONEBOX_SUBNET={taken} is taken by another Docker network: choose another"
                raise ServingError(message) from None
            if attempt == attempts:
                raise ServingError(f"{attempts} subnets in a row were taken by other networks while starting") from None
            subnet = choose_subnet(configured=None, recorded=None, used=subnets_in_use())
            print(f"subnet {taken} was taken by another network meanwhile; starting on {subnet}")
            state = replace(state, network=ApplianceNetwork.for_subnet(subnet))
            write_state(state_path, state)
    raise AssertionError("unreachable")


def await_version(
    url: str, metadata: ModelMetadata, *, api_key: str | None = None, timeout_s: float = GATEWAY_CONFIRM_TIMEOUT_S
) -> None:
    """Wait until predictions through ``url`` (the gateway's /models/NAME) come from ``metadata``'s
    version. The switch is immediate; this proves the path through the gateway end to end."""

    def answers_new_version() -> None:
        try:
            smoke_predict(
                url, expected_version=metadata.model_version, image_shape=metadata.image_shape, api_key=api_key
            )
        except ServingError as error:
            raise NotYet(str(error)) from None

    what = f"the gateway to serve model {metadata.model_name} v{metadata.model_version}"
    wait_for(answers_new_version, timeout_s=timeout_s, what=what, interval_s=0.2)

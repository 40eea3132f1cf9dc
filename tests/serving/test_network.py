"""The appliance network's subnet and the colors' fixed addresses (no Docker needed)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.appliance_network import SUBNET_POOL, ApplianceNetwork, choose_subnet, overlap, pick_subnet
from storage.errors import ServingError
from storage.settings import Settings


def test_the_colors_take_the_top_addresses_and_docker_the_lower_half() -> None:
    network = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/24"))
    assert network.dynamic_range == ipaddress.IPv4Network("10.99.0.0/25")
    assert (network.blue_address, network.green_address) == (
        ipaddress.IPv4Address("10.99.0.253"),
        ipaddress.IPv4Address("10.99.0.254"),
    )
    for address in (network.blue_address, network.green_address):
        assert address not in network.dynamic_range


def test_a_subnet_is_picked_around_what_is_used() -> None:
    top = ipaddress.IPv4Network("172.31.255.0/24")
    assert pick_subnet({}) == top
    used = {
        top: "Docker network a",
        ipaddress.IPv4Network("172.31.254.0/23"): "the host's route via eth1",
        ipaddress.IPv4Network("172.17.0.0/16"): "Docker network bridge",
    }
    assert pick_subnet(used) == ipaddress.IPv4Network("172.31.253.0/24")
    assert overlap(ipaddress.IPv4Network("172.31.254.128/25"), used) == "the host's route via eth1"
    assert overlap(ipaddress.IPv4Network("172.31.253.0/24"), used) is None


def test_no_free_subnet_says_how_to_choose_one() -> None:
    with pytest.raises(ServingError, match="set ONEBOX_SUBNET"):
        pick_subnet({SUBNET_POOL: "the host's route via eth0"})


def test_a_subnet_too_small_for_the_colors_is_refused() -> None:
    with pytest.raises(ValidationError, match="too small"):
        Settings(subnet="10.99.0.0/28")  # type: ignore[arg-type]
    assert Settings(subnet="10.99.0.0/24").subnet == ipaddress.IPv4Network("10.99.0.0/24")  # type: ignore[arg-type]


def test_the_configured_subnet_wins_then_the_recorded_one_while_it_is_free() -> None:
    configured = ipaddress.IPv4Network("10.99.0.0/24")
    recorded = ipaddress.IPv4Network("172.31.200.0/24")
    assert choose_subnet(configured=configured, recorded=recorded, used={}) == configured
    assert choose_subnet(configured=None, recorded=recorded, used={}) == recorded
    taken = {recorded: "Docker network other"}
    assert choose_subnet(configured=None, recorded=recorded, used=taken) == pick_subnet(taken)
    with pytest.raises(ServingError, match="overlaps the host's route via eth0"):
        choose_subnet(configured=configured, recorded=None, used={configured: "the host's route via eth0"})


@pytest.mark.docker
def test_a_subnet_taken_between_choosing_and_starting_is_chosen_again(tmp_path: Path) -> None:
    """Another appliance (here: a plain network) takes the chosen subnet before `up` creates the network."""
    from docker.errors import APIError
    from docker.types import IPAMConfig, IPAMPool

    from serving.appliance_network import subnets_in_use
    from serving.appliance_state import read_state, write_state
    from serving.compose_health import start_on_free_subnet
    from serving.docker_client import docker_client

    client, made = docker_client(), []
    state_path = tmp_path / "compose" / "state.env"
    chosen = choose_subnet(configured=None, recorded=None, used=subnets_in_use())
    state = replace(read_state(state_path), network=ApplianceNetwork.for_subnet(chosen))
    write_state(state_path, state)
    starts: list[str] = []

    def create_network(name: str, subnet: ipaddress.IPv4Network) -> None:
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet))])
        made.append(client.networks.create(name, driver="bridge", ipam=ipam))

    def compose_up() -> None:  # what compose does first: create the network on the recorded subnet
        recorded = read_state(state_path).network
        assert recorded is not None
        starts.append(str(recorded.subnet))
        try:
            create_network(f"onebox-test-{tmp_path.name}_default", recorded.subnet)
        except APIError as error:
            raise ServingError(f"docker compose up -d failed:\nERROR: {error.explanation}") from error

    try:
        create_network(f"onebox-test-{tmp_path.name}-other", chosen)  # taken meanwhile
        started = start_on_free_subnet(state_path, state, compose_up, configured=None)
        assert started.network is not None
        assert starts[0] == str(chosen)
        assert started.network.subnet != chosen
        assert starts[1:] == [str(started.network.subnet)]
        recorded = read_state(state_path).network
        assert recorded is not None
        assert recorded.subnet == started.network.subnet  # what the next `up` reads
        write_state(state_path, state)  # ONEBOX_SUBNET names the taken one: no other is chosen for it
        with pytest.raises(ServingError, match=rf"ONEBOX_SUBNET={chosen} is taken by another Docker network"):
            start_on_free_subnet(state_path, state, compose_up, configured=chosen)
    finally:
        for network in made:
            network.remove()

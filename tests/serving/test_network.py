"""The appliance network's subnet and the colors' fixed addresses (no Docker needed)."""

from __future__ import annotations

import ipaddress

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

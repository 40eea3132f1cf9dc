"""The appliance network's subnet and the colors' fixed addresses (no Docker needed)."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from serving.compose import SUBNET_POOL, network_addresses, overlap, pick_subnet
from storage.errors import ServingError
from storage.settings import Settings


def test_the_colors_take_the_top_addresses_and_docker_the_lower_half() -> None:
    addresses = network_addresses(ipaddress.IPv4Network("10.99.0.0/24"))
    assert addresses == {
        "ONEBOX_SUBNET": "10.99.0.0/24",
        "ONEBOX_SUBNET_DYNAMIC_RANGE": "10.99.0.0/25",
        "ONEBOX_MODEL_BLUE_ADDRESS": "10.99.0.253",
        "ONEBOX_MODEL_GREEN_ADDRESS": "10.99.0.254",
    }
    dynamic = ipaddress.IPv4Network(addresses["ONEBOX_SUBNET_DYNAMIC_RANGE"])
    for color in ("BLUE", "GREEN"):
        assert ipaddress.IPv4Address(addresses[f"ONEBOX_MODEL_{color}_ADDRESS"]) not in dynamic


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

"""The appliance's Docker network: a subnet no other network or host route uses, and the
fixed addresses of every model's colors on it.

The gateway runs on the host's network and reaches each color of each model at a fixed address,
so it can keep connections to it open. The subnet is picked on the first `up` and recorded in the
appliance's state (serving/appliance_state.py), so later ones keep it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from serving.docker_client import docker_client
from storage.errors import ServingError

# Where a subnet is picked: private addresses Docker itself uses, from the top down (Docker's own
# networks are handed out from 172.17 up, so the two rarely meet).
SUBNET_POOL = ipaddress.IPv4Network("172.16.0.0/12")
# The gateway declares an upstream for every slot (serving/gateway_config.py), so a wider subnet
# still serves at most this many models.
MAX_MODELS = 128


@dataclass(frozen=True)
class ApplianceNetwork:
    """The network's subnet, the part of it Docker hands out, and the colors' addresses.

    ``blue_address`` and ``green_address`` are the first model's (slot 0); :meth:`addresses`
    gives any slot's, counting down from the top of the subnet.
    """

    subnet: ipaddress.IPv4Network
    dynamic_range: ipaddress.IPv4Network
    blue_address: ipaddress.IPv4Address
    green_address: ipaddress.IPv4Address

    @classmethod
    def for_subnet(cls, subnet: ipaddress.IPv4Network) -> ApplianceNetwork:
        """The colors take the last two addresses of ``subnet``, and Docker gives other containers
        addresses from its lower half only, so none ever takes a color's."""
        return cls(
            subnet=subnet,
            dynamic_range=next(subnet.subnets(prefixlen_diff=1)),
            blue_address=subnet.broadcast_address - 2,
            green_address=subnet.broadcast_address - 1,
        )

    @property
    def slots(self) -> int:
        """How many models fit: their colors' addresses stay above the dynamic range."""
        return min(MAX_MODELS, (int(self.green_address) - int(self.dynamic_range.broadcast_address)) // 2)

    def addresses(self, slot: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        """The blue and green addresses of the model in ``slot`` (0 for the first model).

        Raises:
            ServingError: the subnet has no room for that many models.
        """
        if not 0 <= slot < self.slots:
            raise ServingError(
                f"the appliance's network {self.subnet} has room for {self.slots} models; "
                "stop one (onebox stop NAME) or set ONEBOX_SUBNET to a larger subnet"
            )
        return self.blue_address - 2 * slot, self.green_address - 2 * slot


def subnets_in_use() -> dict[ipaddress.IPv4Network, str]:
    """IPv4 subnets of every Docker network and every host route (but the default route), each
    with what uses it."""
    used: dict[ipaddress.IPv4Network, str] = {}
    for network in docker_client().networks.list():
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


def choose_subnet(
    *,
    configured: ipaddress.IPv4Network | None,
    recorded: ipaddress.IPv4Network | None,
    used: dict[ipaddress.IPv4Network, str],
) -> ipaddress.IPv4Network:
    """ONEBOX_SUBNET (``configured``) wins; else the ``recorded`` subnet while it is free; else a free one.

    Raises:
        ServingError: ``configured`` overlaps something in ``used``.
    """
    if configured is not None:
        clash = overlap(configured, used)
        if clash:
            raise ServingError(f"ONEBOX_SUBNET={configured} overlaps {clash}; choose another subnet")
        return configured
    if recorded is not None and overlap(recorded, used) is None:
        return recorded
    return pick_subnet(used)

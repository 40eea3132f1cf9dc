"""The appliance's state: which image each model color runs, which color is live, whether the
worker runs, and the network's subnet and addresses.

Kept in $ONEBOX_HOME/compose/state.env, an env file docker compose reads too, so the appliance
comes back as it was after a restart. This module is the only one that reads or writes it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values

from serving.appliance_network import ApplianceNetwork
from storage.settings import Settings, env_name

Color = Literal["blue", "green"]
COLORS: tuple[Color, ...] = ("blue", "green")
STATE_FILE = "state.env"

# The file's variables, also the names docker-compose.yml interpolates.
LIVE_COLOR_KEY = "ONEBOX_LIVE_COLOR"  # blue, green or none
WORKER_KEY = "ONEBOX_WORKER"  # "on" once `onebox up --worker` asked for it
IMAGE_KEYS: dict[Color, str] = {"blue": "ONEBOX_MODEL_BLUE_IMAGE", "green": "ONEBOX_MODEL_GREEN_IMAGE"}
SUBNET_KEY = env_name("subnet")  # the setting's own name: compose reads the recorded subnet under it
DYNAMIC_RANGE_KEY = "ONEBOX_SUBNET_DYNAMIC_RANGE"
ADDRESS_KEYS: dict[Color, str] = {"blue": "ONEBOX_MODEL_BLUE_ADDRESS", "green": "ONEBOX_MODEL_GREEN_ADDRESS"}
STATE_KEYS = (LIVE_COLOR_KEY, WORKER_KEY, *IMAGE_KEYS.values(), SUBNET_KEY, DYNAMIC_RANGE_KEY, *ADDRESS_KEYS.values())


def other_color(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class ApplianceState:
    live_color: Color | None = None  # None: no model is deployed
    worker: bool = False
    blue_image: str = ""
    green_image: str = ""
    network: ApplianceNetwork | None = None  # None: recorded by no `up` yet

    def image(self, color: Color) -> str:
        """The model image ``color`` runs (onebox/model:NAME-vVERSION), or ""."""
        return self.blue_image if color == "blue" else self.green_image

    def with_image(self, color: Color, image: str) -> ApplianceState:
        return replace(self, blue_image=image) if color == "blue" else replace(self, green_image=image)

    def variables(self) -> dict[str, str]:
        """The state as the env file's variables (docker compose reads the same names)."""
        network = self.network
        return {
            LIVE_COLOR_KEY: self.live_color or "none",
            WORKER_KEY: "on" if self.worker else "off",
            **{IMAGE_KEYS[color]: self.image(color) for color in COLORS},
            SUBNET_KEY: str(network.subnet) if network else "",
            DYNAMIC_RANGE_KEY: str(network.dynamic_range) if network else "",
            ADDRESS_KEYS["blue"]: str(network.blue_address) if network else "",
            ADDRESS_KEYS["green"]: str(network.green_address) if network else "",
        }

    @classmethod
    def from_variables(cls, variables: Mapping[str, str | None]) -> ApplianceState:
        """The state from an env file's variables; missing or empty ones take their defaults."""

        def value(key: str) -> str:
            return (variables.get(key) or "").strip()

        live = value(LIVE_COLOR_KEY)
        return cls(
            live_color="blue" if live == "blue" else "green" if live == "green" else None,
            worker=value(WORKER_KEY) == "on",
            blue_image=value(IMAGE_KEYS["blue"]),
            green_image=value(IMAGE_KEYS["green"]),
            network=_network(value),
        )


def _network(value: Callable[[str], str]) -> ApplianceNetwork | None:
    if not value(SUBNET_KEY):
        return None  # a home from before the appliance's network had a fixed subnet
    derived = ApplianceNetwork.for_subnet(ipaddress.IPv4Network(value(SUBNET_KEY)))
    if not all(value(key) for key in (DYNAMIC_RANGE_KEY, *ADDRESS_KEYS.values())):
        return derived
    return ApplianceNetwork(
        subnet=derived.subnet,
        dynamic_range=ipaddress.IPv4Network(value(DYNAMIC_RANGE_KEY)),
        blue_address=ipaddress.IPv4Address(value(ADDRESS_KEYS["blue"])),
        green_address=ipaddress.IPv4Address(value(ADDRESS_KEYS["green"])),
    )


def state_path(settings: Settings) -> Path:
    return settings.compose_dir / STATE_FILE


def read_state(path: Path) -> ApplianceState:
    """The state recorded at ``path``; the defaults (nothing deployed) when there is none."""
    return ApplianceState.from_variables(dotenv_values(path) if path.is_file() else {})


def write_env_file(path: Path, variables: Mapping[str, str]) -> None:
    """Write ``variables`` as an env file, atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".new")
    staging.write_text("".join(f"{key}={value}\n" for key, value in sorted(variables.items())))
    staging.replace(path)


def write_state(path: Path, state: ApplianceState) -> None:
    write_env_file(path, state.variables())

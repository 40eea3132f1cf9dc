"""The appliance's state file: typed, written atomically, readable from homes made before."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import ApplianceState, read_state, write_state

# A state.env as onebox wrote it before the state was typed (sorted KEY=value lines).
OLD_STATE_ENV = """\
ONEBOX_LIVE_COLOR=green
ONEBOX_MODEL_BLUE_ADDRESS=172.31.254.253
ONEBOX_MODEL_BLUE_IMAGE=onebox/model:digits-v3
ONEBOX_MODEL_GREEN_ADDRESS=172.31.254.254
ONEBOX_MODEL_GREEN_IMAGE=onebox/model:digits-v4
ONEBOX_SUBNET=172.31.254.0/24
ONEBOX_SUBNET_DYNAMIC_RANGE=172.31.254.0/25
ONEBOX_WORKER=on
"""


def test_the_state_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "compose" / "state.env"
    state = ApplianceState(
        live_color="blue",
        worker=True,
        blue_image="onebox/model:digits-v7",
        network=ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/24")),
    )
    write_state(path, state)
    assert read_state(path) == state
    assert not path.with_suffix(".new").exists()  # written beside, then moved over in one step
    write_state(path, ApplianceState())
    assert read_state(path) == ApplianceState()


def test_no_file_means_nothing_deployed(tmp_path: Path) -> None:
    state = read_state(tmp_path / "state.env")
    assert state == ApplianceState(live_color=None, worker=False, network=None)
    assert state.image("blue") == state.image("green") == ""


def test_a_state_file_written_before_is_read_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "state.env"
    path.write_text(OLD_STATE_ENV)
    state = read_state(path)
    assert state == ApplianceState(
        live_color="green",
        worker=True,
        blue_image="onebox/model:digits-v3",
        green_image="onebox/model:digits-v4",
        network=ApplianceNetwork.for_subnet(ipaddress.IPv4Network("172.31.254.0/24")),
    )
    write_state(path, state)
    assert path.read_text() == OLD_STATE_ENV  # the same keys and format: older onebox reads it too


def test_a_home_from_before_the_fixed_subnet_has_no_network(tmp_path: Path) -> None:
    path = tmp_path / "state.env"
    path.write_text("ONEBOX_LIVE_COLOR=none\nONEBOX_MODEL_BLUE_IMAGE=\nONEBOX_MODEL_GREEN_IMAGE=\n")
    assert read_state(path) == ApplianceState()

"""The appliance's state files: typed, written atomically, readable from homes made before."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import OLD_IMAGE_KEYS, ApplianceState, ServedModel, models_path, read_state, write_state
from storage.errors import ServingError

NETWORK = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("172.31.254.0/24"))
# A state.env as the single-model onebox wrote it (sorted KEY=value lines).
SINGLE_MODEL_STATE_ENV = """\
ONEBOX_LIVE_COLOR=green
ONEBOX_MODEL_BLUE_ADDRESS=172.31.254.253
ONEBOX_MODEL_BLUE_IMAGE=onebox/model:onebox-classifier-v3
ONEBOX_MODEL_GREEN_ADDRESS=172.31.254.254
ONEBOX_MODEL_GREEN_IMAGE=onebox/model:onebox-classifier-v4
ONEBOX_SUBNET=172.31.254.0/24
ONEBOX_SUBNET_DYNAMIC_RANGE=172.31.254.0/25
ONEBOX_WORKER=on
"""


def two_models() -> ApplianceState:
    return ApplianceState(
        models=(
            ServedModel("digits", 0, "blue", blue_image="onebox/model:digits-v7", workers=2),
            ServedModel("cats", 1, "green", "onebox/model:cats-v1", "onebox/model:cats-v2"),
        ),
        worker=True,
        network=NETWORK,
    )


def test_the_state_round_trips_through_the_files(tmp_path: Path) -> None:
    path = tmp_path / "compose" / "state.env"
    write_state(path, two_models())
    assert read_state(path) == two_models()
    assert [m["name"] for m in json.loads(models_path(path).read_text())["models"]] == ["digits", "cats"]
    assert not list(path.parent.glob("*.new"))  # written beside, then moved over in one step
    write_state(path, ApplianceState())
    assert read_state(path) == ApplianceState()


def test_no_file_means_nothing_deployed(tmp_path: Path) -> None:
    state = read_state(tmp_path / "state.env")
    assert state == ApplianceState(models=(), worker=False, network=None)
    assert state.live_models() == ()


def test_a_single_model_state_migrates_to_a_model_of_its_images_name(tmp_path: Path) -> None:
    path = tmp_path / "state.env"
    path.write_text(SINGLE_MODEL_STATE_ENV)
    state = read_state(path)
    assert state == ApplianceState(
        models=(
            ServedModel(
                "onebox-classifier",
                0,  # the addresses its colors had: slot 0
                "green",
                "onebox/model:onebox-classifier-v3",
                "onebox/model:onebox-classifier-v4",
                workers=2,
            ),
        ),
        worker=True,
        network=NETWORK,
    )
    assert NETWORK.addresses(0) == (
        ipaddress.IPv4Address("172.31.254.253"),
        ipaddress.IPv4Address("172.31.254.254"),
    )
    write_state(path, state)  # the next write is in the new form, and reads back the same
    assert OLD_IMAGE_KEYS["blue"] not in path.read_text()
    assert read_state(path) == state


def test_a_single_model_state_with_nothing_live_has_no_model(tmp_path: Path) -> None:
    path = tmp_path / "state.env"
    path.write_text("ONEBOX_LIVE_COLOR=none\nONEBOX_MODEL_BLUE_IMAGE=\nONEBOX_MODEL_GREEN_IMAGE=\n")
    assert read_state(path) == ApplianceState()


def test_models_keep_their_order_and_slots_and_a_freed_slot_is_reused() -> None:
    state = two_models()
    assert state.free_slot() == 2
    without = state.without_model("digits")
    assert without.free_slot() == 0
    again = without.with_model(ServedModel("shapes", without.free_slot()))
    assert [(m.name, m.slot) for m in again.models] == [("cats", 1), ("shapes", 0)]  # first served first
    updated = again.with_model(ServedModel("cats", 1, "blue"))
    assert [m.name for m in updated.models] == ["cats", "shapes"]
    assert updated.model("cats") == ServedModel("cats", 1, "blue")
    assert ServedModel("cats", 1).service("green") == "model-cats-green"


def test_each_slot_has_two_addresses_above_dockers_range_until_the_subnet_is_full() -> None:
    addresses = [a for slot in range(NETWORK.slots) for a in NETWORK.addresses(slot)]
    assert len(set(addresses)) == 2 * NETWORK.slots == 126
    assert not [a for a in addresses if a in NETWORK.dynamic_range or a == NETWORK.subnet.broadcast_address]
    with pytest.raises(ServingError, match="room for 63 models"):
        NETWORK.addresses(63)
    wide = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/23"))
    assert wide.slots == 127  # 255 addresses above its lower half, two a model

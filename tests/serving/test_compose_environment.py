"""What docker compose and the worker container see of onebox's settings and state (no Docker).

Each ONEBOX_ name means one thing and is defined in one place: a setting (storage/settings.py)
under its own name, or one constant in code (the appliance's state, the serving container's
variables, the test suite's). The documentation and docker-compose.yml use only those.
"""

from __future__ import annotations

import ast
import ipaddress
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import DYNAMIC_RANGE_KEY, ApplianceState, ServedModel
from serving.checkout import COMPOSE_FILE, SOURCE_ROOT
from serving.compose_cli import (
    DOCKER_GID_VARIABLE,
    HOME_GID_VARIABLE,
    HOME_UID_VARIABLE,
    SETTINGS_FILE,
    SETTINGS_FILE_VARIABLE,
    SOURCE_VARIABLE,
    compose_environment,
)
from storage.settings import Settings, env_name

NAME = re.compile(r"ONEBOX_[A-Z][A-Z0-9_]*")
CODE = ("serving", "storage", "flows", "benchmarks", "tests")
SETTINGS = {env_name(field) for field in Settings.model_fields}


def names_defined_in_code() -> dict[str, list[str]]:
    """Every ONEBOX_ name written as a whole string literal in the code, with where."""
    places: dict[str, list[str]] = defaultdict(list)
    for folder in CODE:
        for path in sorted((SOURCE_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
                    places[node.value].append(f"{path.relative_to(SOURCE_ROOT)}:{node.lineno}")
    return places


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{(ONEBOX_[A-Z0-9_]+)", COMPOSE_FILE.read_text()))


@pytest.mark.parametrize(
    "document",
    [COMPOSE_FILE, SOURCE_ROOT / "README.md"],
    ids=lambda path: path.name,
)
def test_every_onebox_name_documented_is_a_setting_or_defined_once_in_code(document: Path) -> None:
    text = document.read_text()
    names = compose_variables() if document == COMPOSE_FILE else set(NAME.findall(text))
    assert names
    defined = names_defined_in_code()
    for name in sorted(names - SETTINGS):
        assert len(defined[name]) == 1, f"{document.name} names {name}: not a setting, defined at {defined[name]}"


def test_the_settings_env_names_are_the_documented_ones() -> None:
    # ONEBOX_BIND is what README and docker-compose.yml say; the field once read ONEBOX_BIND_ADDRESS.
    assert env_name("bind") == "ONEBOX_BIND"
    assert Settings(_env_file=None, bind="0.0.0.0").environment()["ONEBOX_BIND"] == "0.0.0.0"  # type: ignore[call-arg]
    with pytest.raises(KeyError):
        env_name("bind_address")


@pytest.fixture
def recorded_state() -> ApplianceState:
    return ApplianceState(
        models=(ServedModel("digits", 0, "green", "onebox/model:digits-v1", "onebox/model:digits-v2"),),
        worker=True,
        network=ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/24")),
    )


def test_compose_sees_every_variable_it_interpolates(tmp_path: Path, recorded_state: ApplianceState) -> None:
    environment = compose_environment(Settings(home=tmp_path), recorded_state)
    assert compose_variables() <= set(environment)
    assert environment[SOURCE_VARIABLE] == str(SOURCE_ROOT)
    assert environment[DYNAMIC_RANGE_KEY] == "10.99.0.0/25"


def test_the_recorded_subnet_wins_over_the_setting(tmp_path: Path, recorded_state: ApplianceState) -> None:
    settings = Settings(home=tmp_path, subnet=ipaddress.IPv4Network("10.98.0.0/24"))
    assert compose_environment(settings, recorded_state)["ONEBOX_SUBNET"] == "10.99.0.0/24"
    assert compose_environment(settings, ApplianceState())["ONEBOX_SUBNET"] == "10.98.0.0/24"


def test_the_worker_gets_every_setting_and_reads_the_same_settings_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path / "home",
        tracking_uri="http://127.0.0.1:5999",
        serve_workers=3,
        serve_port=3999,
        bind="0.0.0.0",
        drain_s=1.5,
        subnet=ipaddress.IPv4Network("10.99.0.0/24"),
        runtime="compose",
    )
    environment = compose_environment(settings, ApplianceState())
    written = {key: value or "" for key, value in dotenv_values(settings.compose_dir / SETTINGS_FILE).items()}
    assert environment[SETTINGS_FILE_VARIABLE] == str(settings.compose_dir / SETTINGS_FILE)
    assert written == settings.environment()
    # Every setting that has a value is in the file (the ones lost to deploys run by the worker included).
    # The secrets too, empty when unset: compose interpolates them.
    secrets = {"ONEBOX_PASSWORD", "ONEBOX_API_KEY"}
    unset = {env_name(field) for field, value in settings.model_dump().items() if value is None} - secrets
    assert {written[name] for name in secrets} == {""}
    assert set(written) == SETTINGS - unset
    assert {"ONEBOX_SERVE_WORKERS", "ONEBOX_TRACKING_URI"} <= set(written)
    # The worker container reads them back into the same settings.
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in written.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == settings  # type: ignore[call-arg]


def test_the_worker_service_reads_the_settings_file_and_lists_no_setting_itself() -> None:
    worker = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["worker"]
    [env_file] = worker["env_file"]
    variable, default = re.fullmatch(r"\$\{(\w+):-(.+)\}", env_file).groups()  # type: ignore[union-attr]
    assert variable == SETTINGS_FILE_VARIABLE
    # A plain `docker compose up` from a fresh clone has no onebox home: the default must exist.
    assert (COMPOSE_FILE.parent / default).is_file()
    assert not [name for name in worker["environment"] if name.startswith("ONEBOX_")]


def test_the_labeling_service_runs_as_the_homes_owner_with_the_home_at_its_own_path(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    environment = compose_environment(settings, ApplianceState())
    home = settings.home.stat()
    assert (environment[HOME_UID_VARIABLE], environment[HOME_GID_VARIABLE]) == (str(home.st_uid), str(home.st_gid))
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["labeling"]
    assert service["user"] == f"${{{HOME_UID_VARIABLE}:-10001}}:${{{HOME_GID_VARIABLE}:-10001}}"
    assert service["network_mode"] == "host"
    assert service["volumes"] == ["${ONEBOX_HOME:-./.onebox}:${ONEBOX_HOME:-/onebox-home}"]
    assert service["environment"]["ONEBOX_RUNTIME"] == "compose"
    assert "/label/healthz" in " ".join(service["healthcheck"]["test"])


def test_the_supervisor_reads_the_state_as_the_homes_owner_and_reaches_docker_through_its_socket(
    tmp_path: Path,
) -> None:
    environment = compose_environment(Settings(home=tmp_path / "home"), ApplianceState())
    socket = Path("/var/run/docker.sock")
    assert environment[DOCKER_GID_VARIABLE] == str(socket.stat().st_gid if socket.exists() else 0)
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["supervisor"]
    assert service["command"] == ["python3", "-m", "serving.supervisor"]
    assert service["user"] == f"${{{HOME_UID_VARIABLE}:-10001}}:${{{HOME_GID_VARIABLE}:-10001}}"
    assert service["group_add"] == [f"${{{DOCKER_GID_VARIABLE}:-0}}"]
    assert service["network_mode"] == "none"  # it listens on nothing and needs only the socket
    assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]

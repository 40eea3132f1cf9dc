"""The credentials' rules: no default or guessable secret, both or neither, never beyond loopback
without them, never printed; what `onebox` refuses, in one line that names the variable."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.appliance_state import write_env_file
from serving.compose import ComposeRuntime
from storage.credentials import (
    KNOWN_DEFAULTS,
    api_key_headers,
    basic_authorization,
    client_environment,
    exposure_problem,
    is_loopback,
)
from storage.errors import ServingError
from storage.settings import Settings

ONEBOX = str(Path(sys.executable).with_name("onebox"))
PASSWORD = secrets.token_urlsafe(18)
API_KEY = secrets.token_urlsafe(24)


def test_loopback_is_what_only_this_machine_reaches() -> None:
    for address in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(address), address
    for address in ("0.0.0.0", "::", "[::]", "10.0.0.5", "192.168.1.20", "gpu-server.lab", ""):
        assert not is_loopback(address), address


def test_publishing_beyond_loopback_needs_both_secrets() -> None:
    assert exposure_problem("127.0.0.1", password=None, api_key=None) is None
    assert exposure_problem("0.0.0.0", password=PASSWORD, api_key=API_KEY) is None
    for password, api_key in ((None, None), (PASSWORD, None), (None, API_KEY)):
        problem = exposure_problem("10.0.0.5", password=password, api_key=api_key)
        assert problem is not None
        assert problem.startswith("ONEBOX_BIND=10.0.0.5 publishes the appliance beyond this machine")
        assert "set ONEBOX_PASSWORD" in problem
        assert "bind to 127.0.0.1" in problem


def settings_of(**values: object) -> Settings:
    """Settings from these values (the environment aside)."""
    return Settings.model_validate(values)


def test_good_secrets_are_accepted_and_kept_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(home=tmp_path, bind="0.0.0.0", username="lab", password=PASSWORD, api_key=API_KEY)
    assert settings.exposure_problem is None
    assert (settings.password_value, settings.api_key_value) == (PASSWORD, API_KEY)
    assert PASSWORD not in repr(settings)
    assert API_KEY not in str(settings.model_dump())
    # The services read them back from the environment onebox writes.
    environment = settings.environment()
    assert environment["ONEBOX_PASSWORD"] == PASSWORD
    assert environment["ONEBOX_API_KEY"] == API_KEY
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings().api_key_value == API_KEY


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"password": "short-1234"}, "ONEBOX_PASSWORD is too short: give at least 12 characters"),
        ({"api_key": "k" * 5 + "ey-12345"}, "ONEBOX_API_KEY is too short: give at least 24 characters"),
        ({"password": "a quote' and space"}, "ONEBOX_PASSWORD holds a character onebox does not pass on safely"),
        ({"password": "pass$word#12345"}, "ONEBOX_PASSWORD holds a character"),
        ({"password": "changemechangeme"}, "ONEBOX_PASSWORD is a default or easily guessed value"),
        ({"password": "PASSWORD1234"}, "ONEBOX_PASSWORD is a default or easily guessed value"),
        ({"password": "abababababababab"}, "ONEBOX_PASSWORD is a default or easily guessed value"),
        (
            {"password": "the-lab-admin-2026"},
            "ONEBOX_PASSWORD is a default or easily guessed value",
        ),  # has the username
        ({"api_key": "a" * 30}, "ONEBOX_API_KEY is a default or easily guessed value"),
        ({"api_key": None}, "ONEBOX_PASSWORD is set but ONEBOX_API_KEY is not: set both"),
        ({"password": None}, "ONEBOX_API_KEY is set but ONEBOX_PASSWORD is not: set both"),
        ({"api_key": PASSWORD + "-and-more"}, None),  # different: fine
        ({"api_key": PASSWORD * 2, "password": PASSWORD * 2}, "ONEBOX_API_KEY must differ from ONEBOX_PASSWORD"),
        ({"username": "no spaces"}, "String should match pattern"),
    ],
)
def test_a_guessable_or_lone_secret_is_refused(tmp_path: Path, changes: dict[str, str | None], message: str) -> None:
    values: dict[str, str | None] = {"username": "admin", "password": PASSWORD, "api_key": API_KEY, **changes}
    if message is None:
        settings_of(home=tmp_path, **values)
        return
    with pytest.raises(ValidationError, match=re.escape(message)):
        settings_of(home=tmp_path, **values)


def test_every_known_default_is_refused(tmp_path: Path) -> None:
    for default in KNOWN_DEFAULTS:
        with pytest.raises(ValidationError, match="default or easily guessed"):
            settings_of(home=tmp_path, password=default, api_key=API_KEY)


def test_clients_get_the_login_in_their_own_variables() -> None:
    assert client_environment("onebox", None) == {}
    assert client_environment("lab", PASSWORD) == {
        "MLFLOW_TRACKING_USERNAME": "lab",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "PREFECT_API_AUTH_STRING": f"lab:{PASSWORD}",
    }
    assert api_key_headers(None) == {}
    assert api_key_headers(API_KEY) == {"Authorization": f"Bearer {API_KEY}"}
    assert basic_authorization("a", "b") == "Basic YTpi"


def test_up_refuses_to_publish_without_credentials_before_building_anything(tmp_path: Path) -> None:
    runtime = ComposeRuntime(Settings(home=tmp_path, bind="0.0.0.0", runtime="compose"))
    with pytest.raises(ServingError, match=re.escape("ONEBOX_BIND=0.0.0.0 publishes the appliance")):
        runtime.up()
    assert not (tmp_path / "compose").exists()  # nothing was built, written or started


def _onebox(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ONEBOX_")}
    env |= {"ONEBOX_HOME": str(tmp_path), **variables}
    return subprocess.run([ONEBOX, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_onebox_up_says_why_it_will_not_publish_and_never_prints_a_secret(tmp_path: Path) -> None:
    done = _onebox(tmp_path, "up", ONEBOX_BIND="0.0.0.0", ONEBOX_RUNTIME="compose")
    assert done.returncode == 1
    assert "ONEBOX_BIND=0.0.0.0 publishes the appliance beyond this machine" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    weak = f"{PASSWORD[:6]}"  # too short: the message says so without repeating it
    done = _onebox(tmp_path, "status", ONEBOX_PASSWORD=weak, ONEBOX_API_KEY=API_KEY)
    assert done.returncode == 2
    assert "error: ONEBOX_PASSWORD is too short" in done.stderr
    lone = _onebox(tmp_path, "status", ONEBOX_API_KEY=API_KEY)
    assert lone.returncode == 2
    assert "error: ONEBOX_API_KEY is set but ONEBOX_PASSWORD is not" in lone.stderr
    for output in (done.stdout, done.stderr, lone.stdout, lone.stderr):
        assert weak not in output
        assert API_KEY not in output


def test_the_settings_file_with_the_secrets_is_its_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "compose" / "settings.env"
    write_env_file(path, {"ONEBOX_PASSWORD": PASSWORD}, private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"ONEBOX_PASSWORD={PASSWORD}\n"
    write_env_file(tmp_path / "state.env", {"A": "1"})
    assert stat.S_IMODE((tmp_path / "state.env").stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.env"]  # no staging file left

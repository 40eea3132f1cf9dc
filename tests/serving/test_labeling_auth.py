"""The labeling page's doors: with ONEBOX_PASSWORD set it asks for the appliance login (the browser's
basic-auth prompt) on every route but its health check; a change sent from a page of another site
is refused with or without a login; without credentials it will not listen beyond loopback."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import free_port
from serving.labeling import LOGIN_CHALLENGE
from storage.credentials import basic_authorization
from tests.inbox_fixtures import labeling_server, make_labeling_home

PASSWORD = secrets.token_urlsafe(18)
LOGIN = {"Authorization": basic_authorization("onebox", PASSWORD)}


@dataclass(frozen=True)
class Page:
    url: str

    def route(self, path: str) -> str:
        return f"{self.url}/label/digits/{path}"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, production_store: str) -> Iterator[Page]:
    home = make_labeling_home(tmp_path_factory.mktemp("labeling-auth"), production_store)
    credentials = {"ONEBOX_PASSWORD": PASSWORD, "ONEBOX_API_KEY": secrets.token_urlsafe(24)}
    with labeling_server(home.settings, variables=credentials) as url:
        yield Page(url)


def test_every_route_but_health_asks_for_the_login(page: Page) -> None:
    assert httpx.get(f"{page.url}/label/healthz").json() == {"status": "ok"}
    wrong = {"Authorization": basic_authorization("onebox", PASSWORD + "x")}
    for headers in ({}, wrong, {"Authorization": basic_authorization("admin", PASSWORD)}):
        for method, path in (("GET", ""), ("GET", "state"), ("GET", "../"), ("POST", "undo")):
            answer = httpx.request(method, page.route(path), headers=headers, json={"by": "x"})
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == LOGIN_CHALLENGE
            assert answer.json()["error"].startswith("the labeling page needs the appliance login")
    state = httpx.get(page.route("state"), headers=LOGIN)
    assert state.status_code == 200
    assert state.json()["model"] == "digits"
    assert httpx.get(page.route(""), headers=LOGIN).text.startswith("<!DOCTYPE html>")


def test_a_change_from_another_site_is_refused_even_with_the_login(page: Page) -> None:
    sha = httpx.get(page.route("state"), headers=LOGIN).json()["current"]["sha256"]
    body = {"sha256": sha, "label": "3", "by": "ann"}
    host = page.url.removeprefix("http://")
    for origin in ("http://evil.example", f"http://{host}.evil.example", "null"):
        answer = httpx.post(page.route("label"), json=body, headers={**LOGIN, "Origin": origin})
        assert answer.status_code == 403, origin
        assert answer.json()["error"].startswith("a change from a page of another site is refused")
    assert httpx.get(page.route("state"), headers=LOGIN).json()["current"]["sha256"] == sha  # nothing labeled
    same = httpx.post(page.route("label"), json=body, headers={**LOGIN, "Origin": page.url})
    assert same.status_code == 200
    assert same.json()["current"]["sha256"] != sha


def test_without_credentials_it_will_not_listen_beyond_loopback(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ONEBOX_")}
    env |= {"ONEBOX_HOME": str(tmp_path), "ONEBOX_BIND": "0.0.0.0", "ONEBOX_LABEL_PORT": str(free_port())}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, "-m", "flows.labeling_server"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "refusing to start: ONEBOX_BIND=0.0.0.0 publishes the appliance beyond this machine" in done.stderr
    assert "Traceback" not in done.stderr

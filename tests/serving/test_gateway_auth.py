"""The gateway's credentials, in the real nginx of the gateway image with this checkout's gateway.sh
and configuration: with ONEBOX_PASSWORD and ONEBOX_API_KEY set, a model's routes need the key (or
the login) and answer a JSON 401 that a browser turns into a login prompt; health, the index and
the error pages stay open. Its refusal to listen beyond loopback without them is in test_exposure.py.

A model color is a small HTTP server on its Unix socket, as in test_gateway_routing.py.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Iterator

import httpx
import pytest

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import ServedModel
from serving.gateway import Gateway
from serving.gateway_config import GatewayModel
from storage.credentials import basic_authorization
from tests.serving.gateway_container import color_servers, gateway_container

pytestmark = pytest.mark.docker

NETWORK = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("127.78.0.0/24"))
USERNAME = "researcher"
# Random, with the characters a regular expression would misread ('.', '+', '*'), so a key that
# differs from the configured one only where such a character stands is refused too.
PASSWORD = f"p.a+s*{secrets.token_urlsafe(12)}"
API_KEY = f"k.e+y*{secrets.token_urlsafe(24)}"


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    model = ServedModel("digits", 0)
    credentials = {"ONEBOX_USERNAME": USERNAME, "ONEBOX_PASSWORD": PASSWORD, "ONEBOX_API_KEY": API_KEY}
    colors = {(model.slot, "blue"): "digits", (model.slot, "green"): "digits"}
    with color_servers(NETWORK, colors) as sockets, gateway_container(credentials, sockets=sockets) as (container, url):
        gateway = Gateway("unused", url)
        gateway.container = lambda: container  # type: ignore[method-assign]  # this one, not a compose project's
        gateway.switch("digits", "blue")
        assert gateway.publish([GatewayModel(model, None)], network=NETWORK, default="digits")
        # Its environment, which `docker inspect` shows, is the container's; nginx's is not.
        code, output = container.exec_run(["sh", "-c", "cat /proc/$(cat /tmp/onebox/nginx.pid)/environ"])
        assert code == 0, output
        assert PASSWORD.encode() not in output
        assert API_KEY.encode() not in output
        yield url


PROTECTED = ("/models/digits/predict", "/predict", "/models/digits/docs", "/docs.json", "/models/digits/metadata")


def test_a_model_route_without_credentials_is_a_json_401_with_a_login_prompt(gateway_url: str) -> None:
    for path in PROTECTED:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": f"Bearer {API_KEY.upper()}"},  # the key is case-sensitive
            {"Authorization": f"Bearer {API_KEY.replace('.', 'x')}"},  # '.' is not "any character"
            {"Authorization": f"Bearer {API_KEY}x"},
            {"Authorization": f"Basic {API_KEY}"},
            {"Authorization": basic_authorization(USERNAME, PASSWORD + "x")},
            {"Authorization": basic_authorization("onebox", PASSWORD)},
            {"X-API-Key": PASSWORD},
            {"X-API-Key": API_KEY[:-1]},
        ):
            answer = httpx.post(f"{gateway_url}{path}", content=b"x", headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"].startswith("this route needs credentials"), path
            assert answer.headers["www-authenticate"] == 'Basic realm="onebox", charset="UTF-8"'


def test_the_key_or_the_login_opens_every_model_route(gateway_url: str) -> None:
    for headers in (
        {"Authorization": f"Bearer {API_KEY}"},
        {"X-API-Key": API_KEY},
        {"Authorization": basic_authorization(USERNAME, PASSWORD)},  # what a browser sends after the prompt
    ):
        for path in PROTECTED:
            answer = httpx.post(f"{gateway_url}{path}", content=b"x", headers=headers)
            assert answer.status_code == 200, (path, headers, answer.text)
            assert answer.json()["path"] == path
            assert "www-authenticate" not in answer.headers


def test_health_the_index_and_the_errors_stay_open(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/gateway/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway_url}/").status_code == 200
    assert httpx.get(f"{gateway_url}/index.json").json()["default"] == "digits"
    for path in ("/healthz", "/readyz", "/livez", "/models/digits/healthz", "/models/digits/readyz"):
        answer = httpx.get(f"{gateway_url}{path}")
        assert answer.status_code == 200, path
        assert answer.json()["path"] == path
        assert "www-authenticate" not in answer.headers
    # An unknown model's 404 and nginx's own errors need no key either, and stay JSON.
    assert httpx.get(f"{gateway_url}/models/dogs/healthz").status_code == 404
    assert httpx.get(f"{gateway_url}/models/x%00y").status_code == 400
    # A path that is open only once nginx decoded and resolved it is not: the model server gets
    # the path as sent.
    for path in (
        "/models/digits/predict%2F..%2Fhealthz",
        "/models/digits/%68ealthz",
        "/models/digits/predict%2F%2E%2E%2Fhealthz",
    ):
        assert httpx.get(f"{gateway_url}{path}").status_code == 401, path
    assert httpx.get(f"{gateway_url}/models/digits/healthz?full=1").status_code == 200


def test_the_login_is_plain_basic_auth() -> None:
    # What a browser or curl -u sends: checked against the standard form, not onebox's own helper.
    assert (
        basic_authorization(USERNAME, PASSWORD)
        == "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    )

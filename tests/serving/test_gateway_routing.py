"""The gateway's routing, in the real nginx of the gateway image with this checkout's gateway.sh and
configuration: models added, removed and switched under load are files nginx reads per request,
never a reload, so not one request fails (a reload closes the keep-alive connections clients are
sending on); an unknown model is a 404 that lists the served ones; the default follows.

The models' colors are small HTTP servers on the Unix sockets the colors have in the appliance, in
a folder mounted into the gateway at /sockets.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import Color, ServedModel
from serving.gateway import Gateway
from serving.gateway_config import GatewayModel
from tests.serving.gateway_container import color_servers, gateway_container

pytestmark = pytest.mark.docker

NETWORK = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("127.77.0.0/24"))


@dataclass
class Routing:
    url: str
    gateway: Gateway
    models: dict[str, ServedModel] = field(default_factory=dict)

    def publish(self, *names: str, default: str | None = None) -> bool:
        served = [GatewayModel(self.models[name], None) for name in names]
        return self.gateway.publish(served, network=NETWORK, default=default or (names[0] if names else None))

    def switch(self, name: str, color: Color | None) -> None:
        self.gateway.switch(name, color)

    def who(self, path: str) -> str:
        answer = httpx.get(f"{self.url}{path}", timeout=5)
        return answer.json()["color"] if answer.status_code == 200 else f"{answer.status_code}"


@pytest.fixture(scope="module")
def routing() -> Iterator[Routing]:
    models = {"digits": ServedModel("digits", 0), "cats.v2": ServedModel("cats.v2", 1)}
    # (slot 2, "gone", has no server: a color that died)
    colors = {(m.slot, color): f"{m.name}-{color}" for m in models.values() for color in ("blue", "green")}
    with color_servers(NETWORK, colors) as sockets, gateway_container(sockets=sockets) as (container, url):
        gateway = Gateway("unused", url)
        gateway.container = lambda: container  # type: ignore[method-assign]  # this one, not a compose project's
        routing = Routing(url, gateway, {**models, "gone": ServedModel("gone", 2)})
        routing.switch("digits", "blue")
        # The first routes replace the gateway's no-models configuration: the one reload.
        assert routing.publish("digits")
        yield routing


def test_models_added_and_removed_under_load_cut_no_request(routing: Routing) -> None:
    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as session:  # keep-alive: the connections a reload would close
            while not stop.is_set():
                try:
                    answer = session.post(f"{routing.url}/models/digits/predict", content=b"x" * 2000)
                    if answer.status_code != 200 or answer.json()["color"] != "digits-blue":
                        failures.append(f"{answer.status_code} {answer.text[:100]}")
                except httpx.HTTPError as error:
                    failures.append(repr(error))
                sent[0] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        reloads = []
        for _ in range(8):
            routing.switch("cats.v2", "green")
            reloads.append(routing.publish("digits", "cats.v2"))
            assert routing.who("/models/cats.v2/predict") == "cats.v2-green"
            routing.switch("cats.v2", None)
            reloads.append(routing.publish("digits"))
            assert routing.who("/models/cats.v2/predict") == "404"
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert reloads == [False] * 16
    assert failures == []
    assert sent[0] > 100


def test_an_unknown_model_is_a_json_404_listing_the_served_ones(routing: Routing) -> None:
    for path, error in (
        ("/models/dogs/predict", "no model named dogs is served; served models: digits"),
        ("/models/dogs", "no model named dogs is served; served models: digits"),
        ("/models/", "no model name in the path; served models: digits"),
        # The default's link is not a model name: a name starts with a letter or a digit.
        ("/models/@default/predict", "no model name in the path; served models: digits"),
    ):
        answer = httpx.get(f"{routing.url}{path}")
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"error": error, "models": ["digits"]}, path
    # A path above the root, or with a NUL, is refused before any route: as JSON too.
    for path in ("/models/..%2F..%2Fetc/passwd", "/models/x%00y"):
        answer = httpx.get(f"{routing.url}{path}")
        assert answer.status_code == 400, path
        assert answer.json()["error"].startswith("the request is malformed"), path


def test_each_model_is_forwarded_with_its_prefix_and_the_default_moves(routing: Routing) -> None:
    routing.switch("cats.v2", "blue")
    try:
        assert not routing.publish("digits", "cats.v2", default="cats.v2")
        answer = httpx.get(f"{routing.url}/models/digits/metadata?x=1").json()
        assert answer == {"color": "digits-blue", "path": "/models/digits/metadata?x=1"}
        assert routing.who("/predict") == "cats.v2-blue"  # the unprefixed routes: the default's
        assert not routing.publish("digits", "cats.v2", default="digits")
        assert routing.who("/predict") == "digits-blue"
        # A swap is a marker: both exist for a moment, and either color answers.
        routing.switch("digits", "green")
        assert routing.who("/models/digits/predict") == routing.who("/predict") == "digits-green"
        routing.switch("digits", "blue")
    finally:
        routing.switch("cats.v2", None)
        routing.publish("digits")


def test_a_served_model_with_no_live_color_is_a_json_503(routing: Routing) -> None:
    routing.switch("digits", None)
    try:
        answer = httpx.get(f"{routing.url}/models/digits/predict")
        assert answer.status_code == 503
        assert answer.json() == {"error": "model digits has no live version; deploy one with: onebox train"}
        assert httpx.get(f"{routing.url}/predict").status_code == 503
    finally:
        routing.switch("digits", "blue")
    assert routing.who("/models/digits/predict") == "digits-blue"


def test_a_dead_color_is_a_json_503_at_once_and_a_body_over_the_limit_a_json_413(routing: Routing) -> None:
    routing.switch("gone", "blue")
    try:
        assert not routing.publish("digits", "gone")
        started = time.perf_counter()
        answer = httpx.post(f"{routing.url}/models/gone/predict", content=b"x")
        assert time.perf_counter() - started < 1.0
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "2"
        assert answer.json()["error"].startswith("the model did not answer")
    finally:
        routing.switch("gone", None)
        routing.publish("digits")
    # The model routes' own error pages keep the server's JSON 413 (an error_page replaces them).
    for path in ("/models/digits/predict", "/predict"):
        answer = httpx.post(f"{routing.url}{path}", content=b"\0" * 26_300_000)
        assert answer.status_code == 413, path
        assert answer.json()["error"].startswith("the request body is larger than this server accepts"), path

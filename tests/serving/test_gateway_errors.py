"""The gateway's own answers, from the real nginx of the gateway image with this checkout's
configuration: JSON for a body over the limit and for a model that does not answer, and no
version in the Server header."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.serving.gateway_container import gateway_container

pytestmark = pytest.mark.docker

ROUTES = """default_type application/json;
location = /dead { proxy_pass http://127.0.0.1:9; }
location = /nomodel { return 503 '{"error": "no model is deployed yet"}'; }
location / { return 200 '{"ok": true}'; }
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx = tmp_path_factory.mktemp("gateway") / "nginx"
    nginx.mkdir()
    (nginx / "routes.conf").write_text(ROUTES)
    (nginx / "upstreams.conf").write_text("")
    for path in (nginx.parent, nginx, *nginx.iterdir()):
        os.chmod(path, 0o777)  # the gateway runs as its own user
    limit = {"ONEBOX_MAX_BODY_BYTES": "1048576"}
    with gateway_container(limit, {str(nginx): {"bind": "/state/nginx", "mode": "rw"}}) as (_, url):
        yield url


def test_a_body_over_the_limit_is_a_json_413(gateway: str) -> None:
    answer = httpx.post(f"{gateway}/models/digits/predict", content=b"\0" * 2_000_000)
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/json"
    assert "1048576 bytes" in answer.json()["error"]


def test_a_model_that_does_not_answer_is_a_json_502(gateway: str) -> None:
    answer = httpx.get(f"{gateway}/dead")
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/json"
    assert "did not answer" in answer.json()["error"]


def test_the_routes_own_messages_are_kept(gateway: str) -> None:
    answer = httpx.get(f"{gateway}/nomodel")
    assert answer.status_code == 503
    assert answer.json() == {"error": "no model is deployed yet"}


def test_the_server_header_has_no_version(gateway: str) -> None:
    assert httpx.get(f"{gateway}/gateway/healthz").headers["server"] == "nginx"

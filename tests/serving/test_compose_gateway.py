"""What the appliance writes for many models (no Docker): the gateway's routes and the models'
compose services. The docker tests (test_compose.py) run them through nginx and compose."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import ApplianceState, ServedModel
from serving.compose_models import models_compose, write_models_compose
from serving.gateway_config import (
    GatewayModel,
    check_model_name,
    index_json,
    routes_conf,
    routes_digest,
    upstreams_conf,
)
from serving.metadata import ModelMetadata
from storage.errors import ServingError

NETWORK = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/24"))
STATE = ApplianceState(
    models=(
        ServedModel("digits", 0, "blue", "onebox/model:digits-v1", "onebox/model:digits-v2", workers=2),
        ServedModel("cats.v2", 1, "green", green_image="onebox/model:cats.v2-v5"),
    ),
    network=NETWORK,
)


def gateway_models() -> list[GatewayModel]:
    digits = ModelMetadata("digits", "2", "run", "digits", "1", ("0", "1"), (1, 8, 8))
    return [
        GatewayModel(STATE.models[0], ("10.99.0.253", "10.99.0.254"), digits),
        GatewayModel(STATE.models[1], ("10.99.0.251", "10.99.0.252"), None),
    ]


def locations(conf: str) -> dict[str, str]:
    return dict(re.findall(r"^location (.+?) \{\n(.*?)^\}", conf, flags=re.MULTILINE | re.DOTALL))


def test_each_model_is_forwarded_with_its_prefix_to_its_live_color() -> None:
    routes = locations(routes_conf(gateway_models(), default="cats.v2"))
    for name, slot in (("digits", 0), ("cats.v2", 1)):
        for location in (f"= /models/{name}", f"^~ /models/{name}/"):
            # A variable and no URI part: nginx passes the request's path on unchanged.
            assert f"proxy_pass http://$model_{slot};" in routes[location]
    assert "proxy_pass http://$model_default;" in routes["/"]
    conf = routes_conf(gateway_models(), default="cats.v2")
    assert 'set $model_default "$model_1";' in conf
    assert "if (-f /state/live/cats.v2.green) {\n    set $model_1 model_1_green;\n}" in conf


def test_the_routes_say_which_they_are_so_a_reload_can_be_awaited() -> None:
    digest = routes_digest(gateway_models(), default="digits")
    assert f"return 200 '{digest}';" in locations(routes_conf(gateway_models(), default="digits"))["= /gateway/routes"]
    assert routes_digest(gateway_models(), default="cats.v2") != digest
    assert routes_digest(gateway_models()[:1], default="digits") != digest


def test_an_unknown_model_is_a_404_listing_the_served_ones() -> None:
    routes = locations(routes_conf(gateway_models(), default="digits"))
    body = re.search(r"return 404 '(.*)';", routes["~ ^/models/([A-Za-z0-9._-]+)"])
    assert body is not None
    answer = json.loads(body.group(1).replace("$1", "dogs"))
    assert answer["error"] == "no model named dogs is served; served models: digits, cats.v2"
    assert answer["models"] == ["digits", "cats.v2"]


def test_no_models_means_503_with_how_to_train_one() -> None:
    routes = locations(routes_conf([], default=None))
    assert "no model is deployed yet; train one with: onebox train" in routes["/"]
    assert not [location for location in routes if location.startswith(("=", "^~")) and "/models/" in location]
    assert upstreams_conf([]) == ""


def test_every_color_has_an_upstream_at_its_fixed_address() -> None:
    upstreams = upstreams_conf(gateway_models())
    for slot, color, address in ((0, "blue", "10.99.0.253"), (1, "green", "10.99.0.252")):
        assert re.search(rf"upstream model_{slot}_{color} \{{\n    server {address}:3000;", upstreams)


def test_the_index_lists_the_models_that_say_what_they_serve() -> None:
    index = json.loads(index_json(gateway_models(), default="digits"))
    assert index["default"] == "digits"
    assert [(m["name"], m["version"], m["url"]) for m in index["models"]] == [("digits", "2", "/models/digits/")]


@pytest.mark.parametrize("name", ["", "-x", "a b", "x/y", "ü", "a" * 65, "x'y", "x;y", "Digits", "x\n"])
def test_a_name_a_url_or_container_cannot_carry_is_refused(name: str) -> None:
    with pytest.raises(ServingError, match=r"model name .* is not valid"):
        check_model_name(name)


def test_the_models_compose_file_has_each_color_with_an_image(tmp_path: Path) -> None:
    written = write_models_compose(tmp_path, STATE)
    assert written is not None
    services = yaml.safe_load(written.read_text())["services"]
    assert sorted(services) == ["model-cats.v2-green", "model-digits-blue", "model-digits-green"]
    blue = services["model-digits-blue"]
    assert blue["image"] == "onebox/model:digits-v1"
    assert blue["profiles"] == ["model-digits-blue"]  # started on its own, by its own name
    assert blue["networks"]["default"]["ipv4_address"] == "10.99.0.253"
    assert blue["environment"]["ONEBOX_SERVE_WORKERS"] == "2"
    cats = services["model-cats.v2-green"]
    assert cats["networks"]["default"]["ipv4_address"] == "10.99.0.252"
    assert cats["environment"]["ONEBOX_SERVE_WORKERS"] == "1"
    # One worker: one process, no supervisor beside it; more: BentoML's own (the image's command).
    assert cats["command"] == ["python3", "-m", "serving.single_process"]
    assert "command" not in blue
    assert models_compose(ApplianceState()) == {"services": {}}  # before the first `up` records a network
    assert write_models_compose(tmp_path, ApplianceState()) is None
    assert not written.exists()  # no model, no second compose file


def test_the_labeling_page_is_forwarded_only_when_the_appliance_runs_it() -> None:
    assert "/label/" not in routes_conf(gateway_models(), default="digits")
    routes = locations(routes_conf(gateway_models(), default="digits", labeling="127.0.0.1:3100"))
    assert "proxy_pass http://127.0.0.1:3100;" in routes["^~ /label/"]  # the prefix kept: the app answers /label/...
    assert "@labeling_down" in routes["^~ /label/"]
    assert json.loads(routes["@labeling_down"].split("return 502 '")[1].split("';")[0])["error"].startswith(
        "the labeling page is not running"
    )
    # A new route is a new digest, so a publish waits until nginx answers with it; the old
    # routes keep the digest they had.
    with_labeling = routes_digest(gateway_models(), default="digits", labeling="127.0.0.1:3100")
    assert with_labeling != routes_digest(gateway_models(), default="digits")


def test_the_index_links_each_models_labeling_page_when_there_is_one() -> None:
    (entry,) = json.loads(index_json(gateway_models(), default="digits", labeling=True))["models"]
    assert entry["labeling_url"] == "/label/digits/"
    (plain,) = json.loads(index_json(gateway_models(), default="digits"))["models"]
    assert "labeling_url" not in plain

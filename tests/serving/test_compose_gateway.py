"""What the appliance writes for many models (no Docker): the gateway's routes and the models'
compose services. The docker tests (test_compose.py) run them through nginx and compose."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from serving.appliance_network import MAX_MODELS, ApplianceNetwork
from serving.appliance_state import ApplianceState, ServedModel
from serving.checkout import COMPOSE_FILE
from serving.compose_models import models_compose, write_models_compose
from serving.gateway_config import (
    DEFAULT_NAME,
    UNKNOWN_MODEL_FILE,
    GatewayModel,
    check_model_name,
    index_json,
    models_list,
    routes_conf,
    routes_digest,
    slot_key,
    unknown_model_json,
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
    return [GatewayModel(STATE.models[0], digits), GatewayModel(STATE.models[1], None)]


def locations(conf: str) -> dict[str, str]:
    return dict(re.findall(r"^location (.+?) \{\n(.*?)^\}", conf, flags=re.MULTILINE | re.DOTALL))


def test_the_routes_find_the_model_from_files_so_they_are_the_same_for_any_models() -> None:
    conf = routes_conf(NETWORK)
    routes = locations(conf)
    # A variable and no URI part: nginx passes the request's path on unchanged.
    assert "proxy_pass http://$model_upstream;" in routes["^~ /models/"]
    assert "proxy_pass http://$model_upstream;" in routes["/"]
    assert 'if ($uri ~ "^/models/([A-Za-z0-9][A-Za-z0-9._-]*)(?:/|$)") {\n    set $model_name $1;\n}' in conf
    assert f'set $model_name "{DEFAULT_NAME}";' in conf  # the unprefixed routes: the default model's
    # A /24 has 63 slots: six binary digits, one file each.
    assert [int(bit) for bit in re.findall(r"if \(-f /state/names/\$model_name/b(\d)\)", conf)] == list(range(6))
    assert "model_${slot_b5}${slot_b4}${slot_b3}${slot_b2}${slot_b1}${slot_b0}_$model_color" in conf
    assert "if (-f /state/names/$model_name/green) {\n    set $model_color green;\n}" in conf
    assert "digits" not in conf
    for location in ("^~ /models/", "/"):
        # A dead color is a 503 well before the ~3 s of "No route to host"; the JSON 413 stays.
        assert "proxy_connect_timeout 750ms;" in routes[location]
        assert "error_page 502 504 =503 /gateway/errors/model-down.json;" in routes[location]
        assert "error_page 413 /gateway/errors/413.json;" in routes[location]


def test_the_served_models_are_listed_by_name_and_slot_in_binary() -> None:
    assert models_list(gateway_models(), NETWORK) == "digits 000000\ncats.v2 000001\n"
    assert slot_key(62, NETWORK) == "111110"
    wide = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/23"))
    assert slot_key(126, wide) == "1111110"  # 127 slots: seven digits
    huge = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.96.0.0/14"))
    assert huge.slots == MAX_MODELS  # the gateway declares an upstream per slot: a bound
    with pytest.raises(ServingError, match="has room for 128 models"):
        huge.addresses(MAX_MODELS)


def test_the_configuration_says_which_it_is_so_a_reload_can_be_awaited() -> None:
    digest = routes_digest(NETWORK)
    assert f"return 200 '{digest}';" in locations(routes_conf(NETWORK))["= /gateway/routes"]
    assert routes_digest(NETWORK, labeling="127.0.0.1:3100") != digest
    other = ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.98.0.0/24"))
    assert routes_digest(other) != digest


def test_an_unknown_model_is_a_404_listing_the_served_ones() -> None:
    routes = locations(routes_conf(NETWORK))
    assert f"error_page 404 /gateway/errors/{UNKNOWN_MODEL_FILE};" in routes["^~ /models/"]
    template = unknown_model_json(gateway_models())

    def as_nginx_fills_it(asked: str) -> dict[str, object]:  # the SSI directives, as nginx runs them
        directives = r'(.*)<!--# if expr="\$asked_model" -->(.*)<!--# else -->(.*)<!--# endif -->(.*)'
        found = re.fullmatch(directives, template, re.S)
        assert found is not None
        head, named, unnamed, tail = found.groups()
        chosen = named.replace('<!--# echo var="asked_model" -->', asked) if asked else unnamed
        return json.loads(head + chosen + tail)

    answer = as_nginx_fills_it("dogs")
    assert answer["error"] == "no model named dogs is served; served models: digits, cats.v2"
    assert answer["models"] == ["digits", "cats.v2"]
    assert as_nginx_fills_it("")["error"] == "no model name in the path; served models: digits, cats.v2"


def test_no_models_means_503_with_how_to_train_one() -> None:
    assert "no model is deployed yet; train one with: onebox train" in locations(routes_conf(NETWORK))["/"]
    assert "served models: none" in unknown_model_json([])
    assert models_list([], NETWORK) == ""


def test_every_color_of_every_slot_has_an_upstream_at_its_own_socket() -> None:
    upstreams = upstreams_conf(NETWORK)
    assert upstreams.count("upstream ") == 2 * NETWORK.slots == 126
    for key, color in (("000000", "blue"), ("000001", "green"), ("111110", "green")):
        assert re.search(
            rf"upstream model_{key}_{color} \{{\n    server unix:/sockets/model_{key}_{color}.sock;", upstreams
        )
    assert len(set(re.findall(r"server (\S+);", upstreams))) == 126


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
    # Bounded and unprivileged like the appliance's services; its memory limit from the settings.
    assert blue["mem_limit"] == "${ONEBOX_MODEL_MEMORY_MB:-3072}m"
    assert (blue["cap_drop"], blue["security_opt"], blue["pids_limit"]) == (["ALL"], ["no-new-privileges:true"], 1024)
    assert blue["logging"]["options"] == {"max-size": "10m", "max-file": "3"}
    # The rest is docker-compose.yml's x-hardened, word for word (a second file cannot use its anchor).
    hardened = yaml.safe_load(COMPOSE_FILE.read_text())["x-hardened"]
    assert {key: blue[key] for key in hardened if key != "pids_limit"} == {
        key: value for key, value in hardened.items() if key != "pids_limit"
    }
    # The input limits come from the settings compose runs with (storage/limits.py), defaulted.
    assert blue["environment"]["ONEBOX_MAX_BODY_BYTES"] == "${ONEBOX_MAX_BODY_BYTES:-26214400}"
    assert blue["environment"]["ONEBOX_MAX_IMAGE_PIXELS"] == "${ONEBOX_MAX_IMAGE_PIXELS:-50000000}"
    cats = services["model-cats.v2-green"]
    assert cats["networks"]["default"]["ipv4_address"] == "10.99.0.252"
    assert cats["environment"]["ONEBOX_SERVE_WORKERS"] == "1"
    # Each color listens on its own socket in the volume it shares with the gateway.
    assert cats["environment"]["ONEBOX_SERVE_SOCKET"] == "/sockets/model_000001_green.sock"
    assert blue["environment"]["ONEBOX_SERVE_SOCKET"] == "/sockets/model_000000_blue.sock"
    assert "model-sockets:/sockets" in blue["volumes"]
    assert "model-sockets" in yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]
    assert cats["command"] == blue["command"] == ["python3", "-m", "serving.model_server"]
    assert models_compose(ApplianceState()) == {"services": {}}  # before the first `up` records a network
    assert write_models_compose(tmp_path, ApplianceState()) is None
    assert not written.exists()  # no model, no second compose file


def test_the_labeling_page_is_forwarded_only_when_the_appliance_runs_it() -> None:
    assert "/label/" not in routes_conf(NETWORK)
    routes = locations(routes_conf(NETWORK, labeling="127.0.0.1:3100"))
    assert "proxy_pass http://127.0.0.1:3100;" in routes["^~ /label/"]  # the prefix kept: the app answers /label/...
    assert "@labeling_down" in routes["^~ /label/"]
    assert json.loads(routes["@labeling_down"].split("return 502 '")[1].split("';")[0])["error"].startswith(
        "the labeling page is not running"
    )

"""What the gateway's nginx serves, written from the appliance's state.

The nginx configuration is the same whatever models serve: one upstream per address slot and
color of the appliance's network, and routes that find the model of a request from files. So
adding, removing or swapping a model, or moving the default, never reloads nginx (a reload
closes the keep-alive connections of clients that may be sending on them that instant); only a
new subnet or a labeling service that comes or goes does, at `up`.

The files, under /state (onebox-gateway in compose/gateway/gateway.sh writes them):

- ``names/NAME/``: model NAME is served while ``served`` exists; ``b0``, ``b1``, ... are the set
  bits of its address slot; ``blue`` or ``green`` marks its live color.
- ``names/@default``: a symlink to the default model's folder (the unprefixed routes).
- ``site/``: the index page and the 404 of an unknown model, which lists the served ones.

nginx checks them for each request (a stat each: microseconds), so every request finds either a
whole route or none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import COLORS, ServedModel
from serving.index_page import index_entries, render_index
from serving.metadata import ModelMetadata
from storage.errors import ServingError
from storage.names import name_problem

# Each color listens on a Unix socket of its own in this folder, a volume the gateway shares
# (docker-compose.yml's model-sockets): nginx reaches it there, not through Docker's bridge.
SOCKETS_DIR = "/sockets"
NAMES_DIR = "/state/names"
DEFAULT_NAME = "@default"  # no model can have it: a name starts with a letter or a digit
UNKNOWN_MODEL_FILE = "unknown-model.json"
NO_MODEL_ERROR = "no model is deployed yet; train one with: onebox train"


def check_model_name(name: str) -> str:
    """``name`` when the appliance can serve a model of that name.

    Raises:
        ServingError: it has characters a URL path or a container name cannot carry as they are.
    """
    if problem := name_problem("model", name):
        raise ServingError(problem)
    return name


@dataclass(frozen=True)
class GatewayModel:
    """One served model as the gateway sees it: its name and slot, and what it serves."""

    model: ServedModel
    metadata: ModelMetadata | None  # None: its live color did not say (not running)


def slot_bits(network: ApplianceNetwork) -> int:
    """How many binary digits name any slot of ``network``."""
    return max(1, (network.slots - 1).bit_length())


def slot_key(slot: int, network: ApplianceNetwork) -> str:
    """Slot ``slot`` in binary, as the upstreams' names and the files of names/NAME/ spell it."""
    return format(slot, f"0{slot_bits(network)}b")


def socket_path(slot: int, color: str, network: ApplianceNetwork) -> str:
    """Where the color ``color`` of the model in slot ``slot`` listens, in the gateway's view and its own."""
    return f"{SOCKETS_DIR}/model_{slot_key(slot, network)}_{color}.sock"


def upstreams_conf(network: ApplianceNetwork) -> str:
    """An upstream for each color of each slot of ``network``, used or not (a few hundred bytes
    of memory each, and no connection until a request goes there).

    Each is the color's Unix socket (serving/model_server.py): through Docker's bridge, the TCP
    hop to a color cost nginx 0.18 ms of system CPU per request, more than all its own work, and
    the model 0.15 ms; over a socket, about 0.07 and 0.05 (measured on this machine: README)."""
    blocks = []
    for slot in range(network.slots):
        for color in COLORS:
            # Idle pooled connections close after 4 s, before the model server (uvicorn) closes
            # them at 5 s, so nginx never sends a request on a connection the server is closing.
            server = f"unix:{socket_path(slot, color, network)}"
            blocks.append(
                f"upstream model_{slot_key(slot, network)}_{color} {{\n"
                f"    server {server};\n    keepalive 32;\n    keepalive_timeout 4s;\n}}\n"
            )
    return "".join(blocks)


def _which_model(bits: int) -> str:
    """Server-level directives that set, for each request, ``$model_name`` (from /models/NAME/...,
    else @default; empty for /models/ without a name), ``$model_served``, and
    ``$model_upstream`` (empty when the model has no live color)."""
    folder = f"{NAMES_DIR}/$model_name"
    lines = [
        f'set $model_name "{DEFAULT_NAME}";\n',
        'if ($uri ~ "^/models/") {\n    set $model_name "";\n}\n',
        'if ($uri ~ "^/models/([A-Za-z0-9][A-Za-z0-9._-]*)(?:/|$)") {\n    set $model_name $1;\n}\n',
        'set $model_served "";\n',
        f"if (-f {folder}/served) {{\n    set $model_served yes;\n}}\n",
    ]
    for bit in range(bits):
        lines.append(f"set $slot_b{bit} 0;\nif (-f {folder}/b{bit}) {{\n    set $slot_b{bit} 1;\n}}\n")
    key = "".join(f"${{slot_b{bit}}}" for bit in reversed(range(bits)))
    lines.append('set $model_color "";\n')
    for color in COLORS:  # both markers exist for a moment during a switch: either color runs
        lines.append(f"if (-f {folder}/{color}) {{\n    set $model_color {color};\n}}\n")
    lines.append('if ($model_served = "") {\n    set $model_color "";\n}\n')
    lines.append('set $model_upstream "";\n')
    lines.append(f'if ($model_color) {{\n    set $model_upstream "model_{key}_$model_color";\n}}\n')
    return "".join(lines)


MODEL_DOWN_PAGE = "/gateway/errors/model-down.json"
MODEL_DOWN_ERROR = "the model did not answer (it may be restarting or busy); try again in a few seconds"
# A color's socket answers a connection at once while it runs; one whose server is gone refuses
# it (or is no file) at once: a 503. The bound is for a server too busy to accept.
CONNECT_TIMEOUT = "750ms"


def _proxy(unavailable: str) -> str:
    return (
        # error_page here replaces the server's, so the body limit's JSON 413 is named again. A
        # color that refuses, is gone or does not answer is a 503 with Retry-After: the model is
        # unavailable, not broken.
        "    error_page 413 /gateway/errors/413.json;\n"
        f"    error_page 502 504 =503 {MODEL_DOWN_PAGE};\n"
        '    if ($model_upstream = "") {\n'
        f"        return 503 '{json.dumps({'error': unavailable})}';\n    }}\n"
        "    proxy_http_version 1.1;\n"
        f"    proxy_connect_timeout {CONNECT_TIMEOUT};\n"
        '    proxy_set_header Connection "";\n'
        "    proxy_set_header Host $host;\n"
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "    proxy_read_timeout 60s;\n"
        # A pooled connection the server closed under nginx's feet is retried on a fresh one,
        # uploads included (a prediction has no side effect a retry could repeat).
        "    proxy_next_upstream error non_idempotent;\n"
        # A variable and no URI part: nginx passes the request's path on unchanged.
        "    proxy_pass http://$model_upstream;\n"
    )


def routes_digest(network: ApplianceNetwork, *, labeling: str | None = None) -> str:
    """What the nginx configuration is made from, in a few characters: the gateway answers it at
    ``/gateway/routes`` once a reload to it took effect."""
    # The sockets' folder too: the upstreams moved there from the colors' addresses, and a gateway
    # upgraded across that must be seen to reload.
    made_of = (str(network.subnet), network.slots, labeling, SOCKETS_DIR)
    return hashlib.sha256(repr(made_of).encode()).hexdigest()[:16]


def labeling_location(address: str) -> str:
    """``/label/...`` forwarded unchanged to the labeling service at ``address`` (host:port, on the
    host's network like the gateway); a JSON 502 while it does not answer."""
    down = json.dumps({"error": "the labeling page is not running; start the appliance with: make up"})
    return (
        "location ^~ /label/ {\n"
        "    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        # With its port: the page compares it with a change's Origin (serving/labeling.py).
        "    proxy_set_header Host $http_host;\n"
        "    proxy_read_timeout 300s;\n"  # a merge of a large dataset takes a while
        "    proxy_intercept_errors off;\n"
        "    error_page 502 504 = @labeling_down;\n"
        f"    proxy_pass http://{address};\n}}\n"
        f"location @labeling_down {{\n    default_type application/json;\n    return 502 '{down}';\n}}\n"
    )


def routes_conf(network: ApplianceNetwork, *, labeling: str | None = None) -> str:
    """The routes of every model the appliance may serve; ``labeling`` (host:port of the labeling
    service) adds ``/label/``."""
    digest = routes_digest(network, labeling=labeling)
    lines = [
        "# Written by onebox (serving/gateway_config.py); do not edit.\n",
        "default_type application/json;\n",
        # At server level: `if` inside a location is fragile.
        _which_model(slot_bits(network)),
        # nginx -s reload returns before the new workers answer: this tells when they do.
        f"location = /gateway/routes {{\n    return 200 '{digest}';\n}}\n",
        # try_files, not alias: "/" names a folder, and alias would look for an index file in it.
        "location = / {\n    default_type text/html;\n    add_header Cache-Control no-cache;\n"
        "    root /state/site;\n    try_files /index.html =404;\n}\n"
        "location = /index.json {\n    add_header Cache-Control no-cache;\n    alias /state/site/index.json;\n}\n",
    ]
    if labeling is not None:
        lines.append(labeling_location(labeling))
    lines.append(
        # The prefix is forwarded unchanged: the model server answers /models/NAME/... itself.
        "location ^~ /models/ {\n"
        f"    error_page 404 /gateway/errors/{UNKNOWN_MODEL_FILE};\n"
        '    if ($model_served = "") {\n        set $asked_model $model_name;\n        return 404;\n    }\n'
        f"{_proxy('model $model_name has no live version; deploy one with: onebox train')}}}\n"
        # The served models are listed in a file written with the index; the name asked for comes
        # from the request ($asked_model survives the redirect to the error page).
        f"location = /gateway/errors/{UNKNOWN_MODEL_FILE} {{\n    internal;\n    ssi on;\n"
        "    ssi_types application/json;\n    default_type application/json;\n"
        f"    alias /state/site/{UNKNOWN_MODEL_FILE};\n}}\n"
        f"location = {MODEL_DOWN_PAGE} {{\n    internal;\n    add_header Retry-After 2 always;\n"
        f"    return 503 '{json.dumps({'error': MODEL_DOWN_ERROR})}';\n}}\n"
    )
    lines.append(
        "location / {\n"
        f"    if ($model_served = \"\") {{\n        return 503 '{json.dumps({'error': NO_MODEL_ERROR})}';\n    }}\n"
        f"{_proxy('the default model has no live version; deploy one with: onebox train')}}}\n"
    )
    return "".join(lines)


def models_list(models: list[GatewayModel], network: ApplianceNetwork) -> str:
    """What onebox-gateway apply makes names/ from: a line ``NAME SLOT_KEY`` per served model."""
    return "".join(f"{entry.model.name} {slot_key(entry.model.slot, network)}\n" for entry in models)


def unknown_model_json(models: list[GatewayModel]) -> str:
    """The 404 of a model that is not served, with the name asked for filled in by nginx (SSI)."""
    names = [entry.model.name for entry in models]
    listed = ", ".join(names) or "none"
    asked = (
        '<!--# if expr="$asked_model" -->no model named <!--# echo var="asked_model" --> is served'
        "<!--# else -->no model name in the path<!--# endif -->"
    )
    return json.dumps({"error": f"@ASKED@; served models: {listed}", "models": names}).replace("@ASKED@", asked) + "\n"


def index_json(models: list[GatewayModel], *, default: str | None, labeling: bool = False) -> str:
    """``/index.json``: the index page's entries (models whose live color did not say what it
    serves are left out of both)."""
    known = [entry.metadata for entry in models if entry.metadata is not None]
    entries = index_entries(known, default=default, labeling=labeling)
    return json.dumps({"default": default, "models": entries}, indent=2) + "\n"


def index_html(models: list[GatewayModel], *, default: str | None, labeling: bool = False) -> str:
    known = [entry.metadata for entry in models if entry.metadata is not None]
    return render_index(known, default=default, labeling=labeling)

"""What the gateway's nginx serves, written from the appliance's state: one upstream per model
color, routes ``/models/NAME/...`` forwarded unchanged to NAME's live color, the unprefixed routes
to the default model's, a 404 listing the served models for any other name, and the index page.

Only adding or removing a model (or changing the default) changes these files, and then nginx
reloads gracefully; a swap changes a marker file nginx checks per request (compose/gateway/gateway.sh).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from serving.appliance_state import COLORS, ServedModel
from serving.index_page import index_entries, render_index
from serving.metadata import ModelMetadata
from storage.errors import ServingError
from storage.names import name_problem

MODEL_PORT = 3000
# Letters, digits, '.', '_', '-': safe in a URL path, a file name, a compose service and nginx's
# configuration without quoting (gateway.sh checks the same).
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
    """One served model as the gateway sees it: its name, its colors' addresses, what it serves."""

    model: ServedModel
    addresses: tuple[str, str]  # blue, green
    metadata: ModelMetadata | None  # None: its live color did not say (not running)


def upstreams_conf(models: list[GatewayModel]) -> str:
    blocks = []
    for entry in models:
        for color, address in zip(COLORS, entry.addresses, strict=True):
            # Idle pooled connections close after 4 s, before the model server (uvicorn) closes
            # them at 5 s, so nginx never sends a request on a connection the server is closing.
            blocks.append(
                f"# {entry.model.name} {color}\n"
                f"upstream model_{entry.model.slot}_{color} {{\n"
                f"    server {address}:{MODEL_PORT};\n    keepalive 32;\n    keepalive_timeout 4s;\n}}\n"
            )
    return "".join(blocks)


def _proxy(variable: str, unavailable: str) -> str:
    return (
        f'    if ({variable} = "") {{\n'
        f"        return 503 '{json.dumps({'error': unavailable})}';\n    }}\n"
        "    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        "    proxy_set_header Host $host;\n"
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "    proxy_read_timeout 60s;\n"
        # A pooled connection the server closed under nginx's feet is retried on a fresh one,
        # uploads included (a prediction has no side effect a retry could repeat).
        "    proxy_next_upstream error non_idempotent;\n"
        f"    proxy_pass http://{variable};\n"
    )


def routes_digest(models: list[GatewayModel], *, default: str | None, labeling: str | None = None) -> str:
    """What the routes are made from, in a few characters: the gateway answers it at
    ``/gateway/routes`` once a reload to these routes took effect."""
    made_of = [(e.model.name, e.model.slot, e.addresses) for e in models]
    parts = (made_of, default) if labeling is None else (made_of, default, labeling)  # the same digests as before
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def labeling_location(address: str) -> str:
    """``/label/...`` forwarded unchanged to the labeling service at ``address`` (host:port, on the
    host's network like the gateway); a JSON 502 while it does not answer."""
    down = json.dumps({"error": "the labeling page is not running; start the appliance with: make up"})
    return (
        "location ^~ /label/ {\n"
        "    proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        "    proxy_set_header Host $host;\n"
        "    proxy_read_timeout 300s;\n"  # a merge of a large dataset takes a while
        "    proxy_intercept_errors off;\n"
        "    error_page 502 504 = @labeling_down;\n"
        f"    proxy_pass http://{address};\n}}\n"
        f"location @labeling_down {{\n    default_type application/json;\n    return 502 '{down}';\n}}\n"
    )


def routes_conf(models: list[GatewayModel], *, default: str | None, labeling: str | None = None) -> str:
    """The routes of ``models``; ``labeling`` (host:port of the labeling service) adds ``/label/``."""
    names = [entry.model.name for entry in models]
    listed = ", ".join(names) or "none"
    lines = [
        "# Written by onebox (serving/gateway_config.py) from the appliance's state; do not edit.\n",
        "default_type application/json;\n",
        # Each model's live color, from its marker file (a stat per request: microseconds). At
        # server level: `if` inside a location is fragile.
    ]
    for entry in models:
        name, slot = entry.model.name, entry.model.slot
        lines.append(f'set $model_{slot} "";\n')
        for color in COLORS:  # both markers exist for a moment during a switch: either color runs
            lines.append(f"if (-f /state/live/{name}.{color}) {{\n    set $model_{slot} model_{slot}_{color};\n}}\n")
    default_slot = next((entry.model.slot for entry in models if entry.model.name == default), None)
    lines.append(f'set $model_default "{"" if default_slot is None else f"$model_{default_slot}"}";\n')
    # nginx -s reload returns before the new workers answer: this tells when they do.
    digest = routes_digest(models, default=default, labeling=labeling)
    lines.append(f"location = /gateway/routes {{\n    return 200 '{digest}';\n}}\n")
    lines.append(
        # try_files, not alias: "/" names a folder, and alias would look for an index file in it.
        "location = / {\n    default_type text/html;\n    add_header Cache-Control no-cache;\n"
        "    root /state/site;\n    try_files /index.html =404;\n}\n"
        "location = /index.json {\n    add_header Cache-Control no-cache;\n    alias /state/site/index.json;\n}\n"
    )
    if labeling is not None:
        lines.append(labeling_location(labeling))
    for entry in models:
        name, slot = entry.model.name, entry.model.slot
        unavailable = f"model {name} has no live version; deploy one with: onebox train"
        # The prefix is forwarded unchanged: the model server answers /models/NAME/... itself.
        for location in (f"= /models/{name}", f"^~ /models/{name}/"):
            lines.append(f"location {location} {{\n{_proxy(f'$model_{slot}', unavailable)}}}\n")
    unknown = (
        ("~ ^/models/([A-Za-z0-9._-]+)", "no model named $1 is served"),
        ("/models/", "no model name in the path"),
    )
    for location, named in unknown:
        body = json.dumps({"error": f"{named}; served models: {listed}", "models": names})
        lines.append(f"location {location} {{\n    return 404 '{body}';\n}}\n")
    no_default = f"the default model {default} has no live version" if models else NO_MODEL_ERROR
    lines.append(f"location / {{\n{_proxy('$model_default', no_default)}}}\n")
    return "".join(lines)


def index_json(models: list[GatewayModel], *, default: str | None, labeling: bool = False) -> str:
    """``/index.json``: the index page's entries (models whose live color did not say what it
    serves are left out of both)."""
    known = [entry.metadata for entry in models if entry.metadata is not None]
    entries = index_entries(known, default=default, labeling=labeling)
    return json.dumps({"default": default, "models": entries}, indent=2) + "\n"


def index_html(models: list[GatewayModel], *, default: str | None, labeling: bool = False) -> str:
    known = [entry.metadata for entry in models if entry.metadata is not None]
    return render_index(known, default=default, labeling=labeling)

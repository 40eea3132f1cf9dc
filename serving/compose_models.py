"""The compose services of the served models, written from the appliance's state into a second
compose file ($ONEBOX_HOME/compose/models.yml) before each docker compose command.

Each model has two services, ``model-NAME-blue`` and ``model-NAME-green``, each in a profile of
its own name, so `up` starts the live colors and a deploy starts one idle color without touching
any other container. Each color has the fixed address of its model's slot on the appliance's
network (serving/appliance_network.py), where the gateway keeps connections open to it. The file
is JSON, which YAML (and so compose) reads as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.appliance_state import COLORS, ApplianceState, Color, ServedModel
from serving.metadata import WORKERS_VARIABLE
from storage.limits import InputLimits
from storage.settings import env_name

MODELS_COMPOSE_FILE = "models.yml"
MODEL_LABEL = "org.onebox.model"  # which model a container serves (benchmarks count by it)
# Ready means the model is loaded: /readyz answers only after the service's __init__ ran.
READY_TEST = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=2)"


def models_compose_path(compose_dir: Path) -> Path:
    return compose_dir / MODELS_COMPOSE_FILE


def model_service_definition(model: ServedModel, color: Color, address: str) -> dict[str, Any]:
    # One worker: one process, without BentoML's supervisor (serving/single_process.py).
    single = {"command": ["python3", "-m", "serving.single_process"]} if model.workers == 1 else {}
    return {
        "image": model.image(color),
        **single,
        "restart": "unless-stopped",
        "profiles": [model.service(color)],
        "environment": {
            # (ONNX Runtime takes one thread per worker by default: serving/predictor.py.)
            WORKERS_VARIABLE: str(model.workers),
            # The container holds one model: its unprefixed routes answer for it.
            env_name("default_model"): model.name,
            # The input limits (storage/limits.py), from the settings compose is run with.
            **{name: f"${{{name}:-{default}}}" for name, default in InputLimits().environment().items()},
        },
        "labels": {MODEL_LABEL: model.name},
        "healthcheck": {
            "test": ["CMD", "python3", "-c", READY_TEST],
            "interval": "1s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "60s",
        },
        "networks": {"default": {"ipv4_address": address}},
    }


def models_compose(state: ApplianceState) -> dict[str, Any]:
    """The compose file of every model color that has an image (no network recorded: none)."""
    services: dict[str, Any] = {}
    if state.network is not None:
        for model in state.models:
            addresses = state.network.addresses(model.slot)
            for color, address in zip(COLORS, addresses, strict=True):
                if model.image(color):
                    services[model.service(color)] = model_service_definition(model, color, str(address))
    return {"services": services}


def write_models_compose(compose_dir: Path, state: ApplianceState) -> Path | None:
    """Write the models' compose file (atomically) and return its path; None when no model has a
    service (docker-compose 1.x reads a file of no services as an old format and refuses it)."""
    path = models_compose_path(compose_dir)
    if not models_compose(state)["services"]:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".new")
    staging.write_text(json.dumps(models_compose(state), indent=2) + "\n")
    staging.replace(path)
    return path

"""The compose services of the served models, written from the appliance's state into a second
compose file ($ONEBOX_HOME/compose/models.yml) before each docker compose command.

Each model has two services, ``model-NAME-blue`` and ``model-NAME-green``, each in a profile of
its own name, so `up` starts the live colors and a deploy starts one idle color without touching
any other container. Each color has the fixed address of its model's slot on the appliance's
network (serving/appliance_network.py), and listens on a Unix socket of its own in the volume it
shares with the gateway, where the gateway keeps connections open to it. The file is JSON, which
YAML (and so compose) reads as it is.

Each color writes its model's prediction log (serving/prediction_log.py) into the host's
``$ONEBOX_HOME/predictions/NAME``, mounted at the same place below :data:`CONTAINER_LOG_DIR`, so
the flows read it where they read it from a local server. The folder belongs to the home's owner
and the colors run as that user; a home owned by root gets the image's own non-root user instead,
and the folder is handed to it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import COLORS, ApplianceState, Color, ServedModel
from serving.gateway_config import SOCKETS_DIR, socket_path
from serving.log_settings import LOG_DIR_VARIABLE, log_environment
from serving.metadata import WORKERS_VARIABLE
from serving.model_server import SOCKET_VARIABLE
from storage.limits import InputLimits
from storage.prediction_log import model_log_dir
from storage.settings import Settings, env_name

MODELS_COMPOSE_FILE = "models.yml"
MODEL_LABEL = "org.onebox.model"  # which model a container serves (benchmarks count by it)
# Ready means the model is loaded: /readyz answers only after the service's __init__ ran.
READY_TEST = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=2)"
CONTAINER_LOG_DIR = "/predictions"  # a color's view of the log: its model's host folder is mounted below it
MODEL_IMAGE_UID = 10001  # the user compose/runtime/Dockerfile creates (its group has the same id)
SOCKETS_VOLUME = "model-sockets"  # docker-compose.yml's, shared with the gateway


def models_compose_path(compose_dir: Path) -> Path:
    return compose_dir / MODELS_COMPOSE_FILE


def prepare_log_folders(settings: Settings, state: ApplianceState) -> None:
    """Create each served model's prediction log folder on the host, writable by its colors' user."""
    for model in state.models:
        folder = model_log_dir(settings.predictions_dir, model.name)
        folder.mkdir(parents=True, exist_ok=True)
        if log_user(settings) is None and os.geteuid() == 0 and folder.stat().st_uid != MODEL_IMAGE_UID:
            os.chown(folder, MODEL_IMAGE_UID, MODEL_IMAGE_UID)


def log_user(settings: Settings) -> str | None:
    """The user the colors run as, ``UID:GID``: the owner of the home's log folder; None (the
    image's own user) when that is root or the folder does not exist yet."""
    try:
        owner = settings.predictions_dir.stat()
    except FileNotFoundError:
        return None
    return None if owner.st_uid == 0 else f"{owner.st_uid}:{owner.st_gid}"


def _log_volumes(settings: Settings | None, model: ServedModel) -> list[str]:
    if settings is None:
        return []
    return [f"{model_log_dir(settings.predictions_dir, model.name)}:{CONTAINER_LOG_DIR}/{model.name}"]


def model_service_definition(
    model: ServedModel, color: Color, network: ApplianceNetwork, *, settings: Settings | None = None
) -> dict[str, Any]:
    """One color's service; with ``settings``, it writes the prediction log into the host's home."""
    logged = {**log_environment(settings.environment()), LOG_DIR_VARIABLE: CONTAINER_LOG_DIR} if settings else {}
    user = log_user(settings) if settings else None
    address = network.addresses(model.slot)[COLORS.index(color)]
    return {
        "image": model.image(color),
        # The service's app under uvicorn, its workers under a small parent (serving/model_server.py).
        "command": ["python3", "-m", "serving.model_server"],
        **({"user": user} if user else {}),
        "volumes": [f"{SOCKETS_VOLUME}:{SOCKETS_DIR}", *_log_volumes(settings, model)],
        # As docker-compose.yml's services (its x-hardened, which a second compose file cannot
        # reference: tests/serving/test_compose_gateway.py holds the two alike), with its own
        # bounds on processes and memory.
        "restart": "unless-stopped",
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "pids_limit": 1024,
        "mem_limit": f"${{{env_name('model_memory_mb')}:-{Settings.model_fields['model_memory_mb'].default}}}m",
        "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
        "profiles": [model.service(color)],
        "environment": {
            # (ONNX Runtime takes one thread per worker by default: serving/predictor.py.)
            WORKERS_VARIABLE: str(model.workers),
            # The container holds one model: its unprefixed routes answer for it.
            env_name("default_model"): model.name,
            SOCKET_VARIABLE: socket_path(model.slot, color, network),
            # The input limits (storage/limits.py), from the settings compose is run with.
            **{name: f"${{{name}:-{default}}}" for name, default in InputLimits().environment().items()},
            **logged,
        },
        "labels": {MODEL_LABEL: model.name},
        "healthcheck": {
            "test": ["CMD", "python3", "-c", READY_TEST],
            "interval": "1s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "60s",
        },
        "networks": {"default": {"ipv4_address": str(address)}},
    }


def models_compose(state: ApplianceState, settings: Settings | None = None) -> dict[str, Any]:
    """The compose file of every model color that has an image (no network recorded: none);
    with ``settings``, each color writes its prediction log into the host's home."""
    services: dict[str, Any] = {}
    if state.network is not None:
        for model in state.models:
            for color in COLORS:
                if model.image(color):
                    services[model.service(color)] = model_service_definition(
                        model, color, state.network, settings=settings
                    )
    return {"services": services}


def write_models_compose(compose_dir: Path, state: ApplianceState, settings: Settings | None = None) -> Path | None:
    """Write the models' compose file (atomically) and return its path; None when no model has a
    service (docker-compose 1.x reads a file of no services as an old format and refuses it)."""
    path = models_compose_path(compose_dir)
    compose = models_compose(state, settings)
    if not compose["services"]:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".new")
    staging.write_text(json.dumps(compose, indent=2) + "\n")
    staging.replace(path)
    return path

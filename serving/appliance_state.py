"""The appliance's state: every served model (which image each of its colors runs, which color is
live, its address slot and worker count, in the order first served), whether the worker runs, and
the network's subnet and addresses.

Kept in $ONEBOX_HOME/compose/: state.env (the network and the worker, an env file docker compose
reads too) and models.json beside it (the models), so the appliance comes back as it was after a
restart. A state.env of the single-model onebox (ONEBOX_MODEL_BLUE_IMAGE, ..._GREEN_IMAGE,
ONEBOX_LIVE_COLOR) is read as one model named after its images' tag, and rewritten in the new
form on the next write. This module is the only one that reads or writes these files.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

from serving.appliance_network import ApplianceNetwork
from storage.errors import ServingError
from storage.locks import exclusive_lock, lock_if_free
from storage.settings import Settings, env_name

Color = Literal["blue", "green"]
COLORS: tuple[Color, ...] = ("blue", "green")
STATE_FILE = "state.env"
MODELS_FILE = "models.json"

# state.env's variables, also the names docker-compose.yml interpolates.
WORKER_KEY = "ONEBOX_WORKER"  # "on" once `onebox up --worker` asked for it
SUBNET_KEY = env_name("subnet")  # the setting's own name: compose reads the recorded subnet under it
DYNAMIC_RANGE_KEY = "ONEBOX_SUBNET_DYNAMIC_RANGE"
STATE_KEYS = (WORKER_KEY, SUBNET_KEY, DYNAMIC_RANGE_KEY)
# What the single-model onebox kept in state.env: read once, to migrate.
OLD_LIVE_COLOR_KEY = "ONEBOX_LIVE_COLOR"
OLD_IMAGE_KEYS: dict[Color, str] = {"blue": "ONEBOX_MODEL_BLUE_IMAGE", "green": "ONEBOX_MODEL_GREEN_IMAGE"}
MODEL_IMAGE_REPOSITORY = "onebox/model"


def other_color(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


def _color(value: str) -> Color | None:
    return "blue" if value == "blue" else "green" if value == "green" else None


def image_version(image: str) -> str:
    """The model version in a model image's tag (onebox/model:NAME-vVERSION)."""
    return image.rsplit("-v", 1)[-1]


@dataclass(frozen=True)
class ServedModel:
    """One model's blue/green pair. ``slot`` picks its fixed addresses on the network
    (:meth:`ApplianceNetwork.addresses`) and never changes while the model is served."""

    name: str
    slot: int
    live_color: Color | None = None  # None: being deployed for the first time
    blue_image: str = ""
    green_image: str = ""
    workers: int = 1

    def image(self, color: Color) -> str:
        """The model image ``color`` runs (onebox/model:NAME-vVERSION), or ""."""
        return self.blue_image if color == "blue" else self.green_image

    def with_image(self, color: Color, image: str) -> ServedModel:
        return replace(self, blue_image=image) if color == "blue" else replace(self, green_image=image)

    def service(self, color: Color) -> str:
        """The compose service that runs ``color`` of this model."""
        return f"model-{self.name}-{color}"


@dataclass(frozen=True)
class ApplianceState:
    models: tuple[ServedModel, ...] = ()  # in the order first served
    worker: bool = False
    network: ApplianceNetwork | None = None  # None: recorded by no `up` yet

    def model(self, name: str) -> ServedModel | None:
        return next((model for model in self.models if model.name == name), None)

    def known(self, name: str) -> ServedModel:
        """The model ``name``; raises ServingError naming the served ones when it is not one."""
        model = self.model(name)
        if model is None:
            served = ", ".join(m.name for m in self.models) or "none"
            raise ServingError(f"model {name!r} is not served by the appliance; served models: {served}")
        return model

    def live_models(self) -> tuple[ServedModel, ...]:
        return tuple(model for model in self.models if model.live_color is not None)

    def with_model(self, model: ServedModel) -> ApplianceState:
        """The state with ``model`` replacing the one of its name, or added last."""
        if self.model(model.name) is None:
            return replace(self, models=(*self.models, model))
        return replace(self, models=tuple(model if m.name == model.name else m for m in self.models))

    def without_model(self, name: str) -> ApplianceState:
        return replace(self, models=tuple(m for m in self.models if m.name != name))

    def free_slot(self) -> int:
        """The lowest address slot no model holds."""
        taken = {model.slot for model in self.models}
        return next(slot for slot in range(len(taken) + 1) if slot not in taken)

    def variables(self) -> dict[str, str]:
        """state.env's variables (docker compose reads the same names)."""
        network = self.network
        return {
            WORKER_KEY: "on" if self.worker else "off",
            SUBNET_KEY: str(network.subnet) if network else "",
            DYNAMIC_RANGE_KEY: str(network.dynamic_range) if network else "",
        }

    @classmethod
    def from_files(cls, variables: Mapping[str, str | None], models: list[dict[str, Any]] | None) -> ApplianceState:
        """The state from state.env's variables and models.json's list (None: no models.json yet,
        so the models are what a single-model state.env recorded)."""

        def value(key: str) -> str:
            return (variables.get(key) or "").strip()

        served = tuple(_served_model(raw) for raw in models) if models is not None else _old_model(value)
        return cls(models=served, worker=value(WORKER_KEY) == "on", network=_network(value))


def _served_model(raw: dict[str, Any]) -> ServedModel:
    return ServedModel(
        name=str(raw["name"]),
        slot=int(raw["slot"]),
        live_color=_color(str(raw.get("live_color") or "")),
        blue_image=str(raw.get("blue_image") or ""),
        green_image=str(raw.get("green_image") or ""),
        workers=int(raw.get("workers") or 1),
    )


def _old_model(value: Callable[[str], str]) -> tuple[ServedModel, ...]:
    """The one model of a single-model state.env, named after its live image's tag
    (onebox/model:onebox-classifier-v3 is model onebox-classifier), in address slot 0: the
    addresses its colors had."""
    live = _color(value(OLD_LIVE_COLOR_KEY))
    if live is None or not value(OLD_IMAGE_KEYS[live]).startswith(f"{MODEL_IMAGE_REPOSITORY}:"):
        return ()
    name = value(OLD_IMAGE_KEYS[live]).split(":", 1)[1].rsplit("-v", 1)[0]
    images = {color: value(key) for color, key in OLD_IMAGE_KEYS.items()}
    # Its worker count is the default model's: it was the only model.
    workers = int(value(env_name("serve_workers")) or Settings.model_fields["serve_workers"].default)
    return (ServedModel(name, 0, live, images["blue"], images["green"], workers),)


def _network(value: Callable[[str], str]) -> ApplianceNetwork | None:
    if not value(SUBNET_KEY):
        return None  # a home from before the appliance's network had a fixed subnet
    derived = ApplianceNetwork.for_subnet(ipaddress.IPv4Network(value(SUBNET_KEY)))
    if not value(DYNAMIC_RANGE_KEY):
        return derived
    return replace(derived, dynamic_range=ipaddress.IPv4Network(value(DYNAMIC_RANGE_KEY)))


def state_path(settings: Settings) -> Path:
    return settings.compose_dir / STATE_FILE


def models_path(state_file: Path) -> Path:
    return state_file.with_name(MODELS_FILE)


def read_state(path: Path) -> ApplianceState:
    """The state recorded at ``path`` (state.env) and beside it; nothing deployed when there is none."""
    variables = dotenv_values(path) if path.is_file() else {}
    models = models_path(path)
    listed = json.loads(models.read_text())["models"] if models.is_file() else None
    return ApplianceState.from_files(variables, listed)


@contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Held while a deploy, a stop or an `up` changes the state at ``path``: another process waits."""
    with exclusive_lock(path.parent / ".lock", waiting="the appliance's state"):
        yield


@contextmanager
def state_lock_if_free(path: Path) -> Iterator[bool]:
    """:func:`state_lock` when no one holds it (True); False, at once, while someone does."""
    with lock_if_free(path.parent / ".lock") as held:
        yield held


def _write_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """A crash leaves the old file or the new one, never half of one. ``mode`` from the start:
    a secret is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A staging file of its own (two writers at once do not share one), created 0600.
    descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def write_env_file(path: Path, variables: Mapping[str, str], *, private: bool = False) -> None:
    """Write ``variables`` as an env file, atomically; ``private``: readable by its owner only
    (it holds the credentials)."""
    text = "".join(f"{key}={value}\n" for key, value in sorted(variables.items()))
    _write_atomically(path, text, mode=0o600 if private else 0o644)


def write_state(path: Path, state: ApplianceState) -> None:
    """models.json first: a crash between the two leaves the models recorded in the new form."""
    models = [asdict(model) for model in state.models]
    _write_atomically(models_path(path), json.dumps({"models": models}, indent=2) + "\n")
    write_env_file(path, state.variables())

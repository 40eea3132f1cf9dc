"""What runs models, behind one interface: flows call :func:`runtime_for` and never know which
runtime they drive (a local process, or the docker compose appliance)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.settings import Settings, env_name, get_settings


@dataclass(frozen=True)
class ServerState:
    """What a runtime serves for one model: its version, where from (a bundle or an image), and where."""

    pid: int  # 0 in the appliance: the model runs in a container
    model_name: str
    model_version: str
    bundle: str
    url: str  # the model's own base URL: {serve_url}/models/{model_name}
    started: str


class Runtime(Protocol):
    """Serves every named model at once, each swapped on its own.

    URL layout, the same in every runtime: ``/`` an index page of the served models,
    ``/models/NAME/`` a model's Swagger page, ``/models/NAME/predict``, ``/predict_batch``,
    ``/metadata``, ``/docs.json``; ``/predict`` (and ``/predict_batch``, ``/metadata``,
    ``/docs.json``) answer for the default model (:func:`default_model`).
    """

    def served(self) -> list[ServerState]:
        """Every model serving now, in the order each was first served."""
        ...

    def current(self, model_name: str) -> ServerState | None:
        """What serves ``model_name`` now; None when it is not served."""
        ...

    def deploy(self, bundle: Path) -> ServerState:
        """Serve ``bundle`` as the model its metadata names, beside the other models, replacing
        that model's served version; on failure that model's old version keeps (or goes back to)
        serving and no other model is touched. Raises ServingError."""
        ...

    def retire_previous(self, model_name: str) -> None:
        """After a deploy of ``model_name``: stop what served it before, once its requests are done."""
        ...

    def stop(self, model_name: str | None = None) -> list[ServerState]:
        """Stop serving ``model_name`` (retire it), or every model; returns what served."""
        ...

    def logs(self, *, model_name: str | None = None, lines: int = 100) -> str:
        """The last ``lines`` lines of the model server's log (``model_name``: the default model)."""
        ...


def default_model(settings: Settings, served: list[ServerState]) -> str | None:
    """The model ``/predict`` answers for: ``ONEBOX_DEFAULT_MODEL`` when it is served, else the
    first model served; None when nothing serves."""
    names = [state.model_name for state in served]
    if settings.default_model in names:
        return settings.default_model
    return names[0] if names else None


def resolve_runtime(settings: Settings) -> Settings:
    """Settings with ``runtime`` auto resolved: compose when the appliance is up, else local.

    The answer goes into the environment too, so the flow's own settings agree.
    """
    from serving.compose import ComposeRuntime

    if settings.runtime != "auto":
        return settings
    os.environ[env_name("runtime")] = "compose" if ComposeRuntime(settings).is_up() else "local"
    get_settings.cache_clear()
    return settings.model_copy(update={"runtime": os.environ[env_name("runtime")]})


def runtime_for(settings: Settings) -> Runtime:
    """The runtime named by ``settings.runtime``."""
    from serving.compose import ComposeRuntime
    from serving.local import LocalRuntime

    settings = resolve_runtime(settings)
    return ComposeRuntime(settings) if settings.runtime == "compose" else LocalRuntime(settings)

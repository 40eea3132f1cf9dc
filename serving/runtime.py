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
    """What a runtime serves: the model version, where from (a bundle or an image), and where."""

    pid: int  # 0 in the appliance: the model runs in a container
    model_name: str
    model_version: str
    bundle: str
    url: str
    started: str


class Runtime(Protocol):
    def current(self) -> ServerState | None:
        """What serves now; None when nothing does."""
        ...

    def deploy(self, bundle: Path) -> ServerState:
        """Serve ``bundle`` instead of whatever serves now; on failure the old model keeps (or
        goes back to) serving. Raises ServingError."""
        ...

    def retire_previous(self) -> None:
        """After a deploy: stop what served before, once its requests are done."""
        ...

    def stop(self) -> ServerState | None:
        """Stop serving; returns what served."""
        ...

    def logs(self, *, lines: int = 100) -> str:
        """The last ``lines`` lines of the model server's log."""
        ...


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

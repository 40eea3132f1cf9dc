"""Choosing the runtime that runs models: flows call this and never know which one they drive."""

from __future__ import annotations

import os

from serving.compose import ComposeRuntime
from serving.local import LocalRuntime
from storage.settings import Settings, get_settings

Runtime = LocalRuntime | ComposeRuntime


def resolve_runtime(settings: Settings) -> Settings:
    """Settings with ``runtime`` auto resolved: compose when the appliance is up, else local.

    The answer goes into the environment too, so the flow's own settings agree.
    """
    if settings.runtime != "auto":
        return settings
    os.environ["ONEBOX_RUNTIME"] = "compose" if ComposeRuntime(settings).is_up() else "local"
    get_settings.cache_clear()
    return settings.model_copy(update={"runtime": os.environ["ONEBOX_RUNTIME"]})


def runtime_for(settings: Settings) -> Runtime:
    """The runtime named by ``settings.runtime``."""
    settings = resolve_runtime(settings)
    return ComposeRuntime(settings) if settings.runtime == "compose" else LocalRuntime(settings)

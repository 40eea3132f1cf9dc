"""Choosing the runtime that runs models: flows call this and never know which one they drive."""

from __future__ import annotations

from serving.local import LocalRuntime
from storage.settings import Settings


def runtime_for(settings: Settings) -> LocalRuntime:
    """The runtime named by ``settings.runtime`` (today: the local process runtime)."""
    return LocalRuntime(settings)

"""What every ``onebox`` command shares: the consoles, the one-line failure, the settings."""

from __future__ import annotations

import typer
from rich.console import Console

from flows.environment import prepare_environment
from storage.settings import Settings, get_settings

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def settings() -> Settings:
    """The settings with the runtime resolved and the process environment prepared for Prefect."""
    from serving.runtime import resolve_runtime

    resolved = resolve_runtime(get_settings())
    prepare_environment(resolved)
    return resolved


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the exit to raise."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)

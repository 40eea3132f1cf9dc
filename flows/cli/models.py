"""``onebox serve``, ``stop``, ``status`` and ``rollback``: the model that serves."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from flows.cli.shared import console, errors, settings

app = typer.Typer()


@app.command()
def serve() -> None:
    """(Re)start serving the production model."""
    from flows.promote import ensure_production_served

    state = ensure_production_served(settings(), restart=True)
    console.print(f"model {state.model_name} v{state.model_version} serves at {state.url}/")


@app.command()
def rollback() -> None:
    """Serve the previous production version again and point `production` back at it."""
    from flows.promote import rollback as roll_back

    version, url = roll_back(settings())
    console.print(f"production is v{version} again, serving at {url}/")


@app.command()
def stop() -> None:
    """Stop the local model server and the local Prefect server."""
    from flows.prefect_server import LocalPrefectServer
    from serving.runtime import runtime_for

    current = settings()
    state = runtime_for(current).stop()
    console.print(f"stopped model v{state.model_version} (pid {state.pid})" if state else "no model server was running")
    if prefect := LocalPrefectServer(current).stop():
        console.print(f"stopped the local Prefect server (pid {prefect.pid}); onebox train starts it again")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What is serving, which version, since when; what production is; with the appliance, its workers."""
    from serving.health import probe
    from serving.runtime import runtime_for
    from storage.registry import PRODUCTION, peek_alias

    current = settings()
    state = runtime_for(current).current()
    production = peek_alias(current, PRODUCTION)
    report: dict[str, Any] = {
        "serving": state is not None,
        "healthy": probe(state.url) if state else False,
        "model_name": current.model_name,
        "served_version": state.model_version if state else None,
        "production_version": production.version if production else None,
        "url": state.url if state else None,
        "pid": state.pid if state and state.pid else None,  # the appliance has containers, not a pid
        "since": state.started if state else None,
        "runtime": current.runtime,
        "home": str(current.home),
    }
    if current.runtime == "local":
        from flows.prefect_server import LocalPrefectServer

        prefect = LocalPrefectServer(current).current()
        report["prefect_ui"] = prefect.url if prefect else None  # started by onebox train or demo
    if current.runtime == "compose":
        import httpx

        from flows.remote import online_workers

        # Who runs the flows started in the Prefect UI (none: they wait in the pool's queue).
        try:
            report["workers"] = online_workers()
        except httpx.HTTPError as error:
            report["workers"] = None
            errors.print(f"the appliance's Prefect server did not answer ({error}); workers unknown")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        if key == "workers":
            value = ", ".join(value) if value else "none online (start one: onebox worker)"
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)

"""``onebox models``, ``serve``, ``rollback``, ``retire``, ``stop`` and ``status``: the models that serve.

Every model is named; a command about one model takes ``--model NAME`` (optional where only one
model exists). These commands read the registry without importing MLflow where the store allows
it (:mod:`storage.mlflow_peek`), so they answer at once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flows.cli.shared import console, errors, settings

if TYPE_CHECKING:
    from serving.runtime import ServerState
    from storage.mlflow_peek import PeekedModel
    from storage.settings import Settings

app = typer.Typer()

MODEL_OPTION = typer.Option("--model", "-m", help="Model name (see `onebox models`); optional when only one exists.")


def model_rows(current: Settings, models: list[PeekedModel], served: list[ServerState]) -> list[dict[str, Any]]:
    """One row per registered model: name, production version, dataset, test accuracy, URL, state."""
    from storage.registry import PRODUCTION, RETIRED_TAG

    serving = {state.model_name: state for state in served}
    rows = []
    for model in models:
        state = serving.get(model.name)
        accuracy = model.production_tags.get("test_accuracy")
        retired = model.tags.get(RETIRED_TAG) == "true"
        rows.append(
            {
                "name": model.name,
                "production_version": model.aliases.get(PRODUCTION),
                "served_version": state.model_version if state else None,
                "dataset": model.production_tags.get("dataset"),
                "test_accuracy": float(accuracy) if accuracy else None,
                "url": state.url if state else f"{current.serve_url}/models/{model.name}",
                "state": "serving" if state else "retired" if retired else "not served",
            }
        )
    return rows


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every model: its production version, dataset, test accuracy, URL and whether it serves."""
    from serving.runtime import runtime_for
    from storage.registry import registered_models

    current = settings()
    registered = registered_models(current)  # first: a store that does not answer is the error to show
    rows = model_rows(current, registered, runtime_for(current).served())
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no model yet; train one with: onebox train --model NAME")
        return
    table = Table("model", "production", "dataset", "test accuracy", box=None)
    table.add_column("url", overflow="fold")  # whole, to copy: folded rather than cut short
    table.add_column("state")
    for row in rows:
        accuracy = row["test_accuracy"]
        version = row["production_version"]
        table.add_row(
            row["name"],
            f"v{version}" if version else "-",
            row["dataset"] or "-",
            f"{accuracy:.4f}" if accuracy is not None else "-",
            row["url"],
            row["state"],
        )
    console.print(table)


@app.command()
def serve(model: Annotated[str | None, MODEL_OPTION] = None) -> None:
    """(Re)start serving every model's production version (not retired ones), or one model (brought back if retired)."""
    from flows.promote import ensure_production_served, serve_model
    from storage.errors import ModelError
    from storage.registry import resolve_model

    current = settings()
    if model is not None:
        states = [serve_model(current, resolve_model(current, model), restart=True)]
    else:
        states = ensure_production_served(current, restart=True)
        if not states:
            raise ModelError("no model to serve: none has a production version, or all are retired; see: onebox models")
    for state in states:
        console.print(f"model {state.model_name} v{state.model_version} serves at {state.url}/")


@app.command()
def rollback(
    model: Annotated[str | None, MODEL_OPTION] = None,
    to: Annotated[str | None, typer.Option("--to", help="Any registered version (default: the previous one).")] = None,
) -> None:
    """Serve an earlier version of one model again and point its `production` at it; other models stay."""
    from flows.promote import rollback as roll_back
    from storage.registry import resolve_model

    current = settings()
    name = resolve_model(current, model)
    version, url = roll_back(current, name, to=to)
    console.print(f"{name}: production is v{version} again, serving at {url}/")


@app.command()
def retire(name: Annotated[str, typer.Argument(help="The model to stop serving.")]) -> None:
    """Stop serving one model; the registry keeps every version (`onebox serve --model NAME` brings it back)."""
    from flows.promote import retire as retire_model
    from storage.registry import resolve_model

    current = settings()
    stopped = retire_model(current, resolve_model(current, name))
    served = ", ".join(f"v{state.model_version}" for state in stopped)
    console.print(f"retired {name}" + (f" (stopped {served})" if served else " (it was not serving)"))


@app.command()
def stop() -> None:
    """Stop every local model server and the local Prefect server."""
    from flows.prefect_server import LocalPrefectServer
    from serving.runtime import runtime_for

    current = settings()
    stopped = runtime_for(current).stop()
    for state in stopped:
        console.print(
            f"stopped model {state.model_name} v{state.model_version}" + (f" (pid {state.pid})" * bool(state.pid))
        )
    if not stopped:
        console.print("no model server was running")
    if prefect := LocalPrefectServer(current).stop():
        console.print(f"stopped the local Prefect server (pid {prefect.pid}); onebox train starts it again")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each model: what serves, which version, since when, what production is; the runtime; the workers."""
    from serving.health import probe
    from serving.runtime import default_model, runtime_for
    from storage.registry import registered_models

    current = settings()
    registered = registered_models(current)  # first: a store that does not answer is the error to show
    served = runtime_for(current).served()
    by_name = {state.model_name: state for state in served}
    models = []
    for row in model_rows(current, registered, served):
        state = by_name.get(row["name"])
        models.append(
            {
                **row,
                "healthy": probe(state.url) if state else False,
                "pid": state.pid if state and state.pid else None,  # the appliance has containers, not a pid
                "since": state.started if state else None,
            }
        )
    report: dict[str, Any] = {
        "serving": bool(served),
        "default_model": default_model(current, served),
        "models": models,
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
        if key == "models":
            value = "none yet (onebox train --model NAME)" if not value else ""
        elif key == "workers":
            value = ", ".join(value) if value else "none online (start one: onebox worker)"
        table.add_row(key, "-" if value is None else str(value))
        for model in report["models"] if key == "models" else []:
            version = f"v{model['served_version']}" if model["served_version"] else "-"
            line = f"{model['state']} {version} (production v{model['production_version'] or '-'}) {model['url']}"
            health = "" if model["state"] != "serving" else " healthy" if model["healthy"] else " NOT HEALTHY"
            table.add_row(f"  {model['name']}", line + health + (f" since {model['since']}" * bool(model["since"])))
    console.print(table)

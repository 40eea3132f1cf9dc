"""``onebox label``: the labeling page on this machine (the appliance runs it as its labeling service)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.shared import console, settings

app = typer.Typer()

HOST = "127.0.0.1"  # loopback only: the page changes data (it asks for the login once ONEBOX_PASSWORD is set)


@app.command("label")
def label(
    model: Annotated[
        str | None, typer.Option("--model", help="The model whose inbox to label; default: the only one.")
    ] = None,
) -> None:
    """Serve the labeling page on 127.0.0.1 (ONEBOX_LABEL_PORT, 3100) until Ctrl+C."""
    from flows.labeling_server import serve_labeling
    from serving.processes import port_in_use
    from storage.errors import ServingError
    from storage.inbox_merge import labeling_target
    from storage.registry import resolve_model

    current = settings()
    name = resolve_model(current, model)
    labeling_target(current, name)  # a model with nothing to label for fails here, in one line
    if port_in_use(HOST, current.label_port):
        raise ServingError(
            f"port {current.label_port} on {HOST} is used by another program (the appliance's labeling "
            "service?); stop it or set ONEBOX_LABEL_PORT to a free port"
        )
    console.print(f"Labeling page of model {name}: http://{HOST}:{current.label_port}/label/{name}/  (Ctrl+C stops it)")
    serve_labeling(current, host=HOST)

"""``onebox up``, ``down``, ``register``, ``worker`` and ``logs``: the appliance's stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.shared import console, fail, settings
from flows.environment import prepare_environment
from storage.settings import Settings, get_settings

app = typer.Typer()


def appliance_settings(*, wait_s: float = 0) -> Settings:
    """Settings for commands that need the appliance's Prefect server; fails clearly when it is down.

    ``wait_s``: how long a server that does not answer yet may take (a stack still starting).
    """
    import os

    from serving.health import wait_until_ready
    from serving.waiting import WaitTimeout

    os.environ["ONEBOX_RUNTIME"] = "compose"
    get_settings.cache_clear()
    current = get_settings()
    prepare_environment(current)
    api = os.environ["PREFECT_API_URL"]
    try:
        wait_until_ready(api, timeout_s=wait_s, health_path="/health", server="the appliance's Prefect server")
    except WaitTimeout:
        raise fail(f"the appliance's Prefect server does not answer at {api}; start the appliance: make up") from None
    return current


@app.command()
def up(
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Also run a Prefect worker in a container (compose profile `worker`); remembered.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build the appliance's images (offline) and start it: MLflow, Prefect, gateway, live model."""
    from flows.deployments import register_all
    from flows.promote import ensure_production_served
    from serving.compose import ComposeRuntime

    current = get_settings().model_copy(update={"runtime": "compose"})
    if worker:
        console.print("building the worker image (torch included: the first build takes minutes)")
    runtime = ComposeRuntime(current)
    state = runtime.up(worker=worker)
    registered = register_all(appliance_settings())
    # Every model with a production version serves again at it (retired ones stay retired).
    served = ensure_production_served(get_settings(), runtime=runtime)
    console.print(f"appliance up (project {current.compose_project}):")
    models = ", ".join(f"{s.model_name} v{s.model_version}" for s in served) or "no model yet: onebox train"
    console.print(f"  gateway:  {current.serve_url}/   ({models})")
    console.print(f"  MLflow:   http://127.0.0.1:{current.mlflow_port}/")
    deployments = ", ".join(r.name for r in registered)
    console.print(f"  Prefect:  http://127.0.0.1:{current.prefect_port}/   (deployments: {deployments})")
    if state.worker:
        console.print("  worker:   container onebox-container polls pool 'onebox' (onebox logs worker)")
    else:
        console.print(
            "  run flows from the Prefect UI once a worker polls pool 'onebox': onebox worker (or make worker)"
        )


@app.command()
def down(volumes: Annotated[bool, typer.Option("--volumes", help="Also delete the data volumes.")] = False) -> None:
    """Stop the appliance; its data volumes stay unless --volumes."""
    from serving.compose import ComposeRuntime

    ComposeRuntime(get_settings().model_copy(update={"runtime": "compose"})).down(volumes=volumes)
    console.print(
        "appliance down" + (" and its volumes deleted" if volumes else "; `make up` brings it back as it was")
    )


@app.command()
def register() -> None:
    """Register every flow as a deployment of the appliance's Prefect server (make up does it too)."""
    from flows.deployments import WORK_POOL, register_all

    for deployment in register_all(appliance_settings()):
        console.print(f"registered {deployment.name} (work pool {WORK_POOL})")


@app.command()
def worker(
    name: Annotated[str | None, typer.Option(help="Worker name (default: onebox-HOSTNAME).")] = None,
    poll_seconds: Annotated[int, typer.Option(min=1, max=300, help="How often to ask for new runs.")] = 5,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the appliance's Prefect server to answer.")
    ] = 180,
) -> None:
    """Run a Prefect worker here, on the host with the GPU: it executes runs started in the Prefect UI."""
    import os
    import platform
    import sys

    from flows.deployments import WORK_POOL, register_all

    current = appliance_settings(wait_s=wait)
    register_all(current)  # the forms the UI shows match this checkout's code
    environment = {
        **os.environ,
        # The flow runs inherit this environment: the appliance's stores, compose deploys.
        "ONEBOX_RUNTIME": "compose",
        "PREFECT_WORKER_QUERY_SECONDS": os.environ.get("PREFECT_WORKER_QUERY_SECONDS", str(poll_seconds)),
    }
    worker_name = name or f"onebox-{platform.node()}"
    console.print(f"worker {worker_name} polls work pool {WORK_POOL!r} at {os.environ['PREFECT_API_URL']}")
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", worker_name]
    os.execve(prefect, command, environment)


@app.command()
def logs(
    service: Annotated[
        str, typer.Argument(help="model, or in the appliance: mlflow, prefect, gateway, worker.")
    ] = "model",
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many lines.")] = 100,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Which model's server (default: the default model).")
    ] = None,
) -> None:
    """Recent logs of the model server (or of an appliance service)."""
    from serving.compose import ComposeRuntime
    from serving.runtime import runtime_for
    from storage.registry import resolve_model

    current = settings()
    runtime = runtime_for(current)
    name = resolve_model(current, model) if model is not None else None
    if isinstance(runtime, ComposeRuntime):
        print(runtime.logs(model_name=name, lines=lines, service=service))
    elif service != "model":
        raise fail(f"{service!r} runs only in the appliance (make up); the local runtime has only the model")
    else:
        print(runtime.logs(model_name=name, lines=lines))

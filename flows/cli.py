"""The ``onebox`` command: train, serve, inspect and manage datasets from a terminal.

Heavy libraries (torch, Prefect, MLflow) are imported inside the commands that need them, after
the process environment is prepared, so ``onebox --help`` and ``onebox status`` stay quick.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from flows.environment import prepare_environment
from storage.errors import OneboxError
from storage.settings import Settings, get_settings

app = typer.Typer(
    help="onebox: train, track, serve and swap models on one server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Import and list datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    from serving.runtime import resolve_runtime

    settings = resolve_runtime(get_settings())
    prepare_environment(settings)
    return settings


def _fail(message: str, code: int = 1) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@data_app.command("import")
def data_import(
    path: Annotated[Path, typer.Argument(help="Folder with one sub-folder of PNG/JPEG images per class.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name, e.g. 'parts'.")],
) -> None:
    """Import an image folder as a new, content-hashed dataset version."""
    from storage.datasets import import_image_folder

    settings = _settings()
    version = import_image_folder(path, name=name, settings=settings)
    if settings.runtime == "compose":
        from flows.deployments import register_all

        register_all(settings)  # the run form's dataset list now offers it
    console.print(
        f"dataset [bold]{version.name}[/] version [bold]{version.version}[/]: {version.num_images} images, "
        f"{len(version.classes)} classes, stored as {'x'.join(map(str, version.image_shape))} "
        "(channels x height x width)"
    )


@data_app.command("list")
def data_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every dataset version, newest first."""
    from storage.datasets import list_datasets

    versions = list_datasets(_settings())
    if as_json:
        rows = [{**asdict(v), "path": str(v.path), "num_images": v.num_images} for v in versions]
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "version", "classes", "images", "shape", "created")
    for v in versions:
        table.add_row(
            v.name, v.version, str(len(v.classes)), str(v.num_images), "x".join(map(str, v.image_shape)), v.created
        )
    console.print(table if versions else "no datasets yet; `onebox train` imports the bundled digits on first use")


def _run_pipeline(**parameters: Any) -> Any:
    from flows.prefect_server import use_local_prefect_server

    server = use_local_prefect_server(get_settings())  # starts while Prefect and torch are imported
    from prefect.exceptions import ParameterTypeError

    from flows.pipeline import training_pipeline

    if server is not None:
        server.wait_ready()
        console.print(f"Prefect UI: {server.url}/   (it stays up for later runs; onebox stop stops it)")
    try:
        return training_pipeline(**parameters)
    except ParameterTypeError as error:
        raise _fail(f"invalid parameter: {error}", code=2) from error


def _print_result(result: Any, settings: Settings) -> None:
    decision = result.decision
    table = Table(show_header=False, box=None)
    table.add_row("MLflow run", result.run_id)
    table.add_row("model version", f"{result.model_name} v{result.model_version}")
    table.add_row("dataset", result.dataset)
    table.add_row(
        "test accuracy", f"{result.test_accuracy:.4f} (macro-F1 {result.test_macro_f1:.4f}) on {result.device}"
    )
    table.add_row("gate", decision.reason)
    table.add_row("MLflow store", settings.mlflow_tracking_uri)
    console.print(table)


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "digits",
    dataset_version: Annotated[str | None, typer.Option(help="Dataset version (default: newest).")] = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000, help="Training epochs.")] = 15,
    lr: Annotated[float, typer.Option(min=1e-8, max=1.0, help="Learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Batch size.")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Seed for the split and the weights.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    deploy: Annotated[bool, typer.Option("--deploy/--no-deploy", help="Deploy if the gate passes.")] = True,
    min_improvement: Annotated[float, typer.Option(min=-1.0, max=1.0, help="Accuracy gain needed to promote.")] = 0.0,
    here: Annotated[
        bool, typer.Option("--here", help="Run in this process even when the appliance's worker is up.")
    ] = False,
) -> None:
    """Run the training pipeline (a Prefect flow) and print what it decided.

    With the appliance up and a worker polling, the run is the registered deployment's, executed
    by the worker (as if started from the Prefect UI); this command follows its logs.
    """
    from storage.datasets import resolve_dataset

    settings = _settings()
    # Checked before the flow starts, so a user's mistake prints one line, not a flow traceback.
    if device not in {"auto", "cpu", "cuda"}:
        raise _fail(f"device {device!r} is unknown; use auto, cpu or cuda")
    resolve_dataset(dataset, dataset_version, settings)
    parameters = {
        "dataset": dataset,
        "dataset_version": dataset_version,
        "epochs": epochs,
        "learning_rate": lr,
        "batch_size": batch_size,
        "seed": seed,
        "device": device,
        "deploy": deploy,
        "min_improvement": min_improvement,
    }
    if settings.runtime == "compose" and not here:
        workers = _online_workers()
        if workers:
            _train_on_worker(settings, parameters, workers)
            return
        console.print(
            "[yellow]no worker polls the pool 'onebox' (start one: onebox worker); training in this process, "
            "recorded by the appliance's Prefect server[/]"
        )
    from flows.prefect_server import use_local_prefect_server

    use_local_prefect_server(settings)  # its start overlaps torch's import
    from flows.train import resolve_device  # imports torch: after the quick checks

    resolve_device(device)
    result = _run_pipeline(**parameters)
    _print_result(result, settings)
    if result.served_url:
        console.print(f"serving at {result.served_url}/ (Swagger UI)")


def _online_workers() -> list[str]:
    from flows.remote import online_workers

    return online_workers()


def _train_on_worker(settings: Settings, parameters: dict[str, Any], workers: list[str]) -> None:
    from flows import remote
    from flows.report import read_run

    flow_run_id, name = remote.start("training-pipeline", parameters)
    console.print(f"flow run [bold]{name}[/] started on the worker ({', '.join(workers)}): ")
    console.print(f"  {remote.flow_run_url(settings, flow_run_id)}")
    try:
        outcome = remote.follow(flow_run_id, lambda line: console.print(f"  {line}", highlight=False, markup=False))
    except KeyboardInterrupt:
        console.print("\nstopped following; the run goes on (see the Prefect UI)")
        raise typer.Exit(130) from None
    if not outcome.completed:
        raise _fail(f"flow run {name} ended {outcome.state}: {outcome.message}")
    run_id = remote.mlflow_run_for(settings, flow_run_id)
    if run_id is None:
        raise _fail(f"flow run {name} completed but no MLflow run carries its id")
    record = read_run(settings, run_id)
    table = Table(show_header=False, box=None)
    table.add_row("MLflow run", run_id)
    table.add_row("model version", f"{settings.model_name} v{record.tags.get('onebox.model_version', '?')}")
    table.add_row("dataset", record.tags.get("onebox.dataset", "?"))
    accuracy, f1 = record.metrics.get("test_accuracy", float("nan")), record.metrics.get("test_macro_f1", float("nan"))
    table.add_row("test accuracy", f"{accuracy:.4f} (macro-F1 {f1:.4f}) on {record.params.get('device_used', '?')}")
    table.add_row("gate", record.tags.get("onebox.gate_reason", "-"))
    console.print(table)


@app.command()
def register() -> None:
    """Register every flow as a deployment of the appliance's Prefect server (make up does it too)."""
    from flows.deployments import WORK_POOL, register_all

    settings = _appliance_settings()
    for deployment in register_all(settings):
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

    settings = _appliance_settings(wait_s=wait)
    register_all(settings)  # the forms the UI shows match this checkout's code
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


def _appliance_settings(*, wait_s: float = 0) -> Settings:
    """Settings for commands that need the appliance's Prefect server; fails clearly when it is down.

    ``wait_s``: how long a server that does not answer yet may take (a stack still starting).
    """
    import os
    import time

    import httpx

    os.environ["ONEBOX_RUNTIME"] = "compose"
    get_settings.cache_clear()
    settings = get_settings()
    prepare_environment(settings)
    api = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                return settings
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise _fail(f"the appliance's Prefect server does not answer at {api}; start the appliance: make up")
        time.sleep(2)


@app.command()
def demo(epochs: Annotated[int, typer.Option(min=1, max=1000, help="Training epochs.")] = 15) -> None:
    """Train on the bundled digits, register, gate against production and serve on 127.0.0.1."""
    from flows.prefect_server import LocalPrefectServer
    from storage.registry import PRODUCTION, count_versions, version_by_alias

    settings = _settings()
    # Each demo run trains a new challenger: a new seed gives a new split and new weights.
    result = _run_pipeline(dataset="digits", epochs=epochs, seed=count_versions(settings), deploy=True)
    _print_result(result, settings)
    state = _ensure_production_served(settings)
    production = version_by_alias(settings, PRODUCTION)
    console.print()
    console.print(
        f"[bold green]Model {settings.model_name} v{production.version if production else '?'} serves at {state.url}[/]"
    )
    console.print(f"  Swagger UI:  {state.url}/   (upload an image to /predict)")
    console.print(f"  metadata:    {state.url}/metadata")
    console.print(f"  report:      .venv/bin/onebox report --open   (run {result.run_id})")
    console.print(f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    if prefect := LocalPrefectServer(settings).current():
        console.print(f"  Prefect UI:  {prefect.url}/")
    console.print("  stop both:   .venv/bin/onebox stop   (`make demo` again trains a challenger)")


def _ensure_production_served(settings: Settings, *, restart: bool = False) -> Any:
    """Serve the production version unless it already serves (or ``restart``)."""
    from serving.runtime import runtime_for
    from storage.registry import PRODUCTION, materialize_bundle, version_by_alias

    production = version_by_alias(settings, PRODUCTION)
    if production is None:
        raise _fail("no production model yet; train one with: onebox train")
    runtime = runtime_for(settings)
    current = runtime.current()
    if not restart and current is not None and current.model_version == production.version:
        return current
    # A deploy of the same version restarts it: stop-start locally, blue/green in the appliance.
    state = runtime.deploy(materialize_bundle(settings, production.version))
    runtime.retire_previous()
    return state


@app.command()
def report(
    run_id: Annotated[str | None, typer.Argument(help="MLflow run id (default: the latest run with a report).")] = None,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--compare", help="Two run ids: the first run's model vs the second's, on the first's test split."
        ),
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the report in a web browser.")] = False,
    path_only: Annotated[bool, typer.Option("--path", help="Print only the report file's path.")] = False,
) -> None:
    """Show where a run's evaluation report is (HTML, self-contained), or compare two runs."""
    from storage.mlflow_peek import require_runs

    settings = _settings()
    require_runs(settings, [run_id] if compare is None else list(compare))  # before MLflow's import
    from flows import report as reports

    if compare is not None:
        first, second = compare
        baseline = reports.read_run(settings, second).model_version
        html = reports.build_report(settings, first, baseline_version=baseline, baseline_label=f"run {second[:8]}")
        target = settings.home / "reports" / f"compare-{first}-{second}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html)
    else:
        target = reports.fetch_report(settings, run_id or reports.latest_run_with_report(settings))
    if path_only:
        print(target)
    else:
        console.print(f"report: {target}")
    if open_browser:
        import webbrowser

        if not webbrowser.open(target.as_uri()):
            raise _fail(f"no web browser found; open {target} by hand")


@app.command()
def serve() -> None:
    """(Re)start serving the production model."""
    state = _ensure_production_served(_settings(), restart=True)
    console.print(f"model {state.model_name} v{state.model_version} serves at {state.url}/")


@app.command()
def logs(
    service: Annotated[
        str, typer.Argument(help="model, or in the appliance: mlflow, prefect, gateway, worker.")
    ] = "model",
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="How many lines.")] = 100,
) -> None:
    """Recent logs of the model server (or of an appliance service)."""
    from serving.compose import ComposeRuntime
    from serving.runtime import runtime_for

    runtime = runtime_for(_settings())
    if isinstance(runtime, ComposeRuntime):
        print(runtime.logs(lines=lines, service=service))
    elif service != "model":
        raise _fail(f"{service!r} runs only in the appliance (make up); the local runtime has only the model")
    else:
        print(runtime.logs(lines=lines))


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
    from serving.compose import WORKER_KEY, ComposeRuntime

    settings = get_settings().model_copy(update={"runtime": "compose"})
    if worker:
        console.print("building the worker image (torch included: the first build takes minutes)")
    state = ComposeRuntime(settings).up(worker=worker)
    from flows.deployments import register_all

    registered = register_all(_appliance_settings())
    live = state["ONEBOX_LIVE_COLOR"]
    console.print(f"appliance up (project {settings.compose_project}):")
    serving = f"live color {live}" if live != "none" else "no model yet: onebox train"
    console.print(f"  gateway:  {settings.serve_url}/   ({serving})")
    console.print(f"  MLflow:   http://127.0.0.1:{settings.mlflow_port}/")
    deployments = ", ".join(r.name for r in registered)
    console.print(f"  Prefect:  http://127.0.0.1:{settings.prefect_port}/   (deployments: {deployments})")
    if state[WORKER_KEY] == "on":
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
def rollback() -> None:
    """Serve the previous production version again and point `production` back at it."""
    from flows.promote import rollback as roll_back

    settings = _settings()
    version, url = roll_back(settings)
    console.print(f"production is v{version} again, serving at {url}/")


@app.command()
def stop() -> None:
    """Stop the local model server and the local Prefect server."""
    from flows.prefect_server import LocalPrefectServer
    from serving.runtime import runtime_for

    settings = _settings()
    state = runtime_for(settings).stop()
    console.print(f"stopped model v{state.model_version} (pid {state.pid})" if state else "no model server was running")
    if prefect := LocalPrefectServer(settings).stop():
        console.print(f"stopped the local Prefect server (pid {prefect.pid}); onebox train starts it again")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What is serving, which version, since when; what production is; with the appliance, its workers."""
    from serving.health import probe
    from serving.runtime import runtime_for
    from storage.registry import PRODUCTION, peek_alias

    settings = _settings()
    state = runtime_for(settings).current()
    production = peek_alias(settings, PRODUCTION)
    report: dict[str, Any] = {
        "serving": state is not None,
        "healthy": probe(state.url) if state else False,
        "model_name": settings.model_name,
        "served_version": state.model_version if state else None,
        "production_version": production.version if production else None,
        "url": state.url if state else None,
        "pid": state.pid if state and state.pid else None,  # the appliance has containers, not a pid
        "since": state.started if state else None,
        "runtime": settings.runtime,
        "home": str(settings.home),
    }
    if settings.runtime == "local":
        from flows.prefect_server import LocalPrefectServer

        prefect = LocalPrefectServer(settings).current()
        report["prefect_ui"] = prefect.url if prefect else None  # started by onebox train or demo
    if settings.runtime == "compose":
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


def main() -> None:
    """Entry point: runs the app and turns onebox's own errors into one clear line."""
    try:
        app()
    except OneboxError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
        raise SystemExit(1) from None
    except ValidationError as error:  # a setting from the environment or .env is out of range
        if error.title != "Settings":
            raise
        for problem in error.errors():
            name = "ONEBOX_" + "_".join(map(str, problem["loc"])).upper()
            errors.print(
                f"[bold red]error:[/] {name}={problem.get('input')!s}: {problem['msg'].removeprefix('Value error, ')}",
                highlight=False,
            )
        raise SystemExit(2) from None
    except Exception as error:
        # MLflow's errors (a tracking server that does not answer, above all) in one line too. Not
        # imported here: if MLflow was never imported, the error cannot be one of its.
        mlflow_errors = sys.modules.get("mlflow.exceptions")
        if mlflow_errors is None or not isinstance(error, mlflow_errors.MlflowException):
            raise
        first = str(error.message).splitlines()[0]
        errors.print(f"[bold red]error:[/] MLflow ({get_settings().mlflow_tracking_uri}): {first}", highlight=False)
        raise SystemExit(1) from None

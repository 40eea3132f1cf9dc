"""``onebox train``, ``onebox demo`` and ``onebox report``: training runs and what they leave.

The options of ``onebox train`` are :class:`~flows.parameters.TrainingParameters`' fields, so
their help, limits and checks are the run form's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from rich.table import Table

from flows.cli.shared import console, fail, settings
from flows.parameters import TrainingParameters, annotated, describe, flat_parameters, parse_assignment
from storage.settings import get_settings

if TYPE_CHECKING:
    from flows.pipeline import PipelineResult
    from flows.run_record import RunSummary
    from storage.settings import Settings

app = typer.Typer()
INTERRUPTED = 130  # the shell's exit status for a command ended by SIGINT

# Flags that are not the field's name spelled with dashes.
OPTION_NAMES = {"learning_rate": "--lr", "deploy": "--deploy/--no-deploy", "model_hyperparameters": "--hp"}
# The model's own hyperparameters: `--hp width=64 --hp depth=3` on the command line, one object in
# the run form; TrainingParameters turns the list into that object.
CLI_TYPES: dict[str, tuple[Any, Any]] = {"model_hyperparameters": (list[str], [])}


def _metavar(field: FieldInfo) -> str:
    kind = field.annotation
    if get_origin(kind) is Literal:
        return "<" + "|".join(map(str, get_args(kind))) + ">"
    names = {int: "<int>", float: "<float>"}
    return next((name for number, name in names.items() if kind is number), "<str>")


def _option(name: str, field: FieldInfo) -> tuple[object, ...]:
    """The field as an option: its flag, its help with limits, checked by the field's own rules."""
    flag = OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
    if field.annotation is bool:
        return (typer.Option(flag, help=describe(field)),)
    if name in CLI_TYPES:

        def check_assignment(value: str) -> str:
            from pydantic_core import PydanticCustomError

            try:
                parse_assignment(value)
            except ValueError as error:  # typer's usage error, worded without pydantic's "Value error, "
                raise PydanticCustomError("assignment", str(error)) from error
            return value

        return (
            typer.Option(flag, help=describe(field) + " Repeatable.", parser=check_assignment, metavar="NAME=VALUE"),
        )

    def check(value: object) -> Any:
        from pydantic import TypeAdapter

        # A ValidationError here is typer's usage error: exit 2, "Invalid value for '--lr': ...".
        return TypeAdapter(annotated(field)).validate_python(value)

    return (typer.Option(flag, help=describe(field), parser=check, metavar=_metavar(field)),)


def run_pipeline(parameters: TrainingParameters) -> PipelineResult:
    """Run the training flow in this process; a parameter Prefect refuses is a usage error."""
    from flows.prefect_server import use_local_prefect_server

    server = use_local_prefect_server(get_settings())  # starts while Prefect and torch are imported
    from prefect.exceptions import CancelledRun, ParameterTypeError

    from flows.pipeline import training_pipeline

    if server is not None:
        server.wait_ready()
        console.print(f"Prefect UI: {server.url}/   (it stays up for later runs; onebox stop stops it)")
    try:
        result: PipelineResult = training_pipeline(**parameters.model_dump())
    except ParameterTypeError as error:
        raise fail(f"invalid parameter: {error}", code=2) from error
    except CancelledRun as cancelled:  # Ctrl-C inside the flow: its runs are marked, its slot released
        raise fail(f"{cancelled}; the flow run is cancelled", code=INTERRUPTED) from None
    except KeyboardInterrupt:  # Ctrl-C before the flow began or after it ended
        raise fail("interrupted (Ctrl-C)", code=INTERRUPTED) from None
    return result


def print_summary(summary: RunSummary, *extra: tuple[str, str]) -> None:
    table = Table(show_header=False, box=None)
    for row in [*summary.rows(), *extra]:
        table.add_row(*row)
    console.print(table)


@app.command()
@flat_parameters(TrainingParameters, extras=_option, types=CLI_TYPES)
def train(
    parameters: TrainingParameters,
    *,
    here: Annotated[
        bool, typer.Option("--here", help="Run in this process even when the appliance's worker is up.")
    ] = False,
) -> None:
    """Run the training pipeline (a Prefect flow) and print what it decided.

    With the appliance up and a worker polling, the run is the registered deployment's, executed
    by the worker (as if started from the Prefect UI); this command follows its logs.
    """
    from storage.datasets import resolve_dataset

    current = settings()
    version = resolve_dataset(parameters.dataset, parameters.dataset_version, current)
    # Bad model code, hyperparameters or weights: one line now, before a server or worker starts.
    # The flow builds the model again where it runs (the worker may be elsewhere).
    from flows.model_build import build_run_model

    built = build_run_model(parameters, current, num_classes=len(version.classes), input_shape=version.image_shape)
    if current.runtime == "compose" and not here:
        from flows.remote import online_workers

        workers = online_workers()
        if workers:
            # The worker runs in the checkout, not in this folder: it gets the files this command found.
            found = {"model_code": f"{built.code.path}:{built.code.function}"} if built.code.path else {}
            if built.init_weights is not None:
                found["init_weights"] = str(built.init_weights)
            _train_on_worker(current, parameters.model_copy(update=found), workers)
            return
        console.print(
            "[yellow]no worker polls the pool 'onebox' (start one: onebox worker); training in this process, "
            "recorded by the appliance's Prefect server[/]"
        )
    from flows.prefect_server import use_local_prefect_server

    use_local_prefect_server(current)  # its start overlaps torch's import
    from flows.train import resolve_device  # torch: imported once the run is sure to start here

    resolve_device(parameters.device)
    result = run_pipeline(parameters)
    print_summary(result.summary, ("MLflow store", current.mlflow_tracking_uri))
    if result.served_url:
        console.print(f"serving at {result.served_url}/ (Swagger UI)")


def _train_on_worker(current: Settings, parameters: TrainingParameters, workers: list[str]) -> None:
    from flows import remote
    from flows.run_record import RunSummary, read_run

    flow_run_id, name = remote.start("training-pipeline", parameters.model_dump())
    console.print(f"flow run [bold]{name}[/] started on the worker ({', '.join(workers)}): ")
    console.print(f"  {remote.flow_run_url(current, flow_run_id)}")
    try:
        outcome = remote.follow(flow_run_id, lambda line: console.print(f"  {line}", highlight=False, markup=False))
    except KeyboardInterrupt:
        console.print("\nstopped following; the run goes on (see the Prefect UI)")
        raise typer.Exit(130) from None
    if not outcome.completed:
        raise fail(f"flow run {name} ended {outcome.state}: {outcome.message}")
    run_id = remote.mlflow_run_for(current, flow_run_id)
    if run_id is None:
        raise fail(f"flow run {name} completed but no MLflow run carries its id")
    print_summary(RunSummary.from_record(read_run(current, run_id), model_name=parameters.model_name))


EPOCHS = TrainingParameters.model_fields["epochs"]


@app.command()
def demo(epochs: Annotated[int, _option("epochs", EPOCHS)[0]] = EPOCHS.default) -> None:
    """Train on the bundled digits, register, gate against production and serve on 127.0.0.1."""
    from flows.prefect_server import LocalPrefectServer
    from flows.promote import serve_model
    from storage.datasets import BUILTIN_DATASET
    from storage.registry import count_versions

    current = settings()
    # Each demo run trains a new challenger: a new seed gives a new split and new weights.
    seed = count_versions(current, BUILTIN_DATASET)
    result = run_pipeline(TrainingParameters(dataset=BUILTIN_DATASET, epochs=epochs, seed=seed))
    print_summary(result.summary, ("MLflow store", current.mlflow_tracking_uri))
    state = serve_model(current, result.model_name)
    console.print()
    console.print(f"[bold green]Model {state.model_name} v{state.model_version} serves at {state.url}[/]")
    console.print(f"  Swagger UI:  {state.url}/   (upload an image to /predict)")
    console.print(f"  metadata:    {state.url}/metadata")
    console.print(f"  report:      .venv/bin/onebox report --open   (run {result.run_id})")
    console.print(f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {current.mlflow_tracking_uri}")
    if prefect := LocalPrefectServer(current).current():
        console.print(f"  Prefect UI:  {prefect.url}/")
    console.print("  stop both:   .venv/bin/onebox stop   (`make demo` again trains a challenger)")


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

    current = settings()
    require_runs(current, [run_id] if compare is None else list(compare))  # before MLflow's import
    from flows.report import build_report, run_model_name
    from flows.run_record import fetch_report, latest_run_with_report, read_run

    if compare is not None:
        first, second = compare
        other = read_run(current, second)
        html = build_report(
            current,
            first,
            baseline_version=other.model_version,
            baseline_label=f"run {second[:8]}",
            baseline_model=run_model_name(other),
        )
        target = current.home / "reports" / f"compare-{first}-{second}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html)
    else:
        target = fetch_report(current, run_id or latest_run_with_report(current))
    if path_only:
        print(target)
    else:
        console.print(f"report: {target}")
    if open_browser:
        import webbrowser

        if not webbrowser.open(target.as_uri()):
            raise fail(f"no web browser found; open {target} by hand")

"""The ``onebox`` command: train, serve, inspect and manage datasets from a terminal.

Commands live by what they own: ``training`` (train, demo, report), ``models`` (models, serve,
retire, stop, status, rollback), ``monitoring`` (drift), ``appliance`` (up, down, register, worker,
logs), ``labeling`` (label), ``simulate`` (traffic for a served model) and ``data`` (import, list,
merge-inbox).
Heavy libraries (torch, Prefect, MLflow) are imported inside the commands that need them, after
the process environment is prepared, so ``onebox --help`` and ``onebox status`` stay quick.
"""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from flows.cli import appliance, data, labeling, models, monitoring, simulate, training
from flows.cli.shared import errors
from storage.errors import OneboxError
from storage.settings import get_settings

app = typer.Typer(
    help="onebox: train, track, serve and swap models on one server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
for commands in (training.app, models.app, monitoring.app, appliance.app, labeling.app, simulate.app):
    app.add_typer(commands)  # no name: their commands are onebox's own


SECRET_SETTINGS = ("password", "api_key")


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
            message = problem["msg"].removeprefix("Value error, ")
            if problem["loc"] and problem["loc"][0] not in SECRET_SETTINGS:
                name = "ONEBOX_" + "_".join(map(str, problem["loc"])).upper()
                message = f"{name}={problem.get('input')!s}: {message}"
            # A secret's value (and the whole input, which a check of two settings is given) is never printed.
            errors.print(f"[bold red]error:[/] {message}", highlight=False)
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

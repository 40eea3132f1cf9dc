"""``onebox drift``: is production still like what the served model was trained on?

It runs the ``drift-check`` flow here (recorded by Prefect and MLflow like the daily check), after
the quick answers that need neither: an unknown model, no production version, too few predictions.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flows.cli.models import MODEL_OPTION
from flows.cli.shared import console, errors, settings

if TYPE_CHECKING:
    from flows.drift_window import DriftResult

app = typer.Typer()

# Exit codes beside 0 (no drift), 1 (an error) and 2 (a usage error): scripts and cron tell them apart.
DRIFT_EXIT = 3
NOT_CHECKED_EXIT = 4


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if result["drift"] is None:
        errors.print(f"{result['model']} v{result['version']}: {result['reason']}", highlight=False)
        return
    console.print(f"{result['model']} v{result['version']}: {result['reason']}", highlight=False)
    table = Table("test", "class", "statistic", "p-value", "threshold", "drift", box=None)
    for test in result["tests"]:
        table.add_row(
            test["name"],
            test["subject"],
            f"{test['statistic']:.4g}",
            f"{test['p_value']:.3g}",
            f"{test['alpha']:.3g}",
            "yes" if test["drift"] else "",
        )
    console.print(table)
    added = result.get("inbox_added") or {}
    if any(added.values()):
        console.print(
            f"inbox: added {added.get('drift', 0)} drifted and {added.get('low-confidence', 0)} unsure images"
        )


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """While inside, what is written to stdout goes to stderr, at the descriptor: the flow's logs
    (Prefect's handlers hold the stdout stream they were made with) must not mix with the JSON."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _exit_code(result: DriftResult | dict[str, Any]) -> int:
    drift = result.drift if not isinstance(result, dict) else result["drift"]
    return NOT_CHECKED_EXIT if drift is None else DRIFT_EXIT if drift else 0


@app.command()
def drift(
    model: Annotated[str | None, MODEL_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check one model's recent predictions against its training reference (the drift-check flow).

    Exit 0: no drift; 3: drift; 4: not checked (too few predictions, or no reference); 1: an error.
    """
    from flows.drift_window import DriftConfig, served_version, too_few, window_records
    from storage.registry import resolve_model

    current = settings()
    name = resolve_model(current, model)
    version = served_version(current, name)
    config = DriftConfig.from_settings(current)
    short = too_few(name, version, config, len(window_records(current, name, version, config)))
    if short is not None:  # one line now: no Prefect server to start for that
        _print(short.to_dict(), as_json)
        raise typer.Exit(_exit_code(short))
    from flows.prefect_server import use_local_prefect_server

    with _stdout_to_stderr(as_json):
        server = use_local_prefect_server(current)
        from flows.drift_flow import drift_check_flow

        if server is not None:
            server.wait_ready()
        (result,) = drift_check_flow(model=name)
    _print(result, as_json)
    raise typer.Exit(_exit_code(result))

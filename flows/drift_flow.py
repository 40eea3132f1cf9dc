"""The ``drift-check`` flow: each served model's recent predictions against its reference, daily.

Thin tasks over plain functions: the check (flows/drift_check.py), its record in MLflow's
monitoring experiment and the Prefect UI (flows/drift_report.py), the alert, the inbox.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import AfterValidator, Field

from flows import drift_check, drift_report
from flows.events import DRIFT_DETECTED
from flows.parameters import check_model_name
from flows.report import mlflow_run_link
from storage.registry import PRODUCTION, registered_models, resolve_model
from storage.settings import Settings, get_settings


def model_resource(name: str) -> str:
    return f"onebox.model.{name}"


def checked_models(settings: Settings, model: str | None) -> list[str]:
    """``model`` when given (it must exist), else every model with a production version.

    Raises:
        ModelError: ``model`` is not registered.
    """
    if model:
        return [resolve_model(settings, model)]
    return [found.name for found in registered_models(settings) if PRODUCTION in found.aliases]


@task(name="check-drift", cache_policy=NO_CACHE)
def run_check(settings: Settings, name: str) -> drift_check.DriftCheck:
    check = drift_check.check_model(settings, name)
    print(f"{name} v{check.result.version}: {check.result.reason}")
    return check


@task(name="log-drift-check", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5.0, 20.0])
def record_check(settings: Settings, check: drift_check.DriftCheck) -> str:
    """MLflow's record and the Prefect artifact (with the plot) of one check."""
    result = check.result
    reference = check.reference.probabilities if check.reference is not None else None
    plot = drift_report.drift_plot(result, check.window_probabilities(), reference) if result.tests else None
    run_id = drift_report.log_check(settings, result, plot)
    create_markdown_artifact(
        key=f"drift-{result.model.replace('_', '-').replace('.', '-')}",
        markdown=drift_report.summary_markdown(result, plot, mlflow_run_link(settings, run_id)),
        description=f"{result.model} v{result.version}: {result.reason}",
    )
    return run_id


@task(name="alert-drift", cache_policy=NO_CACHE)
def alert(check: drift_check.DriftCheck, run_id: str) -> None:
    """The ``onebox.drift.detected`` event: automations (a notification, a retraining) match it."""
    from prefect.events import emit_event

    result = check.result
    emit_event(
        DRIFT_DETECTED,
        resource={"prefect.resource.id": model_resource(result.model), "prefect.resource.name": result.model},
        payload={**result.to_dict(), "mlflow_run_id": run_id},
    )
    print(f"emitted {DRIFT_DETECTED} for {model_resource(result.model)}")


@task(name="fill-inbox", cache_policy=NO_CACHE)
def fill_inbox(settings: Settings, check: drift_check.DriftCheck) -> dict[str, int]:
    added = drift_check.fill_inbox(
        settings, check, low_confidence=settings.drift_low_confidence, limit=settings.drift_inbox_per_check
    )
    if any(added.values()):
        print(f"inbox of {check.result.model}: added {added['drift']} drifted, {added['low-confidence']} unsure images")
    return added


@flow(name="drift-check", log_prints=True, retries=0, validate_parameters=True)
def drift_check_flow(
    model: Annotated[
        str | None,
        AfterValidator(check_model_name),
        Field(title="Model name", description="The model to check; empty: every model with a production version."),
    ] = None,
) -> list[dict[str, Any]]:
    """Compare each served model's recent predictions with its reference; alert and fill the inbox on drift."""
    settings = get_settings()
    names = checked_models(settings, model)
    if not names:
        print("no model has a production version: nothing to check")
    results = []
    for name in names:
        check = run_check(settings, name)
        run_id = record_check(settings, check)
        if check.result.drift:
            alert(check, run_id)
        added = fill_inbox(settings, check) if check.records else {}
        results.append({**check.result.to_dict(), "mlflow_run_id": run_id, "inbox_added": added})
    return results

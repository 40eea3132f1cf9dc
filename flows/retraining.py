"""Retraining on new data: the event trigger's flow, the scheduled reconcile, and the one way both start a run.

A dataset version made for retraining (an inbox merge: its lineage names the model) emits
``onebox.dataset.version.created``; a deployment trigger on the ``retrain`` flow (an automation of
the Prefect server, see :func:`retraining_trigger`) runs it with the event's dataset, version and
model. Events can be lost (a closed websocket, an invalid event in the same batch: STACK-NOTES),
so ``retrain-reconcile`` runs on a schedule (every 5 minutes, flows/deployments.py) and starts any
version that was missed.

Both end in :func:`start_retraining`, which creates the training deployment's flow run with an
idempotency key per (model, dataset, version): the Prefect server keeps one flow run per key, so
a repeated event, a reconcile racing the trigger, or both at once start one training, not two.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import flow
from pydantic import ValidationError

from flows.deployments import deployment_name
from flows.events import DATASET_VERSION_CREATED
from flows.parameters import TrainingParameters
from storage.errors import ModelError
from storage.names import name_problem
from storage.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from storage.datasets import DatasetVersion

TRAINING_FLOW = "training-pipeline"
RETRAIN_TAG = "retrain"  # on every flow run started here: the UI filters retrainings by it


def retraining_key(model: str, dataset: str, version: str) -> str:
    """The training flow run's idempotency key: one training per model and dataset version."""
    return f"onebox.retrain:{model}:{dataset}:{version}"


def retraining_run_name(model: str, version: str) -> str:
    return f"retrain-{model}-{version}"


# What the trigger reads of a DATASET_VERSION_CREATED event (flows/dataset_events.py writes it): a
# related resource in this role names the model to retrain, and the payload names the version.
MODEL_ROLE = "model"
PAYLOAD_FIELDS = {"model": "model", "dataset": "dataset", "dataset_version": "version"}  # parameter: payload key


def retraining_trigger() -> DeploymentEventTrigger:
    """The automation that runs the ``retrain`` flow on each new dataset version made for a model.

    Only events with a related resource in the role "model" match: a plain ``onebox data
    import`` names no model and retrains nothing. The server renders the parameters from the
    event's payload; the retrain flow's schema then refuses an unsafe name before a run exists.
    """
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="retrain on a new dataset version",
        description=f"Runs the retrain flow for each {DATASET_VERSION_CREATED} event that names a model.",
        expect={DATASET_VERSION_CREATED},
        match={"prefect.resource.id": "onebox.dataset.*"},
        match_related={"prefect.resource.role": MODEL_ROLE},
        parameters={
            parameter: {"__prefect_kind": "jinja", "template": f"{{{{ event.payload['{key}'] }}}}"}
            for parameter, key in PAYLOAD_FIELDS.items()
        },
    )


def _parse_param(text: str) -> Any:
    # MLflow keeps params as text: JSON for most, Python's repr for a dict logged as one.
    if text == "None":
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


def carried_parameters(params: dict[str, str]) -> dict[str, Any]:
    """The hyperparameters of a training run's MLflow params that a retraining trains with again.

    A value that no longer validates (a field whose bounds changed since) is left at its default.
    The gate's margin is not carried: a run forced into production (negative margin) must not
    force every retraining after it in too.
    """
    names = [name for name in TrainingParameters.hyperparameter_names() if name not in {"min_improvement", "deploy"}]
    carried = {name: _parse_param(params[name]) for name in names if name in params}
    while True:
        try:
            TrainingParameters(**carried)
            return carried
        except ValidationError as error:
            bad = {str(problem["loc"][0]) for problem in error.errors() if problem["loc"]}
            if not bad & set(carried):
                return {}
            for name in bad:
                carried.pop(name, None)


def production_parameters(settings: Settings, model: str) -> dict[str, Any]:
    """What the model's production version was trained with; empty for a model with none yet."""
    from storage.registry import PRODUCTION, mlflow_client, version_by_alias

    production = version_by_alias(settings, model, PRODUCTION)
    if production is None or not production.run_id:
        return {}
    return carried_parameters(dict(mlflow_client(settings).get_run(production.run_id).data.params))


@dataclass(frozen=True)
class Started:
    flow_run_id: str
    flow_run_name: str
    new: bool  # False: this (model, version) already had its training run, which is returned


def start_retraining(settings: Settings, *, model: str, dataset: str, version: str) -> Started:
    """Start the training deployment on ``dataset:version`` for ``model``, once per (model, version).

    The run trains with the model's production hyperparameters, on the new version; the gate
    then decides whether it serves. Safe to call any number of times, at once too.

    Raises:
        ModelError: an unsafe name, or the training deployment is not registered.
        DatasetError: no such dataset version.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.exceptions import ObjectNotFound

    from storage.datasets import resolve_dataset

    for kind, name in (("model", model), ("dataset", dataset)):
        if problem := name_problem(kind, name):
            raise ModelError(problem)
    resolve_dataset(dataset, version, settings)  # raises for a version this home does not have
    parameters = {
        **production_parameters(settings, model),
        "dataset": dataset,
        "dataset_version": version,
        "model": model,
    }
    run_name = retraining_run_name(model, version)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(deployment_name(TRAINING_FLOW))
        except ObjectNotFound as error:
            raise ModelError(
                f"deployment {deployment_name(TRAINING_FLOW)!r} is not registered; run: onebox register"
            ) from error
        # Only to say "already started" in the log; the idempotency key is what keeps it one run.
        earlier = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])), limit=1)
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters=parameters,
            name=run_name,
            tags=[RETRAIN_TAG],
            idempotency_key=retraining_key(model, dataset, version),
        )
    return Started(flow_run_id=str(run.id), flow_run_name=run.name, new=not earlier)


def versions_to_retrain(versions: list[DatasetVersion]) -> list[tuple[str, DatasetVersion]]:
    """(model, version) for each dataset version whose lineage names a model to retrain, oldest first."""
    chosen = []
    for version in sorted(versions, key=lambda v: v.created):
        lineage = getattr(version, "lineage", None) or {}
        model = lineage.get("model")
        if isinstance(model, str) and model:
            chosen.append((model, version))
    return chosen


def has_finished_training(settings: Settings, model: str, version: str) -> bool:
    """Whether MLflow holds a finished training run of ``model`` on dataset version ``version``.

    Beside the idempotency key, for a Prefect database that lost its runs (a new volume).
    """
    from storage.registry import MODEL_NAME_TAG, configure_mlflow, mlflow_client

    experiment = configure_mlflow(settings)
    runs = mlflow_client(settings).search_runs(
        [experiment],
        filter_string=f"tags.`{MODEL_NAME_TAG}` = '{model}' and params.dataset_version = '{version}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return bool(runs)


def reconcile(settings: Settings) -> list[Started]:
    """Start the training of every version made for retraining that has none yet; returns those started."""
    from storage.datasets import list_datasets

    started = []
    for model, version in versions_to_retrain(list_datasets(settings)):
        if has_finished_training(settings, model, version.version):
            continue
        result = start_retraining(settings, model=model, dataset=version.name, version=version.version)
        if result.new:
            started.append(result)
    return started


@flow(name="retrain", log_prints=True, validate_parameters=True)
def retrain_on_new_data(model: str, dataset: str, dataset_version: str) -> str:
    """Train ``model`` on a new dataset version (started by the dataset-version trigger); once per version."""
    started = start_retraining(get_settings(), model=model, dataset=dataset, version=dataset_version)
    verb = "started" if started.new else "already started earlier:"
    print(f"retraining {model} on {dataset}:{dataset_version}: {verb} {started.flow_run_name} ({started.flow_run_id})")
    return started.flow_run_id


@flow(name="retrain-reconcile", log_prints=True)
def retrain_reconcile() -> list[str]:
    """Start any retraining a lost event missed: each dataset version made for a model, with no training yet."""
    started = reconcile(get_settings())
    for run in started:
        print(f"started missed retraining: flow run {run.flow_run_name} ({run.flow_run_id})")
    if not started:
        print("every dataset version made for retraining has its training run")
    return [run.flow_run_id for run in started]

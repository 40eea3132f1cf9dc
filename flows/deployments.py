"""The appliance's Prefect side: the flows registered as deployments, the work pool, the `gpu` limit.

``register_all`` runs on every ``onebox up`` and ``onebox worker`` and is idempotent: a
deployment is updated in place, the pool and the limit are created once. Deployments point at
this checkout (a local source), so a process worker loads the flow's code from disk for each run:
a code change reaches the next run with no upload step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from serving.checkout import SOURCE_ROOT
from storage.names import NAME_PATTERN
from storage.settings import Settings

WORK_POOL = "onebox"
DEPLOYMENT = "onebox"  # every flow has one deployment, named after the appliance
GPU_LIMIT = "gpu"


@dataclass(frozen=True)
class FlowEntry:
    name: str  # the flow's name, as the Prefect UI lists it
    entrypoint: str  # file path relative to SOURCE_ROOT, then the flow function
    tags: tuple[str, ...]
    cron: str | None = None  # a schedule (UTC); None: started by hand, from the UI or the CLI


FLOWS = (
    FlowEntry("training-pipeline", "flows/pipeline.py:training_pipeline", ("training",)),
    FlowEntry("rollback", "flows/operations.py:rollback_production", ("serving",)),
    # Daily: a small team's traffic fills a window in about a day.
    FlowEntry("drift-check", "flows/drift_flow.py:drift_check_flow", ("monitoring",), cron="0 5 * * *"),
    # Started by an event (flows/retraining.py's trigger); the reconcile catches a lost one.
    FlowEntry("retrain", "flows/retraining.py:retrain_on_new_data", ("training", "retrain")),
    FlowEntry(
        "retrain-reconcile", "flows/retraining.py:retrain_reconcile", ("training", "retrain"), cron="*/5 * * * *"
    ),
)


def deployment_name(flow_name: str) -> str:
    """The "flow/deployment" name that run_deployment and the CLI use."""
    return f"{flow_name}/{DEPLOYMENT}"


def gpu_count() -> int:
    """GPUs torch sees on this host; the `gpu` limit gets at least one slot (CPU training too)."""
    import torch

    return max(1, torch.cuda.device_count())


def ensure_gpu_limit(*, resize: bool = False) -> None:
    """Create the `gpu` limit when missing (the embedded path's temporary server starts without one).

    With ``resize``, also set its slots to the GPUs of this host (registration does).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    slots = gpu_count()
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # a run started at the same moment made it
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=slots))
            return
        if resize and (limit.limit != slots or not limit.active):
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=slots, active=True))


def ensure_work_pool() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(WORK_POOL)
        except ObjectNotFound:
            pool = WorkPoolCreate(
                name=WORK_POOL,
                type="process",
                description="Runs onebox's flows on the host with the GPU: `onebox worker` polls it.",
            )
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(pool)


@dataclass(frozen=True)
class Registered:
    name: str  # flow/deployment
    deployment_id: str


def _dataset_choices(settings: Settings) -> list[str]:
    from storage.datasets import BUILTIN_DATASET, list_datasets

    names = {version.name for version in list_datasets(settings)} | {BUILTIN_DATASET}
    return sorted(names)


def _field_labels(function: Callable[..., Any]) -> dict[str, dict[str, str]]:
    """Title and description of each parameter annotated with a pydantic Field.

    Prefect's schema titles a parameter with its Python name and keeps no Field description;
    the run form should show the words written for people.
    """
    from pydantic.fields import FieldInfo

    labels = {}
    for name, hint in get_type_hints(function, include_extras=True).items():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, FieldInfo):
                label = {"title": extra.title, "description": extra.description}
                labels[name] = {key: value for key, value in label.items() if value}
    return labels


def _starts(flow_name: str) -> dict[str, Any]:
    """What starts a flow's runs besides the Run button and its schedule: a trigger on an event.

    Registering again replaces the deployment's automations, so none is doubled.
    """
    from flows import retraining

    if flow_name == "retrain":
        return {"triggers": [retraining.retraining_trigger()]}
    return {}


def register_all(settings: Settings) -> list[Registered]:
    """Register (or update) every flow's deployment on the Prefect server PREFECT_API_URL names."""
    from prefect import Flow

    from flows.tracking import code_version

    ensure_work_pool()
    ensure_gpu_limit(resize=True)
    version = code_version()
    registered = []
    for entry in FLOWS:
        flow: Any = Flow.from_source(source=str(SOURCE_ROOT), entrypoint=entry.entrypoint)
        deployment = flow.to_deployment(
            name=DEPLOYMENT,
            work_pool_name=WORK_POOL,
            tags=list(entry.tags),
            version=version,
            description=flow.description,
            enforce_parameter_schema=True,  # the API rejects bad values before a run exists
            cron=entry.cron,
            **_starts(entry.name),
        )
        properties = deployment._parameter_openapi_schema.properties
        for name, label in _field_labels(flow.fn).items():
            properties[name].update(label)
        if "model" in properties:
            # The API refuses an unsafe model name before a run exists (the flow's own check, in the schema).
            properties["model"]["pattern"] = NAME_PATTERN.pattern
        if "dataset" in properties and entry.name == "training-pipeline":
            # The form offers the datasets that exist; `onebox data import` registers again. (The
            # retrain flow's dataset comes from an event, of a version newer than this list.)
            properties["dataset"]["enum"] = _dataset_choices(settings)
        deployment_id = deployment.apply(work_pool_name=WORK_POOL)
        registered.append(Registered(name=deployment_name(entry.name), deployment_id=str(deployment_id)))
    return registered

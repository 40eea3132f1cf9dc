"""Retraining on a new dataset version, against a real `prefect server start` (no worker, no training).

The trigger is an automation of that server: an emitted ``onebox.dataset.version.created`` event
must make it create a ``retrain`` flow run with the event's values; that run, executed as a worker
executes it (``python -m prefect.engine``), creates the training run. The training runs it
creates stay scheduled: no worker polls this server, so nothing trains here.
"""

from __future__ import annotations

import contextvars
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from benchmarks.servers import free_port
from flows.events import DATASET_VERSION_CREATED
from flows.retraining import RETRAIN_TAG, carried_parameters, start_retraining, versions_to_retrain
from serving.waiting import NotYet, wait_for
from storage.errors import DatasetError, ModelError
from storage.settings import Settings, get_settings

EVENT_TIMEOUT_S = 120  # the server's trigger service evaluates events within seconds; the machine is busy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A Prefect server of this module's own home, with the deployments registered on it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import register_all
    from flows.prefect_server import LocalPrefectServer
    from storage.datasets import resolve_dataset

    patch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("retrain-home")
    patch.setenv("ONEBOX_HOME", str(home))
    patch.setenv("ONEBOX_LOCAL_PREFECT_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    local = LocalPrefectServer(settings)
    try:
        local.start()
        state = local.wait_ready()
        patch.setenv("PREFECT_API_URL", state.api_url)
        with temporary_settings({PREFECT_API_URL: state.api_url}):
            resolve_dataset("digits", None, settings)  # the bundled digits: one version to retrain on
            register_all(settings)
            yield settings
    finally:
        local.stop()
        patch.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def digits_version(server: Settings) -> str:
    from storage.datasets import resolve_dataset

    return resolve_dataset("digits", None, server).version


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _runs_of(flow_name: str, *, model: str | None = None) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName

    with _client() as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["onebox"])),
        )
    return [run for run in runs if model is None or run.parameters.get("model") == model]


def _emit(name: str, version: str, model: str | None) -> None:
    """The event of a new dataset version, posted as flows/dataset_events.py posts a merge's."""
    import uuid
    from datetime import UTC, datetime

    import httpx

    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": DATASET_VERSION_CREATED,
        "resource": {"prefect.resource.id": f"onebox.dataset.{name}.{version}"},
        "related": [{"prefect.resource.id": f"onebox.model.{model}", "prefect.resource.role": "model"}]
        if model
        else [],
        "payload": {"dataset": name, "version": version, "model": model},
    }
    answer = httpx.post(f"{os.environ['PREFECT_API_URL']}/events", json=[event], timeout=30)
    assert answer.status_code < 300, answer.text


def _wait_for_retrain_runs(count: int) -> list[Any]:
    def enough() -> list[Any]:
        runs = _runs_of("retrain")
        if len(runs) < count:
            raise NotYet(f"{len(runs)} retrain runs")
        return runs

    return wait_for(enough, timeout_s=EVENT_TIMEOUT_S, what=f"{count} retrain flow run(s) from the trigger")


def _execute(flow_run_id: str) -> subprocess.CompletedProcess[str]:
    """Run a flow run of a deployment as a process worker does: its code loaded from the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "prefect.engine", flow_run_id],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _final_state(flow_run_id: str) -> Any:
    with _client() as client:
        return client.read_flow_run(flow_run_id).state


@pytest.mark.slow
def test_an_event_starts_one_training_and_a_repeated_event_none(server: Settings, digits_version: str) -> None:
    # A plain import (no model), and a hostile model name: neither may start anything.
    _emit("digits", digits_version, None)
    _emit("digits", digits_version, "../etc")
    _emit("digits", digits_version, "digits")
    (triggered,) = _wait_for_retrain_runs(1)
    assert triggered.parameters == {"model": "digits", "dataset": "digits", "dataset_version": digits_version}
    done = _execute(str(triggered.id))
    assert _final_state(str(triggered.id)).name == "Completed", done.stdout + done.stderr
    (training,) = _runs_of("training-pipeline", model="digits")
    assert training.parameters["dataset_version"] == digits_version
    assert training.parameters["model"] == "digits"
    assert RETRAIN_TAG in training.tags
    assert training.state.name == "Scheduled"  # for a worker of the pool `onebox`

    # The same event again (a retry, or a second merge of nothing new): a second retrain run, no second training.
    _emit("digits", digits_version, "digits")
    runs = _wait_for_retrain_runs(2)
    again = next(run for run in runs if run.id != triggered.id)
    done = _execute(str(again.id))
    assert _final_state(str(again.id)).name == "Completed", done.stdout + done.stderr
    assert [run.id for run in _runs_of("training-pipeline", model="digits")] == [training.id]
    assert len(_runs_of("retrain")) == 2  # the import and the hostile name started nothing


@pytest.mark.slow
def test_many_starts_at_once_make_one_training_run(server: Settings, digits_version: str) -> None:
    def start() -> str:
        return start_retraining(server, model="digits-twin", dataset="digits", version=digits_version).flow_run_id

    # Each thread runs in a copy of this context: Prefect's settings (the server's URL) live in it.
    contexts = [contextvars.copy_context() for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda context: context.run(start), contexts))
    assert len(ids) == 1
    twins = _runs_of("training-pipeline", model="digits-twin")
    assert [str(run.id) for run in twins] == list(ids)


@pytest.mark.slow
def test_a_missing_version_or_an_unsafe_name_is_refused_in_one_line(server: Settings, digits_version: str) -> None:
    with pytest.raises(DatasetError, match="dataset 'digits' has no version '000000000000'"):
        start_retraining(server, model="digits", dataset="digits", version="000000000000")
    with pytest.raises(ModelError, match=re.escape("model name '../x' is not valid")):
        start_retraining(server, model="../x", dataset="digits", version=digits_version)


def test_a_retraining_carries_the_production_runs_hyperparameters() -> None:
    logged = {
        "epochs": "2",
        "learning_rate": "0.005",
        "batch_size": "32",
        "seed": "7",
        "augment": "flip,crop",
        "model_code": "builtin",
        "model_hyperparameters": "{'width': 64}",  # a dict, as MLflow keeps one
        "init_weights": "None",
        "min_improvement": "-1.0",  # forced into production once: not every retraining after it
        "deploy": "False",
        "dataset_version": "abc",
        "device_used": "cpu",
    }
    carried = carried_parameters(logged)
    assert carried["epochs"] == 2
    assert carried["learning_rate"] == 0.005
    assert carried["augment"] == "flip,crop"
    assert carried["model_hyperparameters"] == {"width": 64}
    assert carried["init_weights"] is None
    assert {"min_improvement", "deploy", "dataset_version", "device_used"}.isdisjoint(carried)


def test_a_logged_value_out_of_todays_bounds_falls_back_to_its_default() -> None:
    carried = carried_parameters({"epochs": "5000", "batch_size": "not a number", "seed": "3"})
    assert carried == {"seed": 3}


def test_only_versions_whose_lineage_names_a_model_are_retrained(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Version:  # the catalog's DatasetVersion, as far as the reconcile reads it
        name: str
        version: str
        created: str
        lineage: dict[str, Any] | None

    versions = [
        Version("digits", "b", "2026-12-02T01:00:02", {"parent": "a", "model": "digits"}),
        Version("digits", "a", "2026-12-02T01:00:01", None),  # imported
        Version("digits", "c", "2026-12-02T01:00:03", {"parent": "b", "model": None}),
        Version("parts", "d", "2026-12-02T01:00:00", {"parent": "x", "model": "parts"}),
    ]
    chosen = versions_to_retrain(versions)  # type: ignore[arg-type]
    assert [(model, version.version) for model, version in chosen] == [("parts", "d"), ("digits", "b")]


def _merged_version(settings: Settings, folder: Path, *, model: str, first: int) -> str:
    """A dataset version as an inbox merge catalogs it: its lineage names ``model``."""
    import numpy as np

    from storage.dataset_import import import_folder
    from tests.inbox_fixtures import _digits, png

    images, labels = _digits()
    for index in range(first, first + 40):
        (folder / str(labels[index])).mkdir(parents=True, exist_ok=True)
        (folder / str(labels[index]) / f"{index:04d}.png").write_bytes(png(images[index]))
    for digit in np.unique(labels):  # every class, so the version could be trained on
        for index in np.flatnonzero(labels == digit)[:4]:
            (folder / str(digit)).mkdir(exist_ok=True)
            (folder / str(digit) / f"{index:04d}.png").write_bytes(png(images[index]))
    lineage: dict[str, object] = {
        "parent": "000000000000",
        "model": model,
        "inbox_batch": f"batch-{first}",
        "by": "test",
        "at": "now",
    }
    return import_folder(folder, name="digits", settings=settings, lineage=lineage).version


@pytest.mark.slow
def test_the_reconcile_starts_what_a_lost_event_missed_and_nothing_twice(server: Settings, tmp_path: Path) -> None:
    from flows.retraining import retrain_reconcile

    announced = _merged_version(server, tmp_path / "announced", model="digits-merged", first=200)
    lost = _merged_version(server, tmp_path / "lost", model="digits-merged", first=400)
    _emit("digits", announced, "digits-merged")  # the other one's event never arrived

    def triggered() -> Any:
        runs = [run for run in _runs_of("retrain") if run.parameters["dataset_version"] == announced]
        if not runs:
            raise NotYet("no retrain run yet")
        return runs[0]

    run = wait_for(triggered, timeout_s=EVENT_TIMEOUT_S, what="the retrain run of the announced version")
    done = _execute(str(run.id))
    assert _final_state(str(run.id)).name == "Completed", done.stdout + done.stderr

    started = retrain_reconcile()  # the schedule's flow, run here
    trainings = _runs_of("training-pipeline", model="digits-merged")
    assert sorted(run.parameters["dataset_version"] for run in trainings) == sorted([announced, lost])
    (missed,) = [run for run in trainings if run.parameters["dataset_version"] == lost]
    assert started == [str(missed.id)]  # the announced one already had its run
    assert retrain_reconcile() == []  # and once started, never again
    assert len(_runs_of("training-pipeline", model="digits-merged")) == 2


@pytest.mark.slow
def test_the_reconcile_is_deployed_on_a_schedule_and_the_trigger_as_an_automation(server: Settings) -> None:
    from flows.deployments import deployment_name, register_all

    register_all(server)  # again: nothing doubles
    with _client() as client:
        reconcile = client.read_deployment_by_name(deployment_name("retrain-reconcile"))
        retrain = client.read_deployment_by_name(deployment_name("retrain"))
        automations = client.read_automations_by_name("retrain on a new dataset version")
    (schedule,) = reconcile.schedules
    assert schedule.active
    assert schedule.schedule.cron == "*/5 * * * *"
    (automation,) = automations
    assert automation.enabled
    (action,) = automation.actions
    assert str(action.deployment_id) == str(retrain.id)
    assert retrain.parameter_openapi_schema["properties"]["model"]["pattern"]  # unsafe names refused by the API

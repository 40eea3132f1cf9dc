"""The Prefect UI as the control panel, driven through the Prefect API as the UI drives it.

One appliance for the module, brought up with `onebox up` (which registers the deployments), and
one `onebox worker` on this host polling the pool `onebox`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.deployments import FLOWS, GPU_LIMIT, WORK_POOL, deployment_name, gpu_count, register_all
from flows.parameters import TrainingParameters
from storage.names import NAME_PATTERN
from storage.registry import PRODUCTION, count_versions, version_by_alias
from storage.settings import Settings
from tests.conftest import isolated_appliance

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ONEBOX = str(Path(sys.executable).with_name("onebox"))
RUN_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Settings]:
    with isolated_appliance(tmp_path_factory) as settings:
        up = subprocess.run([ONEBOX, "up"], capture_output=True, text=True, timeout=900, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        assert (
            "deployments: training-pipeline/onebox, rollback/onebox, drift-check/onebox, retrain/onebox, "
            "retrain-reconcile/onebox"
        ) in up.stdout
        yield settings


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _create_run(parameters: dict[str, Any], flow_name: str = "training-pipeline") -> UUID:
    """What the UI's Run button does: a flow run of the deployment, with the form's values."""
    with _client() as client:
        deployment = client.read_deployment_by_name(deployment_name(flow_name))
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id


def _wait_final(run_ids: list[UUID]) -> dict[UUID, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with _client() as client:
        while True:
            runs = {run_id: client.read_flow_run(run_id) for run_id in run_ids}
            if all(run.state is not None and run.state.is_final() for run in runs.values()):
                return runs
            assert time.monotonic() < deadline, {str(k): v.state for k, v in runs.items()}
            time.sleep(2)


def _logs(run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    messages: list[str] = []
    with _client() as client:
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                sort=LogSort.TIMESTAMP_ASC,
                offset=len(messages),
            )
            messages += [log.message for log in page]
            if not page:
                return messages


def test_the_prefect_ui_is_served(appliance: Settings) -> None:
    import httpx

    page = httpx.get(f"http://127.0.0.1:{appliance.prefect_port}/", timeout=10, follow_redirects=True)
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_up_registers_every_flow_with_a_form_schema(appliance: Settings) -> None:
    with _client() as client:
        pool = client.read_work_pool(WORK_POOL)
        limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        deployments = {entry.name: client.read_deployment_by_name(deployment_name(entry.name)) for entry in FLOWS}
    assert pool.type == "process"
    assert limit.limit == gpu_count() >= 1
    assert limit.active
    training = deployments["training-pipeline"]
    assert training.work_pool_name == WORK_POOL
    assert training.enforce_parameter_schema
    # The code is read from this checkout at each run: no upload step, edits reach the next run.
    assert training.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(Path(__file__).parents[2])}}
    ]
    properties = training.parameter_openapi_schema["properties"]
    assert set(properties) == set(TrainingParameters.model_fields)  # every field, no other
    assert {"model", "model_code", "model_hyperparameters", "init_weights", "augment", "patience", "resume"} <= set(
        properties
    )
    assert properties["model_hyperparameters"]["type"] == "object"  # one JSON object in the form
    for name, field in properties.items():
        assert field["title"] not in {"", name}, name  # written for people, not the Python name
        assert field.get("description"), name
        assert "default" in field, name
    assert properties["epochs"] | {"minimum": 1, "maximum": 1000, "default": 15} == properties["epochs"]
    assert properties["learning_rate"]["exclusiveMinimum"] == 0
    assert properties["dataset"]["enum"] == ["digits"]
    assert properties["device"]["enum"] == ["auto", "cpu", "cuda"]
    assert properties["deploy"]["type"] == "boolean"
    assert properties["deploy"]["default"] is True
    assert properties["model"]["title"] == "Model name"
    assert properties["model"]["default"] is None  # the dataset's name
    assert properties["model"]["pattern"] == NAME_PATTERN.pattern
    rollback = deployments["rollback"].parameter_openapi_schema["properties"]
    assert set(rollback) == {"model", "version"}
    assert rollback["model"]["title"] == "Model name"


def test_registering_again_updates_in_place(appliance: Settings) -> None:
    with _client() as client:
        before = {d.id for d in client.read_deployments()}
    first = register_all(appliance)
    second = register_all(appliance)
    assert [r.deployment_id for r in first] == [r.deployment_id for r in second]
    with _client() as client:
        assert {d.id for d in client.read_deployments()} == before


def test_importing_a_dataset_adds_it_to_the_form(appliance: Settings, tmp_path: Path) -> None:
    from tests.storage.test_datasets import make_folder

    source = make_folder(tmp_path / "parts")
    done = subprocess.run(
        [ONEBOX, "data", "import", str(source), "--name", "parts"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with _client() as client:
        training = client.read_deployment_by_name(deployment_name("training-pipeline"))
    assert training.parameter_openapi_schema["properties"]["dataset"]["enum"] == ["digits", "parts"]


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"epochs": 1001},
        {"learning_rate": 0},
        {"dataset": "no-such-dataset"},
        {"device": "tpu"},
        {"model": "../Etc"},
    ],
    ids=["epochs-0", "epochs-1001", "learning-rate-0", "unknown-dataset", "unknown-device", "unsafe-model-name"],
)
def test_the_api_rejects_out_of_range_parameters(appliance: Settings, bad: dict[str, Any]) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import PrefectHTTPStatusError

    with _client() as client:
        # The training deployment's runs only: the scheduled deployments (drift-check,
        # retrain-reconcile) get runs of their own from the server's scheduler meanwhile.
        training = client.read_deployment_by_name(deployment_name("training-pipeline"))
        only_training = DeploymentFilter(id=DeploymentFilterId(any_=[training.id]))
        runs_before = len(client.read_flow_runs(deployment_filter=only_training))
        with pytest.raises(PrefectHTTPStatusError) as rejected:
            _create_run(bad)
        assert rejected.value.response.status_code in {409, 422}
        assert next(iter(bad)) in rejected.value.response.text  # names the parameter
        assert len(client.read_flow_runs(deployment_filter=only_training)) == runs_before  # no run was created


def test_two_runs_from_the_ui_train_one_after_the_other(appliance: Settings, worker: Path) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    versions_before = count_versions(appliance, "digits")
    run_ids = [_create_run({"epochs": 4, "seed": seed, "deploy": False}) for seed in (1, 2)]
    runs = _wait_final(run_ids)
    assert [run.state.name for run in runs.values()] == ["Completed", "Completed"], worker.read_text()[-3000:]
    assert count_versions(appliance, "digits") == versions_before + 2  # each run registered a model

    with _client() as client:
        spans = []
        for run_id in run_ids:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            (training,) = [t for t in tasks if t.name.startswith("train-")]
            spans.append((training.start_time, training.end_time))
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            kinds = {artifact.key: artifact.type for artifact in artifacts}
            assert kinds == {"training-summary": "markdown", "training-metrics": "table"}
            summary = next(a for a in artifacts if a.key == "training-summary")
            assert f"{appliance.mlflow_tracking_uri}/#/experiments/" in summary.data  # links the MLflow run
            assert "**Gate:**" in summary.data
    (_first_start, first_end), (second_start, _second_end) = sorted(spans)
    assert first_end <= second_start, f"training overlapped: {spans}"  # one `gpu` slot

    for run_id in run_ids:
        logs = _logs(run_id)
        assert any(line.startswith("epoch 1/4: loss") for line in logs)  # the training prints
        assert any(line.startswith("holding a 'gpu' slot") for line in logs)


def test_onebox_train_runs_on_the_worker_and_deploys(appliance: Settings, worker: Path) -> None:
    done = subprocess.run(
        [ONEBOX, "train", "--epochs", "3", "--seed", "5", "--min-improvement", "-1"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started on the worker (test-worker)" in done.stdout
    assert "epoch 1/3: loss" in done.stdout  # it followed the run's logs
    production = version_by_alias(appliance, "digits", PRODUCTION)
    assert production is not None
    assert f"model version  digits v{production.version}" in done.stdout
    status = json.loads(subprocess.run([ONEBOX, "status", "--json"], capture_output=True, check=True).stdout)
    assert status["workers"] == ["test-worker"]
    served = {model["name"]: model["served_version"] for model in status["models"]}
    assert served == {"digits": production.version}


def test_a_failed_run_says_why_and_leaves_production_alone(appliance: Settings, worker: Path) -> None:
    production = version_by_alias(appliance, "digits", PRODUCTION)
    run_id = _create_run({"epochs": 2, "dataset_version": "000000000000", "min_improvement": -1})
    state = _wait_final([run_id])[run_id].state
    assert state.name == "Failed"
    assert "000000000000" in state.message
    assert "digits" in state.message
    after = version_by_alias(appliance, "digits", PRODUCTION)
    assert (after and after.version) == (production and production.version)


def test_rollback_from_the_ui_says_when_there_is_nothing_to_roll_back_to(appliance: Settings, worker: Path) -> None:
    production = version_by_alias(appliance, "digits", PRODUCTION)
    assert production is not None  # deployed by the `onebox train` test above
    run_id = _create_run({"model": "digits"}, flow_name="rollback")
    state = _wait_final([run_id])[run_id].state
    assert state.name == "Failed"
    assert "model digits has no previous production version" in state.message
    unknown = _create_run({"model": "nope"}, flow_name="rollback")
    refused = _wait_final([unknown])[unknown].state
    assert refused.name == "Failed"
    assert "unknown model 'nope'; known models: digits" in refused.message
    after = version_by_alias(appliance, "digits", PRODUCTION)
    assert after is not None
    assert after.version == production.version


def test_a_run_outlasts_mlflow_restarting(appliance: Settings, worker: Path) -> None:
    from serving.compose import ComposeRuntime

    mlflow = ComposeRuntime(appliance)._container("mlflow")
    assert mlflow is not None
    mlflow.stop(timeout=10)
    try:
        run_id = _create_run({"epochs": 2, "seed": 11, "deploy": False})
        deadline = time.monotonic() + 180
        # The run is under way, its next step needs MLflow, and MLflow is down.
        while not any(line.startswith("dataset digits:") for line in _logs(run_id)):
            assert time.monotonic() < deadline, _logs(run_id)
            time.sleep(1)
        time.sleep(5)
    finally:
        mlflow.start()
    state = _wait_final([run_id])[run_id].state
    assert state.name == "Completed", state.message
    assert any(line.startswith("registered ") for line in _logs(run_id))

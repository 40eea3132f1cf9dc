"""The quick reads of MLflow's store agree with MLflow's own client, on a real SQLite store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import free_port
from storage import mlflow_peek
from storage.errors import ModelError
from storage.registry import PRODUCTION, RegisteredVersion, configure_mlflow, peek_alias, version_by_alias
from storage.settings import Settings


def register(settings: Settings, *, versions: int, alias_on: int | None) -> str:
    """Register ``versions`` versions of the model, each from a run of its own; returns the last run id."""
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    client.create_registered_model(settings.model_name)
    run_id = ""
    for index in range(versions):
        run = client.create_run(experiment_id).info
        run_id = run.run_id
        # Inside the run's artifacts: a tracking server refuses a local path elsewhere.
        client.create_model_version(settings.model_name, f"{run.artifact_uri}/model-{index}", run_id=run_id)
    if alias_on is not None:
        client.set_registered_model_alias(settings.model_name, PRODUCTION, str(alias_on))
    return run_id


def test_no_database_yet_is_no_alias_and_creates_nothing(settings: Settings) -> None:
    assert peek_alias(settings, PRODUCTION) is None
    assert not mlflow_peek.run_exists(settings, "0" * 32)
    assert not settings.mlflow_db_path.exists()


def test_agrees_with_mlflow_on_a_real_store(settings: Settings) -> None:
    configure_mlflow(settings)  # a database without the model
    assert peek_alias(settings, PRODUCTION) is None is version_by_alias(settings, PRODUCTION)

    run_id = register(settings, versions=2, alias_on=None)  # the model, no alias
    assert peek_alias(settings, PRODUCTION) is None is version_by_alias(settings, PRODUCTION)
    assert mlflow_peek.run_exists(settings, run_id)
    assert not mlflow_peek.run_exists(settings, "nosuchrun")

    from mlflow import MlflowClient

    MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(settings.model_name, PRODUCTION, "1")
    expected = version_by_alias(settings, PRODUCTION)
    assert expected is not None
    assert (expected.version, expected.source.rsplit("/", 1)[-1]) == ("1", "model-0")
    assert peek_alias(settings, PRODUCTION) == expected
    assert mlflow_peek.alias_version(settings, "previous") is None is version_by_alias(settings, "previous")


def test_another_model_name_has_no_alias(settings: Settings) -> None:
    register(settings, versions=1, alias_on=1)
    other = settings.model_copy(update={"model_name": "another"})
    assert mlflow_peek.alias_version(other, PRODUCTION) is None is version_by_alias(other, PRODUCTION)


def test_an_unknown_store_is_left_to_mlflow(settings: Settings) -> None:
    other = settings.model_copy(update={"tracking_uri": "postgresql://db/mlflow"})
    with pytest.raises(mlflow_peek.NotPeekable):
        mlflow_peek.alias_version(other, PRODUCTION)


def test_a_tracking_server_that_does_not_answer_is_one_line(settings: Settings) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelError, match=rf"^MLflow \({uri}\): "):
        peek_alias(settings.model_copy(update={"tracking_uri": uri}), PRODUCTION)


def test_rest_answers_are_read_as_mlflow_sends_them(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shapes of MLflow's REST API (GET /api/2.0/mlflow/registered-models/alias, runs/get).
    def get(url: str, **kwargs: object) -> httpx.Response:
        if url.endswith("registered-models/alias"):
            version = {"name": settings.model_name, "version": "3", "run_id": "abc", "source": "models:/m-1"}
            return httpx.Response(200, json={"model_version": version})
        return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' not found"})

    monkeypatch.setattr(httpx, "get", get)
    remote = settings.model_copy(update={"tracking_uri": "http://mlflow.invalid:5000"})
    assert mlflow_peek.alias_version(remote, PRODUCTION) == RegisteredVersion(
        settings.model_name, "3", "abc", "models:/m-1"
    )
    assert not mlflow_peek.run_exists(remote, "x")
    with pytest.raises(ModelError, match="run 'x' does not exist"):
        mlflow_peek.require_runs(remote, [None, "x"])


@pytest.mark.slow  # starts a real `mlflow server`
def test_rest_reads_agree_with_mlflow_on_a_real_tracking_server(settings: Settings, tmp_path: Path) -> None:
    from benchmarks.servers import BIN
    from serving.processes import stop_process_group
    from serving.waiting import NotYet, wait_for

    port = free_port()
    store = settings.model_copy(update={"home": tmp_path / "server-home"})
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", store.mlflow_tracking_uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    store.home.mkdir(parents=True)
    with (tmp_path / "mlflow.log").open("wb") as log:
        server = subprocess.Popen(
            command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    remote = settings.model_copy(update={"tracking_uri": f"http://127.0.0.1:{port}"})

    def healthy() -> None:
        try:
            if httpx.get(f"{remote.tracking_uri}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError as error:
            raise NotYet(type(error).__name__) from error
        raise NotYet("not healthy")

    try:
        wait_for(healthy, timeout_s=180, what="mlflow server")
        assert mlflow_peek.alias_version(remote, PRODUCTION) is None is version_by_alias(remote, PRODUCTION)
        run_id = register(remote, versions=2, alias_on=None)
        assert mlflow_peek.alias_version(remote, PRODUCTION) is None is version_by_alias(remote, PRODUCTION)
        from mlflow import MlflowClient

        MlflowClient(remote.mlflow_tracking_uri).set_registered_model_alias(remote.model_name, PRODUCTION, "2")
        expected = version_by_alias(remote, PRODUCTION)
        assert expected is not None
        assert expected.version == "2"
        assert expected.run_id == run_id
        assert mlflow_peek.alias_version(remote, PRODUCTION) == expected
        assert mlflow_peek.run_exists(remote, run_id)
        assert not mlflow_peek.run_exists(remote, "0" * 32)
    finally:
        stop_process_group(server.pid)

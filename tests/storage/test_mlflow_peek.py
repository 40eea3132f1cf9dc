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
from storage.registry import (
    LEGACY_MODEL_NAME,
    PRODUCTION,
    RETIRED_TAG,
    RegisteredVersion,
    configure_mlflow,
    peek_alias,
    registered_models,
    resolve_model,
    version_by_alias,
)
from storage.settings import Settings

NAME = "parts"


def register(settings: Settings, *, versions: int, alias_on: int | None, name: str = NAME) -> str:
    """Register ``versions`` versions of model ``name``, each from a run of its own; returns the last run id."""
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    client.create_registered_model(name)
    run_id = ""
    for index in range(versions):
        run = client.create_run(experiment_id).info
        run_id = run.run_id
        # Inside the run's artifacts: a tracking server refuses a local path elsewhere.
        client.create_model_version(name, f"{run.artifact_uri}/model-{index}", run_id=run_id)
    if alias_on is not None:
        client.set_registered_model_alias(name, PRODUCTION, str(alias_on))
    return run_id


def test_no_database_yet_is_no_alias_and_creates_nothing(settings: Settings) -> None:
    assert peek_alias(settings, NAME, PRODUCTION) is None
    assert not mlflow_peek.run_exists(settings, "0" * 32)
    assert not settings.mlflow_db_path.exists()


def test_agrees_with_mlflow_on_a_real_store(settings: Settings) -> None:
    configure_mlflow(settings)  # a database without the model
    assert peek_alias(settings, NAME, PRODUCTION) is None is version_by_alias(settings, NAME, PRODUCTION)

    run_id = register(settings, versions=2, alias_on=None)  # the model, no alias
    assert peek_alias(settings, NAME, PRODUCTION) is None is version_by_alias(settings, NAME, PRODUCTION)
    assert mlflow_peek.run_exists(settings, run_id)
    assert not mlflow_peek.run_exists(settings, "nosuchrun")

    from mlflow import MlflowClient

    MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(NAME, PRODUCTION, "1")
    expected = version_by_alias(settings, NAME, PRODUCTION)
    assert expected is not None
    assert (expected.version, expected.source.rsplit("/", 1)[-1]) == ("1", "model-0")
    assert peek_alias(settings, NAME, PRODUCTION) == expected
    assert mlflow_peek.alias_version(settings, NAME, "previous") is None is version_by_alias(settings, NAME, "previous")


def test_another_model_name_has_no_alias(settings: Settings) -> None:
    register(settings, versions=1, alias_on=1)
    assert mlflow_peek.alias_version(settings, "another", PRODUCTION) is None
    assert version_by_alias(settings, "another", PRODUCTION) is None


def test_registered_models_agree_with_mlflow(settings: Settings) -> None:
    """Two models, one with production and a retired tag: the quick listing and MLflow's say the same."""
    from mlflow import MlflowClient

    assert mlflow_peek.registered_models(settings) == []  # no database yet
    assert not settings.mlflow_db_path.exists()
    register(settings, versions=2, alias_on=2)
    register(settings, versions=1, alias_on=None, name="digits")
    client = MlflowClient(settings.mlflow_tracking_uri)
    client.set_model_version_tag(NAME, "2", "test_accuracy", "0.9100")
    client.set_registered_model_tag("digits", RETIRED_TAG, "true")

    peeked = mlflow_peek.registered_models(settings)

    assert [model.name for model in peeked] == ["digits", NAME]
    digits, parts = peeked
    assert (digits.aliases, digits.tags, digits.production_tags) == ({}, {RETIRED_TAG: "true"}, {})
    assert parts.aliases == {PRODUCTION: "2"}
    assert parts.production_tags == {"test_accuracy": "0.9100"}
    with pytest.MonkeyPatch.context() as patch:  # the MLflow path of registry.registered_models
        patch.setattr(mlflow_peek, "registered_models", raise_not_peekable)
        assert registered_models(settings) == peeked


def raise_not_peekable(*args: object, **kwargs: object) -> list[mlflow_peek.PeekedModel]:
    raise mlflow_peek.NotPeekable("asked MLflow")


def test_an_unknown_model_name_lists_the_known_ones(settings: Settings) -> None:
    register(settings, versions=1, alias_on=1)
    register(settings, versions=1, alias_on=None, name="digits")
    with pytest.raises(ModelError, match=r"^unknown model 'nope'; known models: digits, parts$"):
        resolve_model(settings, "nope")
    with pytest.raises(ModelError, match="there are 2 models"):
        resolve_model(settings, None)
    assert resolve_model(settings, "digits") == "digits"


def test_the_only_model_is_picked_when_none_is_named(settings: Settings) -> None:
    with pytest.raises(ModelError, match="no model is registered yet"):
        resolve_model(settings, None)
    register(settings, versions=1, alias_on=1, name=LEGACY_MODEL_NAME)  # a home from before named models
    assert resolve_model(settings, None) == LEGACY_MODEL_NAME


def test_an_unknown_store_is_left_to_mlflow(settings: Settings) -> None:
    other = settings.model_copy(update={"tracking_uri": "postgresql://db/mlflow"})
    with pytest.raises(mlflow_peek.NotPeekable):
        mlflow_peek.alias_version(other, NAME, PRODUCTION)


def test_a_tracking_server_that_does_not_answer_is_one_line(settings: Settings) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelError, match=rf"^MLflow \({uri}\): "):
        peek_alias(settings.model_copy(update={"tracking_uri": uri}), NAME, PRODUCTION)


def test_rest_answers_are_read_as_mlflow_sends_them(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shapes of MLflow's REST API (GET /api/2.0/mlflow/registered-models/alias, runs/get).
    def get(url: str, **kwargs: object) -> httpx.Response:
        if url.endswith("registered-models/alias"):
            version = {"name": NAME, "version": "3", "run_id": "abc", "source": "models:/m-1"}
            return httpx.Response(200, json={"model_version": version})
        return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' not found"})

    monkeypatch.setattr(httpx, "get", get)
    remote = settings.model_copy(update={"tracking_uri": "http://mlflow.invalid:5000"})
    assert mlflow_peek.alias_version(remote, NAME, PRODUCTION) == RegisteredVersion(NAME, "3", "abc", "models:/m-1")
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
        assert mlflow_peek.alias_version(remote, NAME, PRODUCTION) is None is version_by_alias(remote, NAME, PRODUCTION)
        run_id = register(remote, versions=2, alias_on=None)
        assert mlflow_peek.alias_version(remote, NAME, PRODUCTION) is None is version_by_alias(remote, NAME, PRODUCTION)
        from mlflow import MlflowClient

        MlflowClient(remote.mlflow_tracking_uri).set_registered_model_alias(NAME, PRODUCTION, "2")

        def client_tags(store: Settings) -> dict[str, str]:
            return dict(MlflowClient(store.mlflow_tracking_uri).get_model_version(NAME, "2").tags)

        expected = version_by_alias(remote, NAME, PRODUCTION)
        assert expected is not None
        assert expected.version == "2"
        assert expected.run_id == run_id
        assert mlflow_peek.alias_version(remote, NAME, PRODUCTION) == expected
        assert mlflow_peek.run_exists(remote, run_id)
        assert not mlflow_peek.run_exists(remote, "0" * 32)
        assert mlflow_peek.registered_models(remote) == [
            mlflow_peek.PeekedModel(NAME, {PRODUCTION: "2"}, {}, dict(client_tags(remote)))
        ]
    finally:
        stop_process_group(server.pid)

"""The training pipeline as a real Prefect flow run against a real MLflow store."""

from __future__ import annotations

import httpx
import pytest
from mlflow import MlflowClient
from prefect.exceptions import ParameterTypeError

from flows.pipeline import training_pipeline
from storage.errors import DatasetError
from storage.registry import PREVIOUS, PRODUCTION, count_versions, version_by_alias
from tests.conftest import TrainedPipeline

pytestmark = pytest.mark.slow


def test_run_is_tracked_registered_promoted_and_served(trained: TrainedPipeline) -> None:
    settings, result = trained.settings, trained.result
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(result.run_id)

    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "10"
    assert run.data.params["dataset_name"] == "digits"
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert run.data.metrics["onnx_top1_agreement"] == 1.0
    assert run.data.metrics["onnx_max_abs_logit_diff"] < 1e-3
    assert len(client.get_metric_history(result.run_id, "val_accuracy")) == 10
    assert run.data.tags["onebox.gate"] == "passed"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"model_card.json", "evaluation.json", "reference.npz"} <= artifacts  # the drift reference too
    assert run.data.metrics["onnx_embedding_size"] == 128
    assert run.data.metrics["onnx_max_abs_embedding_diff"] < 1e-3

    production = version_by_alias(settings, "digits", PRODUCTION)
    assert production is not None
    assert production.run_id == result.run_id
    assert result.served_url == f"{settings.serve_url}/models/digits"  # the model's own base URL
    answer = httpx.get(f"{settings.serve_url}/metadata").json()
    assert answer["model_version"] == production.version
    assert answer["run_id"] == result.run_id


def test_worse_challenger_is_kept_out(trained: TrainedPipeline) -> None:
    settings = trained.settings
    before = version_by_alias(settings, "digits", PRODUCTION)
    assert before is not None

    worse = training_pipeline(epochs=1, learning_rate=1e-5, seed=7, deploy=True, min_improvement=0.0)

    assert not worse.decision.promote
    assert worse.decision.reason.startswith("kept production")
    assert worse.decision.production_version == before.version
    assert worse.served_url is None
    assert version_by_alias(settings, "digits", PRODUCTION) == before
    assert httpx.get(f"{settings.serve_url}/metadata").json()["model_version"] == before.version


def test_train_only_registers_without_deploying(trained: TrainedPipeline) -> None:
    settings = trained.settings
    before = version_by_alias(settings, "digits", PRODUCTION)

    result = training_pipeline(epochs=1, seed=3, deploy=False, min_improvement=-1.0)

    assert result.decision.promote  # a negative minimum forces the gate open...
    assert result.served_url is None  # ...but nothing is deployed
    assert version_by_alias(settings, "digits", PRODUCTION) == before
    assert int(result.model_version) == count_versions(settings, "digits")


def test_bad_parameters_and_datasets_leave_no_trace(trained: TrainedPipeline) -> None:
    settings = trained.settings
    versions = count_versions(settings, "digits")
    with pytest.raises(ParameterTypeError, match="epochs"):
        training_pipeline(epochs=0)
    with pytest.raises(ParameterTypeError, match="device"):
        training_pipeline(device="tpu")
    with pytest.raises(DatasetError, match="unknown dataset"):
        training_pipeline(dataset="nope")
    assert count_versions(settings, "digits") == versions


def test_forced_promotion_moves_production_and_remembers_previous(trained: TrainedPipeline) -> None:
    settings = trained.settings
    before = version_by_alias(settings, "digits", PRODUCTION)
    assert before is not None

    # Ten epochs: later tests check the served model is still a good one.
    result = training_pipeline(epochs=10, seed=11, deploy=True, min_improvement=-1.0)

    assert result.promoted
    assert version_by_alias(settings, "digits", PRODUCTION).version == result.model_version  # type: ignore[union-attr]
    assert version_by_alias(settings, "digits", PREVIOUS) == before
    assert httpx.get(f"{settings.serve_url}/metadata").json()["model_version"] == result.model_version

"""The drift-check flow for real (the test Prefect server, the trained model's MLflow store) and
``onebox drift`` as a user runs it: JSON, exit codes, one-line answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.perturbations import perturb
from flows.prepare import Split
from flows.reference import Reference
from serving.predictor import OnnxPredictor
from storage.inbox import inbox_items
from storage.prediction_log import append_records, image_path, model_log_dir
from storage.settings import Settings, get_settings
from tests.conftest import TrainedPipeline, png_bytes
from tests.flows.test_drift import make_records, own_home, served_bundle

pytestmark = pytest.mark.slow  # the session's trained model

ONEBOX = str(Path(sys.executable).with_name("onebox"))


@pytest.fixture(scope="module")
def served(trained: TrainedPipeline) -> tuple[OnnxPredictor, Reference, Split]:
    return served_bundle(trained)


@pytest.fixture
def home(trained: TrainedPipeline, tmp_path: Path) -> Iterator[Settings]:
    """The trained model's store, a prediction log and inbox of this test's own, as the process settings."""
    settings = own_home(trained, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONEBOX_HOME", str(settings.home))
        patch.setenv("ONEBOX_TRACKING_URI", settings.mlflow_tracking_uri)
        get_settings.cache_clear()
        yield get_settings()
    get_settings.cache_clear()


def log_traffic(settings: Settings, predictor: OnnxPredictor, images: np.ndarray, *, keep_images: bool) -> None:
    records = make_records(predictor, images)
    if keep_images:
        kept = []
        for record, image in zip(records, images, strict=True):
            path = image_path(settings.predictions_dir, record.model, record.sha256, "png")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(image[0]))
            relative = str(path.relative_to(model_log_dir(settings.predictions_dir, record.model)))
            kept.append(record.__class__(**{**record.__dict__, "image": relative}))
        records = kept
    append_records(settings.predictions_dir, "test-writer", records)


def onebox(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "ONEBOX_HOME": str(settings.home),
        "ONEBOX_TRACKING_URI": settings.mlflow_tracking_uri,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the test server: no local one started
    }
    return subprocess.run([ONEBOX, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_drifted_window_is_logged_alerted_and_fills_the_inbox(
    home: Settings, served: tuple[OnnxPredictor, Reference, Split]
) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    from flows.drift_flow import drift_check_flow
    from flows.drift_report import MONITORING_EXPERIMENT

    predictor, _, validation = served
    rng = np.random.default_rng(7)
    images = perturb(validation.images[rng.choice(len(validation), 300)], "rotate", rng)
    log_traffic(home, predictor, images, keep_images=True)

    (result,) = drift_check_flow(model="digits")

    assert result["drift"] is True, result["reason"]
    assert result["window"] == 300
    assert {test["name"] for test in result["tests"]} == {
        "class_probability_ks",
        "predicted_class_chi2",
        "embedding_mmd",
        "confidence_ks",
    }
    # MLflow: one run of the monitoring experiment with each test's figures.
    client = MlflowClient(home.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    assert experiment is not None
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.experiment_id == experiment.experiment_id
    assert run.data.params["model"] == "digits"
    assert run.data.params["window"] == "300"
    assert run.data.metrics["drift"] == 1.0
    assert 0 <= run.data.metrics["embedding_mmd.p_value"] <= 1
    assert {item.path for item in client.list_artifacts(run.info.run_id)} == {"drift.json", "drift.png"}
    # The inbox: bounded, each image beside its sidecar, the model's guess kept.
    items = inbox_items(home.inbox_dir, "digits")
    assert 0 < len(items) <= home.drift_inbox_per_check
    assert sum(result["inbox_added"].values()) == len(items)
    for item in items:
        assert (home.inbox_dir / "digits" / item.file).is_file()
        assert item.guess in predictor.metadata.classes
    # Prefect: the artifact with the plot, and the drift event about this model.
    EventsWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as prefect:
        artifact = prefect.read_latest_artifacts()
        keys = {found.key: found for found in artifact}
        assert "drift-digits" in keys
        assert "data:image/png;base64," in str(keys["drift-digits"].data)
        answer = prefect.request(
            "POST",
            "/events/filter",
            json={
                "filter": {
                    "event": {"name": ["onebox.drift.detected"]},
                    "any_resource": {"id": ["onebox.model.digits"]},
                }
            },
        )
    assert answer.json()["total"] >= 1

    # The same check again adds no image twice.
    (again,) = drift_check_flow(model="digits")
    assert again["drift"] is True
    assert len(inbox_items(home.inbox_dir, "digits")) == len(items) + sum(again["inbox_added"].values())


def test_the_command_prints_json_and_exits_3_on_drift(
    home: Settings, served: tuple[OnnxPredictor, Reference, Split]
) -> None:
    predictor, _, validation = served
    rng = np.random.default_rng(3)
    log_traffic(
        home, predictor, perturb(validation.images[rng.choice(len(validation), 200)], "invert", rng), keep_images=False
    )
    done = onebox(home, "drift", "--model", "digits", "--json")
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["drift"] is True
    assert report["window"] == 200
    for test in report["tests"]:
        assert set(test) >= {"name", "statistic", "p_value", "alpha", "drift"}


def test_a_clean_window_exits_0(home: Settings, served: tuple[OnnxPredictor, Reference, Split]) -> None:
    predictor, _, validation = served
    log_traffic(home, predictor, validation.images, keep_images=False)
    done = onebox(home, "drift")  # the only model: --model may be left out
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"digits v{predictor.metadata.model_version}: no drift in the newest" in done.stdout


def test_too_few_predictions_is_not_enough_data_not_no_drift(
    home: Settings, served: tuple[OnnxPredictor, Reference, Split]
) -> None:
    from flows.drift_flow import drift_check_flow

    predictor, _, validation = served
    log_traffic(home, predictor, validation.images[:40], keep_images=False)
    done = onebox(home, "drift", "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["drift"] is None
    assert report["window"] == 40
    version = predictor.metadata.model_version
    assert report["reason"].startswith(f"not enough data: 40 predictions of digits v{version} logged")
    plain = onebox(home, "drift")
    assert plain.returncode == 4
    assert plain.stderr.strip().splitlines() == [f"digits v{version}: {report['reason']}"]
    (result,) = drift_check_flow(model="digits")  # the scheduled flow says the same, and does not fail
    assert result["drift"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("drift", "--model", "nope"), "error: unknown model 'nope'; known models: digits"),
        (("drift", "--model", "../x"), ""),
    ],
)
def test_bad_model_names_are_one_line(home: Settings, args: tuple[str, ...], message: str) -> None:
    done = onebox(home, *args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr


def test_the_flow_is_registered_with_a_daily_schedule_and_a_form(prefect_server: None, settings: Settings) -> None:
    from prefect.client.orchestration import get_client

    from flows.deployments import deployment_name, register_all
    from storage.names import NAME_PATTERN

    registered = {entry.name: entry.deployment_id for entry in register_all(settings)}
    assert "drift-check/onebox" in registered
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name("drift-check"))
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 5 * * *"  # type: ignore[union-attr]
    assert schedule.active
    assert deployment.parameter_openapi_schema is not None
    model = deployment.parameter_openapi_schema["properties"]["model"]
    assert model["title"] == "Model name"
    assert model["pattern"] == NAME_PATTERN.pattern  # "../x" is refused before a run exists

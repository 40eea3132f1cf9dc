"""The continuous-training loop end to end, on one appliance with a worker on this host.

train and serve -> drifted traffic (`onebox simulate`) -> `onebox drift` flags it and fills the
inbox -> images labeled on the labeling page in headless Chromium -> "Create dataset version" ->
the event's trigger (an automation of the appliance's Prefect server) runs `retrain` on the
worker -> it starts the training deployment on the new version -> the gate decides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.waiting import NotYet, wait_for
from storage.settings import Settings
from tests.conftest import isolated_appliance
from tests.flows.test_deployments import _client, _logs, _wait_final
from tests.serving.chromium import chromium_page
from tests.serving.test_labeling_page import press, shown

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2700)]  # the whole loop: 15-30 min here

ONEBOX = str(Path(sys.executable).with_name("onebox"))
LABELED = 12  # images labeled on the page: enough to make a new version, few enough to be quick
TRAINING_TIMEOUT_S = 900  # a 2-epoch training, its export and a model image, on a busy 2-core machine


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with isolated_appliance(tmp_path_factory) as settings:
        up = subprocess.run([ONEBOX, "up"], capture_output=True, text=True, timeout=1200, check=False)
        if "to be healthy" in up.stderr:
            # `up` waits 300 s for the services; with several appliances starting on 2 cores it
            # took longer. It is idempotent: the second one waits for the same containers.
            up = subprocess.run([ONEBOX, "up"], capture_output=True, text=True, timeout=1200, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "retrain/onebox, retrain-reconcile/onebox" in up.stdout
        yield settings


def onebox(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300"}
    return subprocess.run([ONEBOX, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _training_runs_on(dataset_version: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with _client() as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["training-pipeline"])))
    return [run for run in runs if run.parameters.get("dataset_version") == dataset_version]


def _label_on_the_page(settings: Settings, count: int) -> str:
    """Label ``count`` inbox images on the appliance's labeling page (through the gateway) with the
    keyboard, taking the model's guess with Enter, and create the version; returns the page's message."""
    with chromium_page() as page:
        page.open(f"{settings.serve_url}/label/digits/")
        seen = set()
        for done in range(1, count + 1):
            seen.add(shown(page))
            press(page, "Enter")  # the model's guess, as a hurried labeler takes it
            page.wait_until(
                f"document.getElementById('progress-text').textContent.startsWith('{done} of ')",
                what=f"{done} labeled",
            )
        assert len(seen) == count  # a new image each time
        page.evaluate("document.getElementById('merge').click()")
        message = page.wait_until(
            "document.getElementById('merge-result').textContent.startsWith('Created dataset') &&"
            " document.getElementById('merge-result').textContent",
            what="the new dataset version",
            timeout_s=180,
        )
        return str(message)


def test_drift_to_labels_to_a_retrained_model_judged_by_the_gate(appliance: Settings, worker: Path) -> None:
    import httpx

    from flows.remote import mlflow_run_for
    from flows.retraining import RETRAIN_TAG, reconcile
    from storage.datasets import list_datasets
    from storage.inbox import inbox_items
    from storage.prediction_log import read_records
    from storage.registry import PRODUCTION, count_versions, mlflow_client, version_by_alias

    settings = appliance
    trained = onebox("train", "--epochs", "2", "--seed", "0", timeout=TRAINING_TIMEOUT_S)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    production = version_by_alias(settings, "digits", PRODUCTION)
    assert production is not None

    sent = onebox("simulate", "--model", "digits", "--drift", "invert", "--count", "200", "--seed", "1")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "200 answered" in sent.stdout

    def logged() -> int:  # the model's writer flushes in batches, off the request path
        records = len(read_records(settings.predictions_dir, "digits", version=production.version))
        if records < 200:
            # What the served model says of its log: switched on, written, dropped (for a failure's message).
            stats = httpx.get(f"{settings.serve_url}/models/digits/metadata", timeout=30).json().get("prediction_log")
            every = len(read_records(settings.predictions_dir, "digits"))
            raise NotYet(
                f"{records} records of v{production.version}, {every} of any version; the server's log: {stats}"
            )
        return records

    wait_for(logged, timeout_s=120, what="the prediction log to hold the 200 predictions")
    checked = onebox("drift", "--model", "digits", "--json")
    assert checked.returncode == 3, checked.stdout + checked.stderr  # 3: drift
    report = json.loads(checked.stdout)  # the flow run's log lines go to stderr with --json
    assert report["drift"] is True
    assert len(inbox_items(settings.inbox_dir, "digits")) >= LABELED

    message = _label_on_the_page(settings, LABELED)
    assert f"({LABELED} from the inbox" in message
    assert "retraining of model digits was requested" in message, message
    (made,) = [v for v in list_datasets(settings) if (v.lineage or {}).get("model") == "digits"]

    def training_started() -> Any:
        runs = _training_runs_on(made.version)
        if not runs:
            raise NotYet("no training run on the new version yet")
        return runs

    (run,) = wait_for(training_started, timeout_s=300, what="the trigger to start a training on the new version")
    assert RETRAIN_TAG in run.tags
    assert run.parameters["model"] == "digits"
    assert run.parameters["epochs"] == 2  # production's own hyperparameters, on the new data
    final = _wait_final([run.id])[run.id]
    assert final.state.name == "Completed", "\n".join(_logs(run.id)[-40:]) + worker.read_text()[-3000:]
    assert any(line.startswith(f"dataset digits:{made.version}: ") for line in _logs(run.id))  # the new data
    mlflow_run = mlflow_client(settings).get_run(mlflow_run_for(settings, str(run.id)))
    assert mlflow_run.data.params["dataset_version"] == made.version
    assert mlflow_run.data.tags["onebox.gate"] in {"passed", "kept-production"}  # the gate's decision, recorded
    assert mlflow_run.data.tags["onebox.gate_reason"]
    assert count_versions(settings, "digits") == 2
    after = version_by_alias(settings, "digits", PRODUCTION)
    assert after is not None
    promoted = mlflow_run.data.tags["onebox.gate"] == "passed"
    assert after.version == ("2" if promoted else production.version)  # production moved only if the gate passed
    # The run's evaluation report shows the new data: where it came from and what it added.
    from flows.run_record import fetch_report
    from tests.flows.test_report import table_rows

    data = table_rows(fetch_report(settings, mlflow_run.info.run_id).read_text(), "data-lineage")
    assert data["version"] == f"digits:{made.version}"
    assert made.lineage is not None
    assert data["made from"].startswith(f"digits:{made.lineage['parent']} and images labeled from model digits")
    assert data["inbox batch"].endswith(": 12 images")
    assert sum(int(part.split("+")[1]) for part in data["added per class"].split(", ")) == 12

    # The scheduled reconcile finds the version trained and starts nothing; the run stays one.
    assert reconcile(settings) == []
    assert len(_training_runs_on(made.version)) == 1

"""The evaluation report each run leaves: logged to MLflow, plots inline, numbers that match."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from mlflow import MlflowClient

from flows.evaluate import evaluate_probabilities
from flows.export import LATENCY_BATCH_SIZES
from flows.parameters import TrainingParameters
from flows.prepare import Split
from flows.report import build_report, data_rows, render_report
from flows.run_record import REPORT_FILE, RunRecord, fetch_report, latest_run_with_report, read_run
from storage.datasets import DatasetVersion
from storage.errors import ModelError
from storage.registry import PRODUCTION, version_by_alias
from tests.conftest import TrainedPipeline

if TYPE_CHECKING:
    from flows.pipeline import PipelineResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inline_images(html: str) -> dict[str, bytes]:
    found = re.findall(r'<img id="([\w-]+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {name: base64.b64decode(data) for name, data in found}


def metric_cell(html: str, name: str) -> float:
    match = re.search(rf'data-metric="{re.escape(name)}">([0-9.]+)<', html)
    assert match, f"no {name} in the report"
    return float(match.group(1))


def table_rows(html: str, table_id: str) -> dict[str, str]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table, f"no table {table_id}"
    return dict(re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", table.group(1)))


@pytest.fixture(scope="module")
def challenger(trained: TrainedPipeline) -> PipelineResult:
    """A second run of the session's pipeline, trained for this module: kept out, with a report."""
    from flows.pipeline import training_pipeline

    result: PipelineResult = training_pipeline(epochs=3, seed=5, deploy=False)
    return result


def synthetic_record(parameters: TrainingParameters, *, gate_reason: str) -> RunRecord:
    """What MLflow would hold about a run, written by hand: no store, no training."""
    params = {key: str(value) for key, value in parameters.hyperparameters().items()}
    metrics = {f"{kind}_latency_ms_b{b}": 0.1 * b for b in LATENCY_BATCH_SIZES for kind in ("torch", "onnx")}
    return RunRecord(
        run_id="run-1",
        run_name="shapes-seed0",
        started=datetime(2026, 1, 1, tzinfo=UTC),
        ended=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        params={**params, "dataset_name": "shapes", "dataset_version": "abc123", "device_used": "cpu"},
        metrics=metrics,
        tags={"onebox.model_version": "4", "onebox.gate": "passed", "onebox.gate_reason": gate_reason},
        history={
            "train_loss": [1.0, 0.5],
            "val_loss": [1.1, 0.6],
            "train_accuracy": [0.5, 0.8],
            "val_accuracy": [0.4, 0.7],
        },
    )


def test_the_report_renders_from_a_hand_built_record() -> None:
    classes = ("circle", "square", "star")
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    images = np.random.default_rng(0).integers(0, 256, size=(len(labels), 1, 4, 4), dtype=np.uint8)
    probabilities = np.full((len(labels), 3), 0.1)
    probabilities[np.arange(len(labels)), labels] = 0.8
    probabilities[7] = [0.7, 0.2, 0.1]  # one square read as a circle
    ours = evaluate_probabilities(probabilities, labels, classes)
    theirs = evaluate_probabilities(np.eye(3)[np.zeros(len(labels), dtype=int)], labels, classes)  # all circles
    parameters = TrainingParameters(epochs=2, learning_rate=0.01, seed=3)
    record = synthetic_record(parameters, gate_reason="promoted: challenger v4 beats production v3")

    html = render_report(
        record,
        model_name="shapes-classifier",
        test=Split.from_arrays(images, labels),
        classes=classes,
        challenger=ours,
        probabilities=probabilities,
        baseline=theirs,
        baseline_version="3",
    )

    assert metric_cell(html, "challenger-accuracy") == pytest.approx(7 / 8, abs=5e-5)
    assert metric_cell(html, "baseline-accuracy") == pytest.approx(3 / 8, abs=5e-5)
    assert 'id="comparison"' in html
    assert "production v3" in html
    assert "challenger v4 beats production v3" in html
    assert "shapes:abc123" in html
    # The hyperparameter table is the model's fields, under their titles.
    expected = {TrainingParameters.model_fields[k].title: str(v) for k, v in parameters.hyperparameters().items()}
    assert table_rows(html, "hyperparameters") == expected
    images_in = inline_images(html)
    assert {"plot-confusion", "plot-curves", "plot-latency", "plot-misclassified"} <= set(images_in)
    assert all(png.startswith(PNG_MAGIC) for png in images_in.values())


def test_a_first_model_report_has_no_comparison() -> None:
    classes = ("circle", "square")
    labels = np.array([0, 1, 0, 1])
    probabilities = np.eye(2)[labels]  # every answer right
    html = render_report(
        synthetic_record(TrainingParameters(), gate_reason="promoted: no production model yet"),
        model_name="shapes-classifier",
        test=Split.from_arrays(np.zeros((4, 1, 2, 2), dtype=np.uint8), labels),
        classes=classes,
        challenger=evaluate_probabilities(probabilities, labels, classes),
        probabilities=probabilities,
    )
    assert 'id="comparison"' not in html
    assert "shapes-classifier has no production version yet" in html
    assert "plot-misclassified" not in inline_images(html)  # nothing to show


def test_a_refused_challengers_report_says_why_not_first_model() -> None:
    classes = ("circle", "square")
    labels = np.array([0, 1, 0, 1])
    probabilities = np.eye(2)[labels]
    reason = "refused: model shapes is bound by its first version v1 to 3 classes; train it under a new model name"
    record = synthetic_record(TrainingParameters(), gate_reason=reason)
    record.tags["onebox.gate"] = "refused"
    html = render_report(
        record,
        model_name="shapes",
        test=Split.from_arrays(np.zeros((4, 1, 2, 2), dtype=np.uint8), labels),
        classes=classes,
        challenger=evaluate_probabilities(probabilities, labels, classes),
        probabilities=probabilities,
        baseline_note=f"Not compared with shapes's production: {reason.removeprefix('refused: ')}",
    )
    banner = re.search(r'<div class="decision ([a-z]+)" id="decision">(.*?)</div>', html, re.S)
    assert banner is not None
    assert banner.group(1) == "kept"
    assert "Not promoted." in banner.group(2)
    assert "bound by its first version v1" in banner.group(2)
    assert "Not compared with shapes&#39;s production: model shapes is bound" in html
    assert "no production version yet" not in html
    assert 'id="comparison"' not in html


@pytest.mark.slow
def test_first_run_logs_a_report_without_comparison(trained: TrainedPipeline) -> None:
    settings, run_id = trained.settings, trained.result.run_id
    artifacts = {a.path for a in MlflowClient(settings.mlflow_tracking_uri).list_artifacts(run_id)}
    assert REPORT_FILE in artifacts

    html = fetch_report(settings, run_id).read_text()
    assert 'id="comparison"' not in html
    assert "digits has no production version yet" in html
    assert metric_cell(html, "challenger-accuracy") == pytest.approx(trained.result.test_accuracy, abs=5e-5)
    images = inline_images(html)
    assert {"plot-confusion", "plot-curves", "plot-latency"} <= set(images)
    assert all(png.startswith(PNG_MAGIC) for png in images.values())
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained: nothing fetched
    assert "digits v1" in html
    assert table_rows(html, "data-lineage")["made by"] == "an import"  # the bundled digits
    tags = MlflowClient(settings.mlflow_tracking_uri).get_run(run_id).data.tags
    assert re.fullmatch(r"[0-9a-f]{12}( \(uncommitted changes\))?|not a git checkout", tags["onebox.git_commit"])
    assert tags["onebox.git_commit"] in html


@pytest.mark.slow
def test_challenger_report_matches_the_metrics_logged_to_mlflow(
    trained: TrainedPipeline, challenger: PipelineResult
) -> None:
    settings, result = trained.settings, challenger
    run = MlflowClient(settings.mlflow_tracking_uri).get_run(result.run_id)
    html = fetch_report(settings, result.run_id).read_text()

    assert 'id="comparison"' in html
    assert metric_cell(html, "challenger-accuracy") == pytest.approx(run.data.metrics["test_accuracy"], abs=5e-5)
    assert metric_cell(html, "challenger-macro-F1") == pytest.approx(run.data.metrics["test_macro_f1"], abs=5e-5)
    assert metric_cell(html, "baseline-accuracy") == pytest.approx(
        run.data.metrics["production_test_accuracy"], abs=5e-5
    )
    assert metric_cell(html, "baseline-macro-F1") == pytest.approx(
        run.data.metrics["production_test_macro_f1"], abs=5e-5
    )
    production = version_by_alias(settings, "digits", PRODUCTION)
    assert production is not None
    assert f"production v{production.version}" in html
    assert result.decision.reason.split(": ", 1)[1] in html
    assert "plot-misclassified" in inline_images(html)  # three epochs leave mistakes to show
    assert latest_run_with_report(settings) == result.run_id
    logged = json.loads(
        Path(
            MlflowClient(settings.mlflow_tracking_uri).download_artifacts(result.run_id, "evaluation.json")
        ).read_text()
    )
    assert logged["accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])


@pytest.mark.slow
def test_prefect_run_summary_links_the_report(trained: TrainedPipeline) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["training-summary"]))
        )
    summaries = [a.data for a in artifacts if isinstance(a.data, str) and trained.result.run_id in a.data]
    assert summaries, "no training-summary artifact names the run"
    assert f"[{REPORT_FILE}](" in summaries[0]
    assert "**Gate:**" in summaries[0]


@pytest.mark.slow
def test_compare_any_two_runs(trained: TrainedPipeline, challenger: PipelineResult) -> None:
    settings = trained.settings
    first, other = trained.result.run_id, challenger.run_id
    html = build_report(
        settings, other, baseline_version=read_run(settings, first).model_version, baseline_label="run A"
    )
    assert 'id="comparison"' in html
    assert "run A v1" in html

    env = {**os.environ, "ONEBOX_HOME": str(settings.home)}
    cli = str(Path(sys.executable).with_name("onebox"))
    done = subprocess.run(
        [cli, "report", "--compare", other, first, "--path"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = Path(done.stdout.strip())
    assert written.is_file()
    assert 'id="comparison"' in written.read_text()


@pytest.mark.slow
def test_unknown_run_is_a_clear_error(trained: TrainedPipeline) -> None:
    with pytest.raises(ModelError, match="run 'no-such-run' does not exist"):
        fetch_report(trained.settings, "no-such-run")
    env = {**os.environ, "ONEBOX_HOME": str(trained.settings.home)}
    cli = str(Path(sys.executable).with_name("onebox"))
    done = subprocess.run(
        [cli, "report", "no-such-run"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def _version(version: str, counts: dict[str, int], lineage: dict[str, object] | None = None) -> DatasetVersion:
    return DatasetVersion(
        "digits", version, tuple(counts), counts, (1, 8, 8), "2026-12-01", Path("/x"), lineage=lineage
    )


def test_a_version_made_from_labeled_images_shows_where_they_came_from_and_what_they_added() -> None:
    parent = _version("aaa111", {"0": 10, "1": 10, "2": 5})
    lineage = {
        "parent": "aaa111",
        "model": "digits",
        "inbox_batch": "20261201-1",
        "images": 7,
        "by": "ana",
        "at": "2026-12-01T10:00:00+00:00",
        "production_version": "3",
    }
    merged = _version("bbb222", {"0": 14, "1": 10, "2": 8}, lineage)
    rows = dict(data_rows(merged, parent))
    assert rows["version"] == "digits:bbb222"
    assert rows["images"] == "32 (0 14, 1 10, 2 8)"
    assert rows["made from"] == "digits:aaa111 and images labeled from model digits's inbox"
    assert rows["inbox batch"] == "20261201-1: 7 images"
    assert rows["added per class"] == "0 +4, 2 +3"
    assert rows["production then"] == "digits v3"
    assert rows["labeled by"] == "ana at 2026-12-01T10:00:00+00:00"
    # The parent gone from the catalog: said, not guessed.
    assert "no longer in the catalog" in dict(data_rows(merged, None))["added per class"]
    assert dict(data_rows(parent)) == {
        "version": "digits:aaa111",
        "images": "25 (0 10, 1 10, 2 5)",
        "made by": "an import",
    }

    classes = ("0", "1", "2")
    labels = np.array([0, 1, 2, 0])
    probabilities = np.eye(3)[labels]
    html = render_report(
        synthetic_record(TrainingParameters(), gate_reason="promoted: no production model yet"),
        model_name="digits",
        test=Split.from_arrays(np.zeros((4, 1, 2, 2), dtype=np.uint8), labels),
        classes=classes,
        challenger=evaluate_probabilities(probabilities, labels, classes),
        probabilities=probabilities,
        data=data_rows(merged, parent),
    )
    assert table_rows(html, "data-lineage")["added per class"] == "0 +4, 2 +3"

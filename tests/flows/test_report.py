"""The evaluation report each run leaves: logged to MLflow, plots inline, numbers that match."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.report import REPORT_FILE, build_report, fetch_report, latest_run_with_report, read_run
from storage.errors import ModelError
from storage.registry import PRODUCTION, version_by_alias
from tests.conftest import TrainedPipeline

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inline_images(html: str) -> dict[str, bytes]:
    found = re.findall(r'<img id="([\w-]+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {name: base64.b64decode(data) for name, data in found}


def metric_cell(html: str, name: str) -> float:
    match = re.search(rf'data-metric="{re.escape(name)}">([0-9.]+)<', html)
    assert match, f"no {name} in the report"
    return float(match.group(1))


def test_first_run_logs_a_report_without_comparison(trained: TrainedPipeline) -> None:
    settings, run_id = trained.settings, trained.result.run_id
    artifacts = {a.path for a in MlflowClient(settings.mlflow_tracking_uri).list_artifacts(run_id)}
    assert REPORT_FILE in artifacts

    html = fetch_report(settings, run_id).read_text()
    assert 'id="comparison"' not in html
    assert "First model" in html
    assert metric_cell(html, "challenger-accuracy") == pytest.approx(trained.result.test_accuracy, abs=5e-5)
    images = inline_images(html)
    assert {"plot-confusion", "plot-curves", "plot-latency"} <= set(images)
    assert all(png.startswith(PNG_MAGIC) for png in images.values())
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained: nothing fetched
    assert "onebox-classifier v1" in html
    tags = MlflowClient(settings.mlflow_tracking_uri).get_run(run_id).data.tags
    assert re.fullmatch(r"[0-9a-f]{12}( \(uncommitted changes\))?|not a git checkout", tags["onebox.git_commit"])
    assert tags["onebox.git_commit"] in html


def test_challenger_report_matches_the_metrics_logged_to_mlflow(trained: TrainedPipeline) -> None:
    from flows.pipeline import training_pipeline

    settings = trained.settings
    result = training_pipeline(epochs=3, seed=5, deploy=False)
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
    production = version_by_alias(settings, PRODUCTION)
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


def test_compare_any_two_runs(trained: TrainedPipeline, tmp_path: Path) -> None:
    settings = trained.settings
    first = trained.result.run_id
    other = latest_run_with_report(settings)
    assert other != first
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

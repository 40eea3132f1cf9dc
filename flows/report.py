"""The evaluation report: one self-contained HTML page per run, challenger vs production.

Everything in it is read back from MLflow (params, metric history, tags) or recomputed from the
stored dataset and the registered ONNX models, so a report can be rebuilt, or two runs compared,
long after the run ended.
"""

from __future__ import annotations

import base64
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from flows import report_plots
from flows.evaluate import Evaluation, evaluate_probabilities
from flows.export import LATENCY_BATCH_SIZES
from flows.parameters import TrainingParameters
from flows.prepare import Split, split_dataset
from flows.promote import REFUSED, GateDecision
from flows.run_record import REPORT_FILE, RunRecord, read_run
from serving.predictor import OnnxPredictor
from storage.datasets import DatasetVersion, open_images, resolve_dataset
from storage.errors import DatasetError, ModelError
from storage.registry import LEGACY_MODEL_NAME, MODEL_NAME_TAG, materialize_bundle
from storage.settings import Settings

MAX_MISCLASSIFIED = 32


def _test_split(dataset: DatasetVersion, run: RunRecord) -> tuple[Split, tuple[str, ...]]:
    data = split_dataset(open_images(dataset), seed=int(run.params["seed"]))
    return data.test, data.classes


def _parent(settings: Settings, dataset: DatasetVersion) -> DatasetVersion | None:
    """The version ``dataset`` was made from (an inbox merge), when it is still in the catalog."""
    parent = (dataset.lineage or {}).get("parent")
    if not parent:
        return None
    try:
        return resolve_dataset(dataset.name, str(parent), settings)
    except DatasetError:
        return None


def data_rows(dataset: DatasetVersion | None, parent: DatasetVersion | None = None) -> list[tuple[str, str]]:
    """What the run trained on, and for a version made from labeled production images (an inbox
    merge) where they came from and what they added, class by class."""
    if dataset is None:
        return []
    counts = ", ".join(f"{name} {count}" for name, count in dataset.counts.items())
    rows = [("version", f"{dataset.name}:{dataset.version}"), ("images", f"{dataset.num_images} ({counts})")]
    lineage = dataset.lineage
    if not lineage:
        return [*rows, ("made by", "an import")]
    model = lineage.get("model", "?")
    rows.append(("made from", f"{dataset.name}:{lineage.get('parent')} and images labeled from model {model}'s inbox"))
    rows.append(("inbox batch", f"{lineage.get('inbox_batch')}: {lineage.get('images')} images"))
    if parent is not None:
        added = {name: dataset.counts.get(name, 0) - parent.counts.get(name, 0) for name in dataset.counts}
        listed = ", ".join(f"{name} +{count}" for name, count in added.items() if count)
        rows.append(("added per class", listed or "none"))
    else:
        rows.append(("added per class", f"unknown: version {lineage.get('parent')} is no longer in the catalog"))
    if lineage.get("production_version"):
        rows.append(("production then", f"{model} v{lineage['production_version']}"))
    rows.append(("labeled by", f"{lineage.get('by', '?')} at {lineage.get('at', '?')}"))
    return rows


def _score(
    settings: Settings, name: str, version: str, test: Split, classes: tuple[str, ...]
) -> tuple[Evaluation, np.ndarray] | None:
    """The version's evaluation and probabilities on ``test``; None if its classes or shape differ."""
    predictor = OnnxPredictor.from_directory(materialize_bundle(settings, name, version))
    if predictor.metadata.classes != classes or predictor.metadata.image_shape != test.image_shape:
        return None
    probabilities = test.predict(predictor.probabilities)
    return evaluate_probabilities(probabilities, test.labels, classes), probabilities


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _environment_rows(run: RunRecord) -> list[tuple[str, str]]:
    keys = ("onebox.git_commit", "onebox.python", "onebox.torch", "onebox.cuda", "onebox.host")
    return [(key.removeprefix("onebox.").replace("_", " "), run.tags.get(key, "unknown")) for key in keys]


def run_model_name(run: RunRecord) -> str:
    """The registered model a run trained a version of (runs from before models were named: the legacy one)."""
    return run.tags.get(MODEL_NAME_TAG, LEGACY_MODEL_NAME)


def build_report(
    settings: Settings,
    run_id: str,
    *,
    baseline_version: str | None,
    baseline_label: str = "production",
    baseline_model: str | None = None,
    refusal: str = "",
) -> str:
    """Render the HTML report of ``run_id``, compared with ``baseline_version`` when given.

    Both models are scored on the run's own test split (the dataset version and seed it logged).

    Args:
        baseline_model: the registered model ``baseline_version`` is a version of; default the run's own.
        refusal: the gate's reason when it refused the run's model (other classes or input shape
            than its model's first version): the report says so instead of comparing.
    """
    run = read_run(settings, run_id)
    name = run_model_name(run)
    dataset = resolve_dataset(run.params["dataset_name"], run.params["dataset_version"], settings)
    test, classes = _test_split(dataset, run)
    challenger_scored = _score(settings, name, run.model_version, test, classes)
    if challenger_scored is None:
        raise ModelError(f"run {run_id}'s model does not match its own dataset")
    challenger, probabilities = challenger_scored
    baseline: Evaluation | None = None
    baseline_note = ""
    if refusal:
        production = f" v{baseline_version}" if baseline_version else ""
        baseline_version = None
        baseline_note = f"Not compared with {name}'s production{production}: {refusal.removeprefix(REFUSED)}"
    elif baseline_version is not None:
        scored = _score(settings, baseline_model or name, baseline_version, test, classes)
        if scored is None:
            baseline_note = f"{baseline_label} (v{baseline_version}) has other classes or input shape: not comparable"
        else:
            baseline = scored[0]
    return render_report(
        run,
        model_name=name,
        test=test,
        classes=classes,
        challenger=challenger,
        probabilities=probabilities,
        baseline=baseline,
        baseline_version=baseline_version,
        baseline_label=baseline_label,
        baseline_note=baseline_note,
        data=data_rows(dataset, _parent(settings, dataset)),
    )


def render_report(
    run: RunRecord,
    *,
    model_name: str,
    test: Split,
    classes: tuple[str, ...],
    challenger: Evaluation,
    probabilities: np.ndarray,
    baseline: Evaluation | None = None,
    baseline_version: str | None = None,
    baseline_label: str = "production",
    baseline_note: str = "",
    data: list[tuple[str, str]] | None = None,
) -> str:
    """The report's HTML from what was measured: the run's record, the challenger's scores and
    probabilities on ``test``, and the baseline's scores on the same split when there is one;
    ``data`` is the dataset's rows (:func:`data_rows`)."""
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != test.labels)[:MAX_MISCLASSIFIED]
    wrong_images = test.indexes[wrong]  # read alone: the whole test split can be gigabytes
    captions = [
        f"true {classes[test.labels[i]]} → {classes[predicted[i]]} ({probabilities[i].max():.2f})" for i in wrong
    ]
    matrices = [(f"challenger v{run.model_version}", challenger.confusion)]
    if baseline is not None:
        matrices.append((f"{baseline_label} v{baseline_version}", baseline.confusion))
    torch_ms = {b: run.metrics.get(f"torch_latency_ms_b{b}", float("nan")) for b in LATENCY_BATCH_SIZES}
    onnx_ms = {b: run.metrics.get(f"onnx_latency_ms_b{b}", float("nan")) for b in LATENCY_BATCH_SIZES}
    per_class = [
        {
            "name": name,
            "precision": challenger.precision[name],
            "recall": challenger.recall[name],
            "baseline_precision": baseline.precision[name] if baseline else None,
            "baseline_recall": baseline.recall[name] if baseline else None,
        }
        for name in classes
    ]
    context: dict[str, Any] = {
        "run": run,
        "model_name": model_name,
        "version": run.model_version,
        "dataset": f"{run.params['dataset_name']}:{run.params['dataset_version']}",
        "device": run.params.get("device_used", "unknown"),
        # The gate's reason starts "promoted: " or "kept production: "; the banner says that already.
        "decision": run.tags.get("onebox.gate_reason", "").split(": ", 1)[-1],
        "promoted": run.tags.get("onebox.gate") == "passed",
        "challenger": challenger,
        "baseline": baseline,
        "baseline_label": baseline_label,
        "baseline_version": baseline_version,
        "baseline_note": baseline_note,
        "per_class": per_class,
        "test_size": len(test),
        "misclassified_count": int((predicted != test.labels).sum()),
        "images": {
            "curves": _data_uri(report_plots.training_curves(run.history)) if run.history.get("train_loss") else None,
            "confusion": _data_uri(report_plots.confusion_matrices(matrices, classes)),
            "misclassified": _data_uri(report_plots.misclassified_grid(test.source.read_many(wrong_images), captions))
            if len(wrong)
            else None,
            "latency": _data_uri(report_plots.latency_bars(torch_ms, onnx_ms)),
        },
        "inference": {
            "torch_ms": torch_ms,
            "onnx_ms": onnx_ms,
            "max_diff": run.metrics.get("onnx_max_abs_logit_diff"),
            "agreement": run.metrics.get("onnx_top1_agreement"),
            "onnx_bytes": run.metrics.get("onnx_size_bytes"),
        },
        # Each tracked parameter under its title, as the run form shows it.
        "hyperparameters": {
            TrainingParameters.model_fields[name].title: run.params[name]
            for name in TrainingParameters.hyperparameter_names()
            if name in run.params
        },
        "environment": _environment_rows(run),
        "data": data or [],
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    templates = Environment(loader=PackageLoader("flows", "templates"), autoescape=select_autoescape(["html"]))
    return templates.get_template("report.html").render(**context)


def log_report(settings: Settings, run_id: str, html: str) -> str:
    """Attach the report to the MLflow run; returns the artifact's URI."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / REPORT_FILE
        path.write_text(html)
        client.log_artifact(run_id, str(path))
    return f"{client.get_run(run_id).info.artifact_uri}/{REPORT_FILE}"


def mlflow_run_link(settings: Settings, run_id: str) -> str:
    """A markdown link to the run in MLflow's UI when a tracking server serves it, else where it is."""
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        return f"`{run_id}` in `{uri}` (browse it with `mlflow ui --backend-store-uri {uri}`)"
    experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    return f"[{run_id}]({uri}/#/experiments/{experiment}/runs/{run_id})"


def summary_markdown(
    settings: Settings, name: str, run_id: str, decision: GateDecision, served_url: str | None, report_uri: str
) -> str:
    """The run's summary for the Prefect UI: metrics, gate decision, what serves, where the report is."""
    lines = [
        f"# {name} v{decision.challenger_version}",
        "",
        f"**Gate:** {decision.reason}",
        "",
        "| metric | challenger | production |",
        "|---|---|---|",
    ]
    baseline = decision.production_evaluation
    challenger_accuracy = f"{decision.challenger_accuracy:.4f}"
    production_accuracy = f"{baseline.accuracy:.4f}" if baseline else "-"
    lines.append(f"| test accuracy | {challenger_accuracy} | {production_accuracy} |")
    lines += [
        "",
        f"**Serving:** {served_url + '/' if served_url else 'not deployed by this run'}",
        "",
        f"**MLflow run:** {mlflow_run_link(settings, run_id)}",
        "",
        f"**Evaluation report:** [{REPORT_FILE}]({report_uri}) (or `onebox report {run_id} --open`)",
    ]
    return "\n".join(lines)


def metrics_table(challenger: Evaluation, production: Evaluation | None) -> list[dict[str, Any]]:
    """Every test metric of the challenger, production's on the same split, and the difference."""
    ours = challenger.flat_metrics(prefix="")
    theirs = production.flat_metrics(prefix="") if production is not None else {}
    rows = []
    for name, value in ours.items():
        baseline = theirs.get(name)
        rows.append(
            {
                "metric": name,
                "challenger": round(value, 4),
                "production": round(baseline, 4) if baseline is not None else None,
                "difference": round(value - baseline, 4) if baseline is not None else None,
            }
        )
    return rows

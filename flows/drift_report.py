"""What a drift check leaves: a run in MLflow's monitoring experiment, a plot, a markdown summary.

Every check is one MLflow run of the experiment ``onebox-monitoring`` (params: model, version,
window; metrics: each test's statistic and p-value, and drift as 1/0), so a model's history of
checks can be plotted in MLflow's UI. Null results are logged too, with the reason as a tag.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from flows.drift_window import DriftResult, DriftTest
from flows.report_plots import DPI
from storage.registry import configure_mlflow
from storage.settings import Settings

MONITORING_EXPERIMENT = "onebox-monitoring"
PLOT_FILE = "drift.png"
RESULT_FILE = "drift.json"


def metric_key(test: DriftTest, figure: str) -> str:
    """``class_probability_ks.CLASS.p_value``: a class name made safe for MLflow's metric names."""
    subject = re.sub(r"[^\w.\- /]", "_", test.subject)
    return ".".join(part for part in (test.name, subject, figure) if part)


def result_metrics(result: DriftResult) -> dict[str, float]:
    metrics = {"window": float(result.window), "reference_size": float(result.reference_size)}
    if result.drift is not None:
        metrics["drift"] = float(result.drift)
    for test in result.tests:
        metrics[metric_key(test, "statistic")] = test.statistic
        metrics[metric_key(test, "p_value")] = test.p_value
    return metrics


def drift_plot(result: DriftResult, probabilities: np.ndarray | None, reference: np.ndarray | None) -> bytes:
    """Each test's p-value against its threshold; and, with the data, the predicted classes and the
    confidence of the window beside the reference's."""
    import matplotlib.pyplot as plt

    from flows.report_plots import _png

    panels = 3 if probabilities is not None and reference is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2), squeeze=False)
    tests = axes[0][0]
    labels = [f"{test.name}[{test.subject}]" if test.subject else test.name for test in result.tests]
    strength = [-np.log10(max(test.p_value, 1e-300)) for test in result.tests]
    colors = ["#d1242f" if test.drifted else "#8c959f" for test in result.tests]
    tests.barh(labels, strength, color=colors)
    tests.scatter([-np.log10(test.alpha) for test in result.tests], labels, marker="|", color="black", s=120)
    tests.set_xlabel("-log10 p (red: beyond its threshold |)")
    tests.tick_params(axis="y", labelsize=7)
    tests.set_title(f"{result.model} v{result.version}: drift {result.drift}")
    if panels == 3 and probabilities is not None and reference is not None:
        classes = reference.shape[1]
        width = 0.4
        positions = np.arange(classes)
        for offset, data, name in ((-width / 2, reference, "reference"), (width / 2, probabilities, "window")):
            share = np.bincount(data.argmax(1), minlength=classes) / len(data)
            axes[0][1].bar(positions + offset, share, width, label=name)
        axes[0][1].set_title("predicted class")
        axes[0][1].legend()
        bins = np.linspace(0, 1, 21)
        axes[0][2].hist(reference.max(1), bins, alpha=0.6, density=True, label="reference")
        axes[0][2].hist(probabilities.max(1), bins, alpha=0.6, density=True, label="window")
        axes[0][2].set_title("confidence")
        axes[0][2].legend()
    figure.set_dpi(DPI)
    return _png(figure)


def log_check(settings: Settings, result: DriftResult, plot: bytes | None) -> str:
    """Log one check as a run of the monitoring experiment; returns the run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    experiment = configure_mlflow(settings, MONITORING_EXPERIMENT)
    client = MlflowClient(settings.mlflow_tracking_uri)
    tags = {"onebox.flow": "drift-check", "onebox.model_name": result.model, "onebox.drift_reason": result.reason}
    run = client.create_run(experiment, run_name=f"{result.model}-v{result.version}-drift", tags=tags)
    run_id = str(run.info.run_id)
    params = {
        "model": result.model,
        "version": result.version,
        "window": result.window,
        "minimum": result.minimum,
        "false_alarm_rate": result.false_alarm_rate,
        "uses_embedding": result.uses_embedding,
    }
    now = run.info.start_time
    client.log_batch(
        run_id,
        params=[Param(key, str(value)) for key, value in params.items()],
        metrics=[Metric(key, value, now, 0) for key, value in result_metrics(result).items()],
    )
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2))
        client.log_artifact(run_id, str(Path(folder) / RESULT_FILE))
        if plot is not None:
            (Path(folder) / PLOT_FILE).write_bytes(plot)
            client.log_artifact(run_id, str(Path(folder) / PLOT_FILE))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def summary_markdown(result: DriftResult, plot: bytes | None, run_link: str) -> str:
    """The check for the Prefect UI: the verdict, each test, the plot inline."""
    verdict = {True: "**drift**", False: "no drift", None: "**not checked**"}[result.drift]
    lines = [
        f"# {result.model} v{result.version}: {verdict}",
        "",
        result.reason,
        "",
        f"Window {result.window} predictions (minimum {result.minimum}), reference {result.reference_size} "
        f"held-out images, false-alarm rate {result.false_alarm_rate}.",
    ]
    if result.tests:
        lines += ["", "| test | class | statistic | p-value | threshold | drift |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {t.name} | {t.subject} | {t.statistic:.4g} | {t.p_value:.3g} | {t.alpha:.3g} | {t.drifted} |"
            for t in result.tests
        ]
    if plot is not None:
        lines += ["", f"![drift check](data:image/png;base64,{base64.b64encode(plot).decode()})"]
    lines += ["", f"**MLflow run:** {run_link}"]
    return "\n".join(lines)

"""A training run as MLflow holds it: its record, its one-table summary, its report file.

Read back after the fact, so a report can be rebuilt, a run started on the worker summarized, or
two runs compared, long after they ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from storage.errors import ModelError
from storage.registry import configure_mlflow
from storage.settings import Settings

REPORT_FILE = "report.html"
CURVES = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


@dataclass
class RunRecord:
    """What MLflow holds about one training run."""

    run_id: str
    run_name: str
    started: datetime
    ended: datetime | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        version = self.tags.get("onebox.model_version")
        if not version:
            raise ModelError(f"run {self.run_id} registered no model (it may have failed before registration)")
        return version

    @property
    def seconds(self) -> float:
        end = self.ended or datetime.now(UTC)
        return (end - self.started).total_seconds()


def read_run(settings: Settings, run_id: str) -> RunRecord:
    """Raises: ModelError when no such run exists."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ModelError(f"run {run_id!r} does not exist in {settings.mlflow_tracking_uri}") from error
    history = {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)] for key in CURVES
    }
    info = run.info
    return RunRecord(
        run_id=run_id,
        run_name=info.run_name or run_id,
        started=datetime.fromtimestamp(info.start_time / 1000, UTC),
        ended=datetime.fromtimestamp(info.end_time / 1000, UTC) if info.end_time else None,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        history=history,
    )


@dataclass(frozen=True)
class RunSummary:
    """What ``onebox train`` prints about a run, whether it ran here or on the worker."""

    run_id: str
    model: str  # "NAME vN"
    dataset: str
    test_accuracy: float
    test_macro_f1: float
    device: str
    gate: str

    @classmethod
    def from_record(cls, record: RunRecord, *, model_name: str) -> RunSummary:
        """The summary of a finished run read back from MLflow; "?" where it logged nothing."""
        return cls(
            run_id=record.run_id,
            model=f"{model_name} v{record.tags.get('onebox.model_version', '?')}",
            dataset=record.tags.get("onebox.dataset", "?"),
            test_accuracy=record.metrics.get("test_accuracy", float("nan")),
            test_macro_f1=record.metrics.get("test_macro_f1", float("nan")),
            device=record.params.get("device_used", "?"),
            gate=record.tags.get("onebox.gate_reason", "-"),
        )

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("MLflow run", self.run_id),
            ("model version", self.model),
            ("dataset", self.dataset),
            ("test accuracy", f"{self.test_accuracy:.4f} (macro-F1 {self.test_macro_f1:.4f}) on {self.device}"),
            ("gate", self.gate),
        ]


def latest_run_with_report(settings: Settings) -> str:
    """Raises: ModelError when no run has a report yet."""
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    for run in client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=50):
        if any(a.path == REPORT_FILE for a in client.list_artifacts(run.info.run_id)):
            return str(run.info.run_id)
    raise ModelError("no run has a report yet; train one with: onebox train")


def fetch_report(settings: Settings, run_id: str) -> Path:
    """Copy a run's logged report into $ONEBOX_HOME/reports and return its path.

    Raises:
        ModelError: the run does not exist or has no report.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    read_run(settings, run_id)  # a clear error for an unknown run id
    target = settings.home / "reports"
    target.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REPORT_FILE, dst_path=str(target / run_id)
        )
    except (MlflowException, OSError) as error:
        raise ModelError(f"run {run_id} has no {REPORT_FILE}") from error
    return Path(local)

"""Tracking: everything a training run produced, logged to its MLflow run, and its registration."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flows.evaluate import Evaluation
from flows.export import ExportCheck
from flows.prepare import PreparedData
from flows.train import TrainingResult
from serving.metadata import EMBEDDING_OUTPUT, LOGITS_OUTPUT, REFERENCE_FILE
from storage.errors import ModelError
from storage.model_binding import binding_tags
from storage.registry import MODEL_CARD, configure_mlflow
from storage.settings import Settings

TORCH_MODEL = "torch-model"
ONNX_MODEL = "onnx-model"


def _requirement(package: str) -> str:
    from importlib.metadata import version

    # Local version labels (+cu132) do not resolve from an index.
    return f"{package}=={version(package).split('+')[0]}"


def code_version() -> str:
    """The checkout's commit, marked when tracked files have uncommitted changes."""
    import subprocess

    source = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        command = ["git", "-C", str(source), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return commit + (" (uncommitted changes)" if dirty else "")


def environment_tags() -> dict[str, str]:
    """Code version and environment, for the report: git commit, Python, torch, CUDA, host."""
    import platform

    import torch

    commit = code_version()
    cuda = torch.version.cuda or "none"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {
        "onebox.git_commit": commit,
        "onebox.python": platform.python_version(),
        "onebox.torch": torch.__version__,
        "onebox.cuda": f"{cuda} ({gpu})",
        "onebox.host": platform.node(),
    }


def start_run(settings: Settings, *, run_name: str, tags: dict[str, str]) -> str:
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    all_tags = {**environment_tags(), **tags}
    return str(client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id)


def check_unfinished(settings: Settings, run_id: str) -> None:
    """Refuse to continue a run that does not exist or already finished (``onebox train --resume``).

    Raises:
        ModelError: no such run, or it already finished.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.mlflow_tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ModelError(f"no MLflow run {run_id!r} to resume; give the run id `onebox train` printed") from error
    if run.info.status == "FINISHED":
        raise ModelError(f"run {run_id} already finished; nothing to resume (start a new run instead)")


def reopen_run(settings: Settings, run_id: str, *, tags: dict[str, str]) -> None:
    """Mark a stopped or crashed run RUNNING again, with ``tags`` saying how it was continued."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    client.update_run(run_id, status="RUNNING")
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def end_run(settings: Settings, run_id: str, *, failed: bool) -> None:
    from mlflow import MlflowClient

    MlflowClient(settings.mlflow_tracking_uri).set_terminated(run_id, "FAILED" if failed else "FINISHED")


def onnx_signature(image_shape: tuple[int, int, int], num_classes: int, embedding_size: int = 0) -> Any:
    """The served graph's interface: float ``images`` (N, C, H, W) in [0, 1] to ``logits`` (N, classes),
    and ``embedding`` (N, D) when the graph has one (``embedding_size`` > 0)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    images = TensorSpec(np.dtype(np.float32), (-1, *image_shape), name="images")
    logits = TensorSpec(np.dtype(np.float32), (-1, num_classes), name=LOGITS_OUTPUT)
    embedding = TensorSpec(np.dtype(np.float32), (-1, embedding_size), name=EMBEDDING_OUTPUT)
    return ModelSignature(inputs=Schema([images]), outputs=Schema([logits, embedding] if embedding_size else [logits]))


def log_training(
    settings: Settings,
    run_id: str,
    *,
    params: dict[str, Any],
    data: PreparedData,
    training: TrainingResult,
    evaluation: Evaluation,
    export: ExportCheck,
    onnx_path: Path,
) -> str:
    """Log params, curves, metrics, both models and the model card; returns the ONNX model's URI."""
    import mlflow
    import onnx
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Metric, Param, RunTag

    configure_mlflow(settings)
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    dataset = data.dataset
    all_params = {
        **params,
        "dataset_name": dataset.name,
        "dataset_version": dataset.version,
        "image_shape": "x".join(map(str, dataset.image_shape)),
        "num_classes": len(dataset.classes),
        "train_size": len(data.train),
        "validation_size": len(data.validation),
        "test_size": len(data.test),
        "device_used": training.device,
    }
    card = {
        "dataset_name": dataset.name,
        "dataset_version": dataset.version,
        "classes": list(dataset.classes),
        "image_shape": list(dataset.image_shape),
        "preprocessing": dataset.preprocessing.to_dict(),  # serving converts uploads the same way
        "metrics": {"test_accuracy": evaluation.accuracy, "test_macro_f1": evaluation.macro_f1},
        "trained": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory() as folder:
        card_path = Path(folder) / MODEL_CARD
        card_path.write_text(json.dumps(card, indent=2))
        client.log_artifact(run_id, str(card_path))
        evaluation_path = Path(folder) / "evaluation.json"
        evaluation_path.write_text(json.dumps(evaluation.to_dict(), indent=2))
        client.log_artifact(run_id, str(evaluation_path))
    reference_path = onnx_path.with_name(REFERENCE_FILE)  # the drift reference, written beside the export
    if reference_path.is_file():
        client.log_artifact(run_id, str(reference_path))

    # The models go first: MLflow links every metric the run has so far to each model it logs,
    # reading each one's history back (two requests per metric and model); the test metrics are
    # linked to the served model explicitly below instead.
    example = data.test.sample(2).astype(np.float32) / 255.0
    with mlflow.start_run(run_id=run_id):
        # The dataset by reference (its folder and version), not its images: they may not fit in memory.
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local source
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(dataset.path))
        reference = MetaDataset(source, name=dataset.name, digest=dataset.version)  # type: ignore[abstract]  # profile is optional at run time
        mlflow.log_input(reference, context="training")
        mlflow.pytorch.log_model(
            training.model.to("cpu").eval(),
            name=TORCH_MODEL,
            input_example=example,
            pip_requirements=[_requirement("torch"), _requirement("numpy")],
        )
        onnx_info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name=ONNX_MODEL,
            # Given, not inferred: the registered model says what it takes and returns, as the torch one does.
            signature=onnx_signature(dataset.image_shape, len(dataset.classes), export.embedding_size),
            input_example={"images": example},
            save_as_external_data=False,  # one self-contained file to serve
            onnx_execution_providers=["CPUExecutionProvider"],
            pip_requirements=[_requirement("onnx"), _requirement("onnxruntime"), _requirement("numpy")],
        )
    now = int(time.time() * 1000)
    curves = [
        Metric(key, float(value), now, stats.epoch)
        for stats in training.history
        for key, value in asdict(stats).items()
        if key != "epoch"
    ]
    scalars = {
        **evaluation.flat_metrics(),
        **export.flat_metrics(),
        "train_seconds": training.seconds,
        "best_epoch": training.best_epoch,
        "stopped_epoch": training.stopped_epoch,
    }
    client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in all_params.items()],
        metrics=curves + [Metric(k, float(v), now, 0, model_id=onnx_info.model_id) for k, v in scalars.items()],
        tags=[RunTag("onebox.dataset", f"{dataset.name}:{dataset.version}")],
    )
    client.update_run(run_id, status="RUNNING")  # the run goes on: gate and deploy log to it too
    return str(onnx_info.model_uri)


def register_model(
    settings: Settings, name: str, *, model_uri: str, run_id: str, data: PreparedData, evaluation: Evaluation
) -> str:
    """Create a version of registered model ``name`` (made on first use) from the logged ONNX model.

    Its tags record what it answers and takes (the first version's bind the model: the gate reads
    them), its dataset and its test accuracy (``onebox models`` lists them). Returns the version number.
    """
    import mlflow

    configure_mlflow(settings)
    registered = mlflow.register_model(
        model_uri,
        name,
        tags={
            "dataset": f"{data.dataset.name}:{data.dataset.version}",
            "test_accuracy": f"{evaluation.accuracy:.4f}",
            "run_id": run_id,
            **binding_tags(data.classes, data.dataset.image_shape),
        },
    )
    return str(registered.version)


def log_outcome(settings: Settings, run_id: str, *, metrics: dict[str, float], tags: dict[str, str]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(settings.mlflow_tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    for key, value in tags.items():
        client.set_tag(run_id, key, value)

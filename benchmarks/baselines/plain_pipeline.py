"""The training pipeline's steps as a plain Python script: no Prefect, no MLflow.

What a researcher runs before onebox, doing the same work as the flow: the same data, split,
training, evaluation and ONNX export with its parity check and timing, the previous model
scored on the same test split, and the same HTML evaluation report (flows/report.py renders
both), with everything written to a folder instead of tracked, registered and served. The same
functions the flow's tasks call do the work, so benchmarks/pipeline.py times only what Prefect
and MLflow add.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from flows import evaluate, export, prepare, report, run_record, train
from flows.model import build
from serving.predictor import create_session
from storage.datasets import open_images, resolve_dataset
from storage.images import normalize
from storage.settings import Settings


def _probabilities(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    session = create_session(onnx_path)
    logits = session.run(None, {session.get_inputs()[0].name: normalize(images)})[0]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def run_plain_pipeline(
    settings: Settings,
    *,
    out_dir: Path,
    epochs: int,
    seed: int,
    dataset: str = "digits",
    previous_model: Path | None = None,
) -> float:
    """Train, evaluate, export and report one model into ``out_dir``; returns the test accuracy.

    ``previous_model``: an earlier run's model.onnx, scored on this run's test split and compared
    in the report (the flow compares with the production model).
    """
    started = datetime.now(UTC)
    version = resolve_dataset(dataset, None, settings)
    data = prepare.split_dataset(open_images(version), seed=seed)
    torch.manual_seed(seed)
    model = build(num_classes=len(data.classes), input_shape=version.image_shape)
    training = train.train_model(
        data, model, epochs=epochs, learning_rate=1e-3, batch_size=64, seed=seed, device="auto"
    )
    probabilities = train.predict_probabilities(training.model, data.test.images)
    result = evaluate.evaluate_probabilities(probabilities, data.test.labels, data.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export.export_onnx(training.model, out_dir / "model.onnx", input_shape=version.image_shape)
    check = export.check_export(training.model, onnx_path, data.test.images)
    torch.save(training.model.state_dict(), out_dir / "model.pt")
    metrics = {**result.flat_metrics(), **check.flat_metrics(), "train_seconds": training.seconds}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    previous = None
    if previous_model is not None:
        previous_probabilities = _probabilities(previous_model, data.test.images)
        previous = evaluate.evaluate_probabilities(previous_probabilities, data.test.labels, data.classes)
    better = previous is None or result.accuracy > previous.accuracy
    record = run_record.RunRecord(
        run_id=out_dir.name,
        run_name=f"{dataset}-seed{seed}",
        started=started,
        ended=datetime.now(UTC),
        params={
            "dataset_name": version.name,
            "dataset_version": version.version,
            "epochs": str(epochs),
            "learning_rate": "0.001",
            "batch_size": "64",
            "seed": str(seed),
            "device_used": training.device,
        },
        metrics=metrics,
        tags={
            "onebox.model_version": out_dir.name,
            "onebox.gate": "passed" if better else "kept-production",
            "onebox.gate_reason": f"{'better' if better else 'not better'}: accuracy {result.accuracy:.4f}",
        },
        history={key: [asdict(stats)[key] for stats in training.history] for key in run_record.CURVES},
    )
    html = report.render_report(
        record,
        model_name="plain-script",
        test=data.test,
        classes=data.classes,
        challenger=result,
        probabilities=probabilities,
        baseline=previous,
        baseline_version=previous_model.parent.name if previous_model is not None else None,
        baseline_label="previous model",
    )
    (out_dir / run_record.REPORT_FILE).write_text(html)
    return result.accuracy

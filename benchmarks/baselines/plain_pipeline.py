"""The training pipeline's steps as a plain Python script: no Prefect, no MLflow.

What a researcher runs before onebox: the same data, split, training, evaluation and ONNX
export with its parity check and timing (the same functions the flow's tasks call), with the
results written to a folder instead of tracked, registered and reported. benchmarks/pipeline.py
times it against the flow.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flows import evaluate, export, prepare, train
from storage.datasets import load_dataset, resolve_dataset
from storage.settings import Settings


def run_plain_pipeline(settings: Settings, *, out_dir: Path, epochs: int, seed: int, dataset: str = "digits") -> float:
    """Train, evaluate and export one model into ``out_dir``; returns the test accuracy."""
    data = prepare.split_dataset(load_dataset(resolve_dataset(dataset, None, settings)), seed=seed)
    training = train.train_model(data, epochs=epochs, learning_rate=1e-3, batch_size=64, seed=seed, device="auto")
    probabilities = train.predict_probabilities(training.model, data.test.images)
    result = evaluate.evaluate_probabilities(probabilities, data.test.labels, data.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export.export_onnx(training.model, out_dir / "model.onnx")
    check = export.check_export(training.model, onnx_path, data.test.images)
    torch.save(training.model.state_dict(), out_dir / "model.pt")
    metrics = {**result.flat_metrics(), **check.flat_metrics(), "train_seconds": training.seconds}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return result.accuracy

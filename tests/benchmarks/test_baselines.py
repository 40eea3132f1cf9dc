"""The baselines onebox is measured against do the same work: same answers, same steps."""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.prepare import split_dataset
from serving.predictor import OnnxPredictor
from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset
from storage.registry import materialize_bundle
from tests.conftest import TrainedPipeline, png_bytes

pytestmark = pytest.mark.slow


def test_flask_baseline_answers_like_the_served_model(
    trained: TrainedPipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.serving import write_torch_model

    settings, result = trained.settings, trained.result
    bundle = materialize_bundle(settings, "digits", result.model_version)
    monkeypatch.setenv("BASELINE_MODEL", str(write_torch_model(settings, result.run_id, tmp_path)))
    monkeypatch.setenv("BASELINE_METADATA", str(bundle / "metadata.json"))
    sys.modules.pop("benchmarks.baselines.flask_app", None)
    client = importlib.import_module("benchmarks.baselines.flask_app").app.test_client()
    predictor = OnnxPredictor.from_directory(bundle)
    test = split_dataset(open_images(resolve_dataset(BUILTIN_DATASET, None, settings)), seed=0).test

    for image in test.images[:20]:
        png = png_bytes(image[0])
        answer = client.post("/predict", data={"image": (io.BytesIO(png), "d.png", "image/png")})
        expected = predictor.predict_image(png)
        assert answer.status_code == 200
        assert answer.json["label"] == expected["label"]
        assert answer.json["confidence"] == pytest.approx(expected["confidence"], abs=1e-4)
    batch = client.post("/predict_batch", json={"images": test.images[:5].tolist()})
    assert [a["label"] for a in batch.json] == [a["label"] for a in predictor.predict_arrays(test.images[:5])]
    assert client.post("/predict", data={}).status_code == 400


def test_plain_pipeline_does_the_flows_steps(trained: TrainedPipeline, tmp_path: Path) -> None:
    from benchmarks.baselines.plain_pipeline import run_plain_pipeline

    first, second = tmp_path / "first", tmp_path / "second"
    accuracy = run_plain_pipeline(trained.settings, out_dir=first, epochs=2, seed=0)
    run_plain_pipeline(trained.settings, out_dir=second, epochs=3, seed=0, previous_model=first / "model.onnx")

    assert 0.5 < accuracy <= 1.0
    assert {p.name for p in first.iterdir()} == {"model.onnx", "model.pt", "metrics.json", "report.html"}
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["test_accuracy"] == accuracy
    assert np.isfinite(metrics["onnx_latency_ms_b1"])
    # The same report as the flow's, the second one compared with the first model.
    assert "previous model" not in (first / "report.html").read_text()
    compared = (second / "report.html").read_text()
    assert "previous model" in compared
    assert f"{accuracy:.4f}" in compared

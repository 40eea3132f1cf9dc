"""The setup onebox replaces: the torch model in a small Flask app under gunicorn.

Written the way a careful hand-rolled server would be, so the comparison is fair: the model is
loaded once per worker, torch uses one thread (OMP_NUM_THREADS=1; gunicorn's workers give the
parallelism), images are converted exactly as onebox converts them, and the answers have the
same shape as onebox's. Run it with

    BASELINE_MODEL=model.pt BASELINE_METADATA=metadata.json \
        gunicorn --workers 2 --bind 127.0.0.1:8000 benchmarks.baselines.flask_app:app

``model.pt`` is the ConvClassifier's state dict (benchmarks/serving.py writes it from the
registered version's MLflow torch model); ``metadata.json`` is the serving bundle's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from flows.model import ConvClassifier
from storage.images import ImageDecodeError, decode_image, normalize, to_model_array

torch.set_num_threads(1)

metadata: dict[str, Any] = json.loads(Path(os.environ["BASELINE_METADATA"]).read_text())
classes: list[str] = list(metadata["classes"])
channels, height, width = metadata["image_shape"]
model = ConvClassifier(channels=channels, height=height, width=width, num_classes=len(classes))
model.load_state_dict(torch.load(os.environ["BASELINE_MODEL"], map_location="cpu", weights_only=True))
model.eval()

app = Flask(__name__)


def answers(pixels: np.ndarray) -> list[dict[str, Any]]:
    with torch.inference_mode():
        probabilities = torch.softmax(model(torch.from_numpy(normalize(pixels))), dim=1).numpy()
    return [
        {
            "label": classes[int(row.argmax())],
            "confidence": float(row.max()),
            "probabilities": {name: float(p) for name, p in zip(classes, row, strict=True)},
            "model_version": metadata["model_version"],
        }
        for row in probabilities
    ]


@app.post("/predict")
def predict() -> ResponseReturnValue:
    upload = request.files.get("image")
    if upload is None:
        return jsonify(error="send the image as the multipart field 'image'"), 400
    try:
        image = decode_image(upload.read(), source="image")
    except ImageDecodeError as error:
        return jsonify(error=str(error)), 400
    pixels = to_model_array(image, channels=channels, height=height, width=width)
    return jsonify(answers(pixels[np.newaxis])[0])


@app.post("/predict_batch")
def predict_batch() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    try:
        images = np.asarray(body["images"], dtype=np.float32)  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return jsonify(error='send JSON {"images": [...]}'), 400
    if images.ndim == 3 and channels == 1:
        images = images[:, np.newaxis]
    if images.shape[1:] != (channels, height, width) or images.min() < 0 or images.max() > 255:
        return jsonify(error=f"images must be shaped (N, {channels}, {height}, {width}) with values 0-255"), 400
    return jsonify(answers(np.rint(images).astype(np.uint8)))

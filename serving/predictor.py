"""The plain predictor behind every server: an ONNX model, its metadata, and input checks.

A model bundle is a folder with ``model.onnx`` and ``metadata.json``. No torch and no BentoML
here, so this runs in the thin serving image and in tests alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.metadata import EMBEDDING_OUTPUT, LOGITS_OUTPUT, METADATA_FILE, MODEL_FILE, ModelMetadata
from storage.errors import ModelError
from storage.images import ImageDecodeError, normalize

MAX_BATCH = 1024
ORT_THREADS_VARIABLE = "ONEBOX_ORT_THREADS"  # ONNX Runtime's threads in each worker


class InputError(ImageDecodeError):
    """A request's input cannot be turned into the model's input."""


def create_session(model_path: Path, *, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session; ``threads`` defaults to ONEBOX_ORT_THREADS or 1.

    One intra-op thread suits small models: the work per request is tiny, and server workers,
    not threads, give the parallelism.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(os.environ.get(ORT_THREADS_VARIABLE, "1"))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


class OnnxPredictor:
    def __init__(self, model_path: Path, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.session = create_session(model_path)
        self.input_name = self.session.get_inputs()[0].name
        outputs = [output.name for output in self.session.get_outputs()]
        # A bundle exported before the embedding output existed has one output, whatever its name.
        self.has_embedding = EMBEDDING_OUTPUT in outputs
        self.output_names = [LOGITS_OUTPUT, EMBEDDING_OUTPUT] if self.has_embedding else outputs[:1]
        self.preprocessing = metadata.conversion()

    @classmethod
    def from_directory(cls, bundle: Path) -> OnnxPredictor:
        """Load a model bundle.

        Raises:
            ModelError: the folder lacks the model or its metadata.
        """
        model_path, metadata_path = bundle / MODEL_FILE, bundle / METADATA_FILE
        for required in (model_path, metadata_path):
            if not required.is_file():
                raise ModelError(f"model bundle {bundle} has no {required.name}")
        return cls(model_path, ModelMetadata.read(metadata_path))

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Softmax probabilities (N, K) and embeddings (N, D), None when the model has none, for
        uint8 images of shape (N, C, H, W): one run of the graph for both."""
        outputs = self.session.run(self.output_names, {self.input_name: normalize(images)})
        return softmax(outputs[0]), (outputs[1] if self.has_embedding else None)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities for uint8 images of shape (N, C, H, W)."""
        return self.infer(images)[0]

    def describe(self, probabilities: np.ndarray) -> dict[str, Any]:
        """The JSON answer for one image's probabilities."""
        best = int(probabilities.argmax())
        classes = self.metadata.classes
        return {
            "label": classes[best],
            "confidence": float(probabilities[best]),
            "probabilities": {name: float(p) for name, p in zip(classes, probabilities, strict=True)},
            "model_version": self.metadata.model_version,
        }

    def decode(self, data: bytes, *, source: str = "image") -> np.ndarray:
        """One encoded image (PNG or JPEG of any size, gray or color) as the model's uint8 input
        (1, C, H, W), converted as the training data was.

        Raises:
            ImageDecodeError: the bytes are not a readable image (or too many pixels for one).
        """
        return self.preprocessing.decode(data, source=source)[np.newaxis]

    def check_arrays(self, images: np.ndarray) -> np.ndarray:
        """A batch of pixel arrays (values 0-255) shaped (N, C, H, W), or (N, H, W) for gray
        models, as the model's uint8 input (N, C, H, W).

        Raises:
            InputError: the shape or values do not fit the model.
        """
        channels, height, width = self.metadata.image_shape
        expected = f"(N, {channels}, {height}, {width})" + (f" or (N, {height}, {width})" if channels == 1 else "")
        if images.ndim == 3 and channels == 1:
            images = images[:, np.newaxis]
        if images.ndim != 4 or images.shape[1:] != (channels, height, width):
            raise InputError(f"images have shape {tuple(images.shape)}; this model takes {expected}")
        if not 1 <= len(images) <= MAX_BATCH:
            raise InputError(f"a batch holds 1 to {MAX_BATCH} images, not {len(images)}")
        if not np.issubdtype(images.dtype, np.number) or not np.isfinite(images).all():
            raise InputError("images must hold finite numbers (pixel values 0-255)")
        if images.min() < 0 or images.max() > 255:
            raise InputError(f"pixel values must lie in 0-255; got {float(images.min())} to {float(images.max())}")
        pixels: np.ndarray = np.rint(images).astype(np.uint8)
        return pixels

    def predict_image(self, data: bytes, *, source: str = "image") -> dict[str, Any]:
        """Predict one encoded image (PNG or JPEG of any size, gray or color), converted as the training data was.

        Raises:
            ImageDecodeError: the bytes are not a readable image (or too many pixels for one).
        """
        return self.describe(self.probabilities(self.decode(data, source=source))[0])

    def predict_arrays(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Predict a batch of pixel arrays (values 0-255) shaped (N, C, H, W), or (N, H, W) for gray models.

        Raises:
            InputError: the shape or values do not fit the model.
        """
        return [self.describe(row) for row in self.probabilities(self.check_arrays(images))]

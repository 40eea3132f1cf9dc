"""The BentoML service that serves one model bundle (ONNX Runtime, no torch).

Run it with ``ONEBOX_MODEL_DIR=/path/to/bundle bentoml serve serving.service:Classifier``; the
local and compose runtimes do exactly that. Swagger UI: ``/`` (``/docs`` leads there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument
from bentoml.validators import ContentType
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from serving.errors import UnwrapErrorMiddleware
from serving.predictor import METADATA_FILE, MODEL_DIR_VARIABLE, ModelMetadata, OnnxPredictor
from storage.images import ImageDecodeError

web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@web.get("/docs", include_in_schema=False)
def docs() -> RedirectResponse:
    return RedirectResponse(url="/")


class ModelService(bentoml.Service):
    """A bentoml Service whose Swagger page explains the served model to non-developers."""

    @property
    def doc(self) -> str:
        bundle = os.environ.get(MODEL_DIR_VARIABLE)
        if not bundle or not (Path(bundle) / METADATA_FILE).is_file():
            return str(super().doc)
        meta = ModelMetadata.read(Path(bundle) / METADATA_FILE)
        accuracy = meta.metrics.get("test_accuracy")
        channels, height, width = meta.image_shape
        return (
            f"Model **{meta.model_name} v{meta.model_version}**, trained on dataset "
            f"`{meta.dataset_name}:{meta.dataset_version}`"
            + (f", test accuracy **{accuracy:.2%}**" if accuracy is not None else "")
            + f".\n\nClasses: {', '.join(meta.classes)}.\n\n"
            "**Try it:** open `POST /predict` below, press *Try it out*, choose a PNG or JPEG image and press "
            f"*Execute*. Images of any size, gray or color, are converted to {height}x{width} "
            f"{'gray' if channels == 1 else 'color'} as the training data was. "
            "`GET /metadata` tells which model answers."
        )


class Prediction(BaseModel):
    label: str = Field(description="The predicted class name.")
    confidence: float = Field(description="Probability of the predicted class, 0 to 1.")
    probabilities: dict[str, float] = Field(description="Probability of every class.")
    model_version: str = Field(description="Registered model version that answered.")


@bentoml.service(name="onebox-classifier", traffic={"timeout": 30}, service_class=ModelService)
@bentoml.asgi_app(web, path="/")
class Classifier:
    """Classify images with the model in $ONEBOX_MODEL_DIR."""

    def __init__(self) -> None:
        bundle = os.environ.get(MODEL_DIR_VARIABLE)
        if not bundle:
            raise RuntimeError(f"{MODEL_DIR_VARIABLE} is not set: it must name a model bundle folder")
        self.predictor = OnnxPredictor.from_directory(Path(bundle))

    @bentoml.api(route="/predict")
    def predict(self, image: Annotated[Path, ContentType("image/*")]) -> Prediction:
        """Upload one PNG or JPEG image (any size, gray or color); get its label and probabilities."""
        try:
            return Prediction(**self.predictor.predict_image(image.read_bytes(), source="image"))
        except ImageDecodeError as error:
            raise InvalidArgument(str(error)) from error

    @bentoml.api(route="/predict_batch")
    def predict_batch(self, images: np.ndarray) -> list[Prediction]:
        """Classify a batch of pixel arrays (0-255) shaped like the model input (see /metadata)."""
        try:
            return [Prediction(**answer) for answer in self.predictor.predict_arrays(np.asarray(images))]
        except ImageDecodeError as error:
            raise InvalidArgument(str(error)) from error

    @web.get("/metadata")
    def metadata(self) -> dict[str, Any]:
        """Which model this is: name, version, MLflow run, dataset version and test metrics."""
        return self.predictor.metadata.to_dict()


# The decorators turned the class into a bentoml Service, which mypy cannot see.
Classifier.add_asgi_middleware(UnwrapErrorMiddleware)  # type: ignore[attr-defined]

"""The published API contract of one served model: an OpenAPI 3.0 document written here, from the
model's metadata, instead of BentoML's.

BentoML's generated ``/docs.json`` was invalid OpenAPI (``type: file``, ``type: tensor``,
``type: null``), documented ``/metrics``, which answers 404 here, declared the 400 ``detail`` as a
string where a list is sent, showed this project's code comments as descriptions, and said
version "None" and contact "BentoML Team". This one documents exactly the routes that answer,
with the answers they send, and the model's own input shape, so a client (or schemathesis, in
the tests) can generate valid batches from it. openapi-spec-validator checks it in the tests.
"""

from __future__ import annotations

from typing import Any

from serving.metadata import ModelMetadata
from serving.predictor import MAX_BATCH

OPENAPI_VERSION = "3.0.3"
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _logged(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A prediction's answer: JSON, and the id it has in the prediction log."""
    request_id = {
        "description": "The prediction's id in the log: the client's own X-Request-ID when it sent a sane one.",
        "schema": {"type": "string"},
    }
    return {**_json(schema, description), "headers": {"X-Request-ID": request_id}}


def _errors(*statuses: int) -> dict[str, Any]:
    described = {
        400: "The input is not usable: the error says what is wrong and what to send instead.",
        404: "No such model is served.",
        413: "The body or the image is larger than this server accepts (the error names the limit).",
    }
    return {str(status): _json(ERROR, described[status]) for status in statuses}


def _pixels(*sides: int) -> dict[str, Any]:
    """Nested arrays of exactly ``sides`` (outermost first) holding pixel values 0-255."""
    schema: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 255}
    for side in reversed(sides):
        schema = {"type": "array", "items": schema, "minItems": side, "maxItems": side}
    return schema


def _batch_schema(meta: ModelMetadata) -> dict[str, Any]:
    channels, height, width = meta.image_shape
    shapes = [_pixels(channels, height, width)] + ([_pixels(height, width)] if channels == 1 else [])
    batches = [{"type": "array", "items": shape, "minItems": 1, "maxItems": MAX_BATCH} for shape in shapes]
    layout = f"(N, {channels}, {height}, {width})" + (f" or (N, {height}, {width})" if channels == 1 else "")
    return {
        "type": "object",
        "required": ["images"],
        "properties": {
            "images": {
                **(batches[0] if len(batches) == 1 else {"oneOf": batches}),
                "description": f"1 to {MAX_BATCH} images as pixel values 0-255, shaped {layout}.",
            }
        },
    }


def _components() -> dict[str, Any]:
    prediction = {
        "type": "object",
        "required": ["label", "confidence", "probabilities", "model_version"],
        "properties": {
            "label": {"type": "string", "description": "The predicted class name."},
            "confidence": {"type": "number", "description": "Probability of the predicted class, 0 to 1."},
            "probabilities": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Probability of every class.",
            },
            "model_version": {"type": "string", "description": "Registered model version that answered."},
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong, in one line."},
            "detail": {
                "type": "array",
                "items": {"type": "object"},
                "description": "For a body that does not fit the schema: each field that does not.",
            },
        },
    }
    metadata = {
        "type": "object",
        "required": ["model_name", "model_version", "run_id", "dataset_name", "dataset_version", "classes"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "run_id": {"type": "string", "description": "The MLflow run that trained it."},
            "dataset_name": {"type": "string"},
            "dataset_version": {"type": "string"},
            "classes": {"type": "array", "items": {"type": "string"}},
            "image_shape": {"type": "array", "items": {"type": "integer"}, "description": "Channels, height, width."},
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "prediction_log": {
                "type": "object",
                "required": ["enabled"],
                "properties": {"enabled": {"type": "boolean"}, "dropped": {"type": "integer"}},
                "description": "What the answering worker logged of this model's predictions since it started: "
                "records written, dropped (queue full, folder unwritable), inputs kept. Never a failed request.",
            },
        },
    }
    return {"schemas": {"Prediction": prediction, "Error": error, "Metadata": metadata}}


def _health(summary: str) -> dict[str, Any]:
    return {"get": {"tags": ["Health"], "summary": summary, "responses": {"200": {"description": "Yes."}}}}


def model_spec(meta: ModelMetadata, *, description: str, prefix: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of model ``meta``; ``prefix`` (``/models/NAME``) is where its routes
    answer, so that Swagger's *Try it out* posts there. Without a prefix it is the document of
    the unprefixed routes, which also has the index of served models."""
    prediction = {"$ref": "#/components/schemas/Prediction"}
    paths: dict[str, Any] = {
        "/predict": {
            "post": {
                "tags": ["Predict"],
                "summary": "Classify one image",
                "description": "Upload one PNG or JPEG image (any size, gray or colour); get its label and "
                "probabilities.",
                "operationId": "predict",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {"image": {"type": "string", "format": "binary"}},
                            },
                            "encoding": {"image": {"contentType": "image/png, image/jpeg"}},
                        }
                    },
                },
                "responses": {"200": _logged(prediction, "The image's label and probabilities."), **_errors(400, 413)},
            }
        },
        "/predict_batch": {
            "post": {
                "tags": ["Predict"],
                "summary": "Classify a batch of pixel arrays",
                "description": "Images as pixel values (0-255) shaped like the model input (see /metadata).",
                "operationId": "predict_batch",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _batch_schema(meta)}}},
                "responses": {
                    "200": _logged({"type": "array", "items": prediction}, "One answer per image, in order."),
                    **_errors(400, 413),
                },
            }
        },
        "/metadata": {
            "get": {
                "tags": ["Model"],
                "summary": "Which model answers",
                "description": "Name, version, MLflow run id, dataset version and test metrics of the model, and "
                "what the prediction log recorded.",
                "operationId": "metadata",
                "responses": {"200": _json({"$ref": "#/components/schemas/Metadata"}, "The model's metadata.")},
            }
        },
        "/livez": _health("Whether the server runs"),
        "/readyz": _health("Whether the model is loaded and answers"),
    }
    spec: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"onebox model {meta.model_name}",
            "version": meta.model_version,
            "description": description,
            "contact": {"name": "onebox, the team's MLOps appliance (ask whoever runs this server)"},
        },
        "paths": paths,
        "components": _components(),
    }
    if prefix is not None:
        spec["servers"] = [{"url": prefix, "description": f"model {meta.model_name}"}]
    else:
        paths["/index.json"] = {
            "get": {
                "tags": ["Model"],
                "summary": "The served models",
                "operationId": "index",
                "responses": {"200": _json({"type": "object"}, "The default model and every served model.")},
            }
        }
    return spec

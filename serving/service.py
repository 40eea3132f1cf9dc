"""The BentoML service that serves one model bundle or several (ONNX Runtime, no torch).

Run it with ``ONEBOX_MODEL_DIR=/path/to/bundle bentoml serve serving.service:Classifier``; the
local and compose runtimes do exactly that. Several bundles (each a different model) are joined
with ``os.pathsep``: model NAME answers at ``/models/NAME/predict``, ``/predict_batch``,
``/metadata``, ``/docs.json`` and its Swagger page ``/models/NAME/``; the unprefixed routes answer
for ``ONEBOX_DEFAULT_MODEL`` (else the first bundle); ``/`` is the index of the served models
(serving/model_routes.py, ``/docs`` leads to the default model's page).

For a small model the serving layer, not the model, is the cost: ONNX Runtime took about 4% of a
stock service's CPU. So this service runs lean (measured in benchmarks/serving.py):

- no per-request access log, Prometheus metrics or tracing spans (BentoML's middlewares for
  them cost more CPU than the model; nothing in the appliance reads them; the gateway and
  ``onebox logs`` remain). ``ONEBOX_SERVE_ACCESS_LOG=1`` turns the access log back on.
- the APIs are ``async``: inference takes tens of microseconds, less than handing the request
  to a worker thread and back.
- an ordinary ``/predict`` or ``/predict_batch`` (a whole body, a plain upload of a small image,
  a JSON batch of numbers) is answered by serving/fast_routes.py in front of BentoML's routing,
  request context and endpoint wrapper, which cost more than the model; anything else goes on
  to the APIs below, so errors and the OpenAPI document stay theirs.
- ``/predict`` reads the upload from memory (:class:`ImageUpload`, serving/uploads.py) instead
  of BentoML's file type, which writes every upload to a temporary file and validates it with
  pydantic; answers are serialized once, as JSON, not validated again on the way out.
- ``ONEBOX_SERVE_WORKERS`` worker processes (default 2); uvloop and httptools (installed with
  the service) replace the pure-Python event loop and HTTP parser.
- every prediction is logged (serving/prediction_log.py), but all a request does for it is hand
  its arrays and bytes to a queue: the JSON, digests, PNGs and files are a thread's work.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import secrets
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
import orjson
from bentoml.exceptions import BentoMLException, InvalidArgument
from bentoml.validators import ContentType
from fastapi import FastAPI
from pydantic import BaseModel, Field, RootModel
from starlette.requests import Request
from starlette.responses import Response

from serving import fast_routes
from serving.errors import UnwrapErrorMiddleware, quiet_client_error_tracebacks
from serving.log_settings import PredictionLogConfig
from serving.metadata import REQUEST_ID_HEADER, SERVICE_NAME, WORKERS_VARIABLE
from serving.model_routes import MODEL_SCOPE_KEY, ModelRoutes, ServedModels, describe_model
from serving.prediction_log import PredictionLog
from serving.predictor import OnnxPredictor
from serving.request_limits import RequestLimits
from serving.uploads import UploadError, read_file_field
from storage.errors import ModelError
from storage.images import ImageDecodeError, ImageTooLargeError

ACCESS_LOG_VARIABLE = "ONEBOX_SERVE_ACCESS_LOG"
# A client's request id is kept when it looks like one (a UUID, nginx's $request_id, a trace id);
# anything else (too long, spaces, control characters) is replaced, so the log holds no junk.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

web = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class ModelService(bentoml.Service):  # type: ignore[misc, unused-ignore]  # bentoml is untyped
    """A bentoml Service whose Swagger page explains the default model to non-developers (each
    model's own page, ``/models/NAME/``, explains that model: serving/model_routes.py)."""

    @property
    def doc(self) -> str:
        try:
            models = ServedModels.from_environment()
        except ModelError:  # not serving (bentoml build, or the variable unset): BentoML's own text
            return str(super().doc)
        return describe_model(models.metadata[models.default])


class Prediction(BaseModel):
    label: str = Field(description="The predicted class name.")
    confidence: float = Field(description="Probability of the predicted class, 0 to 1.")
    probabilities: dict[str, float] = Field(description="Probability of every class.")
    model_version: str = Field(description="Registered model version that answered.")


class ImageUpload(bentoml.IODescriptor):  # type: ignore[misc, unused-ignore]
    """A multipart upload with one image in the file field ``image``, read from memory.

    The field's type is what Swagger shows (a file picker); :meth:`from_http_request` hands the
    API the upload's bytes. BentoML's own file type writes each upload to a temporary file and
    runs it through pydantic, which cost more than the model.
    """

    image: Annotated[Path, ContentType("image/*")] = Field(description="A PNG or JPEG image.")

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> ImageUpload:
        try:
            upload = await read_file_field(request, "image")
        except UploadError as error:
            raise InvalidArgument(str(error)) from error
        if not upload.content_type.startswith("image/"):
            raise InvalidArgument(
                f"the upload's content type is {upload.content_type or 'missing'}; send a PNG or JPEG image (image/*)"
            )
        return cls.model_construct(image=upload.data)  # type: ignore[no-any-return, unused-ignore]


class Predictions(RootModel[list[Prediction]]):
    """One answer per image, in order."""


def json_response(body: bytes, request_id: str) -> Response:
    return Response(body, media_type="application/json", headers={REQUEST_ID_HEADER: request_id})


def sane_request_id(sent: str | None) -> str:
    """The client's X-Request-ID when it is a sane one, else a new random one."""
    return sent if sent is not None and SANE_REQUEST_ID.fullmatch(sent) else secrets.token_hex(16)


@bentoml.service(
    name=SERVICE_NAME,
    service_class=ModelService,
    workers=int(os.environ.get(WORKERS_VARIABLE, "2")),
    traffic={"timeout": 30},
    logging={"access": {"enabled": os.environ.get(ACCESS_LOG_VARIABLE) == "1"}},
    metrics={"enabled": False},
    # No tracing exporter is configured, so every span would be created and dropped.
    tracing={"excluded_urls": ".*"},
)
@bentoml.asgi_app(web, path="/")
class Classifier:
    """Classify images with the models in $ONEBOX_MODEL_DIR (one bundle, or several)."""

    def __init__(self) -> None:
        quiet_client_error_tracebacks()
        models = ServedModels.from_environment()
        self.predictors = {name: OnnxPredictor.from_directory(bundle) for name, bundle in models.bundles.items()}
        self.default = self.predictors[models.default]
        # Every prediction is recorded by a thread of this worker (serving/prediction_log.py).
        self.log = PredictionLog(PredictionLogConfig.from_environment(), models.metadata).start()
        # Everything imported and built so far lives as long as the worker. Frozen, the garbage
        # collector stops scanning it: a full collection took about 65 ms here, long enough to
        # show in the 99th-percentile latency.
        gc.freeze()
        fast_routes.serve(self)

    @bentoml.api(route="/predict", input_spec=ImageUpload, output_spec=Prediction)  # type: ignore[untyped-decorator, unused-ignore]
    async def predict(self, image: bytes, ctx: bentoml.Context) -> Response:
        """Upload one PNG or JPEG image (any size, gray or color); get its label and probabilities.

        The answer's `X-Request-ID` header names the prediction in the log (the client's own, when it sent one)."""
        predictor = self._predictor(ctx.request)
        try:
            if predictor.decodes_slowly(image):  # a large image: off the event loop
                pixels = await asyncio.to_thread(predictor.decode, image, source="image")
            else:
                pixels = predictor.decode(image, source="image")
        except ImageTooLargeError as error:
            raise BentoMLException(str(error), error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE) from error
        except ImageDecodeError as error:
            raise InvalidArgument(str(error)) from error
        return json_response(*self._answer_image(predictor, pixels, image, ctx.request.headers.get(REQUEST_ID_HEADER)))

    @bentoml.api(route="/predict_batch", output_spec=Predictions)  # type: ignore[untyped-decorator, unused-ignore]
    async def predict_batch(self, images: np.ndarray, ctx: bentoml.Context) -> Response:
        """Classify a batch of pixel arrays (0-255) shaped like the model input (see /metadata).

        The answer's `X-Request-ID` header names the predictions in the log, one record per image."""
        predictor = self._predictor(ctx.request)
        try:
            return json_response(*self.answer_arrays(predictor, images, ctx.request.headers.get(REQUEST_ID_HEADER)))
        except ImageDecodeError as error:
            raise InvalidArgument(str(error)) from error

    # What both the APIs above and the hot routes' fast path (serving/fast_routes.py) answer with:
    # the JSON body, serialized once (not validated again by BentoML's output machinery), and the
    # request id that names the prediction in the log.

    def answer_upload(self, predictor: OnnxPredictor, image: bytes, sent_request_id: str | None) -> tuple[bytes, str]:
        """The answer to one small uploaded image, decoded here.

        Raises:
            ImageDecodeError: it is not a readable image, or has more pixels than the limit.
        """
        return self._answer_image(predictor, predictor.decode(image, source="image"), image, sent_request_id)

    def _answer_image(
        self, predictor: OnnxPredictor, pixels: np.ndarray, image: bytes, sent_request_id: str | None
    ) -> tuple[bytes, str]:
        probabilities, embeddings = predictor.infer(pixels)
        request_id = sane_request_id(sent_request_id)
        self.log.submit_upload(predictor.metadata.model_name, request_id, image, probabilities, embeddings)
        return orjson.dumps(predictor.describe(probabilities[0])), request_id

    def answer_arrays(
        self, predictor: OnnxPredictor, images: np.ndarray, sent_request_id: str | None
    ) -> tuple[bytes, str]:
        """The answer to a batch of pixel arrays.

        Raises:
            InputError: their shape or values do not fit the model.
        """
        pixels = predictor.check_arrays(np.asarray(images))
        probabilities, embeddings = predictor.infer(pixels)
        request_id = sane_request_id(sent_request_id)
        self.log.submit_batch(predictor.metadata.model_name, request_id, pixels, probabilities, embeddings)
        return orjson.dumps([predictor.describe(row) for row in probabilities]), request_id

    def predictor_for(self, model: str) -> OnnxPredictor:
        """Model ``model``'s predictor; the default model's for "" (an unprefixed route)."""
        return self.predictors.get(model, self.default)

    @bentoml.on_shutdown  # type: ignore[untyped-decorator, unused-ignore]
    def write_what_the_log_has_queued(self) -> None:
        """On a graceful stop (SIGTERM), before the worker exits: atexit alone came too late."""
        self.log.close()

    @web.get("/metadata")
    def metadata(self, request: Request) -> dict[str, Any]:
        """Which model this is: name, version, MLflow run id, dataset version and test metrics; and
        `prediction_log`: what the answering worker process logged of this model's predictions since
        it started (records written; dropped, because its queue was full or the folder unwritable;
        inputs kept), never a failed request."""
        predictor = self._predictor(request)
        return {**predictor.metadata.to_dict(), "prediction_log": self.log.stats(predictor.metadata.model_name)}

    def _predictor(self, request: Request) -> OnnxPredictor:
        # ModelRoutes put the model's name there, having checked it is served; absent: the default.
        return self.predictor_for(request.scope.get(MODEL_SCOPE_KEY, ""))


# The decorators turned the class into a bentoml Service, which mypy cannot see. The first
# middleware added is the outer one: every 4xx (the model routes' own included) is unwrapped and
# logged; the request limits see the path after the model routes took the prefix off.
Classifier.add_asgi_middleware(UnwrapErrorMiddleware)  # type: ignore[attr-defined]
Classifier.add_asgi_middleware(ModelRoutes)  # type: ignore[attr-defined]
Classifier.add_asgi_middleware(RequestLimits)  # type: ignore[attr-defined]
Classifier.add_asgi_middleware(fast_routes.FastRoutes)  # type: ignore[attr-defined]

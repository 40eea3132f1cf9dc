"""The two hot routes, ``/predict`` and ``/predict_batch``, answered without BentoML's per-request
machinery when the request is an ordinary one.

Through BentoML, a one-image prediction spent more CPU on its way in and out (Starlette's router,
BentoML's request context, its endpoint wrapper, a Request and a Response object, pydantic) than on
decoding the image and running the model. This ASGI middleware, the innermost of the service's
own (it sees the unprefixed path, the model asked for, and a body already held to its limit),
answers the happy path itself: a body that arrived whole, a plain multipart upload of a small
image or a JSON batch of numbers, decoded and predicted by the same service methods the APIs
call, with the same headers and the same JSON.

Anything else (another route or method, a body still arriving, a field missing, an image that
fails to decode or is large enough for a thread, an error of any kind) goes on to BentoML
unchanged, with the body it has read handed on: so every error, its status and its message stay
BentoML's and the APIs' own, and the OpenAPI document describes the routes as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson
from python_multipart.multipart import parse_options_header
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.metadata import REQUEST_ID_HEADER, SERVICE_NAME
from serving.model_routes import MODEL_SCOPE_KEY
from serving.request_limits import replay
from serving.uploads import UploadError, split_parts
from storage.images import ImageDecodeError

if TYPE_CHECKING:
    from serving.predictor import OnnxPredictor

SERVER_HEADER = f"BentoML Service/{SERVICE_NAME}".encode()  # what BentoML adds to each of its answers
REQUEST_ID = REQUEST_ID_HEADER.lower().encode()  # as ASGI spells header names
Answer = tuple[bytes, str]  # the JSON body and the request id
Headers = dict[bytes, bytes]


class HotRoutes(Protocol):
    """What the service offers this middleware (serving/service.py's Classifier)."""

    def predictor_for(self, model: str) -> OnnxPredictor: ...

    def answer_upload(self, predictor: OnnxPredictor, image: bytes, sent_request_id: str | None) -> Answer: ...

    def answer_arrays(self, predictor: OnnxPredictor, images: np.ndarray, sent_request_id: str | None) -> Answer: ...


_service: HotRoutes | None = None


def serve(service: HotRoutes | None) -> None:
    """Answer the hot routes with ``service`` from now on (called once its models are loaded;
    before that, BentoML answers them, and says the service is not ready). None: stop."""
    global _service
    _service = service


class FastRoutes:
    """ASGI middleware: an ordinary ``POST /predict`` or ``/predict_batch`` answered here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = _service
        if service is None or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/predict":
            answer = _answer_upload
        elif path == "/predict_batch":
            answer = _answer_batch
        else:
            await self.app(scope, receive, send)
            return
        first = await receive()
        if first["type"] == "http.request" and not first.get("more_body", False):
            headers = dict(scope["headers"])
            try:
                predictor = service.predictor_for(scope.get(MODEL_SCOPE_KEY, ""))
                answered = answer(service, predictor, headers, first.get("body", b""))
            except Exception:  # whatever it was, BentoML's path meets it again and answers it as it does
                answered = None
            if answered is not None:
                body, request_id = answered
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (REQUEST_ID, request_id.encode()),
                            (b"server", SERVER_HEADER),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, replay(first, receive), send)


def _sent_request_id(headers: Headers) -> str | None:
    sent = headers.get(REQUEST_ID)
    return sent.decode("latin-1") if sent is not None else None


def _answer_upload(service: HotRoutes, predictor: OnnxPredictor, headers: Headers, body: bytes) -> Answer | None:
    media_type, options = parse_options_header(headers.get(b"content-type", b""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        return None
    try:
        parts = split_parts(body, boundary)
    except UploadError:
        return None
    image = next((p for p in parts or () if p.name == "image" and p.is_file), None)
    if image is None or not image.content_type.startswith("image/") or predictor.decodes_slowly(image.content):
        return None
    try:
        return service.answer_upload(predictor, image.content, _sent_request_id(headers))
    except ImageDecodeError:  # too large or unreadable: the API says so in its words
        return None


def _answer_batch(service: HotRoutes, predictor: OnnxPredictor, headers: Headers, body: bytes) -> Answer | None:
    media_type, _ = parse_options_header(headers.get(b"content-type", b""))
    if media_type != b"application/json":
        return None
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    images = parsed.get("images") if isinstance(parsed, dict) else None
    if not isinstance(images, list):
        return None
    arrays = np.array(images)  # as BentoML's numpy validator makes them
    if arrays.dtype.kind not in "iuf":
        return None
    try:
        return service.answer_arrays(predictor, arrays, _sent_request_id(headers))
    except ImageDecodeError:
        return None

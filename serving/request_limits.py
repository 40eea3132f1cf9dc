"""Request bodies bounded before anything parses them: an ASGI middleware in front of the APIs.

BentoML reads and parses a whole body before an API sees it (a 123 MB JSON batch took a worker
to 2.3 GB, and 1.5 GB stayed), and uvicorn has no body limit of its own. Here a body larger than
the limit is answered 413 from its Content-Length, before a byte of it is read; a body sent
without one (chunked) is read up to the limit and no further. ``/predict_batch`` gets a tighter
limit, from the model's input shape: a batch of MAX_BATCH images written as JSON, generously.
A multipart body without a boundary is answered 400 here too (BentoML's JSON route answered 500).

The middleware sits inside ModelRoutes (serving/model_routes.py), so it sees the unprefixed path
and the model a prefixed request asked for.
"""

from __future__ import annotations

import json
import math

from python_multipart.multipart import parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.model_routes import MODEL_SCOPE_KEY, ServedModels
from serving.predictor import MAX_BATCH
from storage.limits import InputLimits

# A pixel value as JSON text: "255, " is 5 bytes; room for "254.75, " and some indentation.
BATCH_BYTES_PER_VALUE = 12
BATCH_SLACK_BYTES = 64 * 1024


def batch_body_limit(image_shape: tuple[int, int, int], max_body_bytes: int) -> int:
    """The largest ``/predict_batch`` body a model of ``image_shape`` accepts."""
    return min(max_body_bytes, MAX_BATCH * math.prod(image_shape) * BATCH_BYTES_PER_VALUE + BATCH_SLACK_BYTES)


class RequestLimits:
    """ASGI middleware: 413 for a body over the limit, 400 for multipart without a boundary."""

    def __init__(self, app: ASGIApp, *, models: ServedModels | None = None, limits: InputLimits | None = None) -> None:
        self.app = app
        models = models or ServedModels.from_environment()
        self.limits = limits or InputLimits.from_environment()
        self.batch_limits = {
            name: batch_body_limit(meta.image_shape, self.limits.max_body_bytes)
            for name, meta in models.metadata.items()
        }
        self.default = models.default

    def body_limit(self, scope: Scope) -> int:
        if scope["path"] == "/predict_batch":
            return self.batch_limits[scope.get(MODEL_SCOPE_KEY) or self.default]
        return self.limits.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media_type, options = parse_options_header(headers.get(b"content-type", b""))
        if media_type == b"multipart/form-data" and not options.get(b"boundary"):
            await _error(send, 400, "the multipart body has no boundary in its Content-Type header")
            return
        limit = self.body_limit(scope)
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(send, 400, f"the Content-Length header {declared.decode('latin-1')!r} is not a number")
                return
            if int(declared) > limit:
                await _error(send, 413, _too_large(int(declared), limit, scope["path"]))
                return
            await self.app(scope, receive, send)  # the server reads no more than it declared
            return
        body, more = await _read_up_to(receive, limit)
        if more:
            await _error(send, 413, _too_large(None, limit, scope["path"]))
            return
        await self.app(scope, replay({"type": "http.request", "body": body, "more_body": False}, receive), send)


def _too_large(size: int | None, limit: int, path: str) -> str:
    sent = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    hint = "send fewer images per request" if path == "/predict_batch" else "send a smaller file"
    return f"the request body is too large: {sent}; this server accepts at most {limit:,} bytes on {path}; {hint}"


async def _read_up_to(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, read until it ends or passes ``limit``; True when more was coming."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body), False  # the client went away: the app will see the disconnect
        body.extend(message.get("body", b""))
        if len(body) > limit:
            return b"", True
        if not message.get("more_body", False):
            return bytes(body), False


def replay(first: Message, receive: Receive) -> Receive:
    """``receive`` with the message already read from it, ``first``, handed out again first."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # the rest of the body, or a disconnect when the client goes
        sent = True
        return first

    return again


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the unread body must not be taken for the next request
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The hot routes' fast path (serving/fast_routes.py): what it answers itself, what it hands on to
BentoML (with the body it read), and that both ways give the same answer.

The middleware is driven as the server drives it, an ASGI call with the service's real models
(the Classifier of serving/service.py, its ONNX predictors and prediction log) in front of an
app that records what reached it; then a real model server over HTTP answers one image both
ways, the slow one forced by a body too large to arrive in one piece.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serving import fast_routes
from serving.fast_routes import FastRoutes
from serving.local import LocalRuntime
from serving.log_settings import LOG_DIR_VARIABLE
from serving.metadata import MODEL_DIR_VARIABLE
from serving.model_routes import MODEL_SCOPE_KEY
from tests.conftest import png_bytes
from tests.serving.conftest import COLORS_SHAPE, DIGITS_SHAPE, colors_bundle, digits_bundle, lit_pixel
from tests.serving.test_input_limits import huge_png

BOUNDARY = "fastroutesboundary"
HANDED_ON = 299  # what the app behind the middleware answers


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real service instance, serving digits (the default) and colors, its log on disk."""
    from serving.service import Classifier

    folder = tmp_path_factory.mktemp("fast")
    bundles = [digits_bundle(folder / "digits"), colors_bundle(folder / "colors")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODEL_DIR_VARIABLE, ":".join(str(bundle) for bundle in bundles))
        patch.setenv(LOG_DIR_VARIABLE, str(folder / "log"))
        instance = Classifier.inner()  # type: ignore[attr-defined]  # bentoml's decorators are untyped
    try:
        yield instance
    finally:
        instance.log.close()
        fast_routes.serve(None)


def multipart(image: bytes, *, field: str = "image", content_type: str = "image/png", padding: int = 0) -> bytes:
    parts = []
    if padding:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\n'.encode() + b"x" * padding)
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="d.png"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + image
    )
    return b"\r\n".join(parts) + f"\r\n--{BOUNDARY}--\r\n".encode()


UPLOAD_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


class Call:
    """One request through FastRoutes: its answer, and what the app behind it was given."""

    def __init__(self, path: str, body: bytes | list[bytes], content_type: str, *, method: str = "POST",
                 model: str | None = None, request_id: str | None = None) -> None:  # fmt: skip
        chunks = [body] if isinstance(body, bytes) else body
        headers = [(b"content-type", content_type.encode())]
        if request_id is not None:
            headers.append((b"x-request-id", request_id.encode()))
        scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "headers": headers}
        if model is not None:
            scope[MODEL_SCOPE_KEY] = model
        messages = [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
        self.sent: list[dict[str, Any]] = []
        self.handed_on: bytes | None = None  # the whole body the app behind read, when it was called

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            self.sent.append(message)

        async def behind(scope: Any, receive: Any, send: Any) -> None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.handed_on = body
            await send({"type": "http.response.start", "status": HANDED_ON, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        asyncio.run(FastRoutes(behind)(scope, receive, send))

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def answer(self) -> Any:
        return json.loads(self.sent[1]["body"])


def digit_png(index: int) -> bytes:
    return png_bytes(lit_pixel(DIGITS_SHAPE, index))


def test_an_ordinary_upload_is_answered_by_the_fast_path(service: Any) -> None:
    call = Call("/predict", multipart(digit_png(3)), UPLOAD_TYPE, request_id="client-id-1")
    assert call.handed_on is None
    assert call.status == 200
    assert call.answer["label"] == "3"
    assert call.answer["model_version"] == "1"
    assert set(call.answer["probabilities"]) == {str(k) for k in range(10)}
    assert call.headers[b"x-request-id"] == b"client-id-1"
    assert call.headers[b"content-type"] == b"application/json"
    assert int(call.headers[b"content-length"]) == len(call.sent[1]["body"])


def test_the_model_asked_for_answers_and_an_insane_request_id_is_replaced(service: Any) -> None:
    pixels = lit_pixel(COLORS_SHAPE, 2)
    call = Call("/predict", multipart(png_bytes(pixels)), UPLOAD_TYPE, model="colors", request_id="no spaces\x01")
    assert call.handed_on is None
    assert call.answer["label"] == service.predictors["colors"].metadata.classes[2]
    assert len(call.headers[b"x-request-id"]) == 32
    assert b" " not in call.headers[b"x-request-id"]


def test_an_ordinary_batch_is_answered_by_the_fast_path(service: Any) -> None:
    images = [lit_pixel(DIGITS_SHAPE, k).tolist() for k in (1, 7)]  # (N, H, W) for a gray model
    call = Call("/predict_batch", json.dumps({"images": images}).encode(), "application/json")
    assert call.handed_on is None
    assert [row["label"] for row in call.answer] == ["1", "7"]


UPLOAD = multipart(digit_png(1))
HANDED_ON_CASES: dict[str, tuple[str, bytes | list[bytes], str]] = {
    "a body that arrives in pieces": ("/predict", [UPLOAD[:100], UPLOAD[100:]], UPLOAD_TYPE),
    "not multipart": ("/predict", digit_png(1), "image/png"),
    "no boundary": ("/predict", multipart(digit_png(1)), "multipart/form-data"),
    "another field name": ("/predict", multipart(digit_png(1), field="file"), UPLOAD_TYPE),
    "not an image's content type": ("/predict", multipart(digit_png(1), content_type="text/plain"), UPLOAD_TYPE),
    "not an image": ("/predict", multipart(b"GIF89a not really"), UPLOAD_TYPE),
    "a truncated PNG": ("/predict", multipart(digit_png(1)[:40]), UPLOAD_TYPE),
    "an image large enough for a thread": ("/predict", multipart(huge_png(1100)), UPLOAD_TYPE),
    "a malformed multipart body": ("/predict", b"--" + BOUNDARY.encode() + b"\nbare line feeds\n", UPLOAD_TYPE),
    "JSON of the wrong shape": ("/predict_batch", b'{"images": [[[1, 2]]]}', "application/json"),
    "JSON without images": ("/predict_batch", b'{"pictures": []}', "application/json"),
    "JSON images that are not numbers": ("/predict_batch", b'{"images": [["a"]]}', "application/json"),
    "ragged JSON images": ("/predict_batch", b'{"images": [[1, 2], [3]]}', "application/json"),
    "not JSON": ("/predict_batch", b"{images", "application/json"),
    "JSON sent as another type": ("/predict_batch", b'{"images": [[[0]]]}', "text/plain"),
    "pixel values out of range": (
        "/predict_batch", json.dumps({"images": [(lit_pixel(DIGITS_SHAPE, 0).astype(int) * 2).tolist()]}).encode(),
        "application/json",
    ),
    "another route": ("/metadata", b"", "application/json"),
}  # fmt: skip


@pytest.mark.parametrize("case", HANDED_ON_CASES)
def test_anything_unusual_goes_on_to_bentoml_with_the_whole_body(service: Any, case: str) -> None:
    path, body, content_type = HANDED_ON_CASES[case]
    call = Call(path, body, content_type)
    assert call.status == HANDED_ON
    assert call.handed_on == (body if isinstance(body, bytes) else b"".join(body))


def test_a_get_and_a_service_not_yet_loaded_go_on_to_bentoml(service: Any) -> None:
    assert Call("/predict", multipart(digit_png(1)), UPLOAD_TYPE, method="GET").status == HANDED_ON
    fast_routes.serve(None)
    try:
        assert Call("/predict", multipart(digit_png(1)), UPLOAD_TYPE).status == HANDED_ON
    finally:
        fast_routes.serve(service)


def test_a_failure_inside_the_fast_path_goes_on_to_bentoml(service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("the model broke")

    monkeypatch.setattr(service.default, "infer", broken)  # a fault that cannot be caused from outside
    call = Call("/predict", multipart(digit_png(1)), UPLOAD_TYPE)
    assert call.status == HANDED_ON


@pytest.fixture(scope="module")
def server(two_models: tuple[LocalRuntime, dict[str, Path]]) -> str:
    """A real model server over HTTP, digits its default model."""
    return two_models[0].settings.serve_url


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/predict", "/models/digits/predict"])
def test_the_fast_and_the_bentoml_path_answer_alike(server: str, route: str) -> None:
    """The same image, once in a small body (the fast path) and once beside a 1 MB form field
    (uvicorn hands such a body on in pieces: BentoML's path)."""
    answers = []
    for padding in (0, 1_000_000):
        body = multipart(digit_png(5), padding=padding)
        sent = httpx.post(
            f"{server}{route}", content=body, headers={"Content-Type": UPLOAD_TYPE, "X-Request-ID": "abc"}
        )
        assert sent.status_code == 200, sent.text
        answers.append(sent)
    fast, slow = answers
    assert fast.json() == slow.json()
    assert fast.json()["label"] == "5"
    assert {k for k in fast.headers if k != "date"} == {k for k in slow.headers if k != "date"}
    assert fast.headers.get_list("server") == slow.headers.get_list("server")
    assert fast.headers["x-request-id"] == slow.headers["x-request-id"] == "abc"


@pytest.mark.slow
def test_the_batch_route_answers_alike_both_ways(server: str) -> None:
    images = [lit_pixel(DIGITS_SHAPE, k).tolist() for k in range(4)]
    fast = httpx.post(f"{server}/predict_batch", json={"images": images})
    # 600 kB of spaces, the same JSON, in pieces (under the route's body limit, 851 kB for 8x8).
    slow = httpx.post(
        f"{server}/predict_batch",
        content=b"{" + b" " * 600_000 + json.dumps({"images": images}).encode()[1:],
        headers={"Content-Type": "application/json"},
    )
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json()
    assert [row["label"] for row in fast.json()] == ["0", "1", "2", "3"]
    assert np.allclose([row["confidence"] for row in fast.json()], [row["confidence"] for row in slow.json()])

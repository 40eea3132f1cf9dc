"""Readiness and smoke checks shared by every runtime: a model serves only after it answers."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx

from serving.waiting import NotYet, wait_for
from storage.credentials import api_key_headers
from storage.errors import ServingError

# What BentoML's log says when a worker's model fails to load. Its supervisor then restarts the
# worker, so the server process lives on: the runtimes watch for this line instead of waiting.
STARTUP_FAILED_MARKER = "Application startup failed"


def wait_until_ready(
    url: str,
    *,
    timeout_s: float,
    still_starting: Callable[[], bool] = lambda: True,
    health_path: str = "/readyz",
    server: str = "the model server",
) -> None:
    """Poll ``{url}{health_path}`` until it answers 200.

    Args:
        still_starting: returns False once the server has died, to stop waiting early.
        server: what runs at ``url``, for the messages.

    Raises:
        ServingError: not ready within ``timeout_s`` (a WaitTimeout), or the server died.
    """
    with httpx.Client(timeout=2.0) as client:

        def ready() -> None:
            if not still_starting():
                raise ServingError(f"{server} at {url} exited while starting")
            try:
                answer = client.get(f"{url}{health_path}")
            except httpx.TransportError as error:
                raise NotYet(type(error).__name__) from None
            if answer.status_code != 200:
                raise NotYet(f"{health_path} answered {answer.status_code}")

        wait_for(ready, timeout_s=timeout_s, what=f"{server} at {url} to be ready")


def blank_png(image_shape: tuple[int, int, int]) -> bytes:
    # Here, not at the top: `onebox status` probes a server without importing numpy and Pillow.
    import numpy as np
    from PIL import Image

    channels, height, width = image_shape
    pixels = np.zeros((height, width) if channels == 1 else (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def smoke_predict(
    url: str, *, expected_version: str, image_shape: tuple[int, int, int], api_key: str | None = None
) -> dict[str, Any]:
    """One real prediction through ``url``; it must come from ``expected_version``. ``api_key``:
    what the gateway asks for once credentials are set.

    Raises:
        ServingError: the answer is not a valid prediction from that version.
    """
    files = {"image": ("smoke.png", blank_png(image_shape), "image/png")}
    try:
        answer = httpx.post(f"{url}/predict", files=files, headers=api_key_headers(api_key), timeout=10.0)
    except httpx.TransportError as error:
        raise ServingError(f"smoke prediction through {url} failed: {error}") from error
    if answer.status_code != 200:
        raise ServingError(f"smoke prediction through {url} answered {answer.status_code}: {answer.text[:300]}")
    body: dict[str, Any] = answer.json()
    if str(body.get("model_version")) != expected_version:
        raise ServingError(
            f"smoke prediction through {url} came from model version {body.get('model_version')!r}, "
            f"not {expected_version!r}"
        )
    return body


def probe(url: str) -> bool:
    """Whether the server at ``url`` answers ``/readyz`` right now."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.health URL``: a smoke prediction through ``URL/models/NAME`` for every
    bundle in $ONEBOX_MODEL_DIR.

    The compose runtime runs this inside a new model container before any traffic reaches it.
    """
    import sys

    from serving.model_routes import ServedModels

    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else "http://127.0.0.1:3000"
    models = ServedModels.from_environment()
    try:
        wait_until_ready(url, timeout_s=30)
        for name, meta in models.metadata.items():
            smoke_predict(f"{url}/models/{name}", expected_version=meta.model_version, image_shape=meta.image_shape)
    except ServingError as error:
        print(f"smoke check failed: {error}", file=sys.stderr)
        return 1
    for name, meta in models.metadata.items():
        print(f"model {name} v{meta.model_version} answers at {url}/models/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

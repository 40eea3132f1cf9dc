"""Error answers: every 4xx from the model server is a JSON object ``{"error": "..."}``.

BentoML 1.4.40 wraps the body of a client error raised as a BentoMLException in a one-item
list (``[{"error": ...}]``, a tuple in its server code). This ASGI middleware unwraps it; it
touches only 4xx answers, so successful requests pay for one status check.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class UnwrapErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                start = message
                return
            if start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                fixed = _unwrap(bytes(body))
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(fixed)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": fixed})

        await self.app(scope, receive, capture)


def _unwrap(body: bytes) -> bytes:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict) and "error" in parsed[0]:
        return json.dumps(parsed[0]).encode()
    return body

"""Error answers: every 4xx from the model server is a JSON object ``{"error": "..."}``, logged
as one line.

BentoML 1.4.40 wraps the body of a client error raised as a BentoMLException in a one-item
list (``[{"error": ...}]``, a tuple in its server code). This ASGI middleware unwraps it; it
touches only 4xx answers, so successful requests pay for one status check. It also logs each 4xx
as one line (method, path, status, the error), and :class:`OneLineClientErrors` drops the full
traceback BentoML logs for each of them: a client's mistake is not the server's failure, and a
traceback per bad upload filled the log.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("onebox.serving")
# The logger BentoML's API wrapper reports every exception to, client errors included.
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"


class OneLineClientErrors(logging.Filter):
    """Drops BentoML's traceback for an exception that became a 4xx answer (logged in one line
    by :class:`UnwrapErrorMiddleware`); server errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or _status_of(error) is None


def _status_of(error: BaseException) -> int | None:
    """The 4xx status BentoML answers ``error`` with; None for a server error."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return 400
    status = getattr(getattr(error, "error_code", None), "value", None) or getattr(error, "status_code", None)
    return status if isinstance(status, int) and 400 <= status < 500 else None


def quiet_client_error_tracebacks() -> None:
    """Install :class:`OneLineClientErrors` once in this process."""
    bentoml_logger = logging.getLogger(BENTOML_ERROR_LOGGER)
    if not any(isinstance(existing, OneLineClientErrors) for existing in bentoml_logger.filters):
        bentoml_logger.addFilter(OneLineClientErrors())


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
                _log_client_error(scope, start["status"], fixed)
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(fixed)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": fixed})

        await self.app(scope, receive, capture)


def _log_client_error(scope: Scope, status: int, body: bytes) -> None:
    try:
        parsed: Any = json.loads(body)
        error = parsed.get("error", body) if isinstance(parsed, dict) else body
    except ValueError:
        error = body.decode("utf-8", errors="replace")
    text = " ".join(str(error).split())[:500]  # one line, whatever the message held
    logger.warning("%s %s -> %d: %s", scope.get("method", "?"), scope.get("path", "?"), status, text)


def _unwrap(body: bytes) -> bytes:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict) and "error" in parsed[0]:
        return json.dumps(parsed[0]).encode()
    return body

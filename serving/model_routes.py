"""One model server, many models: ``/models/NAME/...`` reaches the same routes as ``/...`` for model NAME.

An ASGI middleware in front of the BentoML service strips the prefix and records which model
was asked for in the request's scope (:data:`MODEL_SCOPE_KEY`); the APIs pick that model's
predictor, and the unprefixed routes answer for the default model exactly as before. The same
middleware answers the index page at ``/``. In the appliance every container holds one model
and the gateway forwards ``/models/NAME/...`` unchanged, so this is what answers there too.

The served path pays one prefix test and one dict lookup per request.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.index_page import index_entries, model_path, render_index
from serving.metadata import DEFAULT_MODEL_VARIABLE, METADATA_FILE, MODEL_DIR_VARIABLE, ModelMetadata, bundle_folders
from storage.errors import ModelError

MODEL_SCOPE_KEY = "onebox.model"  # the model a prefixed request asked for; absent: the default model
PREFIX = "/models/"


@dataclass(frozen=True)
class ServedModels:
    """The bundles one model server loads, by model name, in the order given, and the default one."""

    bundles: dict[str, Path]
    metadata: dict[str, ModelMetadata]
    default: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ServedModels:
        """The bundles in ``ONEBOX_MODEL_DIR``; the default is ``ONEBOX_DEFAULT_MODEL`` when it is
        among them (a container holds one model of several), else the first.

        Raises:
            ModelError: no bundle named, a bundle without metadata, or two bundles of one model.
        """
        folders = bundle_folders(environ.get(MODEL_DIR_VARIABLE, ""))
        if not folders:
            raise ModelError(f"{MODEL_DIR_VARIABLE} is not set: it must name a model bundle folder (or several)")
        bundles: dict[str, Path] = {}
        metadata: dict[str, ModelMetadata] = {}
        for folder in folders:
            if not (folder / METADATA_FILE).is_file():
                raise ModelError(f"model bundle {folder} has no {METADATA_FILE}")
            meta = ModelMetadata.read(folder / METADATA_FILE)
            if meta.model_name in bundles:
                raise ModelError(
                    f"bundles {bundles[meta.model_name]} and {folder} are both model {meta.model_name!r}; "
                    "serve one version of each model"
                )
            bundles[meta.model_name], metadata[meta.model_name] = folder, meta
        wanted = environ.get(DEFAULT_MODEL_VARIABLE, "")
        return cls(bundles=bundles, metadata=metadata, default=wanted if wanted in bundles else next(iter(bundles)))

    def unknown(self, name: str) -> str:
        return f"unknown model {name!r}; served models: {', '.join(self.bundles)}"


def describe_model(meta: ModelMetadata) -> str:
    """The text at the top of a model's Swagger page, for people who are not developers."""
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
        "`GET /metadata` tells which model answers, and under `prediction_log` what the answering worker "
        "recorded of its predictions (each answer's `X-Request-ID` names its record) and dropped, if any."
        "\n\n[All served models](/)"
    )


class ModelRoutes:
    """ASGI middleware: ``/models/NAME/<rest>`` → ``/<rest>`` for model NAME; ``/`` the index page."""

    def __init__(self, app: ASGIApp, *, models: ServedModels | None = None) -> None:
        self.app = app
        self.models = models or ServedModels.from_environment()
        self.rewritten: dict[tuple[str, str], bytes] = {}  # (model, path): its page or spec, built once
        entries = index_entries(list(self.models.metadata.values()), default=self.models.default)
        self.pages: dict[str, Response] = {
            "/": HTMLResponse(render_index(list(self.models.metadata.values()), default=self.models.default)),
            "/index.json": JSONResponse({"default": self.models.default, "models": entries}),
            "/docs": RedirectResponse(model_path(self.models.default)),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(PREFIX):
            await self._model_route(path[len(PREFIX) :], scope, receive, send)
            return
        page = self.pages.get(path)
        if page is None:  # the served path: /predict, /predict_batch, /metadata, /readyz ...
            await self.app(scope, receive, send)
            return
        await page(scope, receive, send)

    async def _model_route(self, after_prefix: str, scope: Scope, receive: Receive, send: Send) -> None:
        name, slash, rest = after_prefix.partition("/")
        if name not in self.models.bundles:
            await JSONResponse({"error": self.models.unknown(name)}, status_code=404)(scope, receive, send)
            return
        if not slash:  # /models/NAME: the Swagger page's relative links need the slash
            query = scope.get("query_string", b"").decode("latin-1")
            location = model_path(name) + (f"?{query}" if query else "")
            await RedirectResponse(location, status_code=308)(scope, receive, send)
            return
        inner = f"/{rest}"
        scoped = {**scope, "path": inner, "raw_path": inner.encode(), MODEL_SCOPE_KEY: name}
        if inner in _REWRITTEN:
            await self._send_rewritten(name, scoped, receive, send)
            return
        await self.app(scoped, receive, send)

    async def _send_rewritten(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's Swagger page or OpenAPI document, made this model's (built once, then kept)."""
        key = (name, scope["path"])
        if key not in self.rewritten:
            status, body = await _collect(self.app, scope, receive)
            if status != 200:
                await Response(body, status_code=status)(scope, receive, send)
                return
            self.rewritten[key] = _REWRITTEN[scope["path"]](self.models.metadata[name], body)
        media_type = "application/json" if scope["path"] == "/docs.json" else "text/html"
        await Response(self.rewritten[key], media_type=media_type)(scope, receive, send)


def _model_spec(meta: ModelMetadata, body: bytes) -> bytes:
    """The OpenAPI document with the model's description, and ``servers`` set so that Swagger's
    *Try it out* posts to ``/models/NAME/...``."""
    spec: dict[str, Any] = json.loads(body)
    spec["info"] = {"title": meta.model_name, "version": meta.model_version, "description": describe_model(meta)}
    spec["servers"] = [{"url": f"/models/{meta.model_name}", "description": f"model {meta.model_name}"}]
    return json.dumps(spec).encode()


def _model_page(meta: ModelMetadata, body: bytes) -> bytes:
    """The Swagger page titled for the model, without BentoML's Google Tag Manager snippet (a page
    that stakeholders open on the box should not report to a third party)."""
    page = _TAG_MANAGER.sub("", body.decode())
    page = re.sub(
        r"<title>.*?</title>", f"<title>{escape(meta.model_name)} v{escape(meta.model_version)}</title>", page
    )
    return page.encode()


_TAG_MANAGER = re.compile(
    r"<!-- Google Tag Manager(?: \(noscript\))? -->.*?<!-- End Google Tag Manager(?: \(noscript\))? -->", re.S
)
_REWRITTEN = {"/docs.json": _model_spec, "/": _model_page}


async def _collect(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """Run ``app`` for one request and keep its answer instead of sending it."""
    status = 500
    body = bytearray()

    async def keep(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, keep)
    return status, bytes(body)

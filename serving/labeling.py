"""The labeling page: a model's inbox images, one at a time, labeled from the keyboard.

A small FastAPI app under ``/label/``: ``/label/NAME/`` is the page of model NAME (HTML, its
script and stylesheet served from here, nothing from elsewhere), and beside it the JSON routes
the page calls: ``state`` (progress, the classes, the current image), ``label``, ``skip``,
``undo`` and ``merge`` ("Create dataset version"), and ``images/SHA.EXT``. Only the
SHA-named files of that model's inbox are served; an unknown model, class or image, and any
malformed request, answer a JSON 4xx with one line (``{"error": ...}``), never a 500.

It imports neither BentoML nor ONNX Runtime (the appliance runs it on the serving runtime image
plus sqlite-utils, compose/labeling/Dockerfile). What happens after a merge (the event that
starts a retrain) is the caller's: :func:`create_labeling_app` takes it as ``announce``.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.credentials import basic_authorization
from storage.errors import DatasetError, LabelError, ModelError
from storage.inbox import inbox_items, model_inbox
from storage.inbox_merge import LabelingTarget, MergeResult, labeling_models, labeling_target, merge_inbox
from storage.labels import LabelStore, NotInInboxError, check_sha256, image_bytes
from storage.names import is_safe_name
from storage.settings import Settings

PAGE_DIR = Path(__file__).with_name("labeling_page")  # labeling.html, labeling.js, labeling.css
PREFIX = "/label"
IMAGE_NAME = re.compile(r"^([0-9a-f]{64})\.(png|jpg|jpeg|npy)$")
# The page's own files only: no inline script, nothing from another origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LOGIN_CHALLENGE = 'Basic realm="onebox", charset="UTF-8"'
Announce = Callable[[MergeResult], str]  # after a merge: what became of the retrain, in a sentence
Labeler = Annotated[str, Body(max_length=64)]


class RefusedRequestError(Exception):
    """A request the page cannot answer: a status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _target(settings: Settings, model: str) -> LabelingTarget:
    if not is_safe_name(model):
        raise RefusedRequestError(404, f"no model named {model[:80]!r}")
    try:
        return labeling_target(settings, model)
    except ModelError as error:
        raise RefusedRequestError(404, str(error)) from None


def labeling_state(settings: Settings, target: LabelingTarget) -> dict[str, Any]:
    """What the page shows: progress, the classes, the current image (None when all are done)."""
    items = inbox_items(settings.inbox_dir, target.model)
    labels = LabelStore(settings.inbox_dir, target.model).labels()
    waiting = [item for item in items if item.sha256 not in labels]
    current = waiting[0] if waiting else None
    labeled = sum(1 for item in items if item.sha256 in labels and not labels[item.sha256].skipped)
    return {
        "model": target.model,
        "classes": list(target.classes),
        "parent": f"{target.parent.name}:{target.parent.version}",
        "total": len(items),
        "labeled": labeled,
        "skipped": sum(1 for item in items if item.sha256 in labels and labels[item.sha256].skipped),
        "waiting": len(waiting),
        "current": None
        if current is None
        else {
            "sha256": current.sha256,
            "image": f"{PREFIX}/{target.model}/images/{current.file}",
            "guess": current.guess,
            "confidence": current.confidence,
            "reason": current.reason,
            "model_version": current.model_version,
        },
        # Fetched ahead by the page, so the next image shows at once.
        "next_image": f"{PREFIX}/{target.model}/images/{waiting[1].file}" if len(waiting) > 1 else None,
    }


def _who(by: str) -> str:
    return by.strip() or "labeling page"


def _guard(app: FastAPI, settings: Settings) -> None:
    """With a password set, every route but the health check asks for the appliance login (HTTP
    basic auth: the browser asks once). A change (POST) from a page of another origin is refused
    either way: a browser sends a cached login along with a cross-site form."""
    password = settings.password_value
    expected = basic_authorization(settings.username, password).encode() if password else None

    @app.middleware("http")
    async def _login_and_origin(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path != f"{PREFIX}/healthz" and expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {"error": "the labeling page needs the appliance login (ONEBOX_USERNAME and ONEBOX_PASSWORD)"},
                    status_code=401,
                    headers={**SECURITY_HEADERS, "WWW-Authenticate": LOGIN_CHALLENGE},
                )
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return JSONResponse(
                {"error": "a change from a page of another site is refused: use the labeling page itself"},
                status_code=403,
                headers=SECURITY_HEADERS,
            )
        return await call_next(request)


def _same_origin(request: Request) -> bool:
    """Whether a request's Origin (when it has one: browsers send it with every POST) is the
    host it was sent to."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (programs, tests)
    return urlsplit(origin).netloc == request.headers.get("host", "")


def create_labeling_app(settings: Settings, *, announce: Announce) -> FastAPI:
    """The labeling app of every model in production in ``settings``' home."""
    app = FastAPI(title="onebox labeling", docs_url=None, redoc_url=None, openapi_url=None)
    page = (PAGE_DIR / "labeling.html").read_text()

    @app.exception_handler(RefusedRequestError)
    async def _problem(_: Request, problem: RefusedRequestError) -> JSONResponse:
        return JSONResponse({"error": str(problem)}, status_code=problem.status, headers=SECURITY_HEADERS)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "request"
        message = f"malformed request: {where}: {first.get('msg', 'invalid')}"
        return JSONResponse({"error": message}, status_code=422, headers=SECURITY_HEADERS)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=SECURITY_HEADERS)

    _guard(app, settings)

    @app.get(f"{PREFIX}/healthz")
    def healthz() -> JSONResponse:
        # Healthy means it can do its work: the home is there and the inbox can be written.
        home, inbox = settings.home, settings.inbox_dir
        writable = os.access(inbox if inbox.is_dir() else home, os.W_OK)
        if not home.is_dir() or not writable:
            return JSONResponse({"status": "unhealthy", "error": f"{home} is missing or not writable"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get(PREFIX)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @app.get(f"{PREFIX}/")
    def models() -> JSONResponse:
        try:
            names = labeling_models(settings)
        except ModelError as error:
            raise RefusedRequestError(503, str(error)) from None
        pages = [{"model": name, "url": f"{PREFIX}/{name}/"} for name in names]
        return JSONResponse({"models": pages}, headers=SECURITY_HEADERS)

    @app.get(f"{PREFIX}/static/{{name}}")
    def static(name: str) -> FileResponse:
        if name not in ("labeling.js", "labeling.css"):
            raise RefusedRequestError(404, f"no file {name[:80]!r}")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(PAGE_DIR / name, media_type=media, headers=SECURITY_HEADERS)

    @app.get(f"{PREFIX}/{{model}}")
    def page_without_slash(model: str) -> RedirectResponse:
        _target(settings, model)
        return RedirectResponse(f"{PREFIX}/{model}/")

    @app.get(f"{PREFIX}/{{model}}/")
    def labeling_page(model: str) -> HTMLResponse:
        _target(settings, model)  # an unknown model is a 404, not an empty page
        return HTMLResponse(page, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.get(f"{PREFIX}/{{model}}/state")
    def state(model: str) -> JSONResponse:
        return JSONResponse(labeling_state(settings, _target(settings, model)), headers=SECURITY_HEADERS)

    @app.get(f"{PREFIX}/{{model}}/images/{{name}}")
    def image(model: str, name: str) -> Response:
        target = _target(settings, model)
        match = IMAGE_NAME.fullmatch(name)
        if match is None:
            raise RefusedRequestError(404, f"{name[:80]!r} is not an inbox image name (SHA256.png, .jpg or .npy)")
        folder = model_inbox(settings.inbox_dir, target.model)
        if not (folder / f"{match.group(1)}.json").is_file():
            raise RefusedRequestError(404, f"image {match.group(1)} is not in the inbox of model {target.model}")
        try:
            data, media_type = image_bytes(folder / name)
        except LabelError as error:
            raise RefusedRequestError(404, str(error)) from None
        return Response(data, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    def _change(model: str, change: Callable[[LabelStore, LabelingTarget], None]) -> JSONResponse:
        target = _target(settings, model)
        try:
            change(LabelStore(settings.inbox_dir, target.model), target)
        except NotInInboxError as error:
            raise RefusedRequestError(404, str(error)) from None
        except LabelError as error:  # a class the model does not have
            raise RefusedRequestError(422, str(error)) from None
        return JSONResponse(labeling_state(settings, target), headers=SECURITY_HEADERS)

    @app.post(f"{PREFIX}/{{model}}/label")
    def label(
        model: str,
        sha256: Annotated[str, Body(max_length=64)],
        label: Annotated[str, Body(max_length=200)],
        by: Labeler = "",
    ) -> JSONResponse:
        return _change(
            model, lambda store, t: store.set_label(check_sha256(sha256), label, classes=t.classes, by=_who(by))
        )

    @app.post(f"{PREFIX}/{{model}}/skip")
    def skip(model: str, sha256: Annotated[str, Body(max_length=64)], by: Labeler = "") -> JSONResponse:
        return _change(model, lambda store, _: store.skip(check_sha256(sha256), by=_who(by)))

    @app.post(f"{PREFIX}/{{model}}/undo")
    def undo(model: str, by: Annotated[str, Body(max_length=64, embed=True)] = "") -> JSONResponse:
        def take_back(store: LabelStore, _: LabelingTarget) -> None:
            if store.undo(by=_who(by)) is None:
                raise RefusedRequestError(409, "nothing to undo")

        return _change(model, take_back)

    @app.post(f"{PREFIX}/{{model}}/merge")
    def merge(model: str, by: Annotated[str, Body(max_length=64, embed=True)] = "") -> JSONResponse:
        target = _target(settings, model)
        try:
            result = merge_inbox(settings, target.model, by=_who(by))
        except (LabelError, DatasetError) as error:
            raise RefusedRequestError(409, str(error)) from None
        except ModelError as error:
            raise RefusedRequestError(404, str(error)) from None
        version = result.version
        return JSONResponse(
            {
                "dataset": version.name,
                "version": version.version,
                "parent": result.parent.version,
                "images": version.num_images,
                "merged": result.merged,
                "left": result.left,
                "batch": result.batch,
                "retrain": announce(result),
            },
            headers=SECURITY_HEADERS,
        )

    return app

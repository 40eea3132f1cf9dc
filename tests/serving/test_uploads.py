"""Reading an uploaded file: the fast multipart path agrees with Starlette's parser, and hands it odd bodies."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.requests import Request

from serving.uploads import Upload, UploadError, read_file_field, split_parts

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-the-boundary\r\n"


def encoded(files: dict, data: dict | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://onebox/predict", files=files, data=data or {})
    return request.read(), request.headers["content-type"]


def starlette_request(body: bytes, content_type: str) -> Request:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}, receive)


def read(body: bytes, content_type: str) -> Upload:
    return asyncio.run(read_file_field(starlette_request(body, content_type), "image"))


def test_the_fast_path_reads_what_httpx_sends() -> None:
    body, content_type = encoded({"image": ("d.png", IMAGE, "image/png")}, {"note": "x"})
    boundary = content_type.split("boundary=")[1].encode()

    parts = split_parts(body, boundary)

    assert parts is not None
    assert [(p.name, p.is_file) for p in parts] == [("note", False), ("image", True)]
    assert read(body, content_type) == Upload(IMAGE, "image/png")


def test_an_unusual_body_goes_to_starlettes_parser() -> None:
    body, content_type = encoded({"image": ("d.png", IMAGE, "image/png")})
    boundary = content_type.split("boundary=")[1].encode()
    padded = body.replace(b"--" + boundary + b"\r\n", b"--" + boundary + b"  \r\n")  # transport padding
    lf_only = body.replace(b"\r\n", b"\n")
    cut = body[: len(body) // 2]
    for unusual in (padded, lf_only, cut):
        assert split_parts(unusual, boundary) is None
        with pytest.raises(UploadError):  # Starlette's parser refuses these three too
            read(unusual, content_type)
    with_preamble = b"a preamble is legal and ignored\r\n" + body
    assert read(with_preamble, content_type) == Upload(IMAGE, "image/png")


@pytest.mark.parametrize(
    ("files", "data", "content_type", "expected"),
    [
        ({"other": ("d.png", IMAGE, "image/png")}, None, None, "file field 'image'"),
        (None, {"image": "not a file"}, None, "file field 'image'"),
        (None, None, "application/json", "multipart/form-data"),
        (None, None, "multipart/form-data", "no boundary"),
    ],
)
def test_what_is_missing_is_named(files, data, content_type, expected) -> None:
    if files or data:
        body, content_type = encoded(files or {}, data)
    else:
        body = b"{}"
    with pytest.raises(UploadError, match=expected):
        read(body, content_type)
